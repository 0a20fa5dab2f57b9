package server_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/fips140"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	msasl "mellium.im/sasl"

	"github.com/krill-xmpp/krill/config"
	"github.com/krill-xmpp/krill/server"
)

// leanConfig is tlsConfig with the lean record layer on.
func leanConfig(t *testing.T) config.Config {
	cfg := tlsConfig(t)
	cfg.TLS.Lean = true
	return cfg
}

// heldConn holds what the TLS client writes once it has read the server's
// first flight, until flush: its Finished and the data written after it
// then reach the server in one segment, as many clients send them (design
// brief, lean TLS fact 1).
type heldConn struct {
	net.Conn
	mu      sync.Mutex
	read    bool
	pending []byte
}

func (h *heldConn) Read(b []byte) (int, error) {
	n, err := h.Conn.Read(b)
	h.mu.Lock()
	h.read = h.read || n > 0
	h.mu.Unlock()
	return n, err
}

func (h *heldConn) Write(b []byte) (int, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.read && h.pending != nil {
		h.pending = append(h.pending, b...)
		return len(b), nil
	}
	return h.Conn.Write(b)
}

func (h *heldConn) hold() {
	h.mu.Lock()
	h.pending = []byte{}
	h.mu.Unlock()
}

func (h *heldConn) flush() error {
	h.mu.Lock()
	p := h.pending
	h.pending = nil
	h.mu.Unlock()
	_, err := h.Conn.Write(p)
	return err
}

// TestLeanTLSGoClient: Go's client over STARTTLS and direct TLS, with the
// default (post-quantum) and X25519-only key shares, ends on the lean
// layer and logs in with SCRAM-SHA-256-PLUS over tls-exporter, computed
// before the switch; the stream header sent in the segment of the
// client's Finished is not lost. TLS 1.2 stays on the stock layer.
func TestLeanTLSGoClient(t *testing.T) {
	cfg := leanConfig(t)
	srv := startServer(t, cfg, "alice", "bob")
	for _, tc := range []struct {
		name    string
		curves  []tls.CurveID
		direct  bool
		version uint16
	}{
		{"STARTTLS default key share", nil, false, tls.VersionTLS13},
		{"STARTTLS X25519", []tls.CurveID{tls.X25519}, false, tls.VersionTLS13},
		{"direct default key share", nil, true, tls.VersionTLS13},
		{"direct X25519", []tls.CurveID{tls.X25519}, true, tls.VersionTLS13},
		{"STARTTLS TLS 1.2", nil, false, tls.VersionTLS12},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := srv.Stats()
			c := clientTLS(t, cfg)
			c.CurvePreferences = tc.curves
			c.MaxVersion = tc.version
			var r *rawConn
			if tc.direct {
				r = dialDirect(t, srv)
				c.NextProtos = []string{"xmpp-client"}
			} else {
				r = dialRaw(t, srv)
				r.proceed()
			}
			h := &heldConn{Conn: r.conn}
			if tc.version == tls.VersionTLS13 {
				h.hold() // TLS 1.2: the client waits for our Finished
			}
			tcl := tls.Client(h, c)
			_ = tcl.SetDeadline(time.Now().Add(ioTimeout))
			if err := tcl.Handshake(); err != nil {
				t.Fatal(err)
			}
			r.conn = tcl
			r.send(clientHeader) // held with the Finished
			if err := h.flush(); err != nil {
				t.Fatal(err)
			}
			r.skipUntil("</stream:features>")
			user := "alice"
			if tc.direct {
				user = "bob"
			}
			mech := msasl.ScramSha256Plus
			if tc.version == tls.VersionTLS12 {
				mech = msasl.ScramSha256 // mellium binds tls-unique under 1.2
			}
			plusLogin(t, r, tcl, user, mech)
			r.sync(t, "p1")
			after := srv.Stats()
			lean, stock := after.TLSLean-before.TLSLean, after.TLSStock-before.TLSStock
			if tc.version == tls.VersionTLS13 && (lean != 1 || stock != 0) {
				t.Fatalf("lean %d, stock %d; want the lean layer", lean, stock)
			}
			if tc.version == tls.VersionTLS12 && (lean != 0 || stock != 1) {
				t.Fatalf("lean %d, stock %d; want the stock layer", lean, stock)
			}
		})
	}
	if n := srv.Stats().TLSRecordErrors; n != 0 {
		t.Fatalf("%d record errors", n)
	}
}

