// Package muc implements a multi-user chat service (XEP-0045) as a domain
// the server serves (hook.Registrar.Domain), with XEP-0249 mediated
// invitations, XEP-0410 self-ping and XEP-0421 occupant ids.
//
// A room is loaded when a stanza addresses it: a persistent room from
// storage (its configuration and affiliations), a new room when a join
// creates it. Occupants, history and subject live in memory. A temporary
// room is dropped when its last occupant leaves; a persistent room nobody
// is in is evicted after muc.idle_unload, so an idle room costs nothing
// but its rows. What a room sends to its occupants is built once and
// stamped per recipient (fanout.go).
//
// Concurrency: handlers run on the sender's event loop; a room's state is
// guarded by its mutex, taken for short, non-blocking sections. Storage is
// read through the sender's Async (its input paused) and written by a
// per-room queue on the worker pool, in order.
package muc

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/krill-xmpp/krill/config"
	"github.com/krill-xmpp/krill/hook"
	"github.com/krill-xmpp/krill/stanza"
	"github.com/krill-xmpp/krill/storage"
)

// Namespaces.
const (
	NS           = "http://jabber.org/protocol/muc"
	NSUser       = NS + "#user"
	NSAdmin      = NS + "#admin"
	NSOwner      = NS + "#owner"
	NSRequest    = NS + "#request"
	NSRoomConfig = NS + "#roomconfig"
	NSSelfPing   = NS + "#self-ping-optimization"
	NSOccupantID = "urn:xmpp:occupant-id:0"
	NSPing       = "urn:xmpp:ping"
	NSData       = "jabber:x:data"
	NSDiscoInfo  = "http://jabber.org/protocol/disco#info"
	NSDiscoItems = "http://jabber.org/protocol/disco#items"
	nsStanzas    = "urn:ietf:params:xml:ns:xmpp-stanzas"
)

// Store is where persistent rooms live; storage.SQL implements it.
type Store = storage.MUC

// Archiver is the seam for MUC archives (XEP-0313 on room JIDs), which
// the archive module provides: a room configured with
// muc#roomconfig_enablearchiving hands it every groupchat message it
// broadcasts, and announces status 170 on join. Its methods must not
// block (they run on the sender's loop, the room locked): they queue.
// The archive module (package mam) implements it.
type Archiver interface {
	// ArchiveGroupchat stores the message msg (complete, from
	// room/nick, without to) sent to room by the occupant with the
	// given real bare JID and occupant id, at at. It returns the
	// message's archive ID, which the room's copies carry as
	// <stanza-id by=room/> (XEP-0359, XEP-0313 §6), or "" when the
	// message was not archived.
	ArchiveGroupchat(h hook.Host, room, nick, realBare, occupantID string, msg []byte, at time.Time) (id string)
	// DeleteRoomArchive deletes the archive of room, which is gone: a
	// destroyed room, or a temporary one its last occupant left.
	DeleteRoomArchive(h hook.Host, room string)
}

// ArchiveQuerier is the optional other half of the archive seam: an
// Archiver that also implements it answers XEP-0313 queries (iqs in
// urn:xmpp:mam:2) addressed to a room's JID. The room has checked that
// the sender may read its archive (an occupant, or anyone for a public
// room that is not members-only) and that archiving is on; QueryRoom
// answers through c as an iq handler does.
type ArchiveQuerier interface {
	QueryRoom(c *hook.Ctx, st *hook.Stanza, room string) error
}

// Namespaces of MUC archives: NSMAM is XEP-0313's, of the queries a
// room forwards to its ArchiveQuerier and of its disco feature; NSSID is
// XEP-0359's, of the <stanza-id/> a room's archived messages carry.
const (
	NSMAM = "urn:xmpp:mam:2"
	NSSID = "urn:xmpp:sid:0"
)

