package server_test

import (
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	msasl "mellium.im/sasl"
	"mellium.im/xmpp/jid"
	"mellium.im/xmpp/stanza"

	"github.com/krill-xmpp/krill/server"
)

// TestPreauthDeadline: the deadline is absolute from accept. Whatever the
// client sends (whitespace, partial stanzas, SASL attempts), the connection
// gets connection-timeout, never before the deadline.
func TestPreauthDeadline(t *testing.T) {
	cfg := testConfig(t)
	cfg.Preauth.Timeout = 600 * time.Millisecond
	srv := startServer(t, cfg)
	cases := []struct {
		name    string
		trickle []string
	}{
		{"silent", nil},
		{"whitespace", []string{" ", "\n", "\t"}},
		{"partial stanza", []string{"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' ", "mechanism='SCRAM", "-SHA-256'>", "AAAA"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			r := dialRaw(t, srv)
			r.open()
			stop := make(chan struct{})
			done := make(chan struct{})
			go func() {
				defer close(done)
				for i := 0; i < 200 && len(tc.trickle) > 0; i++ {
					select {
					case <-stop:
						return
					case <-time.After(50 * time.Millisecond):
					}
					if _, err := r.conn.Write([]byte(tc.trickle[i%len(tc.trickle)])); err != nil {
						return
					}
				}
			}()
			out := r.closed()
			elapsed := time.Since(start)
			close(stop)
			<-done
			if !strings.Contains(out, "<connection-timeout "+streamsNS+"/>") {
				t.Fatalf("got %q, want connection-timeout", out)
			}
			if elapsed < cfg.Preauth.Timeout {
				t.Fatalf("closed after %v, before the %v deadline", elapsed, cfg.Preauth.Timeout)
			}
			t.Logf("closed %v after the deadline", elapsed-cfg.Preauth.Timeout)
		})
	}
}

// TestPreauthCaps: per-IP and total caps refuse with policy-violation and
// resource-constraint; authenticating frees the slot.
func TestPreauthCaps(t *testing.T) {
	cfg := testConfig(t)
	cfg.Preauth.MaxPerIP = 2
	cfg.Preauth.MaxTotal = 3
	srv := startServer(t, cfg, "kim")

	a := dialRaw(t, srv)
	a.open()
	b := dialRaw(t, srv)
	b.open()
	over := dialRaw(t, srv)
	if out := over.closed(); !strings.Contains(out, "<policy-violation "+streamsNS+"/>") {
		t.Fatalf("third connection from one address got %q, want policy-violation", out)
	}
	other := dialFrom(t, srv, "127.0.0.2")
	other.open()
	total := dialFrom(t, srv, "127.0.0.3")
	if out := total.closed(); !strings.Contains(out, "<resource-constraint "+streamsNS+"/>") {
		t.Fatalf("fourth connection got %q, want resource-constraint", out)
	}
	// Logging in leaves the pre-auth pool: a slot opens for 127.0.0.1.
	_ = a.conn.Close()
	if !waitFor(ioTimeout, func() bool { return srv.Stats().Preauth == 2 }) {
		t.Fatalf("%d pre-auth connections after one logged in, want 2", srv.Stats().Preauth)
	}
	c := dialRaw(t, srv)
	c.scramLogin("kim", testPassword, "k")
	d := dialRaw(t, srv)
	d.open()
}

func dialFrom(t *testing.T, srv interface{ Addr() net.Addr }, ip string) *rawConn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: ioTimeout}
	conn, err := d.Dial("tcp", srv.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return &rawConn{t: t, conn: conn}
}

