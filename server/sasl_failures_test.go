package server_test

import (
	"context"
	"crypto/tls"
	"encoding/base64"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	msasl "mellium.im/sasl"
)

const (
	saslFailure   = `<failure xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>`
	notAuthorized = saslFailure + `<not-authorized/></failure>`
	malformed     = saslFailure + `<malformed-request/></failure>`
)

// scramExchange runs SCRAM-SHA-256 with mellium's client (gs2 flag 'n') on
// an open stream and returns the server's last element, <success/> or
// <failure/>.
func (r *rawConn) scramExchange(user, password string) string {
	r.t.Helper()
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
	// The caller checks the whole element.
	out := r.skipUntil("</")
	return out + r.skipUntil(">")
}

// scramWrong runs one SCRAM exchange with a wrong password: a failure that
// checked a credential.
func (r *rawConn) scramWrong(user string) {
	r.t.Helper()
	if got := r.scramExchange(user, "wrong "+testPassword); got != notAuthorized {
		r.t.Fatalf("wrong password got %q, want %q", got, notAuthorized)
	}
}

// slixmppHeader is the stream header slixmpp 1.8.3 sends, byte for byte.
const slixmppHeader = `<stream:stream to='localhost' xmlns:stream='http://etherx.jabber.org/streams' xmlns='jabber:client' xml:lang='en' version='1.0'>`

// slixmppPlusAuths are the first three <auth/> elements slixmpp 1.8.3
// (Debian 12) sends with its defaults over TLS 1.3, captured from its debug
// log against this server: SCRAM-SHA-512-PLUS, -256-PLUS and -1-PLUS, each
// binding tls-unique ("p=tls-unique,,n=alice,r=..."), which TLS 1.3 does not
// define. Its nonces are decimal digits.
var slixmppPlusAuths = []string{
	`<auth xmlns="urn:ietf:params:xml:ns:xmpp-sasl" mechanism="SCRAM-SHA-512-PLUS">cD10bHMtdW5pcXVlLCxuPWFsaWNlLHI9Mjk5MTg4OTYxNDQ1ODMyNzQ=</auth>`,
	`<auth xmlns="urn:ietf:params:xml:ns:xmpp-sasl" mechanism="SCRAM-SHA-256-PLUS">cD10bHMtdW5pcXVlLCxuPWFsaWNlLHI9MjcyNDUyODQ2OTQ3ODc0ODY=</auth>`,
	`<auth xmlns="urn:ietf:params:xml:ns:xmpp-sasl" mechanism="SCRAM-SHA-1-PLUS">cD10bHMtdW5pcXVlLCxuPWFsaWNlLHI9ODU5NzEwMDE2NzkyODk3OQ==</auth>`,
}

// slixmppScramAuths follow: plain SCRAM with the gs2 flag 'y' ("y,,n=alice,
// r=..."), a downgrade on a stream that offered -PLUS (RFC 5802 section 6),
// refused with not-authorized.
var slixmppScramAuths = []string{
	`<auth xmlns="urn:ietf:params:xml:ns:xmpp-sasl" mechanism="SCRAM-SHA-512">eSwsbj1hbGljZSxyPTA0ODU0MzQyMDM4NDI1MDM=</auth>`,
	`<auth xmlns="urn:ietf:params:xml:ns:xmpp-sasl" mechanism="SCRAM-SHA-256">eSwsbj1hbGljZSxyPTcxMzgzNTkzNTM2NzgzMTI=</auth>`,
	`<auth xmlns="urn:ietf:params:xml:ns:xmpp-sasl" mechanism="SCRAM-SHA-1">eSwsbj1hbGljZSxyPTAyMTk5NDExNTY5MjUyMTg1NA==</auth>`,
}

// slixmppPlain is slixmpp's last try, PLAIN for alice with testPassword.
const slixmppPlain = `<auth xmlns="urn:ietf:params:xml:ns:xmpp-sasl" mechanism="PLAIN">AGFsaWNlAGNvcnJlY3QgaG9yc2UgYmF0dGVyeSBzdGFwbGU=</auth>`

