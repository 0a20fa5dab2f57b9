package server_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/tls"
	"encoding/base64"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	msasl "mellium.im/sasl"

	"github.com/krill-xmpp/krill/config"
	"github.com/krill-xmpp/krill/fast"
	"github.com/krill-xmpp/krill/hook"
	"github.com/krill-xmpp/krill/modules"
	"github.com/krill-xmpp/krill/sasl"
	"github.com/krill-xmpp/krill/server"
	"github.com/krill-xmpp/krill/storage"
)

// XEP-0484 FAST over real sockets and TLS: tokens issued in SASL2's
// <success/>, token logins with HT-SHA-256-* (draft-schmaus-kitten-sasl-ht)
// whose client side is computed here with crypto/hmac, independently of
// package sasl.

// fastFeature is the end of SASL2's <authentication/> with the FAST module:
// its <fast/> after stream management's <sm/>.
const fastFeature = `<sm xmlns='urn:xmpp:sm:3'/><fast xmlns='urn:xmpp:fast:0'><mechanism>HT-SHA-256-EXPR</mechanism>` +
	`<mechanism>HT-SHA-256-ENDP</mechanism><mechanism>HT-SHA-256-NONE</mechanism></fast></inline>` + upgradeFeatures + `</authentication>`

// fastRotate is the age at which the tests' tokens are replaced at use.
const fastRotate = 10 * time.Minute

// fastClock is the token service's clock, moved by the tests.
type fastClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fastClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fastClock) add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// startFAST runs the server with the standard modules and FAST, whose
// tokens live cfg.FAST.TokenTTL and rotate after fastRotate on clk.
func startFAST(t *testing.T, cfg config.Config, users ...string) (*server.Server, *storage.SQL, *fastClock) {
	t.Helper()
	clk := &fastClock{t: time.Now().Truncate(time.Second)}
	srv, store := startServerOpts(t, cfg, serverOpts{modsFor: func(st modules.Store) []hook.Module {
		secret, err := fast.LoadSecret(cfg.FASTSecretFile())
		if err != nil {
			t.Fatal(err)
		}
		tokens, err := fast.New(st.(storage.FastTokens), secret, fast.Options{
			TTL: cfg.FAST.TokenTTL, MaxTokens: cfg.FAST.MaxTokens, RotateAfter: fastRotate, Now: clk.Now,
		})
		if err != nil {
			t.Fatal(err)
		}
		return modules.Standard(st, modules.Options{Config: cfg, FAST: tokens})
	}}, users...)
	return srv, store, clk
}

// fastConfig is tlsConfig with one-hour tokens.
func fastConfig(t *testing.T) config.Config {
	cfg := tlsConfig(t)
	cfg.Server.EventLoops = 1
	cfg.FAST.TokenTTL = time.Hour
	return cfg
}

// fastOpen opens a STARTTLS stream and checks that FAST is offered inside
// SASL2 only, not among the RFC 6120 mechanisms.
func fastOpen(t *testing.T, srv *server.Server, tc *tls.Config) *rawConn {
	t.Helper()
	r := tlsRaw(t, srv, tc)
	feats := r.open()
	legacy := between(feats, "<mechanisms ", "</mechanisms>")
	if !strings.Contains(feats, fastFeature) || strings.Contains(legacy, "HT-") || strings.Count(feats, "HT-SHA-256-NONE") != 1 {
		t.Fatalf("features %q", feats)
	}
	return r
}

var tokenRe = regexp.MustCompile(`<token xmlns='urn:xmpp:fast:0' expiry='([^']+)' token='([^']+)'/>`)

