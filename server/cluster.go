package server

import (
	"context"
	"fmt"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"mellium.im/xmpp/stream"

	"github.com/krill-xmpp/krill/cluster"
	"github.com/krill-xmpp/krill/hook"
	"github.com/krill-xmpp/krill/stanza"
)

// The server's side of cluster mode (package cluster does the NATS side):
// sessions on other nodes appear to routing and to modules as remote
// sessions, and what other nodes send is handed to local sessions through
// their mailboxes, as deliveries from another loop are.

// clusterStats are the cluster's counters on this node (the cluster
// package keeps the NATS side's).
type clusterStats struct {
	undelivered atomic.Uint64 // stanzas from another node for a session gone here
	// forwardIn counts stanzas forwarded here to a shared object (a room),
	// forwardDropped those dropped because the forward queue was full
	// (cluster_shared.go).
	forwardIn, forwardDropped atomic.Uint64
}

// startCluster joins the cluster when the configuration asks for it.
func (s *Server) startCluster() error {
	if !s.cfg.Cluster.Enabled() {
		return nil
	}
	if s.cfg.Storage.Driver != "postgres" {
		return fmt.Errorf("server: %w", errClusterStorage)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*s.cfg.Cluster.Heartbeat+10e9)
	defer cancel()
	n, err := cluster.Start(ctx, s.cfg.Cluster, cluster.Options{Domain: s.cfg.Domain, Log: s.log.Named("cluster"),
		Handler: clusterHandler{s}})
	if err != nil {
		return err
	}
	s.cluster = n
	if err := s.startShared(ctx); err != nil {
		n.Close()
		s.cluster = nil
		return err
	}
	s.metrics.extra = append(s.metrics.extra, (*clusterCollector)(s))
	s.metrics.extra = append(s.metrics.extra, (*handoverCollector)(s)) // cluster_handover_metrics.go
	return nil
}

// clusterCollector exposes the cluster's gauges and counters on this node.
type clusterCollector Server

var (
	descClusterNodes   = prometheus.NewDesc("krill_cluster_nodes", "Live cluster nodes as this node sees them, itself included.", nil, nil)
	descClusterRemote  = prometheus.NewDesc("krill_cluster_remote_sessions", "Sessions on other nodes in this node's directory.", nil, nil)
	descClusterStanzas = prometheus.NewDesc("krill_cluster_stanzas_total", "Stanzas and commands sent to other nodes (out) and received from them (in).", []string{"direction"}, nil)
	descClusterDropped = prometheus.NewDesc("krill_cluster_dropped_total", "What the cluster could not carry: stanzas not published or dropped as a slow consumer (publish), directory writes refused by a full queue (directory), stanzas from another node for a session gone here that no module took (undelivered).", []string{"reason"}, nil)
	descClusterDown    = prometheus.NewDesc("krill_cluster_nodes_down_total", "Nodes this node found dead (no heartbeat for cluster.node_timeout, or restarted).", nil, nil)
)

// Describe implements prometheus.Collector.
func (c *clusterCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descClusterNodes, descClusterRemote, descClusterStanzas, descClusterDropped, descClusterDown} {
		ch <- d
	}
	for _, d := range sharedDescs {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *clusterCollector) Collect(ch chan<- prometheus.Metric) {
	s := (*Server)(c)
	st := s.cluster.Stats()
	ch <- prometheus.MustNewConstMetric(descClusterNodes, prometheus.GaugeValue, float64(st.Nodes))
	ch <- prometheus.MustNewConstMetric(descClusterRemote, prometheus.GaugeValue, float64(st.Remote))
	ch <- prometheus.MustNewConstMetric(descClusterStanzas, prometheus.CounterValue, float64(st.Sent), "out")
	ch <- prometheus.MustNewConstMetric(descClusterStanzas, prometheus.CounterValue, float64(st.Received), "in")
	ch <- prometheus.MustNewConstMetric(descClusterDropped, prometheus.CounterValue, float64(st.Dropped), "publish")
	ch <- prometheus.MustNewConstMetric(descClusterDropped, prometheus.CounterValue, float64(st.WriteDropped), "directory")
	ch <- prometheus.MustNewConstMetric(descClusterDropped, prometheus.CounterValue, float64(s.clusterStats.undelivered.Load()), "undelivered")
	ch <- prometheus.MustNewConstMetric(descClusterDown, prometheus.CounterValue, float64(st.NodesDown))
	ch <- prometheus.MustNewConstMetric(descClusterDropped, prometheus.CounterValue, float64(s.clusterStats.forwardDropped.Load()), "forward")
	s.collectShared(ch, st)
}

// errClusterStorage is the start-up refusal of a cluster on SQLite (the
// configuration's Validate says the same; this guards hand-built configs).
var errClusterStorage = fmt.Errorf("cluster mode needs storage.driver \"postgres\", got sqlite")

// ClusterNode returns the node's cluster membership, nil when standalone.
func (s *Server) ClusterNode() *cluster.Node { return s.cluster }

