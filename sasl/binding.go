package sasl

import (
	"crypto/sha256"
	"crypto/sha512"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
)

// exporterLabel and exporterLen are RFC 9266's tls-exporter parameters.
const (
	exporterLabel = "EXPORTER-Channel-Binding"
	exporterLen   = 32
)

// TLSBinding returns an [Options.Binding] callback for a server-side TLS
// connection whose handshake is complete. cs is its connection state; leaf
// is the server certificate the handshake presented (crypto/tls does not put
// the server's own certificate in the server's ConnectionState), or nil to
// refuse tls-server-end-point.
//
// tls-exporter (RFC 9266) is the 32 bytes exported with the label
// "EXPORTER-Channel-Binding" and an empty context; crypto/tls refuses it on
// TLS 1.2 without Extended Master Secret, as RFC 9266 requires.
// tls-server-end-point (RFC 5929 section 4.1) is the certificate hashed with
// its signature's hash, SHA-256 when that is MD5 or SHA-1; it is undefined,
// and refused, for signature algorithms without a hash such as Ed25519.
func TLSBinding(cs *tls.ConnectionState, leaf *x509.Certificate) func(cbType string) ([]byte, error) {
	return func(cbType string) ([]byte, error) {
		switch cbType {
		case BindingTLSExporter:
			return cs.ExportKeyingMaterial(exporterLabel, []byte{}, exporterLen)
		case BindingTLSServerEndPoint:
			if leaf == nil {
				return nil, errors.New("no server certificate")
			}
			return serverEndPoint(leaf)
		}
		return nil, fmt.Errorf("unknown type %q", cbType)
	}
}

// serverEndPoint hashes the certificate as RFC 5929 section 4.1 says.
func serverEndPoint(cert *x509.Certificate) ([]byte, error) {
	switch cert.SignatureAlgorithm {
	case x509.MD5WithRSA, x509.SHA1WithRSA, x509.ECDSAWithSHA1, x509.DSAWithSHA1,
		x509.SHA256WithRSA, x509.SHA256WithRSAPSS, x509.ECDSAWithSHA256, x509.DSAWithSHA256:
		sum := sha256.Sum256(cert.Raw)
		return sum[:], nil
	case x509.SHA384WithRSA, x509.SHA384WithRSAPSS, x509.ECDSAWithSHA384:
		sum := sha512.Sum384(cert.Raw)
		return sum[:], nil
	case x509.SHA512WithRSA, x509.SHA512WithRSAPSS, x509.ECDSAWithSHA512:
		sum := sha512.Sum512(cert.Raw)
		return sum[:], nil
	}
	return nil, fmt.Errorf("tls-server-end-point undefined for %v certificates", cert.SignatureAlgorithm)
}
