package server_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha1"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	msasl "mellium.im/sasl"

	"github.com/krill-xmpp/krill/config"
	"github.com/krill-xmpp/krill/server"
	"github.com/krill-xmpp/krill/storage"
)

// devCA is a development certificate authority of one test instance and
// the certificate it issued for the instance's domain.
type devCA struct {
	caFile, certFile, keyFile string
	cert                      tls.Certificate // the domain's, with its key
	ca                        *x509.Certificate
	caKey                     *ecdsa.PrivateKey
}

// newDevCA writes a CA and a certificate for domain (and the hosted
// domains in extra: its SANs) signed by it, so that validation between two
// instances is real: a chain to a trusted root and a DNS-ID.
func newDevCA(t testing.TB, domain string, extra ...string) devCA {
	t.Helper()
	dir := t.TempDir()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: domain + " test CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: domain},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour), DNSNames: append([]string{domain}, extra...),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, _ := x509.MarshalPKCS8PrivateKey(key)
	d := devCA{caFile: filepath.Join(dir, "ca.pem"), certFile: filepath.Join(dir, "cert.pem"), keyFile: filepath.Join(dir, "key.pem")}
	write := func(path, typ string, b []byte) {
		if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: b}), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(d.caFile, "CERTIFICATE", caDER)
	write(d.certFile, "CERTIFICATE", der)
	write(d.keyFile, "PRIVATE KEY", keyDER)
	d.cert = tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
	d.ca, d.caKey = ca, caKey
	return d
}

// issue returns a certificate for domain signed by the CA: a third
// domain's, trusted wherever this CA is.
func (d devCA) issue(t testing.TB, domain string) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(now.UnixNano()), Subject: pkix.Name{CommonName: domain},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour), DNSNames: []string{domain},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, d.ca, &key.PublicKey, d.caKey)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// freePort returns host:port with a port that was free a moment ago.
func freePort(t testing.TB, ip string) string {
	t.Helper()
	l, err := net.Listen("tcp", ip+":0")
	if err != nil {
		t.Skipf("cannot listen on %s: %v", ip, err)
	}
	defer l.Close()
	return l.Addr().String()
}

// freePorts returns k host:port addresses on ip, distinct: their
// listeners are open together before all close. A server listening on
// ip:0 next to a port taken with freePort could be handed that same port
// back by the kernel.
func freePorts(t testing.TB, ip string, k int) []string {
	t.Helper()
	out := make([]string, 0, k)
	for range k {
		l, err := net.Listen("tcp", ip+":0")
		if err != nil {
			t.Skipf("cannot listen on %s: %v", ip, err)
		}
		defer l.Close()
		out = append(out, l.Addr().String())
	}
	return out
}

// fedNode is one instance of a two-domain federation test.
type fedNode struct {
	domain, ip, s2s string
	c2s             string // the c2s listener, distinct from s2s
	ca              devCA
	cfg             config.Config
	srv             *server.Server
	store           *storage.SQL
}

// fedPair starts a.test on 127.0.0.2 and b.test on 127.0.0.3, routed to
// each other with [s2s.routes], their hosted domains too (conference.,
// upload. and push.<domain>: MUC, upload, a component). With trust, each
// trusts the other's CA (SASL EXTERNAL), whose certificates name those
// hosted domains; without, each trusts only its own (dialback).
func fedPair(t *testing.T, trust bool, tweak func(a, b *config.Config)) (a, b *fedNode) {
	t.Helper()
	a = &fedNode{domain: "a.test", ip: "127.0.0.2"}
	b = &fedNode{domain: "b.test", ip: "127.0.0.3"}
	for _, n := range []*fedNode{a, b} {
		n.ca = newDevCA(t, n.domain, "conference."+n.domain, "push."+n.domain, "upload."+n.domain)
		ports := freePorts(t, n.ip, 2)
		n.s2s, n.c2s = ports[0], ports[1]
	}
	for _, p := range [][2]*fedNode{{a, b}, {b, a}} {
		n, peer := p[0], p[1]
		cfg := testConfig(t)
		cfg.Domain = n.domain
		cfg.C2S.Listen = n.c2s
		cfg.TLS.Cert, cfg.TLS.Key = n.ca.certFile, n.ca.keyFile
		cfg.S2S.Listen = n.s2s
		cfg.S2S.Routes = map[string]string{peer.domain: peer.s2s, "conference." + peer.domain: peer.s2s, "push." + peer.domain: peer.s2s, "upload." + peer.domain: peer.s2s}
		cfg.S2S.CAFile = n.ca.caFile
		if trust {
			cfg.S2S.CAFile = peer.ca.caFile
		}
		n.cfg = cfg
	}
	if tweak != nil {
		tweak(&a.cfg, &b.cfg)
	}
	// KRILL_TEST_LOG=1 logs both instances at debug, each named.
	var la, lb *zap.Logger
	if os.Getenv("KRILL_TEST_LOG") != "" {
		lg, _ := zap.NewDevelopment()
		la, lb = lg.With(zap.String("node", "a")), lg.With(zap.String("node", "b"))
	}
	a.srv, a.store = startServerOpts(t, a.cfg, serverOpts{log: la}, "alice")
	b.srv, b.store = startServerOpts(t, b.cfg, serverOpts{log: lb}, "bob")
	return a, b
}

