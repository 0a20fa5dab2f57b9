package server_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	msasl "mellium.im/sasl"

	"github.com/krill-xmpp/krill/sasl"
)

// countingCache is Go's LRU session cache counting the tickets it is
// given.
type countingCache struct {
	tls.ClientSessionCache
	puts atomic.Int32
}

func (c *countingCache) Put(key string, cs *tls.ClientSessionState) {
	if cs != nil {
		c.puts.Add(1)
	}
	c.ClientSessionCache.Put(key, cs)
}

func newCountingCache() *countingCache {
	return &countingCache{ClientSessionCache: tls.NewLRUClientSessionCache(8)}
}

// resumed reports whether r's TLS session was resumed.
func resumed(r *rawConn) bool { return r.conn.(*tls.Conn).ConnectionState().DidResume }

// TestTLSResumption (tls.session_tickets): Go's client with a session
// cache gets a ticket at its first handshake and resumes with it at the
// next, over STARTTLS and direct TLS (one key ring: a STARTTLS ticket
// resumes on direct TLS), on the lean record layer, whose first record
// follows the ticket crypto/tls sealed under the same key (a wrong
// sequence number would fail the client's first read). On resumed
// connections SCRAM-SHA-256-PLUS (tls-exporter, mellium), FAST
// HT-SHA-256-EXPR (tls-exporter: differs from the first connection's) and
// HT-SHA-256-ENDP (tls-server-end-point: the certificate of the session
// the ticket came from) log in.
func TestTLSResumption(t *testing.T) {
	cfg := fastConfig(t)
	srv, _, clk := startFAST(t, cfg, "alice")
	tc := clientTLS(t, cfg)
	cache := newCountingCache()
	tc.ClientSessionCache = cache

	// A full handshake and a SCRAM-SHA-256-PLUS login asking for an
	// -EXPR token.
	first := fastOpen(t, srv, tc)
	if resumed(first) {
		t.Fatal("first handshake resumed")
	}
	cb1 := cbData(t, first, sasl.HTSHA256Expr)
	c := first.sasl2Scram(t, msasl.ScramSha256Plus, "alice", testPassword, `<user-agent id='`+uaA+`'/><request-token xmlns='urn:xmpp:fast:0' mechanism='`+sasl.HTSHA256Expr+`'/>`)
	got := first.expect(t, `<success xmlns='urn:xmpp:sasl:2'><additional-data>{*}</additional-data><authorization-identifier>alice@localhost</authorization-identifier>`+
		`<token xmlns='urn:xmpp:fast:0' expiry='`+expiryAt(clk.Now().Add(time.Hour))+`' token='{*}'/></success>`+boundFeatures)
	verify(t, c, got)
	token := tokenRe.FindStringSubmatch(got)[2]
	if n := cache.puts.Load(); n != 1 {
		t.Fatalf("%d tickets after the first handshake, want 1", n)
	}

	before := srv.Stats()
	// A token login with -EXPR on a resumed connection.
	r := fastOpen(t, srv, tc)
	if !resumed(r) {
		t.Fatal("second handshake not resumed")
	}
	cb := cbData(t, r, sasl.HTSHA256Expr)
	if string(cb) == string(cb1) {
		t.Fatal("tls-exporter of the resumed connection equals the first one's")
	}
	r.fastAuth(sasl.HTSHA256Expr, "alice", token, uaA, cb, ` count='1'`, "")
	r.expect(t, fastSuccess("alice", token, cb, `</authorization-identifier></success>`+boundFeatures))
	// The first connection's binding does not log in on the resumed one.
	r2 := fastOpen(t, srv, tc)
	if !resumed(r2) {
		t.Fatal("third handshake not resumed")
	}
	r2.fastAuth(sasl.HTSHA256Expr, "alice", token, uaA, cb1, ` count='2'`, "")
	r2.expect(t, fastRefused)

	// SCRAM-SHA-256-PLUS on a resumed connection, asking for an -ENDP
	// token, then -ENDP on another resumed one, over direct TLS.
	r = fastOpen(t, srv, tc)
	if !resumed(r) {
		t.Fatal("fourth handshake not resumed")
	}
	c = r.sasl2Scram(t, msasl.ScramSha256Plus, "alice", testPassword, `<user-agent id='`+uaB+`'/><request-token xmlns='urn:xmpp:fast:0' mechanism='`+sasl.HTSHA256Endp+`'/>`)
	got = r.expect(t, `<success xmlns='urn:xmpp:sasl:2'><additional-data>{*}</additional-data><authorization-identifier>alice@localhost</authorization-identifier>`+
		`<token xmlns='urn:xmpp:fast:0' expiry='{*}' token='{*}'/></success>`+boundFeatures)
	verify(t, c, got)
	endp := tokenRe.FindStringSubmatch(got)[2]

	d := dialDirect(t, srv)
	dc := tc.Clone()
	dc.NextProtos = []string{"xmpp-client"}
	d.upgrade(dc)
	if !resumed(d) {
		t.Fatal("direct TLS did not resume a STARTTLS ticket")
	}
	d.open()
	cb = cbData(t, d, sasl.HTSHA256Endp)
	d.fastAuth(sasl.HTSHA256Endp, "alice", endp, uaB, cb, ` count='1'`, "")
	d.expect(t, fastSuccess("alice", endp, cb, `</authorization-identifier></success>`+boundFeatures))

	after := srv.Stats()
	if lean, stock := after.TLSLean-before.TLSLean, after.TLSStock-before.TLSStock; lean != 4 || stock != 0 {
		t.Fatalf("lean %d, stock %d; want 4 lean", lean, stock)
	}
	if n := after.TLSResumed - before.TLSResumed; n != 4 {
		t.Fatalf("%d resumed handshakes counted, want 4", n)
	}
	if n := after.TLSRecordErrors; n != 0 {
		t.Fatalf("%d record errors", n)
	}
}