// plusLogin authenticates r (features already read) with mech, binding
// the channel through tc's state, then binds a resource.
func plusLogin(t *testing.T, r *rawConn, tc *tls.Conn, user string, mech msasl.Mechanism) {
	t.Helper()
	cs := tc.ConnectionState()
	c := msasl.NewClient(mech, msasl.Credentials(func() ([]byte, []byte, []byte) {
		return []byte(user), []byte(testPassword), nil
	}), msasl.RemoteMechanisms(mech.Name), msasl.TLSState(cs))
	_, first, err := c.Step(nil)
	if err != nil {
		t.Fatal(err)
	}
	r.send(`<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='` + mech.Name + `'>` + base64.StdEncoding.EncodeToString(first) + `</auth>`)
	chal := between(r.expect(t, `<challenge xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>{*}</challenge>`), "'>", "</challenge>")
	raw, _ := base64.StdEncoding.DecodeString(chal)
	_, final, err := c.Step(raw)
	if err != nil {
		t.Fatal(err)
	}
	r.send(`<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>` + base64.StdEncoding.EncodeToString(final) + `</response>`)
	r.expect(t, `<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>{*}</success>`)
	r.open()
	r.send(`<iq type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>lean</resource></bind></iq>`)
	r.expect(t, `<iq type='result' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><jid>{*}</jid></bind></iq>`)
}

// TestLeanTLSMellium runs mellium's client (an independent XMPP
// implementation over Go's TLS) against the lean layer: SCRAM-SHA-1-PLUS,
// bind, a message between two sessions.
func TestLeanTLSMellium(t *testing.T) {
	cfg := leanConfig(t)
	srv := startServer(t, cfg, "carol")
	s := loginTLS(t, srv, clientTLS(t, cfg), "carol", msasl.ScramSha1Plus)
	if v := s.ConnectionState().Version; v != tls.VersionTLS13 {
		t.Fatalf("TLS %x", v)
	}
	if st := srv.Stats(); st.TLSLean != 1 || st.TLSStock != 0 {
		t.Fatalf("lean %d, stock %d", st.TLSLean, st.TLSStock)
	}
}

// capture records what is written through it, one slice per Write.
type capture struct {
	net.Conn
	mu     sync.Mutex
	writes [][]byte
}

func (c *capture) Write(b []byte) (int, error) {
	c.mu.Lock()
	c.writes = append(c.writes, bytes.Clone(b))
	c.mu.Unlock()
	return c.Conn.Write(b)
}

func (c *capture) last(n int) [][]byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.writes[len(c.writes)-n:]
}

