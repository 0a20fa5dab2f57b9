package server

import (
	"bytes"
	"context"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/panjf2000/gnet/v2"
	"go.uber.org/zap"
	"mellium.im/xmpp/jid"
	"mellium.im/xmpp/stream"

	"github.com/krill-xmpp/krill/hook"
	"github.com/krill-xmpp/krill/stanza"
)

// deliverRemote queues b, a stamped stanza, on the outbound stream to
// domain from the hosted domain b is from (localOf), opening one if none
// exists. It returns 1: the stanza was taken (queued, or bounced to its
// sender when it cannot be). from is the caller's loop (nil on a worker);
// a new link goes to the least loaded loop whichever it is (linkLoop).
func (s *Server) deliverRemote(from *loop, domain string, b []byte) int {
	f := s.fed
	key := linkKey{local: s.localOf(b), remote: domain}
	for range 2 {
		f.mu.Lock()
		lk := f.links[key]
		fresh := lk == nil
		if fresh && s.stopping.Load() {
			// No new streams while the server stops: a dial would wait
			// for a loop that no longer enrolls (a session's unavailable
			// presence to a remote room, say, as the sessions close).
			f.mu.Unlock()
			s.bounce(b, "wait", "remote-server-timeout")
			return 1
		}
		if fresh && f.pending.Load() >= int64(s.conf().S2S.MaxPendingLinks) {
			// As many links being set up as allowed: this domain
			// waits until some are up or given up.
			f.mu.Unlock()
			f.pendingFull.Add(1)
			s.bounce(b, "wait", "resource-constraint")
			return 1
		}
		if fresh {
			lk = &s2sLink{domain: domain, local: key.local, started: time.Now(), loop: s.linkLoop(), setup: true}
			if lk.loop == nil {
				f.mu.Unlock()
				s.bounce(b, "wait", "remote-server-timeout")
				return 1
			}
			f.pending.Add(1)
			f.links[key] = lk
		}
		f.mu.Unlock()
		if fresh {
			s.dial(lk)
		}
		switch lk.push(s, b) {
		case pushOK:
			return 1
		case pushFull:
			s.bounce(b, "wait", "resource-constraint")
			return 1
		}
		// pushDead: the link closed meanwhile; a new one is made.
	}
	s.bounce(b, "cancel", "remote-server-not-found")
	return 1
}

// anyLoop returns some event loop, for a task asked for by a worker.
func (s *Server) anyLoop() *loop {
	if lp := s.loopsV.Load(); lp != nil && len(*lp) > 0 {
		return (*lp)[0]
	}
	return nil
}

// linkLoop returns the event loop a new outbound link is enrolled into:
// the one with the fewest links, the first on a tie, its count taken.
// Links asked for by a worker (a module's delivery, a dialback verify)
// would otherwise all land on one loop, and those asked for by a loop on
// the loop of whichever session spoke first; gnet spreads accepted
// connections round-robin, so clients are even and links decide. nil
// before the loops are up.
func (s *Server) linkLoop() *loop {
	lp := s.loopsV.Load()
	if lp == nil || len(*lp) == 0 {
		return nil
	}
	best := (*lp)[0]
	for _, l := range (*lp)[1:] {
		if l.links.Load() < best.links.Load() {
			best = l
		}
	}
	best.links.Add(1)
	return best
}

type pushResult uint8

const (
	pushOK pushResult = iota
	pushFull
	pushDead
)

// push queues b on the link and, once the stream is authenticated, has
// the link's loop write it.
func (lk *s2sLink) push(s *Server, b []byte) pushResult {
	lk.mu.Lock()
	if lk.dead {
		lk.mu.Unlock()
		return pushDead
	}
	if lk.bytes+len(b) > s.conf().S2S.MaxQueueBytes {
		lk.mu.Unlock()
		return pushFull
	}
	if lk.setup {
		if s.fed.pendingBytes.Add(int64(len(b))) > int64(s.conf().S2S.MaxPendingBytes) {
			s.fed.pendingBytes.Add(-int64(len(b)))
			s.fed.pendingFull.Add(1)
			lk.mu.Unlock()
			return pushFull
		}
	}
	lk.queue = append(lk.queue, b)
	lk.bytes += len(b)
	post := lk.ready && !lk.posted
	lk.posted = lk.posted || post
	lk.mu.Unlock()
	if post {
		lk.post(s)
	}
	return pushOK
}