// clusterBound records a bind in the directory; a session whose write
// cannot be queued is closed (resource-constraint): unrecorded, it would
// be unreachable from the other nodes.
func (s *Server) clusterBound(sess *session) {
	if s.cluster == nil {
		return
	}
	if !s.cluster.Bound(sess.local, sess.resource(), sess) {
		sess.closeWith(stream.ResourceConstraint.Err)
	}
}

// clusterUnbound removes a session from the directory.
func (s *Server) clusterUnbound(sess *session) {
	if s.cluster != nil {
		s.cluster.Unbound(sess.local, sess.resource(), sess)
	}
}

// clusterSync records a session's presence, priority and module flags
// in the directory: other nodes route by them and modules read them
// (roster pushes go to interested resources, carbons to enabled ones).
func (s *Server) clusterSync(sess *session) {
	if s.cluster == nil || !sess.bound {
		return
	}
	s.cluster.Presence(sess.local, sess.resource(), sess, sess.Presence(), sess.Priority(), sess.flags.Load())
}

// remoteFind returns the session local/resource on another node, or nil.
func (s *Server) remoteFind(local, resource string) *remote {
	if s.cluster == nil {
		return nil
	}
	if e := s.cluster.Find(local, resource); e != nil {
		return &remote{s: s, e: e}
	}
	return nil
}

// remoteEach calls fn for each session of local on other nodes.
func (s *Server) remoteEach(local string, fn func(*remote)) {
	if s.cluster == nil {
		return
	}
	s.cluster.Each(local, func(e *cluster.Entry) { fn(&remote{s: s, e: e}) })
}

// remote is a session on another node as modules see it: what the
// directory knows (JID, availability, priority, last presence) and
// delivery through that node's inbox. Per-session module state (flags,
// slots) lives on the session's own node and reads as empty here.
type remote struct {
	s    *Server
	e    *cluster.Entry
	dead bool // its node is down: nothing is delivered
}

var _ hook.Session = (*remote)(nil)

// Remote implements hook.Remote.
func (r *remote) Remote() bool { return true }

// Local implements hook.Session.
func (r *remote) Local() string { return r.e.Local }

// Full implements hook.Session.
func (r *remote) Full() string { return r.e.Full(r.s.cfg.Domain) }

// Available implements hook.Session.
func (r *remote) Available() bool { return r.e.Available && !r.dead }

// Priority implements hook.Session.
func (r *remote) Priority() int { return r.e.Priority }

// SetPresence implements hook.Session: only the owning node sets it.
func (r *remote) SetPresence(*hook.Ctx, []byte, int) {}

// Presence implements hook.Session.
func (r *remote) Presence() []byte {
	if r.dead {
		return nil
	}
	return r.e.Presence
}

// Has implements hook.Session: the flags as the owning node last wrote
// them (every node registers the same modules, so a flag has the same
// bit everywhere).
func (r *remote) Has(f hook.Flag) bool { return r.e.Flags&uint32(f) != 0 }

// Set implements hook.Session (no effect here: the owning node's).
func (r *remote) Set(hook.Flag, bool) {}

// Slot implements hook.Session.
func (r *remote) Slot(hook.Slot) any { return nil }

// SetSlot implements hook.Session (no effect here).
func (r *remote) SetSlot(hook.Slot, any) {}

// Deliver implements hook.Session: b is published to the owning node; a
// message worth storing offline is kept until that node acknowledges it
// (cluster.Node.Send).
func (r *remote) Deliver(b []byte) bool {
	if r.dead {
		return false
	}
	if !r.s.cluster.Send(r.e.Node, r.Full(), b, offlineWorthy(b)) {
		return false
	}
	r.s.stats.stanzasRouted.Add(1)
	return true
}

// Pass implements hook.Session.
func (r *remote) Pass(_ hook.Outbound, b []byte) { r.Deliver(b) }

// Close implements hook.Session: the owning node closes it.
func (r *remote) Close(cond, _ string) {
	if !r.dead {
		r.s.cluster.SendClose(r.e.Node, r.Full(), cond)
	}
}

// offlineWorthy reports whether b is a message of type chat or normal:
// what offline storage would take were its recipient gone.
func offlineWorthy(b []byte) bool {
	tag, err := stanza.ParseStartTag(b)
	if err != nil || string(tag.Local()) != "message" {
		return false
	}
	typ, _ := tag.AttrString("type")
	return typ == "" || typ == "normal" || typ == "chat"
}

// clusterHandler is what the cluster node calls, on its own goroutines.
type clusterHandler struct{ s *Server }

