package server_test

import (
	"crypto/tls"
	"encoding/base64"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/krill-xmpp/krill/server"
)

// The exact bytes go-sendxmpp 0.5.6 (Debian 12) writes, captured with
// strace: every element is followed by a newline.
const (
	sendxmppHeader   = "<?xml version='1.0'?>\n<stream:stream to='localhost' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>\n"
	sendxmppStartTLS = "<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>\n"
)

// dialDirect opens a raw TCP connection to the direct TLS listener.
func dialDirect(t *testing.T, srv *server.Server) *rawConn {
	t.Helper()
	conn, err := net.DialTimeout("tcp", srv.DirectTLSAddr().String(), ioTimeout)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return &rawConn{t: t, conn: conn}
}

// upgrade runs a TLS client handshake over r and switches r to it.
func (r *rawConn) upgrade(c *tls.Config) {
	r.t.Helper()
	tc := tls.Client(r.conn, c)
	_ = tc.SetDeadline(time.Now().Add(ioTimeout))
	if err := tc.Handshake(); err != nil {
		r.t.Fatalf("TLS handshake: %v", err)
	}
	r.conn = tc
}

// TestSTARTTLSWhitespace (issue 9, defect 1): go-sendxmpp writes a newline
// after <starttls/>; the server skips it, whether it comes with the
// element or after <proceed/>, and the handshake and the restarted stream
// work. Other bytes, too much whitespace, and whitespace on the direct TLS
// port still fail as not TLS.
func TestSTARTTLSWhitespace(t *testing.T) {
	cfg := tlsConfig(t)
	srv := startServer(t, cfg)
	tc := clientTLS(t, cfg)
	for _, tc2 := range []struct {
		name        string
		withElement string // sent with <starttls/>
		afterProc   string // sent after <proceed/>, before the ClientHello
	}{
		{"newline with the element (go-sendxmpp)", "", ""},
		{"newline after proceed", "", "\n"},
		{"CRLF and spaces", "\r\n", "  \t"},
	} {
		t.Run(tc2.name, func(t *testing.T) {
			r := dialRaw(t, srv)
			r.send(sendxmppHeader)
			r.skipUntil("</stream:features>")
			r.send(sendxmppStartTLS + tc2.withElement)
			r.expect(t, "<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
			if tc2.afterProc != "" {
				r.send(tc2.afterProc)
			}
			r.upgrade(tc)
			r.send(sendxmppHeader)
			if f := r.skipUntil("</stream:features>"); !strings.Contains(f, "<mechanism>PLAIN</mechanism>") {
				t.Fatalf("features after STARTTLS: %q", f)
			}
		})
	}
	for _, bad := range []struct {
		name, after string
		direct      bool
	}{
		{"newline then HTTP", "\nGET / HTTP/1.1\r\n\r\n", false},
		{"too much whitespace", strings.Repeat(" ", 65), false},
		{"newline on the direct TLS port", "\n", true},
	} {
		t.Run(bad.name, func(t *testing.T) {
			before := srv.Stats()
			var r *rawConn
			if bad.direct {
				r = dialDirect(t, srv)
			} else {
				r = dialRaw(t, srv)
				r.send(sendxmppHeader)
				r.skipUntil("</stream:features>")
				r.send(sendxmppStartTLS)
				r.expect(t, "<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
			}
			r.send(bad.after)
			r.closed()
			if !waitFor(ioTimeout, func() bool {
				st := srv.Stats()
				return st.TLSNotTLS == before.TLSNotTLS+1 && st.ClosedTLSFailed == before.ClosedTLSFailed+1
			}) {
				t.Fatalf("not counted as not_tls / tls_failed: %+v", srv.Stats())
			}
		})
	}
}

// TestDirectTLSRestartDeclaration (issue 9, defect 2): over direct TLS,
// go-sendxmpp ends <auth/> with a newline and, after <success/>, sends
// "<?xml version='1.0'?>" and the new header. The restarted stream is a new
// document: the declaration after whitespace is accepted.
func TestDirectTLSRestartDeclaration(t *testing.T) {
	cfg := tlsConfig(t)
	srv := startServer(t, cfg, "gina")
	auth := "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>" +
		base64.StdEncoding.EncodeToString([]byte("\x00gina\x00"+testPassword)) + "</auth>\n"
	for _, tc := range []struct{ name, auth, restart string }{
		{"newline with auth (go-sendxmpp)", auth, sendxmppHeader},
		{"newline before the declaration", strings.TrimSuffix(auth, "\n"), "\n" + sendxmppHeader},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := dialDirect(t, srv)
			r.upgrade(clientTLS(t, cfg))
			r.send(sendxmppHeader)
			r.skipUntil("</stream:features>")
			r.send(tc.auth)
			r.expect(t, "<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>")
			r.send(tc.restart)
			if f := r.skipUntil("</stream:features>"); !strings.Contains(f, "<bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/>") {
				t.Fatalf("features after SASL: %q", f)
			}
			r.send("<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>r</resource></bind></iq>\n")
			r.expect(t, "<iq type='result' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><jid>gina@localhost/r</jid></bind></iq>")
		})
	}
	t.Run("processing instruction in the stream", func(t *testing.T) {
		r := dialDirect(t, srv)
		r.upgrade(clientTLS(t, cfg))
		r.send(sendxmppHeader)
		r.skipUntil("</stream:features>")
		r.send("\n<?xml version='1.0'?>")
		if got := r.closed(); !strings.Contains(got, "<restricted-xml") {
			t.Fatalf("got %q, want restricted-xml", got)
		}
	})
}

