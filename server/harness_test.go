package server_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	msasl "mellium.im/sasl"
	"mellium.im/xmpp"
	"mellium.im/xmpp/jid"

	"github.com/krill-xmpp/krill/config"
	"github.com/krill-xmpp/krill/hook"
	"github.com/krill-xmpp/krill/modules"
	"github.com/krill-xmpp/krill/sasl"
	"github.com/krill-xmpp/krill/server"
	"github.com/krill-xmpp/krill/storage"
)

// testPassword is every test account's password.
const testPassword = "correct horse battery staple"

// ioTimeout bounds every read a test waits for.
const ioTimeout = 10 * time.Second

// testConfig returns the configuration tests start from: loopback, an
// ephemeral port, plaintext allowed.
func testConfig(t testing.TB) config.Config {
	cfg := config.Default()
	cfg.DataDir = t.TempDir()
	cfg.C2S.Listen = "127.0.0.1:0"
	cfg.C2S.DirectTLSListen = ""
	cfg.C2S.AllowPlaintext = true
	cfg.Server.EventLoops = 2
	cfg.Admin.Listen = "127.0.0.1:0"
	// The archive adds <stanza-id/> with a random ID to delivered
	// messages; the tests of other features expect exact bytes without
	// it. mam_test.go turns it on.
	cfg.MAM.Enabled = false
	cfg.S2S.Listen = "" // the federation tests set their own
	return cfg
}

// startServer runs a real server for cfg with the given accounts (all with
// testPassword) and stops it when the test ends.
func startServer(t testing.TB, cfg config.Config, users ...string) *server.Server {
	t.Helper()
	return startServerWith(t, cfg, nil, users...)
}

// startServerWith is startServer with the store wrapped by wrap (nil: the
// store itself), for tests that need to hold storage back.
func startServerWith(t testing.TB, cfg config.Config, wrap func(modules.Store) modules.Store, users ...string) *server.Server {
	t.Helper()
	srv, _ := startServerOpts(t, cfg, serverOpts{wrap: wrap}, users...)
	return srv
}

// serverOpts vary how startServerOpts builds the server under test; the
// zero value is startServer's.
type serverOpts struct {
	wrap    func(modules.Store) modules.Store // nil: the store itself
	log     *zap.Logger                       // nil: none
	started time.Time                         // the uptime's start (XEP-0012)
	mods    []hook.Module                     // nil: modules.Standard
	modsFor func(modules.Store) []hook.Module // set: the modules, made with the store
	extra   []hook.Module                     // appended to modules.Standard
	now     func() time.Time                  // the archive's clock (nil: time.Now)
}

// startServerOpts runs a real server for cfg with the given accounts (all
// with testPassword) and stops it when the test ends; it returns the
// store too, for tests that look into it.
func startServerOpts(t testing.TB, cfg config.Config, o serverOpts, users ...string) (*server.Server, *storage.SQL) {
	t.Helper()
	store, err := storage.OpenSQLite(filepath.Join(cfg.DataDir, "krill.db"))
	if err != nil {
		t.Fatal(err)
	}
	creds, err := sasl.NewCredentials(testPassword, sasl.DefaultIterations)
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range users {
		if err := store.AddAccount(context.Background(), u, creds); err != nil {
			t.Fatal(err)
		}
	}
	var st modules.Store = store
	if o.wrap != nil {
		st = o.wrap(store)
	}
	mods := o.mods
	if o.modsFor != nil {
		mods = o.modsFor(st)
	}
	if mods == nil {
		mods = modules.Standard(st, modules.Options{Config: cfg, Started: o.started, Now: o.now})
		mods = append(mods, o.extra...)
	}
	reg, err := hook.New(mods...)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := server.New(cfg, o.log, st, reg)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := srv.Stop(ctx); err != nil {
			t.Errorf("Stop: %v", err)
		}
		_ = store.Close()
	})
	return srv, store
}

// login connects a mellium.im/xmpp client (an independent implementation)
// and negotiates SASL with mech and resource binding. mellium refuses SASL
// on streams it does not consider secure, so the session starts in the
// Secure state: the server under test still sees plaintext.
func login(t *testing.T, srv *server.Server, user, resource string, mech msasl.Mechanism) *xmpp.Session {
	t.Helper()
	s, err := dialSession(srv, user, resource, testPassword, mech)
	if err != nil {
		t.Fatalf("login %s/%s: %v", user, resource, err)
	}
	t.Cleanup(func() { _ = s.Close(); _ = s.Conn().Close() })
	return s
}

