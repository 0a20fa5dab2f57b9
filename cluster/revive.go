package cluster

import (
	"sync/atomic"
	"time"
)

// A node cut from NATS for longer than node_timeout is taken as dead by
// the others: they drop its directory entries, one of them announces its
// sessions unavailable to their contacts and deletes its keys. The node
// itself lives on with its sessions. When it is back it writes its keys
// again (reassert) and, for each session the others took as gone, tells
// the handler (RevivalHandler), which announces the session's presence
// again.

// RevivalHandler is what a Handler implements to hear of sessions the
// other nodes took as gone while this node was cut from NATS.
type RevivalHandler interface {
	// Revived reports that owner, a local session, was announced
	// unavailable elsewhere (its key had been deleted, or this node was
	// cut for longer than node_timeout) and is in the directory again.
	// Called on a writer goroutine; must not block.
	Revived(owner any)
}

// revival is when this node lost NATS, in Unix nanoseconds (0: connected).
type revival struct {
	cutAt atomic.Int64
	// revived counts sessions re-announced after a cut.
	revived atomic.Uint64
}

// disconnected records the start of a cut.
func (n *Node) disconnected() { n.rv.cutAt.CompareAndSwap(0, time.Now().UnixNano()) }

// cutLong reports, once connected again, whether the cut lasted longer
// than node_timeout: the others have taken this node as dead.
func (n *Node) cutLong(now time.Time) bool {
	at := n.rv.cutAt.Swap(0)
	return at != 0 && now.Sub(time.Unix(0, at)) > n.cfg.NodeTimeout
}

// revived tells the handler of a session written again after the others
// took it as gone.
func (n *Node) revived(owner any) {
	n.rv.revived.Add(1)
	if rh, ok := n.h.(RevivalHandler); ok {
		rh.Revived(owner)
	}
}

// Revived returns how many sessions this node announced again after the
// others had taken them as gone.
func (n *Node) Revived() uint64 { return n.rv.revived.Load() }
