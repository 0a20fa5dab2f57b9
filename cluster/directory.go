package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"hash/maphash"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
)

// dirShards splits the directory's lock: routing reads it from every loop.
const dirShards = 64

// dirShard holds the remote sessions of the accounts that hash to it.
type dirShard struct {
	mu sync.RWMutex
	m  map[string][]*Entry // localpart -> its sessions on other nodes
}

func (n *Node) shard(local string) *dirShard {
	return &n.dir[maphash.String(n.seed, local)%dirShards]
}

// Each calls fn for every session of the account local on another live
// node, on a snapshot (fn may use the directory). Any goroutine.
func (n *Node) Each(local string, fn func(*Entry)) {
	var buf [4]*Entry
	sh := n.shard(local)
	sh.mu.RLock()
	list := append(buf[:0], sh.m[local]...)
	sh.mu.RUnlock()
	for _, e := range list {
		fn(e)
	}
}

// Find returns the session local/resource on another live node, or nil.
// Any goroutine.
func (n *Node) Find(local, resource string) *Entry {
	sh := n.shard(local)
	sh.mu.RLock()
	defer sh.mu.RUnlock()
	for _, e := range sh.m[local] {
		if e.Resource == resource {
			return e
		}
	}
	return nil
}

// put adds or replaces e in the directory.
func (n *Node) put(e *Entry) {
	sh := n.shard(e.Local)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	list := sh.m[e.Local]
	for i, o := range list {
		if o.Resource == e.Resource {
			list[i] = e
			return
		}
	}
	sh.m[e.Local] = append(list, e)
}

// remove deletes local/resource from the directory, and returns what was
// there.
func (n *Node) remove(local, resource string) *Entry {
	sh := n.shard(local)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	list := sh.m[local]
	for i, o := range list {
		if o.Resource == resource {
			list = slices.Delete(list, i, i+1)
			if len(list) == 0 {
				delete(sh.m, local)
			} else {
				sh.m[local] = list
			}
			return o
		}
	}
	return nil
}

// removeNode deletes every entry of node written by an incarnation other
// than keep ("" : all) and returns them.
func (n *Node) removeNode(node, keep string) []*Entry {
	var out []*Entry
	for i := range n.dir {
		sh := &n.dir[i]
		sh.mu.Lock()
		for local, list := range sh.m {
			kept := list[:0]
			for _, e := range list {
				if e.Node == node && (keep == "" || e.inc != keep) {
					out = append(out, e)
					continue
				}
				kept = append(kept, e)
			}
			clear(list[len(kept):])
			if len(kept) == 0 {
				delete(sh.m, local)
			} else {
				sh.m[local] = kept
			}
		}
		sh.mu.Unlock()
	}
	return out
}

// localTable is what this node wrote to the directory: for each key, the
// session that owns it here and the revision of its last write. Only the
// writer of the key and the watch touch a record.
type localTable struct {
	mu sync.Mutex
	m  map[string]*localRec
}

type localRec struct {
	owner any    // the server's session
	rev   uint64 // revision of our last write; 0 while the bind is in flight
	val   []byte // the value last written, for reassert
	// foreign is the newest revision another node wrote while our bind
	// was in flight (its result not yet recorded): if our write is older,
	// we lost the key.
	foreign uint64
}

// opKind is a directory write.
type opKind uint8

const (
	opBind opKind = iota
	opPresence
	opUnbind
	opReassert
)

type op struct {
	kind  opKind
	key   string
	owner any
	val   []byte
	// force: a reassert after a cut the others took as this node's
	// death writes the key even if untouched (they dropped the entry).
	force bool
}

// Bound records that owner, a local session, bound local/resource. The
// write (compare-and-swap on the key) runs on a writer; when another node
// held the key, that node sees the new owner and closes its session with
// conflict. It does not block: when the writer's queue is full it reports
// false and the caller closes the session.
func (n *Node) Bound(local, resource string, owner any) bool {
	v, _ := json.Marshal(value{Node: n.name, Inc: n.inc})
	n.localCount.Add(1)
	return n.enqueue(op{kind: opBind, key: key(local, resource), owner: owner, val: v})
}

// Presence records the last broadcast presence of the local session owner
// (nil: unavailable), its priority and its module flags. When the queue is full the update is dropped and
// counted: the next one carries the state again.
func (n *Node) Presence(local, resource string, owner any, presence []byte, priority int, flags uint32) {
	v, _ := json.Marshal(value{Node: n.name, Inc: n.inc, Avail: presence != nil, Prio: priority, Presence: presence, Flags: flags})
	n.enqueue(op{kind: opPresence, key: key(local, resource), owner: owner, val: v})
}

