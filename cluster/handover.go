package cluster

import (
	"encoding/binary"
	"encoding/json"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
)

// Hand-over of a session between nodes (XEP-0198 resumption on another
// node). The resuming node B asks the nodes that hold sessions of the
// account (the directory says which) on their hand-over subjects; the one
// that has the token answers with the session's state, the others with
// not-found. B then binds the session's key by compare-and-swap (Adopt):
// the holder A sees that write in its watch as another node's bind
// (Handler.Conflict), which tells it the hand-over is done and where to
// forward what reached it meanwhile. Requests and replies are plain NATS
// messages with a callback and a timer: nothing waits on a goroutine.
//
// Request: [id: 8][len(local): 2][local][len(from): 2][from][previd],
// reply subject the asker's hand-over reply subject.
// Reply:   [id: 8][status: 1][state].

// Reply statuses.
const (
	hoNotFound byte = 0
	hoFound    byte = 1
)

// HandoverHandler is what a Handler implements to hand sessions over to
// other nodes.
type HandoverHandler interface {
	// Handover asks for the local session of the account local whose
	// resumption token is previd, for the node from. reply must be called
	// once, from any goroutine: with the session's state (the session is
	// then leaving this node), or nil when there is no such session or it
	// cannot be handed over. Must not block.
	Handover(local, previd, from string, reply func(state []byte))
}

// handover is the node's side of hand-overs it asked for.
type handover struct {
	reqSub, replySub *nats.Subscription
	reqPrefix        string
	replySubject     string

	mu      sync.Mutex
	seq     uint64
	pending map[uint64]*hoRequest
}

// hoRequest is a hand-over asked of one or more nodes.
type hoRequest struct {
	remaining int
	timer     *time.Timer
	cb        func(state []byte)
}

// startHandover subscribes to this node's hand-over subjects.
func (n *Node) startHandover(token string) error {
	ho := &n.ho
	ho.pending = make(map[uint64]*hoRequest)
	ho.reqPrefix = subjectPrefix + token + ".ho."
	ho.replySubject = subjectPrefix + token + ".hr." + n.name
	var err error
	ho.reqSub, err = n.nc.Subscribe(ho.reqPrefix+n.name, n.onHandoverRequest)
	if err == nil {
		ho.replySub, err = n.nc.Subscribe(ho.replySubject, n.onHandoverReply)
	}
	return err
}

// MaxHandover is the largest session state a hand-over carries: the NATS
// payload limit less the reply's header.
func (n *Node) MaxHandover() int { return int(n.nc.MaxPayload()) - 16 }

// RequestHandover asks nodes for the session of local whose token is
// previd. cb runs once, on a goroutine of the node's: with the state from
// the node that had it, or nil when none had it or none answered within
// timeout (a reply after that is ignored).
func (n *Node) RequestHandover(local, previd string, nodes []string, timeout time.Duration, cb func(state []byte)) {
	if n.closed.Load() || len(nodes) == 0 {
		cb(nil)
		return
	}
	ho := &n.ho
	r := &hoRequest{remaining: len(nodes), cb: cb}
	ho.mu.Lock()
	ho.seq++
	id := ho.seq
	ho.pending[id] = r
	r.timer = time.AfterFunc(timeout, func() { n.finishHandover(id, nil) })
	ho.mu.Unlock()
	msg := make([]byte, 0, 12+len(local)+len(n.name)+len(previd))
	msg = binary.BigEndian.AppendUint64(msg, id)
	msg = binary.BigEndian.AppendUint16(msg, uint16(len(local)))
	msg = append(msg, local...)
	msg = binary.BigEndian.AppendUint16(msg, uint16(len(n.name)))
	msg = append(msg, n.name...)
	msg = append(msg, previd...)
	for _, node := range nodes {
		if err := n.nc.PublishRequest(ho.reqPrefix+node, ho.replySubject, msg); err != nil {
			n.handoverAnswer(id, nil)
		}
	}
}

// finishHandover ends request id with state (nil: not found), once.
func (n *Node) finishHandover(id uint64, state []byte) {
	ho := &n.ho
	ho.mu.Lock()
	r := ho.pending[id]
	delete(ho.pending, id)
	ho.mu.Unlock()
	if r != nil {
		r.timer.Stop()
		r.cb(state)
	}
}

// handoverAnswer counts one node's answer to request id: the state ends
// it, and so does the last not-found.
func (n *Node) handoverAnswer(id uint64, state []byte) {
	if state != nil {
		n.finishHandover(id, state)
		return
	}
	ho := &n.ho
	ho.mu.Lock()
	r := ho.pending[id]
	last := false
	if r != nil {
		r.remaining--
		last = r.remaining <= 0
	}
	ho.mu.Unlock()
	if last {
		n.finishHandover(id, nil)
	}
}

// onHandoverReply runs on nats.go's goroutine for the reply subject.
func (n *Node) onHandoverReply(m *nats.Msg) {
	if len(m.Data) < 9 {
		return
	}
	id := binary.BigEndian.Uint64(m.Data)
	if m.Data[8] == hoFound {
		n.handoverAnswer(id, m.Data[9:])
		return
	}
	n.handoverAnswer(id, nil)
}

// onHandoverRequest runs on nats.go's goroutine for the request subject.
func (n *Node) onHandoverRequest(m *nats.Msg) {
	d := m.Data
	if len(d) < 12 || m.Reply == "" {
		return
	}
	id := d[:8]
	l := int(binary.BigEndian.Uint16(d[8:]))
	if len(d) < 12+l {
		return
	}
	local := string(d[10 : 10+l])
	f := int(binary.BigEndian.Uint16(d[10+l:]))
	if len(d) < 12+l+f {
		return
	}
	from, previd := string(d[12+l:12+l+f]), string(d[12+l+f:])
	reply := func(state []byte) {
		out := make([]byte, 0, 9+len(state))
		out = append(out, id...)
		if state == nil {
			out = append(out, hoNotFound)
		} else {
			out = append(out, hoFound)
			out = append(out, state...)
		}
		_ = n.nc.Publish(m.Reply, out)
	}
	hh, ok := n.h.(HandoverHandler)
	if !ok || n.closed.Load() {
		reply(nil)
		return
	}
	hh.Handover(local, previd, from, reply)
}

// Adopt records that owner, a local session, took local/resource over from
// another node with its presence, priority and flags: the key is
// compare-and-swapped in one write, so that the other nodes never see the
// session unavailable on its way. Like Bound, false means the write could
// not be queued.
func (n *Node) Adopt(local, resource string, owner any, presence []byte, priority int, flags uint32) bool {
	v, _ := json.Marshal(value{Node: n.name, Inc: n.inc, Avail: presence != nil, Prio: priority, Presence: presence, Flags: flags})
	n.localCount.Add(1)
	return n.enqueue(op{kind: opBind, key: key(local, resource), owner: owner, val: v})
}

// NodesOf returns the other live nodes that hold sessions of local, as
// the directory knows them.
func (n *Node) NodesOf(local string) []string {
	var out []string
	n.Each(local, func(e *Entry) {
		for _, o := range out {
			if o == e.Node {
				return
			}
		}
		out = append(out, e.Node)
	})
	return out
}

// Released records that owner, a local session, left this node for
// another (a hand-over): unlike Unbound, the key is not deleted, since the
// other node holds it now or is about to.
func (n *Node) Released(local, resource string, owner any) {
	n.localCount.Add(-1)
	k := key(local, resource)
	n.local.mu.Lock()
	if r := n.local.m[k]; r != nil && r.owner == owner {
		delete(n.local.m, k)
	}
	n.local.mu.Unlock()
}
