package bench

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"regexp"
	"strconv"
)

// A reconnect is what a mobile client pays each time it comes back: a new
// TCP connection, STARTTLS and a TLS handshake, a login, a resource, and
// stream management and carbons enabled. The three ways Krill offers:
const (
	// ReconnectLegacy is RFC 6120 SASL SCRAM-SHA-256, a stream restart,
	// resource binding, then stream management (XEP-0198, with
	// resumption) and carbons (XEP-0280) enabled, one round trip each.
	ReconnectLegacy = "legacy"
	// ReconnectSASL2 is SASL2 (XEP-0388) SCRAM-SHA-256 with Bind 2
	// (XEP-0386) enabling stream management and carbons inline: no
	// restart, one round trip less for each.
	ReconnectSASL2 = "sasl2"
	// ReconnectFAST is ReconnectSASL2 with a XEP-0484 token instead of
	// the password: HT-SHA-256-EXPR, one round trip for the login and
	// everything inline.
	ReconnectFAST = "fast"
	// ReconnectFASTNoCount is ReconnectFAST without XEP-0484's count, as
	// xmpp.js 0.14 logs in: no replay counter to update, so the server
	// writes nothing once the token has been used.
	ReconnectFASTNoCount = "fast-nocount"
)

// Reconnector logs one device (an account and a user-agent id) in over
// and over the same way. It is not safe for concurrent use.
type Reconnector struct {
	// Mode is one of the Reconnect constants.
	Mode string
	// User and Password are the account's; UserAgent a UUID.
	User, Password, UserAgent string
	// Resource is the resource ReconnectLegacy binds and the Bind 2 tag.
	Resource string

	token string // ReconnectFAST's, from the first login
	count int    // XEP-0484's counter
}

// Ready reports whether the device can reconnect the measured way: in
// ReconnectFAST, once it holds a token.
func (r *Reconnector) Ready() bool {
	return r.token != "" || r.Mode != ReconnectFAST && r.Mode != ReconnectFASTNoCount
}

const bind2Inline = `<enable xmlns='urn:xmpp:sm:3' resume='true'/><enable xmlns='urn:xmpp:carbons:2'/>`

var tokenAttr = regexp.MustCompile(`<token xmlns='urn:xmpp:fast:0' expiry='[^']*' token='([^']+)'/>`)

// Login runs one reconnect on c, a stream that o.Stage StageTLS has just
// brought over TLS (its features read); it returns once the session is
// bound with stream management and carbons on. ReconnectFAST's first
// login uses the password (SASL2 SCRAM-SHA-256) and asks for the token the
// later ones use.
func (r *Reconnector) Login(c net.Conn, o *Options) error {
	switch r.Mode {
	case ReconnectLegacy:
		return r.legacy(c, o)
	case ReconnectSASL2:
		_, err := r.sasl2(c, "")
		return err
	case ReconnectFAST, ReconnectFASTNoCount:
		if r.token == "" {
			got, err := r.sasl2(c, `<request-token xmlns='urn:xmpp:fast:0' mechanism='HT-SHA-256-EXPR'/>`)
			if err != nil {
				return err
			}
			m := tokenAttr.FindSubmatch(got)
			if m == nil {
				return fmt.Errorf("%w: no FAST token in %s", ErrRefused, clip(got, 300))
			}
			r.token = string(m[1])
			return nil
		}
		return r.fast(c)
	}
	return fmt.Errorf("%w: reconnect mode %q", ErrBadOptions, r.Mode)
}

func (r *Reconnector) legacy(c net.Conn, o *Options) error {
	if err := Authenticate(c, r.User, r.Password); err != nil {
		return err
	}
	oo := *o
	oo.N = max(oo.N, 1)
	if err := oo.setDefaults(); err != nil {
		return err
	}
	if _, err := openStream(c, &oo, 0); err != nil {
		return err
	}
	for _, step := range []struct{ send, want string }{
		{`<iq type='set' id='bind'><bind xmlns='` + nsBind + `'><resource>` + escapeAttr(r.Resource) + `</resource></bind></iq>`, "<jid>"},
		{`<enable xmlns='urn:xmpp:sm:3' resume='true'/>`, "<enabled"},
		{`<iq type='set' id='carbons'><enable xmlns='urn:xmpp:carbons:2'/></iq>`, "id='carbons'"},
	} {
		if _, err := io.WriteString(c, step.send); err != nil {
			return err
		}
		got, err := readUntil(c, step.want, "<failed", "type='error'")
		if err != nil {
			return err
		}
		if !bytes.Contains(got, []byte(step.want)) || bytes.Contains(got, []byte("type='error'")) {
			return fmt.Errorf("%w: %s answered with %s", ErrRefused, clip([]byte(step.send), 60), clip(got, 200))
		}
	}
	return nil
}