// TestSeedScenario is the attack Krill exists for: 500 clients open streams,
// fail SASL and keep sending pings every 100 ms and whitespace every 50 ms.
// Every one is closed by the deadline (pings before authentication close at
// once with not-authorized), no pong is ever sent before authentication, a
// legitimate client logs in and exchanges messages meanwhile, and the
// goroutine count returns to its baseline.
func TestSeedScenario(t *testing.T) {
	if testing.Short() {
		t.Skip("500 connections")
	}
	cfg := testConfig(t)
	cfg.Preauth.Timeout = 2 * time.Second
	srv := startServer(t, cfg, "alice", "bob")
	baseline := settledGoroutines(t) // the ticker and loops started

	const hostile = 500
	type result struct {
		out     string
		elapsed time.Duration
		err     string
	}
	results := make([]result, hostile)
	var wg sync.WaitGroup
	for i := range hostile {
		wg.Go(func() {
			results[i] = attack(srv.Addr().String(), i%2 == 0, cfg.Preauth.Timeout)
		})
	}

	// Meanwhile, a legitimate client logs in and talks.
	alice := login(t, srv, "alice", "a", msasl.ScramSha256)
	bob := dialRaw(t, srv)
	bob.scramLogin("bob", testPassword, "b")
	ctx, cancel := contextTimeout()
	defer cancel()
	for i := range 5 {
		msg := stanza.Message{To: jid.MustParse("bob@localhost/b"), Type: stanza.ChatMessage}
		if err := alice.Send(ctx, msg.Wrap(bodyTokens("during the attack"))); err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		bob.expect(t, `<message xmlns='jabber:client' type='chat' to='bob@localhost/b' id='{*}' from='`+alice.LocalAddr().String()+`'><body>during the attack</body></message>`)
	}

	wg.Wait()
	var pinging, idle int
	for i, r := range results {
		if r.err != "" {
			t.Fatalf("client %d: %s", i, r.err)
		}
		if strings.Contains(r.out, "type='result'") || strings.Contains(r.out, "urn:xmpp:ping") {
			t.Fatalf("client %d got an answer to its ping before authenticating: %q", i, r.out)
		}
		switch {
		case strings.Contains(r.out, "<not-authorized "+streamsNS+"/>"):
			pinging++
		case strings.Contains(r.out, "<connection-timeout "+streamsNS+"/>"):
			idle++
			if r.elapsed < cfg.Preauth.Timeout {
				t.Fatalf("client %d closed after %v, before the deadline", i, r.elapsed)
			}
		default:
			t.Fatalf("client %d closed with %q", i, r.out)
		}
	}
	if pinging != hostile/2 || idle != hostile/2 {
		t.Fatalf("%d closed for pinging and %d at the deadline, want %d each", pinging, idle, hostile/2)
	}
	_ = alice.Close()
	_ = bob.conn.Close()
	if !waitFor(ioTimeout, func() bool { return runtime.NumGoroutine() <= baseline }) {
		t.Fatalf("goroutines: %d, baseline %d", runtime.NumGoroutine(), baseline)
	}
	st := srv.Stats()
	t.Logf("stats: %+v", st)
	// The wheel fires a deadline at the first tick at or after it; loop
	// scheduling adds a little. Five ticks of slack tolerate a loaded
	// machine and still catch a coarse wheel (a non-cascading one would be
	// up to 64 ticks late at 2 s).
	t.Logf("latest pre-auth deadline fired %v after it was due (tick %v)", st.DeadlineLateMax, cfg.Server.Tick)
	if st.DeadlineLateMax > 5*cfg.Server.Tick {
		t.Fatalf("a pre-auth deadline fired %v late, tick %v", st.DeadlineLateMax, cfg.Server.Tick)
	}
	if st.Preauth != 0 {
		t.Fatalf("%d connections still counted as pre-auth", st.Preauth)
	}
}

// attack is one hostile client: it fails SASL, then sends whitespace every
// 50 ms and, if ping, a ping every 100 ms, until the server closes it.
func attack(addr string, ping bool, deadline time.Duration) (res struct {
	out     string
	elapsed time.Duration
	err     string
}) {
	start := time.Now()
	conn, err := net.DialTimeout("tcp", addr, ioTimeout)
	if err != nil {
		res.err = err.Error()
		return res
	}
	defer conn.Close()
	var out strings.Builder
	read := make(chan struct{})
	go func() {
		defer close(read)
		var buf [4096]byte
		_ = conn.SetReadDeadline(start.Add(deadline + ioTimeout))
		for {
			n, err := conn.Read(buf[:])
			out.Write(buf[:n])
			if err != nil {
				return
			}
		}
	}()
	first := base64.StdEncoding.EncodeToString([]byte("n,,n=mallory,r=abcdefghijklmnop"))
	_, _ = conn.Write([]byte(clientHeader + `<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='SCRAM-SHA-256'>` + first + `</auth>`))
	time.Sleep(100 * time.Millisecond)
	_, _ = conn.Write([]byte(`<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>` + base64.StdEncoding.EncodeToString([]byte("c=biws,r=wrong,p=AAAA")) + `</response>`))
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for i := 0; i < 400; i++ {
		select {
		case <-read:
			res.out, res.elapsed = out.String(), time.Since(start)
			return res
		case <-tick.C:
		}
		_, _ = conn.Write([]byte(" "))
		if ping && i%2 == 1 {
			_, _ = conn.Write([]byte(`<iq type='get' id='p` + string(rune('a'+i%26)) + `'><ping xmlns='urn:xmpp:ping'/></iq>`))
		}
	}
	res.err = "never closed; got " + out.String()
	return res
}