// expiryAt is how <token expiry/> writes t.
func expiryAt(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05Z") }

// fastPassword logs user in with SASL2 SCRAM-SHA-256-PLUS as device ua,
// asking for a token for mech, and returns the token.
func fastPassword(t *testing.T, srv *server.Server, tc *tls.Config, clk *fastClock, user, ua, mech string) string {
	t.Helper()
	r := fastOpen(t, srv, tc)
	c := r.sasl2Scram(t, msasl.ScramSha256Plus, user, testPassword, `<user-agent id='`+ua+`'/><request-token xmlns='urn:xmpp:fast:0' mechanism='`+mech+`'/>`)
	got := r.expect(t, `<success xmlns='urn:xmpp:sasl:2'><additional-data>{*}</additional-data><authorization-identifier>`+user+`@localhost</authorization-identifier>`+
		`<token xmlns='urn:xmpp:fast:0' expiry='`+expiryAt(clk.Now().Add(time.Hour))+`' token='{*}'/></success>`+boundFeatures)
	verify(t, c, got)
	return tokenRe.FindStringSubmatch(got)[2]
}

// cbData is the channel-binding data of r's TLS connection for mech: the
// tls-exporter (RFC 9266) for -EXPR, tls-server-end-point (RFC 5929, the
// certificate's SHA-256: the development certificate is ECDSA-SHA256) for
// -ENDP, none for -NONE.
func cbData(t *testing.T, r *rawConn, mech string) []byte {
	t.Helper()
	cs := r.conn.(*tls.Conn).ConnectionState()
	switch mech {
	case sasl.HTSHA256Expr:
		cb, err := cs.ExportKeyingMaterial("EXPORTER-Channel-Binding", nil, 32)
		if err != nil {
			t.Fatal(err)
		}
		return cb
	case sasl.HTSHA256Endp:
		sum := sha256.Sum256(cs.PeerCertificates[0].Raw)
		return sum[:]
	}
	return nil
}

// htMAC is HMAC-SHA-256(token, label || cb), the draft's initiator and
// responder messages' proof.
func htMAC(token, label string, cb []byte) []byte {
	m := hmac.New(sha256.New, []byte(token))
	m.Write([]byte(label))
	m.Write(cb)
	return m.Sum(nil)
}

// fastAuth sends a token login: the HT initiator message of user with
// token over cb, the user-agent ua, <fast/> with attrs, and children.
func (r *rawConn) fastAuth(mech, user, token, ua string, cb []byte, attrs, children string) {
	msg := append([]byte(user+"\x00"), htMAC(token, "Initiator", cb)...)
	r.send(sasl2Open + mech + `'><initial-response>` + b64(msg) + `</initial-response><user-agent id='` + ua + `'/>` +
		`<fast xmlns='urn:xmpp:fast:0'` + attrs + `/>` + children + `</authenticate>`)
}

// fastSuccess is the <success/> of a token login of user with token over
// cb, with extra between the authorization identifier and the end.
func fastSuccess(user, token string, cb []byte, extra string) string {
	return `<success xmlns='urn:xmpp:sasl:2'><additional-data>` + b64(htMAC(token, "Responder", cb)) + `</additional-data><authorization-identifier>` + user + `@localhost` + extra
}

// fastRefused answers a wrong, unknown, revoked or replayed token.
var fastRefused = sasl2Failure("not-authorized", "wrong username or password")

// TestFASTLogin: a SASL2 SCRAM-SHA-256-PLUS login asks for a token; the
// next connection logs in with it through HT-SHA-256-EXPR and binds with
// stream management and carbons enabled inline, in one round trip; the
// token is bound to the mechanism, the device and the account.
func TestFASTLogin(t *testing.T) {
	cfg := fastConfig(t)
	srv, _, clk := startFAST(t, cfg, "alice", "bob")
	tc := clientTLS(t, cfg)
	token := fastPassword(t, srv, tc, clk, "alice", uaA, sasl.HTSHA256Expr)

	r := fastOpen(t, srv, tc)
	cb := cbData(t, r, sasl.HTSHA256Expr)
	r.fastAuth(sasl.HTSHA256Expr, "alice", token, uaA, cb, ` count='1'`,
		`<bind xmlns='urn:xmpp:bind:0'><tag>Phone</tag><enable xmlns='urn:xmpp:carbons:2'/><enable xmlns='urn:xmpp:sm:3' resume='true'/></bind>`)
	r.expect(t, fastSuccess("alice", token, cb, `/Phone/{*}</authorization-identifier><bound xmlns='urn:xmpp:bind:0'><enabled xmlns='urn:xmpp:sm:3' id='{*}' resume='true' max='300'/></bound></success><stream:features></stream:features>`))
	r.exchange(t, `<r xmlns='`+nsSM+`'/>`, `<a xmlns='`+nsSM+`' h='0'/>`)
	r.sync(t, "p1")
	if st := srv.Stats(); st.AuthFAST != 1 || st.AuthSASL2 != 2 {
		t.Fatalf("token logins %d of %d SASL2 logins; want 1 of 2", st.AuthFAST, st.AuthSASL2)
	}

	for _, tc2 := range []struct {
		name, mech, user, ua string
		cb                   func(r *rawConn) []byte
		want                 string
	}{
		// Another mechanism: the token was issued for -EXPR.
		{"another mechanism", sasl.HTSHA256None, "alice", uaA, func(*rawConn) []byte { return nil }, fastRefused},
		{"another device", sasl.HTSHA256Expr, "alice", uaB, func(r *rawConn) []byte { return cbData(t, r, sasl.HTSHA256Expr) }, fastRefused},
		{"another account", sasl.HTSHA256Expr, "bob", uaA, func(r *rawConn) []byte { return cbData(t, r, sasl.HTSHA256Expr) }, fastRefused},
		// The proof bound to the first connection's exporter.
		{"another connection's binding", sasl.HTSHA256Expr, "alice", uaA, func(*rawConn) []byte { return cb }, fastRefused},
	} {
		t.Run(tc2.name, func(t *testing.T) {
			r := fastOpen(t, srv, tc)
			r.fastAuth(tc2.mech, tc2.user, token, tc2.ua, tc2.cb(r), ` count='9'`, "")
			r.expect(t, tc2.want)
		})
	}

	// Malformed requests, and HT outside <fast/>'s offer.
	r = fastOpen(t, srv, tc)
	msg := b64(append([]byte("alice\x00"), htMAC(token, "Initiator", cbData(t, r, sasl.HTSHA256Expr))...))
	r.exchange(t, sasl2Open+`HT-SHA-256-EXPR'><initial-response>`+msg+`</initial-response><user-agent id='`+uaA+`'/></authenticate>`,
		sasl2Failure("malformed-request", "a token login needs &lt;fast xmlns=&apos;urn:xmpp:fast:0&apos;/&gt;"))
	r.exchange(t, sasl2Open+`HT-SHA-256-EXPR'><user-agent id='`+uaA+`'/><fast xmlns='urn:xmpp:fast:0'/></authenticate>`,
		sasl2Failure("malformed-request", "a token login needs an initial response"))
	r.exchange(t, sasl2Open+`HT-SHA-256-EXPR'><initial-response>`+msg+`</initial-response><user-agent id='`+uaA+`'/><fast xmlns='urn:xmpp:fast:0' count='-1'/></authenticate>`,
		sasl2Failure("malformed-request", "the FAST count must be a non-negative integer"))
	r.exchange(t, `<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='HT-SHA-256-NONE'>`+msg+`</auth>`,
		`<failure xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><invalid-mechanism/></failure>`)
	// A token login without a device: XEP-0484 binds tokens to one.
	r.exchange(t, sasl2Open+`HT-SHA-256-EXPR'><initial-response>`+msg+`</initial-response><fast xmlns='urn:xmpp:fast:0'/></authenticate>`,
		sasl2Fail+`<malformed-request xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/></failure>`)
	// A password login asking for a token without a device, or for a
	// mechanism that is no HT.
	r.exchange(t, sasl2Open+`PLAIN'><initial-response>`+b64([]byte("\x00alice\x00"+testPassword))+`</initial-response><request-token xmlns='urn:xmpp:fast:0' mechanism='HT-SHA-256-NONE'/></authenticate>`,
		sasl2Failure("malformed-request", "a token needs &lt;user-agent id=&apos;...&apos;/&gt;"))
	r.exchange(t, sasl2Open+`PLAIN'><initial-response>`+b64([]byte("\x00alice\x00"+testPassword))+`</initial-response><user-agent id='`+uaA+`'/><request-token xmlns='urn:xmpp:fast:0' mechanism='SCRAM-SHA-1'/></authenticate>`,
		sasl2Failure("malformed-request", "unknown token mechanism"))
	// The token still works after all that.
	r.fastAuth(sasl.HTSHA256Expr, "alice", token, uaA, cbData(t, r, sasl.HTSHA256Expr), ` count='2'`, "")
	r.expect(t, fastSuccess("alice", token, cbData(t, r, sasl.HTSHA256Expr), `</authorization-identifier></success>`+boundFeatures))
}

// TestFASTNoneAndEndpoint: HT-SHA-256-NONE and -ENDP tokens, requested
// with PLAIN, and a token asked for inside a token login.
func TestFASTNoneAndEndpoint(t *testing.T) {
	cfg := fastConfig(t)
	srv, _, clk := startFAST(t, cfg, "alice")
	tc := clientTLS(t, cfg)
	for _, mech := range []string{sasl.HTSHA256None, sasl.HTSHA256Endp} {
		t.Run(mech, func(t *testing.T) {
			r := fastOpen(t, srv, tc)
			got := r.exchange(t, sasl2Open+`PLAIN'><initial-response>`+b64([]byte("\x00alice\x00"+testPassword))+`</initial-response><user-agent id='`+uaB+`'/>`+
				`<request-token xmlns='urn:xmpp:fast:0' mechanism='`+mech+`'/></authenticate>`,
				`<success xmlns='urn:xmpp:sasl:2'><authorization-identifier>alice@localhost</authorization-identifier><token xmlns='urn:xmpp:fast:0' expiry='`+
					expiryAt(clk.Now().Add(time.Hour))+`' token='{*}'/></success>`+boundFeatures)
			token := tokenRe.FindStringSubmatch(got)[2]
			r = fastOpen(t, srv, tc)
			cb := cbData(t, r, mech)
			// A fresh token for the same mechanism asked for in the token
			// login: it replaces the one used.
			r.fastAuth(mech, "alice", token, uaB, cb, "", `<request-token xmlns='urn:xmpp:fast:0' mechanism='`+mech+`'/>`)
			got = r.expect(t, fastSuccess("alice", token, cb, `</authorization-identifier><token xmlns='urn:xmpp:fast:0' expiry='{*}' token='{*}'/></success>`+boundFeatures))
			fresh := tokenRe.FindStringSubmatch(got)[2]
			if fresh == token {
				t.Fatal("the fresh token is the one used")
			}
			r = fastOpen(t, srv, tc)
			cb = cbData(t, r, mech)
			r.fastAuth(mech, "alice", fresh, uaB, cb, "", "")
			r.expect(t, fastSuccess("alice", fresh, cb, `</authorization-identifier></success>`+boundFeatures))
		})
	}
}

// TestFASTRotationExpiryReplay: a token older than the rotation age is
// replaced at its next use and stays valid until the new one is used; a
// count not above the last one is a replay; an expired token is refused
// with credentials-expired; invalidate='true' deletes the token used.
func TestFASTRotationExpiryReplay(t *testing.T) {
	cfg := fastConfig(t)
	srv, _, clk := startFAST(t, cfg, "alice")
	tc := clientTLS(t, cfg)
	// login logs in with token; tail follows the authorization
	// identifier in <success/>, or fail is the whole answer.
	login := func(token, attrs, tail, fail string) string {
		t.Helper()
		r := fastOpen(t, srv, tc)
		cb := cbData(t, r, sasl.HTSHA256Expr)
		r.fastAuth(sasl.HTSHA256Expr, "alice", token, uaA, cb, attrs, "")
		if fail != "" {
			return r.expect(t, fail)
		}
		return r.expect(t, fastSuccess("alice", token, cb, `</authorization-identifier>`+tail+`</success>`+boundFeatures))
	}
	const rotated = `<token xmlns='urn:xmpp:fast:0' expiry='{*}' token='{*}'/>`
	old := fastPassword(t, srv, tc, clk, "alice", uaA, sasl.HTSHA256Expr)
	login(old, ` count='1'`, "", "")
	// The same count again, and a lower one: replays.
	login(old, ` count='1'`, "", fastRefused)
	login(old, ` count='0'`, "", fastRefused)
	login(old, ` count='5'`, "", "")

	// Due for rotation: a new token in <success/>.
	clk.add(fastRotate)
	got := login(old, ` count='6'`, rotated, "")
	m := tokenRe.FindStringSubmatch(got)
	if m[1] != expiryAt(clk.Now().Add(time.Hour)) || m[2] == old {
		t.Fatalf("rotation: %q", got)
	}
	lost := m[2]
	// The old token works until the new one is used (rotated again: the
	// client may not have read the first, which is dropped unused), and
	// is then gone.
	got = login(old, ` count='7'`, rotated, "")
	fresh := tokenRe.FindStringSubmatch(got)[2]
	login(lost, ` count='1'`, "", fastRefused)
	login(fresh, ` count='1'`, "", "")
	login(old, ` count='8'`, "", fastRefused)

	// Expired.
	clk.add(time.Hour)
	login(fresh, ` count='2'`, "", sasl2Fail+`<credentials-expired xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/></failure>`)

	// invalidate='true': the token logs in once more, then never.
	tok := fastPassword(t, srv, tc, clk, "alice", uaB, sasl.HTSHA256Expr)
	r := fastOpen(t, srv, tc)
	cb := cbData(t, r, sasl.HTSHA256Expr)
	r.fastAuth(sasl.HTSHA256Expr, "alice", tok, uaB, cb, ` invalidate='true'`, "")
	r.expect(t, fastSuccess("alice", tok, cb, `</authorization-identifier></success>`+boundFeatures))
	r = fastOpen(t, srv, tc)
	r.fastAuth(sasl.HTSHA256Expr, "alice", tok, uaB, cbData(t, r, sasl.HTSHA256Expr), "", "")
	r.expect(t, fastRefused)
}

// TestFASTPasswordChange: a password change in band (XEP-0077) and one
// through storage (as `krill user passwd` makes it) revoke the account's
// tokens.
func TestFASTPasswordChange(t *testing.T) {
	cfg := fastConfig(t)
	srv, store, clk := startFAST(t, cfg, "alice")
	tc := clientTLS(t, cfg)
	tokenLogin := func(token, want string) {
		t.Helper()
		r := fastOpen(t, srv, tc)
		cb := cbData(t, r, sasl.HTSHA256Expr)
		r.fastAuth(sasl.HTSHA256Expr, "alice", token, uaA, cb, "", "")
		if want == "" {
			want = fastSuccess("alice", token, cb, `</authorization-identifier></success>`+boundFeatures)
		}
		r.expect(t, want)
	}
	token := fastPassword(t, srv, tc, clk, "alice", uaA, sasl.HTSHA256Expr)
	tokenLogin(token, "")
	// In band, from a session bound with the token.
	r := fastOpen(t, srv, tc)
	cb := cbData(t, r, sasl.HTSHA256Expr)
	r.fastAuth(sasl.HTSHA256Expr, "alice", token, uaA, cb, "", `<bind xmlns='urn:xmpp:bind:0'/>`)
	r.skipUntil("</stream:features>")
	r.exchange(t, `<iq type='set' id='cp1'><query xmlns='jabber:iq:register'><username>alice</username><password>`+testPassword+`</password></query></iq>`,
		`<iq type='result' id='cp1'/>`)
	tokenLogin(token, fastRefused)

	// Through storage, as `krill user passwd` does.
	token = fastPassword(t, srv, tc, clk, "alice", uaA, sasl.HTSHA256Expr)
	tokenLogin(token, "")
	creds, err := sasl.NewCredentials(testPassword, sasl.DefaultIterations)
	if err != nil {
		t.Fatal(err)
	}
	if err := store.SetCredentials(context.Background(), "alice", creds); err != nil {
		t.Fatal(err)
	}
	tokenLogin(token, fastRefused)
}

// TestFASTFailuresCounted: a wrong token is a failed credential like a
// wrong password: preauth.max_failed_auth of them close the stream, and
// they count towards the per-address throttle.
func TestFASTFailuresCounted(t *testing.T) {
	cfg := fastConfig(t)
	cfg.Preauth.MaxFailedAuth = 2
	srv, _, clk := startFAST(t, cfg, "alice")
	tc := clientTLS(t, cfg)
	token := fastPassword(t, srv, tc, clk, "alice", uaA, sasl.HTSHA256Expr)
	r := fastOpen(t, srv, tc)
	cb := cbData(t, r, sasl.HTSHA256Expr)
	r.fastAuth(sasl.HTSHA256Expr, "alice", token+"x", uaA, cb, "", "")
	r.expect(t, fastRefused)
	// Another wrong token: the second failed credential closes the stream.
	r.fastAuth(sasl.HTSHA256Expr, "alice", "guess", uaA, cb, "", "")
	if got, want := r.closed(), fastRefused+`<stream:error><policy-violation xmlns='urn:ietf:params:xml:ns:xmpp-streams'/><text xmlns='urn:ietf:params:xml:ns:xmpp-streams'>too many failed authentication attempts</text></stream:error></stream:stream>`; got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
	if st := srv.Stats(); st.AuthFailedCredential != 2 || st.AuthFAST != 0 {
		t.Fatalf("failed credentials %d, token logins %d; want 2 and 0", st.AuthFailedCredential, st.AuthFAST)
	}
}

// TestFASTThrottled: failed token logins count towards the per-address
// throttle, which then refuses even the right token without a look-up.
func TestFASTThrottled(t *testing.T) {
	cfg := fastConfig(t)
	cfg.Preauth.MaxFailuresPerIP = 2
	cfg.Preauth.MaxFailedAuth = 10
	srv, _, clk := startFAST(t, cfg, "alice")
	tc := clientTLS(t, cfg)
	token := fastPassword(t, srv, tc, clk, "alice", uaA, sasl.HTSHA256Expr)
	r := fastOpen(t, srv, tc)
	cb := cbData(t, r, sasl.HTSHA256Expr)
	for range 2 {
		r.fastAuth(sasl.HTSHA256Expr, "alice", "guess", uaA, cb, "", "")
		r.expect(t, fastRefused)
	}
	r.fastAuth(sasl.HTSHA256Expr, "alice", token, uaA, cb, "", "")
	r.expect(t, sasl2Failure("temporary-auth-failure", "too many failed logins from your address; try later"))
	if st := srv.Stats(); st.AuthThrottled != 1 || st.AuthFAST != 0 {
		t.Fatalf("throttled %d, token logins %d; want 1 and 0", st.AuthThrottled, st.AuthFAST)
	}
}

// TestSASL2DowngradeProtection: XEP-0474 inside SASL2. SCRAM's
// server-first carries h=, the hash of the <authentication/> mechanisms
// (not FAST's) and the XEP-0440 channel-binding types, as the client
// computes it from the features it received.
func TestSASL2DowngradeProtection(t *testing.T) {
	cfg := fastConfig(t)
	srv, _, _ := startFAST(t, cfg, "dora")
	r := tlsRaw(t, srv, clientTLS(t, cfg))
	feats := r.open()
	auth := between(feats, "<authentication ", "<inline>")
	var mechs []string
	for _, m := range regexp.MustCompile(`<mechanism>([^<]+)</mechanism>`).FindAllStringSubmatch(auth, -1) {
		mechs = append(mechs, m[1])
	}
	var cbs []string
	for _, m := range regexp.MustCompile(`<channel-binding type='([^']+)'/>`).FindAllStringSubmatch(feats, -1) {
		cbs = append(cbs, m[1])
	}
	if len(mechs) != 7 || len(cbs) != 2 {
		t.Fatalf("features %q", feats)
	}
	first := "n,,n=dora,r=abcdefghijklmnopqrstuvwx"
	r.send(sasl2Open + `SCRAM-SHA-256'><initial-response>` + b64([]byte(first)) + `</initial-response></authenticate>`)
	chal := between(r.expect(t, `<challenge xmlns='urn:xmpp:sasl:2'>{*}</challenge>`), "'>", "</challenge>")
	raw, err := base64.StdEncoding.DecodeString(chal)
	if err != nil {
		t.Fatal(err)
	}
	var h string
	for _, attr := range strings.Split(string(raw), ",") {
		if v, ok := strings.CutPrefix(attr, "h="); ok {
			h = v
		}
	}
	if want := b64(sasl.DowngradeHash(sasl.SHA256, mechs, cbs)); h != want {
		t.Fatalf("server-first %q: h=%q, want %q from %v %v", raw, h, want, mechs, cbs)
	}
	// Stripped of the -PLUS mechanisms in transit: another hash.
	var stripped []string
	for _, m := range mechs {
		if !strings.HasSuffix(m, "-PLUS") {
			stripped = append(stripped, m)
		}
	}
	if b64(sasl.DowngradeHash(sasl.SHA256, stripped, cbs)) == h {
		t.Fatal("a stripped list hashes like the offered one")
	}
}

// TestFASTCountWriteBehind: a standalone server checks <fast count/> in
// memory (a replay is refused at once) and writes the highest count of
// each token behind; stopping the server writes what is pending, so the
// database holds the last count when the process exits.
func TestFASTCountWriteBehind(t *testing.T) {
	cfg := fastConfig(t)
	srv, store, clk := startFAST(t, cfg, "alice")
	tc := clientTLS(t, cfg)
	token := fastPassword(t, srv, tc, clk, "alice", uaA, sasl.HTSHA256Expr)
	login := func(count, want string) {
		t.Helper()
		r := fastOpen(t, srv, tc)
		cb := cbData(t, r, sasl.HTSHA256Expr)
		r.fastAuth(sasl.HTSHA256Expr, "alice", token, uaA, cb, ` count='`+count+`'`, "")
		if want == "" {
			want = fastSuccess("alice", token, cb, `</authorization-identifier></success>`+boundFeatures)
		}
		r.expect(t, want)
	}
	login("1", "")
	login("2", "")
	login("3", "")
	login("3", fastRefused)
	login("2", fastRefused)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	rows, err := store.FastTokens(ctx, "alice", uaA)
	if err != nil || len(rows) != 1 {
		t.Fatalf("rows %+v, %v", rows, err)
	}
	if rows[0].LastCount != 3 {
		t.Fatalf("last count %d in the database after Stop, want 3", rows[0].LastCount)
	}
}