// Unbound records that owner no longer holds local/resource; its entry is
// deleted unless another session (here or elsewhere) bound it since.
func (n *Node) Unbound(local, resource string, owner any) {
	n.localCount.Add(-1)
	if !n.enqueue(op{kind: opUnbind, key: key(local, resource), owner: owner}) {
		// The entry stays until this node restarts or dies; a stanza
		// routed to it here finds no session and is treated so.
		n.log.Warn("directory write queue full: entry left", zap.String("local", local), zap.String("resource", resource))
	}
}

func (n *Node) enqueue(o op) bool {
	n.writersMu.RLock()
	defer n.writersMu.RUnlock()
	if n.writersClosed {
		return false
	}
	select {
	case n.writers[maphash.String(n.seed, o.key)%numWriters] <- o:
		return true
	default:
		n.writeDropped.Add(1)
		return false
	}
}

// writeTimeout bounds one directory write.
const writeTimeout = 5 * time.Second

// writer applies directory writes of its keys in order.
func (n *Node) writer(ch chan op) {
	defer n.writersWG.Done()
	for o := range ch {
		ctx, cancel := context.WithTimeout(n.ctx, writeTimeout)
		switch o.kind {
		case opBind:
			n.writeBind(ctx, o)
		case opPresence:
			n.writePresence(ctx, o)
		case opUnbind:
			n.writeUnbind(ctx, o)
		case opReassert:
			n.writeReassert(ctx, o)
		}
		cancel()
	}
}

// writeBind claims the key: create it, or compare-and-swap it from the
// revision read. A lost race reads again; the last bind wins, as it does
// on one server.
func (n *Node) writeBind(ctx context.Context, o op) {
	n.local.mu.Lock()
	n.local.m[o.key] = &localRec{owner: o.owner}
	n.local.mu.Unlock()
	var rev uint64
	var err error
	for range 8 {
		rev, err = n.kv.Create(ctx, o.key, o.val)
		if errors.Is(err, jetstream.ErrKeyExists) {
			var e jetstream.KeyValueEntry
			if e, err = n.kv.Get(ctx, o.key); err == nil {
				rev, err = n.kv.Update(ctx, o.key, o.val, e.Revision())
			} else if errors.Is(err, jetstream.ErrKeyNotFound) {
				continue // deleted between the two: create again
			}
		}
		if err == nil || ctx.Err() != nil {
			break
		}
	}
	if err != nil {
		n.log.Warn("directory bind failed", zap.String("key", o.key), zap.Error(err))
		return
	}
	n.local.mu.Lock()
	lost := false
	if r := n.local.m[o.key]; r != nil && r.owner == o.owner {
		r.rev, r.val = rev, o.val
		if r.foreign > rev {
			// Another node bound it after us, and its write was seen
			// before our result came back.
			lost = true
			delete(n.local.m, o.key)
		}
	}
	n.local.mu.Unlock()
	if lost {
		n.h.Conflict(o.owner)
	}
}

// writeReassert writes a held key again after this node lost NATS for a
// while: the others may have taken it as dead and deleted its keys. A key
// another node bound since is left to it (the watch closes the session
// here with conflict).
func (n *Node) writeReassert(ctx context.Context, o op) {
	n.local.mu.Lock()
	r := n.local.m[o.key]
	var rev uint64
	var val []byte
	if r != nil && r.owner == o.owner {
		rev, val = r.rev, r.val
	}
	n.local.mu.Unlock()
	if rev == 0 || val == nil {
		return
	}
	e, err := n.kv.Get(ctx, o.key)
	revived := o.force
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		// Deleted by the node that announced this one dead.
		rev, err = n.kv.Create(ctx, o.key, val)
		revived = true
	case err != nil:
	case e.Revision() == rev && !o.force:
		return // untouched
	default:
		var v value
		if json.Unmarshal(e.Value(), &v) == nil && v.Node != n.name {
			return
		}
		rev, err = n.kv.Update(ctx, o.key, val, e.Revision())
	}
	if err != nil {
		n.log.Warn("directory reassert failed", zap.String("key", o.key), zap.Error(err))
		return
	}
	n.local.mu.Lock()
	if r := n.local.m[o.key]; r != nil && r.owner == o.owner {
		r.rev = rev
	}
	n.local.mu.Unlock()
	if revived {
		n.revived(o.owner)
	}
}