// TestLeanTLSBadRecords: a tampered, replayed, reordered or truncated
// record closes its connection, is counted, and nothing else: another
// session on the same loop keeps working.
func TestLeanTLSBadRecords(t *testing.T) {
	cfg := leanConfig(t)
	cfg.Server.EventLoops = 1
	srv := startServer(t, cfg, "dave")
	other := tlsRaw(t, srv, clientTLS(t, cfg))
	other.scramLogin("dave", testPassword, "other")
	open := func(t *testing.T) (*rawConn, *capture, net.Conn) {
		r := dialRaw(t, srv)
		r.proceed()
		raw := r.conn
		cp := &capture{Conn: raw}
		tc := tls.Client(cp, clientTLS(t, cfg))
		_ = tc.SetDeadline(time.Now().Add(ioTimeout))
		if err := tc.Handshake(); err != nil {
			t.Fatal(err)
		}
		r.conn = tc
		r.open()
		return r, cp, raw
	}
	ping := `<iq type='get' id='x'/>`
	for _, tc := range []struct {
		name    string
		counted bool
		attack  func(t *testing.T, r *rawConn, cp *capture, raw net.Conn)
	}{
		{"tampered", true, func(t *testing.T, r *rawConn, cp *capture, raw net.Conn) {
			rec := bytes.Clone(sealOnly(t, cp, r, ping))
			rec[len(rec)-1] ^= 0x80
			_, _ = raw.Write(rec)
		}},
		{"replayed", true, func(t *testing.T, r *rawConn, cp *capture, raw net.Conn) {
			// The record of the stream header, sent again.
			_, _ = raw.Write(cp.last(1)[0])
		}},
		{"reordered", true, func(t *testing.T, r *rawConn, cp *capture, raw net.Conn) {
			a, b := sealOnly(t, cp, r, "<a/>"), sealOnly(t, cp, r, "<b/>")
			_, _ = raw.Write(append(bytes.Clone(b), a...))
		}},
		{"truncated", false, func(t *testing.T, r *rawConn, cp *capture, raw net.Conn) {
			rec := sealOnly(t, cp, r, ping)
			_, _ = raw.Write(rec[:len(rec)-3])
			_ = raw.(*net.TCPConn).CloseWrite()
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := srv.Stats().TLSRecordErrors
			r, cp, raw := open(t)
			tc.attack(t, r, cp, raw)
			// The server closes: its alert (if any) and then EOF.
			var chunk [512]byte
			_ = raw.SetReadDeadline(time.Now().Add(ioTimeout))
			for {
				_, err := raw.Read(chunk[:])
				if err != nil {
					if ne, ok := err.(net.Error); ok && ne.Timeout() {
						t.Fatal("connection still open")
					}
					break
				}
			}
			if got := srv.Stats().TLSRecordErrors - before; tc.counted && got != 1 {
				t.Fatalf("record errors %d, want 1", got)
			}
			other.sync(t, "after-"+strings.ReplaceAll(tc.name, " ", "-"))
		})
	}
}

// discard is a net.Conn that swallows writes.
type discard struct{ net.Conn }

func (discard) Write(b []byte) (int, error) { return len(b), nil }

// sealOnly makes the client seal s into one record, which it returns
// instead of sending: the capture under the client forwards nothing while
// it runs.
func sealOnly(t *testing.T, cp *capture, r *rawConn, s string) []byte {
	t.Helper()
	cp.mu.Lock()
	real := cp.Conn
	cp.Conn = discard{}
	cp.mu.Unlock()
	if _, err := r.conn.Write([]byte(s)); err != nil {
		t.Fatal(err)
	}
	cp.mu.Lock()
	cp.Conn = real
	rec := cp.writes[len(cp.writes)-1]
	cp.mu.Unlock()
	return rec
}

// TestLeanTLSOpenSSL: openssl s_client over STARTTLS, one run per TLS 1.3
// suite, with a KeyUpdate that requests ours ('K') before SASL PLAIN and
// one that does not ('k') before the stream restart.
func TestLeanTLSOpenSSL(t *testing.T) {
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Skip("openssl not installed")
	}
	cfg := leanConfig(t)
	srv := startServer(t, cfg, "erin")
	plain := base64.StdEncoding.EncodeToString([]byte("\x00erin\x00" + testPassword))
	for _, suite := range []string{"TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256"} {
		t.Run(suite, func(t *testing.T) {
			before := srv.Stats()
			ctx, cancel := context.WithTimeout(context.Background(), 3*ioTimeout)
			defer cancel()
			cmd := exec.CommandContext(ctx, "openssl", "s_client", "-connect", srv.Addr().String(),
				"-starttls", "xmpp", "-xmpphost", "localhost", "-tls1_3", "-ciphersuites", suite,
				"-CAfile", filepath.Join(cfg.DataDir, "dev-cert.pem"))
			stdin, _ := cmd.StdinPipe()
			// s_client reports KEYUPDATE on stderr, the session on stdout.
			pr, pw := io.Pipe()
			cmd.Stdout, cmd.Stderr = pw, pw
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait(); _ = pw.Close() }()
			out := &lineReader{r: bufio.NewReader(pr)}
			out.until(t, "Cipher is "+suite)
			steps := []struct{ send, want string }{
				{clientHeader + "\n", "</stream:features>"},
				{"K\n", "KEYUPDATE"},
				{`<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>` + plain + "</auth>\n", "<success"},
				{"k\n", "KEYUPDATE"},
				{clientHeader + "\n", "urn:ietf:params:xml:ns:xmpp-bind"},
				{"<iq type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>\n", "</jid>"},
				{"<iq type='get' id='p1'><ping xmlns='urn:xmpp:ping'/></iq>\n", "id='p1'"},
			}
			for _, s := range steps {
				if _, err := io.WriteString(stdin, s.send); err != nil {
					t.Fatal(err)
				}
				out.until(t, s.want)
			}
			after := srv.Stats()
			if after.TLSLean-before.TLSLean != 1 || after.TLSRecordErrors != before.TLSRecordErrors {
				t.Fatalf("lean %d, record errors %d", after.TLSLean-before.TLSLean, after.TLSRecordErrors-before.TLSRecordErrors)
			}
		})
	}
}

