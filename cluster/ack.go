package cluster

import (
	"encoding/binary"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"go.uber.org/zap"
)

// A message worth storing offline (chat, normal) is sent with an
// acknowledgement asked: the sender keeps it until the receiving node has
// handed it to the session or to offline storage. When the receiving node
// is found dead first, the sender gives what it kept to
// Handler.Undeliverable, which stores it offline: a message accepted by a
// live node is not lost with the node it was routed to. It may then be
// delivered twice (the dead node took it but its acknowledgement was
// lost), never zero times.

// opDeliverAck is opDeliver with a sequence number to acknowledge:
// [op][seq: 8][sent: 8, unix ns][len(full): 2][full][stanza], reply subject the sender's ack
// subject.
const opDeliverAck byte = 'a'

// maxPending caps the messages kept unacknowledged; beyond it a message is
// sent without an acknowledgement (counted in Stats.Untracked).
const maxPending = 1 << 16

// pendingMsg is a kept message: its node, and the published bytes (full
// JID and stanza at offsets).
type pendingMsg struct {
	node      string
	msg       []byte
	fullStart int
	fullEnd   int
	at        time.Time
	sent      time.Time // last published (resend.go)
}

// ackTable holds the kept messages by sequence number.
type ackTable struct {
	mu  sync.Mutex
	seq uint64
	m   map[uint64]pendingMsg
}

// sendKept publishes b for full on node with an acknowledgement asked.
func (n *Node) sendKept(node, full string, b []byte) bool {
	n.acks.mu.Lock()
	if len(n.acks.m) >= maxPending {
		n.acks.mu.Unlock()
		n.untracked.Add(1)
		return n.send(opDeliver, node, full, b)
	}
	if n.acks.seq == 0 {
		// Sequence numbers of an incarnation start above those of the
		// previous one: the receivers' duplicate windows (resend.go)
		// never take a new message for an old one.
		n.acks.seq = uint64(time.Now().UnixNano())
	}
	n.acks.seq++
	seq := n.acks.seq
	now := time.Now()
	msg := make([]byte, 0, 19+len(full)+len(b))
	msg = append(msg, opDeliverAck)
	msg = binary.BigEndian.AppendUint64(msg, seq)
	msg = binary.BigEndian.AppendUint64(msg, uint64(now.UnixNano()))
	msg = binary.BigEndian.AppendUint16(msg, uint16(len(full)))
	msg = append(msg, full...)
	msg = append(msg, b...)
	n.acks.m[seq] = pendingMsg{node: node, msg: msg, fullStart: 19, fullEnd: 19 + len(full), at: now, sent: now}
	n.acks.mu.Unlock()
	if err := n.nc.PublishRequest(n.inboxPrefix+node, n.ackSubject, msg); err != nil {
		n.acks.mu.Lock()
		delete(n.acks.m, seq)
		n.acks.mu.Unlock()
		n.dropped.Add(1)
		return false
	}
	n.sent.Add(1)
	return true
}

// onAck runs on nats.go's goroutine for this node's ack subject.
func (n *Node) onAck(m *nats.Msg) {
	if len(m.Data) != 8 {
		return
	}
	seq := binary.BigEndian.Uint64(m.Data)
	n.acks.mu.Lock()
	delete(n.acks.m, seq)
	n.acks.mu.Unlock()
}

// ack acknowledges a kept message to its sender.
func (n *Node) ack(reply string, seq []byte) {
	if reply != "" {
		_ = n.nc.Publish(reply, seq)
	}
}

// takePending removes and returns the kept messages for node, in the
// order they were sent.
func (n *Node) takePending(node string) []pendingMsg {
	var seqs []uint64
	var out []pendingMsg
	n.acks.mu.Lock()
	for seq, p := range n.acks.m {
		if p.node == node {
			seqs = append(seqs, seq)
		}
	}
	slices.Sort(seqs)
	for _, seq := range seqs {
		out = append(out, n.acks.m[seq])
		delete(n.acks.m, seq)
	}
	n.acks.mu.Unlock()
	return out
}

// agePending hands back kept messages older than limit whose node is
// still alive but never acknowledged them, resends included (resend.go):
// they go to offline storage rather than wait forever, and the table does
// not grow.
func (n *Node) agePending(now time.Time, limit time.Duration) {
	var seqs []uint64
	var out []Returned
	n.acks.mu.Lock()
	for seq, p := range n.acks.m {
		if now.Sub(p.at) > limit {
			seqs = append(seqs, seq)
		}
	}
	slices.Sort(seqs)
	for _, seq := range seqs {
		p := n.acks.m[seq]
		delete(n.acks.m, seq)
		out = append(out, Returned{Full: string(p.msg[p.fullStart:p.fullEnd]), Stanza: p.msg[p.fullEnd:]})
	}
	n.acks.mu.Unlock()
	if len(out) == 0 {
		return
	}
	n.ackLost.Add(uint64(len(out)))
	n.log.Warn("messages never acknowledged by a live node handed back", zap.Int("messages", len(out)), zap.Duration("after", limit))
	n.h.Undeliverable(out)
}

// Returned is a kept message handed back: the full JID it was for and
// the stanza.
type Returned struct {
	Full   string
	Stanza []byte
}

// giveBack hands a dead node's kept messages to the handler, in the order
// they were sent.
func (n *Node) giveBack(node string) {
	pend := n.takePending(node)
	if len(pend) == 0 {
		return
	}
	out := make([]Returned, len(pend))
	for i, p := range pend {
		out[i] = Returned{Full: string(p.msg[p.fullStart:p.fullEnd]), Stanza: p.msg[p.fullEnd:]}
	}
	n.givenBack.Add(uint64(len(out)))
	n.log.Info("unacknowledged messages of a dead node handed back", zap.String("peer", node), zap.Int("messages", len(out)))
	n.h.Undeliverable(out)
}
