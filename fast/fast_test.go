package fast

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/krill-xmpp/krill/sasl"
	"github.com/krill-xmpp/krill/storage"
)

var (
	exporterA = bytes.Repeat([]byte{0xa1}, 32) // this connection's tls-exporter
	exporterB = bytes.Repeat([]byte{0xb2}, 32) // another connection's
	endPoint  = bytes.Repeat([]byte{0xe9}, 32)
)

// clock is a settable Options.Now.
type clock struct{ t time.Time }

func (c *clock) now() time.Time          { return c.t }
func (c *clock) advance(d time.Duration) { c.t = c.t.Add(d) }
func testSecret(b byte) []byte           { return bytes.Repeat([]byte{b}, SecretLen) }
func hmac256(key, msg []byte) []byte     { m := hmac.New(sha256.New, key); m.Write(msg); return m.Sum(nil) }
func cat(a string, b []byte) []byte      { return append([]byte(a), b...) }
func binding(cb []byte) func(string) ([]byte, error) {
	return func(t string) ([]byte, error) {
		if t == sasl.BindingTLSServerEndPoint {
			return endPoint, nil
		}
		return cb, nil
	}
}

// env is a token service over a fresh SQLite store with account alice.
type env struct {
	store  *storage.SQL
	tokens *Tokens
	clock  *clock
}