// lineReader reads a child's output until a marker, bounded in time.
type lineReader struct {
	r   *bufio.Reader
	got strings.Builder
	ch  chan string
}

func (l *lineReader) until(t *testing.T, want string) {
	t.Helper()
	if l.ch == nil {
		l.ch = make(chan string, 64)
		go func() {
			defer close(l.ch)
			for {
				b := make([]byte, 4096)
				n, err := l.r.Read(b)
				if n > 0 {
					l.ch <- string(b[:n])
				}
				if err != nil {
					return
				}
			}
		}()
	}
	deadline := time.After(ioTimeout)
	for !strings.Contains(l.got.String(), want) {
		select {
		case s, ok := <-l.ch:
			if !ok {
				t.Fatalf("output ended before %q: %q", want, l.got.String())
			}
			l.got.WriteString(s)
		case <-deadline:
			t.Fatalf("no %q in %q", want, l.got.String())
		}
	}
	rest := l.got.String()
	rest = rest[strings.Index(rest, want)+len(want):]
	l.got.Reset()
	l.got.WriteString(rest)
}

// pythonLogin is a client written with Python's ssl module: STARTTLS,
// TLS 1.3, SASL PLAIN, bind, a ping; it prints the suite.
const pythonLogin = `
import socket, ssl, sys, base64
host, port, ca, pw = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
hdr = b"<?xml version='1.0'?><stream:stream to='localhost' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>"
def until(s, want):
    buf = b""
    while want not in buf:
        d = s.recv(4096)
        if not d:
            sys.exit("closed before %r: %r" % (want, buf))
        buf += d
    return buf
s = socket.create_connection((host, port), timeout=10)
s.sendall(hdr); until(s, b"</stream:features>")
s.sendall(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>"); until(s, b"<proceed")
ctx = ssl.create_default_context(cafile=ca)
ctx.minimum_version = ssl.TLSVersion.TLSv1_3
t = ctx.wrap_socket(s, server_hostname="localhost")
t.sendall(hdr); until(t, b"</stream:features>")
t.sendall(b"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>" + base64.b64encode(b"\0frank\0" + pw.encode()) + b"</auth>")
until(t, b"<success")
t.sendall(hdr); until(t, b"</stream:features>")
t.sendall(b"<iq type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>"); until(t, b"</jid>")
t.sendall(b"<iq type='get' id='p1'><ping xmlns='urn:xmpp:ping'/></iq>"); until(t, b"id='p1'")
t.sendall(b"</stream:stream>"); until(t, b"</stream:stream>")
print(t.cipher()[0])
t.unwrap().close()
`