// TestFailureThrottle: after preauth.max_failures_per_ip failed logins from
// one address, its logins are refused at once, even with the right
// password; other addresses are not affected.
func TestFailureThrottle(t *testing.T) {
	cfg := testConfig(t)
	cfg.Preauth.MaxFailuresPerIP = 2
	cfg.Preauth.MaxFailedAuth = 10
	srv := startServer(t, cfg, "nina")
	bad := base64.StdEncoding.EncodeToString([]byte("n,,n=nina,r=abcdefghijklmnopqrstuvwx"))
	r := dialRaw(t, srv)
	r.open()
	// Only failures that checked a credential count per address.
	for range 2 {
		r.scramWrong("nina")
	}
	r.send(`<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='SCRAM-SHA-256'>` + bad + `</auth>`)
	r.expect(t, saslFailed("<temporary-auth-failure/>"))
	if srv.Stats().AuthThrottled != 1 {
		t.Fatalf("stats: %+v", srv.Stats())
	}
	other := dialFrom(t, srv, "127.0.0.2")
	if got := other.scramLogin("nina", testPassword, "n"); got != "nina@localhost/n" {
		t.Fatalf("login from another address bound %q", got)
	}
}

// The seed scenario again with hostile clients that speak SASL2
// (XEP-0388) over STARTTLS, as modern clients and bots do: the pre-auth
// policy must hold exactly as it does for RFC 6120 SASL.

// seedClient is one hostile SASL2 client: a TLS stream from its own
// loopback address, what it received after the stream features over TLS,
// and when it dialled.
type seedClient struct {
	conn  net.Conn
	start time.Time
	buf   strings.Builder
}

// dialSeed dials from ip, runs STARTTLS and opens the stream over TLS.
func dialSeed(addr, ip string, tc *tls.Config) (*seedClient, error) {
	h := &seedClient{start: time.Now()}
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: ioTimeout}
	conn, err := d.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	h.conn = conn
	if err := h.send(clientHeader); err != nil {
		return h, err
	}
	if err := h.await("</stream:features>", 1); err != nil {
		return h, err
	}
	if err := h.send(`<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>`); err != nil {
		return h, err
	}
	if err := h.await("<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>", 1); err != nil {
		return h, err
	}
	t := tls.Client(conn, tc)
	_ = t.SetDeadline(time.Now().Add(ioTimeout))
	if err := t.Handshake(); err != nil {
		return h, err
	}
	h.conn = t
	h.buf.Reset()
	if err := h.send(clientHeader); err != nil {
		return h, err
	}
	if err := h.await("</stream:features>", 1); err != nil {
		return h, err
	}
	if !strings.Contains(h.buf.String(), "<authentication xmlns='urn:xmpp:sasl:2'>") {
		return h, fmt.Errorf("no SASL2 in %q", h.buf.String())
	}
	h.buf.Reset()
	return h, nil
}

func (h *seedClient) send(s string) error {
	_ = h.conn.SetWriteDeadline(time.Now().Add(ioTimeout))
	_, err := h.conn.Write([]byte(s))
	return err
}

// await reads until want has arrived n times in all.
func (h *seedClient) await(want string, n int) error {
	var chunk [4096]byte
	for strings.Count(h.buf.String(), want) < n {
		_ = h.conn.SetReadDeadline(time.Now().Add(ioTimeout))
		k, err := h.conn.Read(chunk[:])
		h.buf.Write(chunk[:k])
		if err != nil {
			return fmt.Errorf("waiting for %q: %w; received %q", want, err, h.buf.String())
		}
	}
	return nil
}

