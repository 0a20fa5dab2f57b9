// Package sm implements XEP-0198 stream management (urn:xmpp:sm:3): acks
// both ways, the queue of stanzas the client has not acknowledged, and
// sessions kept after their connection is lost (parked) until the client
// resumes them on a new connection, on any event loop.
//
// The module's outbound filter must be the last of the chain: filters
// before it (client state indication) may hold or drop stanzas, and what
// stream management counts is what it passes to the connection. Its state
// lives in a session slot, allocated only for sessions that enable it.
//
// A parked session keeps its JID, counters, token, presence and queue;
// its connection, TLS state, framer and buffers are gone (the core
// releases them). Its deadline is a timer in its loop's wheel. On expiry,
// on overflow or when the session ends otherwise with stanzas
// unacknowledged, the queue's messages go to offline storage, its iq
// requests are answered with an error, its presence is dropped.
package sm

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/krill-xmpp/krill/config"
	"github.com/krill-xmpp/krill/hook"
	"github.com/krill-xmpp/krill/stanza"
)

// NS is the XEP-0198 namespace.
const NS = "urn:xmpp:sm:3"

const nsStanzas = "urn:ietf:params:xml:ns:xmpp-stanzas"

// Keeper stores a message the client never acknowledged for later
// delivery; the offline module implements it.
type Keeper interface {
	Keep(ctx context.Context, cfg *config.Config, user string, b []byte) error
}

// Module is stream management. Offline may be nil (unacknowledged
// messages of an ended session are then dropped, counted). Use it by
// pointer.
type Module struct {
	Offline Keeper

	slot hook.Slot
	out  hook.Outbound
	// host is set by the first <enable/>: the outbound filter, which
	// gets no Ctx, reads the live configuration through it.
	host atomic.Pointer[hostRef]

	mu sync.Mutex
	// accounts holds the resumable sessions of each account with one: the
	// head of that account's list (through state.anext), where a
	// session moves to the end when it parks, so that its parked ones are
	// in the order they parked. A resumption looks its token up there:
	// a token is only ever valid for its own account, and an account has
	// few sessions, so one map serves both (no map of all tokens).
	accounts map[string]*state
	// head and tail are the oldest and newest parked sessions, a list
	// through state.prev and state.next. The lists are intrusive: a
	// parked session costs the server no other allocation than its state.
	head, tail *state
	parked     int

	parkedNow, parkedBytes                                                 atomic.Int64
	resumed, resumeFailed, overflows, expired, evicted, closedParked, lost atomic.Uint64
	parks                                                                  atomic.Uint64
	// migratedOut and migratedIn count sessions handed to and taken from
	// other nodes of a cluster (migrate.go).
	migratedOut, migratedIn atomic.Uint64
	// expireFn is expire as a func value made once, not per park.
	expireFn func(*hook.Ctx)
}

// token is a resumption id: 128 random bits, base64url on the wire.
type token [16]byte

// tokenLen is the length of a token's base64url form, without padding.
const tokenLen = 22

// state is a session's stream management state, in its slot.
type state struct {
	in    uint32 // stanzas handled from the client (h sent in <a/>)
	acked uint32 // the client's last h: stanzas sent before the queue
	buf   []byte // unacknowledged stanzas, wire form, in order
	ents  []ent  // one per queued stanza
	unreq uint32 // stanzas sent since the last <r/>
	// timeout is how long the session is kept when parked, in seconds:
	// sm.resume_timeout, or less if the client asked for less.
	timeout uint32
	// (The deadline of a parked session is not kept here: the core
	// cancels a session's timers when it ends or is taken over.)

	// parked: no connection; overflow: the queue overflowed and the
	// session is ending; resumable: it has a token.
	parked, overflow, resumable bool

	// Guarded by Module.mu: the session that holds this state (it moves
	// on resumption), whether it is in the parked list and in its
	// account's list, and its links.
	listed, member bool
	tok            token
	sess           hook.Session
	prev, next     *state // all parked sessions, oldest first
	// anext links the account's resumable sessions: singly, since an
	// account has few (the core's session table scans them as often).
	anext *state
}

type hostRef struct{ h hook.Host }

// ent is one queued stanza: its length in buf and when it was queued
// (Unix seconds), for the delay stamp of a resend.
type ent struct{ n, at uint32 }

