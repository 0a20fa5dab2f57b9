package server

import (
	"context"
	"crypto/fips140"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/panjf2000/gnet/v2"
	"go.uber.org/zap"
	"mellium.im/xmpp/jid"
	"mellium.im/xmpp/stream"

	"github.com/krill-xmpp/krill/hook"
	"github.com/krill-xmpp/krill/stanza"
)

// Federation (RFC 6120 server-to-server) on the same reactor as clients.
// An s2s stream is a conn like a client's, flagged flagS2S, with its
// federation state in the loop's s2s map rather than in conn, which stays
// in its size class. Inbound streams get the pre-auth policy of clients
// (absolute deadline from accept, per-address and total caps, the pre-auth
// stanza limits) until SASL EXTERNAL or dialback authenticates the peer's
// domain; nothing is routed before. Outbound streams are one per remote
// domain pair (s2sLink), dialled on a worker and enrolled into a loop,
// carrying every stanza from that local domain to that remote one; stanzas
// wait in the link's queue, bounded in bytes, until the stream is
// authenticated.
//
// The server hosts more than its main domain: the domains modules serve
// (the MUC service, upload) and the configured components' domains. Each is
// a domain of its own towards other servers: an inbound stream may be
// addressed to any of them (its local identity is the header's to), and
// what a hosted domain sends leaves on a stream from that domain,
// authenticated as it. Links are keyed by (local, remote), as Prosody keys
// its outgoing sessions, rather than multiplexed (XEP-0220 section 2.4 /
// XEP-0288): SASL EXTERNAL authenticates one domain per stream, our
// inbound side refuses piggybacking, and a stream per pair needs no
// per-stanza bookkeeping of which pairs a stream has authenticated.

// Namespaces of federation.
const (
	nsServer          = "jabber:server"
	nsDialback        = "jabber:server:dialback"
	nsDialbackFeature = "urn:xmpp:features:dialback"
)

// federation is the server's s2s state shared by all loops.
type federation struct {
	mu    sync.Mutex
	links map[linkKey]*s2sLink // outbound, by (local, remote) domain
	// pending and pendingBytes count the outbound links being set up
	// and what they hold queued, against s2s.max_pending_links and
	// s2s.max_pending_bytes: a client naming many unreachable domains
	// must not grow the server without bound.
	pending, pendingBytes atomic.Int64
	pendingFull           atomic.Uint64    // stanzas bounced at either cap
	verifies              map[string]*conn // inbound streams waiting for a db:verify answer, by our stream id

	secret  [32]byte // dialback key secret (XEP-0185), per process
	roots   *x509.CertPool
	srvTLS  *tls.Config // inbound STARTTLS: asks for the peer's certificate
	direct  *tls.Config // inbound XEP-0368 direct TLS (ALPN xmpp-server)
	preauth preauthLimiter
	inbound []hook.Inbound  // modules with a remote side
	gone    []hook.PeerGone // modules told when a peer domain goes away

	// perDomain counts the authenticated inbound streams of each peer
	// domain (s2s.max_streams_per_domain); guarded by mu.
	perDomain map[string]int

	dialer dialer // outbound connects (s2s_dial.go)

	// lookupSRV is the SRV resolver (net.DefaultResolver's; tests swap it).
	lookupSRV func(ctx context.Context, service, proto, name string) (string, []*net.SRV, error)

	listen, directListen string // with concrete ports, "" when off
	port, directPort     int

	components map[string]*s2sLink // connected XEP-0114 components, by domain
	compListen string
	compPort   int

	// Counters, exported with kind="s2s" next to the clients'.
	accepted, dialled     atomic.Uint64
	closedBy              [numCloseReasons]atomic.Uint64
	preauthN, authedN     atomic.Int64 // inbound streams by state
	outbound              atomic.Int64 // outbound streams open
	stanzasIn, stanzasOut atomic.Uint64
	bounced               atomic.Uint64
	authExternal, authDB  atomic.Uint64
	authFailed            atomic.Uint64
	invalidFrom           atomic.Uint64
	domainCapped          atomic.Uint64 // streams refused by s2s.max_streams_per_domain
}

