package cluster

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
)

// Leases give an object a service holds in memory (a multi-user chat
// room) to one node at a time: a key per object in a JetStream key-value
// bucket, created by the node that first needs the object (create is
// atomic: of two nodes at once, one wins and the other reads the winner).
// A lease has no TTL of its own: it lives as long as its holder's
// incarnation does by the heartbeats (node_timeout), the same liveness the
// session directory uses, so that a node is either alive for both or dead
// for both. A lease whose holder is dead is taken by compare-and-swap on
// its revision by the next node that needs the object. Every node keeps a
// copy of the leases (a watch), so that finding the owner of an object
// costs a map lookup, not a round trip. A holder releases (deletes) the
// lease when it drops the object, and all of its leases when it leaves.
//
// The holder is sent the stanzas other nodes' sessions address to the
// object over a subject of its own, krill.<domain>.fwd.<node>.

const leaseBucketPrefix = "krill_leases_"

// errLeaseBusy means the lease changed hands too often to settle.
var errLeaseBusy = errors.New("cluster: lease contended, try again")

// leaseVal is a lease's stored form.
type leaseVal struct {
	Node string `json:"n"`
	Inc  string `json:"i"`
}

// leaseRec is a lease as this node's copy holds it.
type leaseRec struct {
	node, inc string
	rev       uint64
}

// ForwardFunc receives a stanza another node forwarded here: sent is when
// it was published (the sender's clock), origin the node of from's
// session, hops the forwards so far. Called on one goroutine, in the
// order the stanzas were published by each node; it must not block.
type ForwardFunc func(sent time.Time, origin string, hops int, from string, stanza []byte)

// Leases is a node's side of the leases. Create it with StartLeases; Close
// releases what it holds.
type Leases struct {
	n  *Node
	kv jetstream.KeyValue
	// counters is the cluster-wide counters' bucket (counter.go).
	counters jetstream.KeyValue
	sub      *nats.Subscription
	prefix   string // the forward subjects' prefix
	fwd      ForwardFunc
	ctx      context.Context
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	rel      chan string

	mu   sync.RWMutex
	m    map[string]leaseRec // every lease, by key
	held map[string]uint64   // this node's, by key: revision written

	taken, takeovers, forwarded, received, fwdDropped atomic.Uint64
}

// LeaseStats are the leases' counters on this node.
type LeaseStats struct {
	// Held is the number of leases this node holds; Known the number in
	// its copy.
	Held, Known int
	// Taken counts leases this node took, Takeovers those taken from a
	// dead holder.
	Taken, Takeovers uint64
	// Forwarded and Received count stanzas forwarded to and from other
	// nodes; Dropped those that could not be published.
	Forwarded, Received, Dropped uint64
}

// leaseKey is the key of name in service: service.<base64url(name)>.
func leaseKey(service, name string) string {
	return service + "." + base64.RawURLEncoding.EncodeToString([]byte(name))
}

// StartLeases opens (or creates) the lease bucket of n's cluster, loads
// the copy of the leases and subscribes to n's forward subject; fwd gets
// what other nodes forward here.
func StartLeases(ctx context.Context, n *Node, fwd ForwardFunc) (*Leases, error) {
	token := sanitize(strings.ReplaceAll(n.domain, ".", "_"))
	js, err := jetstream.New(n.nc)
	if err != nil {
		return nil, fmt.Errorf("cluster: jetstream: %w", err)
	}
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      leaseBucketPrefix + token,
		Description: "Krill leases (multi-user chat rooms) for " + n.domain,
		History:     1,
		Storage:     jetstream.FileStorage,
		Replicas:    n.cfg.Replicas,
	})
	if err != nil {
		return nil, fmt.Errorf("cluster: lease bucket: %w", err)
	}
	counters, err := openCounters(ctx, n, js)
	if err != nil {
		return nil, err
	}
	l := &Leases{n: n, kv: kv, counters: counters, fwd: fwd, prefix: subjectPrefix + token + ".fwd.",
		m: make(map[string]leaseRec), held: make(map[string]uint64), rel: make(chan string, 4096)}
	l.ctx, l.cancel = context.WithCancel(context.Background())
	w, err := kv.WatchAll(l.ctx)
	if err != nil {
		l.cancel()
		return nil, fmt.Errorf("cluster: watch the leases: %w", err)
	}
	ready := make(chan struct{})
	l.wg.Add(2)
	go l.watch(w, ready)
	go l.releaser()
	select {
	case <-ready:
	case <-ctx.Done():
		l.Close()
		return nil, fmt.Errorf("cluster: loading the leases: %w", ctx.Err())
	}
	if l.sub, err = n.nc.Subscribe(l.prefix+n.name, l.onForward); err == nil {
		err = l.sub.SetPendingLimits(256<<10, 64<<20)
	}
	if err != nil {
		l.Close()
		return nil, fmt.Errorf("cluster: subscribe: %w", err)
	}
	return l, nil
}

