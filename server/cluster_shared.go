package server

import (
	"context"
	"hash/maphash"
	"net/netip"
	"runtime/debug"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/krill-xmpp/krill/cluster"
	"github.com/krill-xmpp/krill/hook"
	"github.com/krill-xmpp/krill/stanza"
)

// Shared services in cluster mode (issue 17, item 5): objects a module
// holds in memory for sessions of every node, multi-user chat rooms, are
// each held by one node at a time under a lease (cluster/lease.go), and
// the stanzas local sessions send to an object held elsewhere are
// forwarded to its holder, whose module handles them as if the sender
// were local: hook.Cluster is the modules' side. What the holder sends
// back (to the sender, to occupants on other nodes) goes through the
// other nodes' inboxes like any stanza to a remote session.

// sharedState is the server's side of the leases.
type sharedState struct {
	leases *cluster.Leases
	shards []chan forwarded
	// queued is the bytes of the stanzas waiting in the shards, against
	// forwardBytes.
	queued atomic.Int64
	seed   maphash.Seed
	// quit ends the workers. The shards are never closed: the lease
	// subscription's callback may still be sending when they stop.
	quit chan struct{}
}

// forwarded is a stanza another node forwarded here.
type forwarded struct {
	sent         time.Time
	origin, from string
	hops         int
	stanza       []byte
}

// forwardShards is how many goroutines handle forwarded stanzas: the
// stanzas of one object (by the to's localpart) always go to the same
// one, in order. A handler may block there (a room loaded from storage):
// they are workers, not event loops.
const forwardShards = 4

// forwardQueue caps the forwarded stanzas waiting per shard, and
// forwardBytes their bytes over every shard; beyond either a stanza is
// dropped, counted (krill_cluster_dropped_total{reason="forward"}), and
// its sender gets resource-constraint (type wait).
const (
	forwardQueue = 4096
	forwardBytes = 32 << 20
)

// startShared opens the leases once the node has joined.
func (s *Server) startShared(ctx context.Context) error {
	sh := &sharedState{seed: maphash.MakeSeed(), quit: make(chan struct{})}
	for range forwardShards {
		ch := make(chan forwarded, forwardQueue)
		sh.shards = append(sh.shards, ch)
		go s.forwardWorker(sh, ch)
	}
	// The callback reads s.shared: set it before the subscription.
	s.shared = sh
	l, err := cluster.StartLeases(ctx, s.cluster, s.onForward)
	if err != nil {
		close(sh.quit)
		s.shared = nil
		return err
	}
	sh.leases = l
	return nil
}

// closeShared releases this node's leases (the other nodes take the
// objects over at once) and stops the forward workers. Before the
// cluster node closes.
func (s *Server) closeShared() {
	if s.shared == nil {
		return
	}
	s.shared.leases.Close()
	close(s.shared.quit)
}

// onForward runs on the lease subscription's goroutine: the stanza goes to
// its shard's worker.
func (s *Server) onForward(sent time.Time, origin string, hops int, from string, b []byte) {
	tag, err := stanza.ParseStartTag(b)
	if err != nil {
		return
	}
	to, _ := tag.AttrString("to")
	local, _, _ := splitJID(to)
	sh := s.shared
	ch := sh.shards[maphash.String(sh.seed, local)%forwardShards]
	if sh.queued.Add(int64(len(b))) <= forwardBytes {
		select {
		case ch <- forwarded{sent: sent, origin: origin, hops: hops, from: from, stanza: b}:
			return
		default:
		}
	}
	sh.queued.Add(-int64(len(b)))
	s.clusterStats.forwardDropped.Add(1)
	if typ, _ := tag.AttrString("type"); typ != "error" && from != "" {
		id, _ := tag.AttrString("id")
		s.deliver(nil, from, stanza.AppendError(nil, string(tag.Local()), id, to, from, "wait", "resource-constraint", "the node serving it is overloaded"))
	}
}

// forwardWorker hands forwarded stanzas to the handler of their domain.
func (s *Server) forwardWorker(sh *sharedState, ch chan forwarded) {
	for {
		select {
		case f := <-ch:
			sh.queued.Add(-int64(len(f.stanza)))
			s.handleForwarded(f)
		case <-sh.quit:
			return
		}
	}
}

// handleForwarded dispatches one forwarded stanza as handleStanza does a
// local session's stanza to a domain a module serves.
func (s *Server) handleForwarded(f forwarded) {
	defer func() {
		if p := recover(); p != nil {
			s.log.Error("panic in a forwarded stanza's handler", zap.Any("panic", p), zap.String("from", f.from), zap.ByteString("stack", debug.Stack()))
		}
	}()
	tag, err := stanza.ParseStartTag(f.stanza)
	if err != nil {
		return
	}
	kind, ok := hook.KindOf(tag.Local())
	if !ok {
		return
	}
	st := &hook.Stanza{Kind: kind, From: f.from, Tag: tag, Raw: f.stanza}
	st.Type, _ = tag.AttrString("type")
	st.ID, _ = tag.AttrString("id")
	st.To, _ = tag.AttrString("to")
	if !s.address(st) || st.Addr != hook.ToRemote {
		return
	}
	if kind == hook.IQ {
		st.Payload, st.NS, st.Name, _ = payloadOf(f.stanza)
	}
	h := s.hooks.Domain(st.Domain)
	if h == nil {
		return
	}
	sess := &forwardedSession{s: s, full: f.from, origin: f.origin, hops: f.hops}
	cx := &hook.Ctx{Host: s.host, Registry: s.hooks, Session: sess, Conn: forwardedConn{sess, st}, Stanza: st, Log: s.log}
	s.clusterStats.forwardIn.Add(1)
	h(cx, st)
}