// linger sends trickle[i] (the last one once they run out) every 50 ms
// until the server closes the connection, and returns how long after the
// dial that was. It stops after 400 writes (20 s).
func (h *seedClient) linger(trickle []string) (time.Duration, error) {
	read := make(chan struct{})
	go func() {
		defer close(read)
		var chunk [4096]byte
		_ = h.conn.SetReadDeadline(time.Now().Add(2 * ioTimeout))
		for {
			n, err := h.conn.Read(chunk[:])
			h.buf.Write(chunk[:n])
			if err != nil {
				return
			}
		}
	}()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for i := 0; i < 400; i++ {
		select {
		case <-read:
			return time.Since(h.start), nil
		case <-tick.C:
		}
		if len(trickle) > 0 {
			_ = h.send(trickle[min(i, len(trickle)-1)])
		}
	}
	_ = h.conn.Close()
	<-read
	return 0, errors.New("never closed")
}

// matches reports whether got is exactly want, with expect's wildcards.
func matches(want, got string) bool {
	parts := wildcard.Split(want, -1)
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
	re.WriteString(regexp.QuoteMeta(parts[len(parts)-1]) + `$`)
	return regexp.MustCompile(re.String()).MatchString(got)
}

// tcpStreamError is the stream error, then the stream close, the server ends a TCP stream with.
func tcpStreamError(cond, text string) string {
	return `<stream:error><` + cond + ` ` + streamsNS + `/><text ` + streamsNS + `>` + text + `</text></stream:error></stream:stream>`
}