// s2sStream is the federation state of one s2s conn, kept in its loop's
// s2s map.
type s2sStream struct {
	link      *s2sLink // outbound only
	remote    string   // the peer's domain; inbound: from its header, authenticated once phaseSession
	local     string   // our domain on this stream: inbound, the header's to (a hosted domain); outbound, the link's
	id        string   // inbound: the stream id we sent; outbound: the one the peer sent last
	outbound  bool
	component bool // an XEP-0114 component's stream (s2s_component.go)
	verified  bool // the peer's certificate validates for remote
	triedExt  bool // outbound: SASL EXTERNAL was tried
	dbSent    bool // outbound: db:result was sent
	dbWait    bool // inbound: waiting for the authoritative server's answer
	claimed   bool // inbound: counted in federation.perDomain
	last      time.Duration
}

// linkKey names an outbound stream: the hosted domain it is from and the
// remote domain it is to.
type linkKey struct{ local, remote string }

// s2sLink is the outbound stream from one hosted domain to one remote
// domain, from the first stanza queued for it until the stream closes.
type s2sLink struct {
	domain  string // remote
	local   string // the hosted domain it is from (s.cfg.Domain, muc.domain, a component's)
	loop    *loop
	started time.Time

	mu      sync.Mutex // guards the fields below
	c       *conn      // the stream, once enrolled
	ready   bool       // authenticated: stanzas flow
	dead    bool
	posted  bool     // a drain task is queued on the loop
	setup   bool     // counted in federation.pending until ready or dead
	queue   [][]byte // stanzas waiting for ready or for the drain
	bytes   int
	control [][]byte // db:verify requests, sent once the stream is secure
}

// s2sDial is the gnet context of a connection being enrolled: OnOpen
// recognises an outbound stream by it.
type s2sDial struct {
	link   *s2sLink
	direct bool // XEP-0368 direct TLS: the handshake comes first
}

// initFederation prepares the s2s state: TLS configurations, roots, the
// dialback secret. Called from New.
func (s *Server) initFederation() error {
	f := &federation{links: make(map[linkKey]*s2sLink), verifies: make(map[string]*conn), components: make(map[string]*s2sLink),
		perDomain: make(map[string]int)}
	if _, err := rand.Read(f.secret[:]); err != nil {
		return fmt.Errorf("server: dialback secret: %w", err)
	}
	if s.cfg.S2S.CAFile != "" {
		pem, err := os.ReadFile(s.cfg.S2S.CAFile)
		if err != nil {
			return fmt.Errorf("server: s2s.ca_file: %w", err)
		}
		f.roots = x509.NewCertPool()
		if !f.roots.AppendCertsFromPEM(pem) {
			return fmt.Errorf("server: s2s.ca_file %s: no certificate found", s.cfg.S2S.CAFile)
		}
	}
	cs := s.certs
	f.srvTLS = &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetCertificate: func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
			return cs.cert.Load(), nil
		},
		// The certificate is checked against the stream's from domain
		// after the handshake (s2sVerify), not by crypto/tls.
		ClientAuth: tls.RequestClientCert,
	}
	f.direct = f.srvTLS.Clone()
	f.direct.NextProtos = []string{"xmpp-server"}
	if s.cfg.TLS.Lean && !fips140.Enabled() {
		// Inbound streams idle like clients: the lean record layer
		// after the handshake, as for c2s (tls13.go).
		f.srvTLS.SessionTicketsDisabled, f.direct.SessionTicketsDisabled = true, true
		withKeyLog(f.srvTLS)
		withKeyLog(f.direct)
	}
	f.dialer.init()
	f.preauth.init(s.cfg.Preauth.MaxPerIP, s.cfg.Preauth.MaxTotal, prefixes(&s.cfg))
	for _, m := range s.hooks.Modules() {
		if in, ok := m.(hook.Inbound); ok {
			f.inbound = append(f.inbound, in)
		}
		if g, ok := m.(hook.PeerGone); ok {
			f.gone = append(f.gone, g)
		}
	}
	s.fed = f
	return nil
}

// clientTLS is the configuration of an outbound stream to domain: our
// certificate for SASL EXTERNAL, the peer's checked by s2sVerify.
func (s *Server) clientTLS(domain string) *tls.Config {
	cs := s.certs
	return &tls.Config{
		MinVersion:         tls.VersionTLS12,
		ServerName:         domain,
		InsecureSkipVerify: true, // verified by s2sVerify against s2s.ca_file, with the dialback fallback
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return cs.cert.Load(), nil
		},
	}
}

