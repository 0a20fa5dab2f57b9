package hook

import (
	"context"
	"time"
)

// Cluster is what a module serving shared state (a multi-user chat room)
// needs in cluster mode: a lease per object, so that one node at a time
// holds it, and the forwarding of the stanzas a local session sends to the
// node that holds it. ClusterOf returns nil on a standalone server: a
// module that finds no Cluster behaves as it always did.
//
// Methods documented "any goroutine" do not block; Lease blocks (key-value
// round trips) and runs on a worker (Conn.Async's job, Host.Go).
type Cluster interface {
	// Node returns this node's name. Any goroutine.
	Node() string
	// Owner returns the live node holding the lease of name in service,
	// from this node's copy of the leases ("" when none or its holder
	// is dead). Any goroutine.
	Owner(service, name string) string
	// Lease takes the lease of name in service for this node, or returns
	// the live node that holds it: owner is Node() when this node holds
	// it now. A holder found dead loses it to the caller.
	Lease(ctx context.Context, service, name string) (owner string, err error)
	// Release gives up a lease this node holds (queued). Any goroutine.
	Release(service, name string)
	// Forward sends the stanza raw (as received, without from) that
	// fromJID sent to node, whose server hands it to the handler of its
	// to domain as if the sender were there: the Ctx's Session implements
	// Forwarded, and what is delivered to it or replied through its Conn
	// goes back to the sender. from is the sender's session: a local one,
	// the Forwarded session of a stanza forwarded here (its node and hop
	// count carry on), or nil for a sender with no session here (another
	// server's user: what goes back is routed by fromJID, over
	// federation). It reports false when the stanza could not be queued.
	// Any goroutine.
	Forward(node string, from Session, fromJID string, raw []byte) bool
	// Count counts one event of name (a registration from an address,
	// say) in the current fixed window across the cluster and reports
	// whether it is within max; one over max is not counted. It blocks
	// (key-value round trips): workers only.
	Count(ctx context.Context, name string, window time.Duration, max int) (bool, error)
}

// Forwarded is implemented by the Session of a stanza another node
// forwarded (Cluster.Forward): the sender lives on node Origin.
type Forwarded interface {
	Session
	// Origin returns the node the sender's session is on.
	Origin() string
	// Hops returns how many times the stanza was forwarded.
	Hops() int
}

// NodeWatcher is an optional ability of a Module holding state for
// sessions of other nodes (room occupants): NodeDown runs on every node,
// on a goroutine of the cluster (never an event loop), when node is found
// dead, before what it held (leases, sessions) is taken over.
type NodeWatcher interface {
	NodeDown(h Host, node string)
}

// ClusterOf returns h's cluster, or nil when the server is standalone.
func ClusterOf(h Host) Cluster {
	if x, ok := h.(interface{ Cluster() Cluster }); ok {
		return x.Cluster()
	}
	return nil
}