// Deliver implements cluster.Handler: to the local session as a
// delivery from another loop; a chat or normal message for a session that
// has gone meanwhile goes to the account's available resources here, and
// anything else is dropped (counted), as it would be for a session that
// went just after routing on one server.
func (h clusterHandler) Deliver(full string, b []byte) {
	s := h.s
	local, _, resource := splitJID(full)
	if o := s.sessions.find(local, resource); o != nil && o.deliver(nil, b) {
		s.stats.stanzasRouted.Add(1)
		return
	}
	tag, err := stanza.ParseStartTag(b)
	if err == nil && string(tag.Local()) == "message" {
		typ, _ := tag.AttrString("type")
		if typ == "" || typ == "normal" || typ == "chat" {
			n := 0
			var next *session
			s.sessions.each(local, func(o *session) {
				if o.available.Load() && o.priority.Load() >= 0 {
					if next != nil && next.deliver(nil, append([]byte(nil), b...)) {
						n++
					}
					next = o
				}
			})
			if next != nil && next.deliver(nil, b) {
				n++
			}
			if n > 0 {
				s.stats.stanzasRouted.Add(uint64(n))
				return
			}
			// The session went (a node draining, a logout racing the
			// directory): the message goes where one to an account
			// with no available resource goes, offline storage.
			if h.undelivered(local, tag, typ, b) {
				return
			}
		}
	}
	s.clusterStats.undelivered.Add(1)
}

// Undeliverable implements cluster.Handler: messages routed to a node that
// died before taking them go where one for an account with no available
// resource goes (offline storage), in order: one job runs them one after
// the other, and what the modules would run detached runs in that job.
func (h clusterHandler) Undeliverable(msgs []cluster.Returned) {
	s := h.s
	if !s.detached(func(ctx context.Context) {
		ih := inlineHost{host: s.host, ctx: ctx}
		for _, m := range msgs {
			local, _, _ := splitJID(m.Full)
			tag, err := stanza.ParseStartTag(m.Stanza)
			if err != nil {
				continue
			}
			typ, _ := tag.AttrString("type")
			if !h.undeliveredVia(ih, local, tag, typ, m.Stanza) {
				s.clusterStats.undelivered.Add(1)
			}
		}
	}) {
		s.clusterStats.undelivered.Add(uint64(len(msgs)))
		s.log.Warn("messages of a dead node not stored: worker queue full", zap.Int("messages", len(msgs)))
	}
}

// inlineHost is the server's hook.Host for a job already on a worker:
// Go runs the job at once, so that what the job's handlers detach keeps
// the job's order.
type inlineHost struct {
	host
	ctx context.Context
}

// Go implements hook.Host: job runs now, on this worker.
func (h inlineHost) Go(job func(ctx context.Context)) bool {
	job(h.ctx)
	return true
}

// undelivered fires the Undelivered stage for a message from another node
// that found no session here, as route does for one from a local session
// (there is no connection to answer on).
func (h clusterHandler) undelivered(local string, tag stanza.StartTag, typ string, b []byte) bool {
	return h.undeliveredVia(h.s.host, local, tag, typ, b)
}

// undeliveredVia is undelivered with the Host the handlers get.
func (h clusterHandler) undeliveredVia(hh hook.Host, local string, tag stanza.StartTag, typ string, b []byte) bool {
	s := h.s
	st := &hook.Stanza{Kind: hook.Message, Type: typ, Tag: tag, Raw: b, Addr: hook.ToBare,
		Local: local, Domain: s.cfg.Domain}
	st.ID, _ = tag.AttrString("id")
	st.From, _ = tag.AttrString("from")
	st.To, _ = tag.AttrString("to")
	cx := &hook.Ctx{Host: hh, Registry: s.hooks, Log: s.log, Stanza: st}
	return s.hooks.Stanza(cx, hook.Undelivered, st) == hook.Stop
}

// Close implements cluster.Handler.
func (h clusterHandler) Close(full, cond string) {
	local, _, resource := splitJID(full)
	if o := h.s.sessions.find(local, resource); o != nil {
		o.closeWith(cond)
	}
}

// Conflict implements cluster.Handler.
func (h clusterHandler) Conflict(owner any) {
	if o, ok := owner.(*session); ok {
		if h.s.claimMove(o) {
			return // handed over (cluster_resume.go)
		}
		h.s.stats.replaced.Add(1)
		o.closeWith(stream.Conflict.Err)
	}
}

// NodeDown implements cluster.Handler: the elected node announces the
// dead node's available sessions unavailable, as if each had closed
// without a word (the Unavailable event with no connection: the presence
// module tells the contacts, last activity is recorded). Directed presence
// lived on the dead node and is lost.
func (h clusterHandler) NodeDown(node string, gone []*cluster.Entry, announce bool) {
	s := h.s
	s.log.Warn("cluster node down", zap.String("peer", node), zap.Int("sessions", len(gone)), zap.Bool("announce", announce))
	s.nodeDownModules(node) // every node: rooms held here lose the dead node's occupants
	if !announce {
		return
	}
	for _, e := range gone {
		if !e.Available {
			continue
		}
		r := &remote{s: s, e: e, dead: true}
		cx := &hook.Ctx{Host: s.host, Registry: s.hooks, Session: r, Log: s.log}
		s.hooks.Fire(cx, hook.Unavailable)
	}
}