// Module is the multi-user chat service. Set Store (nil: no room can be
// persistent) and Config before registering.
type Module struct {
	Store    Store
	Config   config.Config
	Archiver Archiver // nil: rooms accept enablearchiving but archive nothing

	domain string
	slot   hook.Slot
	secret []byte

	mu    sync.Mutex
	rooms map[string]*room
	temp  map[string]int // temporary rooms in memory by creator (bare JID)

	closing   atomic.Bool // Drain has run: the service is shutting down
	stop      chan struct{}
	stopOnce  sync.Once
	sweepOnce sync.Once // the eviction sweep starts with the first room

	created, joins, messages, evicted atomic.Uint64

	cs clusterState // rooms held by one node of a cluster (cluster.go)
}

var (
	_ hook.Module  = (*Module)(nil)
	_ hook.Counter = (*Module)(nil)
	_ hook.Stopper = (*Module)(nil)
	_ hook.Drainer = (*Module)(nil)
)

// Name implements hook.Module.
func (*Module) Name() string { return "muc" }

// Domain returns the service's domain, "" when it is off.
func (m *Module) Domain() string { return m.domain }

// Register implements hook.Module: the service's domain, and the session
// events that take an occupant out of its rooms.
func (m *Module) Register(r *hook.Registrar) error {
	m.domain = m.Config.MUCDomain()
	if m.domain == "" {
		return nil
	}
	m.rooms = make(map[string]*room)
	m.temp = make(map[string]int)
	m.stop = make(chan struct{})
	m.slot = r.Slot()
	if err := m.loadSecret(); err != nil {
		return err
	}
	r.Domain(m.domain, m.handle)
	// A session that goes unavailable or ends leaves its rooms; a session
	// stream management parks is neither, and stays in them.
	r.On(hook.Unavailable, m.sessionGone)
	r.On(hook.Closed, m.sessionGone)
	if m.Config.Cluster.NATSURL != "" {
		// Rooms held on other nodes: a refused join or a removal must
		// take the room off the session's list (cluster.go, awayOut).
		r.Outbound(m.awayOut)
	}
	return nil
}

// loadSecret reads (or creates) the per-server secret occupant ids are
// derived from: stored in the database (muc_service), so that ids stay
// the same across restarts and across cluster nodes sharing it.
func (m *Module) loadSecret() error {
	if m.Store == nil {
		m.secret = make([]byte, 32)
		_, _ = rand.Read(m.secret)
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := m.Store.MUCSecret(ctx)
	if err != nil {
		return err
	}
	m.secret, err = hex.DecodeString(s)
	return err
}

// Counters implements hook.Counter.
func (m *Module) Counters(fn func(event string, n uint64)) {
	fn("rooms_created", m.created.Load())
	fn("joins", m.joins.Load())
	fn("messages", m.messages.Load())
	fn("rooms_evicted", m.evicted.Load())
}

// Stop implements hook.Stopper: it ends the eviction sweep.
func (m *Module) Stop(context.Context) {
	if m.stop != nil {
		m.stopOnce.Do(func() { close(m.stop) })
	}
}

// errShutdown is the text of what the service refuses once it is shutting
// down.
const errShutdown = "the service is shutting down"

// Drain implements hook.Drainer: on a graceful shutdown every occupant of
// every loaded room gets its own unavailable presence with status 332
// (XEP-0045: removed because the service is shutting down), before its
// session is closed. Only the occupant's own presence is sent, as on
// destroy: everyone is leaving, and telling each of n occupants about
// the n-1 others would be n² stanzas written to connections about to
// close. Persistent rooms stay in storage as they are; the service
// refuses what arrives afterwards.
func (m *Module) Drain(context.Context) {
	if m.domain == "" || m.closing.Swap(true) {
		return
	}
	m.mu.Lock()
	rooms := make([]*room, 0, len(m.rooms))
	for _, r := range m.rooms {
		rooms = append(rooms, r)
	}
	m.mu.Unlock()
	for _, r := range rooms {
		r.shutdown()
	}
}

// Loaded returns the number of rooms in memory, for tests and benchmarks.
func (m *Module) Loaded() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.rooms)
}

// occupantID derives the XEP-0421 id of a real bare JID in a room: a keyed
// hash, stable for the pair and revealing neither.
func (m *Module) occupantID(roomJID, bare string) string {
	h := hmac.New(sha256.New, m.secret)
	h.Write([]byte(roomJID))
	h.Write([]byte{0})
	h.Write([]byte(bare))
	return base64.RawURLEncoding.EncodeToString(h.Sum(nil)[:18])
}