// Name implements hook.Module.
func (*Module) Name() string { return "sm" }

// Register implements hook.Module.
func (m *Module) Register(r *hook.Registrar) error {
	m.expireFn = m.expire
	m.accounts = make(map[string]*state)
	m.slot = r.Slot()
	m.out = r.Outbound(m.filter)
	feature := func(b []byte) []byte { return append(b, `<sm xmlns='`+NS+`'/>`...) }
	r.StreamFeature(hook.PhaseBind, true, feature)
	r.StreamFeature(hook.PhaseBind, false, feature)
	r.Nonza(hook.PhaseBound, NS, "enable", m.enable)
	r.Nonza(hook.PhaseBound, NS, "r", m.request)
	r.Nonza(hook.PhaseBound, NS, "a", m.ack)
	r.Nonza(hook.PhaseBind, NS, "resume", m.resume)
	// XEP-0198 section 6: resumption inside SASL2's <authenticate/>, and
	// enabling inside Bind 2's <bind/>.
	r.SASL2Feature(func(b []byte) []byte { return append(b, `<sm xmlns='`+NS+`'/>`...) })
	r.SASL2Inline(NS, "resume", hook.SASL2Inline{Request: parseInlineResume, Success: m.inlineResume})
	r.Bind2Feature(NS)
	r.Bind2Inline(NS, "enable", func(c *hook.Ctx, elem, b []byte) []byte { return m.enableTo(c, elem, b) })
	r.Nonza(hook.PhaseBind, NS, "enable", func(c *hook.Ctx, _ []byte) error {
		c.Conn.WriteNonza([]byte(`<failed xmlns='` + NS + `'><unexpected-request xmlns='` + nsStanzas + `'/></failed>`))
		return nil
	})
	r.Received(func(s hook.Session) {
		if st, _ := s.Slot(m.slot).(*state); st != nil {
			st.in++ // wraps at 2^32, as XEP-0198 4 says
		}
	})
	// An idle session is asked for an ack instead of pinged: the answer
	// proves it alive and trims its queue.
	r.Idle(func(s hook.Session) bool {
		if m.get(s) == nil {
			return false
		}
		s.Pass(m.out, []byte(`<r xmlns='`+NS+`'/>`))
		return true
	})
	r.On(hook.Closing, m.closing)
	r.On(hook.Closed, m.closed)
	return nil
}

func (m *Module) get(s hook.Session) *state {
	st, _ := s.Slot(m.slot).(*state)
	return st
}

func failed(cond string) []byte {
	return []byte(`<failed xmlns='` + NS + `'><` + cond + ` xmlns='` + nsStanzas + `'/></failed>`)
}

// enable answers <enable/> (XEP-0198 3).
func (m *Module) enable(c *hook.Ctx, elem []byte) error {
	c.Conn.WriteNonza(m.enableTo(c, elem, c.Scratch()))
	return nil
}

// enableTo enables stream management for the session and appends the
// answer, <enabled/> or <failed/>, to b.
func (m *Module) enableTo(c *hook.Ctx, elem, b []byte) []byte {
	if m.get(c.Session) != nil {
		return append(b, failed("unexpected-request")...)
	}
	if m.host.Load() == nil {
		m.host.Store(&hostRef{c.Host})
	}
	st := &state{}
	c.Session.SetSlot(m.slot, st)
	tag, _ := stanza.ParseStartTag(elem)
	resume, _ := tag.AttrString("resume")
	cfg := c.Host.Config().SM
	b = append(b, `<enabled xmlns='`+NS+`'`...)
	if (resume == "true" || resume == "1") && cfg.ResumeTimeout > 0 {
		var tok token
		_, _ = rand.Read(tok[:])
		m.mu.Lock()
		st.tok, st.sess, st.resumable = tok, c.Session, true
		m.joinLocked(st)
		m.mu.Unlock()
		st.timeout = uint32(min(max(cfg.ResumeTimeout/time.Second, 1), 1<<32-1))
		// The client's preferred maximum (XEP-0198 3), when lower.
		if v, ok := tag.AttrString("max"); ok {
			if want, err := strconv.ParseUint(v, 10, 32); err == nil && want > 0 && uint32(want) < st.timeout {
				st.timeout = uint32(want)
			}
		}
		b = append(b, ` id='`...)
		b = base64.RawURLEncoding.AppendEncode(b, tok[:])
		b = append(b, `' resume='true' max='`...)
		b = strconv.AppendUint(b, uint64(st.timeout), 10)
		b = append(b, '\'')
	}
	return append(b, `/>`...)
}

