package server

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/panjf2000/gnet/v2"
	"go.uber.org/zap"
	"mellium.im/xmpp/stream"

	"github.com/krill-xmpp/krill/hook"
)

// Stream management resumption across the nodes of a cluster. A client
// resumes on node B a session node A holds (parked, or still attached to
// a connection A has not yet seen die):
//
//  1. B (conn.ResumeRemote) asks the nodes the directory lists for the
//     account (cluster.Node.RequestHandover); its connection's input is
//     paused and its session's mailbox held, as for a resumption on one
//     node.
//  2. A (clusterHandler.Handover) finds the token (hook.Migrator), records
//     a move for the session, then on the session's loop marks it gone
//     (what is delivered to it from now is buffered in the move, bounded
//     by sm.max_queue_bytes), closes its connection if it has one (with
//     conflict, as on one node), and answers with its state: JID,
//     presence, priority, flags, and the module's (counters, token,
//     unacknowledged queue in wire form). No Unavailable, no Closed: the
//     contacts and rooms see nothing.
//  3. B installs the state (hook.Migrator.Import), binds the session, and
//     takes the directory key by compare-and-swap with the presence in the
//     same write (cluster.Node.Adopt); the module's continuation answers
//     <resumed/> and resends the queue, then what reached B meanwhile.
//  4. A's watch sees B's write to a key A holds (Handler.Conflict): the
//     move is claimed. A drops the session's state silently, forwards
//     what it buffered to B in order, and forwards what still arrives
//     for a while (other nodes' directories catch up), then forgets it.
//
// Time bounds: B gives up after cluster.handover_timeout (item-not-found;
// binding may proceed). A waits twice that for the claim; without one it
// ends the session as an expiry would (the queue's messages and what it
// buffered go to offline storage).

// handoverState is the state A sends B.
type handoverState struct {
	Full     string `json:"j"`
	Flags    uint32 `json:"f,omitempty"`
	Priority int32  `json:"p,omitempty"`
	Avail    bool   `json:"a,omitempty"`
	Last     []byte `json:"l,omitempty"`
	Module   []byte `json:"m,omitempty"`
}

// moveState is where a move stands on the node that held the session.
type moveState uint8

const (
	movePending    moveState = iota // state sent, B has not taken the key yet
	moveForwarding                  // B has it: deliveries go there
)

// move is a session leaving this node.
type move struct {
	state moveState
	to    string   // the node taking it over
	buf   [][]byte // delivered meanwhile, in order
	bytes int
	timer *time.Timer
}

// moveTable holds the sessions leaving this node, by session, and the
// hand-overs' counters.
type moveTable struct {
	mu sync.Mutex
	m  map[*session]*move

	handedOut, handedIn, handoverFailed atomic.Uint64
	// testHook runs in handOut once the session is gone here and before
	// its state is sent: tests deliver to it in that window.
	testHook func()
}

var _ hook.RemoteResumer = (*conn)(nil)

// errHandover is a hand-over's state this node cannot read.
var errHandover = errors.New("server: malformed session hand-over")

// migrator returns the module that moves sessions (stream management),
// or nil.
func (s *Server) migrator() hook.Migrator {
	for _, m := range s.hooks.Modules() {
		if mg, ok := m.(hook.Migrator); ok {
			return mg
		}
	}
	return nil
}

// ResumeRemote implements hook.RemoteResumer.
func (c *conn) ResumeRemote(previd string, then func(*hook.Ctx, bool)) {
	s := c.loop.srv
	n := c.sess
	var nodes []string
	if s.cluster != nil && n != nil && c.phase == phaseBind && !n.resuming && !n.bound {
		nodes = s.cluster.NodesOf(n.local)
	}
	if len(nodes) == 0 || s.migrator() == nil {
		then(c.loop.ctxFor(c, nil), false)
		return
	}
	c.flags |= flagWorkPending
	n.resuming = true
	n.mu.Lock()
	n.posted = true // held until attached
	n.mu.Unlock()
	s.cluster.RequestHandover(n.local, previd, nodes, s.cfg.Cluster.HandoverTimeout, func(state []byte) {
		err := c.loop.el.Execute(context.Background(), gnet.RunnableFunc(func(context.Context) error {
			if state == nil {
				s.resumeFailed(c, n, then)
				return nil
			}
			s.attachRemote(c, n, state, then)
			return nil
		}))
		if err != nil {
			s.log.Debug("dropping a resumption: the loop is gone")
		}
	})
}

