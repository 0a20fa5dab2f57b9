package server_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/xml"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	msasl "mellium.im/sasl"
	"mellium.im/xmlstream"
	"mellium.im/xmpp"
	"mellium.im/xmpp/jid"
	"mellium.im/xmpp/stanza"

	"github.com/krill-xmpp/krill/config"
	"github.com/krill-xmpp/krill/server"
)

// tlsConfig returns the configuration for TLS tests: STARTTLS required and
// the direct TLS listener on an ephemeral port.
func tlsConfig(t *testing.T) config.Config {
	cfg := testConfig(t)
	cfg.C2S.AllowPlaintext = false
	cfg.C2S.DirectTLSListen = "127.0.0.1:0"
	return cfg
}

// clientTLS trusts the server's generated development certificate.
func clientTLS(t *testing.T, cfg config.Config) *tls.Config {
	t.Helper()
	pem, err := os.ReadFile(filepath.Join(cfg.DataDir, "dev-cert.pem"))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		t.Fatal("no certificate in dev-cert.pem")
	}
	return &tls.Config{ServerName: "localhost", RootCAs: pool}
}

// loginTLS logs in with mellium's client over STARTTLS with mech.
func loginTLS(t *testing.T, srv *server.Server, tc *tls.Config, user string, mech msasl.Mechanism) *xmpp.Session {
	t.Helper()
	ctx, cancel := contextTimeout()
	defer cancel()
	conn, err := net.DialTimeout("tcp", srv.Addr().String(), ioTimeout)
	if err != nil {
		t.Fatal(err)
	}
	origin := jid.MustParse(user + "@localhost")
	s, err := xmpp.NewSession(ctx, origin.Domain(), origin, conn, 0,
		xmpp.NewNegotiator(func(*xmpp.Session, *xmpp.StreamConfig) xmpp.StreamConfig {
			return xmpp.StreamConfig{Features: []xmpp.StreamFeature{
				xmpp.StartTLS(tc), xmpp.SASL("", testPassword, mech), xmpp.BindResource(),
			}}
		}))
	if err != nil {
		_ = conn.Close()
		t.Fatalf("STARTTLS login %s with %s: %v", user, mech.Name, err)
	}
	t.Cleanup(func() { _ = s.Close(); _ = conn.Close() })
	return s
}

// TestSTARTTLSPlus: STARTTLS, SCRAM-SHA-256-PLUS (tls-exporter), bind and a
// message between two TLS sessions.
func TestSTARTTLSPlus(t *testing.T) {
	cfg := tlsConfig(t)
	srv := startServer(t, cfg, "alice", "bob")
	tc := clientTLS(t, cfg)
	alice := loginTLS(t, srv, tc, "alice", msasl.ScramSha256Plus)
	bob := loginTLS(t, srv, tc, "bob", msasl.ScramSha1Plus)
	if v := alice.ConnectionState().Version; v != tls.VersionTLS13 {
		t.Fatalf("negotiated TLS version %x, want 1.3", v)
	}
	got := make(chan string, 1)
	go func() {
		_ = bob.Serve(xmpp.HandlerFunc(func(r xmlstream.TokenReadEncoder, start *xml.StartElement) error {
			if start.Name.Local == "message" {
				var msg struct {
					Body string `xml:"body"`
				}
				_ = xml.NewTokenDecoder(xmlstream.MultiReader(xmlstream.Token(*start), r)).Decode(&msg)
				got <- msg.Body
			}
			return nil
		}))
	}()
	ctx, cancel := contextTimeout()
	defer cancel()
	msg := stanza.Message{To: bob.LocalAddr(), Type: stanza.ChatMessage}
	if err := alice.Send(ctx, msg.Wrap(bodyTokens("over tls"))); err != nil {
		t.Fatal(err)
	}
	select {
	case b := <-got:
		if b != "over tls" {
			t.Fatalf("bob got %q", b)
		}
	case <-time.After(ioTimeout):
		t.Fatal("bob received nothing")
	}
}