// reassert queues a reassert of every key this node holds; force writes
// even the untouched ones.
func (n *Node) reassert(force bool) {
	n.local.mu.Lock()
	ops := make([]op, 0, len(n.local.m))
	for k, r := range n.local.m {
		ops = append(ops, op{kind: opReassert, key: k, owner: r.owner, force: force})
	}
	n.local.mu.Unlock()
	for _, o := range ops {
		n.enqueue(o)
	}
}

// writePresence updates the key if this node still holds it at the
// revision it wrote last: a presence never overwrites another node's bind.
func (n *Node) writePresence(ctx context.Context, o op) {
	n.local.mu.Lock()
	r := n.local.m[o.key]
	var rev uint64
	if r != nil && r.owner == o.owner {
		rev = r.rev
	}
	n.local.mu.Unlock()
	if rev == 0 {
		return
	}
	nrev, err := n.kv.Update(ctx, o.key, o.val, rev)
	if err != nil {
		n.log.Debug("directory presence not written", zap.String("key", o.key), zap.Error(err))
		return
	}
	n.local.mu.Lock()
	if r := n.local.m[o.key]; r != nil && r.owner == o.owner {
		r.rev, r.val = nrev, o.val
	}
	n.local.mu.Unlock()
}

// writeUnbind deletes the key if this session still holds it.
func (n *Node) writeUnbind(ctx context.Context, o op) {
	n.local.mu.Lock()
	r := n.local.m[o.key]
	if r == nil || r.owner != o.owner {
		n.local.mu.Unlock()
		return
	}
	delete(n.local.m, o.key)
	rev := r.rev
	n.local.mu.Unlock()
	if rev == 0 {
		return
	}
	if err := n.kv.Delete(ctx, o.key, jetstream.LastRevision(rev)); err != nil {
		n.log.Debug("directory delete not done", zap.String("key", o.key), zap.Error(err))
	}
}

// watch applies the bucket's changes to the directory.
func (n *Node) watch(w jetstream.KeyWatcher) {
	defer n.wg.Done()
	defer func() { _ = w.Stop() }()
	initial := true
	// Node names and incarnations repeat in every entry of a node: one
	// string each (the watch goroutine's own map, a few entries).
	intern := make(map[string]string)
	in := func(s string) string {
		if v, ok := intern[s]; ok {
			return v
		}
		if len(intern) > 1024 {
			clear(intern) // restarts over a long life
		}
		intern[s] = s
		return s
	}
	for {
		var e jetstream.KeyValueEntry
		select {
		case <-n.ctx.Done():
			return
		case e = <-w.Updates():
		}
		if e == nil {
			if initial {
				initial = false
				close(n.ready)
			}
			continue
		}
		local, resource, ok := parseKey(e.Key())
		if !ok {
			continue
		}
		if e.Operation() != jetstream.KeyValuePut {
			if old := n.remove(local, resource); old != nil && old.rev > e.Revision() {
				n.put(old) // an older delete seen late: keep the newer entry
			}
			continue
		}
		var v value
		if json.Unmarshal(e.Value(), &v) != nil {
			continue
		}
		if v.Node == n.name {
			n.remove(local, resource)
			if v.Inc != n.inc {
				// Left by a previous run of this node: its sessions are
				// gone.
				go n.deleteStale(e.Key(), e.Revision())
			}
			continue
		}
		ent := &Entry{Local: local, Resource: resource, Node: in(v.Node), Available: v.Avail, Priority: v.Prio,
			Presence: v.Presence, Flags: v.Flags, inc: in(v.Inc), rev: e.Revision()}
		if !n.admit(ent) {
			continue
		}
		n.put(ent)
		// Another node bound a key this node holds: the later bind
		// wins, the session here goes with conflict. A bind of ours in
		// flight (rev 0) comes later than this and wins.
		k := e.Key()
		n.local.mu.Lock()
		r := n.local.m[k]
		switch {
		case r == nil:
		case r.rev == 0:
			r.foreign = max(r.foreign, e.Revision()) // judged when our write returns
			r = nil
		case e.Revision() > r.rev:
			delete(n.local.m, k)
		default:
			r = nil
		}
		n.local.mu.Unlock()
		if r != nil {
			n.h.Conflict(r.owner)
		}
	}
}

// admit reports whether an entry's node is alive in the incarnation that
// wrote it; a node first heard of through its entries gets node_timeout
// to send a heartbeat.
func (n *Node) admit(e *Entry) bool {
	n.nodesMu.Lock()
	defer n.nodesMu.Unlock()
	st := n.nodes[e.Node]
	if st == nil {
		n.nodes[e.Node] = &nodeState{inc: e.inc, lastSeen: time.Now()}
		return true
	}
	return st.inc == e.inc
}

