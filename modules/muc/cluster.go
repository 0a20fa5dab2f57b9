package muc

import (
	"bytes"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/krill-xmpp/krill/hook"
	"github.com/krill-xmpp/krill/stanza"
)

// Rooms in a cluster (README, Cluster, "Shared services"). Each room is
// held by one node at a time under a lease (hook.Cluster): the node whose
// session first addresses a room that nobody holds takes the lease and
// loads the room (from storage if persistent); every other node forwards
// the stanzas its sessions send to the room to that node, whose room
// handles them as if the senders were local and sends to occupants on
// other nodes through their nodes' inboxes. A room releases its lease when
// it leaves memory (a temporary room emptied, a persistent one evicted
// idle, the node shutting down), and the next node that needs it takes it.
//
// When the holder dies, its rooms' state in memory dies with it: the
// occupants, the history, the subject of a temporary room; a temporary
// room is gone. A persistent room is loaded again from storage, with its
// configuration and affiliations, by the next node that needs it. The
// occupants on the live nodes are told by their own node, which knows
// which of its sessions joined a room held by the dead node: each gets
// its own unavailable presence with status codes 110 and 333 (XEP-0045:
// removed because of a technical problem), and the clients rejoin, which
// re-creates the occupancy on the new holder with the full join protocol
// (history, subject, the others' presence). Rebuilding the occupancy on
// the new holder without the clients would need each occupant's role,
// nick and presence replicated on every change, a write per presence to
// the key-value store, for an event that should be rare; and a client
// that missed messages in between would not know. A client that does not
// handle 333 finds out by XEP-0410 self-ping: the new holder answers it
// not-acceptable, as for any occupant it does not know.
//
// When a node that had sessions in a room dies, the room's holder removes
// them with status 333 for the others to see.

// leaseService names the rooms' leases.
const leaseService = "muc"

// maxAway caps the rooms one session is in through other nodes (each is
// an entry here): joining one more is refused with policy-violation.
const maxAway = 256

// maxHops caps how often a stanza is forwarded: a lease that moved while
// the stanza travelled costs one more hop.
const maxHops = 2

// clusterState is the module's cluster side.
type clusterState struct {
	once sync.Once
	c    atomic.Pointer[clusterBox]

	mu   sync.Mutex
	away map[string]*awayRoom // rooms held elsewhere that local sessions are in, by name
}

type clusterBox struct{ c hook.Cluster }

// awayRoom is a room another node holds, as this node knows it: its
// holder when joined, and the local sessions in it with their nicks.
type awayRoom struct {
	owner string
	occ   map[hook.Session]string
}

// clusterOf returns the server's cluster (nil standalone), fixed at the
// first call.
func (m *Module) clusterOf(h hook.Host) hook.Cluster {
	m.cs.once.Do(func() {
		if c := hook.ClusterOf(h); c != nil {
			m.cs.c.Store(&clusterBox{c})
		}
	})
	if b := m.cs.c.Load(); b != nil {
		return b.c
	}
	return nil
}

// release gives up the lease of a room that left memory.
func (m *Module) release(name string) {
	if b := m.cs.c.Load(); b != nil {
		b.c.Release(leaseService, name)
	}
}

// routeCluster forwards st to the room's holder when another node holds
// it; false when the room is (or is to be) handled here.
func (m *Module) routeCluster(c *hook.Ctx, st *hook.Stanza) bool {
	cl := m.clusterOf(c.Host)
	if cl == nil {
		return false
	}
	m.mu.Lock()
	r := m.rooms[st.Local]
	m.mu.Unlock()
	owner := cl.Owner(leaseService, st.Local)
	if owner == "" || owner == cl.Node() {
		return false // here, or the load takes (or finds) the lease
	}
	if r != nil {
		// Another live node holds the lease of a room loaded here: this
		// node was taken as dead while cut from NATS and the room was
		// taken over. This copy goes; its occupants rejoin there.
		m.stale(r)
	}
	m.forward(c, cl, owner, st)
	return true
}