// TestTLSVersions forces TLS 1.2 and TLS 1.3 in turn. mellium's client binds
// -PLUS to tls-unique under TLS 1.2, which RFC 9266 retires, so TLS 1.2 logs
// in with SCRAM-SHA-256.
func TestTLSVersions(t *testing.T) {
	cfg := tlsConfig(t)
	srv := startServer(t, cfg, "carol")
	cases := []struct {
		name    string
		version uint16
		mech    msasl.Mechanism
	}{
		{"TLS 1.2", tls.VersionTLS12, msasl.ScramSha256},
		{"TLS 1.3", tls.VersionTLS13, msasl.ScramSha256Plus},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := clientTLS(t, cfg)
			c.MinVersion, c.MaxVersion = tc.version, tc.version
			s := loginTLS(t, srv, c, "carol", tc.mech)
			if v := s.ConnectionState().Version; v != tc.version {
				t.Fatalf("negotiated %x, want %x", v, tc.version)
			}
		})
	}
	t.Run("TLS 1.1 refused", func(t *testing.T) {
		c := clientTLS(t, cfg)
		c.MinVersion, c.MaxVersion = tls.VersionTLS11, tls.VersionTLS11
		r := dialRaw(t, srv)
		r.proceed()
		tc := tls.Client(r.conn, c)
		_ = tc.SetDeadline(time.Now().Add(ioTimeout))
		if err := tc.Handshake(); err == nil {
			t.Fatal("TLS 1.1 handshake succeeded")
		}
	})
}

// TestDirectTLS logs in on the XEP-0368 listener, checking ALPN.
func TestDirectTLS(t *testing.T) {
	cfg := tlsConfig(t)
	srv := startServer(t, cfg, "dave")
	c := clientTLS(t, cfg)
	c.NextProtos = []string{"xmpp-client"}
	d := net.Dialer{Timeout: ioTimeout}
	conn, err := tls.DialWithDialer(&d, "tcp", srv.DirectTLSAddr().String(), c)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if p := conn.ConnectionState().NegotiatedProtocol; p != "xmpp-client" {
		t.Fatalf("ALPN %q, want xmpp-client", p)
	}
	ctx, cancel := contextTimeout()
	defer cancel()
	origin := jid.MustParse("dave@localhost")
	s, err := xmpp.NewSession(ctx, origin.Domain(), origin, conn, xmpp.Secure,
		xmpp.NewNegotiator(func(*xmpp.Session, *xmpp.StreamConfig) xmpp.StreamConfig {
			return xmpp.StreamConfig{Features: []xmpp.StreamFeature{
				xmpp.SASL("", testPassword, msasl.ScramSha256Plus), xmpp.BindResource(),
			}}
		}))
	if err != nil {
		t.Fatalf("direct TLS login: %v", err)
	}
	_ = s.Close()
}

