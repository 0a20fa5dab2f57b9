// Package cluster joins Krill servers that serve one domain into a cluster
// over NATS: each node has one inbox subject, every node keeps a copy of
// the session directory (a JetStream key-value bucket: which node holds
// which full JID, its availability, priority and last presence), and the
// nodes announce themselves with heartbeats so that a dead one is noticed
// within a bounded time.
//
// Why one inbox per node and a replicated directory, rather than one
// subject per account: at 1,000,000 sessions, subjects per account mean a
// million subscriptions, each held by every NATS server of the cluster
// (interest propagates over routes) at a few hundred bytes each, and a
// subscribe/unsubscribe per login and logout. With an inbox per node the
// NATS side holds N subscriptions for N nodes whatever the number of
// sessions, and a stanza costs one publish to one subject; the price is the
// directory, one entry per session on every node (README, Cluster, gives the
// arithmetic). The directory also answers RFC 6121 questions that routing
// alone cannot: which resources of an account are available, at which
// priority, and their last presence for probes, without a round trip.
//
// Concurrency. Nothing here runs on a Krill event loop except the read
// methods (Each, Find) and the non-blocking queueing methods (Bound,
// Presence, Unbound, Send, SendClose). Key-value writes run on the node's
// writer goroutines, sharded by key so that each session's writes keep
// their order; the watch, the heartbeat check and the inbox callback run on
// goroutines of their own and hand work to the Handler, which hands it on
// to the sessions' loops.
package cluster

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/maphash"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/krill-xmpp/krill/config"
)

// Subjects and bucket names. A deployment may run several Krill clusters
// on one NATS account only with distinct domains: the domain is part of
// every name.
const (
	// subjectPrefix starts every subject: krill.<domain-token>.
	subjectPrefix = "krill."
	// bucketPrefix starts the session directory bucket's name.
	bucketPrefix = "krill_sessions_"
)

// Inbox message operations (first byte).
const (
	opDeliver byte = 'd' // deliver the stanza to the full JID
	opClose   byte = 'c' // close the session of the full JID with a stream error
)

// Errors.
var (
	// ErrClosed means the node has left the cluster.
	ErrClosed = errors.New("cluster: node closed")
	// ErrNameInUse means a live node already has this cluster.node_name.
	ErrNameInUse = errors.New("cluster: cluster.node_name is in use by a live node")
)

// Entry is a session on another node as the directory knows it. An Entry
// is never modified once published: an update replaces it.
type Entry struct {
	Local, Resource string
	// Node is the node that holds the session.
	Node string
	// Available and Priority are those of its last presence.
	Available bool
	Priority  int
	// Presence is its last broadcast presence, stamped; nil when
	// unavailable.
	Presence []byte
	// Flags are the session's module flags (hook.Flag).
	Flags uint32

	inc string // the node's incarnation when it wrote the entry
	rev uint64
}

// Full returns the entry's full JID.
func (e *Entry) Full(domain string) string { return e.Local + "@" + domain + "/" + e.Resource }

// Handler is what the node asks of the server. Its methods are called on
// the node's goroutines, never on an event loop, and must not block.
type Handler interface {
	// Deliver hands b, a stamped stanza another node sent to the local
	// session full, to that session; b belongs to the callee.
	Deliver(full string, b []byte)
	// Close closes the local session full with the stream error cond.
	Close(full, cond string)
	// Conflict closes the local session owner, bound here, whose full
	// JID another node has bound since (RFC 6120 7.7.2.2, conflict).
	Conflict(owner any)
	// Undeliverable hands back the stanzas sent with an acknowledgement
	// asked to a node found dead before it acknowledged them, in the
	// order they were sent: store them as undelivered (offline), in that
	// order. They belong to the callee.
	Undeliverable(msgs []Returned)
	// NodeDown reports that node died with these sessions; announce
	// is true on the one surviving node elected to announce them
	// unavailable to their contacts.
	NodeDown(node string, sessions []*Entry, announce bool)
}

// value is an entry's stored form.
type value struct {
	Node     string `json:"n"`
	Inc      string `json:"i"`
	Avail    bool   `json:"a,omitempty"`
	Prio     int    `json:"p,omitempty"`
	Presence []byte `json:"x,omitempty"`
	Flags    uint32 `json:"f,omitempty"`
}

// heartbeat is a node's announcement.
type heartbeat struct {
	Node     string `json:"n"`
	Inc      string `json:"i"`
	Sessions int    `json:"s"`
	Started  int64  `json:"t"`
}