// sweep evicts persistent rooms that have been empty for muc.idle_unload.
func (m *Module) sweep() {
	every := min(max(m.Config.MUC.IdleUnload/2, time.Second), time.Minute)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-m.stop:
			return
		case now := <-t.C:
			m.evictIdle(now, m.Config.MUC.IdleUnload)
		}
	}
}

// evictIdle drops the persistent rooms empty since before now-idle.
func (m *Module) evictIdle(now time.Time, idle time.Duration) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, r := range m.rooms {
		m.evictLocked(r, now, idle)
	}
}

// evictLocked drops r if it is persistent, empty since before now-idle,
// and has nothing left to write or send. Called with m.mu held.
func (m *Module) evictLocked(r *room, now time.Time, idle time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.byJID) == 0 && r.cfg.Persistent && !r.emptySince.IsZero() && now.Sub(r.emptySince) >= idle && !r.writing && len(r.writes) == 0 && r.drained() && m.rooms[r.name] == r {
		r.gone = true
		delete(m.rooms, r.name)
		m.release(r.name)
		m.evicted.Add(1)
	}
}

// evictNow drops r at once when muc.idle_unload is 0 (and its writes are
// done; otherwise the sweep takes it).
func (m *Module) evictNow(h hook.Host, r *room) {
	if h.Config().MUC.IdleUnload > 0 {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.evictLocked(r, time.Now(), 0)
}

// handle is the domain handler: every stanza a local session sends to
// the service or a room.
func (m *Module) handle(c *hook.Ctx, st *hook.Stanza) hook.Verdict {
	if m.closing.Load() {
		switch {
		case st.Kind == hook.Presence && st.Type == "":
			joinError(c, st, "cancel", "service-unavailable", errShutdown)
		case st.IsRequest():
			c.ReplyError("cancel", "service-unavailable", errShutdown)
		}
		return hook.Stop
	}
	if st.Local == "" {
		m.service(c, st)
		return hook.Stop
	}
	if m.routeCluster(c, st) {
		return hook.Stop // another node holds the room
	}
	for range 3 { // a room evicted under our feet is looked up again
		m.mu.Lock()
		r := m.rooms[st.Local]
		m.mu.Unlock()
		if r == nil {
			m.load(c, st)
			return hook.Stop
		}
		if r.handle(c, st) {
			return hook.Stop
		}
		m.drop(c.Host, r)
	}
	c.ReplyError("wait", "resource-constraint", "room busy")
	return hook.Stop
}

// load reads a room from storage on the worker pool, then handles the
// stanza with it: a room not found is created by a join, and is
// item-not-found for anything else.
func (m *Module) load(c *hook.Ctx, st *hook.Stanza) {
	name := st.Local
	raw := bytes.Clone(st.Raw)
	join := st.Kind == hook.Presence && st.Resource != "" && st.Type == ""
	creator := bareOf(st.From)
	maxRooms := c.Host.Config().MUC.MaxRoomsPerUser
	cl := m.clusterOf(c.Host)
	c.Conn.Async(func(ctx context.Context) func(*hook.Ctx) {
		if cl != nil {
			// In a cluster the room is loaded by the node that holds
			// its lease; another holder gets the stanza.
			owner, err := cl.Lease(ctx, leaseService, name)
			if err != nil || owner != cl.Node() {
				return func(c *hook.Ctx) {
					st := reparse(c.Stanza, raw)
					c.Stanza = st
					if err != nil {
						c.Log.Error("muc room lease failed", zap.String("room", name), zap.Error(err))
						c.ReplyError("wait", "internal-server-error", "")
						return
					}
					m.forward(c, cl, owner, st)
				}
			}
		}
		var rec storage.MUCRoom
		found := false
		var err error
		if m.Store != nil {
			rec, err = m.Store.MUCRoom(ctx, name)
			switch {
			case err == nil:
				found = true
			case errors.Is(err, storage.ErrRoomNotFound):
				err = nil
			}
		}
		over := false
		if err == nil && !found && join && maxRooms > 0 {
			n := 0
			if m.Store != nil {
				n, err = m.Store.MUCRoomsCreatedBy(ctx, creator)
			}
			m.mu.Lock()
			n += m.temp[creator]
			m.mu.Unlock()
			over = n >= maxRooms
		}
		return func(c *hook.Ctx) {
			if cl != nil {
				defer m.releaseUnloaded(name)
			}
			m.sweepOnce.Do(func() { go m.sweep() })
			st := reparse(c.Stanza, raw)
			c.Stanza = st
			if err != nil {
				c.Log.Error("muc room load failed", zap.String("room", name), zap.Error(err))
				c.ReplyError("wait", "internal-server-error", "")
				return
			}
			m.mu.Lock()
			r := m.rooms[name]
			switch {
			case r != nil:
			case found:
				r = m.fromRecord(c.Host, rec)
				m.rooms[name] = r
			case !join:
				m.mu.Unlock()
				c.ReplyError("cancel", "item-not-found", "")
				return
			case over:
				m.mu.Unlock()
				joinError(c, st, "cancel", "not-allowed", "too many rooms created by this account")
				return
			case !validNick(st.Resource):
				m.mu.Unlock()
				joinError(c, st, "modify", "jid-malformed", errNick)
				return
			default:
				r = m.newRoom(c.Host, name, creator)
				r.countedTemp = true
				m.rooms[name] = r
				m.temp[creator]++
				m.created.Add(1)
			}
			m.mu.Unlock()
			if !r.handle(c, st) {
				m.drop(c.Host, r)
				m.handle(c, st)
			}
		}
	}, nil)
}

// reparse rebuilds a stanza from the header copy an Async continuation
// gets and the raw bytes kept aside.
func reparse(h *hook.Stanza, raw []byte) *hook.Stanza {
	st := *h
	st.Raw = raw
	st.Tag, _ = stanza.ParseStartTag(raw)
	if st.Kind == hook.IQ {
		if child, ok := stanza.FirstChild(raw); ok {
			if t, err := stanza.ParseStartTag(child); err == nil {
				st.Payload = child
				st.NS, _ = t.AttrString("xmlns")
				st.Name = string(t.Local())
			}
		}
	}
	return &st
}

// emptied marks a room nobody is in any more: a persistent one idle since
// now (evicted later), a temporary one gone (the caller drops it with
// drop once the room is unlocked). Called with r.mu held.
func (m *Module) emptied(r *room) {
	if r.cfg.Persistent {
		r.emptySince = time.Now()
		return
	}
	r.gone = true
}

// drop removes a gone room from the map, once, and deletes its archive:
// a gone room is a destroyed one or a temporary one nobody is in, whose
// history must not greet whoever creates a room of that name next.
func (m *Module) drop(h hook.Host, r *room) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.rooms[r.name] != r {
		return
	}
	delete(m.rooms, r.name)
	m.release(r.name)
	r.mu.Lock()
	archived := r.cfg.Archive
	r.mu.Unlock()
	if archived && m.Archiver != nil {
		m.Archiver.DeleteRoomArchive(h, r.jid)
	}
	if r.countedTemp {
		if m.temp[r.creator]--; m.temp[r.creator] <= 0 {
			delete(m.temp, r.creator)
		}
	}
}

