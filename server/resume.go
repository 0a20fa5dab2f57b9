package server

import (
	"context"
	"time"

	"github.com/panjf2000/gnet/v2"
	"go.uber.org/zap"
	"mellium.im/xmpp/stream"

	"github.com/krill-xmpp/krill/hook"
	"github.com/krill-xmpp/krill/stanza"
	"github.com/krill-xmpp/krill/timerwheel"
)

// Sessions that outlive their connection (XEP-0198 stream management, as
// a module): their deadlines and their takeover by a new connection.
//
// Invariant: a session object never changes loop. A resumption on another
// loop does not move the parked session; it moves the parked session's
// state into the new connection's session, in two steps that each run on
// the loop that owns what they touch:
//
//  1. on the old session's loop (handOver): the old session is marked gone
//     with a forward to the new one (so that a delivery that found it in
//     the session table reaches the new one), its connection, if it still
//     has one, is closed without ending the session (after what its
//     mailbox held has gone through its outbound chain, into the module's
//     queue), and its state is copied out and cleared;
//  2. on the new connection's loop (attach): the state is installed, the
//     new session replaces the old one in the table, the module's
//     continuation answers <resumed/> and resends its queue, and only then
//     are the deliveries the new session received meanwhile written: its
//     mailbox is held (posted set, so no drain is queued) from before step
//     1 until the end of step 2.
//
// The new connection's input is paused from the request to the end of
// step 2, and its close meanwhile leaves the session to step 2 (resuming),
// which then offers the session to the Closing veto again.

var (
	_ hook.Timers  = (*session)(nil)
	_ hook.Resumer = (*conn)(nil)
)

// sessTimer is one deadline of a session, in its loop's session wheel.
// It is allocated only when a module arms one.
type sessTimer struct {
	t    timerwheel.Timer[*sessTimer]
	sess *session
	fn   func(*hook.Ctx)
	next *sessTimer // the session's armed timers, a list from session.timers
}

// Stop implements hook.Timer.
func (t *sessTimer) Stop() bool {
	t.sess.unlinkTimer(t)
	return t.sess.loop.swheel.Cancel(&t.t)
}

// AfterFunc implements hook.Timers.
func (s *session) AfterFunc(d time.Duration, fn func(*hook.Ctx)) hook.Timer {
	t := &sessTimer{sess: s, fn: fn, next: s.timers}
	s.timers = t
	s.loop.swheel.ArmAfter(&t.t, t, d)
	return t
}

// unlinkTimer removes t from the session's armed timers.
func (s *session) unlinkTimer(t *sessTimer) {
	for p := &s.timers; *p != nil; p = &(*p).next {
		if *p == t {
			*p = t.next
			t.next = nil
			return
		}
	}
}

// stopTimers cancels the session's armed timers: it has ended or been
// taken over, and the wheel should not keep it until they are due.
func (s *session) stopTimers() {
	for t := s.timers; t != nil; {
		next := t.next
		s.loop.swheel.Cancel(&t.t)
		t.next = nil
		t = next
	}
	s.timers = nil
}

// onSessionTimer runs a session deadline on its loop, unless the session
// has ended or been taken over.
func (s *Server) onSessionTimer(t *sessTimer) {
	sess := t.sess
	sess.unlinkTimer(t)
	sess.mu.Lock()
	gone := sess.gone
	sess.mu.Unlock()
	if gone {
		return
	}
	if c := sess.conn; c != nil {
		defer s.contain(c, nil)
	} else {
		defer s.containDetached()
	}
	cx := sess.loop.sessionCtx(sess)
	defer cx.Reset(nil, nil, nil)
	t.fn(cx)
}

// handedOver is the state a resumption moves from the old session to the
// new one.
type handedOver struct {
	full      string
	resOff    int32
	slots     []any
	flags     uint32
	priority  int32
	available bool
	last      []byte
}

// Resume implements hook.Resumer.
func (c *conn) Resume(old hook.Session, then func(*hook.Ctx, bool)) {
	s := c.loop.srv
	o, _ := old.(*session)
	n := c.sess
	if o == nil || n == nil || o == n || c.phase != phaseBind || o.local != n.local || n.resuming || o.loop == nil {
		then(c.loop.ctxFor(c, nil), false)
		return
	}
	c.flags |= flagWorkPending
	n.resuming = true
	n.mu.Lock()
	n.posted = true // held until attach
	n.mu.Unlock()
	err := o.loop.el.Execute(context.Background(), gnet.RunnableFunc(func(context.Context) error {
		s.handOver(o, n, c, then)
		return nil
	}))
	if err != nil {
		s.resumeFailed(c, n, then)
	}
}

// containDetached stops a panic in work for a session without a
// connection (a parked one's deadline, a handover) from taking down the
// event loop: it is logged with its stack and counted.
func (s *Server) containDetached() {
	if r := recover(); r != nil {
		s.stats.panics.Add(1)
		s.log.Error("panic handling a session without a connection", zap.Any("panic", r), zap.Stack("stack"))
	}
}