// TestLeanTLSPython: Python's ssl module (OpenSSL underneath, session
// tickets offered) logs in over the lean layer and closes with
// close_notify, which the server answers.
func TestLeanTLSPython(t *testing.T) {
	if _, err := exec.LookPath("python3"); err != nil {
		t.Skip("python3 not installed")
	}
	cfg := leanConfig(t)
	srv := startServer(t, cfg, "frank")
	_, port, _ := net.SplitHostPort(srv.Addr().String())
	ctx, cancel := context.WithTimeout(context.Background(), 3*ioTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, "python3", "-c", pythonLogin, "127.0.0.1", port,
		filepath.Join(cfg.DataDir, "dev-cert.pem"), testPassword).CombinedOutput()
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if !strings.HasPrefix(string(out), "TLS_") {
		t.Fatalf("output %q", out)
	}
	st := srv.Stats()
	if st.TLSLean != 1 || st.TLSRecordErrors != 0 {
		t.Fatalf("lean %d, record errors %d (%s)", st.TLSLean, st.TLSRecordErrors, out)
	}
}

// keyLogLines collects a client's key log.
type keyLogLines struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (k *keyLogLines) Write(b []byte) (int, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.buf.Write(b)
}

// TestLeanTLSSecretsNotLogged: with the log at debug level, a login, a
// failed record and a close put no traffic secret (as the client's own key
// log shows them) into the server's log, in hex of either case or base64.
func TestLeanTLSSecretsNotLogged(t *testing.T) {
	cfg := leanConfig(t)
	var logBuf syncBuffer
	core := zapcore.NewCore(zapcore.NewJSONEncoder(zap.NewDevelopmentEncoderConfig()), zapcore.AddSync(&logBuf), zap.DebugLevel)
	srv := startServerLog(t, cfg, zap.New(core), "gina")
	var kl keyLogLines
	c := clientTLS(t, cfg)
	c.KeyLogWriter = &kl
	r := tlsRaw(t, srv, c)
	r.scramLogin("gina", testPassword, "logs")
	r.sync(t, "s1")
	// A broken record (closes the connection, logged at debug).
	r2 := tlsRaw(t, srv, c)
	raw := r2.conn.(*tls.Conn).NetConn()
	_, _ = raw.Write([]byte{23, 3, 3, 0, 17, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17})
	r2.closed()
	r.send("</stream:stream>")
	r.closed()
	if srv.Stats().TLSRecordErrors != 1 {
		t.Fatalf("record errors %d", srv.Stats().TLSRecordErrors)
	}
	logs := logBuf.String()
	if !strings.Contains(logs, "tls record layer closed the connection") {
		t.Fatalf("the debug log has no record-layer line: %s", logs)
	}
	secrets := 0
	for line := range strings.Lines(kl.buf.String()) {
		f := strings.Fields(line)
		if len(f) != 3 {
			continue
		}
		secrets++
		sec, _ := hex.DecodeString(f[2])
		for _, form := range []string{f[2], strings.ToUpper(f[2]), base64.StdEncoding.EncodeToString(sec), f[2][:16]} {
			if strings.Contains(logs, form) {
				t.Fatalf("%s (%s) in the log", f[0], form)
			}
		}
	}
	if secrets < 8 { // two handshakes, four or five secrets each
		t.Fatalf("only %d secrets in the client's key log", secrets)
	}
}

// syncBuffer is a bytes.Buffer safe for the loops' concurrent writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startServerLog is startServer with the given logger.
func startServerLog(t *testing.T, cfg config.Config, log *zap.Logger, users ...string) *server.Server {
	t.Helper()
	srv, _ := startServerOpts(t, cfg, serverOpts{log: log}, users...)
	return srv
}

// TestLeanTLSIdleRelease: a lean session silent for tls.idle_release drops
// its AEADs (cooled), and its next records in both directions expand them
// again from the traffic secrets; the stream goes on unchanged.
func TestLeanTLSIdleRelease(t *testing.T) {
	cfg := leanConfig(t)
	cfg.TLS.IdleRelease = 20 * time.Millisecond
	srv := startServer(t, cfg, "hana")
	r := tlsRaw(t, srv, clientTLS(t, cfg))
	r.scramLogin("hana", testPassword, "idle")
	for i := range 2 {
		cooled := srv.Stats().TLSCooled
		if !waitFor(ioTimeout, func() bool { return srv.Stats().TLSCooled > cooled }) {
			t.Fatal("the session never went cold")
		}
		rewarmed := srv.Stats().TLSRewarmed
		r.sync(t, "cold"+string(rune('0'+i)))
		if got := srv.Stats().TLSRewarmed - rewarmed; got != 2 {
			t.Fatalf("round %d: %d directions expanded again, want 2", i, got)
		}
	}
	if n := srv.Stats().TLSRecordErrors; n != 0 {
		t.Fatalf("%d record errors", n)
	}
}