// TestTLSClientAbort (issue 9, defect 8): a client that refuses the
// server's certificate aborts the handshake with an alert. Go's client
// sends it encrypted; OpenSSL (xmppc, libstrophe) sends it in plaintext,
// which crypto/tls reports as "bad record MAC". Both count as client_alert
// and close the connection as tls_failed.
func TestTLSClientAbort(t *testing.T) {
	cfg := tlsConfig(t)
	srv := startServer(t, cfg)
	expectAlert := func(t *testing.T, before server.StatsSnapshot) {
		t.Helper()
		if !waitFor(ioTimeout, func() bool {
			st := srv.Stats()
			return st.TLSClientAlerts == before.TLSClientAlerts+1 && st.ClosedTLSFailed == before.ClosedTLSFailed+1 &&
				st.TLSOtherFailures == before.TLSOtherFailures
		}) {
			t.Fatalf("not counted as a client alert: %+v", srv.Stats())
		}
	}
	t.Run("crypto/tls client without the certificate", func(t *testing.T) {
		before := srv.Stats()
		r := dialDirect(t, srv)
		c := tls.Client(r.conn, &tls.Config{ServerName: "localhost", RootCAs: nil}) // system roots: no dev cert
		_ = c.SetDeadline(time.Now().Add(ioTimeout))
		if err := c.Handshake(); err == nil {
			t.Fatal("handshake succeeded with an untrusted certificate")
		}
		expectAlert(t, before) // the client keeps its socket open: the alert alone tells
	})
	t.Run("plaintext alert after ServerHello (OpenSSL)", func(t *testing.T) {
		before := srv.Stats()
		r := dialDirect(t, srv)
		r.send(string(clientHello(t)))
		_ = r.conn.SetReadDeadline(time.Now().Add(ioTimeout))
		var b [5]byte
		if _, err := r.conn.Read(b[:]); err != nil || b[0] != 0x16 {
			t.Fatalf("no ServerHello: %v %x", err, b)
		}
		// alert(21), TLS 1.2 record version, length 2: fatal(2), unknown_ca(48).
		r.send("\x15\x03\x03\x00\x02\x02\x30")
		expectAlert(t, before)
	})
}