// sasl2 logs in with SASL2 SCRAM-SHA-256 and Bind 2, extra being more
// children of <authenticate/>; it returns <success/>.
func (r *Reconnector) sasl2(c net.Conn, extra string) ([]byte, error) {
	sc, first := newSCRAM(r.User, r.Password)
	if _, err := io.WriteString(c, `<authenticate xmlns='urn:xmpp:sasl:2' mechanism='SCRAM-SHA-256'><initial-response>`+
		base64.StdEncoding.EncodeToString(first)+`</initial-response><user-agent id='`+r.UserAgent+`'/>`+extra+
		`<bind xmlns='urn:xmpp:bind:0'><tag>`+escapeAttr(r.Resource)+`</tag>`+bind2Inline+`</bind></authenticate>`); err != nil {
		return nil, err
	}
	challenge, err := readSASL(c, "challenge")
	if err != nil {
		return nil, err
	}
	final, err := sc.final(challenge)
	if err != nil {
		return nil, err
	}
	if _, err := io.WriteString(c, `<response xmlns='urn:xmpp:sasl:2'>`+base64.StdEncoding.EncodeToString(final)+`</response>`); err != nil {
		return nil, err
	}
	got, err := readSuccess2(c)
	if err != nil {
		return nil, err
	}
	add, err := additionalData(got)
	if err != nil {
		return nil, err
	}
	return got, sc.verify(add)
}

// fast logs in with the token (HT-SHA-256-EXPR, draft-schmaus-kitten-
// sasl-ht) and Bind 2, and checks the server's responder message.
func (r *Reconnector) fast(c net.Conn) error {
	tc, ok := c.(*tls.Conn)
	if !ok {
		return fmt.Errorf("%w: FAST needs TLS", ErrBadOptions)
	}
	cs := tc.ConnectionState()
	cb, err := cs.ExportKeyingMaterial("EXPORTER-Channel-Binding", nil, 32)
	if err != nil {
		return err
	}
	fastElem := `<fast xmlns='urn:xmpp:fast:0'/>`
	if r.Mode == ReconnectFAST {
		r.count++
		fastElem = `<fast xmlns='urn:xmpp:fast:0' count='` + strconv.Itoa(r.count) + `'/>`
	}
	msg := append([]byte(r.User+"\x00"), htMAC(r.token, "Initiator", cb)...)
	if _, err := io.WriteString(c, `<authenticate xmlns='urn:xmpp:sasl:2' mechanism='HT-SHA-256-EXPR'><initial-response>`+
		base64.StdEncoding.EncodeToString(msg)+`</initial-response><user-agent id='`+r.UserAgent+`'/>`+
		fastElem+
		`<bind xmlns='urn:xmpp:bind:0'><tag>`+escapeAttr(r.Resource)+`</tag>`+bind2Inline+`</bind></authenticate>`); err != nil {
		return err
	}
	got, err := readSuccess2(c)
	if err != nil {
		return err
	}
	add, err := additionalData(got)
	if err != nil {
		return err
	}
	if !hmac.Equal(add, htMAC(r.token, "Responder", cb)) {
		return fmt.Errorf("%w: wrong HT responder message", ErrSCRAM)
	}
	if m := tokenAttr.FindSubmatch(got); m != nil {
		r.token, r.count = string(m[1]), 0 // rotated
	}
	return nil
}

// readSuccess2 reads SASL2's <success/> up to Bind 2's answer.
func readSuccess2(c net.Conn) ([]byte, error) {
	got, err := readUntil(c, "</success>", "</failure>")
	if err != nil {
		return nil, err
	}
	if !bytes.Contains(got, []byte("</success>")) || !bytes.Contains(got, []byte("<enabled xmlns='urn:xmpp:sm:3'")) {
		return nil, fmt.Errorf("%w: SASL2 answered with %s", ErrRefused, clip(got, 300))
	}
	return got, nil
}

// additionalData decodes <additional-data/> of a SASL2 <success/>.
func additionalData(success []byte) ([]byte, error) {
	_, rest, ok := bytes.Cut(success, []byte("<additional-data>"))
	v, _, ok2 := bytes.Cut(rest, []byte("</additional-data>"))
	if !ok || !ok2 {
		return nil, fmt.Errorf("%w: no additional data in %s", ErrSCRAM, clip(success, 200))
	}
	return base64.StdEncoding.DecodeString(string(v))
}

func htMAC(token, label string, cb []byte) []byte {
	m := hmac.New(sha256.New, []byte(token))
	m.Write([]byte(label))
	m.Write(cb)
	return m.Sum(nil)
}