// stale drops a room whose lease another node holds now: each occupant
// gets its own unavailable presence with 110 and 333, as when a holder
// dies. Nothing is written or deleted: storage and the archive are the
// new holder's.
func (m *Module) stale(r *room) {
	m.mu.Lock()
	if m.rooms[r.name] == r {
		delete(m.rooms, r.name)
		if r.countedTemp {
			if m.temp[r.creator]--; m.temp[r.creator] <= 0 {
				delete(m.temp, r.creator)
			}
		}
	}
	m.mu.Unlock()
	r.mu.Lock()
	if r.gone {
		r.mu.Unlock()
		return
	}
	r.gone = true
	var outs []*occupant
	for _, o := range r.allSorted() {
		outs = append(outs, o)
		r.removeOccupant(o)
	}
	r.mu.Unlock()
	for _, o := range outs {
		o.sess.Deliver(m.removedPresence(r.name, o.nick, o.full))
	}
}

// forward sends st to the room's holder, noting the rooms a local
// session joins there.
func (m *Module) forward(c *hook.Ctx, cl hook.Cluster, owner string, st *hook.Stanza) {
	hops := 0
	if f, ok := c.Session.(hook.Forwarded); ok {
		hops = f.Hops() + 1
	}
	refuse := func(typ, cond, text string) {
		if st.Kind == hook.Presence {
			if st.Type == "" {
				joinError(c, st, typ, cond, text)
			}
			return
		}
		c.ReplyError(typ, cond, text)
	}
	if hops > maxHops {
		refuse("wait", "resource-constraint", "room busy")
		return
	}
	if hops == 0 && !m.trackAway(c, owner, st) {
		refuse("wait", "policy-violation", "in too many rooms")
		return
	}
	if !cl.Forward(owner, c.Session, st.From, st.Raw) {
		refuse("wait", "remote-server-timeout", "the node holding the room is unreachable")
	}
}

// trackAway notes a local session's presence to a room held elsewhere:
// joined (or still in) with its nick, or left. False when the session is
// in maxAway such rooms already and this would be one more.
func (m *Module) trackAway(c *hook.Ctx, owner string, st *hook.Stanza) bool {
	sess := c.Session
	if st.Kind != hook.Presence || sess == nil {
		return true
	}
	j, _ := sess.Slot(m.slot).(*joined)
	in := j != nil && slices.Contains(j.away, st.Local)
	switch st.Type {
	case "":
		if st.Resource == "" {
			return true
		}
		if !in {
			if j == nil {
				j = &joined{}
				sess.SetSlot(m.slot, j)
			}
			if len(j.away) >= maxAway {
				return false
			}
			j.away = append(j.away, st.Local)
		}
		m.cs.mu.Lock()
		if m.cs.away == nil {
			m.cs.away = make(map[string]*awayRoom)
		}
		a := m.cs.away[st.Local]
		if a == nil {
			a = &awayRoom{occ: make(map[hook.Session]string)}
			m.cs.away[st.Local] = a
		}
		a.owner = owner
		a.occ[sess] = st.Resource
		m.cs.mu.Unlock()
	case "unavailable", "error":
		if in {
			j.away = slices.DeleteFunc(j.away, func(n string) bool { return n == st.Local })
		}
		m.forgetAway(st.Local, sess)
	}
	return true
}

// awayOut sees what is written to a session in cluster mode: the answer
// of a room held on another node that refuses the session's join (an
// error presence) or removes it (its own unavailable presence, 110 without
// the 303 of a nick change) takes that room off the session's list, so
// that the holder's death later tells it nothing about a room it is not
// in.
func (m *Module) awayOut(s hook.Session, b []byte) ([]byte, hook.Verdict) {
	if len(b) < 10 || string(b[:9]) != "<presence" {
		return b, hook.Continue
	}
	j, _ := s.Slot(m.slot).(*joined)
	if j == nil || len(j.away) == 0 {
		return b, hook.Continue
	}
	tag, err := stanza.ParseStartTag(b)
	if err != nil {
		return b, hook.Continue
	}
	typ, _ := tag.AttrString("type")
	switch {
	case typ == "error":
	case typ == "unavailable" && bytes.Contains(b, []byte(`<status code='110'/>`)) && !bytes.Contains(b, []byte(`<status code='303'/>`)):
	default:
		return b, hook.Continue
	}
	from, _ := tag.AttrString("from")
	name, domain, _ := strings.Cut(from, "@")
	if domain, _, _ = strings.Cut(domain, "/"); domain != m.domain || !slices.Contains(j.away, name) {
		return b, hook.Continue
	}
	j.away = slices.DeleteFunc(j.away, func(n string) bool { return n == name })
	m.forgetAway(name, s)
	return b, hook.Continue
}