// pushControl queues a dialback verify request, written as soon as the
// stream is secure and open, before authentication.
func (lk *s2sLink) pushControl(s *Server, b []byte) bool {
	lk.mu.Lock()
	if lk.dead {
		lk.mu.Unlock()
		return false
	}
	lk.control = append(lk.control, b)
	post := lk.c != nil && !lk.posted
	lk.posted = lk.posted || post
	lk.mu.Unlock()
	if post {
		lk.post(s)
	}
	return true
}

func (lk *s2sLink) post(s *Server) {
	err := lk.loop.el.Execute(bgctx, gnet.RunnableFunc(func(context.Context) error {
		lk.drain(s)
		return nil
	}))
	if err != nil {
		lk.mu.Lock()
		lk.posted = false
		lk.mu.Unlock()
	}
}

func (lk *s2sLink) isReady() bool {
	lk.mu.Lock()
	defer lk.mu.Unlock()
	return lk.ready
}

// drain writes what waits, on the link's loop: verify requests once the
// stream is open, stanzas once it is authenticated.
func (lk *s2sLink) drain(s *Server) {
	lk.mu.Lock()
	c := lk.c
	lk.posted = false
	if c == nil || c.has(flagClosed) {
		lk.mu.Unlock()
		return
	}
	st := s2sOf(c)
	var ctl, q [][]byte
	if st != nil && st.id != "" && c.tr.secure() && c.tr.ready() {
		ctl, lk.control = lk.control, nil
	}
	if lk.ready {
		q, lk.queue, lk.bytes = lk.queue, nil, 0
	}
	lk.mu.Unlock()
	c.cork()
	for _, b := range ctl {
		c.write(b)
	}
	for _, b := range q {
		c.write(b)
	}
	c.uncork()
	if n := len(q); n > 0 {
		s.fed.stanzasOut.Add(uint64(n))
		st.last = c.loop.since()
	}
}

// s2sTarget is one address to try for a remote domain; direct is XEP-0368
// direct TLS (from _xmpps-server._tcp).
type s2sTarget struct {
	addr   string
	direct bool
}

// resolve returns the addresses to try for domain: its [s2s.routes]
// entry; else the SRV records of _xmpps-server._tcp (direct TLS, XEP-0368)
// and _xmpp-server._tcp merged by priority, direct TLS first on a tie; else
// the domain itself on 5269 (RFC 6120 3.2.1). Runs on a worker.
func (s *Server) resolve(ctx context.Context, domain string) ([]s2sTarget, error) {
	if a, ok := s.cfg.S2S.Routes[domain]; ok {
		return []s2sTarget{{addr: a}}, nil
	}
	lookup := s.fed.lookupSRV
	if lookup == nil {
		lookup = net.DefaultResolver.LookupSRV
	}
	type rec struct {
		srv    *net.SRV
		direct bool
	}
	var recs []rec
	refused := 0
	for _, svc := range []struct {
		name   string
		direct bool
	}{{"xmpps-server", true}, {"xmpp-server", false}} {
		_, srvs, err := lookup(ctx, svc.name, "tcp", domain)
		if err != nil || len(srvs) == 0 {
			continue
		}
		if len(srvs) == 1 && srvs[0].Target == "." {
			refused++ // this service is not offered (RFC 2782)
			continue
		}
		for _, r := range srvs {
			recs = append(recs, rec{r, svc.direct})
		}
	}
	if len(recs) == 0 {
		if refused == 2 {
			return nil, nil
		}
		return []s2sTarget{{addr: net.JoinHostPort(domain, "5269")}}, nil
	}
	// Stable: each lookup's order (priority, then weight) is kept.
	slices.SortStableFunc(recs, func(a, b rec) int {
		if a.srv.Priority != b.srv.Priority {
			return int(a.srv.Priority) - int(b.srv.Priority)
		}
		if a.direct != b.direct {
			if a.direct {
				return -1
			}
			return 1
		}
		return 0
	})
	out := make([]s2sTarget, 0, len(recs))
	for _, r := range recs {
		out = append(out, s2sTarget{addr: net.JoinHostPort(strings.TrimSuffix(r.srv.Target, "."), strconv.Itoa(int(r.srv.Port))), direct: r.direct})
	}
	return out, nil
}