// TestSlixmppMechanismFallthrough replays slixmpp 1.8.3's default login
// over STARTTLS and TLS 1.3: three -PLUS attempts binding tls-unique get
// malformed-request, three SCRAM attempts with flag 'y' get not-authorized,
// all without closing the stream (they checked no credential), and then
// PLAIN, or a SCRAM exchange with flag 'n', succeeds and binds.
func TestSlixmppMechanismFallthrough(t *testing.T) {
	cfg := tlsConfig(t)
	srv := startServer(t, cfg, "alice")
	bind := func(t *testing.T, r *rawConn) {
		r.send(slixmppHeader)
		r.skipUntil("</stream:features>")
		r.send(`<iq id="322500eb0ece4ffa91021ddb1134f721" type="set"><bind xmlns="urn:ietf:params:xml:ns:xmpp-bind" /></iq>`)
		got := r.expect(t, `<iq type='result' id='322500eb0ece4ffa91021ddb1134f721'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><jid>{*}</jid></bind></iq>`)
		if jid := between(got, "<jid>", "</jid>"); !strings.HasPrefix(jid, "alice@localhost/") {
			t.Fatalf("bound %q", jid)
		}
	}
	cases := []struct {
		name  string
		auths []string // each answered by want[i], the stream staying open
		want  []string
		last  func(t *testing.T, r *rawConn) string
	}{
		{
			name:  "slixmpp defaults end in PLAIN",
			auths: append(append([]string{}, slixmppPlusAuths...), slixmppScramAuths...),
			want:  []string{malformed, malformed, malformed, notAuthorized, notAuthorized, notAuthorized},
			last: func(t *testing.T, r *rawConn) string {
				r.send(slixmppPlain)
				return r.expect(t, `<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>`)
			},
		},
		{
			name:  "SCRAM after the -PLUS attempts",
			auths: slixmppPlusAuths,
			want:  []string{malformed, malformed, malformed},
			last:  func(t *testing.T, r *rawConn) string { return r.scramExchange("alice", testPassword) },
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := srv.Stats()
			c := clientTLS(t, cfg)
			c.MinVersion = tls.VersionTLS13 // tls-unique is undefined
			r := tlsRaw(t, srv, c)
			r.send(slixmppHeader)
			r.skipUntil("</stream:features>")
			for i, auth := range tc.auths {
				r.exchange(t, auth, tc.want[i])
			}
			if got := tc.last(t, r); !strings.HasPrefix(got, "<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'") {
				t.Fatalf("last attempt got %q, want success", got)
			}
			bind(t, r)
			after := srv.Stats()
			if got := after.AuthFailedExchange - before.AuthFailedExchange; got != uint64(len(tc.auths)) {
				t.Errorf("exchange failures counted %d, want %d", got, len(tc.auths))
			}
			if after.AuthFailedCredential != before.AuthFailedCredential {
				t.Errorf("credential failures counted %d, want 0", after.AuthFailedCredential-before.AuthFailedCredential)
			}
		})
	}
	_, body := get(t, "http://"+srv.AdminAddr().String()+"/metrics")
	for _, want := range []string{
		`krill_auth_failures_total{kind="credential"} 0`,
		`krill_auth_failures_total{kind="exchange"} 9`,
		`krill_logins_total{result="failure"} 9`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}

