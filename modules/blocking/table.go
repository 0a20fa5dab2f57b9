package blocking

import (
	"hash/maphash"
	"slices"
	"sync"

	"mellium.im/xmpp/jid"
)

// table holds the blocklists of accounts with sessions, so that routing
// checks them without storage. It is sharded by localpart so that loops
// routing and logging in at once rarely contend.
//
// An account has an entry from its first session's Authenticated event to
// its last session's Closed event (refs counts them). The entry is a value
// in the map: an account that blocks nobody costs a map slot and no
// allocation. A list, once published, is never modified: a change
// publishes a new one, so readers use it without the lock.
type table struct {
	seed   maphash.Seed
	shards [64]shard
}

type shard struct {
	mu sync.RWMutex
	m  map[string]entry
}

type entry struct {
	refs int32
	// loaded: the list was read from storage (or written after a change)
	// since the account's first session; later sessions need no read.
	loaded bool
	list   *list // nil: blocks nobody
}

// list is one account's blocklist as a set of normalised JIDs (full, bare,
// domain/resource or domain, as XEP-0191 items may be).
type list struct {
	set map[string]struct{}
}

func newTable() *table {
	t := &table{seed: maphash.MakeSeed()}
	for i := range t.shards {
		t.shards[i].m = make(map[string]entry)
	}
	return t
}

func (t *table) shard(local string) *shard {
	return &t.shards[maphash.String(t.seed, local)%uint64(len(t.shards))]
}

// acquire counts a session of local and reports whether its list must be
// read from storage.
func (t *table) acquire(local string) (load bool) {
	sh := t.shard(local)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	e := sh.m[local]
	e.refs++
	sh.m[local] = e
	return !e.loaded
}

// release uncounts a session of local and drops the entry with the last.
func (t *table) release(local string) {
	sh := t.shard(local)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	e, ok := sh.m[local]
	if !ok {
		return
	}
	if e.refs--; e.refs <= 0 {
		delete(sh.m, local)
		return
	}
	sh.m[local] = e
}

// loaded records a list read at login, unless one was recorded meanwhile
// (by another session's login or a change: either is as new) or the
// account has no session left.
func (t *table) loaded(local string, jids []string) {
	sh := t.shard(local)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	e, ok := sh.m[local]
	if !ok || e.loaded {
		return
	}
	e.loaded, e.list = true, newList(jids)
	sh.m[local] = e
}

// set records local's list after a change, if local has sessions.
func (t *table) set(local string, jids []string) {
	sh := t.shard(local)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	e, ok := sh.m[local]
	if !ok {
		return
	}
	e.loaded, e.list = true, newList(jids)
	sh.m[local] = e
}

// get returns local's list, nil when it blocks nobody or has no session.
func (t *table) get(local string) *list {
	sh := t.shard(local)
	sh.mu.RLock()
	l := sh.m[local].list
	sh.mu.RUnlock()
	return l
}

func newList(jids []string) *list {
	if len(jids) == 0 {
		return nil
	}
	l := &list{set: make(map[string]struct{}, len(jids))}
	for _, j := range jids {
		l.set[j] = struct{}{}
	}
	return l
}

// blocks reports whether l covers the JID local@domain/resource (local and
// resource may be empty), matching as XEP-0191 (through XEP-0016) says:
// the full JID, the bare JID, the domain with the resource, the domain.
// The parts are normalised; the keys are built in a stack buffer and
// looked up without allocating.
func (l *list) blocks(local, domain, resource string) bool {
	if l == nil {
		return false
	}
	var buf [512]byte
	b := buf[:0]
	if local != "" {
		b = append(append(append(b, local...), '@'), domain...)
		if _, ok := l.set[string(b)]; ok { // bare
			return true
		}
		if resource != "" {
			b = append(append(b, '/'), resource...)
			if _, ok := l.set[string(b)]; ok { // full
				return true
			}
		}
	}
	if _, ok := l.set[domain]; ok {
		return true
	}
	if resource != "" {
		b = append(append(append(b[:0], domain...), '/'), resource...)
		if _, ok := l.set[string(b)]; ok {
			return true
		}
	}
	return false
}

// splitFull returns the parts of a normalised JID string; a localpart
// holds neither '@' nor '/', so the first '/' ends the domain and an '@'
// before it ends the localpart.
func splitFull(s string) (local, domain, resource string) {
	for i := 0; i < len(s); i++ {
		if s[i] == '/' {
			s, resource = s[:i], s[i+1:]
			break
		}
	}
	for i := 0; i < len(s); i++ {
		if s[i] == '@' {
			return s[:i], s[i+1:], resource
		}
	}
	return "", s, resource
}

// sortedBlocks is blocks over a sorted list read from storage.
func sortedBlocks(sorted []string, j jid.JID) bool {
	has := func(k string) bool { _, ok := slices.BinarySearch(sorted, k); return ok }
	domain, resource := j.Domainpart(), j.Resourcepart()
	if j.Localpart() != "" {
		bare := j.Localpart() + "@" + domain
		if has(bare) || resource != "" && has(bare+"/"+resource) {
			return true
		}
	}
	return has(domain) || resource != "" && has(domain+"/"+resource)
}