// request answers <r/> with the inbound count.
func (m *Module) request(c *hook.Ctx, _ []byte) error {
	st := m.get(c.Session)
	if st == nil {
		c.Conn.WriteNonza(failed("unexpected-request"))
		return nil
	}
	b := append(c.Scratch(), `<a xmlns='`+NS+`' h='`...)
	b = strconv.AppendUint(b, uint64(st.in), 10)
	c.Conn.WriteNonza(append(b, `'/>`...))
	return nil
}

// ack takes the client's <a h/>: the queue loses what it acknowledges.
func (m *Module) ack(c *hook.Ctx, elem []byte) error {
	st := m.get(c.Session)
	if st == nil {
		c.Conn.WriteNonza(failed("unexpected-request"))
		return nil
	}
	h, ok := attrH(elem)
	if !ok {
		c.Conn.Fail("bad-request", "the h of an ack must be an unsigned 32-bit number")
		return nil
	}
	if !st.trim(h) {
		c.Conn.Fail("undefined-condition", "acknowledged more stanzas than were sent")
	}
	return nil
}

func attrH(elem []byte) (uint32, bool) {
	tag, err := stanza.ParseStartTag(elem)
	if err != nil {
		return 0, false
	}
	v, _ := tag.AttrString("h")
	h, err := strconv.ParseUint(v, 10, 32)
	return uint32(h), err == nil
}

// trim drops the stanzas up to h from the queue; false when h
// acknowledges stanzas never sent. Counters wrap at 2^32.
func (st *state) trim(h uint32) bool {
	n := h - st.acked
	if uint64(n) > uint64(len(st.ents)) {
		return false
	}
	k := 0
	for _, e := range st.ents[:n] {
		k += int(e.n)
	}
	st.buf = st.buf[:copy(st.buf, st.buf[k:])]
	st.ents = st.ents[:copy(st.ents, st.ents[n:])]
	st.acked = h
	return true
}

// filter counts and queues what is written to the session, and writes
// it, followed by <r/> every sm.request_every stanzas; a parked session's
// stanzas are only queued.
func (m *Module) filter(s hook.Session, b []byte) ([]byte, hook.Verdict) {
	st := m.get(s)
	if st == nil {
		return b, hook.Continue
	}
	if st.parked {
		// A parked queue grows for minutes and is kept: tightly (append
		// would double it), at an amortised cost of copying each byte
		// about eight times.
		st.buf = growTight(st.buf, len(b))
		st.ents = growTight(st.ents, 1)
		m.parkedBytes.Add(int64(len(b)))
	}
	st.buf = append(st.buf, b...)
	st.ents = append(st.ents, ent{n: uint32(len(b)), at: uint32(time.Now().Unix())})
	var cfg config.SM
	if !st.overflow {
		cfg = m.host.Load().h.Config().SM
		if len(st.ents) > cfg.MaxQueueStanzas || len(st.buf) > cfg.MaxQueueBytes {
			// Ended like an expiry: the queue's messages are kept.
			st.overflow = true
			m.overflows.Add(1)
			s.Close("resource-constraint", "too many unacknowledged stanzas")
		}
	}
	if st.parked || st.overflow {
		return nil, hook.Stop
	}
	s.Pass(m.out, b)
	st.unreq++
	if cfg.RequestEvery > 0 && st.unreq >= uint32(cfg.RequestEvery) {
		st.unreq = 0
		s.Pass(m.out, []byte(`<r xmlns='`+NS+`'/>`))
	}
	return nil, hook.Stop
}

// growTight returns s with room for k more elements, reallocated with an
// eighth to spare when it has not.
func growTight[T any](s []T, k int) []T {
	need := len(s) + k
	if need <= cap(s) {
		return s
	}
	out := make([]T, len(s), need+need/8)
	copy(out, s)
	return out
}