// TestSeedScenarioSASL2 is TestSeedScenario with SASL2: 500 clients from
// 500 addresses complete STARTTLS and then, by class, stall in a SASL2
// exchange, fail once (wrong password, wrong SCRAM proof) and ping or idle,
// fail until the failed-attempt limits close them (wrong passwords,
// malformed <authenticate/>s, wrong FAST tokens), send an element over the
// size or element-count caps, or a stanza in the middle of an exchange.
// Each gets exactly its answers and its stream error, those closed by the
// deadline not before it, none a pong; a legitimate client logs in with
// RFC 6120 SASL and another with SASL2 meanwhile and they exchange
// messages; the failure and close counters are exact, and the goroutine
// count returns to its baseline. Then the per-address throttle: an address
// that failed preauth.max_failures_per_ip times gets temporary-auth-failure
// over SASL2, even with the right password.
func TestSeedScenarioSASL2(t *testing.T) {
	if testing.Short() {
		t.Skip("500 TLS connections")
	}
	cfg := fastConfig(t)
	cfg.Server.EventLoops = 2
	cfg.Preauth.Timeout = 3 * time.Second
	cfg.Preauth.MaxPerIP = 2
	cfg.Preauth.MaxFailuresPerIP = 3 // = max_failed_auth: only the throttle phase reaches it
	srv, _, _ := startFAST(t, cfg, "alice", "bob")
	tc := clientTLS(t, cfg)
	baseline := settledGoroutines(t)

	maxAuth, maxEx := cfg.Preauth.MaxFailedAuth, cfg.Preauth.MaxFailedExchanges
	plainWrong := sasl2Open + `PLAIN'><initial-response>` + b64([]byte("\x00alice\x00wrong")) + `</initial-response></authenticate>`
	wrongPassword := sasl2Failure("not-authorized", "wrong username or password")
	scramFirst := sasl2Open + `SCRAM-SHA-256'><initial-response>` + b64([]byte("n,,n=alice,r=abcdefghijklmnop")) + `</initial-response></authenticate>`
	challenge := `<challenge xmlns='urn:xmpp:sasl:2'>{*}</challenge>`
	// A token login with a made-up HMAC: no token of alice's matches.
	fastWrong := sasl2Open + `HT-SHA-256-NONE'><initial-response>` + b64(append([]byte("alice\x00"), htMAC("guess", "Initiator", nil)...)) +
		`</initial-response><user-agent id='` + uaA + `'/><fast xmlns='urn:xmpp:fast:0'/></authenticate>`
	malformed := []struct{ send, want string }{
		{sasl2Open + `PLAIN'><initial-response>!!!</initial-response></authenticate>`, sasl2Failure("incorrect-encoding", "invalid base64")},
		{`<authenticate xmlns='urn:xmpp:sasl:2'><initial-response>AA==</initial-response></authenticate>`, sasl2Failure("invalid-mechanism", "the mechanism attribute is missing")},
		{sasl2Open + `PLAIN'><initial-response>AA==</initial-response><user-agent id='phone'/></authenticate>`, sasl2Failure("malformed-request", "the user-agent id must be a UUID")},
		{sasl2Open + `X-UNKNOWN'/>`, sasl2Failure("invalid-mechanism", "that mechanism is not offered")},
		{`<response xmlns='urn:xmpp:sasl:2'>AA==</response>`, sasl2Failure("malformed-request", "no exchange in progress")},
	}
	// repeat sends the i-th of sends n times, each after the previous
	// answer, and returns the answers expected, the last one unawaited.
	repeat := func(h *seedClient, n int, sends func(i int) (string, string)) (string, error) {
		var want strings.Builder
		for i := range n {
			send, answer := sends(i)
			if err := h.send(send); err != nil {
				return "", err
			}
			want.WriteString(answer)
			if i < n-1 {
				if err := h.await("</failure>", i+1); err != nil {
					return "", err
				}
			}
		}
		return want.String(), nil
	}
	timeout := tcpStreamError("connection-timeout", "authentication took too long")
	ping := `<iq type='get' id='p1'><ping xmlns='urn:xmpp:ping'/></iq>`
	classes := []struct {
		name string
		n    int
		// script runs first and returns what the server answers to it
		// (expect's wildcards allowed); linger then sends trickle.
		script               func(h *seedClient) (string, error)
		trickle              []string
		closeWith            string // the stream error that ends the stream
		deadline             bool   // closed by preauth.timeout: not before it
		scanned              bool   // closed by a size cap while scanning: counted as bad input
		credential, exchange int    // failures counted per client
	}{
		{name: "stalled in an exchange", n: 100, deadline: true, closeWith: timeout,
			script: func(h *seedClient) (string, error) {
				return challenge, firstErr(h.send(scramFirst), h.await("</challenge>", 1))
			},
			trickle: []string{" ", `<response xmlns='urn:xmpp:sasl:2'>`, "AAAA"}},
		{name: "wrong password, then pings", n: 100, credential: 1, closeWith: tcpStreamError("not-authorized", "authenticate first"),
			script: func(h *seedClient) (string, error) {
				return wrongPassword, firstErr(h.send(plainWrong), h.await("</failure>", 1))
			},
			trickle: []string{" ", ping}},
		{name: "wrong SCRAM proof, then whitespace", n: 50, credential: 1, deadline: true, closeWith: timeout,
			script: func(h *seedClient) (string, error) {
				c := msasl.NewClient(msasl.ScramSha256, msasl.Credentials(func() ([]byte, []byte, []byte) {
					return []byte("alice"), []byte("wrong"), nil
				}))
				_, first, err := c.Step(nil)
				if err != nil {
					return "", err
				}
				if err := firstErr(h.send(sasl2Open+`SCRAM-SHA-256'><initial-response>`+b64(first)+`</initial-response></authenticate>`), h.await("</challenge>", 1)); err != nil {
					return "", err
				}
				raw, _ := base64.StdEncoding.DecodeString(between(h.buf.String(), "'>", "</challenge>"))
				_, final, err := c.Step(raw)
				if err != nil {
					return "", err
				}
				return challenge + wrongPassword, firstErr(h.send(`<response xmlns='urn:xmpp:sasl:2'>`+b64(final)+`</response>`), h.await("</failure>", 1))
			},
			trickle: []string{" ", "\n"}},
		{name: "wrong passwords until closed", n: 50, credential: maxAuth,
			closeWith: tcpStreamError("policy-violation", "too many failed authentication attempts"),
			script: func(h *seedClient) (string, error) {
				return repeat(h, maxAuth, func(int) (string, string) { return plainWrong, wrongPassword })
			}},
		{name: "malformed authenticate until closed", n: 50, exchange: maxEx,
			closeWith: tcpStreamError("policy-violation", "too many failed SASL exchanges"),
			script: func(h *seedClient) (string, error) {
				return repeat(h, maxEx, func(i int) (string, string) {
					m := malformed[i%len(malformed)]
					return m.send, m.want
				})
			}},
		{name: "wrong FAST tokens until closed", n: 50, credential: maxAuth,
			closeWith: tcpStreamError("policy-violation", "too many failed authentication attempts"),
			script: func(h *seedClient) (string, error) {
				return repeat(h, maxAuth, func(int) (string, string) { return fastWrong, wrongPassword })
			}},
		{name: "oversized authenticate", n: 30, closeWith: tcpStreamError("policy-violation", "stanza: byte {*}: element too large"), scanned: true,
			script: func(h *seedClient) (string, error) {
				return "", h.send(sasl2Open + `PLAIN'><initial-response>` + strings.Repeat("A", cfg.Preauth.MaxStanzaSize) + `</initial-response></authenticate>`)
			}},
		{name: "too many elements in authenticate", n: 30, closeWith: tcpStreamError("policy-violation", "stanza: byte {*}: too many elements"), scanned: true,
			script: func(h *seedClient) (string, error) {
				return "", h.send(sasl2Open + `PLAIN'>` + strings.Repeat(`<x/>`, cfg.Preauth.MaxElements) + `</authenticate>`)
			}},
		{name: "ping in an exchange", n: 40, closeWith: tcpStreamError("policy-violation", "only SASL2 responses during a SASL2 exchange"),
			script: func(h *seedClient) (string, error) {
				if err := firstErr(h.send(scramFirst), h.await("</challenge>", 1)); err != nil {
					return "", err
				}
				return challenge, h.send(ping)
			}},
	}

	type result struct {
		want, out string
		elapsed   time.Duration
		err       error
	}
	results := make([][]result, len(classes))
	var wg sync.WaitGroup
	before := srv.Stats()
	began := time.Now()
	for k, cl := range classes {
		results[k] = make([]result, cl.n)
		for i := range cl.n {
			wg.Go(func() {
				r := &results[k][i]
				h, err := dialSeed(srv.Addr().String(), fmt.Sprintf("127.0.%d.%d", 10+k, 1+i), tc)
				if h != nil && h.conn != nil {
					defer h.conn.Close()
				}
				if err != nil {
					r.err = err
					return
				}
				if r.want, r.err = cl.script(h); r.err != nil {
					return
				}
				r.elapsed, r.err = h.linger(cl.trickle)
				r.out = h.buf.String()
			})
		}
	}

	// Meanwhile, legitimate clients log in, one with RFC 6120 SASL, one
	// with SASL2 and Bind 2, and talk.
	alice := loginTLS(t, srv, tc, "alice", msasl.ScramSha256Plus)
	bob := fastOpen(t, srv, tc)
	nego := bob.sasl2Scram(t, msasl.ScramSha256Plus, "bob", testPassword, `<user-agent id='`+uaB+`'/><bind xmlns='urn:xmpp:bind:0'><tag>Phone</tag></bind>`)
	success := bob.skipUntil("</success>")
	verify(t, nego, success)
	bob.expect(t, `<stream:features></stream:features>`)
	bobJID := between(success, "<authorization-identifier>", "</authorization-identifier>")
	ctx, cancel := contextTimeout()
	defer cancel()
	for i := range 5 {
		msg := stanza.Message{To: jid.MustParse(bobJID), Type: stanza.ChatMessage}
		if err := alice.Send(ctx, msg.Wrap(bodyTokens("during the attack"))); err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		bob.expect(t, `<message xmlns='jabber:client' type='chat' to='`+bobJID+`' id='{*}' from='`+alice.LocalAddr().String()+`'><body>during the attack</body></message>`)
	}

	wg.Wait()
	var credential, exchange, deadline, policy, badInput uint64
	for k, cl := range classes {
		for i, r := range results[k] {
			if r.err != nil {
				t.Fatalf("%s, client %d: %v", cl.name, i, r.err)
			}
			if strings.Contains(r.out, "type='result'") || strings.Contains(r.out, "urn:xmpp:ping") {
				t.Fatalf("%s, client %d got an answer to its ping before authenticating: %q", cl.name, i, r.out)
			}
			if !matches(r.want+cl.closeWith, r.out) {
				t.Fatalf("%s, client %d: got %q\nwant exactly %q", cl.name, i, r.out, r.want+cl.closeWith)
			}
			if cl.deadline && r.elapsed < cfg.Preauth.Timeout {
				t.Fatalf("%s, client %d closed after %v, before the %v deadline", cl.name, i, r.elapsed, cfg.Preauth.Timeout)
			}
		}
		credential += uint64(cl.n * cl.credential)
		exchange += uint64(cl.n * cl.exchange)
		switch {
		case cl.deadline:
			deadline += uint64(cl.n)
		case cl.scanned:
			badInput += uint64(cl.n)
		default:
			policy += uint64(cl.n)
		}
	}
	// Close reasons are counted in gnet's OnClose, which may run just after
	// the client saw the connection end.
	waitFor(ioTimeout, func() bool {
		st := srv.Stats()
		return st.ClosedDeadline-before.ClosedDeadline >= deadline && st.ClosedPolicy-before.ClosedPolicy >= policy &&
			st.ClosedBadInput-before.ClosedBadInput >= badInput
	})
	st := srv.Stats()
	for _, c := range []struct {
		name      string
		got, want uint64
	}{
		{"credential failures", st.AuthFailedCredential - before.AuthFailedCredential, credential},
		{"exchange failures", st.AuthFailedExchange - before.AuthFailedExchange, exchange},
		{"failures", st.AuthFailed - before.AuthFailed, credential + exchange},
		{"throttled", st.AuthThrottled - before.AuthThrottled, 0},
		{"closed by the deadline", st.ClosedDeadline - before.ClosedDeadline, deadline},
		{"closed by policy", st.ClosedPolicy - before.ClosedPolicy, policy},
		{"closed for bad input", st.ClosedBadInput - before.ClosedBadInput, badInput},
		{"logins", st.AuthSucceeded - before.AuthSucceeded, 2},
		{"SASL2 logins", st.AuthSASL2 - before.AuthSASL2, 1},
		{"token logins", st.AuthFAST - before.AuthFAST, 0},
	} {
		if c.got != c.want {
			t.Errorf("%s: %d, want %d", c.name, c.got, c.want)
		}
	}
	t.Logf("latest pre-auth deadline fired %v after it was due (tick %v)", st.DeadlineLateMax, cfg.Server.Tick)
	if st.DeadlineLateMax > 5*cfg.Server.Tick {
		t.Errorf("a pre-auth deadline fired %v late, tick %v", st.DeadlineLateMax, cfg.Server.Tick)
	}
	_ = alice.Close()
	_ = bob.conn.Close()
	if !waitFor(ioTimeout, func() bool { return runtime.NumGoroutine() <= baseline }) {
		t.Fatalf("goroutines: %d, baseline %d", runtime.NumGoroutine(), baseline)
	}
	t.Logf("attack over after %v", time.Since(began))

	// The per-address throttle: preauth.max_failures_per_ip failed
	// credentials from one address (the last closing the stream at
	// max_failed_auth), then even the right password is refused at once.
	plain := sasl2Open + `PLAIN'><initial-response>` + b64([]byte("\x00alice\x00"+testPassword)) + `</initial-response></authenticate>`
	w := tlsFrom(t, srv, tc, "127.0.30.1")
	for range maxAuth - 1 {
		w.exchange(t, plainWrong, wrongPassword)
	}
	w.send(plainWrong)
	if got, want := w.closed(), wrongPassword+tcpStreamError("policy-violation", "too many failed authentication attempts"); got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
	w = tlsFrom(t, srv, tc, "127.0.30.1")
	w.exchange(t, plain, sasl2Failure("temporary-auth-failure", "too many failed logins from your address; try later"))
	// Another address is not affected.
	tlsFrom(t, srv, tc, "127.0.30.2").exchange(t, plain,
		`<success xmlns='urn:xmpp:sasl:2'><authorization-identifier>alice@localhost</authorization-identifier></success>`+boundFeatures)
	_ = w.conn.Close()

	_, body := get(t, "http://"+srv.AdminAddr().String()+"/metrics")
	after := srv.Stats()
	for _, want := range []string{
		fmt.Sprintf(`krill_auth_failures_total{kind="credential"} %d`, credential+uint64(maxAuth)),
		fmt.Sprintf(`krill_auth_failures_total{kind="exchange"} %d`, exchange+1), // the throttled attempt
		`krill_logins_total{result="throttled"} 1`,
		`krill_logins_by_profile_total{profile="sasl"} 1`,
		`krill_logins_by_profile_total{profile="sasl2"} 2`,
		`krill_logins_by_profile_total{profile="fast"} 0`,
		fmt.Sprintf(`krill_connections_closed_total{kind="c2s",reason="deadline"} %d`, deadline),
		fmt.Sprintf(`krill_connections_closed_total{kind="c2s",reason="policy"} %d`, policy+1),
		fmt.Sprintf(`krill_connections_closed_total{kind="c2s",reason="error"} %d`, badInput),
	} {
		if !strings.Contains(body, want+"\n") {
			t.Errorf("metrics lack %s; stats %+v", want, after)
		}
	}

}