func newEnv(t *testing.T, opts Options) *env {
	t.Helper()
	s, err := storage.OpenSQLite(filepath.Join(t.TempDir(), "krill.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	creds, err := sasl.NewCredentials("pencil", 4096)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.AddAccount(context.Background(), "alice", creds); err != nil {
		t.Fatal(err)
	}
	c := &clock{t: time.Date(2026, 11, 30, 6, 0, 0, 0, time.UTC)}
	opts.Now = c.now
	tok, err := New(s, testSecret(1), opts)
	if err != nil {
		t.Fatal(err)
	}
	e := &env{store: s, tokens: tok, clock: c}
	// Before the store closes (cleanups run last first): no count
	// written behind may outlive the test.
	t.Cleanup(func() { e.tokens.Flush(context.Background()) })
	return e
}

// login runs one token login as a client would: initiator message over
// cb, then the server side (Start, Authenticate), and checks the responder
// message on success.
func (e *env) login(t *testing.T, mech, token string, cb []byte, l Login) (Result, error) {
	t.Helper()
	return e.loginOn(t, mech, token, cb, cb, l)
}

// loginOn is login with a message computed over clientCB arriving on a
// connection whose tls-exporter is serverCB (a replay when they differ).
func (e *env) loginOn(t *testing.T, mech, token string, clientCB, cb []byte, l Login) (Result, error) {
	t.Helper()
	if l.Username == "" {
		l.Username = "alice"
	}
	cbData, clientData := cb, clientCB
	switch mech {
	case sasl.HTSHA256None:
		cbData, clientData = nil, nil
	case sasl.HTSHA256Endp:
		cbData, clientData = endPoint, endPoint
	}
	msg := append([]byte(l.Username+"\x00"), hmac256([]byte(token), cat("Initiator", clientData))...)
	ht, err := sasl.NewHT(sasl.Options{Mechanism: mech, Binding: binding(cb)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ht.Start(msg); err != nil {
		t.Fatal(err)
	}
	res, err := e.tokens.Authenticate(context.Background(), ht, l)
	if err == nil && !bytes.Equal(res.Additional, hmac256([]byte(token), cat("Responder", cbData))) {
		t.Fatalf("responder message %x is not HMAC(token, Responder||cb)", res.Additional)
	}
	return res, err
}

func (e *env) issue(t *testing.T, client, mech string) Token {
	t.Helper()
	tok, err := e.tokens.Issue(context.Background(), "alice", client, mech)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func wantErr(t *testing.T, err, want error) {
	t.Helper()
	if want == nil {
		if err != nil {
			t.Fatalf("err = %v, want success", err)
		}
		return
	}
	if !errors.Is(err, want) {
		t.Fatalf("err = %v, want %v", err, want)
	}
}

func TestLoginWithToken(t *testing.T) {
	for _, mech := range sasl.HTMechanisms() {
		t.Run(mech, func(t *testing.T) {
			e := newEnv(t, Options{})
			tok := e.issue(t, "phone", mech)
			if want := e.clock.t.Add(DefaultTTL); !tok.Expiry.Equal(want) {
				t.Fatalf("expiry %v, want %v", tok.Expiry, want)
			}
			res, err := e.login(t, mech, tok.Secret, exporterA, Login{Client: "phone", Count: 1})
			wantErr(t, err, nil)
			if res.Token != nil {
				t.Fatal("fresh token rotated at once")
			}
			// The same token from the same client, again, later.
			e.clock.advance(time.Hour)
			_, err = e.login(t, mech, tok.Secret, exporterA, Login{Client: "phone", Count: 2})
			wantErr(t, err, nil)
		})
	}
}

func TestLoginRefused(t *testing.T) {
	e := newEnv(t, Options{})
	tok := e.issue(t, "phone", sasl.HTSHA256Expr)
	other := e.issue(t, "laptop", sasl.HTSHA256None)
	cases := []struct {
		name  string
		mech  string
		token string
		cb    []byte
		l     Login
		want  error
	}{
		{"wrong token", sasl.HTSHA256Expr, "guess", exporterA, Login{Client: "phone", Count: -1}, sasl.ErrNotAuthorized},
		// A message captured on one TLS connection replayed on another.
		{"other connection", sasl.HTSHA256Expr, "", exporterB, Login{Client: "phone", Count: -1}, sasl.ErrNotAuthorized},
		// XEP-0484: a token works only with the mechanism it was issued for.
		{"other mechanism", sasl.HTSHA256None, tok.Secret, nil, Login{Client: "phone", Count: -1}, sasl.ErrNotAuthorized},
		{"other client's token", sasl.HTSHA256None, other.Secret, nil, Login{Client: "phone", Count: -1}, sasl.ErrNotAuthorized},
		{"other client id", sasl.HTSHA256Expr, tok.Secret, exporterA, Login{Client: "laptop", Count: -1}, sasl.ErrNotAuthorized},
		{"unknown account", sasl.HTSHA256Expr, tok.Secret, exporterA, Login{Username: "mallory", Client: "phone", Count: -1}, sasl.ErrNotAuthorized},
		{"no user-agent id", sasl.HTSHA256Expr, tok.Secret, exporterA, Login{Count: -1}, ErrNoClient},
		{"long user-agent id", sasl.HTSHA256Expr, tok.Secret, exporterA, Login{Client: strings.Repeat("x", MaxClientLen+1), Count: -1}, sasl.ErrMalformed},
		{"NUL in user-agent id", sasl.HTSHA256Expr, tok.Secret, exporterA, Login{Client: "a\x00", Count: -1}, sasl.ErrMalformed},
		{"request for SCRAM", sasl.HTSHA256Expr, tok.Secret, exporterA, Login{Client: "phone", Count: -1, RequestToken: sasl.ScramSHA256}, ErrMechanism},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			token, clientCB := c.token, c.cb
			if token == "" {
				token, clientCB = tok.Secret, exporterA
			}
			_, err := e.loginOn(t, c.mech, token, clientCB, c.cb, c.l)
			wantErr(t, err, c.want)
			if (c.want == sasl.ErrNotAuthorized) != sasl.CheckedCredential(err) {
				t.Fatalf("CheckedCredential(%v) = %v", err, sasl.CheckedCredential(err))
			}
		})
	}
	// None of that used the token up.
	_, err := e.login(t, sasl.HTSHA256Expr, tok.Secret, exporterA, Login{Client: "phone", Count: 1})
	wantErr(t, err, nil)
}

func TestReplayedCount(t *testing.T) {
	e := newEnv(t, Options{})
	tok := e.issue(t, "phone", sasl.HTSHA256Expr)
	l := Login{Client: "phone", Count: 5}
	_, err := e.login(t, sasl.HTSHA256Expr, tok.Secret, exporterA, l)
	wantErr(t, err, nil)
	// The same <authenticate/> again (a replayed 0-RTT flight): refused.
	_, err = e.login(t, sasl.HTSHA256Expr, tok.Secret, exporterA, l)
	wantErr(t, err, storage.ErrReplayed)
	if !errors.Is(err, sasl.ErrNotAuthorized) {
		t.Fatalf("replay: %v does not wrap ErrNotAuthorized", err)
	}
	l.Count = 4
	_, err = e.login(t, sasl.HTSHA256Expr, tok.Secret, exporterA, l)
	wantErr(t, err, storage.ErrReplayed)
	l.Count = 6
	_, err = e.login(t, sasl.HTSHA256Expr, tok.Secret, exporterA, l)
	wantErr(t, err, nil)
}

func TestRotation(t *testing.T) {
	e := newEnv(t, Options{})
	cur := e.issue(t, "phone", sasl.HTSHA256Expr)
	e.clock.advance(DefaultRotateAfter)
	res, err := e.login(t, sasl.HTSHA256Expr, cur.Secret, exporterA, Login{Client: "phone", Count: 1})
	wantErr(t, err, nil)
	if res.Token == nil {
		t.Fatal("a token a day old was not rotated")
	}
	next := *res.Token
	if next.Secret == cur.Secret || !next.Expiry.Equal(e.clock.t.Add(DefaultTTL)) {
		t.Fatalf("rotated token %+v", next)
	}
	// The client lost <success/>: the current token still works, and
	// rotates again.
	res, err = e.login(t, sasl.HTSHA256Expr, cur.Secret, exporterA, Login{Client: "phone", Count: 2})
	wantErr(t, err, nil)
	if res.Token == nil {
		t.Fatal("no second rotation")
	}
	lost := next
	next = *res.Token
	// The first rotated token was never used: replaced by the second.
	_, err = e.login(t, sasl.HTSHA256Expr, lost.Secret, exporterA, Login{Client: "phone", Count: 0})
	wantErr(t, err, sasl.ErrNotAuthorized)
	// Using the new token retires the old one.
	res, err = e.login(t, sasl.HTSHA256Expr, next.Secret, exporterA, Login{Client: "phone", Count: 0})
	wantErr(t, err, nil)
	if res.Token != nil {
		t.Fatal("a new token rotated at once")
	}
	_, err = e.login(t, sasl.HTSHA256Expr, cur.Secret, exporterA, Login{Client: "phone", Count: 3})
	wantErr(t, err, sasl.ErrNotAuthorized)
}

func TestRequestTokenDuringTokenLogin(t *testing.T) {
	e := newEnv(t, Options{})
	cur := e.issue(t, "phone", sasl.HTSHA256None)
	res, err := e.login(t, sasl.HTSHA256None, cur.Secret, nil, Login{Client: "phone", Count: -1, RequestToken: sasl.HTSHA256Expr})
	wantErr(t, err, nil)
	if res.Token == nil {
		t.Fatal("no token for <request-token/>")
	}
	// The new token is bound to -EXPR, the one asked for.
	_, err = e.login(t, sasl.HTSHA256None, res.Token.Secret, nil, Login{Client: "phone", Count: -1})
	wantErr(t, err, sasl.ErrNotAuthorized)
	_, err = e.login(t, sasl.HTSHA256Expr, res.Token.Secret, exporterA, Login{Client: "phone", Count: -1})
	wantErr(t, err, nil)
}

func TestExpiry(t *testing.T) {
	e := newEnv(t, Options{TTL: time.Hour})
	tok := e.issue(t, "phone", sasl.HTSHA256Expr)
	e.clock.advance(time.Hour)
	_, err := e.login(t, sasl.HTSHA256Expr, tok.Secret, exporterA, Login{Client: "phone", Count: -1})
	wantErr(t, err, sasl.ErrCredentialsExpired)
	if n, err := e.tokens.Sweep(context.Background()); err != nil || n != 1 {
		t.Fatalf("Sweep = %d, %v; want 1", n, err)
	}
	_, err = e.login(t, sasl.HTSHA256Expr, tok.Secret, exporterA, Login{Client: "phone", Count: -1})
	wantErr(t, err, sasl.ErrNotAuthorized)
}

func TestInvalidate(t *testing.T) {
	e := newEnv(t, Options{})
	tok := e.issue(t, "phone", sasl.HTSHA256Expr)
	e.clock.advance(2 * DefaultRotateAfter) // due, but invalidate wins
	res, err := e.login(t, sasl.HTSHA256Expr, tok.Secret, exporterA, Login{Client: "phone", Count: 1, Invalidate: true})
	wantErr(t, err, nil)
	if res.Token != nil {
		t.Fatal("new token after invalidate without <request-token/>")
	}
	_, err = e.login(t, sasl.HTSHA256Expr, tok.Secret, exporterA, Login{Client: "phone", Count: 2})
	wantErr(t, err, sasl.ErrNotAuthorized)
}

func TestRevokedByPasswordChangeAndRemoval(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, Options{})
	tok := e.issue(t, "phone", sasl.HTSHA256Expr)
	creds, _ := sasl.NewCredentials("new password", 4096)
	if err := e.store.SetCredentials(ctx, "alice", creds); err != nil {
		t.Fatal(err)
	}
	_, err := e.login(t, sasl.HTSHA256Expr, tok.Secret, exporterA, Login{Client: "phone", Count: -1})
	wantErr(t, err, sasl.ErrNotAuthorized)

	tok = e.issue(t, "phone", sasl.HTSHA256Expr)
	if err := e.store.RemoveAccount(ctx, "alice"); err != nil {
		t.Fatal(err)
	}
	_, err = e.login(t, sasl.HTSHA256Expr, tok.Secret, exporterA, Login{Client: "phone", Count: -1})
	wantErr(t, err, sasl.ErrNotAuthorized)
}

// TestDatabaseAloneIsUseless: a server with the same database but another
// secret (what a thief of the database has) derives other tokens, and a
// token cannot be moved to another account or client by editing rows.
func TestDatabaseAloneIsUseless(t *testing.T) {
	e := newEnv(t, Options{})
	tok := e.issue(t, "phone", sasl.HTSHA256Expr)
	thief, err := New(e.store, testSecret(2), Options{Now: e.clock.now})
	if err != nil {
		t.Fatal(err)
	}
	rows, _ := e.store.FastTokens(context.Background(), "alice", "phone")
	if got := thief.derive(&rows[0]); got == tok.Secret {
		t.Fatal("another secret derives the same token")
	}
	if got := e.tokens.derive(&rows[0]); got != tok.Secret {
		t.Fatal("the server does not re-derive its own token")
	}
	for _, s := range []string{rows[0].ID, rows[0].Username, rows[0].Client} {
		if strings.Contains(tok.Secret, s) {
			t.Fatalf("token %q shows stored field %q", tok.Secret, s)
		}
	}
	moved := rows[0]
	moved.Expires = moved.Expires.Add(time.Hour)
	if e.tokens.derive(&moved) == tok.Secret {
		t.Fatal("extending the expiry in the database keeps the token")
	}
}

func TestMaxTokens(t *testing.T) {
	e := newEnv(t, Options{MaxTokens: 2})
	a := e.issue(t, "a", sasl.HTSHA256Expr)
	e.clock.advance(time.Minute)
	e.issue(t, "b", sasl.HTSHA256Expr)
	e.clock.advance(time.Minute)
	e.issue(t, "c", sasl.HTSHA256Expr)
	_, err := e.login(t, sasl.HTSHA256Expr, a.Secret, exporterA, Login{Client: "a", Count: -1})
	wantErr(t, err, sasl.ErrNotAuthorized)
}

func TestXML(t *testing.T) {
	tok := Token{Secret: "a'b<c", Expiry: time.Date(2020, 3, 12, 14, 36, 15, 0, time.FixedZone("x", 3600))}
	if got, want := string(tok.AppendXML(nil)), `<token xmlns='urn:xmpp:fast:0' expiry='2020-03-12T13:36:15Z' token='a&apos;b&lt;c'/>`; got != want {
		t.Errorf("token:\n%s\nwant\n%s", got, want)
	}
	got := string(AppendFeature(nil, sasl.HTMechanisms()))
	want := `<fast xmlns='urn:xmpp:fast:0'><mechanism>HT-SHA-256-EXPR</mechanism><mechanism>HT-SHA-256-ENDP</mechanism><mechanism>HT-SHA-256-NONE</mechanism></fast>`
	if got != want {
		t.Errorf("feature:\n%s\nwant\n%s", got, want)
	}
	for in, want := range map[string]int64{"0": 0, "123": 123, "9223372036854775807": 1<<63 - 1} {
		if n, err := ParseCount(in); err != nil || n != want {
			t.Errorf("ParseCount(%q) = %d, %v", in, n, err)
		}
	}
	for _, in := range []string{"", "-1", "+1", "1.5", "x", "9223372036854775808"} {
		if _, err := ParseCount(in); !errors.Is(err, sasl.ErrMalformed) {
			t.Errorf("ParseCount(%q) = %v, want ErrMalformed", in, err)
		}
	}
}

func TestLoadSecret(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "sub", SecretFileName)
	s1, err := LoadSecret(path)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 || len(s1) != SecretLen {
		t.Fatalf("created %v, %v, %d bytes", fi.Mode(), err, len(s1))
	}
	s2, err := LoadSecret(path)
	if err != nil || !bytes.Equal(s1, s2) {
		t.Fatalf("second load: %v, same=%v", err, bytes.Equal(s1, s2))
	}
	if err := os.Chmod(path, 0o640); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadSecret(path); !errors.Is(err, ErrSecret) {
		t.Fatalf("group-readable secret: %v, want ErrSecret", err)
	}
	short := filepath.Join(dir, "short")
	if err := os.WriteFile(short, []byte("abcd\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadSecret(short); !errors.Is(err, ErrSecret) {
		t.Fatalf("short secret: %v, want ErrSecret", err)
	}
	if _, err := New(nil, []byte("short"), Options{}); !errors.Is(err, ErrSecret) {
		t.Fatalf("New with a short secret: %v", err)
	}
}

// TestUseWrittenOnlyWhenNeeded: a login with a token used before and no
// count writes nothing (the write, a synced commit, is most of a token
// login's cost); the first use and invalidate are written, a count at the
// next flush.
func TestUseWrittenOnlyWhenNeeded(t *testing.T) {
	e := newEnv(t, Options{})
	ctx := context.Background()
	tok, err := e.tokens.Issue(ctx, "alice", "phone", sasl.HTSHA256Expr)
	if err != nil {
		t.Fatal(err)
	}
	used := func() (time.Time, int64) {
		t.Helper()
		rows, err := e.store.FastTokens(ctx, "alice", "phone")
		if err != nil || len(rows) != 1 {
			t.Fatalf("rows %+v, %v", rows, err)
		}
		return rows[0].Used, rows[0].LastCount
	}
	login := func(count int64) {
		t.Helper()
		if _, err := e.login(t, sasl.HTSHA256Expr, tok.Secret, exporterA, Login{Username: "alice", Client: "phone", Count: count}); err != nil {
			t.Fatal(err)
		}
	}
	login(-1) // first use: written
	first, _ := used()
	if first.IsZero() {
		t.Fatal("first use not recorded")
	}
	e.clock.advance(time.Minute)
	login(-1) // used before, no count: nothing written
	if u, _ := used(); !u.Equal(first) {
		t.Fatalf("a count-less login wrote the use: %v, first %v", u, first)
	}
	login(7) // a count: checked from now on, written behind (counts.go)
	if _, c := used(); c != -1 {
		t.Fatalf("count 7 written before the flush: %d", c)
	}
	e.tokens.counts.flush(ctx)
	if u, c := used(); c != 7 || !u.After(first) {
		t.Fatalf("after count 7: used %v, last count %d", u, c)
	}
	if _, err := e.login(t, sasl.HTSHA256Expr, tok.Secret, exporterA, Login{Username: "alice", Client: "phone", Count: 7}); !errors.Is(err, sasl.ErrNotAuthorized) {
		t.Fatalf("replayed count 7: %v", err)
	}
}