// fedLogin logs user in to n over plain c2s (allowed in tests) and binds
// resource.
func fedLogin(t *testing.T, n *fedNode, user, resource string) *rawConn {
	t.Helper()
	r := dialRaw(t, n.srv)
	header := strings.Replace(clientHeader, "to='localhost'", "to='"+n.domain+"'", 1)
	open := func() {
		r.send(header)
		r.skipUntil("</stream:features>")
	}
	open()
	c := msasl.NewClient(msasl.ScramSha256, msasl.Credentials(func() ([]byte, []byte, []byte) {
		return []byte(user), []byte(testPassword), nil
	}))
	_, first, _ := c.Step(nil)
	r.send(`<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='SCRAM-SHA-256'>` + base64.StdEncoding.EncodeToString(first) + `</auth>`)
	chal := between(r.expect(t, `<challenge xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>{*}</challenge>`), "'>", "</challenge>")
	raw, _ := base64.StdEncoding.DecodeString(chal)
	_, final, err := c.Step(raw)
	if err != nil {
		t.Fatal(err)
	}
	r.send(`<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>` + base64.StdEncoding.EncodeToString(final) + `</response>`)
	r.expect(t, `<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>{*}</success>`)
	open()
	r.send(`<iq type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>` + resource + `</resource></bind></iq>`)
	r.expect(t, `<iq type='result' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><jid>`+user+`@`+n.domain+`/`+resource+`</jid></bind></iq>`)
	return r
}

// TestS2SMessage sends a message from alice@a.test to bob@b.test and an
// answer back, over streams authenticated with SASL EXTERNAL (each side
// trusts the other's CA) and with dialback (neither does).
func TestS2SMessage(t *testing.T) {
	for _, tc := range []struct {
		name  string
		trust bool
	}{{"external", true}, {"dialback", false}} {
		t.Run(tc.name, func(t *testing.T) {
			a, b := fedPair(t, tc.trust, nil)
			alice := fedLogin(t, a, "alice", "a")
			bob := fedLogin(t, b, "bob", "b")
			bob.exchange(t, `<presence/>`, `<presence from='bob@b.test/b'/>`)
			alice.exchange(t, `<presence/>`, `<presence from='alice@a.test/a'/>`)

			alice.send(`<message type='chat' id='m1' to='bob@b.test'><body>hello</body></message>`)
			bob.expect(t, `<message type='chat' id='m1' to='bob@b.test' from='alice@a.test/a'><body>hello</body></message>`)
			bob.send(`<message type='chat' id='m2' to='alice@a.test/a'><body>hi back</body></message>`)
			alice.expect(t, `<message type='chat' id='m2' to='alice@a.test/a' from='bob@b.test/b'><body>hi back</body></message>`)

			as, bs := a.srv.S2SStats(), b.srv.S2SStats()
			if tc.trust && (as.AuthExternal != 1 || bs.AuthExternal != 1 || as.AuthDialback+bs.AuthDialback != 0) {
				t.Fatalf("want SASL EXTERNAL both ways: a %+v, b %+v", as, bs)
			}
			if !tc.trust && (as.AuthDialback != 1 || bs.AuthDialback != 1 || as.AuthExternal+bs.AuthExternal != 0) {
				t.Fatalf("want dialback both ways: a %+v, b %+v", as, bs)
			}
			if as.Outbound != 1 || bs.Outbound != 1 {
				t.Fatalf("want one outbound stream each way: a %+v, b %+v", as, bs)
			}
		})
	}
}