// nodeState is what one node knows of another.
type nodeState struct {
	inc      string
	lastSeen time.Time
	sessions int
	started  time.Time
}

// Node is this server's membership of the cluster. Create it with Start;
// Close leaves.
type Node struct {
	name, inc, domain string
	cfg               config.Cluster
	log               *zap.Logger
	h                 Handler
	nc                *nats.Conn
	kv                jetstream.KeyValue
	inbox             *nats.Subscription
	hbSub             *nats.Subscription
	inboxPrefix       string
	hbSubject         string
	started           time.Time

	dir   [dirShards]dirShard
	seed  maphash.Seed
	local localTable

	nodesMu sync.Mutex
	nodes   map[string]*nodeState

	writers   []chan op
	writersWG sync.WaitGroup
	// writersMu guards closing the writers' channels against sends.
	writersMu     sync.RWMutex
	writersClosed bool
	ctx           context.Context
	cancel        context.CancelFunc
	wg            sync.WaitGroup
	closed        atomic.Bool
	dupe          atomic.Bool   // a heartbeat with this node's name and another incarnation was heard
	ready         chan struct{} // closed once the directory's initial values are in

	acks       ackTable
	ho         handover    // hand-overs of sessions to and from other nodes (handover.go)
	rv         revival     // back after a cut from NATS (revive.go)
	rs         resendState // kept messages published again, copies dropped (resend.go)
	ackSubject string
	ackSub     *nats.Subscription

	// Counters.
	sent, received, dropped, writeDropped, nodesDown atomic.Uint64
	untracked, ackLost, givenBack                    atomic.Uint64
	localCount                                       atomic.Int64
	// route is the routing latency of the stanzas delivered here.
	route latency
}

// Options are what Start needs besides the configuration.
type Options struct {
	// Domain is the served domain; it names the subjects and the bucket.
	Domain string
	// Log receives the node's log lines (nil: none).
	Log *zap.Logger
	// Handler receives what other nodes send.
	Handler Handler
	// WriteQueue caps the key-value writes waiting per writer (0: 4096).
	WriteQueue int
}

// closeTimeout bounds how long Close waits for queued directory writes.
const closeTimeout = 5 * time.Second

// numWriters is how many goroutines write the directory; a session's
// writes always go through the same one, in order.
const numWriters = 4