// TestLeanTLSOff: with tls.lean off, TLS 1.3 stays on crypto/tls, with
// session tickets as before, and logs in with SCRAM-SHA-256-PLUS.
func TestLeanTLSOff(t *testing.T) {
	cfg := tlsConfig(t)
	cfg.TLS.Lean = false
	srv := startServer(t, cfg, "ivan")
	s := loginTLS(t, srv, clientTLS(t, cfg), "ivan", msasl.ScramSha256Plus)
	if v := s.ConnectionState().Version; v != tls.VersionTLS13 {
		t.Fatalf("TLS %x", v)
	}
	if st := srv.Stats(); st.TLSLean != 0 || st.TLSStock != 1 {
		t.Fatalf("lean %d, stock %d", st.TLSLean, st.TLSStock)
	}
}

// BenchmarkRouteMessageTLS is BenchmarkRouteMessage over STARTTLS, with
// the lean record layer (hot: the sessions never pause for
// tls.idle_release) and with crypto/tls. allocs/op counts the whole
// process, the clients' crypto/tls included.
func BenchmarkRouteMessageTLS(b *testing.B) {
	for _, lean := range []bool{true, false} {
		name := "stock"
		if lean {
			name = "lean"
		}
		b.Run(name, func(b *testing.B) {
			cfg := testConfig(b)
			cfg.C2S.AllowPlaintext = false
			cfg.TLS.Lean = lean
			srv := startServer(b, cfg, "alice", "bob")
			pem, err := os.ReadFile(filepath.Join(cfg.DataDir, "dev-cert.pem"))
			if err != nil {
				b.Fatal(err)
			}
			pool := x509.NewCertPool()
			pool.AppendCertsFromPEM(pem)
			tc := &tls.Config{ServerName: "localhost", RootCAs: pool}
			dial := func() *rawConn {
				r := dialRaw(b, srv)
				r.open()
				r.send(`<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>`)
				r.expect(b, "<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
				c := tls.Client(r.conn, tc)
				if err := c.Handshake(); err != nil {
					b.Fatal(err)
				}
				r.conn = c
				return r
			}
			alice, bob := dial(), dial()
			alice.scramLogin("alice", testPassword, "a")
			bobJID := bob.scramLogin("bob", testPassword, "b")
			bob.send(`<presence/>`)
			bob.expect(b, "<presence from='"+bobJID+"'/>")
			msg := []byte(`<message type='chat' to='` + bobJID + `'><body>hi</body></message>`)
			end := []byte(`</message>`)
			buf := make([]byte, 64<<10)
			var pending []byte
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				if _, err := alice.conn.Write(msg); err != nil {
					b.Fatal(err)
				}
				_ = bob.conn.SetReadDeadline(time.Now().Add(ioTimeout))
				for !bytes.Contains(pending, end) {
					n, err := bob.conn.Read(buf)
					if err != nil && err != io.EOF {
						b.Fatal(err)
					}
					pending = append(pending, buf[:n]...)
				}
				i := bytes.Index(pending, end) + len(end)
				pending = append(pending[:0], pending[i:]...)
			}
			b.StopTimer()
			if st := srv.Stats(); lean && st.TLSLean != 2 {
				b.Fatalf("lean sessions %d", st.TLSLean)
			}
		})
	}
}