// TestS2SRequireValidCerts: with s2s.require_valid_certs and no trust,
// neither side may fall back to dialback; the message bounces.
func TestS2SRequireValidCerts(t *testing.T) {
	a, _ := fedPair(t, false, func(a, b *config.Config) {
		a.S2S.RequireValidCerts = true
		b.S2S.RequireValidCerts = true
	})
	alice := fedLogin(t, a, "alice", "a")
	alice.send(`<message type='chat' id='m1' to='bob@b.test'><body>hello</body></message>`)
	alice.expect(t, `<message type='error' id='m1' from='bob@b.test' to='alice@a.test/a'><error type='cancel'><remote-server-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></message>`)
}

// TestS2SUnreachable bounces stanzas for a domain nobody answers for
// (connection refused: remote-server-not-found) and for one whose server
// accepts but never speaks (remote-server-timeout, at s2s.connect_timeout).
func TestS2SUnreachable(t *testing.T) {
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	go func() {
		for {
			c, err := silent.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	refused := freePort(t, "127.0.0.1")
	cfg := testConfig(t)
	cfg.Domain = "a.test"
	cfg.S2S.ConnectTimeout = time.Second
	cfg.S2S.Routes = map[string]string{"nowhere.test": refused, "silent.test": silent.Addr().String()}
	n := &fedNode{domain: "a.test", srv: startServer(t, cfg, "alice")}
	alice := fedLogin(t, n, "alice", "a")
	alice.send(`<message type='chat' id='m1' to='bob@nowhere.test'><body>x</body></message>`)
	alice.expect(t, `<message type='error' id='m1' from='bob@nowhere.test' to='alice@a.test/a'><error type='cancel'><remote-server-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></message>`)
	alice.send(`<iq type='get' id='q1' to='silent.test'><ping xmlns='urn:xmpp:ping'/></iq>`)
	alice.expect(t, `<iq type='error' id='q1' from='silent.test' to='alice@a.test/a'><error type='wait'><remote-server-timeout xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>`)
	// An error is never bounced: nothing comes back for it.
	alice.send(`<message type='error' id='m2' to='bob@nowhere.test'/>`)
	fedSync(t, alice, "a.test", "p1")
}

// s2sClient is a test playing a remote server towards one Krill instance.
type s2sClient struct {
	*rawConn
}

// dialS2S opens a stream from domain to n's s2s listener, STARTTLS with
// cert (nil: none), and returns it with the post-TLS features read.
func dialS2S(t *testing.T, n *fedNode, from string, cert *tls.Certificate) (*s2sClient, string) {
	t.Helper()
	nc, err := net.DialTimeout("tcp", n.s2s, ioTimeout)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = nc.Close() })
	r := &rawConn{t: t, conn: nc}
	header := `<?xml version='1.0'?><stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams' xmlns:db='jabber:server:dialback' from='` + from + `' to='` + n.domain + `' version='1.0'>`
	r.send(header)
	r.expect(t, `<?xml version='1.0'?><stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams' xmlns:db='jabber:server:dialback' from='`+n.domain+`' to='`+from+`' id='{*}' version='1.0'><stream:features><starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required/></starttls></stream:features>`)
	r.exchange(t, `<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>`, `<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>`)
	cfg := &tls.Config{ServerName: n.domain, InsecureSkipVerify: true}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	tc := tls.Client(nc, cfg)
	_ = tc.SetDeadline(time.Now().Add(ioTimeout))
	if err := tc.Handshake(); err != nil {
		t.Fatal(err)
	}
	r.conn = tc
	r.send(header)
	feats := r.skipUntil("</stream:features>")
	return &s2sClient{r}, feats
}

