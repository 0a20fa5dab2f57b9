package server_test

import (
	"encoding/base64"
	"net"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	msasl "mellium.im/sasl"
	"mellium.im/xmpp/jid"
	"mellium.im/xmpp/stanza"
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