// forgetAway takes sess out of the away room name.
func (m *Module) forgetAway(name string, sess hook.Session) {
	m.cs.mu.Lock()
	defer m.cs.mu.Unlock()
	if a := m.cs.away[name]; a != nil {
		delete(a.occ, sess)
		if len(a.occ) == 0 {
			delete(m.cs.away, name)
		}
	}
}

// leaveAway takes a session that went unavailable or ended out of the
// rooms it is in on other nodes: their holders get its unavailable
// presence.
func (m *Module) leaveAway(c *hook.Ctx, sess hook.Session, j *joined) {
	cl := m.clusterOf(c.Host)
	if cl == nil {
		return
	}
	for _, name := range j.away {
		m.forgetAway(name, sess)
		owner := cl.Owner(leaseService, name)
		if owner == "" || owner == cl.Node() {
			// Its holder died (the occupants were told) or the room
			// moved here since: not in it any more.
			continue
		}
		b := append([]byte(`<presence to='`), stanza.AppendEscaped(nil, name+"@"+m.domain)...)
		cl.Forward(owner, sess, sess.Full(), append(b, `' type='unavailable'/>`...))
	}
}

// NodeDown implements hook.NodeWatcher. The rooms held here lose the
// occupants whose sessions were on node (status 333 to the others); the
// local sessions in rooms node held are told they are out (110, 333).
func (m *Module) NodeDown(h hook.Host, node string) {
	if m.domain == "" {
		return
	}
	m.mu.Lock()
	rooms := make([]*room, 0, len(m.rooms))
	for _, r := range m.rooms {
		rooms = append(rooms, r)
	}
	m.mu.Unlock()
	for _, r := range rooms {
		r.mu.Lock()
		var gone []*occupant
		for _, o := range r.byJID {
			if f, ok := o.sess.(hook.Forwarded); ok && f.Origin() == node {
				gone = append(gone, o)
			}
		}
		r.mu.Unlock()
		slices.SortFunc(gone, func(a, b *occupant) int { return strings.Compare(a.full, b.full) })
		for _, o := range gone {
			r.mu.Lock()
			if r.gone || r.byJID[o.full] != o {
				r.mu.Unlock()
				continue
			}
			r.leave(h, o, nil, []int{333}) // unlocks
		}
	}
	type out struct {
		sess hook.Session
		b    []byte
	}
	var outs []out
	m.cs.mu.Lock()
	for name, a := range m.cs.away {
		if a.owner != node {
			continue
		}
		delete(m.cs.away, name)
		for sess, nick := range a.occ {
			outs = append(outs, out{sess, m.removedPresence(name, nick, sess.Full())})
		}
	}
	m.cs.mu.Unlock()
	for _, o := range outs {
		o.sess.Deliver(o.b)
	}
}

// removedPresence is the unavailable presence that tells full it is out
// of room name (as nick) because the room's node died: status 110 (it is
// about the recipient) and 333 (a technical problem). Its affiliation is
// not known here: the item says none.
func (m *Module) removedPresence(name, nick, full string) []byte {
	b := append([]byte(`<presence from='`), stanza.AppendEscaped(nil, name+"@"+m.domain+"/"+nick)...)
	b = append(b, `' to='`...)
	b = stanza.AppendEscaped(b, full)
	return append(b, `' type='unavailable'><x xmlns='`+NSUser+`'><item affiliation='none' role='none'/><status code='110'/><status code='333'/></x></presence>`...)
}

// releaseUnloaded gives up the lease of a room taken for a stanza that
// did not load it (a join refused, an item-not-found).
func (m *Module) releaseUnloaded(name string) {
	m.mu.Lock()
	loaded := m.rooms[name] != nil
	m.mu.Unlock()
	if !loaded {
		m.release(name)
	}
}