// Start connects to NATS, creates or opens the directory bucket, loads
// the directory and begins heartbeats. It blocks until the directory is
// loaded or ctx ends.
func Start(ctx context.Context, cfg config.Cluster, o Options) (*Node, error) {
	name := cfg.NodeName
	if name == "" {
		h, err := os.Hostname()
		if err != nil {
			return nil, fmt.Errorf("cluster: no cluster.node_name and no host name: %w", err)
		}
		name = sanitize(h)
	}
	log := o.Log
	if log == nil {
		log = zap.NewNop()
	}
	var incb [8]byte
	_, _ = rand.Read(incb[:])
	n := &Node{
		name: name, inc: hex.EncodeToString(incb[:]), domain: o.Domain, cfg: cfg,
		log: log.With(zap.String("node", name)), h: o.Handler, seed: maphash.MakeSeed(),
		nodes: make(map[string]*nodeState), ready: make(chan struct{}), started: time.Now(),
	}
	for i := range n.dir {
		n.dir[i].m = make(map[string][]*Entry)
	}
	n.local.m = make(map[string]*localRec)
	n.acks.m = make(map[uint64]pendingMsg)
	token := sanitize(strings.ReplaceAll(o.Domain, ".", "_"))
	n.inboxPrefix = subjectPrefix + token + ".node."
	n.hbSubject = subjectPrefix + token + ".hb"
	n.ackSubject = subjectPrefix + token + ".ack." + name
	opts := []nats.Option{
		nats.Name("krill " + name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			if errors.Is(err, nats.ErrSlowConsumer) {
				n.dropped.Add(1)
			}
			n.log.Warn("nats error", zap.Error(err))
		}),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			n.disconnected()
			n.log.Warn("disconnected from nats", zap.Error(err))
		}),
		nats.ReconnectHandler(func(c *nats.Conn) {
			n.log.Info("reconnected to nats", zap.String("url", c.ConnectedUrlRedacted()))
			if n.ready != nil {
				go n.reconnected()
			}
		}),
	}
	if cfg.Credentials != "" {
		opts = append(opts, nats.UserCredentials(cfg.Credentials))
	}
	if cfg.TLSCA != "" {
		opts = append(opts, nats.RootCAs(cfg.TLSCA))
	}
	if cfg.TLSCert != "" {
		opts = append(opts, nats.ClientCert(cfg.TLSCert, cfg.TLSKey))
	}
	nc, err := nats.Connect(cfg.NATSURL, opts...)
	if err != nil {
		return nil, fmt.Errorf("cluster: connect to %s: %w", cfg.NATSURL, err)
	}
	n.nc = nc
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("cluster: jetstream: %w", err)
	}
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      bucketPrefix + token,
		Description: "Krill session directory for " + o.Domain,
		History:     1,
		Storage:     jetstream.FileStorage,
		Replicas:    cfg.Replicas,
	})
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("cluster: session directory bucket: %w", err)
	}
	n.kv = kv
	n.ctx, n.cancel = context.WithCancel(context.Background())
	q := o.WriteQueue
	if q <= 0 {
		q = 4096
	}
	for range numWriters {
		ch := make(chan op, q)
		n.writers = append(n.writers, ch)
		n.writersWG.Add(1)
		go n.writer(ch)
	}
	// Inbox: nats.go runs the callback on one goroutine per
	// subscription, in the order the messages were published by each
	// sender, which keeps the order of stanzas between two sessions.
	n.inbox, err = nc.Subscribe(n.inboxPrefix+name, n.onInbox)
	if err == nil {
		// A node that cannot keep up drops (counted) rather than grows
		// without bound: 64 MiB or 256k messages in flight.
		err = n.inbox.SetPendingLimits(256<<10, 64<<20)
	}
	if err == nil {
		n.hbSub, err = nc.Subscribe(n.hbSubject, n.onHeartbeat)
	}
	if err == nil {
		n.ackSub, err = nc.Subscribe(n.ackSubject, n.onAck)
	}
	if err == nil {
		err = n.startHandover(token)
	}
	if err != nil {
		n.Close()
		return nil, fmt.Errorf("cluster: subscribe: %w", err)
	}
	// A live node with the same name would take this one's entries as
	// left by a previous run and delete them (and this one its): listen
	// one and a half heartbeats before writing anything.
	wait := time.NewTimer(n.cfg.Heartbeat + n.cfg.Heartbeat/2)
	select {
	case <-wait.C:
	case <-ctx.Done():
	}
	wait.Stop()
	if n.dupe.Load() {
		n.Close()
		return nil, fmt.Errorf("%w: %q", ErrNameInUse, name)
	}
	w, err := kv.WatchAll(n.ctx)
	if err != nil {
		n.Close()
		return nil, fmt.Errorf("cluster: watch the session directory: %w", err)
	}
	n.wg.Add(2)
	go n.watch(w)
	go n.beat()
	select {
	case <-n.ready:
	case <-ctx.Done():
		n.Close()
		return nil, fmt.Errorf("cluster: loading the session directory: %w", ctx.Err())
	}
	n.log.Info("joined the cluster", zap.String("nats", nc.ConnectedUrlRedacted()), zap.String("incarnation", n.inc))
	return n, nil
}

// Connected reports whether the node is connected to NATS.
func (n *Node) Connected() bool { return n.nc.IsConnected() }

// Name returns the node's name.
func (n *Node) Name() string { return n.name }

// Close leaves the cluster: this node's directory entries are removed
// (its sessions are already closed by then) and the connection drained.
func (n *Node) Close() {
	if !n.closed.CompareAndSwap(false, true) {
		return
	}
	if n.cancel != nil {
		// The writers finish what is queued (the sessions' unbinds),
		// for at most closeTimeout; then everything stops.
		n.writersMu.Lock()
		n.writersClosed = true
		for _, ch := range n.writers {
			close(ch)
		}
		n.writersMu.Unlock()
		done := make(chan struct{})
		go func() { n.writersWG.Wait(); close(done) }()
		select {
		case <-done:
			// The keys are gone; the other nodes stop routing here as
			// their watches see it. A stanza they published before is
			// on its way: one heartbeat (at most a second) lets it
			// arrive before the inbox closes.
			time.Sleep(min(n.cfg.Heartbeat, time.Second))
		case <-time.After(closeTimeout):
			n.log.Warn("directory writes unfinished at close", zap.Duration("after", closeTimeout))
		}
		n.cancel()
		<-done
	}
	n.wg.Wait()
	if n.nc != nil {
		_ = n.nc.Drain()
		// Drain returns at once; the connection closes when it is done.
		deadline := time.Now().Add(2 * time.Second)
		for !n.nc.IsClosed() && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
		n.nc.Close()
	}
}