// alive reports whether node, in incarnation inc, is a live member: this
// node, or one heard within node_timeout.
func (n *Node) alive(node, inc string) bool {
	if node == n.name {
		return inc == n.inc
	}
	n.nodesMu.Lock()
	defer n.nodesMu.Unlock()
	st := n.nodes[node]
	return st != nil && st.inc == inc
}

// Owner returns the live holder of the lease of name in service, "" when
// none. Any goroutine.
func (l *Leases) Owner(service, name string) string {
	l.mu.RLock()
	r, ok := l.m[leaseKey(service, name)]
	l.mu.RUnlock()
	if !ok || !l.n.alive(r.node, r.inc) {
		return ""
	}
	return r.node
}

// Take takes the lease of name in service, or returns its live holder.
// It blocks for key-value round trips.
func (l *Leases) Take(ctx context.Context, service, name string) (string, error) {
	k := leaseKey(service, name)
	me := l.n.name
	val, _ := json.Marshal(leaseVal{Node: me, Inc: l.n.inc})
	for range 8 {
		rev, err := l.kv.Create(ctx, k, val)
		if err == nil {
			l.taken.Add(1)
			l.hold(k, rev)
			return me, nil
		}
		if !errors.Is(err, jetstream.ErrKeyExists) {
			return "", fmt.Errorf("cluster: take lease %s: %w", k, err)
		}
		e, err := l.kv.Get(ctx, k)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue // released between the two: create again
		}
		if err != nil {
			return "", fmt.Errorf("cluster: read lease %s: %w", k, err)
		}
		var v leaseVal
		if json.Unmarshal(e.Value(), &v) == nil && l.n.alive(v.Node, v.Inc) {
			if v.Node == me {
				l.hold(k, e.Revision())
			}
			return v.Node, nil
		}
		// Its holder is dead (or an earlier run of this node): take it
		// from that revision; of two takers one wins, the other reads
		// the winner.
		rev, err = l.kv.Update(ctx, k, val, e.Revision())
		if err == nil {
			l.taken.Add(1)
			l.takeovers.Add(1)
			l.n.log.Info("lease taken over", zap.String("key", k), zap.String("from", v.Node))
			l.hold(k, rev)
			return me, nil
		}
		if ctx.Err() != nil {
			return "", fmt.Errorf("cluster: take lease %s: %w", k, err)
		}
	}
	return "", errLeaseBusy
}

// hold records that this node holds k at rev.
func (l *Leases) hold(k string, rev uint64) {
	l.mu.Lock()
	l.held[k] = rev
	if r, ok := l.m[k]; !ok || r.rev <= rev {
		l.m[k] = leaseRec{node: l.n.name, inc: l.n.inc, rev: rev}
	}
	l.mu.Unlock()
}

// Release gives up the lease of name in service if this node holds it;
// the delete is queued. Any goroutine.
func (l *Leases) Release(service, name string) {
	k := leaseKey(service, name)
	l.mu.RLock()
	_, ok := l.held[k]
	l.mu.RUnlock()
	if !ok {
		return
	}
	select {
	case l.rel <- k:
	default:
		// Left in place: the next node that needs the object finds it
		// held by a live node that forwards back... until this node
		// takes it again or leaves. Counted as a drop.
		l.fwdDropped.Add(1)
	}
}

// releaser deletes released leases, in order.
func (l *Leases) releaser() {
	defer l.wg.Done()
	for {
		select {
		case <-l.ctx.Done():
			return
		case k := <-l.rel:
			l.deleteHeld(l.ctx, k)
		}
	}
}

// deleteHeld deletes k if this node still holds it at the revision it
// wrote.
func (l *Leases) deleteHeld(ctx context.Context, k string) {
	l.mu.Lock()
	rev, ok := l.held[k]
	delete(l.held, k)
	l.mu.Unlock()
	if !ok {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, writeTimeout)
	defer cancel()
	if err := l.kv.Delete(ctx, k, jetstream.LastRevision(rev)); err != nil {
		l.n.log.Debug("lease not released", zap.String("key", k), zap.Error(err))
	}
}