// TestS2SInvalidFrom: a peer authenticated as a.test (SASL EXTERNAL)
// sending a stanza from another domain gets invalid-from and is closed;
// nothing is routed. Before authentication, a stanza gets not-authorized.
func TestS2SInvalidFrom(t *testing.T) {
	a, b := fedPair(t, true, nil)
	bob := fedLogin(t, b, "bob", "b")
	bob.exchange(t, `<presence/>`, `<presence from='bob@b.test/b'/>`)

	pre, feats := dialS2S(t, b, "a.test", nil)
	if strings.Contains(feats, "EXTERNAL") || !strings.Contains(feats, "urn:xmpp:features:dialback") {
		t.Fatalf("without a certificate: features %q", feats)
	}
	pre.send(`<message from='alice@a.test/a' to='bob@b.test' id='x0'><body>early</body></message>`)
	if got := pre.closed(); !strings.Contains(got, `<not-authorized xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>`) {
		t.Fatalf("pre-auth stanza: got %q", got)
	}

	s, feats := dialS2S(t, b, "a.test", &a.ca.cert)
	if !strings.Contains(feats, `<mechanism>EXTERNAL</mechanism>`) {
		t.Fatalf("features %q", feats)
	}
	s.exchange(t, `<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='EXTERNAL'>`+base64.StdEncoding.EncodeToString([]byte("a.test"))+`</auth>`, `<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>`)
	s.send(`<?xml version='1.0'?><stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams' from='a.test' to='b.test' version='1.0'>`)
	s.expect(t, `<?xml version='1.0'?><stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams' xmlns:db='jabber:server:dialback' from='b.test' to='a.test' id='{*}' version='1.0'><stream:features/>`)
	s.send(`<message from='alice@a.test/a' to='bob@b.test' id='x1'><body>ok</body></message>`)
	bob.expect(t, `<message from='alice@a.test/a' to='bob@b.test' id='x1'><body>ok</body></message>`)
	s.send(`<message from='mallory@c.test/m' to='bob@b.test' id='x2'><body>forged</body></message>`)
	s.expect(t, `<stream:error><invalid-from xmlns='urn:ietf:params:xml:ns:xmpp-streams'/><text xmlns='urn:ietf:params:xml:ns:xmpp-streams'>from is not of the authenticated domain</text></stream:error></stream:stream>`)
	fedSync(t, bob, "b.test", "p1") // nothing from mallory arrived before the ping's answer
	if st := b.srv.S2SStats(); st.InvalidFrom != 1 {
		t.Fatalf("invalid_from = %d", st.InvalidFrom)
	}
}

// TestS2SPreauthDeadline is the seed scenario over s2s: inbound streams
// that never authenticate are closed at the absolute deadline, counted
// with kind s2s, and nothing they send is routed.
func TestS2SPreauthDeadline(t *testing.T) {
	const n = 500
	cfg := testConfig(t)
	cfg.Domain = "b.test"
	cfg.Preauth.Timeout = 1500 * time.Millisecond
	cfg.S2S.Listen = "127.0.0.1:0"
	srv := startServer(t, cfg, "bob")
	node := &fedNode{domain: "b.test", srv: srv, s2s: srv.S2SAddr().String()}
	bob := fedLogin(t, node, "bob", "b")
	bob.exchange(t, `<presence/>`, `<presence from='bob@b.test/b'/>`)
	conns := make([]net.Conn, 0, n)
	for i := range n {
		c, err := net.DialTimeout("tcp", node.s2s, ioTimeout)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		// Half open a stream and keep it alive with whitespace; none
		// authenticates.
		if i%2 == 0 {
			fmt.Fprintf(c, `<?xml version='1.0'?><stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams' from='a.test' to='b.test' version='1.0'> `)
		}
		conns = append(conns, c)
	}
	if !waitFor(ioTimeout, func() bool { return srv.S2SStats().Preauth == n }) {
		t.Fatalf("pre-auth s2s streams = %d, want %d", srv.S2SStats().Preauth, n)
	}
	start := time.Now()
	for i, c := range conns {
		_ = c.SetReadDeadline(time.Now().Add(ioTimeout))
		var buf strings.Builder
		chunk := make([]byte, 1024)
		for {
			k, err := c.Read(chunk)
			buf.Write(chunk[:k])
			if err != nil {
				break
			}
			if i%2 == 0 && k > 0 && strings.HasSuffix(buf.String(), "</stream:features>") {
				c.Write([]byte(" ")) // whitespace buys nothing
			}
		}
		if !strings.Contains(buf.String(), `<connection-timeout xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>`) {
			t.Fatalf("conn %d: got %q", i, buf.String())
		}
	}
	if el := time.Since(start); el > ioTimeout {
		t.Fatalf("closing took %v", el)
	}
	st := srv.S2SStats()
	if st.ClosedDeadline != n || st.Preauth != 0 || st.StanzasIn != 0 {
		t.Fatalf("after the deadline: %+v", st)
	}
	fedSync(t, bob, "b.test", "p1")
}