// s2sVerify reports whether certs (leaf first) validate for domain: a
// chain to s2s.ca_file (or the system roots) and a DNS-ID matching domain
// (RFC 6120 13.7.2, RFC 6125). Any extended key usage is accepted: server
// certificates of public CAs no longer carry clientAuth.
func (s *Server) s2sVerify(certs []*x509.Certificate, domain string) bool {
	if len(certs) == 0 || domain == "" {
		return false
	}
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	_, err := certs[0].Verify(x509.VerifyOptions{Roots: s.fed.roots, Intermediates: inter, DNSName: domain,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
	return err == nil
}

// s2sOf returns c's federation state.
func s2sOf(c *conn) *s2sStream { return c.loop.s2s[c] }

// appendS2SHeader appends a jabber:server stream header.
func appendS2SHeader(b []byte, from, to, id string) []byte {
	b = append(b, `<?xml version='1.0'?><stream:stream xmlns='`+nsServer+`' xmlns:stream='`+nsStream+`' xmlns:db='`+nsDialback+`'`...)
	if from != "" {
		b = append(b, ` from='`...)
		b = stanza.AppendEscaped(b, from)
		b = append(b, '\'')
	}
	if to != "" {
		b = append(b, ` to='`...)
		b = stanza.AppendEscaped(b, to)
		b = append(b, '\'')
	}
	if id != "" {
		b = append(b, ` id='`...)
		b = append(b, id...)
		b = append(b, '\'')
	}
	return append(b, ` version='1.0'>`...)
}

// appendHeaderFor appends the header c's stream opens with, for a stream
// error before any header was sent.
func (s *Server) appendHeaderFor(c *conn, b []byte) []byte {
	if c.has(flagS2S) {
		st := s2sOf(c)
		to, from := "", s.cfg.Domain
		if st != nil {
			to = st.remote
			if st.local != "" {
				from = st.local
			}
		}
		return appendS2SHeader(b, from, to, newStreamID())
	}
	return s.appendHeader(b)
}

func newStreamID() string {
	var id [12]byte
	_, _ = rand.Read(id[:])
	return hex.EncodeToString(id[:])
}

// dialbackKey is XEP-0185's key: HMAC-SHA256 keyed with the hex SHA-256 of
// the secret over "receiving originating id", in hex.
func (f *federation) dialbackKey(receiving, originating, id string) string {
	k := sha256.Sum256(f.secret[:])
	m := hmac.New(sha256.New, []byte(hex.EncodeToString(k[:])))
	m.Write([]byte(receiving + " " + originating + " " + id))
	return hex.EncodeToString(m.Sum(nil))
}

// isS2SListener reports which s2s listener gc was accepted on, if any.
func (s *Server) isS2SListener(gc gnet.Conn) (s2s, direct, component bool) {
	f := s.fed
	if f.port == 0 && f.directPort == 0 && f.compPort == 0 {
		return false, false, false
	}
	port := localPort(gc)
	if port == 0 {
		return false, false, false
	}
	return port == f.port || port == f.directPort, port == f.directPort, port == f.compPort
}

// openInbound accepts a stream from another server: the pre-auth policy
// of clients, counted apart (kind s2s).
func (s *Server) openInbound(gc gnet.Conn, direct bool) ([]byte, gnet.Action) {
	f := s.fed
	f.accepted.Add(1)
	ip := addrIP(gc.RemoteAddr())
	if s.stopping.Load() {
		gc.SetContext(s2sRefused(reasonShutdown))
		return appendStreamError(appendS2SHeader(nil, s.cfg.Domain, "", ""), stream.SystemShutdown.Err, "the server is shutting down"), gnet.Close
	}
	if cond := f.preauth.acquire(ip); cond != "" {
		gc.SetContext(s2sRefused(reasonPolicy))
		return appendStreamError(appendS2SHeader(nil, s.cfg.Domain, "", ""), cond, "too many unauthenticated server connections"), gnet.Close
	}
	l := s.loopFor(gc.EventLoop())
	c := &conn{gc: gc, loop: l, ip: makePeerAddr(ip), tr: plainTCP{}, flags: flagPreauth | flagS2S}
	c.framer.SetLimits(stanzaLimitsPreauth(s))
	gc.SetContext(c)
	l.s2sAdd(c, &s2sStream{id: newStreamID(), last: time.Since(s.epoch)})
	f.preauthN.Add(1)
	c.preauthAt = time.Since(s.epoch) + s.conf().Preauth.Timeout
	if direct {
		s.startS2STLS(c, f.direct, true)
	} else {
		s.armDeadline(c)
	}
	return nil, gnet.None
}

// s2sRefused is the gnet context of an s2s connection refused in open:
// OnClose counts it with kind s2s.
type s2sRefused closeReason

func stanzaLimitsPreauth(s *Server) stanza.Limits {
	return stanza.Limits{MaxBytes: s.conf().Preauth.MaxStanzaSize, MaxElements: s.conf().Preauth.MaxElements,
		MaxDepth: s.conf().C2S.MaxDepth}
}

func (l *loop) s2sAdd(c *conn, st *s2sStream) {
	if l.s2s == nil {
		l.s2s = make(map[*conn]*s2sStream)
	}
	l.s2s[c] = st
}

// startS2STLS gives c a TLS layer with cfg: the server side waits for the
// ClientHello as for clients; the client side (outbound) starts at once.
func (s *Server) startS2STLS(c *conn, cfg *tls.Config, direct bool) *tlsConn {
	t := &tlsConn{hsDeadline: time.Now().Add(s.conf().TLS.HandshakeTimeout), direct: direct}
	t.pipe.c = c
	st := s2sOf(c)
	if st != nil && st.outbound {
		t.tc = tls.Client(&t.pipe, cfg)
	} else {
		t.pipe.recordBound = leanConfig(cfg)
		t.tc = tls.Server(&t.pipe, cfg)
	}
	c.tr = t // s2s streams are not in the clients' gauges: no stats.move
	s.armDeadline(c)
	if st != nil && st.outbound {
		s.beginHandshake(c, t)
	}
	return t
}

// s2sSecured runs on the loop when c's TLS handshake is done: the peer's
// certificate is checked and an outbound stream opens its new stream.
func (s *Server) s2sSecured(c *conn, t *tlsConn) {
	st := s2sOf(c)
	if st == nil {
		return
	}
	cs := t.tc.ConnectionState()
	if st.outbound {
		c.write(appendS2SHeader(c.loop.scratch[:0], st.local, st.remote, ""))
		// Verified on a worker; the peer's features wait in the input
		// until the verdict is in.
		certs, remote := cs.PeerCertificates, st.remote
		s.async(c, func(context.Context) func() {
			ok := s.s2sVerify(certs, remote)
			return func() { st.verified = ok }
		}, func() { s.fail(c, stream.ResourceConstraint.Err, "server busy") })
		return
	}
	// Inbound: the domain is known from the header after the restart;
	// keep the certificates' verdict for each claimed domain then.
	c.loop.s2sCerts(c, cs.PeerCertificates)
}

// s2sCerts keeps the peer certificates of an inbound stream until its
// restarted header names the domain to check them against.
func (l *loop) s2sCerts(c *conn, certs []*x509.Certificate) {
	if l.s2sPeerCerts == nil {
		l.s2sPeerCerts = make(map[*conn][]*x509.Certificate)
	}
	if len(certs) > 0 {
		l.s2sPeerCerts[c] = certs
	}
}

// s2sHeader handles a stream header on an s2s stream.
func (s *Server) s2sHeader(c *conn, unit []byte) {
	st := s2sOf(c)
	h, err := stanza.ParseHeader(unit)
	switch {
	case err != nil:
		s.fail(c, stream.BadFormat.Err, "malformed stream header")
		return
	case h.Name.Local != "stream" || h.Name.Space != nsStream:
		s.fail(c, stream.InvalidNamespace.Err, "the stream element must be {"+nsStream+"}stream")
		return
	case h.DefaultNS != nsServer && !st.component:
		s.fail(c, stream.InvalidNamespace.Err, "the default namespace must be "+nsServer)
		return
	case st.component:
	case h.Version == "" || !validVersion(h.Version):
		s.fail(c, stream.UnsupportedVersion.Err, "only XMPP 1.0 streams are supported")
		return
	}
	if st.component {
		s.componentHeader(c, st, h)
		return
	}
	if st.outbound {
		// The receiving server's answer: its id keys dialback.
		st.id = h.ID
		if c.phase == phaseHeader {
			c.phase = phaseNegotiate
		} else if c.phase == phaseAuthHeader {
			c.phase = phaseBind // authenticated; waiting for the features
		}
		return
	}
	switch {
	case c.phase == phaseAuthHeader && h.To != st.local:
		// The restart after SASL is for the domain authenticated to.
		s.fail(c, stream.HostUnknown.Err, "the stream restarted for another domain")
		return
	case !s.hosts(h.To):
		s.fail(c, stream.HostUnknown.Err, "this server does not serve that domain")
		return
	}
	st.local = h.To
	if h.From != "" {
		d, err := jid.Parse(h.From)
		if err != nil || d.Localpart() != "" || d.Resourcepart() != "" {
			s.fail(c, stream.InvalidFrom.Err, "from must be a domain")
			return
		}
		if c.phase == phaseAuthHeader && d.String() != st.remote {
			s.fail(c, stream.InvalidFrom.Err, "from is not the authenticated domain")
			return
		}
		st.remote = d.String()
	}
	st.id = newStreamID()
	b := appendS2SHeader(c.loop.scratch[:0], st.local, st.remote, st.id)
	c.flags |= flagHeaderSent
	switch c.phase {
	case phaseHeader, phaseNegotiate:
		c.phase = phaseNegotiate
		b = append(b, `<stream:features>`...)
		if !c.tr.secure() {
			b = append(b, `<starttls xmlns='`+nsTLS+`'><required/></starttls>`...)
		} else if certs := c.loop.s2sPeerCerts[c]; len(certs) > 0 {
			// Chain verification is CPU work a peer can ask for on
			// every stream: on a worker, the stream's input paused; the
			// features follow the header once it is done.
			c.write(b[:len(b)-len(`<stream:features>`)])
			c.loop.scratch = b[:0]
			remote := st.remote
			s.async(c, func(context.Context) func() {
				ok := s.s2sVerify(certs, remote)
				return func() {
					st.verified = ok
					c.write(s.appendS2SFeatures(nil, st))
				}
			}, func() { s.fail(c, stream.ResourceConstraint.Err, "server busy") })
			return
		} else {
			b = s.appendS2SFeatures(b[:len(b)-len(`<stream:features>`)], st)
			c.write(b)
			c.loop.scratch = b[:0]
			return
		}
		b = append(b, `</stream:features>`...)
	case phaseAuthHeader:
		s.s2sAuthenticated(c, st)
		b = append(b, `<stream:features/>`...)
	default:
		s.fail(c, stream.NotAuthorized.Err, "stream restart after authentication")
		return
	}
	c.write(b)
	c.loop.scratch = b[:0]
}

// s2sElement handles a top-level element on an s2s stream.
func (s *Server) s2sElement(c *conn, unit []byte) {
	st := s2sOf(c)
	tag, err := stanza.ParseStartTag(unit)
	if err != nil {
		s.fail(c, stream.NotWellFormed.Err, err.Error())
		return
	}
	ns, hasNS := tag.AttrString("xmlns")
	prefix := string(tag.Prefix())
	switch {
	case prefix == "db":
		ns = nsDialback
	case prefix == "stream":
		ns = nsStream
	case !hasNS && prefix == "":
		ns = nsServer
	}
	local := string(tag.Local())
	if c.phase == phaseHeader || c.phase == phaseAuthHeader {
		s.fail(c, stream.NotWellFormed.Err, "expected a stream header")
		return
	}
	if st.component {
		s.componentElement(c, st, tag, local, unit)
		return
	}
	if ns == nsDialback && local == "verify" {
		s.dbVerify(c, st, tag, unit)
		return
	}
	if st.outbound {
		s.outboundElement(c, st, tag, ns, local, unit)
		return
	}
	if c.phase == phaseSession {
		if ns == nsServer {
			s.s2sStanza(c, st, tag, local, unit)
			return
		}
		s.fail(c, stream.UnsupportedStanzaType.Err, "unexpected element after authentication")
		return
	}
	// Before authentication: STARTTLS, SASL EXTERNAL, dialback; nothing
	// else, and nothing routed.
	switch {
	case ns == nsTLS && local == "starttls":
		if c.tr.secure() {
			s.fail(c, stream.PolicyViolation.Err, "TLS is already up")
			return
		}
		c.write([]byte(`<proceed xmlns='` + nsTLS + `'/>`))
		s.startS2STLS(c, s.fed.srvTLS, false)
	case ns == nsSASL && local == "auth":
		s.s2sExternal(c, st, tag, unit)
	case ns == nsSASL && local == "abort":
		c.write([]byte(`<failure xmlns='` + nsSASL + `'><aborted/></failure>`))
	case ns == nsDialback && local == "result":
		s.dbResult(c, st, tag, unit)
	default:
		s.fail(c, stream.NotAuthorized.Err, "authenticate first")
	}
}

// s2sExternal answers SASL EXTERNAL (RFC 6120 6.4, XEP-0178): the peer's
// certificate must validate for the stream's from domain, which the
// authorization identity, if any, must name.
func (s *Server) s2sExternal(c *conn, st *s2sStream, tag stanza.StartTag, unit []byte) {
	mech, _ := tag.AttrString("mechanism")
	fail := func(cond string) {
		s.fed.authFailed.Add(1)
		c.write([]byte(`<failure xmlns='` + nsSASL + `'><` + cond + `/></failure>`))
		c.failed++
		if int(c.failed) >= s.conf().Preauth.MaxFailedAuth {
			s.fail(c, stream.PolicyViolation.Err, "too many failed authentication attempts")
		}
	}
	if !c.tr.secure() {
		fail("encryption-required")
		return
	}
	if mech != "EXTERNAL" || !st.verified {
		fail("invalid-mechanism")
		return
	}
	payload, err := saslPayload(unit)
	if err != nil {
		fail("incorrect-encoding")
		return
	}
	if len(payload) > 0 && string(payload) != st.remote {
		fail("invalid-authzid")
		return
	}
	if !s.s2sClaim(c, st) {
		return
	}
	s.fed.authExternal.Add(1)
	c.write([]byte(`<success xmlns='` + nsSASL + `'/>`))
	c.phase = phaseAuthHeader
	c.flags &^= flagHeaderSent
	c.framer.Reset()
}

// s2sClaim counts c, an inbound stream about to be authenticated for
// st.remote, against s2s.max_streams_per_domain; one beyond the cap is
// closed with policy-violation instead. Called where authentication
// succeeds (SASL success, dialback valid), before the peer is told.
func (s *Server) s2sClaim(c *conn, st *s2sStream) bool {
	f := s.fed
	limit := s.conf().S2S.MaxStreamsPerDomain
	f.mu.Lock()
	n := f.perDomain[st.remote]
	if limit > 0 && n >= limit {
		f.mu.Unlock()
		f.domainCapped.Add(1)
		s.fail(c, stream.PolicyViolation.Err, "too many streams from this domain")
		return false
	}
	f.perDomain[st.remote] = n + 1
	f.mu.Unlock()
	st.claimed = true
	return true
}

// s2sUnclaim releases st's place in its domain's count. When it was the
// domain's last stream and the stream did not end in order (a dropped
// connection, an error, a deadline: why), the modules are told the peer
// is gone.
func (s *Server) s2sUnclaim(st *s2sStream, why closeReason) {
	f := s.fed
	st.claimed = false
	f.mu.Lock()
	n := f.perDomain[st.remote] - 1
	if n > 0 {
		f.perDomain[st.remote] = n
	} else {
		delete(f.perDomain, st.remote)
	}
	f.mu.Unlock()
	if n <= 0 && why != reasonClient && why != reasonShutdown {
		s.peerGone(st.remote)
	}
}

// peerGone tells the modules that domain went away (hook.PeerGone).
func (s *Server) peerGone(domain string) {
	s.log.Debug("s2s peer gone", zap.String("domain", domain))
	for _, g := range s.fed.gone {
		g.PeerGone(domain)
	}
}

// s2sAuthenticated makes an inbound stream routable for st.remote: the
// pre-auth deadline and caps end, the idle timeout begins.
func (s *Server) s2sAuthenticated(c *conn, st *s2sStream) {
	f := s.fed
	if c.has(flagPreauth) {
		c.flags &^= flagPreauth
		f.preauth.release(c.ip.Addr())
		f.preauthN.Add(-1)
		f.authedN.Add(1)
	}
	delete(c.loop.s2sPeerCerts, c)
	c.phase = phaseSession
	c.framer.SetLimits(stanza.Limits{MaxBytes: s.conf().S2S.MaxStanzaSize, MaxDepth: s.conf().C2S.MaxDepth})
	st.last = c.loop.since()
	if st.component {
		c.loop.wheel.Cancel(&c.timer) // a component stays while it is up
		return
	}
	s.armIdle(c, st)
	s.log.Debug("s2s inbound authenticated", zap.String("domain", st.remote), zap.Stringer("ip", c.ip))
}

// armIdle arms c's timer for the idle timeout, or cancels it.
func (s *Server) armIdle(c *conn, st *s2sStream) {
	idle := s.conf().S2S.IdleTimeout
	if idle <= 0 {
		c.loop.wheel.Cancel(&c.timer)
		return
	}
	c.loop.wheel.Arm(&c.timer, c, s.epoch.Add(st.last+idle))
}

// s2sDeadline runs when an s2s stream's timer fires: the TLS handshake
// deadline, the pre-auth deadline (inbound), the connect deadline
// (outbound), or the idle timeout.
func (s *Server) s2sDeadline(c *conn) {
	st := s2sOf(c)
	now := time.Now()
	if d := c.tr.deadline(); !d.IsZero() && !now.Before(d) {
		c.tr.expired(s, c)
		return
	}
	if st.outbound && !st.link.isReady() {
		if due := st.link.started.Add(s.conf().S2S.ConnectTimeout); now.Before(due) {
			c.loop.wheel.Arm(&c.timer, c, due)
			return
		}
		s.fail(c, stream.ConnectionTimeout.Err, "server-to-server negotiation took too long")
		return
	}
	if !st.outbound && c.phase != phaseSession {
		due := s.epoch.Add(c.preauthAt)
		if now.Before(due) {
			s.armDeadline(c)
			return
		}
		s.stats.noteLateness(now.Sub(due))
		s.fail(c, stream.ConnectionTimeout.Err, "authentication took too long")
		return
	}
	idle := s.conf().S2S.IdleTimeout
	if idle <= 0 {
		return
	}
	if due := s.epoch.Add(st.last + idle); due.After(now) {
		c.loop.wheel.Arm(&c.timer, c, due)
		return
	}
	// Idle: close in order; the next stanza opens a new stream.
	c.write([]byte(streamClose))
	s.shut(c, reasonClient)
}

// s2sStanza routes a stanza from an authenticated peer: its from must be
// of the authenticated domain (invalid-from), its to of ours.
func (s *Server) s2sStanza(c *conn, st *s2sStream, tag stanza.StartTag, local string, unit []byte) {
	if local != "message" && local != "presence" && local != "iq" {
		s.fail(c, stream.UnsupportedStanzaType.Err, "unknown top-level element")
		return
	}
	from, _ := tag.AttrString("from")
	to, _ := tag.AttrString("to")
	fj, err := jid.Parse(from)
	if err != nil || fj.Domainpart() != st.remote {
		s.fed.invalidFrom.Add(1)
		s.fail(c, stream.InvalidFrom.Err, "from is not of the authenticated domain")
		return
	}
	tj, err := jid.Parse(to)
	if err != nil {
		return // nothing to answer to safely: dropped
	}
	if !s.hosts(tj.Domainpart()) {
		s.fail(c, stream.HostUnknown.Err, "this server does not serve that domain")
		return
	}
	s.fed.stanzasIn.Add(1)
	st.last = c.loop.since()
	s.fromRemote(c, tag, local, fj.String(), tj, unit)
}

// s2sRelease drops what an s2s conn holds in shared state; part of release.
func (s *Server) s2sRelease(c *conn) {
	f := s.fed
	st := s2sOf(c)
	if st != nil && st.claimed {
		// Before the gauges move: whoever sees the stream gone sees the
		// modules told.
		s.s2sUnclaim(st, c.reason)
	}
	delete(c.loop.s2s, c)
	delete(c.loop.s2sPeerCerts, c)
	if c.has(flagPreauth) {
		c.flags &^= flagPreauth
		f.preauth.release(c.ip.Addr())
		f.preauthN.Add(-1)
	} else if st != nil && !st.outbound {
		f.authedN.Add(-1)
	}
	if st == nil {
		return
	}
	if st.dbWait {
		f.mu.Lock()
		if f.verifies[st.id] == c {
			delete(f.verifies, st.id)
		}
		f.mu.Unlock()
	}
	if st.component {
		s.componentGone(c, st)
	}
	if st.outbound {
		f.outbound.Add(-1)
		cond := "remote-server-not-found"
		if c.reason == reasonDeadline {
			cond = "remote-server-timeout"
		}
		s.linkGone(st.link, c, cond)
	}
}

// s2sClosed counts a closed s2s conn; part of gnet's OnClose.
func (s *Server) s2sClosed(why closeReason) { s.fed.closedBy[why].Add(1) }

// localPort returns the local port of gc's socket.
func localPort(gc gnet.Conn) int {
	if a, ok := gc.LocalAddr().(*net.TCPAddr); ok && a.Port != 0 {
		return a.Port
	}
	return 0
}

// portOf returns the port of a listener address.
func portOf(addr string) int {
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		return 0
	}
	n, _ := strconv.Atoi(p)
	return n
}

// b64 is the SASL encoding.
func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

// bgctx is the context of loop tasks.
var bgctx = context.Background()

// logS2SListeners logs the s2s listeners once they are up.
func (s *Server) logS2SListeners() {
	if s.fed.listen != "" {
		s.log.Info("listening", zap.String("listener", "s2s"), zap.String("addr", s.fed.listen), zap.String("domain", s.cfg.Domain))
	}
	if s.fed.directListen != "" {
		s.log.Info("listening", zap.String("listener", "s2s direct tls"), zap.String("addr", s.fed.directListen), zap.String("domain", s.cfg.Domain))
	}
}

// S2SStats are the federation counters (kind s2s in the metrics).
type S2SStats struct {
	Accepted, Dialled       uint64 // inbound streams accepted, outbound connections made
	Preauth, Authenticated  int64  // inbound streams by state
	Outbound                int64  // outbound streams open
	StanzasIn, StanzasOut   uint64
	Bounced                 uint64 // errors returned to local senders
	AuthExternal            uint64 // peers authenticated with SASL EXTERNAL (inbound) or by us (outbound)
	AuthDialback            uint64 // peers authenticated with dialback, or its certificate shortcut
	AuthFailed, InvalidFrom uint64
	ClosedDeadline          uint64 // s2s streams closed at a deadline (pre-auth, connect, TLS)
	Dialling, DialWaiting   int    // outbound connects in flight (at most s2s.max_dials), links waiting for one
	DomainCapped            uint64 // inbound streams refused by s2s.max_streams_per_domain
	// Outbound streams being set up and the bytes they hold queued
	// (s2s.max_pending_links, s2s.max_pending_bytes), and the stanzas
	// bounced at either cap.
	PendingLinks, PendingBytes int64
	PendingFull                uint64
	ClosedBy                   map[string]uint64
}

// S2SStats returns a snapshot of the federation counters.
func (s *Server) S2SStats() S2SStats {
	f := s.fed
	st := S2SStats{Accepted: f.accepted.Load(), Dialled: f.dialled.Load(), Preauth: f.preauthN.Load(),
		Authenticated: f.authedN.Load(), Outbound: f.outbound.Load(), StanzasIn: f.stanzasIn.Load(),
		StanzasOut: f.stanzasOut.Load(), Bounced: f.bounced.Load(), AuthExternal: f.authExternal.Load(),
		AuthDialback: f.authDB.Load(), AuthFailed: f.authFailed.Load(), InvalidFrom: f.invalidFrom.Load(),
		ClosedDeadline: f.closedBy[reasonDeadline].Load(), DomainCapped: f.domainCapped.Load(), ClosedBy: make(map[string]uint64)}
	st.Dialling, st.DialWaiting = f.dialer.stats()
	st.PendingLinks, st.PendingBytes, st.PendingFull = f.pending.Load(), f.pendingBytes.Load(), f.pendingFull.Load()
	for r := reasonDeadline; r < numCloseReasons; r++ {
		if v := f.closedBy[r].Load(); v > 0 {
			st.ClosedBy[closeReasonNames[r]] = v
		}
	}
	return st
}

// appendS2SFeatures appends the features of a secure inbound stream
// before authentication: EXTERNAL when the peer's certificate validates
// for its domain, dialback unless policy wants a valid certificate.
func (s *Server) appendS2SFeatures(b []byte, st *s2sStream) []byte {
	b = append(b, `<stream:features>`...)
	if st.verified {
		b = append(b, `<mechanisms xmlns='`+nsSASL+`'><mechanism>EXTERNAL</mechanism></mechanisms>`...)
	}
	if !s.cfg.S2S.RequireValidCertsFrom(st.remote) {
		b = append(b, `<dialback xmlns='`+nsDialbackFeature+`'><errors/></dialback>`...)
	}
	return append(b, `</stream:features>`...)
}

// hosts reports whether domain is one this server answers for over
// federation: its own, a domain a module serves (Registrar.Domain: the
// MUC service, upload), or a configured component's.
func (s *Server) hosts(domain string) bool {
	if domain == s.cfg.Domain || s.hooks.Domain(domain) != nil {
		return true
	}
	_, ok := s.cfg.Component.Secrets[domain]
	return ok
}

// localOf returns the hosted domain a stanza leaving for another server
// is from: the domain of its from attribute when this server hosts it,
// else the main domain (a bounce without from, say).
func (s *Server) localOf(b []byte) string {
	tag, err := stanza.ParseStartTag(b)
	if err != nil {
		return s.cfg.Domain
	}
	from, _ := tag.AttrString("from")
	_, d, _ := splitJID(from)
	if d != s.cfg.Domain && d != "" && s.hosts(d) {
		return d
	}
	return s.cfg.Domain
}