// untemp stops counting r as a temporary room of its creator (it became
// persistent: storage counts it now).
func (m *Module) untemp(r *room) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if r.countedTemp {
		r.countedTemp = false
		if m.temp[r.creator]--; m.temp[r.creator] <= 0 {
			delete(m.temp, r.creator)
		}
	}
}

// joined is a session's rooms (its slot): read and written on its loop.
// away are those another node of a cluster holds (cluster.go).
type joined struct{ rooms, away []string }

// remember notes that sess joined a room.
func (m *Module) remember(sess hook.Session, name string) {
	j, _ := sess.Slot(m.slot).(*joined)
	if j == nil {
		j = &joined{}
		sess.SetSlot(m.slot, j)
	}
	for _, n := range j.rooms {
		if n == name {
			return
		}
	}
	// Rooms the session has left since (kicked, say) are pruned here,
	// so the list stays as long as the rooms it is in.
	keep := j.rooms[:0]
	for _, n := range j.rooms {
		m.mu.Lock()
		r := m.rooms[n]
		m.mu.Unlock()
		if r != nil && r.occupantOf(sess) != nil {
			keep = append(keep, n)
		}
	}
	j.rooms = append(keep, name)
}

// sessionGone takes a session that went unavailable or ended out of every
// room it is in.
func (m *Module) sessionGone(c *hook.Ctx, _ hook.Event) hook.Verdict {
	sess := c.Session
	j, _ := sess.Slot(m.slot).(*joined)
	if j == nil {
		return hook.Continue
	}
	sess.SetSlot(m.slot, nil)
	m.leaveAway(c, sess, j)
	for _, n := range j.rooms {
		m.mu.Lock()
		r := m.rooms[n]
		m.mu.Unlock()
		if r != nil {
			r.leaveSession(c.Host, sess)
		}
	}
	return hook.Continue
}

