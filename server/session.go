package server

import (
	"hash/maphash"
	"math"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"mellium.im/xmpp/stream"

	"github.com/krill-xmpp/krill/hook"
)

// session is an authenticated client session. It is not its connection:
// conn is the transport it currently has, and the session's loop, JID and
// state are its own, so that a module may keep a session whose connection
// has gone (hook.Closing). The loop owns every field except those marked
// shared.
type session struct {
	conn  *conn // the transport; nil when the session has none
	loop  *loop
	local string // account localpart, set when SASL starts
	// full is the one representation of the bound JID, "" before
	// binding; local and resource are read out of it.
	full   string
	resOff int32 // index of the resource in full
	bound  bool
	// resuming: a resumption is moving another session's state into
	// this one (hook.Resumer); the connection's close leaves the session
	// to the handover.
	resuming bool
	// Mailbox flags, guarded by mu (here to pack the struct: a session,
	// kept for minutes when parked, fits the 192-byte size class).
	posted bool // a drain task is queued
	gone   bool // closed: drop further deliveries
	// inboxBytes is the size of inbox, guarded by mu; it saturates.
	inboxBytes uint32
	// kick is the stream error to close with, set by another loop
	// (guarded by mu): a kickCode, 0 for none.
	kick uint8
	// closing: a stream error is on its way (closeWith), guarded by mu.
	// Deliveries are refused from then on, so that their senders store
	// or route them elsewhere, rather than queue them behind the error
	// and lose them. (After kick, in what would be padding.)
	closing bool
	// lastActive is an offset from the server's epoch, in loop time:
	// monotonic, and 8 bytes instead of a time.Time's 24.
	lastActive time.Duration
	slots      []any // module slots, allocated on first use
	// queued holds the connection's jobs waiting for the running one
	// (nil when none). It lives here, not in conn, to keep every
	// pre-auth connection in a smaller size class.
	queued *[]asyncJob
	// timers are the deadlines modules armed (hook.Timers), nil when none.
	timers *sessTimer

	// Shared: read by other loops when they route to this session.
	available atomic.Bool  // has sent available presence
	priority  atomic.Int32 // of its last available presence
	flags     atomic.Uint32

	// Mailbox: stanzas from other loops, drained on the owner's loop.
	// (inboxBytes, posted and gone are above.)
	mu    sync.Mutex
	inbox [][]byte
	last  []byte // last broadcast presence, stamped; nil when unavailable
	// next is the session a resumption moved this one's state to: what
	// is delivered to this one after it has gone is forwarded there.
	next *session
}

var _ hook.Session = (*session)(nil)

// Local implements hook.Session.
func (s *session) Local() string { return s.local }

// Full implements hook.Session.
func (s *session) Full() string { return s.full }

// resource returns the bound resource.
func (s *session) resource() string { return s.full[s.resOff:] }

// Available implements hook.Session.
func (s *session) Available() bool { return s.available.Load() }

// Priority implements hook.Session.
func (s *session) Priority() int { return int(s.priority.Load()) }

// Has implements hook.Session.
func (s *session) Has(f hook.Flag) bool { return s.flags.Load()&uint32(f) != 0 }

// Set implements hook.Session.
func (s *session) Set(f hook.Flag, on bool) {
	var old uint32
	if on {
		old = s.flags.Or(uint32(f))
	} else {
		old = s.flags.And(^uint32(f))
	}
	if old != s.flags.Load() {
		s.loop.srv.clusterSync(s)
	}
}

// Slot implements hook.Session.
func (s *session) Slot(sl hook.Slot) any {
	if int(sl) == 0 || int(sl) > len(s.slots) {
		return nil
	}
	return s.slots[sl-1]
}

// SetSlot implements hook.Session.
func (s *session) SetSlot(sl hook.Slot, v any) {
	if sl == 0 {
		return
	}
	if int(sl) > len(s.slots) {
		if v == nil {
			return
		}
		s.slots = slices.Grow(s.slots, int(sl)-len(s.slots))[:sl]
	}
	s.slots[sl-1] = v
}

// SetPresence implements hook.Session: it records the last broadcast
// presence and fires Available or Unavailable on a change.
func (s *session) SetPresence(c *hook.Ctx, stamped []byte, priority int) {
	if cap(stamped)-len(stamped) >= 8 {
		// Kept for the session's life, parked included: no spare room
		// (the stamping leaves some, a size class more at times).
		stamped = slices.Clone(stamped)
	}
	s.mu.Lock()
	s.last = stamped
	s.mu.Unlock()
	if stamped != nil {
		s.priority.Store(int32(priority))
	}
	// The other nodes of a cluster see the presence (a no-op otherwise).
	s.loop.srv.clusterSync(s)
	if stamped == nil {
		if s.available.Swap(false) {
			s.loop.srv.hooks.Fire(c, hook.Unavailable)
		}
		return
	}
	if !s.available.Swap(true) {
		s.loop.srv.hooks.Fire(c, hook.Available)
	}
}

