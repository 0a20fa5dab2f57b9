package server

import (
	"hash/maphash"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"mellium.im/xmpp/jid"
	"mellium.im/xmpp/stream"
)

// session is what an authenticated connection adds to its conn. The loop
// owns every field except those marked as shared.
type session struct {
	conn     *conn
	local    string  // account localpart, set when SASL starts
	jid      jid.JID // full JID, once bound
	full     string  // jid.String(), cached for stamping
	resource string
	bound    bool
	// lastActive is an offset from the server's epoch, in loop time:
	// monotonic, and 8 bytes instead of a time.Time's 24.
	lastActive time.Duration

	directed []string // directed-presence recipients (RFC 6121 4.6)

	// Shared: read by other loops when they route to this session.
	available  atomic.Bool  // has sent available presence
	priority   atomic.Int32 // of its last available presence
	interested atomic.Bool  // requested the roster: gets roster pushes
	// blockInterested: requested the blocklist, gets its pushes.
	blockInterested atomic.Bool

	// Mailbox: stanzas from other loops, drained on the owner's loop.
	mu     sync.Mutex
	inbox  [][]byte
	posted bool   // a drain task is queued
	gone   bool   // closed: drop further deliveries
	kick   string // stream error to close with, set by another loop
	last   []byte // last broadcast presence, stamped; nil when unavailable
}

// deliver hands b (owned by the callee from now on) to the session.
// It may be called from any goroutine. It reports false when the session
// has gone.
func (s *session) deliver(from *loop, b []byte) bool {
	c := s.conn
	c.loop.srv.stats.out[kindIndex(b)].Add(1)
	s.mu.Lock()
	if s.gone {
		s.mu.Unlock()
		return false
	}
	if from == c.loop && !s.posted {
		// Same loop and nothing queued ahead: write now, in order.
		s.mu.Unlock()
		c.write(b)
		return true
	}
	s.inbox = append(s.inbox, b)
	post := !s.posted
	s.posted = true
	s.mu.Unlock()
	if post {
		c.loop.srv.onLoop(c, s.drain)
	}
	return true
}

// closeWith asks the session's own loop to close it with a stream error.
func (s *session) closeWith(cond string) {
	c := s.conn
	s.mu.Lock()
	if s.gone {
		s.mu.Unlock()
		return
	}
	s.kick = cond
	post := !s.posted
	s.posted = true
	s.mu.Unlock()
	if post {
		c.loop.srv.onLoop(c, s.drain)
	}
}

// drain runs on the owner's loop.
func (s *session) drain() {
	s.mu.Lock()
	in, kick := s.inbox, s.kick
	s.inbox, s.kick, s.posted = nil, "", false
	s.mu.Unlock()
	for _, b := range in {
		s.conn.write(b)
	}
	if kick == stream.SystemShutdown.Err && !s.conn.has(flagWorkPending) && !s.conn.has(flagClosed) {
		// Stanzas the server has already read are handled before the
		// session goes: a message in them is delivered or stored.
		s.conn.loop.srv.process(s.conn)
	}
	if kick != "" && s.conn.has(flagWorkPending) {
		// Finish the stanza being handled first (an offline message being
		// stored, say); the worker's return closes the session.
		s.mu.Lock()
		s.kick = kick
		s.mu.Unlock()
		return
	}
	if s.conn.has(flagClosed) {
		return
	}
	if kick != "" {
		text := ""
		switch kick {
		case stream.Conflict.Err:
			text = "replaced by a new session with the same resource"
		case stream.NotAuthorized.Err:
			text = "the password of the account was changed, or the account removed"
		}
		s.conn.loop.srv.fail(s.conn, kick, text)
	}
}

// closeMailbox drops anything queued; later deliveries fail.
func (s *session) closeMailbox() {
	s.mu.Lock()
	s.gone = true
	s.inbox = nil
	s.last = nil
	s.mu.Unlock()
}

// sessionTable maps account localparts to their bound sessions. It is
// sharded so that loops binding and routing at once rarely contend.
type sessionTable struct {
	seed   maphash.Seed
	shards [64]tableShard
}

type tableShard struct {
	mu sync.RWMutex
	m  map[string][]*session
	// blocked holds the non-empty XEP-0191 blocklists of accounts with
	// bound sessions.
	blocked map[string][]string
}

func (t *sessionTable) init() {
	t.seed = maphash.MakeSeed()
	for i := range t.shards {
		t.shards[i].m = make(map[string][]*session)
		t.shards[i].blocked = make(map[string][]string)
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
		if o.resource == s.resource {
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
		delete(sh.blocked, s.local)
		return
	}
	sh.m[s.local] = list
}

// full returns the session bound to local/resource, or nil.
func (t *sessionTable) full(local, resource string) *session {
	sh := t.shard(local)
	sh.mu.RLock()
	defer sh.mu.RUnlock()
	for _, s := range sh.m[local] {
		if s.resource == resource {
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

// setBlocklist records local's blocklist while it has bound sessions. Only
// non-empty lists take memory: most accounts block nobody.
func (t *sessionTable) setBlocklist(local string, list []string) {
	sh := t.shard(local)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if _, bound := sh.m[local]; !bound || len(list) == 0 {
		delete(sh.blocked, local)
		return
	}
	sh.blocked[local] = list
}

// blocklist returns local's blocklist (nil when empty or not bound). The
// caller must not modify it.
func (t *sessionTable) blocklist(local string) []string {
	sh := t.shard(local)
	sh.mu.RLock()
	defer sh.mu.RUnlock()
	return sh.blocked[local]
}