// fedSync is rawConn.sync for a server whose domain is domain.
func fedSync(t testing.TB, r *rawConn, domain, id string) {
	t.Helper()
	r.exchange(t, `<iq type='get' id='`+id+`' to='`+domain+`'><ping xmlns='urn:xmpp:ping'/></iq>`, `<iq type='result' id='`+id+`' from='`+domain+`'/>`)
}

// TestS2SSubscription runs RFC 6121 subscriptions across two domains, both
// directions: each side runs its half of the state machine, and both
// rosters end with subscription='both'; presence then flows both ways.
func TestS2SSubscription(t *testing.T) {
	a, b := fedPair(t, true, nil)
	alice := fedLogin(t, a, "alice", "a")
	bob := fedLogin(t, b, "bob", "b")
	bob.exchange(t, `<presence/>`, `<presence from='bob@b.test/b'/>`)
	alice.exchange(t, `<presence/>`, `<presence from='alice@a.test/a'/>`)

	alice.send(`<presence type='subscribe' to='bob@b.test'/>`)
	bob.expect(t, `<presence type='subscribe' from='alice@a.test' to='bob@b.test'/>`)
	bob.send(`<presence type='subscribed' to='alice@a.test'/>`)
	alice.expect(t, `<presence type='subscribed' from='bob@b.test' to='alice@a.test'/>`)
	alice.expect(t, `<presence from='bob@b.test/b' to='alice@a.test'/>`)

	bob.send(`<presence type='subscribe' to='alice@a.test'/>`)
	alice.expect(t, `<presence type='subscribe' from='bob@b.test' to='alice@a.test'/>`)
	alice.send(`<presence type='subscribed' to='bob@b.test'/>`)
	bob.expect(t, `<presence type='subscribed' from='alice@a.test' to='bob@b.test'/>`)
	bob.expect(t, `<presence from='alice@a.test/a' to='bob@b.test'/>`)

	alice.exchange(t, `<iq type='get' id='r1'><query xmlns='jabber:iq:roster'/></iq>`,
		`<iq type='result' id='r1'><query xmlns='jabber:iq:roster' ver='{*}'><item jid='bob@b.test' subscription='both'/></query></iq>`)
	bob.exchange(t, `<iq type='get' id='r1'><query xmlns='jabber:iq:roster'/></iq>`,
		`<iq type='result' id='r1'><query xmlns='jabber:iq:roster' ver='{*}'><item jid='alice@a.test' subscription='both'/></query></iq>`)

	// A presence update now reaches the contact on the other domain.
	bob.send(`<presence><show>away</show></presence>`)
	alice.expect(t, `<presence from='bob@b.test/b' to='alice@a.test'><show>away</show></presence>`)
}