// TestSASLFailureKinds: failures that checked a credential close the stream
// at preauth.max_failed_auth and feed the per-address throttle; exchanges
// that failed before any credential was checked close it only at
// preauth.max_failed_exchanges and do not feed the throttle.
func TestSASLFailureKinds(t *testing.T) {
	malformedAuth := `<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='SCRAM-SHA-256'>eCxuPWZvbw==</auth>`
	exchangeFailures := []struct{ send, want string }{
		{malformedAuth, malformed},
		{`<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='X-UNKNOWN'>AA==</auth>`, saslFailure + `<invalid-mechanism/></failure>`},
		// slixmpp's tls-unique header with a mechanism without -PLUS.
		{`<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='SCRAM-SHA-256'>` + base64.StdEncoding.EncodeToString([]byte("p=tls-unique,,n=kate,r=1234")) + `</auth>`, malformed},
		{`<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='SCRAM-SHA-256'/>`, `<challenge xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>`},
		{`<abort xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>`, saslFailure + `<aborted/></failure>`},
	}
	cases := []struct {
		name       string
		credential int // wrong passwords first
		exchange   int // then exchange failures, cycling through exchangeFailures
		wantClosed string
	}{
		{name: "credential failures close at max_failed_auth", credential: 3, wantClosed: "too many failed authentication attempts"},
		{name: "exchange failures close at max_failed_exchanges", exchange: 10, wantClosed: "too many failed SASL exchanges"},
		{name: "below both limits the login still works", credential: 2, exchange: 9},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig(t)
			srv := startServer(t, cfg, "kate")
			r := dialRaw(t, srv)
			r.open()
			for range tc.credential {
				r.scramWrong("kate")
			}
			if tc.wantClosed != "" && tc.credential > 0 {
				if out := r.closed(); !strings.Contains(out, tc.wantClosed) {
					t.Fatalf("got %q, want the stream closed with %q", out, tc.wantClosed)
				}
				return
			}
			sent := 0
			for i := 0; sent < tc.exchange; i++ {
				f := exchangeFailures[i%len(exchangeFailures)]
				r.send(f.send)
				if strings.Contains(f.want, "challenge") {
					r.expect(t, f.want) // not a failure: abort follows
					continue
				}
				sent++
				if sent == tc.exchange && tc.wantClosed != "" {
					out := r.closed()
					if !strings.HasPrefix(out, f.want) || !strings.Contains(out, "<policy-violation "+streamsNS+"/>") || !strings.Contains(out, tc.wantClosed) {
						t.Fatalf("failure %d got %q, want %q then policy-violation %q", sent, out, f.want, tc.wantClosed)
					}
					return
				}
				r.expect(t, f.want)
			}
			if got := r.scramExchange("kate", testPassword); !strings.HasPrefix(got, "<success") {
				t.Fatalf("login after %d+%d failures got %q", tc.credential, tc.exchange, got)
			}
			st := srv.Stats()
			if st.AuthFailedCredential != uint64(tc.credential) || st.AuthFailedExchange != uint64(tc.exchange) ||
				st.AuthFailed != uint64(tc.credential+tc.exchange) {
				t.Errorf("stats: credential %d exchange %d total %d, want %d %d %d", st.AuthFailedCredential,
					st.AuthFailedExchange, st.AuthFailed, tc.credential, tc.exchange, tc.credential+tc.exchange)
			}
		})
	}

	t.Run("exchange failures do not feed the per-address throttle", func(t *testing.T) {
		cfg := testConfig(t)
		cfg.Preauth.MaxFailuresPerIP = 1
		srv := startServer(t, cfg, "kate")
		r := dialRaw(t, srv)
		r.open()
		for range 5 {
			r.exchange(t, malformedAuth, malformed)
		}
		if got := r.scramExchange("kate", testPassword); !strings.HasPrefix(got, "<success") {
			t.Fatalf("login after exchange failures got %q", got)
		}
		// One wrong password does feed it.
		w := dialRaw(t, srv)
		w.open()
		w.scramWrong("kate")
		w.exchange(t, malformedAuth, saslFailed("<temporary-auth-failure/>"))
	})
}

// TestSlixmppDefaults logs in with the real slixmpp (Debian 12's
// python3-slixmpp 1.8.3) and its default mechanism choice over STARTTLS,
// and checks that it ends in a bound session. It is skipped when python3
// or slixmpp is missing, except under CI=true, where that fails.
func TestSlixmppDefaults(t *testing.T) {
	python := "/usr/bin/python3"
	missing := func(why string) {
		if os.Getenv("CI") == "true" {
			t.Fatalf("slixmpp interop cannot run under CI: %s (install python3-slixmpp)", why)
		}
		t.Skipf("skipping slixmpp interop: %s (apt-get install python3-slixmpp)", why)
	}
	if _, err := os.Stat(python); err != nil {
		missing(python + " not found")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if out, err := exec.CommandContext(ctx, python, "-c", "import slixmpp; print(slixmpp.__version__)").CombinedOutput(); err != nil {
		missing("python3 cannot import slixmpp: " + strings.TrimSpace(string(out)))
	}
	cfg := tlsConfig(t)
	srv := startServer(t, cfg, "alice")
	host, port, _ := strings.Cut(srv.Addr().String(), ":")
	script, err := filepath.Abs("testdata/slixmpp_login.py")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(ctx, python, script, "alice@localhost", testPassword, host, port)
	out, err := cmd.CombinedOutput()
	t.Logf("slixmpp:\n%s", out)
	if err != nil {
		t.Fatalf("slixmpp login failed: %v", err)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	want := []string{"FAILED malformed-request", "FAILED malformed-request", "FAILED malformed-request",
		"FAILED not-authorized", "FAILED not-authorized", "FAILED not-authorized"}
	if len(lines) != len(want)+2 || !strings.HasPrefix(lines[0], "SLIXMPP ") ||
		strings.Join(lines[1:len(lines)-1], "\n") != strings.Join(want, "\n") ||
		!strings.HasPrefix(lines[len(lines)-1], "BOUND alice@localhost/") {
		t.Fatalf("slixmpp output %q, want its version, %q and a bound JID", lines, want)
	}
	st := srv.Stats()
	if st.AuthSucceeded != 1 || st.AuthFailedExchange != 6 || st.AuthFailedCredential != 0 {
		t.Errorf("stats: %d logins, %d exchange and %d credential failures; want 1, 6, 0",
			st.AuthSucceeded, st.AuthFailedExchange, st.AuthFailedCredential)
	}
}
