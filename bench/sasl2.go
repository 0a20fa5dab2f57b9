package bench

import (
	"crypto/hmac"
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"io"
	"net"
)

// SASL2 (XEP-0388) logins without Bind 2, for clients that only need to
// pass or fail authentication: the attack's hostile connections, which
// must meet the same pre-auth policy over SASL2 as over RFC 6120 SASL.

// Authenticate2 logs in as user with SASL2 SCRAM-SHA-256 on c, a TLS
// stream whose features the server has just sent, and checks the server's
// signature. A <failure> from the server is ErrRefused. There is no
// stream restart after SASL2: the server's stream features follow.
func Authenticate2(c net.Conn, user, password string) error {
	sc, first := newSCRAM(user, password)
	if _, err := io.WriteString(c, `<authenticate xmlns='urn:xmpp:sasl:2' mechanism='SCRAM-SHA-256'><initial-response>`+
		base64.StdEncoding.EncodeToString(first)+`</initial-response></authenticate>`); err != nil {
		return err
	}
	challenge, err := readSASL(c, "challenge")
	if err != nil {
		return err
	}
	final, err := sc.final(challenge)
	if err != nil {
		return err
	}
	if _, err := io.WriteString(c, `<response xmlns='urn:xmpp:sasl:2'>`+base64.StdEncoding.EncodeToString(final)+`</response>`); err != nil {
		return err
	}
	got, err := readUntil(c, "</success>", "</failure>")
	if err != nil {
		return err
	}
	add, err := additionalData(got)
	if err != nil {
		return fmt.Errorf("%w: SASL2 answered with %s", ErrRefused, clip(got, 200))
	}
	return sc.verify(add)
}

// AuthenticateToken logs in as user with a XEP-0484 FAST token through
// HT-SHA-256-EXPR on c, a TLS stream whose features the server has just
// sent, as the device userAgent (a UUID), and checks the server's
// responder message. A <failure> (a wrong token) is ErrRefused.
func AuthenticateToken(c net.Conn, user, token, userAgent string) error {
	tc, ok := c.(*tls.Conn)
	if !ok {
		return fmt.Errorf("%w: FAST needs TLS", ErrBadOptions)
	}
	cs := tc.ConnectionState()
	cb, err := cs.ExportKeyingMaterial("EXPORTER-Channel-Binding", nil, 32)
	if err != nil {
		return err
	}
	msg := append([]byte(user+"\x00"), htMAC(token, "Initiator", cb)...)
	if _, err := io.WriteString(c, `<authenticate xmlns='urn:xmpp:sasl:2' mechanism='HT-SHA-256-EXPR'><initial-response>`+
		base64.StdEncoding.EncodeToString(msg)+`</initial-response><user-agent id='`+escapeAttr(userAgent)+`'/>`+
		`<fast xmlns='urn:xmpp:fast:0'/></authenticate>`); err != nil {
		return err
	}
	got, err := readUntil(c, "</success>", "</failure>")
	if err != nil {
		return err
	}
	add, err := additionalData(got)
	if err != nil {
		return fmt.Errorf("%w: SASL2 answered with %s", ErrRefused, clip(got, 200))
	}
	if !hmac.Equal(add, htMAC(token, "Responder", cb)) {
		return fmt.Errorf("%w: wrong HT responder message", ErrSCRAM)
	}
	return nil
}