// Presence implements hook.Session.
func (s *session) Presence() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.last
}

// Deliver implements hook.Session: b is queued for the session's loop.
func (s *session) Deliver(b []byte) bool { return s.deliver(nil, b) }

// Close implements hook.Session.
func (s *session) Close(cond, text string) { s.closeWith(cond) }

// deliver hands b (owned by the callee from now on) to the session.
// It may be called from any goroutine; from is the caller's loop, if it
// runs on one. It reports false when the session has gone.
func (s *session) deliver(from *loop, b []byte) bool {
	srv := s.loop.srv
	srv.stats.out[kindIndex(b)].Add(1)
	s.mu.Lock()
	if s.gone {
		next := s.next
		s.mu.Unlock()
		if next != nil {
			srv.stats.out[kindIndex(b)].Add(^uint64(0)) // counted again there
			return next.deliver(from, b)
		}
		// Handed over to another cluster node: it follows the session.
		return srv.movedDeliver(s, b)
	}
	if s.closing {
		s.mu.Unlock()
		srv.stats.out[kindIndex(b)].Add(^uint64(0))
		return false
	}
	if from == s.loop && !s.posted && s.conn != nil {
		// Same loop and nothing queued ahead: write now, in order.
		s.mu.Unlock()
		s.send(b)
		return true
	}
	if max := srv.conf().C2S.MaxOutbound; max > 0 && uint64(s.inboxBytes)+uint64(len(b)) > uint64(max) {
		// A session that cannot drain its mailbox (its loop is stalled,
		// or a flood targets it) is closed rather than grown.
		s.mu.Unlock()
		srv.stats.inboxOverflow.Add(1)
		s.closeWith(stream.ResourceConstraint.Err)
		return false
	}
	s.inbox = append(s.inbox, b)
	s.inboxBytes = uint32(min(uint64(s.inboxBytes)+uint64(len(b)), math.MaxUint32))
	post := !s.posted
	s.posted = true
	s.mu.Unlock()
	if post {
		srv.onLoopSession(s, s.drain)
	}
	return true
}

// Pass implements hook.Session.
func (s *session) Pass(o hook.Outbound, b []byte) {
	for _, f := range s.loop.srv.hooks.After(o) {
		var v hook.Verdict
		if b, v = f(s, b); v == hook.Stop {
			return
		}
	}
	if s.conn == nil {
		// Kept without a connection and no module held it: counted,
		// since it cannot be written.
		s.loop.srv.stats.droppedNoConn.Add(1)
		return
	}
	s.conn.write(b)
}

// send writes one stanza to the session's connection through the
// modules' outbound chain. Called on the session's loop.
func (s *session) send(b []byte) { s.Pass(0, b) }

// closeWith asks the session's own loop to close it with a stream error.
func (s *session) closeWith(cond string) {
	s.mu.Lock()
	if s.gone || s.kick != 0 {
		s.mu.Unlock()
		return
	}
	s.kick = kickCode(cond)
	s.closing = true
	post := !s.posted
	s.posted = true
	s.mu.Unlock()
	if post {
		s.loop.srv.onLoopSession(s, s.drain)
	}
}

// drain runs on the owner's loop.
func (s *session) drain() {
	s.mu.Lock()
	in, kick := s.inbox, kickCond(s.kick)
	s.inbox, s.inboxBytes, s.kick, s.posted = nil, 0, 0, false
	s.mu.Unlock()
	c := s.conn
	for _, b := range in {
		s.send(b)
	}
	if c == nil {
		if kick != "" {
			s.loop.srv.endSession(s)
		}
		return
	}
	if kick == stream.SystemShutdown.Err && !c.has(flagWorkPending) && !c.has(flagClosed) {
		// Stanzas the server has already read are handled before the
		// session goes: a message in them is delivered or stored.
		s.loop.srv.process(c)
	}
	if kick != "" && c.has(flagWorkPending) {
		// Finish the stanza being handled first (an offline message being
		// stored, say); the worker's return closes the session.
		s.mu.Lock()
		s.kick = kickCode(kick)
		s.mu.Unlock()
		return
	}
	if c.has(flagClosed) {
		return
	}
	if kick != "" {
		text := ""
		switch kick {
		case stream.Conflict.Err:
			text = "replaced by a new session with the same resource"
		case stream.ResourceConstraint.Err:
			text = "too many stanzas waiting for this session"
		case stream.NotAuthorized.Err:
			text = "the password of the account was changed, or the account removed"
		}
		s.loop.srv.fail(c, kick, text)
	}
}