// TestComponent connects an XEP-0114 component with the right secret,
// which then receives an iq from a local user and answers it, and one with
// a wrong secret, refused with not-authorized.
func TestComponent(t *testing.T) {
	cfg := testConfig(t)
	cfg.Domain = "a.test"
	cfg.Component.Listen = "127.0.0.1:0"
	cfg.Component.Secrets = map[string]string{"push.a.test": "s3cret"}
	srv := startServer(t, cfg, "alice")
	n := &fedNode{domain: "a.test", srv: srv}
	alice := fedLogin(t, n, "alice", "a")

	dial := func() *rawConn {
		nc, err := net.DialTimeout("tcp", srv.ComponentAddr(), ioTimeout)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = nc.Close() })
		return &rawConn{t: t, conn: nc}
	}
	open := func(r *rawConn) string {
		r.send(`<?xml version='1.0'?><stream:stream xmlns='jabber:component:accept' xmlns:stream='http://etherx.jabber.org/streams' to='push.a.test'>`)
		got := r.expect(t, `<?xml version='1.0'?><stream:stream xmlns:stream='http://etherx.jabber.org/streams' xmlns='jabber:component:accept' from='push.a.test' id='{*}'>`)
		return between(got, "id='", "'>")
	}
	handshake := func(id, secret string) string {
		sum := sha1.Sum([]byte(id + secret))
		return `<handshake>` + hex.EncodeToString(sum[:]) + `</handshake>`
	}

	bad := dial()
	id := open(bad)
	bad.send(handshake(id, "wrong"))
	if got := bad.closed(); got != `<stream:error><not-authorized xmlns='urn:ietf:params:xml:ns:xmpp-streams'/><text xmlns='urn:ietf:params:xml:ns:xmpp-streams'>handshake failed</text></stream:error></stream:stream>` {
		t.Fatalf("wrong secret: got %q", got)
	}
	// Not connected: a stanza for it bounces.
	alice.send(`<iq type='get' id='q0' to='push.a.test'><ping xmlns='urn:xmpp:ping'/></iq>`)
	alice.expect(t, `<iq type='error' id='q0' from='push.a.test' to='alice@a.test/a'><error type='cancel'><service-unavailable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>`)

	comp := dial()
	id = open(comp)
	comp.exchange(t, handshake(id, "s3cret"), `<handshake/>`)
	alice.send(`<iq type='get' id='q1' to='push.a.test'><ping xmlns='urn:xmpp:ping'/></iq>`)
	comp.expect(t, `<iq type='get' id='q1' to='push.a.test' from='alice@a.test/a'><ping xmlns='urn:xmpp:ping'/></iq>`)
	comp.send(`<iq type='result' id='q1' from='push.a.test' to='alice@a.test/a'/>`)
	alice.expect(t, `<iq type='result' id='q1' from='push.a.test' to='alice@a.test/a'/>`)
	// A component speaks only for its own domain.
	comp.send(`<message from='admin@a.test' to='alice@a.test/a'><body>forged</body></message>`)
	comp.expect(t, `<stream:error><invalid-from xmlns='urn:ietf:params:xml:ns:xmpp-streams'/><text xmlns='urn:ietf:params:xml:ns:xmpp-streams'>from is not of the component&apos;s domain</text></stream:error></stream:stream>`)
	fedSync(t, alice, "a.test", "p1")
}

// TestPush: alice@a.test enables XEP-0357 push with an app server on
// another domain (bob@b.test/app stands for it), her session is parked by
// stream management, and a message for her from b.test makes a.test
// publish the summary notification to the app server over s2s: message
// count and sender, no body.
func TestPush(t *testing.T) {
	a, b := fedPair(t, true, nil)
	app := fedLogin(t, b, "bob", "app")
	app.exchange(t, `<presence/>`, `<presence from='bob@b.test/app'/>`)
	bob := fedLogin(t, b, "bob", "b")

	alice := fedLogin(t, a, "alice", "phone")
	alice.exchange(t, `<iq type='set' id='e1'><enable xmlns='urn:xmpp:push:0' jid='bob@b.test/app' node='dev-1'><x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE'><value>http://jabber.org/protocol/pubsub#publish-options</value></field><field var='secret'><value>tok</value></field></x></enable></iq>`,
		`<iq type='result' id='e1'/>`)
	alice.send(`<enable xmlns='urn:xmpp:sm:3' resume='true'/>`)
	alice.skipUntil(`/>`)
	alice.exchange(t, `<presence/>`, `<presence from='alice@a.test/phone'/>`)
	_ = alice.conn.Close() // the phone sleeps: the session is parked
	if !waitFor(ioTimeout, func() bool { return a.srv.Stats().Modules["sm.parked_now"] == 1 }) {
		t.Fatal("the session was not parked")
	}

	bob.send(`<message type='chat' id='m1' to='alice@a.test'><body>wake up</body></message>`)
	app.expect(t, `<iq type='set' id='{*}' from='alice@a.test' to='bob@b.test/app'><pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='dev-1'><item><notification xmlns='urn:xmpp:push:0'><x xmlns='jabber:x:data' type='result'><field var='FORM_TYPE'><value>urn:xmpp:push:summary</value></field><field var='message-count'><value>1</value></field><field var='last-message-sender'><value>bob@b.test/b</value></field></x></notification></item></publish><publish-options><x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE'><value>http://jabber.org/protocol/pubsub#publish-options</value></field><field var='secret'><value>tok</value></field></x></publish-options></pubsub></iq>`)
	if n := a.srv.Stats().Modules["push.notifications"]; n != 1 {
		t.Fatalf("notifications = %d", n)
	}
}