// TestTLSResumptionStock: with tls.lean off, crypto/tls carries the
// session, tickets work the same, and -ENDP binds the certificate on a
// resumed connection. TLS 1.2 resumes too.
func TestTLSResumptionStock(t *testing.T) {
	for _, version := range []uint16{tls.VersionTLS13, tls.VersionTLS12} {
		t.Run(tls.VersionName(version), func(t *testing.T) {
			cfg := fastConfig(t)
			cfg.TLS.Lean = false
			srv, _, clk := startFAST(t, cfg, "alice")
			tc := clientTLS(t, cfg)
			tc.MaxVersion = version
			tc.ClientSessionCache = tls.NewLRUClientSessionCache(4)
			r := fastOpen(t, srv, tc)
			got := r.exchange(t, sasl2Open+`PLAIN'><initial-response>`+b64([]byte("\x00alice\x00"+testPassword))+`</initial-response><user-agent id='`+uaB+`'/>`+
				`<request-token xmlns='urn:xmpp:fast:0' mechanism='`+sasl.HTSHA256Endp+`'/></authenticate>`,
				`<success xmlns='urn:xmpp:sasl:2'><authorization-identifier>alice@localhost</authorization-identifier><token xmlns='urn:xmpp:fast:0' expiry='`+
					expiryAt(clk.Now().Add(time.Hour))+`' token='{*}'/></success>`+boundFeatures)
			token := tokenRe.FindStringSubmatch(got)[2]
			r = fastOpen(t, srv, tc)
			if !resumed(r) {
				t.Fatal("not resumed")
			}
			cb := cbData(t, r, sasl.HTSHA256Endp)
			r.fastAuth(sasl.HTSHA256Endp, "alice", token, uaB, cb, "", "")
			r.expect(t, fastSuccess("alice", token, cb, `</authorization-identifier></success>`+boundFeatures))
			if st := srv.Stats(); st.TLSLean != 0 {
				t.Fatalf("lean %d with tls.lean off", st.TLSLean)
			}
		})
	}
}

// TestTLSResumptionOff: with tls.session_tickets off no ticket is sent and
// every handshake is a full one.
func TestTLSResumptionOff(t *testing.T) {
	cfg := leanConfig(t)
	cfg.TLS.SessionTickets = false
	srv := startServer(t, cfg, "alice")
	tc := clientTLS(t, cfg)
	cache := newCountingCache()
	tc.ClientSessionCache = cache
	for i := range 2 {
		r := tlsRaw(t, srv, tc)
		r.open()
		if resumed(r) {
			t.Fatalf("handshake %d resumed", i)
		}
	}
	if n := cache.puts.Load(); n != 0 {
		t.Fatalf("%d tickets sent with tls.session_tickets off", n)
	}
	if st := srv.Stats(); st.TLSLean != 2 {
		t.Fatalf("lean %d, want 2", st.TLSLean)
	}
}