// watch keeps the copy of the leases.
func (l *Leases) watch(w jetstream.KeyWatcher, ready chan struct{}) {
	defer l.wg.Done()
	defer func() { _ = w.Stop() }()
	initial := true
	for {
		var e jetstream.KeyValueEntry
		select {
		case <-l.ctx.Done():
			return
		case e = <-w.Updates():
		}
		if e == nil {
			if initial {
				initial = false
				close(ready)
			}
			continue
		}
		k := e.Key()
		l.mu.Lock()
		if e.Operation() != jetstream.KeyValuePut {
			if r, ok := l.m[k]; ok && r.rev <= e.Revision() {
				delete(l.m, k)
			}
			if rev, ok := l.held[k]; ok && rev < e.Revision() {
				delete(l.held, k)
			}
		} else {
			var v leaseVal
			if json.Unmarshal(e.Value(), &v) == nil {
				if r, ok := l.m[k]; !ok || r.rev <= e.Revision() {
					l.m[k] = leaseRec{node: v.Node, inc: v.Inc, rev: e.Revision()}
				}
				if rev, ok := l.held[k]; ok && rev < e.Revision() && (v.Node != l.n.name || v.Inc != l.n.inc) {
					// Taken from this node (it was taken as dead while
					// cut from NATS): no longer ours.
					delete(l.held, k)
				}
			}
		}
		l.mu.Unlock()
	}
}

// Forward publishes stanza, which from (a session on origin) sent, to
// node's forward subject. It does not block.
//
// Wire: [sent: 8, unix ns][hops: 1][len(origin): 1][origin][len(from): 2][from][stanza].
func (l *Leases) Forward(node, origin, from string, stanza []byte, hops int) bool {
	if l.n.closed.Load() || len(origin) > 255 || len(from) > 65535 {
		return false
	}
	msg := make([]byte, 0, 12+len(origin)+len(from)+len(stanza))
	msg = binary.BigEndian.AppendUint64(msg, uint64(time.Now().UnixNano()))
	msg = append(msg, byte(min(hops, 255)), byte(len(origin)))
	msg = append(msg, origin...)
	msg = binary.BigEndian.AppendUint16(msg, uint16(len(from)))
	msg = append(msg, from...)
	msg = append(msg, stanza...)
	if err := l.n.nc.Publish(l.prefix+node, msg); err != nil {
		l.fwdDropped.Add(1)
		return false
	}
	l.forwarded.Add(1)
	return true
}

// onForward runs on nats.go's goroutine for this node's forward subject.
func (l *Leases) onForward(m *nats.Msg) {
	d := m.Data
	if len(d) < 10 {
		return
	}
	sent := time.Unix(0, int64(binary.BigEndian.Uint64(d)))
	hops, ol := int(d[8]), int(d[9])
	d = d[10:]
	if len(d) < ol+2 {
		return
	}
	origin := string(d[:ol])
	d = d[ol:]
	fl := int(binary.BigEndian.Uint16(d))
	if len(d) < 2+fl {
		return
	}
	from := string(d[2 : 2+fl])
	l.received.Add(1)
	l.fwd(sent, origin, hops, from, d[2+fl:])
}

// Stats returns a snapshot of the counters.
func (l *Leases) Stats() LeaseStats {
	l.mu.RLock()
	st := LeaseStats{Held: len(l.held), Known: len(l.m)}
	l.mu.RUnlock()
	st.Taken, st.Takeovers = l.taken.Load(), l.takeovers.Load()
	st.Forwarded, st.Received, st.Dropped = l.forwarded.Load(), l.received.Load(), l.fwdDropped.Load()
	return st
}

// Close releases every lease this node holds (for at most closeTimeout)
// and stops. Call it before the Node's Close.
func (l *Leases) Close() {
	if l.sub != nil {
		_ = l.sub.Unsubscribe()
	}
	l.mu.RLock()
	keys := make([]string, 0, len(l.held))
	for k := range l.held {
		keys = append(keys, k)
	}
	l.mu.RUnlock()
	ctx, cancel := context.WithTimeout(context.Background(), closeTimeout)
	defer cancel()
	for _, k := range keys {
		if ctx.Err() != nil {
			break
		}
		l.deleteHeld(ctx, k)
	}
	l.cancel()
	l.wg.Wait()
}

// Abandon drops the node's NATS connection without leaving the cluster:
// what a crash looks like to the other nodes (its directory entries and
// leases stay until they find it dead). For tests.
func (n *Node) Abandon() {
	n.nc.Close()
}