// proceed opens the stream and asks for STARTTLS; what follows is TLS.
func (r *rawConn) proceed() {
	r.t.Helper()
	r.open()
	r.send(`<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>`)
	r.expect(r.t, "<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
}

// tlsRaw upgrades a raw connection with STARTTLS and returns it.
func tlsRaw(t *testing.T, srv *server.Server, c *tls.Config) *rawConn {
	t.Helper()
	r := dialRaw(t, srv)
	r.proceed()
	tc := tls.Client(r.conn, c)
	_ = tc.SetDeadline(time.Now().Add(ioTimeout))
	if err := tc.Handshake(); err != nil {
		t.Fatal(err)
	}
	r.conn = tc
	return r
}

// TestTLSFeatures: over TLS every mechanism is offered, -PLUS first, with
// the XEP-0440 channel-binding types; a 'y' flag is a downgrade.
func TestTLSFeatures(t *testing.T) {
	cfg := tlsConfig(t)
	srv := startServer(t, cfg, "erin")
	r := tlsRaw(t, srv, clientTLS(t, cfg))
	feats := r.open()
	for _, want := range []string{
		"<mechanism>SCRAM-SHA-512-PLUS</mechanism>", "<mechanism>PLAIN</mechanism>",
		"<channel-binding type='tls-exporter'/>", "<channel-binding type='tls-server-end-point'/>",
	} {
		if !strings.Contains(feats, want) {
			t.Errorf("features lack %s: %q", want, feats)
		}
	}
	if strings.Contains(feats, "starttls") {
		t.Errorf("STARTTLS offered again over TLS: %q", feats)
	}
	first := base64.StdEncoding.EncodeToString([]byte("y,,n=erin,r=abcdefghijklmnopqrstuvwx"))
	r.send(`<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='SCRAM-SHA-256'>` + first + `</auth>`)
	r.expect(t, saslFailed("<not-authorized/>"))
	// PLAIN works over TLS.
	plain := base64.StdEncoding.EncodeToString([]byte("\x00erin\x00" + testPassword))
	r.send(`<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>` + plain + `</auth>`)
	r.expect(t, "<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>")
}

// clientHello returns the first flight of a real TLS client.
func clientHello(t *testing.T) []byte {
	t.Helper()
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	go func() {
		_ = tls.Client(a, &tls.Config{ServerName: "localhost"}).Handshake()
	}()
	buf := make([]byte, 4096)
	_ = b.SetReadDeadline(time.Now().Add(ioTimeout))
	n, err := b.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	return buf[:n]
}

// TestHandshakeDeadlines: a ClientHello trickled byte by byte holds no
// handshake goroutine and is closed at the handshake deadline; so is a
// handshake that stalls after the ClientHello.
func TestHandshakeDeadlines(t *testing.T) {
	cfg := tlsConfig(t)
	cfg.TLS.HandshakeTimeout = 700 * time.Millisecond
	srv := startServer(t, cfg)
	hello := clientHello(t)

	t.Run("slow loris ClientHello", func(t *testing.T) {
		start := time.Now()
		r := dialRaw(t, srv)
		r.proceed()
		timeouts := srv.Stats().TLSTimeouts
		closed := make(chan struct{})
		go func() {
			defer close(closed)
			for i := 0; i < len(hello)-1; i++ {
				if _, err := r.conn.Write(hello[i : i+1]); err != nil {
					return
				}
				if srv.Stats().TLSActive != 0 {
					t.Errorf("a handshake goroutine runs for an incomplete ClientHello")
				}
				time.Sleep(20 * time.Millisecond)
			}
		}()
		r.closed()
		<-closed
		if el := time.Since(start); el < cfg.TLS.HandshakeTimeout {
			t.Fatalf("closed after %v, before the deadline", el)
		}
		if srv.Stats().TLSTimeouts != timeouts+1 {
			t.Fatal("not counted as a handshake timeout")
		}
	})
	t.Run("stalled handshake", func(t *testing.T) {
		start := time.Now()
		r := dialRaw(t, srv)
		r.proceed()
		r.send(string(hello))
		if !waitFor(ioTimeout, func() bool { return srv.Stats().TLSActive == 1 }) {
			t.Fatal("no handshake started for a complete ClientHello")
		}
		r.closed()
		if el := time.Since(start); el < cfg.TLS.HandshakeTimeout {
			t.Fatalf("closed after %v, before the deadline", el)
		}
		if !waitFor(ioTimeout, func() bool { return srv.Stats().TLSActive == 0 }) {
			t.Fatal("the handshake goroutine outlived its connection")
		}
	})
	t.Run("not TLS", func(t *testing.T) {
		r := dialRaw(t, srv)
		r.proceed()
		r.send("GET / HTTP/1.1\r\n\r\n")
		r.closed()
	})
}

// TestHandshakeCap: with every slot held by stalled handshakes, a new
// handshake waits, an established session keeps working, and the waiting
// handshake completes once a slot frees.
func TestHandshakeCap(t *testing.T) {
	cfg := tlsConfig(t)
	cfg.TLS.MaxHandshakes = 2
	cfg.TLS.HandshakeTimeout = 30 * time.Second
	srv := startServer(t, cfg, "frank")
	tc := clientTLS(t, cfg)
	established := tlsRaw(t, srv, tc)
	established.scramLoginOpened("frank", testPassword, "e")

	hello := clientHello(t)
	var stalled []*rawConn
	for range 2 {
		r := dialRaw(t, srv)
		r.proceed()
		r.send(string(hello))
		stalled = append(stalled, r)
	}
	if !waitFor(ioTimeout, func() bool { return srv.Stats().TLSActive == 2 }) {
		t.Fatalf("stalled handshakes: %+v", srv.Stats())
	}
	waiting := make(chan *rawConn, 1)
	go func() {
		r := &rawConn{t: t}
		conn, err := net.DialTimeout("tcp", srv.Addr().String(), ioTimeout)
		if err != nil {
			t.Error(err)
			waiting <- nil
			return
		}
		r.conn = conn
		r.send(clientHeader)
		if _, err := r.readUntil("</stream:features>", time.Now().Add(ioTimeout)); err != nil {
			t.Error(err)
		}
		r.send(`<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>`)
		_, _ = r.readUntil("<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>", time.Now().Add(ioTimeout))
		c := tls.Client(conn, tc)
		_ = c.SetDeadline(time.Now().Add(ioTimeout))
		if err := c.Handshake(); err != nil {
			t.Errorf("queued handshake: %v", err)
		}
		r.conn = c
		waiting <- r
	}()
	if !waitFor(ioTimeout, func() bool { return srv.Stats().TLSWaiting == 1 }) {
		t.Fatalf("no handshake waiting: %+v", srv.Stats())
	}
	established.sync(t, "busy")
	// A stalled client goes away: its slot passes to the waiting one.
	_ = stalled[0].conn.Close()
	r := <-waiting
	if r == nil {
		t.FailNow()
	}
	r.open()
}

// scramLoginOpened is scramLogin for a connection whose TLS is already up.
func (r *rawConn) scramLoginOpened(user, password, resource string) string {
	return r.scramLogin(user, password, resource)
}

// TestTLSGoroutines: 500 TLS sessions logged in and idle hold no goroutine.
func TestTLSGoroutines(t *testing.T) {
	if testing.Short() {
		t.Skip("500 TLS logins")
	}
	cfg := tlsConfig(t)
	srv := startServer(t, cfg, "gina")
	tc := clientTLS(t, cfg)
	baseline := settledGoroutines(t)

	const n = 500
	sessions := make([]*xmpp.Session, n)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 16)
	for i := range n {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			sessions[i] = loginTLS(t, srv, tc, "gina", msasl.ScramSha256Plus)
		})
	}
	wg.Wait()
	if got := srv.Stats().Sessions; got != n {
		t.Fatalf("%d sessions bound, want %d", got, n)
	}
	// The client sessions hold no goroutines of their own (nobody serves
	// them), so the process count is the server's.
	if !waitFor(ioTimeout, func() bool { return runtime.NumGoroutine() <= baseline }) {
		t.Fatalf("goroutines with %d idle TLS sessions: %d, baseline %d", n, runtime.NumGoroutine(), baseline)
	}
	ctx, cancel := context.WithTimeout(context.Background(), ioTimeout)
	defer cancel()
	// They still work.
	if err := sessions[0].Send(ctx, stanza.Message{To: sessions[n-1].LocalAddr()}.Wrap(bodyTokens("x"))); err != nil {
		t.Fatal(err)
	}
}