// BenchmarkTLSReconnect measures a reconnecting client's direct TLS
// handshake and first stream header, client and server CPU together (one
// process), the client keeping a session cache: lean-resumed (the
// defaults: the lean layer and tls.session_tickets) resumes each time,
// lean-full (tickets off) is a full handshake each time, stock-resumed
// resumes on crypto/tls's own record layer.
func BenchmarkTLSReconnect(b *testing.B) {
	for _, mode := range []struct {
		name          string
		lean, tickets bool
	}{{"lean-resumed", true, true}, {"lean-full", true, false}, {"stock-resumed", false, true}} {
		b.Run(mode.name, func(b *testing.B) {
			cfg := testConfig(b)
			cfg.C2S.DirectTLSListen = "127.0.0.1:0"
			cfg.TLS.Lean, cfg.TLS.SessionTickets = mode.lean, mode.tickets
			srv := startServer(b, cfg)
			pem, err := os.ReadFile(filepath.Join(cfg.DataDir, "dev-cert.pem"))
			if err != nil {
				b.Fatal(err)
			}
			pool := x509.NewCertPool()
			pool.AppendCertsFromPEM(pem)
			tc := &tls.Config{ServerName: "localhost", RootCAs: pool, NextProtos: []string{"xmpp-client"},
				ClientSessionCache: tls.NewLRUClientSessionCache(4)}
			var resumed int
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				conn, err := net.DialTimeout("tcp", srv.DirectTLSAddr().String(), ioTimeout)
				if err != nil {
					b.Fatal(err)
				}
				c := tls.Client(conn, tc)
				_ = c.SetDeadline(time.Now().Add(ioTimeout))
				r := &rawConn{t: b, conn: c}
				r.open() // the header, and features: the ticket (if any) arrives before them
				if c.ConnectionState().DidResume {
					resumed++
				}
				_ = conn.Close()
			}
			b.StopTimer()
			b.ReportMetric(float64(resumed)/float64(b.N), "resumed/op")
		})
	}
}

// TestLeanTLSKeyUpdateRecords: with tls.key_update_records = 3 the server
// sends a KeyUpdate after every third application record and moves to the
// next key; Go's client follows (it would fail to open the next record
// otherwise), so the stream goes on through several updates.
func TestLeanTLSKeyUpdateRecords(t *testing.T) {
	cfg := leanConfig(t)
	cfg.TLS.KeyUpdateRecords = 3
	srv := startServer(t, cfg, "kim")
	r := tlsRaw(t, srv, clientTLS(t, cfg))
	r.scramLogin("kim", testPassword, "keys")
	for i := range 6 {
		r.sync(t, "k"+string(rune('0'+i)))
	}
	st := srv.Stats()
	if st.TLSKeyUpdates < 3 || st.TLSRecordErrors != 0 {
		t.Fatalf("%d key updates, %d record errors; want at least 3 and none", st.TLSKeyUpdates, st.TLSRecordErrors)
	}
}

// TestLeanTLSFIPS: in FIPS 140-3 mode (GODEBUG=fips140=on), which refuses
// AES-GCM nonces the caller chooses, TLS 1.3 stays on crypto/tls even with
// tls.lean on, and logs in as usual. The mode is fixed at process start, so
// the test runs itself again in a child process with it on.
func TestLeanTLSFIPS(t *testing.T) {
	if os.Getenv("KRILL_TEST_FIPS_CHILD") == "" {
		cmd := exec.Command(os.Args[0], "-test.run=^TestLeanTLSFIPS$", "-test.count=1", "-test.v")
		cmd.Env = append(os.Environ(), "KRILL_TEST_FIPS_CHILD=1", "GODEBUG=fips140=on")
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(out), "fips child: stock layer") {
			t.Fatalf("child: %v\n%s", err, out)
		}
		return
	}
	if !fips140.Enabled() {
		t.Fatal("GODEBUG=fips140=on did not enable FIPS 140-3 mode")
	}
	cfg := leanConfig(t)
	srv := startServer(t, cfg, "fay")
	s := loginTLS(t, srv, clientTLS(t, cfg), "fay", msasl.ScramSha256Plus)
	if v := s.ConnectionState().Version; v != tls.VersionTLS13 {
		t.Fatalf("TLS %x", v)
	}
	if st := srv.Stats(); st.TLSLean != 0 || st.TLSStock != 1 {
		t.Fatalf("lean %d, stock %d; want the stock layer in FIPS mode", st.TLSLean, st.TLSStock)
	}
	t.Log("fips child: stock layer")
}