// streamConditions are the stream error conditions of RFC 6120 4.9.3; a
// session's kick is an index in it plus one (a byte rather than a string
// header in every session).
var streamConditions = [...]string{
	"bad-format", "bad-namespace-prefix", "conflict", "connection-timeout", "host-gone",
	"host-unknown", "improper-addressing", "internal-server-error", "invalid-from",
	"invalid-namespace", "invalid-xml", "not-authorized", "not-well-formed", "policy-violation",
	"remote-connection-failed", "reset", "resource-constraint", "restricted-xml",
	"see-other-host", "system-shutdown", "undefined-condition", "unsupported-encoding",
	"unsupported-feature", "unsupported-stanza-type", "unsupported-version",
}

// kickCode is cond's code for session.kick; a condition RFC 6120 does not
// define becomes undefined-condition.
func kickCode(cond string) uint8 {
	i := slices.Index(streamConditions[:], cond)
	if i < 0 {
		i = slices.Index(streamConditions[:], stream.UndefinedCondition.Err)
	}
	return uint8(i + 1)
}

// kickCond is the condition of a kickCode, "" for 0.
func kickCond(k uint8) string {
	if k == 0 {
		return ""
	}
	return streamConditions[k-1]
}

// closeMailbox drops anything queued; later deliveries fail.
func (s *session) closeMailbox() {
	s.mu.Lock()
	s.gone = true
	s.inbox, s.inboxBytes = nil, 0
	s.last = nil
	s.mu.Unlock()
}

// sessionTable maps account localparts to their bound sessions. It is
// sharded so that loops binding and routing at once rarely contend. Only
// the server's routing (deliver.go) and binding use it; modules and
// workers go through hook.Host.
type sessionTable struct {
	seed   maphash.Seed
	shards [64]tableShard
}

type tableShard struct {
	mu sync.RWMutex
	m  map[string][]*session
}

func (t *sessionTable) init() {
	t.seed = maphash.MakeSeed()
	for i := range t.shards {
		t.shards[i].m = make(map[string][]*session)
	}
}

func (t *sessionTable) shard(local string) *tableShard {
	return &t.shards[maphash.String(t.seed, local)%uint64(len(t.shards))]
}

// bind adds s and returns the session it replaces (same resource), if any.
func (t *sessionTable) bind(s *session) (old *session) {
	sh := t.shard(s.local)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	list := sh.m[s.local]
	for i, o := range list {
		if o.resource() == s.resource() {
			list[i] = s
			return o
		}
	}
	sh.m[s.local] = append(list, s)
	return nil
}

// unbind removes s if it is still bound.
func (t *sessionTable) unbind(s *session) {
	sh := t.shard(s.local)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	list := sh.m[s.local]
	i := slices.Index(list, s)
	if i < 0 {
		return
	}
	list = slices.Delete(list, i, i+1)
	if len(list) == 0 {
		delete(sh.m, s.local)
		return
	}
	sh.m[s.local] = list
}

// find returns the session bound to local/resource, or nil.
func (t *sessionTable) find(local, resource string) *session {
	sh := t.shard(local)
	sh.mu.RLock()
	defer sh.mu.RUnlock()
	for _, s := range sh.m[local] {
		if s.resource() == resource {
			return s
		}
	}
	return nil
}

// each calls fn for every session of local bound when it was called. fn
// runs without the table's lock (on a snapshot), so it may use the table
// itself: routing often nests one account's sessions inside another's.
func (t *sessionTable) each(local string, fn func(*session)) {
	var buf [4]*session
	sh := t.shard(local)
	sh.mu.RLock()
	list := append(buf[:0], sh.m[local]...)
	sh.mu.RUnlock()
	for _, s := range list {
		fn(s)
	}
}

// all calls fn for every bound session, on a snapshot.
func (t *sessionTable) all(fn func(*session)) {
	var list []*session
	for i := range t.shards {
		sh := &t.shards[i]
		sh.mu.RLock()
		for _, l := range sh.m {
			list = append(list, l...)
		}
		sh.mu.RUnlock()
	}
	for _, s := range list {
		fn(s)
	}
}

// count returns the number of bound sessions.
func (t *sessionTable) count() int {
	n := 0
	for i := range t.shards {
		sh := &t.shards[i]
		sh.mu.RLock()
		for _, l := range sh.m {
			n += len(l)
		}
		sh.mu.RUnlock()
	}
	return n
}

// splitJID splits a normalised JID (as the server stamps and stores them)
// into its parts without allocating.
func splitJID(j string) (local, domain, resource string) {
	if i := strings.IndexByte(j, '/'); i >= 0 {
		j, resource = j[:i], j[i+1:]
	}
	if i := strings.IndexByte(j, '@'); i >= 0 {
		local, j = j[:i], j[i+1:]
	}
	return local, j, resource
}
