package bench

import (
	"crypto/tls"
	"errors"
	"fmt"
	"strings"
)

// ErrUnknownCurve means a key exchange group name is not one ParseCurves
// knows.
var ErrUnknownCurve = errors.New("bench: unknown key exchange group")

// curveNames are the groups ParseCurves accepts, by their lowercase IANA
// TLS Supported Groups names.
var curveNames = map[string]tls.CurveID{
	"x25519":             tls.X25519,
	"x25519mlkem768":     tls.X25519MLKEM768,
	"secp256r1":          tls.CurveP256,
	"p256":               tls.CurveP256,
	"secp384r1":          tls.CurveP384,
	"p384":               tls.CurveP384,
	"secp521r1":          tls.CurveP521,
	"p521":               tls.CurveP521,
	"secp256r1mlkem768":  tls.SecP256r1MLKEM768,
	"secp384r1mlkem1024": tls.SecP384r1MLKEM1024,
}

// ParseCurves turns a comma-separated list of key exchange group names
// ("x25519", "x25519mlkem768", "p256", ...; case and spaces ignored) into
// a tls.Config.CurvePreferences value, in the order given. The empty
// string and "default" return nil: crypto/tls's default preferences, which
// in Go 1.26 send an X25519MLKEM768 key share.
func ParseCurves(s string) ([]tls.CurveID, error) {
	s = strings.ToLower(strings.TrimSpace(s))
	if s == "" || s == "default" {
		return nil, nil
	}
	var ids []tls.CurveID
	for name := range strings.SplitSeq(s, ",") {
		name = strings.TrimSpace(name)
		id, ok := curveNames[name]
		if !ok {
			return nil, fmt.Errorf("%w: %q", ErrUnknownCurve, name)
		}
		ids = append(ids, id)
	}
	return ids, nil
}
