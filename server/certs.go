package server

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/fips140"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"sync/atomic"
	"time"

	"github.com/krill-xmpp/krill/config"
)

// Development certificate files, generated in the data directory when no
// certificate is configured.
const (
	devCertFile = "dev-cert.pem"
	devKeyFile  = "dev-key.pem"
	devValidity = 365 * 24 * time.Hour
)

// certSource holds the certificate every handshake uses; Reload swaps it
// without touching established connections.
type certSource struct {
	certFile, keyFile string
	generated         bool
	cert              atomic.Pointer[tls.Certificate]
}

// newCertSource loads the configured certificate, or generates (once) and
// loads a self-signed development certificate for domain in dataDir, whose
// subject alternative names also cover hosted, the other domains the
// server answers for over federation (muc.domain, components): a peer
// checking the certificate of a stream from conference.<domain> (SASL
// EXTERNAL, XEP-0178) looks for that name.
func newCertSource(certFile, keyFile, domain, dataDir string, hosted ...string) (*certSource, error) {
	cs := &certSource{certFile: certFile, keyFile: keyFile}
	if certFile == "" {
		cs.generated = true
		cs.certFile = filepath.Join(dataDir, devCertFile)
		cs.keyFile = filepath.Join(dataDir, devKeyFile)
		if err := ensureDevCert(cs.certFile, cs.keyFile, domain, hosted...); err != nil {
			return nil, err
		}
	}
	return cs, cs.Reload()
}

// Reload reads the certificate and key files again.
func (cs *certSource) Reload() error {
	cert, err := tls.LoadX509KeyPair(cs.certFile, cs.keyFile)
	if err != nil {
		return fmt.Errorf("server: loading certificate %s: %w", cs.certFile, err)
	}
	if cert.Leaf == nil {
		if cert.Leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return fmt.Errorf("server: parsing certificate %s: %w", cs.certFile, err)
		}
	}
	cs.cert.Store(&cert)
	return nil
}

// ensureDevCert reuses a valid development certificate for domain and
// hosted, or writes a new one: ECDSA P-256, self-signed, valid for a year.
func ensureDevCert(certFile, keyFile, domain string, hosted ...string) error {
	names := append([]string{domain}, hosted...)
	if cert, err := tls.LoadX509KeyPair(certFile, keyFile); err == nil {
		leaf, err := x509.ParseCertificate(cert.Certificate[0])
		covers := err == nil
		for _, n := range names {
			covers = covers && leaf.VerifyHostname(n) == nil
		}
		if covers && time.Now().Add(24*time.Hour).Before(leaf.NotAfter) {
			return nil
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("server: development certificate %s: %w", certFile, err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("server: generating a development key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 126))
	if err != nil {
		return err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: domain, Organization: []string{"Krill development certificate"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(devValidity),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		DNSNames:              names,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return fmt.Errorf("server: creating a development certificate: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(certFile), 0o700); err != nil {
		return fmt.Errorf("server: %w", err)
	}
	if err := writePEM(keyFile, "PRIVATE KEY", keyDER, 0o600); err != nil {
		return err
	}
	return writePEM(certFile, "CERTIFICATE", der, 0o644)
}

func writePEM(path, typ string, der []byte, mode os.FileMode) error {
	tmp := path + ".tmp"
	b := pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
	if err := os.WriteFile(tmp, b, mode); err != nil {
		return fmt.Errorf("server: writing %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("server: writing %s: %w", path, err)
	}
	return nil
}

// tlsConfigs returns the configuration for STARTTLS and the one for direct
// TLS (XEP-0368), which adds the xmpp-client ALPN protocol. Both take the
// certificate from cs at each handshake, so a reload applies to the next.
//
// With lean (tls.lean) each handshake gets its own configuration, made by
// GetConfigForClient, whose KeyLogWriter hands the connection's traffic
// secrets to the connection itself (keyLog). With tickets non-nil
// (tls.session_tickets) clients may resume their sessions (tickets.go);
// nil turns tickets off.
func tlsConfigs(cs *certSource, lean bool, tickets *ticketKeys) (starttls, direct *tls.Config) {
	starttls = &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetCertificate: func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
			cert := cs.cert.Load()
			// Remember the certificate per connection for
			// tls-server-end-point channel binding.
			if p, ok := hello.Conn.(*tlsPipe); ok {
				p.leaf = cert.Leaf
			}
			return cert, nil
		},
		SessionTicketsDisabled: true,
	}
	if tickets != nil {
		withTickets(starttls, tickets)
	}
	direct = starttls.Clone()
	direct.NextProtos = []string{"xmpp-client"}
	switch {
	case lean && !fips140.Enabled():
		// FIPS 140-3 mode refuses nonces the caller chooses for AES-GCM:
		// there the stock record layer stays.
		withKeyLogTickets(starttls, tickets)
		withKeyLogTickets(direct, tickets)
	case tickets != nil:
		withPipeTickets(starttls, tickets)
		withPipeTickets(direct, tickets)
	}
	return starttls, direct
}

// withKeyLog makes base give each handshake over a tlsPipe a configuration
// of its own whose key-log writer belongs to that connection. Matching
// lines of one shared writer to connections by client random would be
// unsafe: the random is the client's choice, and secrets are logged before
// the client's Finished is verified. Session tickets are turned off: the
// lean layer must know how many records crypto/tls sealed under the
// application key, which only withKeyLogTickets counts.
func withKeyLog(base *tls.Config) { withKeyLogTickets(base, nil) }

// withKeyLogTickets is withKeyLog with session tickets through tickets
// (nil: off), counted per connection (pipeTickets).
func withKeyLogTickets(base *tls.Config, tickets *ticketKeys) {
	if tickets == nil {
		base.SessionTicketsDisabled = true
		base.WrapSession, base.UnwrapSession = nil, nil
	}
	base.KeyLogWriter = keyLog{} // marks base lean (leanConfig); logs nothing
	base.GetConfigForClient = func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
		p, ok := hello.Conn.(*tlsPipe)
		if !ok {
			return nil, nil
		}
		cfg := base.Clone()
		cfg.GetConfigForClient = nil
		cfg.KeyLogWriter = keyLog{p}
		if tickets != nil {
			pipeTickets(cfg, p, tickets)
		}
		return cfg, nil
	}
}

// withPipeTickets gives each handshake over a tlsPipe on the stock record
// layer a configuration of its own whose ticket hooks record, on a
// resumption, the certificate of the session resumed (pipeTickets).
func withPipeTickets(base *tls.Config, tickets *ticketKeys) {
	base.GetConfigForClient = func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
		p, ok := hello.Conn.(*tlsPipe)
		if !ok {
			return nil, nil
		}
		cfg := base.Clone()
		cfg.GetConfigForClient = nil
		pipeTickets(cfg, p, tickets)
		return cfg, nil
	}
}

// leanConfig reports whether cfg was made for the lean record layer
// (withKeyLog).
func leanConfig(cfg *tls.Config) bool {
	_, ok := cfg.KeyLogWriter.(keyLog)
	return ok
}

// hostedDomains returns the domains besides cfg.Domain the server answers
// for over federation, sorted: the MUC and upload services' and the
// components'.
func hostedDomains(cfg *config.Config) []string {
	var out []string
	for _, d := range []string{cfg.MUCDomain(), cfg.UploadDomain()} {
		if d != "" {
			out = append(out, d)
		}
	}
	for d := range cfg.Component.Secrets {
		out = append(out, d)
	}
	slices.Sort(out)
	return slices.Compact(out)
}