// Cluster implements hook.ClusterOf's accessor: nil when standalone.
func (h host) Cluster() hook.Cluster {
	if h.s.shared == nil || h.s.shared.leases == nil {
		return nil
	}
	return clusterHook(h)
}

// clusterHook is hook.Cluster over the node's leases.
type clusterHook struct{ s *Server }

var _ hook.Cluster = clusterHook{}

// Node implements hook.Cluster.
func (c clusterHook) Node() string { return c.s.cluster.Name() }

// Owner implements hook.Cluster.
func (c clusterHook) Owner(service, name string) string {
	return c.s.shared.leases.Owner(service, name)
}

// Lease implements hook.Cluster.
func (c clusterHook) Lease(ctx context.Context, service, name string) (string, error) {
	return c.s.shared.leases.Take(ctx, service, name)
}

// Release implements hook.Cluster.
func (c clusterHook) Release(service, name string) { c.s.shared.leases.Release(service, name) }

// Count implements hook.Cluster.
func (c clusterHook) Count(ctx context.Context, name string, window time.Duration, max int) (bool, error) {
	return c.s.shared.leases.Count(ctx, name, window, max)
}

// Forward implements hook.Cluster: a stanza forwarded here and on keeps
// its sender's node and counts one more hop.
func (c clusterHook) Forward(node string, from hook.Session, fromJID string, raw []byte) bool {
	origin, hops := c.s.cluster.Name(), 0
	switch f := from.(type) {
	case nil:
		origin = "" // no session here: what goes back is routed by JID
	case hook.Forwarded:
		origin, hops = f.Origin(), f.Hops()+1
	}
	return c.s.shared.leases.Forward(node, origin, fromJID, raw, hops)
}

// forwardedSession is the sender of a forwarded stanza as the module that
// handles it sees it: what it delivers goes to the sender's node, whose
// inbox hands it to the session (a session gone meanwhile drops it, as a
// local session that went would); with no origin node (a sender with no
// session in the cluster, another server's user) it is routed by JID.
type forwardedSession struct {
	s      *Server
	full   string
	origin string
	hops   int
}

var (
	_ hook.Forwarded = (*forwardedSession)(nil)
	_ hook.Remote    = (*forwardedSession)(nil)
)

// Origin implements hook.Forwarded.
func (f *forwardedSession) Origin() string { return f.origin }

// Hops implements hook.Forwarded.
func (f *forwardedSession) Hops() int { return f.hops }

// Remote implements hook.Remote.
func (f *forwardedSession) Remote() bool { return true }

// Local implements hook.Session.
func (f *forwardedSession) Local() string { l, _, _ := splitJID(f.full); return l }

// Full implements hook.Session.
func (f *forwardedSession) Full() string { return f.full }

// Available implements hook.Session: a session that sends is there.
func (f *forwardedSession) Available() bool { return true }

// Priority implements hook.Session.
func (f *forwardedSession) Priority() int { return 0 }

// SetPresence implements hook.Session (the session's own node sets it).
func (f *forwardedSession) SetPresence(*hook.Ctx, []byte, int) {}

// Presence implements hook.Session.
func (f *forwardedSession) Presence() []byte { return nil }

// Has implements hook.Session.
func (f *forwardedSession) Has(hook.Flag) bool { return false }

// Set implements hook.Session (no effect here).
func (f *forwardedSession) Set(hook.Flag, bool) {}

// Slot implements hook.Session: per-session state lives on its node.
func (f *forwardedSession) Slot(hook.Slot) any { return nil }

// SetSlot implements hook.Session (no effect here).
func (f *forwardedSession) SetSlot(hook.Slot, any) {}

// Deliver implements hook.Session: to the sender's node (or here, if the
// stanza came back to its own node).
func (f *forwardedSession) Deliver(b []byte) bool {
	s := f.s
	if f.origin == "" {
		return s.deliver(nil, f.full, b) > 0
	}
	if f.origin == s.cluster.Name() {
		local, _, resource := splitJID(f.full)
		if o := s.sessions.find(local, resource); o != nil && o.deliver(nil, b) {
			s.stats.stanzasRouted.Add(1)
			return true
		}
		return false
	}
	if !s.cluster.Send(f.origin, f.full, b, false) {
		return false
	}
	s.stats.stanzasRouted.Add(1)
	return true
}