// sanitize keeps letters, digits, '-' and '_' (a NATS token and a bucket
// name).
func sanitize(s string) string {
	var b strings.Builder
	for _, r := range s {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' {
			b.WriteRune(r)
		} else {
			b.WriteByte('_')
		}
	}
	return b.String()
}

// key is a session's directory key: s.<localpart>.<resource>, each
// base64url so that any JID fits the key alphabet.
func key(local, resource string) string {
	return "s." + base64.RawURLEncoding.EncodeToString([]byte(local)) + "." + base64.RawURLEncoding.EncodeToString([]byte(resource))
}

// parseKey is key's inverse.
func parseKey(k string) (local, resource string, ok bool) {
	rest, ok := strings.CutPrefix(k, "s.")
	if !ok {
		return "", "", false
	}
	l, r, ok := strings.Cut(rest, ".")
	if !ok {
		return "", "", false
	}
	lb, err1 := base64.RawURLEncoding.DecodeString(l)
	rb, err2 := base64.RawURLEncoding.DecodeString(r)
	if err1 != nil || err2 != nil {
		return "", "", false
	}
	return string(lb), string(rb), true
}

// Send publishes b, a stamped stanza for the session full on node, to that
// node's inbox. It does not block (nats.go buffers); false means the
// stanza could not be queued (the connection is closed or its reconnect
// buffer is full).
//
// keep asks the receiving node to acknowledge the stanza: if that node is
// found dead before it does, the stanza goes to Handler.Undeliverable
// (for messages worth storing offline).
func (n *Node) Send(node, full string, b []byte, keep bool) bool {
	if n.closed.Load() {
		return false
	}
	if keep {
		return n.sendKept(node, full, b)
	}
	return n.send(opDeliver, node, full, b)
}

func (n *Node) send(op byte, node, full string, b []byte) bool {
	msg := make([]byte, 0, 11+len(full)+len(b))
	msg = append(msg, op)
	// The publish time: the receiver measures the routing latency.
	msg = binary.BigEndian.AppendUint64(msg, uint64(time.Now().UnixNano()))
	msg = binary.BigEndian.AppendUint16(msg, uint16(len(full)))
	msg = append(msg, full...)
	msg = append(msg, b...)
	if err := n.nc.Publish(n.inboxPrefix+node, msg); err != nil {
		n.dropped.Add(1)
		return false
	}
	n.sent.Add(1)
	return true
}

// SendClose asks node to close its session full with the stream error
// cond.
func (n *Node) SendClose(node, full, cond string) {
	if n.closed.Load() {
		return
	}
	msg := make([]byte, 0, 3+len(full)+len(cond))
	msg = append(msg, opClose)
	msg = binary.BigEndian.AppendUint16(msg, uint16(len(full)))
	msg = append(msg, full...)
	msg = append(msg, cond...)
	_ = n.nc.Publish(n.inboxPrefix+node, msg)
}

// onInbox runs on nats.go's goroutine for this node's inbox.
func (n *Node) onInbox(m *nats.Msg) {
	d, hdr := m.Data, 1 // hdr: the bytes before the full JID's length
	switch {
	case len(d) > 0 && d[0] == opDeliverAck:
		hdr = 17 // op, sequence number, publish time
	case len(d) > 0 && d[0] == opDeliver:
		hdr = 9 // op, publish time
	}
	if len(d) < hdr+2 {
		return
	}
	l := int(binary.BigEndian.Uint16(d[hdr : hdr+2]))
	if len(d) < hdr+2+l {
		return
	}
	full, rest := string(d[hdr+2:hdr+2+l]), d[hdr+2+l:]
	n.received.Add(1)
	switch d[0] {
	case opDeliver:
		// m.Data is the message's own buffer: nats.go does not reuse it.
		n.h.Deliver(full, rest)
		n.route.observe(time.Since(time.Unix(0, int64(binary.BigEndian.Uint64(d[1:9])))))
	case opDeliverAck:
		if !n.duplicate(m.Reply, binary.BigEndian.Uint64(d[1:9])) {
			n.h.Deliver(full, rest)
			n.route.observe(time.Since(time.Unix(0, int64(binary.BigEndian.Uint64(d[9:17])))))
		}
		n.ack(m.Reply, d[1:9])
	case opClose:
		n.h.Close(full, string(rest))
	}
}

