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
	// selfLast is when this node last heard its own heartbeat, and
	// listeningSince when it began hearing it without a gap (Unix
	// nanoseconds).
	selfLast, listeningSince atomic.Int64
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

// A node judges the others by their heartbeats only while it hears its
// own: a node cut from NATS hears nobody, and once back it must not take
// as dead the nodes it could not hear meanwhile (the callbacks that say
// it was cut and is back run on nats.go's goroutine, possibly after the
// heartbeat check). Its own heartbeat coming back after a gap starts a new
// listening period, and a peer is dead only when silent for node_timeout
// within it.

// heardSelf records this node's own heartbeat coming back at now.
func (n *Node) heardSelf(now time.Time) {
	last := n.rv.selfLast.Swap(now.UnixNano())
	if last == 0 || now.Sub(time.Unix(0, last)) > n.cfg.NodeTimeout/2 {
		n.rv.listeningSince.Store(now.UnixNano())
	}
}

// hearing reports whether this node hears its own heartbeats (it last
// heard one within half node_timeout, which is more than a heartbeat) and
// since when without a longer gap. A shorter gap needs no new period: the
// peers' silence it adds stays under node_timeout.
func (n *Node) hearing(now time.Time) (since time.Time, ok bool) {
	last := n.rv.selfLast.Load()
	if last == 0 || now.Sub(time.Unix(0, last)) > n.cfg.NodeTimeout/2 {
		return time.Time{}, false
	}
	return time.Unix(0, n.rv.listeningSince.Load()), true
}