// Pass implements hook.Session.
func (f *forwardedSession) Pass(_ hook.Outbound, b []byte) { f.Deliver(b) }

// Close implements hook.Session: the session's own node closes it.
func (f *forwardedSession) Close(cond, _ string) {
	if f.origin != "" && f.origin != f.s.cluster.Name() {
		f.s.cluster.SendClose(f.origin, f.full, cond)
	}
}

// forwardedConn is the connection of a forwarded stanza: replies go to
// the sender, Async runs its job at once on the forward worker (the next
// stanza of the same object waits, which keeps their order).
type forwardedConn struct {
	f  *forwardedSession
	st *hook.Stanza // the stanza: its header goes to Async's continuation
}

// Write implements hook.Conn: b is copied (it may be a reused scratch
// buffer) and delivered to the sender as it would be written to its
// connection.
func (c forwardedConn) Write(b []byte) { c.f.Deliver(append([]byte(nil), b...)) }

// WriteNonza implements hook.Conn: there is no stream here.
func (c forwardedConn) WriteNonza([]byte) {}

// Async implements hook.Conn: job and its continuation run now.
func (c forwardedConn) Async(job func(ctx context.Context) func(*hook.Ctx), _ func(*hook.Ctx)) {
	s := c.f.s
	ctx, cancel := context.WithTimeout(context.Background(), storageTimeout)
	cont := job(ctx)
	cancel()
	if cont == nil {
		return
	}
	// As for a connection's Async: the continuation sees the stanza's
	// header only.
	h := *c.st
	h.Raw, h.Payload, h.Tag = nil, nil, stanza.StartTag{}
	cont(&hook.Ctx{Host: s.host, Registry: s.hooks, Session: c.f, Conn: c, Stanza: &h, Log: s.log})
}

// Fail implements hook.Conn: the sender's node owns its stream.
func (c forwardedConn) Fail(cond, _ string) { c.f.Close(cond, "") }

// Secure implements hook.Conn.
func (c forwardedConn) Secure() bool { return true }

// IP implements hook.Conn: unknown here.
func (c forwardedConn) IP() netip.Addr { return netip.Addr{} }

// CountFailure implements hook.Conn (no pre-auth here).
func (c forwardedConn) CountFailure() {}

// nodeDownModules tells the modules that watch nodes that node died.
func (s *Server) nodeDownModules(node string) {
	for _, m := range s.hooks.Modules() {
		if w, ok := m.(hook.NodeWatcher); ok {
			w.NodeDown(s.host, node)
		}
	}
}

var (
	descLeases     = prometheus.NewDesc("krill_cluster_leases", "Leases (multi-user chat rooms) this node holds (held) and knows of in the cluster (known).", []string{"state"}, nil)
	descLeaseTaken = prometheus.NewDesc("krill_cluster_leases_taken_total", "Leases this node took: new ones (new) and from a dead holder (takeover).", []string{"how"}, nil)
	descForwarded  = prometheus.NewDesc("krill_cluster_forwarded_total", "Stanzas to a shared object (a room) forwarded to its holder (out) and from other nodes (in).", []string{"direction"}, nil)
	descRoute      = prometheus.NewDesc("krill_cluster_route_seconds", "Routing latency of stanzas from another node: publish there to hand-over to the target session's loop here (the two hosts' clocks must agree: NTP).", nil, nil)
)

// collectShared adds the shared services' metrics and the routing
// latency.
func (s *Server) collectShared(ch chan<- prometheus.Metric, st cluster.Stats) {
	buckets := make(map[float64]uint64, len(cluster.RouteBuckets))
	var acc uint64
	for i, b := range cluster.RouteBuckets {
		acc += st.Route.Counts[i]
		buckets[b] = acc
	}
	ch <- prometheus.MustNewConstHistogram(descRoute, st.Route.Count(), st.Route.Sum.Seconds(), buckets)
	if s.shared == nil {
		return
	}
	ls := s.shared.leases.Stats()
	ch <- prometheus.MustNewConstMetric(descLeases, prometheus.GaugeValue, float64(ls.Held), "held")
	ch <- prometheus.MustNewConstMetric(descLeases, prometheus.GaugeValue, float64(ls.Known), "known")
	ch <- prometheus.MustNewConstMetric(descLeaseTaken, prometheus.CounterValue, float64(ls.Taken-ls.Takeovers), "new")
	ch <- prometheus.MustNewConstMetric(descLeaseTaken, prometheus.CounterValue, float64(ls.Takeovers), "takeover")
	ch <- prometheus.MustNewConstMetric(descForwarded, prometheus.CounterValue, float64(ls.Forwarded), "out")
	ch <- prometheus.MustNewConstMetric(descForwarded, prometheus.CounterValue, float64(ls.Received), "in")
}

// sharedDescs are the descriptors collectShared uses.
var sharedDescs = []*prometheus.Desc{descLeases, descLeaseTaken, descForwarded, descRoute}