func dialSession(srv *server.Server, user, resource, password string, mech msasl.Mechanism) (*xmpp.Session, error) {
	ctx, cancel := context.WithTimeout(context.Background(), ioTimeout)
	defer cancel()
	conn, err := net.DialTimeout("tcp", srv.Addr().String(), ioTimeout)
	if err != nil {
		return nil, err
	}
	origin := jid.MustParse(user + "@localhost")
	if resource != "" {
		origin, _ = origin.WithResource(resource)
	}
	// mellium.im/xmpp v0.22.0 sends an empty <resource/> whatever the
	// origin's resourcepart, so the server generates one.
	features := []xmpp.StreamFeature{xmpp.SASL("", password, mech), xmpp.BindResource()}
	s, err := xmpp.NewSession(ctx, origin.Domain(), origin, conn, xmpp.Secure,
		xmpp.NewNegotiator(func(*xmpp.Session, *xmpp.StreamConfig) xmpp.StreamConfig {
			return xmpp.StreamConfig{Features: features}
		}))
	if err != nil {
		_ = conn.Close()
		return nil, err
	}
	return s, nil
}

// rawConn is a test client that speaks raw XML and reads with deadlines.
type rawConn struct {
	t    testing.TB
	conn net.Conn
	buf  bytes.Buffer
}

func dialRaw(t testing.TB, srv *server.Server) *rawConn {
	t.Helper()
	conn, err := net.DialTimeout("tcp", srv.Addr().String(), ioTimeout)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return &rawConn{t: t, conn: conn}
}

func (r *rawConn) send(s string) {
	r.t.Helper()
	_ = r.conn.SetWriteDeadline(time.Now().Add(ioTimeout))
	if _, err := r.conn.Write([]byte(s)); err != nil {
		r.t.Fatalf("write %q: %v", s, err)
	}
}

// expect reads until want has arrived and fails unless what arrived is
// exactly want: nothing extra before it, nothing reordered. In want, {*}
// stands for a value that varies (a roster version, a delay stamp, an id):
// any run of characters other than ' < and >; {**} stands for any text,
// for lists the test checks otherwise (disco features). want must end with
// literal text, which is what the read waits for. It returns what arrived.
func (r *rawConn) expect(t testing.TB, want string) string {
	t.Helper()
	parts := wildcard.Split(want, -1)
	tail := parts[len(parts)-1]
	if tail == "" {
		t.Fatalf("expect %q: the pattern must end with literal text", want)
	}
	got, err := r.readUntil(tail, time.Now().Add(ioTimeout))
	if err == nil && len(parts) == 1 && got == want {
		return got
	}
	var re strings.Builder
	re.WriteString(`(?s)^`)
	for i, w := range wildcard.FindAllString(want, -1) {
		re.WriteString(regexp.QuoteMeta(parts[i]))
		if w == "{**}" {
			re.WriteString(`.*`)
		} else {
			re.WriteString(`[^'<>]*`)
		}
	}
	re.WriteString(regexp.QuoteMeta(tail) + `$`)
	if err != nil || !regexp.MustCompile(re.String()).MatchString(got) {
		t.Fatalf("got %q (%v)\nwant exactly %q", got, err, want)
	}
	return got
}

// wildcard finds expect's placeholders.
var wildcard = regexp.MustCompile(`\{\*\*?\}`)

// exchange sends one request and checks that the next bytes the server
// sends are exactly want (with expect's {*}); it returns them.
func (r *rawConn) exchange(t testing.TB, send, want string) string {
	t.Helper()
	r.send(send)
	return r.expect(t, want)
}

// sync is a round trip: a ping to the server and exactly its result. Once
// it returns, the server has processed everything sent before it on this
// stream and everything that processing sent here has been read, so a test
// knows a stanza was handled without sleeping.
func (r *rawConn) sync(t testing.TB, id string) {
	t.Helper()
	r.exchange(t, `<iq type='get' id='`+id+`' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>`, `<iq type='result' id='`+id+`' from='localhost'/>`)
}