// attachRemote is step 3, on the new connection's loop.
func (s *Server) attachRemote(c *conn, n *session, b []byte, then func(*hook.Ctx, bool)) {
	defer s.contain(c, nil)
	var h handoverState
	err := json.Unmarshal(b, &h)
	slash := strings.IndexByte(h.Full, '/')
	if err == nil && (slash < 0 || !strings.HasPrefix(h.Full, n.local+"@")) {
		err = errHandover
	}
	mig := s.migrator()
	if err == nil {
		cx := c.loop.sessionCtx(n)
		err = mig.Import(cx, h.Module)
		cx.Reset(nil, nil, nil)
	}
	if err != nil {
		// The holder has let the session go: it ends there when no node
		// claims it.
		s.log.Warn("session hand-over refused", zap.String("account", n.local), zap.Error(err))
		s.resumeFailed(c, n, then)
		return
	}
	n.resuming = false
	n.full, n.resOff, n.bound = h.Full, int32(slash+1), true
	n.flags.Store(h.Flags)
	n.priority.Store(h.Priority)
	n.available.Store(h.Avail)
	n.mu.Lock()
	n.last = h.Last
	n.mu.Unlock()
	n.lastActive = c.loop.since()
	if prev := s.sessions.bind(n); prev != nil {
		prev.closeWith(stream.Conflict.Err)
	}
	if !s.cluster.Adopt(n.local, n.resource(), n, h.Last, int(h.Priority), h.Flags) {
		n.closeWith(stream.ResourceConstraint.Err)
	}
	s.moves.handedIn.Add(1)
	s.attached(c, n, true, then)
}

// Handover implements cluster.HandoverHandler: step 2, from the inbox's
// goroutine to the session's loop.
func (h clusterHandler) Handover(local, previd, from string, reply func([]byte)) {
	s := h.s
	mig := s.migrator()
	if mig == nil {
		reply(nil)
		return
	}
	o, _ := mig.Resumable(local, previd).(*session)
	if o == nil || o.loop == nil {
		reply(nil)
		return
	}
	mv := &move{to: from}
	s.moves.mu.Lock()
	if s.moves.m == nil {
		s.moves.m = make(map[*session]*move)
	}
	if s.moves.m[o] != nil {
		s.moves.mu.Unlock()
		reply(nil) // leaving already
		return
	}
	// Recorded before the session is marked gone: a delivery that finds
	// it gone finds the move.
	s.moves.m[o] = mv
	s.moves.mu.Unlock()
	err := o.loop.el.Execute(context.Background(), gnet.RunnableFunc(func(context.Context) error {
		s.handOut(o, mv, mig, reply)
		return nil
	}))
	if err != nil {
		s.dropMove(o)
		reply(nil)
	}
}

// dropMove forgets o's move.
func (s *Server) dropMove(o *session) {
	s.moves.mu.Lock()
	delete(s.moves.m, o)
	s.moves.mu.Unlock()
}

// handOut is step 2 on the session's loop.
func (s *Server) handOut(o *session, mv *move, mig hook.Migrator, reply func([]byte)) {
	defer s.containDetached()
	o.mu.Lock()
	if o.gone || o.kick != 0 || o.closing || !o.bound {
		o.mu.Unlock()
		s.dropMove(o)
		reply(nil)
		return
	}
	in, last := o.inbox, o.last
	o.inbox, o.inboxBytes, o.gone = nil, 0, true
	o.mu.Unlock()
	for _, b := range in {
		o.send(b) // into the module's queue
	}
	if oc := o.conn; oc != nil {
		o.conn = nil
		if !oc.has(flagClosed) {
			s.fail(oc, stream.Conflict.Err, "the session was resumed on another node")
		}
	}
	st := handoverState{Full: o.full, Flags: o.flags.Load(), Priority: o.priority.Load(), Avail: o.available.Load(),
		Last: last, Module: mig.Export(o)}
	b, _ := json.Marshal(st)
	if st.Module == nil || len(b) > s.cluster.MaxHandover() {
		s.log.Warn("session not handed over", zap.String("jid", o.full), zap.Int("bytes", len(b)))
		reply(nil)
		s.failMove(o)
		return
	}
	s.moves.mu.Lock()
	mv.timer = time.AfterFunc(2*s.cfg.Cluster.HandoverTimeout, func() { s.failMove(o) })
	s.moves.mu.Unlock()
	s.moves.handedOut.Add(1)
	if s.moves.testHook != nil {
		s.moves.testHook()
	}
	reply(b)
}