// TestTLSResumptionAfterReload: a ticket issued under the previous
// certificate does not resume after a reload (its tls-server-end-point
// would name a certificate the server no longer uses): the client gets a
// full handshake with the new certificate, and -ENDP binds to it.
func TestTLSResumptionAfterReload(t *testing.T) {
	cfg := fastConfig(t)
	srv, _, clk := startFAST(t, cfg, "alice")
	certFile := filepath.Join(cfg.DataDir, "dev-cert.pem")
	oldPEM, err := os.ReadFile(certFile)
	if err != nil {
		t.Fatal(err)
	}
	tc := clientTLS(t, cfg)
	tc.ClientSessionCache = tls.NewLRUClientSessionCache(4)
	r := fastOpen(t, srv, tc)
	got := r.exchange(t, sasl2Open+`PLAIN'><initial-response>`+b64([]byte("\x00alice\x00"+testPassword))+`</initial-response><user-agent id='`+uaB+`'/>`+
		`<request-token xmlns='urn:xmpp:fast:0' mechanism='`+sasl.HTSHA256Endp+`'/></authenticate>`,
		`<success xmlns='urn:xmpp:sasl:2'><authorization-identifier>alice@localhost</authorization-identifier><token xmlns='urn:xmpp:fast:0' expiry='`+
			expiryAt(clk.Now().Add(time.Hour))+`' token='{*}'/></success>`+boundFeatures)
	token := tokenRe.FindStringSubmatch(got)[2]

	// A new certificate, generated by another server on the data
	// directory (as TestCertificateReload), and reloaded.
	if err := os.Remove(certFile); err != nil {
		t.Fatal(err)
	}
	other := cfg
	other.C2S.Listen, other.C2S.DirectTLSListen = "127.0.0.1:0", ""
	_ = startServer(t, other)
	if err := srv.ReloadCertificates(); err != nil {
		t.Fatal(err)
	}
	newPEM, err := os.ReadFile(certFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(oldPEM)
	pool.AppendCertsFromPEM(newPEM)
	tc.RootCAs = pool

	r = fastOpen(t, srv, tc)
	if resumed(r) {
		t.Fatal("a ticket of the previous certificate resumed")
	}
	cb := cbData(t, r, sasl.HTSHA256Endp)
	r.fastAuth(sasl.HTSHA256Endp, "alice", token, uaB, cb, "", "")
	r.expect(t, fastSuccess("alice", token, cb, `</authorization-identifier></success>`+boundFeatures))
	// The ticket of that handshake resumes under the new certificate.
	r = fastOpen(t, srv, tc)
	if !resumed(r) {
		t.Fatal("not resumed under the new certificate")
	}
	cb = cbData(t, r, sasl.HTSHA256Endp)
	r.fastAuth(sasl.HTSHA256Endp, "alice", token, uaB, cb, "", "")
	r.expect(t, fastSuccess("alice", token, cb, `</authorization-identifier></success>`+boundFeatures))
}

// pythonResume is a client written with Python's ssl module (OpenSSL):
// a first connection over STARTTLS reads the stream features (and with
// them the server's ticket) and closes; a second one offers that session,
// then logs in with SASL PLAIN, binds and pings over it. It prints whether
// the session was reused.
const pythonResume = `
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
ctx = ssl.create_default_context(cafile=ca)
ctx.minimum_version = ssl.TLSVersion.TLSv1_3
def connect(session):
    s = socket.create_connection((host, port), timeout=10)
    s.sendall(hdr); until(s, b"</stream:features>")
    s.sendall(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>"); until(s, b"<proceed")
    t = ctx.wrap_socket(s, server_hostname="localhost", session=session)
    t.sendall(hdr); until(t, b"</stream:features>")
    return t
first = connect(None)
session = first.session
first.sendall(b"</stream:stream>"); until(first, b"</stream:stream>")
first.close()
t = connect(session)
t.sendall(b"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>" + base64.b64encode(b"\0frank\0" + pw.encode()) + b"</auth>")
until(t, b"<success")
t.sendall(hdr); until(t, b"</stream:features>")
t.sendall(b"<iq type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>"); until(t, b"</jid>")
t.sendall(b"<iq type='get' id='p1'><ping xmlns='urn:xmpp:ping'/></iq>"); until(t, b"id='p1'")
print("reused" if t.session_reused else "not reused")
t.close()
`

// TestTLSResumptionPython: OpenSSL's client (through Python's ssl module)
// resumes a session over the lean layer and logs in on it: the lean
// layer's records after crypto/tls's ticket open in OpenSSL too.
func TestTLSResumptionPython(t *testing.T) {
	if _, err := exec.LookPath("python3"); err != nil {
		t.Skip("python3 not installed")
	}
	cfg := leanConfig(t)
	srv := startServer(t, cfg, "frank")
	_, port, _ := net.SplitHostPort(srv.Addr().String())
	ctx, cancel := context.WithTimeout(context.Background(), 3*ioTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, "python3", "-c", pythonResume, "127.0.0.1", port,
		filepath.Join(cfg.DataDir, "dev-cert.pem"), testPassword).CombinedOutput()
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if strings.TrimSpace(string(out)) != "reused" {
		t.Fatalf("output %q", out)
	}
	st := srv.Stats()
	if st.TLSLean != 2 || st.TLSResumed != 1 || st.TLSRecordErrors != 0 {
		t.Fatalf("lean %d, resumed %d, record errors %d (%s)", st.TLSLean, st.TLSResumed, st.TLSRecordErrors, out)
	}
}