// TestCloseReasons (issue 9, defect 3): after closes of every kind, each
// counted exactly one reason, and sum(reasons) == closed == accepted - open.
func TestCloseReasons(t *testing.T) {
	outer := t
	cfg := tlsConfig(t)
	cfg.C2S.AllowPlaintext = true
	cfg.TLS.HandshakeTimeout = 300 * time.Millisecond
	cfg.Preauth.MaxPerIP = 50
	srv := startServer(t, cfg, "hank")
	reason := func(st server.StatsSnapshot) map[string]uint64 {
		return map[string]uint64{
			"deadline": st.ClosedDeadline, "policy": st.ClosedPolicy, "error": st.ClosedBadInput,
			"client_close": st.ClosedClient, "dropped": st.ClosedPeer, "tls_failed": st.ClosedTLSFailed,
			"replaced": st.ClosedReplaced, "shutdown": st.ClosedShutdown, "panic": st.ClosedPanic,
		}
	}
	hello := clientHello(t)
	for _, tc := range []struct {
		want string
		run  func(t *testing.T)
	}{
		{"tls_failed", func(t *testing.T) { // not TLS after STARTTLS
			r := dialRaw(t, srv)
			r.proceed()
			r.send("GET / HTTP/1.1\r\n\r\n")
			r.closed()
		}},
		{"tls_failed", func(t *testing.T) { // the client refuses the certificate
			r := dialDirect(t, srv)
			_ = tls.Client(r.conn, &tls.Config{ServerName: "localhost"}).Handshake()
		}},
		{"tls_failed", func(t *testing.T) { // the client leaves mid-handshake
			started := srv.Stats().TLSHandshakes
			closedMid := srv.Stats().TLSClientClosed
			r := dialDirect(t, srv)
			r.send(string(hello))
			if !waitFor(ioTimeout, func() bool { return srv.Stats().TLSHandshakes > started }) {
				t.Fatal("no handshake")
			}
			_ = r.conn.Close()
			if !waitFor(ioTimeout, func() bool { return srv.Stats().TLSClientClosed == closedMid+1 }) {
				t.Fatal("not counted as client_closed")
			}
		}},
		{"deadline", func(t *testing.T) { // handshake timeout
			r := dialDirect(t, srv)
			r.send(string(hello[:10]))
			r.closed()
		}},
		{"client_close", func(t *testing.T) {
			r := dialRaw(t, srv)
			r.open()
			r.send("</stream:stream>")
			r.closed()
		}},
		{"dropped", func(t *testing.T) {
			r := dialRaw(t, srv)
			r.open()
			_ = r.conn.Close()
		}},
		{"error", func(t *testing.T) {
			r := dialRaw(t, srv)
			r.open()
			r.send("<a><b></a>")
			r.closed()
		}},
		{"policy", func(t *testing.T) {
			r := dialRaw(t, srv)
			r.open()
			r.send("<message to='hank@localhost'/>")
			r.closed()
		}},
		{"replaced", func(t *testing.T) {
			a := dialRaw(t, srv)
			a.scramLogin("hank", testPassword, "same")
			b := dialRaw(outer, srv) // stays open after the case
			b.scramLogin("hank", testPassword, "same")
			a.closed()
		}},
	} {
		before := srv.Stats()
		t.Run(tc.want, tc.run)
		var after server.StatsSnapshot
		if !waitFor(ioTimeout, func() bool {
			after = srv.Stats()
			return after.Closed > before.Closed && reason(after)[tc.want] > reason(before)[tc.want]
		}) {
			t.Fatalf("%s: close not counted: %+v", tc.want, after)
		}
		for name, n := range reason(after) {
			want := reason(before)[name]
			if name == tc.want {
				want++
			}
			if n != want {
				t.Errorf("%s: reason %s went from %d to %d", tc.want, name, reason(before)[name], n)
			}
		}
	}
	st := srv.Stats()
	var sum uint64
	for _, n := range reason(st) {
		sum += n
	}
	open := uint64(st.PreauthPlain + st.PreauthTLS + st.Authenticated)
	if sum != st.Closed || st.Closed != st.Accepted-open {
		t.Fatalf("sum of reasons %d, closed %d, accepted %d - open %d", sum, st.Closed, st.Accepted, open)
	}
}