// movedDeliver takes a delivery to o, a session that has gone: buffered
// while o's move waits for its claim, forwarded once claimed; false when
// o is not moving (the delivery fails as to any gone session) or the
// buffer is full. Any goroutine.
func (s *Server) movedDeliver(o *session, b []byte) bool {
	if s.cluster == nil {
		return false
	}
	s.moves.mu.Lock()
	defer s.moves.mu.Unlock()
	mv := s.moves.m[o]
	switch {
	case mv == nil:
		return false
	case mv.state == moveForwarding:
		return s.cluster.Send(mv.to, o.full, b, offlineWorthy(b))
	case mv.bytes+len(b) > s.conf().SM.MaxQueueBytes:
		return false
	}
	mv.buf = append(mv.buf, b)
	mv.bytes += len(b)
	return true
}

// claimMove handles another node's bind of o's key: when o is moving, the
// move is claimed (true) and what it buffered goes to the new holder.
func (s *Server) claimMove(o *session) bool {
	s.moves.mu.Lock()
	mv := s.moves.m[o]
	if mv == nil || mv.state != movePending {
		s.moves.mu.Unlock()
		return mv != nil
	}
	if e := s.cluster.Find(o.local, o.resource()); e != nil {
		mv.to = e.Node
	}
	mv.state = moveForwarding
	// From now on the directory shows the session on the new node too:
	// the one here must not look available or interested (roster
	// pushes, carbons), or modules would deliver to both and the client
	// get two copies.
	o.available.Store(false)
	o.flags.Store(0)
	if mv.timer != nil {
		mv.timer.Stop()
	}
	buf := mv.buf
	mv.buf, mv.bytes = nil, 0
	for _, b := range buf {
		// Under the lock: a delivery racing this one goes after.
		s.cluster.Send(mv.to, o.full, b, offlineWorthy(b))
	}
	// The other nodes' directories and this node's routing catch up
	// within a heartbeat or two; until then what reaches o goes on.
	mv.timer = time.AfterFunc(s.cfg.Cluster.HandoverTimeout, func() {
		s.sessions.unbind(o)
		s.dropMove(o)
	})
	s.moves.mu.Unlock()
	s.onLoopSession(o, func() {
		if mig := s.migrator(); mig != nil {
			mig.Forget(o)
		}
		o.slots = nil
		o.stopTimers()
		s.cluster.Released(o.local, o.resource(), o)
	})
	return true
}

// failMove ends o, whose move was not claimed in time (or could not be
// made): as an expired parked session, with what was buffered for it
// queued first (its messages go to offline storage).
func (s *Server) failMove(o *session) {
	s.moves.mu.Lock()
	mv := s.moves.m[o]
	if mv == nil || mv.state != movePending {
		s.moves.mu.Unlock()
		return
	}
	if s.cluster.Find(o.local, o.resource()) != nil {
		// Another node holds the key, and this node's record of it was
		// gone before the watch could tell (a reassert, say): claimed all
		// the same. Ending the session here would announce it
		// unavailable and store its queue offline while it lives there.
		s.moves.mu.Unlock()
		s.claimMove(o)
		return
	}
	delete(s.moves.m, o)
	buf := mv.buf
	s.moves.mu.Unlock()
	s.moves.handoverFailed.Add(1)
	s.onLoopSession(o, func() {
		o.mu.Lock()
		o.gone = false
		o.mu.Unlock()
		for _, b := range buf {
			o.send(b)
		}
		s.endSession(o)
	})
}