// closing parks a resumable session whose connection was lost.
func (m *Module) closing(c *hook.Ctx, _ hook.Event) hook.Verdict {
	st := m.get(c.Session)
	if st == nil || !st.resumable || !c.Lost || st.overflow {
		return hook.Continue
	}
	tm, ok := c.Session.(hook.Timers)
	if !ok {
		return hook.Continue
	}
	cfg := c.Host.Config().SM
	if st.parked {
		// Parked already: a resumption's new connection went while the
		// state travelled to it. The entry now names the session that
		// holds the state; the old session's timer was cancelled at the
		// handover.
		m.mu.Lock()
		st.sess = c.Session
		m.mu.Unlock()
		tm.AfterFunc(time.Duration(st.timeout)*time.Second, m.expireFn)
		m.parks.Add(1)
		return hook.Stop
	}
	st.parked = true
	st.unreq = 0
	if cap(st.buf) > 2*len(st.buf)+64 {
		st.buf = slices.Clip(slices.Clone(st.buf)) // compact while parked
	}
	switch {
	case len(st.ents) == 0:
		st.ents = nil // Clip would keep the array
	case cap(st.ents) > len(st.ents):
		st.ents = slices.Clone(st.ents)
	}
	if len(st.buf) == 0 {
		st.buf = nil
	}
	tm.AfterFunc(time.Duration(st.timeout)*time.Second, m.expireFn)
	m.parkedNow.Add(1)
	m.parkedBytes.Add(int64(len(st.buf)))
	var evict []hook.Session
	m.mu.Lock()
	st.sess = c.Session
	m.parkLocked(st)
	if lim := cfg.MaxParkedPerAccount; lim > 0 {
		var oldest *state
		n := 0
		for o := m.accounts[st.sess.Local()]; o != nil; o = o.anext {
			if o.listed {
				if n == 0 {
					oldest = o
				}
				n++
			}
		}
		if n > lim {
			m.unparkLocked(oldest)
			evict = append(evict, oldest.sess)
		}
	}
	for cfg.MaxParkedTotal > 0 && m.parked > cfg.MaxParkedTotal && m.head != nil {
		old := m.head
		m.unparkLocked(old)
		evict = append(evict, old.sess)
	}
	m.mu.Unlock()
	for _, s := range evict {
		m.evicted.Add(1)
		s.Close("connection-timeout", "")
	}
	m.parks.Add(1)
	return hook.Stop
}

// joinLocked appends st to its account's list of resumable sessions.
func (m *Module) joinLocked(st *state) {
	if st.member {
		return
	}
	st.member, st.anext = true, nil
	local := st.sess.Local()
	p := m.accounts[local]
	if p == nil {
		m.accounts[local] = st
		return
	}
	for p.anext != nil {
		p = p.anext
	}
	p.anext = st
}

// leaveLocked removes st from its account's list: its token is no
// longer valid.
func (m *Module) leaveLocked(st *state) {
	if !st.member {
		return
	}
	st.member = false
	local := st.sess.Local()
	switch h := m.accounts[local]; {
	case h == st && st.anext == nil:
		delete(m.accounts, local)
	case h == st:
		m.accounts[local] = st.anext
	default:
		for p := h; p != nil; p = p.anext {
			if p.anext == st {
				p.anext = st.anext
				break
			}
		}
	}
	st.anext = nil
}

// parkLocked appends st to the parked list, as the newest, and moves it
// to the end of its account's list.
func (m *Module) parkLocked(st *state) {
	if st.listed {
		return
	}
	st.listed = true
	m.parked++
	st.prev, st.next = m.tail, nil
	if m.tail != nil {
		m.tail.next = st
	} else {
		m.head = st
	}
	m.tail = st
	m.leaveLocked(st)
	m.joinLocked(st)
}

// unparkLocked removes st from the parked list (not from its account's).
func (m *Module) unparkLocked(st *state) {
	if !st.listed {
		return
	}
	st.listed = false
	m.parked--
	if st.prev != nil {
		st.prev.next = st.next
	} else {
		m.head = st.next
	}
	if st.next != nil {
		st.next.prev = st.prev
	} else {
		m.tail = st.prev
	}
	st.prev, st.next = nil, nil
}