// openOutbound sets up an enrolled outbound stream and opens it.
func (s *Server) openOutbound(gc gnet.Conn, d *s2sDial) ([]byte, gnet.Action) {
	lk := d.link
	l := s.loopFor(gc.EventLoop())
	c := &conn{gc: gc, loop: l, ip: makePeerAddr(addrIP(gc.RemoteAddr())), tr: plainTCP{}, flags: flagS2S | flagHeaderSent}
	c.framer.SetLimits(stanza.Limits{MaxBytes: s.conf().S2S.MaxStanzaSize, MaxDepth: s.conf().C2S.MaxDepth})
	gc.SetContext(c)
	st := &s2sStream{link: lk, remote: lk.domain, local: lk.local, outbound: true}
	l.s2sAdd(c, st)
	s.fed.outbound.Add(1)
	lk.mu.Lock()
	dead := lk.dead
	if !dead {
		lk.c = c
	}
	lk.mu.Unlock()
	if dead {
		c.setReason(reasonShutdown)
		return nil, gnet.Close
	}
	// The connect deadline plays the pre-auth deadline's part.
	c.preauthAt = lk.started.Add(s.conf().S2S.ConnectTimeout).Sub(s.epoch)
	if d.direct {
		// XEP-0368: TLS first (ALPN xmpp-server); the stream header
		// follows the handshake (s2sSecured).
		cfg := s.clientTLS(lk.domain)
		cfg.NextProtos = []string{"xmpp-server"}
		s.startS2STLS(c, cfg, true)
		return nil, gnet.None
	}
	s.armDeadline(c)
	return appendS2SHeader(nil, lk.local, lk.domain, ""), gnet.None
}

// outboundElement runs the initiating side of the negotiation: STARTTLS,
// then SASL EXTERNAL when offered, else dialback (XEP-0220), as Prosody
// orders it.
func (s *Server) outboundElement(c *conn, st *s2sStream, tag stanza.StartTag, ns, local string, unit []byte) {
	switch {
	case ns == nsStream && local == "features":
		s.outboundFeatures(c, st, unit)
	case ns == nsTLS && local == "proceed":
		s.startS2STLS(c, s.clientTLS(st.remote), false)
	case ns == nsTLS && local == "failure":
		s.fail(c, stream.PolicyViolation.Err, "the peer refused TLS")
	case ns == nsSASL && local == "success":
		c.phase = phaseAuthHeader
		c.framer.Reset()
		c.write(appendS2SHeader(c.loop.scratch[:0], st.local, st.remote, ""))
	case ns == nsSASL && local == "failure":
		if !s.tryDialback(c, st) {
			s.fail(c, stream.NotAuthorized.Err, "SASL EXTERNAL failed and dialback is not possible")
		}
	case ns == nsDialback && local == "result":
		typ, _ := tag.AttrString("type")
		if typ == "valid" {
			s.linkReady(c, st)
			return
		}
		s.fail(c, stream.NotAuthorized.Err, "dialback refused")
	default:
		s.fail(c, stream.UnsupportedStanzaType.Err, "this stream carries stanzas the other way")
	}
}

// outboundFeatures acts on the receiving server's features.
func (s *Server) outboundFeatures(c *conn, st *s2sStream, unit []byte) {
	var tlsOffered, external, dialback bool
	stanza.Children(unit, func(child []byte) bool {
		t, err := stanza.ParseStartTag(child)
		if err != nil {
			return true
		}
		ns, _ := t.AttrString("xmlns")
		switch {
		case ns == nsTLS:
			tlsOffered = true
		case ns == nsSASL:
			stanza.Children(child, func(m []byte) bool {
				if v, err := stanza.Text(m); err == nil && v == "EXTERNAL" {
					external = true
				}
				return true
			})
		case ns == nsDialbackFeature:
			dialback = true
		}
		return true
	})
	switch {
	case c.phase == phaseBind:
		// Features of the stream restarted after SASL: authenticated.
		s.linkReady(c, st)
		return
	case !c.tr.secure():
		if !tlsOffered {
			s.fail(c, stream.PolicyViolation.Err, "TLS is required")
			return
		}
		c.write([]byte(`<starttls xmlns='` + nsTLS + `'/>`))
		return
	}
	// Secure and open: verify requests for the peer may go now.
	st.link.mu.Lock()
	if len(st.link.control) > 0 && !st.link.posted {
		st.link.posted = true
		st.link.mu.Unlock()
		st.link.drain(s)
	} else {
		st.link.mu.Unlock()
	}
	if external && !st.triedExt {
		st.triedExt = true
		c.write([]byte(`<auth xmlns='` + nsSASL + `' mechanism='EXTERNAL'>` + b64(st.local) + `</auth>`))
		return
	}
	st.dbSent = false
	if !dialback || !s.tryDialback(c, st) {
		s.fail(c, stream.NotAuthorized.Err, "no authentication method in common")
	}
}