// TestS2SDirectTLS opens an inbound stream on s2s.direct_tls_listen
// (XEP-0368, ALPN xmpp-server): no STARTTLS, SASL EXTERNAL at once.
func TestS2SDirectTLS(t *testing.T) {
	a, b := fedPair(t, true, func(_, b *config.Config) { b.S2S.DirectTLSListen = "127.0.0.3:0" })
	tc, err := tls.DialWithDialer(&net.Dialer{Timeout: ioTimeout}, "tcp", b.srv.S2SDirectTLSAddr(),
		&tls.Config{ServerName: "b.test", InsecureSkipVerify: true, NextProtos: []string{"xmpp-server"}, Certificates: []tls.Certificate{a.ca.cert}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tc.Close() })
	if p := tc.ConnectionState().NegotiatedProtocol; p != "xmpp-server" {
		t.Fatalf("ALPN %q", p)
	}
	r := &rawConn{t: t, conn: tc}
	r.send(`<?xml version='1.0'?><stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams' from='a.test' to='b.test' version='1.0'>`)
	r.expect(t, `<?xml version='1.0'?><stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams' xmlns:db='jabber:server:dialback' from='b.test' to='a.test' id='{*}' version='1.0'><stream:features><mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><mechanism>EXTERNAL</mechanism></mechanisms><dialback xmlns='urn:xmpp:features:dialback'><errors/></dialback></stream:features>`)
	r.exchange(t, `<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='EXTERNAL'>=</auth>`, `<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>`)
	// Inbound s2s streams idle on the lean record layer, as clients do.
	if st := b.srv.Stats(); st.TLSLean == 0 {
		t.Fatalf("no inbound TLS session on the lean record layer: %+v", st)
	}
}

// TestS2SIdleTimeout: an s2s stream without stanzas for s2s.idle_timeout
// is closed on both sides; the next stanza opens a new one.
func TestS2SIdleTimeout(t *testing.T) {
	a, b := fedPair(t, true, func(a, b *config.Config) {
		a.S2S.IdleTimeout = 500 * time.Millisecond
		b.S2S.IdleTimeout = 500 * time.Millisecond
	})
	alice := fedLogin(t, a, "alice", "a")
	bob := fedLogin(t, b, "bob", "b")
	bob.exchange(t, `<presence/>`, `<presence from='bob@b.test/b'/>`)
	for i := range 2 {
		alice.send(fmt.Sprintf(`<message type='chat' id='m%d' to='bob@b.test/b'><body>x</body></message>`, i))
		bob.expect(t, fmt.Sprintf(`<message type='chat' id='m%d' to='bob@b.test/b' from='alice@a.test/a'><body>x</body></message>`, i))
		if !waitFor(ioTimeout, func() bool { return a.srv.S2SStats().Outbound == 0 && b.srv.S2SStats().Authenticated == 0 }) {
			t.Fatalf("idle stream not closed: a %+v, b %+v", a.srv.S2SStats(), b.srv.S2SStats())
		}
	}
	if d := a.srv.S2SStats().Dialled; d != 2 {
		t.Fatalf("dialled %d, want 2 (one stream, closed idle, then another)", d)
	}
}

// TestS2SOffline: a message from a remote domain for an account with no
// session is stored offline and delivered at the next login, as a local
// one is; an iq for a resource that is not there is answered with
// service-unavailable over federation.
func TestS2SOffline(t *testing.T) {
	a, b := fedPair(t, true, nil)
	alice := fedLogin(t, a, "alice", "a")
	alice.send(`<message type='chat' id='m1' to='bob@b.test'><body>while you were out</body></message>`)
	if !waitFor(ioTimeout, func() bool { return b.srv.Stats().Modules["offline.stored"] == 1 }) {
		t.Fatal("not stored offline")
	}
	alice.send(`<iq type='get' id='q1' to='bob@b.test/gone'><ping xmlns='urn:xmpp:ping'/></iq>`)
	alice.expect(t, `<iq type='error' id='q1' from='bob@b.test/gone' to='alice@a.test/a'><error type='cancel'><service-unavailable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>`)
	alice.send(`<iq type='get' id='q2' to='b.test'><ping xmlns='urn:xmpp:ping'/></iq>`)
	alice.expect(t, `<iq type='result' id='q2' from='b.test' to='alice@a.test/a'/>`)

	bob := fedLogin(t, b, "bob", "b")
	bob.send(`<presence/>`)
	got := bob.skipUntil(`</message>`)
	if !strings.Contains(got, `<message type='chat' id='m1' to='bob@b.test' from='alice@a.test/a'><body>while you were out</body><delay xmlns='urn:xmpp:delay' from='b.test' stamp='`) {
		t.Fatalf("bob got %q", got)
	}
}