func (n *Node) deleteStale(k string, rev uint64) {
	ctx, cancel := context.WithTimeout(n.ctx, writeTimeout)
	defer cancel()
	_ = n.kv.Delete(ctx, k, jetstream.LastRevision(rev))
}

// beat sends this node's heartbeats and finds dead nodes.
func (n *Node) beat() {
	defer n.wg.Done()
	t := time.NewTicker(n.cfg.Heartbeat)
	defer t.Stop()
	n.sendHeartbeat()
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-t.C:
		}
		n.sendHeartbeat()
		now := time.Now()
		n.checkNodes(now)
		n.resendPending(now)
		n.agePending(now, 4*n.cfg.NodeTimeout)
	}
}

func (n *Node) sendHeartbeat() {
	b, _ := json.Marshal(heartbeat{Node: n.name, Inc: n.inc, Sessions: int(n.localCount.Load()), Started: n.started.UnixNano()})
	_ = n.nc.Publish(n.hbSubject, b)
}

// reconnected runs when the NATS connection is back: the others get
// node_timeout from now to be heard again, and this node's keys are
// written again in case the others took it as dead meanwhile.
func (n *Node) reconnected() {
	now := time.Now()
	long := n.cutLong(now)
	n.nodesMu.Lock()
	for _, st := range n.nodes {
		st.lastSeen = now
	}
	n.nodesMu.Unlock()
	n.sendHeartbeat()
	if long {
		n.log.Warn("back after a cut longer than node_timeout: the others took this node as dead; its sessions are announced again")
	}
	n.reassert(long)
}

// onHeartbeat runs on nats.go's goroutine for the heartbeat subject.
func (n *Node) onHeartbeat(m *nats.Msg) {
	var hb heartbeat
	if json.Unmarshal(m.Data, &hb) != nil {
		return
	}
	if hb.Node == n.name {
		if hb.Inc != n.inc && n.dupe.CompareAndSwap(false, true) {
			// Two live nodes with one name would delete each other's
			// directory entries as stale.
			n.log.Error("another live node has this cluster.node_name", zap.String("incarnation", hb.Inc))
		}
		if hb.Inc == n.inc {
			n.heardSelf(time.Now())
		}
		return
	}
	n.nodesMu.Lock()
	st := n.nodes[hb.Node]
	restarted := st != nil && st.inc != hb.Inc
	if st == nil {
		st = &nodeState{}
		n.nodes[hb.Node] = st
		n.log.Info("node joined", zap.String("peer", hb.Node))
	}
	st.inc, st.lastSeen, st.sessions, st.started = hb.Inc, time.Now(), hb.Sessions, time.Unix(0, hb.Started)
	n.nodesMu.Unlock()
	if restarted {
		// Restarted before its timeout: what its previous run held is
		// gone.
		n.down(hb.Node, hb.Inc)
	}
}

// checkNodes takes as dead the nodes silent for longer than node_timeout.
// While this node is cut from NATS it hears nobody, which says nothing of
// the others: it judges no one until it is back (reconnected).
func (n *Node) checkNodes(now time.Time) {
	since, ok := n.hearing(now)
	if !n.nc.IsConnected() || !ok {
		return
	}
	var dead []string
	n.nodesMu.Lock()
	for name, st := range n.nodes {
		if now.Sub(st.lastSeen) > n.cfg.NodeTimeout && now.Sub(since) > n.cfg.NodeTimeout {
			dead = append(dead, name)
			delete(n.nodes, name)
		}
	}
	n.nodesMu.Unlock()
	for _, name := range dead {
		n.log.Warn("node down: no heartbeat", zap.String("peer", name), zap.Duration("timeout", n.cfg.NodeTimeout))
		n.down(name, "")
	}
}

// down drops a dead node's entries (those of incarnations other than
// keep) and tells the handler; the first live node by name announces its
// sessions unavailable and deletes its keys.
func (n *Node) down(node, keep string) {
	n.nodesDown.Add(1)
	gone := n.removeNode(node, keep)
	// What this node sent there and was not acknowledged goes back,
	// whoever announces.
	n.giveBack(node)
	announce := n.liveNames()[0] == n.name
	n.h.NodeDown(node, gone, announce)
	if !announce {
		return
	}
	ctx, cancel := context.WithTimeout(n.ctx, writeTimeout)
	defer cancel()
	for _, e := range gone {
		_ = n.kv.Delete(ctx, key(e.Local, e.Resource), jetstream.LastRevision(e.rev))
	}
}