// skipUntil reads until the received text contains want and returns
// everything received so far, consuming it. It skips whatever precedes
// want unchecked, so it is only for text whose bytes vary and that the
// test checks otherwise (stream headers with random ids, feature lists);
// everything else is read with expect.
func (r *rawConn) skipUntil(want string) string {
	r.t.Helper()
	got, err := r.readUntil(want, time.Now().Add(ioTimeout))
	if err != nil {
		r.t.Fatalf("waiting for %q: %v; received %q", want, err, got)
	}
	return got
}

func (r *rawConn) readUntil(want string, deadline time.Time) (string, error) {
	var chunk [4096]byte
	for !strings.Contains(r.buf.String(), want) {
		_ = r.conn.SetReadDeadline(deadline)
		n, err := r.conn.Read(chunk[:])
		r.buf.Write(chunk[:n])
		if err != nil {
			return r.buf.String(), err
		}
	}
	i := strings.Index(r.buf.String(), want) + len(want)
	out := r.buf.String()[:i]
	r.buf.Next(i)
	return out, nil
}

// closed waits for the server to close the connection and returns what it
// sent before.
func (r *rawConn) closed() string {
	r.t.Helper()
	var chunk [4096]byte
	deadline := time.Now().Add(ioTimeout)
	for {
		_ = r.conn.SetReadDeadline(deadline)
		n, err := r.conn.Read(chunk[:])
		r.buf.Write(chunk[:n])
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				r.t.Fatalf("connection still open; received %q", r.buf.String())
			}
			out := r.buf.String()
			r.buf.Reset()
			return out
		}
	}
}

const clientHeader = `<?xml version='1.0'?><stream:stream to='localhost' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>`

// open sends a stream header and waits for the features.
func (r *rawConn) open() string {
	r.send(clientHeader)
	return r.skipUntil("</stream:features>")
}

// scramLogin runs SCRAM-SHA-256 with mellium's client over raw XML and
// binds resource; it returns the bound full JID.
func (r *rawConn) scramLogin(user, password, resource string) string {
	r.t.Helper()
	r.open()
	c := msasl.NewClient(msasl.ScramSha256, msasl.Credentials(func() ([]byte, []byte, []byte) {
		return []byte(user), []byte(password), nil
	}))
	_, first, err := c.Step(nil)
	if err != nil {
		r.t.Fatal(err)
	}
	r.send(`<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='SCRAM-SHA-256'>` + base64.StdEncoding.EncodeToString(first) + `</auth>`)
	chal := between(r.expect(r.t, `<challenge xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>{*}</challenge>`), "'>", "</challenge>")
	raw, _ := base64.StdEncoding.DecodeString(chal)
	_, final, err := c.Step(raw)
	if err != nil {
		r.t.Fatal(err)
	}
	r.send(`<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>` + base64.StdEncoding.EncodeToString(final) + `</response>`)
	r.expect(r.t, `<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>{*}</success>`)
	r.open()
	r.send(fmt.Sprintf(`<iq type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>%s</resource></bind></iq>`, resource))
	return between(r.expect(r.t, `<iq type='result' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><jid>{*}</jid></bind></iq>`), "<jid>", "</jid>")
}

func between(s, a, b string) string {
	i := strings.LastIndex(s, a)
	j := strings.LastIndex(s, b)
	if i < 0 || j < i {
		return ""
	}
	return s[i+len(a) : j]
}

// waitFor polls cond every 10 ms until it holds or timeout passes; it
// reports whether it held. The bound keeps every loop finite.
func waitFor(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if cond() {
			return true
		}
		time.Sleep(10 * time.Millisecond)
	}
	return cond()
}

// settledGoroutines waits until the goroutine count stops changing (the
// same for settlePolls polls 10 ms apart, within settleTimeout) and
// returns it: a baseline taken while the server's goroutines are still
// starting or stopping would be wrong. A count that never settles fails
// the test.
func settledGoroutines(t testing.TB) int {
	t.Helper()
	const settlePolls, settleTimeout = 5, 5 * time.Second
	last, same := runtime.NumGoroutine(), 0
	deadline := time.Now().Add(settleTimeout)
	for same < settlePolls {
		if time.Now().After(deadline) {
			t.Fatalf("goroutine count did not settle within %v; last %d", settleTimeout, last)
		}
		time.Sleep(10 * time.Millisecond) // the poll interval, as in waitFor
		n := runtime.NumGoroutine()
		if n == last {
			same++
		} else {
			last, same = n, 0
		}
	}
	return last
}

func contextTimeout() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), ioTimeout)
}