// TestS2SCarbons: XEP-0280 copies across domains: the sender's other
// resource gets a <sent/> copy of a message to another domain, the
// recipient's other resource a <received/> copy of one from another
// domain.
func TestS2SCarbons(t *testing.T) {
	a, b := fedPair(t, true, nil)
	a1, a2 := fedLogin(t, a, "alice", "a1"), fedLogin(t, a, "alice", "a2")
	b1, b2 := fedLogin(t, b, "bob", "b1"), fedLogin(t, b, "bob", "b2")
	for _, r := range []*rawConn{a1, b1} {
		r.exchange(t, `<iq type='set' id='e1'><enable xmlns='urn:xmpp:carbons:2'/></iq>`, `<iq type='result' id='e1'/>`)
	}
	b2.exchange(t, `<presence/>`, `<presence from='bob@b.test/b2'/>`)
	a2.send(`<message type='chat' id='c1' to='bob@b.test/b2'><body>copied</body></message>`)
	fwd := `<message xmlns='jabber:client' type='chat' id='c1' to='bob@b.test/b2' from='alice@a.test/a2'><body>copied</body></message>`
	a1.expect(t, carbon("sent", "alice@a.test", "alice@a.test/a1", "chat", fwd))
	b2.expect(t, `<message type='chat' id='c1' to='bob@b.test/b2' from='alice@a.test/a2'><body>copied</body></message>`)
	b1.expect(t, carbon("received", "bob@b.test", "bob@b.test/b1", "chat", fwd))
}

// TestS2SOutboundDirectTLS: with no [s2s.routes] entry, a.test finds
// b.test through _xmpps-server._tcp (a stand-in resolver) and opens the
// stream with direct TLS (XEP-0368, ALPN xmpp-server), before the plain
// _xmpp-server._tcp record of the same priority.
func TestS2SOutboundDirectTLS(t *testing.T) {
	a, b := fedPair(t, true, func(a, b *config.Config) {
		b.S2S.DirectTLSListen = "127.0.0.3:0"
		delete(a.S2S.Routes, "b.test")
	})
	host, port, _ := net.SplitHostPort(b.srv.S2SDirectTLSAddr())
	p, _ := strconv.Atoi(port)
	// The plain record names a closed port: only direct TLS can work.
	_, plainPort, _ := net.SplitHostPort(freePort(t, "127.0.0.3"))
	pp, _ := strconv.Atoi(plainPort)
	server.SetLookupSRV(a.srv, func(_ context.Context, service, _, name string) (string, []*net.SRV, error) {
		if name != "b.test" {
			return "", nil, &net.DNSError{Err: "no such host", Name: name, IsNotFound: true}
		}
		if service == "xmpps-server" {
			return "", []*net.SRV{{Target: host, Port: uint16(p), Priority: 1}}, nil
		}
		return "", []*net.SRV{{Target: host, Port: uint16(pp), Priority: 1}}, nil
	})
	alice := fedLogin(t, a, "alice", "a")
	bob := fedLogin(t, b, "bob", "b")
	bob.exchange(t, `<presence/>`, `<presence from='bob@b.test/b'/>`)
	alice.send(`<message type='chat' id='d1' to='bob@b.test/b'><body>direct</body></message>`)
	bob.expect(t, `<message type='chat' id='d1' to='bob@b.test/b' from='alice@a.test/a'><body>direct</body></message>`)
	if st := b.srv.S2SStats(); st.Accepted != 1 || st.AuthExternal != 1 {
		t.Fatalf("b: %+v", st)
	}
}