// TestCertificateReload: a reload takes a new certificate for new
// handshakes; established sessions are untouched; a restart reuses the
// generated certificate.
func TestCertificateReload(t *testing.T) {
	cfg := tlsConfig(t)
	srv := startServer(t, cfg, "heidi")
	tc := clientTLS(t, cfg)
	old := tlsRaw(t, srv, tc)
	old.scramLogin("heidi", testPassword, "old")

	certFile := filepath.Join(cfg.DataDir, "dev-cert.pem")
	before, _ := os.ReadFile(certFile)
	// A new certificate: remove the generated one and let another server
	// on the same data directory generate it.
	if err := os.Remove(certFile); err != nil {
		t.Fatal(err)
	}
	other := cfg
	other.C2S.Listen, other.C2S.DirectTLSListen = "127.0.0.1:0", ""
	_ = startServer(t, other)
	after, _ := os.ReadFile(certFile)
	if string(before) == string(after) {
		t.Fatal("no new certificate was generated")
	}
	if err := srv.ReloadCertificates(); err != nil {
		t.Fatal(err)
	}
	// The old session still works; a new client trusting only the old
	// certificate fails; one trusting the new one succeeds.
	old.sync(t, "after-reload")
	r := dialRaw(t, srv)
	r.proceed()
	c := tls.Client(r.conn, tc)
	_ = c.SetDeadline(time.Now().Add(ioTimeout))
	if err := c.Handshake(); err == nil {
		t.Fatal("handshake verified against the old certificate after reload")
	}
	tlsRaw(t, srv, clientTLS(t, cfg)).open()

	// Restart: the same data directory reuses the certificate.
	again := cfg
	again.C2S.Listen, again.C2S.DirectTLSListen = "127.0.0.1:0", ""
	_ = startServer(t, again)
	if reused, _ := os.ReadFile(certFile); string(reused) != string(after) {
		t.Fatal("restart generated a new certificate instead of reusing it")
	}
}