// tlsFrom is tlsRaw from source address ip, the stream opened over TLS.
func tlsFrom(t *testing.T, srv *server.Server, tc *tls.Config, ip string) *rawConn {
	t.Helper()
	r := dialFrom(t, srv, ip)
	r.proceed()
	c := tls.Client(r.conn, tc)
	_ = c.SetDeadline(time.Now().Add(ioTimeout))
	if err := c.Handshake(); err != nil {
		t.Fatal(err)
	}
	r.conn = c
	r.open()
	return r
}

// firstErr returns the first non-nil error.
func firstErr(errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// TestPreauthCapsSASL2: connections in the middle of a SASL2 exchange
// hold their pre-auth slot like any other; over the per-address and total
// caps the server refuses with policy-violation and resource-constraint
// before TLS, and a SASL2 login (no stream restart) frees the slot.
func TestPreauthCapsSASL2(t *testing.T) {
	cfg := tlsConfig(t)
	cfg.Preauth.MaxPerIP = 2
	cfg.Preauth.MaxTotal = 3
	srv := startServer(t, cfg, "kim")
	tc := clientTLS(t, cfg)
	stalled := func(ip string) *rawConn {
		r := tlsFrom(t, srv, tc, ip)
		r.exchange(t, sasl2Open+`PLAIN'/>`, `<challenge xmlns='urn:xmpp:sasl:2'/>`)
		return r
	}
	a := stalled("127.0.0.1")
	stalled("127.0.0.1")
	if out := dialRaw(t, srv).closed(); !strings.Contains(out, "<policy-violation "+streamsNS+"/>") {
		t.Fatalf("third connection from one address got %q, want policy-violation", out)
	}
	stalled("127.0.0.2")
	if out := dialFrom(t, srv, "127.0.0.3").closed(); !strings.Contains(out, "<resource-constraint "+streamsNS+"/>") {
		t.Fatalf("fourth connection got %q, want resource-constraint", out)
	}
	// SASL2 authenticates without a restart: the slot opens at <success/>.
	a.exchange(t, `<response xmlns='urn:xmpp:sasl:2'>`+b64([]byte("\x00kim\x00"+testPassword))+`</response>`,
		`<success xmlns='urn:xmpp:sasl:2'><authorization-identifier>kim@localhost</authorization-identifier></success>`+boundFeatures)
	if st := srv.Stats(); st.Preauth != 2 {
		t.Fatalf("%d pre-auth connections after one logged in, want 2", st.Preauth)
	}
	stalled("127.0.0.1")
	waitFor(ioTimeout, func() bool { return srv.Stats().ClosedPolicy >= 2 }) // counted in OnClose
	if st := srv.Stats(); st.ClosedPolicy != 2 || st.AuthSASL2 != 1 || st.AuthFailed != 0 {
		t.Fatalf("closed by policy %d, SASL2 logins %d, failures %d; want 2, 1, 0", st.ClosedPolicy, st.AuthSASL2, st.AuthFailed)
	}
}