// tryDialback sends db:result, unless policy needs a valid certificate
// the peer does not have (XEP-0344: no dialback to paper over it then).
func (s *Server) tryDialback(c *conn, st *s2sStream) bool {
	if st.dbSent || st.id == "" {
		return false
	}
	if !st.verified && s.cfg.S2S.RequireValidCertsFrom(st.remote) {
		return false
	}
	st.dbSent = true
	key := s.fed.dialbackKey(st.remote, st.local, st.id)
	b := append(c.loop.scratch[:0], `<db:result from='`...)
	b = stanza.AppendEscaped(b, st.local)
	b = append(b, `' to='`...)
	b = stanza.AppendEscaped(b, st.remote)
	b = append(b, `'>`+key+`</db:result>`...)
	c.write(b)
	c.loop.scratch = b[:0]
	return true
}

// endSetup takes lk out of the count of links being set up, with what it
// has queued, once it is up or gone. Called with lk.mu held.
func (s *Server) endSetup(lk *s2sLink) {
	if !lk.setup {
		return
	}
	lk.setup = false
	s.fed.pending.Add(-1)
	s.fed.pendingBytes.Add(-int64(lk.bytes))
}

// linkReady marks an outbound stream authenticated and writes what waits.
func (s *Server) linkReady(c *conn, st *s2sStream) {
	c.phase = phaseSession
	lk := st.link
	lk.mu.Lock()
	lk.ready = true
	lk.posted = true
	s.endSetup(lk)
	lk.mu.Unlock()
	st.last = c.loop.since()
	s.armIdle(c, st)
	s.log.Debug("s2s outbound authenticated", zap.String("domain", st.remote), zap.String("local", st.local))
	lk.drain(s)
}

// linkGone ends a link: it leaves the table and what it queued is bounced
// with cond. c is the stream that closed, nil when none was enrolled.
func (s *Server) linkGone(lk *s2sLink, c *conn, cond string) {
	f := s.fed
	f.mu.Lock()
	if key := (linkKey{lk.local, lk.domain}); f.links[key] == lk {
		delete(f.links, key)
	}
	f.mu.Unlock()
	lk.mu.Lock()
	if c != nil && lk.c != c && lk.c != nil {
		lk.mu.Unlock()
		return
	}
	if !lk.dead && lk.loop != nil {
		lk.loop.links.Add(-1)
	}
	lk.dead = true
	s.endSetup(lk)
	neverUp := !lk.ready
	q, ctl := lk.queue, lk.control
	lk.queue, lk.control, lk.bytes = nil, nil, 0
	lk.mu.Unlock()
	if neverUp && !s.stopping.Load() {
		// Unreachable, and no inbound stream says otherwise: the peer
		// is gone (an idle inbound stream closed in order earlier did
		// not tell).
		f.mu.Lock()
		up := f.perDomain[lk.domain] > 0
		f.mu.Unlock()
		if !up {
			s.peerGone(lk.domain)
		}
	}
	typ := "cancel"
	if cond == "remote-server-timeout" {
		typ = "wait"
	}
	for _, b := range q {
		s.bounce(b, typ, cond)
	}
	for _, b := range ctl {
		// A verify request that cannot go: its inbound stream is told.
		if tag, err := stanza.ParseStartTag(b); err == nil {
			id, _ := tag.AttrString("id")
			s.dbAnswer(id, "", false)
		}
	}
}