// expire ends a parked session whose client did not come back.
func (m *Module) expire(c *hook.Ctx) {
	m.expired.Add(1)
	c.Session.Close("connection-timeout", "")
}

// resume answers <resume previd h/> after authentication: the parked (or
// still connected) session is taken over by this connection.
func (m *Module) resume(c *hook.Ctx, elem []byte) error {
	tag, _ := stanza.ParseStartTag(elem)
	previd, _ := tag.AttrString("previd")
	h, hok := attrH(elem)
	m.takeOver(c, previd, h, hok, func(c *hook.Ctx, b []byte, ok bool) {
		c.Conn.WriteNonza(b)
		if !ok {
			// Counted like a failed login (preauth.max_failed_auth): the
			// connection is still before binding, under the pre-auth
			// policy.
			c.Conn.CountFailure()
		}
	})
	return nil
}

// inlineRequest is a <resume/> inside SASL2's <authenticate/>, kept for
// the exchange's outcome.
type inlineRequest struct {
	previd string
	h      uint32
	hok    bool
}

// parseInlineResume reads the <resume/> of a SASL2 request.
func parseInlineResume(_ *hook.Auth, elem []byte) (any, error) {
	tag, _ := stanza.ParseStartTag(elem)
	previd, _ := tag.AttrString("previd")
	h, hok := attrH(elem)
	return &inlineRequest{previd: previd, h: h, hok: hok}, nil
}

// inlineResume resumes a session once SASL2 authenticated the account:
// <resumed/> or <failed/> goes into <success/> (XEP-0198 section 6). A
// failure is not counted as a failed login: the account is
// authenticated, and a token is only ever valid for its own account.
func (m *Module) inlineResume(c *hook.Ctx, _ *hook.Auth, state any, done func([]byte, bool)) {
	r, _ := state.(*inlineRequest)
	if r == nil {
		done(failed("item-not-found"), false)
		return
	}
	m.takeOver(c, r.previd, r.h, r.hok, func(_ *hook.Ctx, b []byte, ok bool) { done(b, ok) })
}

// takeOver resumes the session whose token is previd, the client having
// handled h stanzas, on c's connection. out gets the answer, <resumed/>
// (ok) or <failed/>, to write before the queue is resent.
func (m *Module) takeOver(c *hook.Ctx, previd string, h uint32, hok bool, out func(c *hook.Ctx, b []byte, ok bool)) {
	var old hook.Session
	var tok token
	if n, err := base64.RawURLEncoding.Decode(tok[:], []byte(previd)); err == nil && n == len(tok) && len(previd) == tokenLen {
		m.mu.Lock()
		for e := m.accounts[c.Session.Local()]; e != nil; e = e.anext {
			if subtle.ConstantTimeCompare(e.tok[:], tok[:]) == 1 {
				old = e.sess
				break
			}
		}
		m.mu.Unlock()
	}
	cont := func(c *hook.Ctx, ok bool) {
		st := m.get(c.Session)
		if !ok || st == nil {
			m.resumeFailed.Add(1)
			out(c, failed("item-not-found"), false)
			return
		}
		m.mu.Lock()
		m.unparkLocked(st)
		st.sess = c.Session
		m.mu.Unlock()
		if st.parked {
			m.parkedNow.Add(-1)
			m.parkedBytes.Add(-int64(len(st.buf)))
		}
		st.parked = false // the core cancelled the old session's timer
		if !st.trim(h) {
			c.Conn.Fail("undefined-condition", "acknowledged more stanzas than were sent")
			return
		}
		m.resumed.Add(1)
		b := append(c.Scratch(), `<resumed xmlns='`+NS+`' previd='`...)
		b = base64.RawURLEncoding.AppendEncode(b, st.tok[:])
		b = append(b, `' h='`...)
		b = strconv.AppendUint(b, uint64(st.in), 10)
		out(c, append(b, `'/>`...), true)
		if c.Conn == nil {
			return
		}
		domain := c.Host.Domain()
		off := 0
		for _, q := range st.ents {
			raw := st.buf[off : off+int(q.n)]
			off += int(q.n)
			c.Session.Pass(m.out, withDelay(raw, domain, time.Unix(int64(q.at), 0)))
		}
		if len(st.ents) > 0 {
			c.Session.Pass(m.out, []byte(`<r xmlns='`+NS+`'/>`))
		}
	}
	if old == nil && hok && len(previd) == tokenLen {
		// Not here: in a cluster, another node may hold it.
		if rr, ok := c.Conn.(hook.RemoteResumer); ok {
			rr.ResumeRemote(previd, cont)
			return
		}
	}
	r, ok := c.Conn.(hook.Resumer)
	if old == nil || !ok || !hok {
		m.resumeFailed.Add(1)
		out(c, failed("item-not-found"), false)
		return
	}
	r.Resume(old, cont)
}