// service answers stanzas to the service's own domain: disco.
func (m *Module) service(c *hook.Ctx, st *hook.Stanza) {
	if st.Kind != hook.IQ || (st.Type != "get" && st.Type != "set") {
		if st.IsRequest() {
			c.ReplyError("cancel", "service-unavailable", "")
		}
		return
	}
	switch {
	case st.Type == "get" && st.NS == NSDiscoInfo && st.Name == "query" && st.Resource == "":
		b := []byte(`<query xmlns='` + NSDiscoInfo + `'><identity category='conference' type='text' name='Chatrooms'/>` +
			`<feature var='` + NSDiscoInfo + `'/><feature var='` + NSDiscoItems + `'/><feature var='` + NS + `'/>` +
			`<feature var='` + NSOccupantID + `'/><feature var='` + NSSelfPing + `'/><feature var='` + NSPing + `'/></query>`)
		c.ReplyResult(b)
	case st.Type == "get" && st.NS == NSDiscoItems && st.Name == "query" && st.Resource == "":
		m.serviceItems(c)
	case st.Type == "get" && st.NS == NSPing && st.Name == "ping":
		c.ReplyResult(nil)
	default:
		c.ReplyError("cancel", "service-unavailable", "")
	}
}

// maxListed caps the rooms the service's disco#items lists.
const maxListed = 500

// serviceItems lists the public rooms: persistent ones from storage, and
// the temporary ones in memory.
func (m *Module) serviceItems(c *hook.Ctx) {
	var names []string
	m.mu.Lock()
	for n, r := range m.rooms {
		r.mu.Lock()
		if r.cfg.Public && !r.locked && !r.cfg.Persistent && len(names) < maxListed {
			names = append(names, n)
		}
		r.mu.Unlock()
	}
	m.mu.Unlock()
	domain := m.domain
	reply := func(c *hook.Ctx, names []string) {
		names = sortedUnique(names)
		b := []byte(`<query xmlns='` + NSDiscoItems + `'>`)
		for _, n := range names {
			b = append(b, `<item jid='`...)
			b = stanza.AppendEscaped(b, n+"@"+domain)
			b = append(b, `'/>`...)
		}
		c.ReplyResult(append(b, `</query>`...))
	}
	if m.Store == nil {
		reply(c, names)
		return
	}
	c.Conn.Async(func(ctx context.Context) func(*hook.Ctx) {
		stored, err := m.Store.PublicMUCRooms(ctx, maxListed)
		return func(c *hook.Ctx) {
			if err != nil {
				c.ReplyError("wait", "internal-server-error", "")
				return
			}
			reply(c, append(names, stored...))
		}
	}, nil)
}

// bareOf returns the bare JID of a full JID.
func bareOf(full string) string {
	if i := strings.IndexByte(full, '/'); i >= 0 {
		return full[:i]
	}
	return full
}

// sortedUnique sorts s and drops repeats.
func sortedUnique(s []string) []string {
	slices.Sort(s)
	return slices.Compact(s)
}