// bounce returns an error for b, a stanza that could not be delivered, to
// its local sender. Errors are never bounced (no loops), nor unavailable
// presence.
func (s *Server) bounce(b []byte, typ, cond string) {
	tag, err := stanza.ParseStartTag(b)
	if err != nil {
		return
	}
	t, _ := tag.AttrString("type")
	kind := string(tag.Local())
	if t == "error" || (kind == "presence" && t != "" && t != "subscribe" && t != "probe") {
		return
	}
	from, _ := tag.AttrString("from")
	to, _ := tag.AttrString("to")
	if from == "" {
		return
	}
	fl, fd, _ := splitJID(from)
	switch {
	case fd == s.cfg.Domain && fl != "":
	case fd != s.cfg.Domain && s.hosts(fd):
		// A hosted domain's own stanza (a room's copy for a remote
		// occupant): the service or component learns of the failure.
	default:
		return
	}
	id, _ := tag.AttrString("id")
	s.fed.bounced.Add(1)
	e := stanza.AppendError(nil, kind, id, to, from, typ, cond, "")
	s.deliver(nil, from, e)
}

// dbResult handles an inbound db:result (XEP-0220 2.1.2): the key is
// checked with the authoritative server over our outbound stream to it,
// unless the peer's certificate already proves the domain.
func (s *Server) dbResult(c *conn, st *s2sStream, tag stanza.StartTag, unit []byte) {
	from, _ := tag.AttrString("from")
	to, _ := tag.AttrString("to")
	answer := func(typ, cond string) {
		b := append(c.loop.scratch[:0], `<db:result from='`...)
		b = stanza.AppendEscaped(b, st.local)
		b = append(b, `' to='`...)
		b = stanza.AppendEscaped(b, from)
		b = append(b, `' type='`+typ+`'`...)
		if cond != "" {
			b = append(b, `><error type='cancel'><`+cond+` xmlns='`+nsStanzas+`'/></error></db:result>`...)
		} else {
			b = append(b, `/>`...)
		}
		c.write(b)
		c.loop.scratch = b[:0]
	}
	fj, err := jid.Parse(from)
	switch {
	case !c.tr.secure():
		s.fail(c, stream.PolicyViolation.Err, "dialback only over TLS")
		return
	case err != nil || fj.Localpart() != "" || fj.Resourcepart() != "":
		answer("error", "jid-malformed")
		return
	case to != st.local:
		// The receiving domain is the stream's (XEP-0220: keys are per
		// receiving and originating domain pair).
		answer("error", "item-not-found")
		return
	case st.remote != "" && fj.String() != st.remote:
		// One domain per stream: no piggybacking.
		answer("error", "not-acceptable")
		return
	case st.dbWait:
		answer("error", "not-acceptable")
		return
	}
	st.remote = fj.String()
	if s.cfg.S2S.RequireValidCertsFrom(st.remote) && !st.verified {
		answer("error", "not-authorized")
		return
	}
	if st.verified {
		// XEP-0344: the certificate proves the domain; no dialback round.
		if !s.s2sClaim(c, st) {
			return
		}
		s.fed.authDB.Add(1)
		answer("valid", "")
		s.s2sAuthenticated(c, st)
		return
	}
	key, err := stanza.Text(unit)
	if err != nil || key == "" {
		answer("error", "bad-request")
		return
	}
	st.dbWait = true
	f := s.fed
	f.mu.Lock()
	f.verifies[st.id] = c
	f.mu.Unlock()
	v := []byte(`<db:verify from='`)
	v = stanza.AppendEscaped(v, st.local)
	v = append(v, `' to='`...)
	v = stanza.AppendEscaped(v, st.remote)
	v = append(v, `' id='`+st.id+`'>`...)
	v = stanza.AppendEscaped(v, key)
	v = append(v, `</db:verify>`...)
	s.verifyVia(st.local, st.remote, v)
}

// verifyVia sends a db:verify request on the outbound stream from local
// to domain, opening one if needed.
func (s *Server) verifyVia(local, domain string, v []byte) {
	f := s.fed
	key := linkKey{local: local, remote: domain}
	for range 2 {
		f.mu.Lock()
		lk := f.links[key]
		fresh := lk == nil
		if fresh && s.stopping.Load() {
			f.mu.Unlock()
			break
		}
		if fresh && f.pending.Load() >= int64(s.conf().S2S.MaxPendingLinks) {
			f.mu.Unlock()
			f.pendingFull.Add(1)
			break
		}
		if fresh {
			lk = &s2sLink{domain: domain, local: local, started: time.Now(), loop: s.linkLoop(), setup: true}
			if lk.loop == nil {
				f.mu.Unlock()
				break
			}
			f.pending.Add(1)
			f.links[key] = lk
		}
		f.mu.Unlock()
		if fresh {
			s.dial(lk)
		}
		if lk.pushControl(s, v) {
			return
		}
	}
	if tag, err := stanza.ParseStartTag(v); err == nil {
		id, _ := tag.AttrString("id")
		s.dbAnswer(id, "", false)
	}
}