// closed handles what the client never acknowledged when the session
// ends: messages to offline storage, iq requests answered with an error,
// the rest dropped.
func (m *Module) closed(c *hook.Ctx, _ hook.Event) hook.Verdict {
	st := m.get(c.Session)
	if st == nil {
		return hook.Continue
	}
	c.Session.SetSlot(m.slot, nil)
	// The parked session's deadline, if any, the core cancels after
	// Closed.
	if st.resumable {
		m.mu.Lock()
		m.unparkLocked(st)
		if st.sess == c.Session {
			m.leaveLocked(st)
		}
		m.mu.Unlock()
	}
	if st.parked {
		m.closedParked.Add(1)
		m.parkedNow.Add(-1)
		m.parkedBytes.Add(-int64(len(st.buf)))
	}
	if len(st.ents) == 0 {
		return hook.Continue
	}
	buf, ents := st.buf, st.ents
	host, user, full := c.Host, c.Session.Local(), c.Session.Full()
	log := c.Log
	job := func(ctx context.Context) {
		off := 0
		for _, q := range ents {
			raw := buf[off : off+int(q.n)]
			off += int(q.n)
			m.dispose(ctx, host, log, user, full, raw)
		}
	}
	if !host.Go(job) {
		m.lost.Add(uint64(len(ents)))
		log.Warn("stream management queue dropped: worker pool full", zap.String("jid", full), zap.Int("stanzas", len(ents)))
	}
	return hook.Continue
}

// dispose handles one unacknowledged stanza of an ended session. Runs
// on a worker.
func (m *Module) dispose(ctx context.Context, host hook.Host, log *zap.Logger, user, full string, raw []byte) {
	tag, err := stanza.ParseStartTag(raw)
	if err != nil {
		return
	}
	kind, _ := hook.KindOf(tag.Local())
	typ, _ := tag.AttrString("type")
	from, _ := tag.AttrString("from")
	switch kind {
	case hook.Message:
		if m.Offline == nil {
			m.lost.Add(1)
			return
		}
		if err := m.Offline.Keep(ctx, host.Config(), user, raw); err != nil {
			m.lost.Add(1)
			log.Debug("unacknowledged message not stored", zap.String("jid", full), zap.Error(err))
		}
	case hook.IQ:
		if (typ != "get" && typ != "set") || from == "" {
			return
		}
		id, _ := tag.AttrString("id")
		host.Deliver(from, stanza.AppendError(nil, "iq", id, full, from, "cancel", "service-unavailable", ""))
	}
}

// withDelay returns a copy of b with an XEP-0203 delay element saying
// when the server first sent it; iq stanzas are copied unchanged.
func withDelay(b []byte, from string, at time.Time) []byte {
	if tag, err := stanza.ParseStartTag(b); err != nil || string(tag.Local()) == "iq" {
		return slices.Clone(b)
	}
	return stanza.WithDelay(b, from, at)
}

// Counters implements hook.Counter.
func (m *Module) Counters(fn func(event string, n uint64)) {
	fn("parked_now", uint64(max(m.parkedNow.Load(), 0)))
	fn("parks", m.parks.Load())
	fn("parked_bytes", uint64(max(m.parkedBytes.Load(), 0)))
	fn("resumed", m.resumed.Load())
	fn("resume_failed", m.resumeFailed.Load())
	fn("overflows", m.overflows.Load())
	fn("expired", m.expired.Load())
	fn("evicted", m.evicted.Load())
	fn("closed_parked", m.closedParked.Load())
	fn("unacked_lost", m.lost.Load())
	fn("migrated_out", m.migratedOut.Load())
	fn("migrated_in", m.migratedIn.Load())
}