// Stats are the node's counters.
type Stats struct {
	// Sent and Received count stanzas and commands between nodes.
	Sent, Received uint64
	// Dropped counts stanzas that could not be published or were
	// dropped as a slow consumer.
	Dropped uint64
	// WriteDropped counts directory writes refused because a writer's
	// queue was full.
	WriteDropped uint64
	// NodesDown counts nodes found dead.
	NodesDown uint64
	// Pending is the number of messages sent and not yet acknowledged;
	// GivenBack counts those handed back because their node died,
	// AckLost those handed back unacknowledged while their node lived,
	// Untracked those sent without an acknowledgement because Pending
	// was at its cap.
	Pending                       int
	GivenBack, AckLost, Untracked uint64
	// Remote is the number of sessions on other live nodes.
	Remote int
	// Nodes is the number of live nodes, this one included.
	Nodes int
	// Route is the latency from a stanza's publish on another node to
	// its hand-over to the local session (Handler.Deliver returned).
	Route Latency
}

// Stats returns a snapshot of the counters.
func (n *Node) Stats() Stats {
	st := Stats{Sent: n.sent.Load(), Received: n.received.Load(), Dropped: n.dropped.Load(),
		WriteDropped: n.writeDropped.Load(), NodesDown: n.nodesDown.Load(),
		GivenBack: n.givenBack.Load(), AckLost: n.ackLost.Load(), Untracked: n.untracked.Load(), Route: n.route.snapshot()}
	n.acks.mu.Lock()
	st.Pending = len(n.acks.m)
	n.acks.mu.Unlock()
	for i := range n.dir {
		sh := &n.dir[i]
		sh.mu.RLock()
		for _, l := range sh.m {
			st.Remote += len(l)
		}
		sh.mu.RUnlock()
	}
	n.nodesMu.Lock()
	st.Nodes = len(n.nodes) + 1
	n.nodesMu.Unlock()
	return st
}

// NodeInfo describes a node for krill cluster status.
type NodeInfo struct {
	Name     string
	Sessions int
	LastSeen time.Time
	Started  time.Time
}

// liveNames returns the sorted names of the live nodes, this one
// included.
func (n *Node) liveNames() []string {
	n.nodesMu.Lock()
	names := make([]string, 0, len(n.nodes)+1)
	for name := range n.nodes {
		names = append(names, name)
	}
	n.nodesMu.Unlock()
	names = append(names, n.name)
	sort.Strings(names)
	return names
}

// Watch listens to heartbeats on the cluster of cfg for the domain during
// d and returns the nodes heard, sorted by name: krill cluster status
// uses it without joining the cluster.
func Watch(ctx context.Context, cfg config.Cluster, domain string, d time.Duration) ([]NodeInfo, int, error) {
	opts := []nats.Option{nats.Name("krill cluster status")}
	if cfg.Credentials != "" {
		opts = append(opts, nats.UserCredentials(cfg.Credentials))
	}
	if cfg.TLSCA != "" {
		opts = append(opts, nats.RootCAs(cfg.TLSCA))
	}
	if cfg.TLSCert != "" {
		opts = append(opts, nats.ClientCert(cfg.TLSCert, cfg.TLSKey))
	}
	nc, err := nats.Connect(cfg.NATSURL, opts...)
	if err != nil {
		return nil, 0, fmt.Errorf("cluster: connect to %s: %w", cfg.NATSURL, err)
	}
	defer nc.Close()
	token := sanitize(strings.ReplaceAll(domain, ".", "_"))
	ch := make(chan *nats.Msg, 1024)
	sub, err := nc.ChanSubscribe(subjectPrefix+token+".hb", ch)
	if err != nil {
		return nil, 0, fmt.Errorf("cluster: subscribe: %w", err)
	}
	defer sub.Unsubscribe()
	entries := 0
	if js, err := jetstream.New(nc); err == nil {
		if kv, err := js.KeyValue(ctx, bucketPrefix+token); err == nil {
			if st, err := kv.Status(ctx); err == nil {
				entries = int(st.Values())
			}
		}
	}
	seen := make(map[string]NodeInfo)
	t := time.NewTimer(d)
	defer t.Stop()
	for {
		select {
		case m := <-ch:
			var hb heartbeat
			if json.Unmarshal(m.Data, &hb) == nil {
				seen[hb.Node] = NodeInfo{Name: hb.Node, Sessions: hb.Sessions, LastSeen: time.Now(), Started: time.Unix(0, hb.Started)}
			}
		case <-t.C:
			out := make([]NodeInfo, 0, len(seen))
			for _, v := range seen {
				out = append(out, v)
			}
			sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
			return out, entries, nil
		case <-ctx.Done():
			return nil, 0, ctx.Err()
		}
	}
}