// dbVerify handles db:verify: a request (no type) we answer as the
// authoritative server, on the stream it came on; an answer (type) to a
// request of ours, handed to the inbound stream waiting for it.
func (s *Server) dbVerify(c *conn, st *s2sStream, tag stanza.StartTag, unit []byte) {
	from, _ := tag.AttrString("from")
	to, _ := tag.AttrString("to")
	id, _ := tag.AttrString("id")
	if typ, ok := tag.AttrString("type"); ok {
		if st.outbound {
			s.dbAnswer(id, from, typ == "valid")
		}
		return
	}
	if !c.tr.secure() || st.outbound {
		s.fail(c, stream.PolicyViolation.Err, "dialback verification only over an inbound TLS stream")
		return
	}
	key, _ := stanza.Text(unit)
	typ := "invalid"
	if s.hosts(to) && key != "" && hmacEqual(key, s.fed.dialbackKey(from, to, id)) {
		typ = "valid"
	}
	b := append(c.loop.scratch[:0], `<db:verify from='`...)
	b = stanza.AppendEscaped(b, to)
	b = append(b, `' to='`...)
	b = stanza.AppendEscaped(b, from)
	b = append(b, `' id='`...)
	b = stanza.AppendEscaped(b, id)
	b = append(b, `' type='`+typ+`'/>`...)
	c.write(b)
	c.loop.scratch = b[:0]
}

// dbAnswer completes the dialback of the inbound stream whose id is id.
func (s *Server) dbAnswer(id, from string, valid bool) {
	f := s.fed
	f.mu.Lock()
	c := f.verifies[id]
	delete(f.verifies, id)
	f.mu.Unlock()
	if c == nil {
		return
	}
	s.onLoop(c, func() {
		st := s2sOf(c)
		if st == nil || !st.dbWait || (from != "" && from != st.remote) {
			return
		}
		st.dbWait = false
		if valid && !s.s2sClaim(c, st) {
			return
		}
		b := append(c.loop.scratch[:0], `<db:result from='`...)
		b = stanza.AppendEscaped(b, st.local)
		b = append(b, `' to='`...)
		b = stanza.AppendEscaped(b, st.remote)
		if !valid {
			b = append(b, `' type='invalid'/>`...)
			c.write(b)
			c.loop.scratch = b[:0]
			s.fed.authFailed.Add(1)
			s.fail(c, stream.NotAuthorized.Err, "dialback key not confirmed")
			return
		}
		b = append(b, `' type='valid'/>`...)
		c.write(b)
		c.loop.scratch = b[:0]
		s.fed.authDB.Add(1)
		s.s2sAuthenticated(c, st)
	})
}

func hmacEqual(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	var v byte
	for i := 0; i < len(a); i++ {
		v |= a[i] ^ b[i]
	}
	return v == 0
}