// handOver is step 1, on the old session's loop.
func (s *Server) handOver(o, n *session, c *conn, then func(*hook.Ctx, bool)) {
	defer s.containDetached()
	back := func(fn func()) {
		err := c.loop.el.Execute(context.Background(), gnet.RunnableFunc(func(context.Context) error {
			fn()
			return nil
		}))
		if err != nil {
			s.log.Debug("dropping a resumption: the loop is gone")
		}
	}
	o.mu.Lock()
	if o.gone || o.kick != 0 || !o.bound {
		o.mu.Unlock()
		back(func() { s.resumeFailed(c, n, then) })
		return
	}
	in, last := o.inbox, o.last
	o.inbox, o.inboxBytes, o.last, o.gone, o.next = nil, 0, nil, true, n
	o.mu.Unlock()
	for _, b := range in {
		// The module's filter queues it (and writes it to the old
		// connection, if it still has one: unacknowledged, it is resent).
		o.send(b)
	}
	if oc := o.conn; oc != nil {
		// Taken over while its connection still looked alive: the
		// connection goes, the session lives on in n.
		o.conn = nil
		if !oc.has(flagClosed) {
			s.fail(oc, stream.Conflict.Err, "the session was resumed on another connection")
		}
	}
	h := handedOver{
		full: o.full, resOff: o.resOff, slots: o.slots,
		flags: o.flags.Load(), priority: o.priority.Load(), available: o.available.Load(), last: last,
	}
	o.slots, o.queued = nil, nil
	o.stopTimers()
	o.available.Store(false)
	back(func() { s.attach(c, n, o, h, then) })
}

// attach is step 2, on the new connection's loop.
func (s *Server) attach(c *conn, n, o *session, h handedOver, then func(*hook.Ctx, bool)) {
	n.resuming = false
	n.full, n.resOff, n.slots, n.bound = h.full, h.resOff, h.slots, true
	n.flags.Store(h.flags)
	n.priority.Store(h.priority)
	n.available.Store(h.available)
	n.mu.Lock()
	n.last = h.last
	n.mu.Unlock()
	n.lastActive = c.loop.since()
	if prev := s.sessions.bind(n); prev != nil && prev != o {
		prev.closeWith(stream.Conflict.Err)
	}
	s.clusterBound(n)
	s.attached(c, n, o.loop != c.loop, then)
}

// attached ends step 2 once the state is in n: the answer, the resent
// queue, then what came meanwhile (a resumption from another cluster
// node ends here too). across: the state came from another event loop.
func (s *Server) attached(c *conn, n *session, across bool, then func(*hook.Ctx, bool)) {
	c.flags &^= flagWorkPending
	if c.has(flagClosed) {
		// The new connection went while the state travelled: the session
		// is offered to the veto again, then its held mailbox drained.
		n.conn = nil
		s.lose(n, true)
		n.drain()
		return
	}
	c.phase = phaseSession
	c.framer.SetLimits(stanza.Limits{MaxBytes: s.conf().C2S.MaxStanzaSize, MaxDepth: s.conf().C2S.MaxDepth})
	c.loop.wheel.Cancel(&c.timer)
	if s.conf().C2S.IdlePing > 0 {
		c.loop.wheel.Arm(&c.timer, c, c.loop.now.Add(s.conf().C2S.IdlePing))
	}
	s.stats.resumed.Add(1)
	if across {
		s.stats.resumedAcross.Add(1)
	}
	// The answer, the resent queue and what came meanwhile go out as one
	// write (see cork).
	c.cork()
	func() {
		defer s.contain(c, nil)
		then(c.loop.sessionCtx(n), true)
		if !c.has(flagClosed) {
			s.hooks.Fire(c.loop.sessionCtx(n), hook.Resumed)
		}
		c.loop.ctx.Reset(nil, nil, nil)
	}()
	n.drain()
	c.uncork()
	s.resumeInput(c)
}

// resumeFailed ends a resumption that found nothing to take over, on the
// new connection's loop.
func (s *Server) resumeFailed(c *conn, n *session, then func(*hook.Ctx, bool)) {
	n.resuming = false
	n.mu.Lock()
	n.posted = false
	n.mu.Unlock()
	c.flags &^= flagWorkPending
	if c.has(flagClosed) {
		s.endSession(n)
		return
	}
	func() {
		defer s.contain(c, nil)
		then(c.loop.ctxFor(c, nil), false)
		c.loop.ctx.Reset(nil, nil, nil)
	}()
	s.resumeInput(c)
}

// resumeInput handles the input that waited for a resumption.
func (s *Server) resumeInput(c *conn) {
	s.next(c)
	if !c.has(flagClosed) && !c.has(flagWorkPending) {
		s.process(c)
	}
}
