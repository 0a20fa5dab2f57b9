package cluster

import (
	"slices"
	"sync/atomic"
	"time"
)

// Kept messages across a NATS restart. Core NATS drops a message
// published to a subject nobody subscribes to: right after a NATS server
// restarts, a node that has reconnected may publish to a peer whose inbox
// subscription is not yet on the new server (the message is lost), or the
// peer's acknowledgement may go to this node's ack subject before this
// node has subscribed again (the acknowledgement is lost). Either way the
// message stays in the sender's ack table: it is published again every
// resendAfter while the peer lives and this node is connected, and handed
// back to offline storage after 4 × node_timeout (agePending). The
// receiver keeps, per sender, a window of the sequence numbers it took
// (a bitmap over the last dupWindow numbers) and drops a copy it has
// already delivered, acknowledging it again: delivery is exactly once as
// the client sees it, for copies within the window. A copy older than the
// window is delivered (at least once rather than lost).

// dupWindow is how many sequence numbers back a receiver recognises a
// copy: 2^18 bits, 32 KiB per sending node. Sequence numbers count a
// sender's kept messages to every node, and a resend comes within two
// heartbeats: 131,072 kept messages a second per sender before a copy
// can fall out of the window.
const dupWindow = 1 << 18

// resendAfter is how long a kept message waits for its acknowledgement
// before it is published again: two heartbeats.
func (n *Node) resendAfter() time.Duration { return 2 * n.cfg.Heartbeat }

// dedup is what a receiver remembers of one sender's kept messages.
type dedup struct {
	high uint64 // the highest sequence number taken
	bits [dupWindow / 64]uint64
}

// resendState is the node's side of resends and duplicates.
type resendState struct {
	// windows is keyed by the sender's ack subject; only the inbox's
	// goroutine touches it.
	windows          map[string]*dedup
	resent, dupDrops atomic.Uint64
}

// maxSenders bounds the windows kept: nodes of a cluster, with room for
// restarts under new names.
const maxSenders = 256

// duplicate reports whether the kept message seq from the sender whose
// ack subject is reply was taken already, and records it. On the inbox's
// goroutine.
func (n *Node) duplicate(reply string, seq uint64) bool {
	if reply == "" {
		return false
	}
	rs := &n.rs
	w := rs.windows[reply]
	if w == nil {
		if rs.windows == nil || len(rs.windows) >= maxSenders {
			rs.windows = make(map[string]*dedup)
		}
		w = &dedup{high: seq}
		rs.windows[reply] = w
		w.set(seq)
		return false
	}
	switch {
	case seq > w.high:
		if seq-w.high >= dupWindow {
			clear(w.bits[:])
		} else {
			for s := w.high + 1; s < seq; s++ {
				w.unset(s)
			}
		}
		w.high = seq
		w.set(seq)
		return false
	case w.high-seq >= dupWindow:
		return false // too old to tell: delivered rather than lost
	case w.has(seq):
		rs.dupDrops.Add(1)
		return true
	}
	w.set(seq)
	return false
}

func (w *dedup) set(s uint64)      { i := s % dupWindow; w.bits[i/64] |= 1 << (i % 64) }
func (w *dedup) unset(s uint64)    { i := s % dupWindow; w.bits[i/64] &^= 1 << (i % 64) }
func (w *dedup) has(s uint64) bool { i := s % dupWindow; return w.bits[i/64]&(1<<(i%64)) != 0 }

// resendPending publishes again, in order, the kept messages not
// acknowledged within resendAfter whose node is alive, while this node is
// connected. On the heartbeat goroutine.
func (n *Node) resendPending(now time.Time) {
	if !n.nc.IsConnected() {
		return
	}
	after := n.resendAfter()
	n.nodesMu.Lock()
	alive := func(node string) bool { _, ok := n.nodes[node]; return ok }
	var seqs []uint64
	n.acks.mu.Lock()
	for seq, p := range n.acks.m {
		if now.Sub(p.sent) > after && alive(p.node) {
			seqs = append(seqs, seq)
		}
	}
	n.nodesMu.Unlock()
	slices.Sort(seqs)
	type out struct {
		node string
		msg  []byte
	}
	msgs := make([]out, 0, len(seqs))
	for _, seq := range seqs {
		p := n.acks.m[seq]
		p.sent = now
		n.acks.m[seq] = p
		msgs = append(msgs, out{p.node, p.msg})
	}
	n.acks.mu.Unlock()
	for _, m := range msgs {
		if n.nc.PublishRequest(n.inboxPrefix+m.node, n.ackSubject, m.msg) == nil {
			n.rs.resent.Add(1)
		}
	}
}

// Resent returns how many kept messages this node published again for
// want of an acknowledgement, and how many copies it dropped as a
// receiver.
func (n *Node) Resent() (resent, duplicates uint64) {
	return n.rs.resent.Load(), n.rs.dupDrops.Load()
}