// fromRemote routes a stanza from an authenticated peer to a local JID as
// a local one would be: the modules with a remote side first
// (hook.Inbound), then sessions, then for a message nobody took the
// Undelivered stage (offline storage), else the RFC 6121 8.5 answer, sent
// back over federation.
func (s *Server) fromRemote(c *conn, tag stanza.StartTag, local, from string, to jid.JID, unit []byte) {
	kind, _ := hook.KindOf(tag.Local())
	typ, _ := tag.AttrString("type")
	st := &c.loop.stanza
	*st = hook.Stanza{Kind: kind, Type: typ, From: from, To: to.String(), Tag: tag, Raw: unit}
	st.ID, _ = tag.AttrString("id")
	if !s.address(st) {
		return
	}
	if kind == hook.IQ {
		st.Payload, st.NS, st.Name, _ = payloadOf(unit)
	}
	cx := c.loop.ctxFor(c, st)
	defer cx.Reset(nil, nil, nil)
	if st.Domain != s.cfg.Domain {
		// Another hosted domain: the module serving it, or its
		// component; the account-side modules have nothing to do there.
		if h := s.hooks.Domain(st.Domain); h != nil {
			h(cx, st)
			return
		}
		s.toComponent(st.Domain, bytes.Clone(unit)) // queued: its own bytes
		return
	}
	for _, m := range s.fed.inbound {
		if m.InboundStanza(cx, st) == hook.Stop {
			return
		}
	}
	if st.Local == "" || (kind == hook.IQ && st.Resource == "") {
		// To the server or an account: requests go to the modules that
		// answer remote senders; messages and presence nobody took are
		// dropped.
		if kind == hook.IQ {
			s.remoteIQ(cx, st)
		}
		return
	}
	if s.deliverTo(c.loop, st.Local, st.Domain, st.Resource, unit) > 0 {
		return
	}
	switch {
	case kind == hook.Presence:
		return
	case kind == hook.IQ:
		cx.ReplyError("cancel", "service-unavailable", "")
		return
	case typ == "error" || typ == "headline":
		return
	case typ == "groupchat":
		// RFC 6121 8.5.2.2.1, 8.5.3.2.1: an error to the sender, so that
		// a remote room drops an occupant whose session is gone.
		cx.ReplyError("cancel", "service-unavailable", "")
		return
	}
	if st.Addr == hook.ToFull {
		st.Addr = hook.ToBare // undelivered to a full JID: tried as the bare JID
	}
	if s.hooks.Stanza(cx, hook.Undelivered, st) == hook.Stop {
		return
	}
	cx.ReplyError("cancel", "service-unavailable", "")
}

// remoteIQ answers an iq from a remote sender to the server or to an
// account's bare JID with the module registered for its payload in
// hook.PhaseRemote: only handlers written for senders without a local
// session see it. The reply goes back over federation (conn.Write).
func (s *Server) remoteIQ(cx *hook.Ctx, st *hook.Stanza) {
	var t hook.IQType
	switch st.Type {
	case "get":
		t = hook.IQGet
	case "set":
		t = hook.IQSet
	case "result", "error":
		return // answers nobody waited for (the modules' were taken)
	default:
		cx.ReplyError("modify", "bad-request", "")
		return
	}
	if st.Payload == nil {
		cx.ReplyError("modify", "bad-request", "")
		return
	}
	if st.Addr == hook.ToHost && st.Resource != "" {
		cx.ReplyError("cancel", "service-unavailable", "")
		return
	}
	h := s.hooks.IQ(hook.PhaseRemote, t, st.Addr, st.NS, st.Name)
	if h == nil {
		cx.ReplyError("cancel", "service-unavailable", "")
		return
	}
	if err := h(cx, st); err != nil {
		s.log.Warn("module failed", zap.String("ns", st.NS), zap.String("from", st.From), zap.Error(err))
		cx.ReplyError("cancel", "internal-server-error", "")
	}
}

// s2sListen returns the gnet addresses of the s2s listeners, resolving
// port 0 first.
func (s *Server) s2sListen() ([]string, error) {
	f := s.fed
	var addrs []string
	var err error
	if s.cfg.S2S.Listen != "" {
		if f.listen, err = s.ports.concrete(s.cfg.S2S.Listen); err != nil {
			return nil, err
		}
		f.port = portOf(f.listen)
		addrs = append(addrs, "tcp://"+f.listen)
	}
	if s.cfg.S2S.DirectTLSListen != "" {
		if f.directListen, err = s.ports.concrete(s.cfg.S2S.DirectTLSListen); err != nil {
			return nil, err
		}
		f.directPort = portOf(f.directListen)
		addrs = append(addrs, "tcp://"+f.directListen)
	}
	comp, err := s.componentListen()
	return append(addrs, comp...), err
}

// S2SDirectTLSAddr returns the s2s direct TLS listener's address, or ""
// when it is off.
func (s *Server) S2SDirectTLSAddr() string { return s.fed.directListen }

// S2SAddr returns the s2s listener's address, or nil when it is off.
func (s *Server) S2SAddr() net.Addr {
	if s.fed.listen == "" {
		return nil
	}
	a, _ := net.ResolveTCPAddr("tcp", s.fed.listen)
	return a
}
