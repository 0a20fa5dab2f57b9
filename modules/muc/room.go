package muc

import (
	"context"
	"encoding/json"
	"maps"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"golang.org/x/text/secure/precis"

	"github.com/krill-xmpp/krill/hook"
	"github.com/krill-xmpp/krill/stanza"
	"github.com/krill-xmpp/krill/storage"
)

// role is an occupant's role (XEP-0045 5.1), lowest first.
type role uint32

const (
	roleNone role = iota
	roleVisitor
	roleParticipant
	roleModerator
)

var roleNames = [...]string{"none", "visitor", "participant", "moderator"}

func (r role) String() string { return roleNames[r] }

func parseRole(s string) (role, bool) {
	i := slices.Index(roleNames[:], s)
	return role(max(i, 0)), i >= 0
}

// affiliation is a bare JID's standing in a room (XEP-0045 5.2), lowest
// first: comparisons follow the XEP's hierarchy.
type affiliation uint8

const (
	affOutcast affiliation = iota
	affNone
	affMember
	affAdmin
	affOwner
)

var affNames = [...]string{"outcast", "none", "member", "admin", "owner"}

func (a affiliation) String() string { return affNames[a] }

func parseAffiliation(s string) (affiliation, bool) {
	i := slices.Index(affNames[:], s)
	return affiliation(max(i, 0)), i >= 0
}

// roomConfig is what an owner configures (muc#roomconfig), stored as JSON.
type roomConfig struct {
	Name          string `json:"name,omitempty"`
	Desc          string `json:"desc,omitempty"`
	Persistent    bool   `json:"persistent,omitempty"`
	Public        bool   `json:"public,omitempty"`
	MembersOnly   bool   `json:"members_only,omitempty"`
	Moderated     bool   `json:"moderated,omitempty"`
	PasswordOn    bool   `json:"password_on,omitempty"`
	Password      string `json:"password,omitempty"`
	MaxUsers      int    `json:"max_users,omitempty"` // 0: muc.max_occupants
	WhoisAnyone   bool   `json:"whois_anyone,omitempty"`
	HistoryLength int    `json:"history_length"`
	// Hidden is the roles (bit 1<<role) whose presence is not broadcast
	// (muc#roomconfig_presencebroadcast leaves them out): a big room
	// where only moderators are listed costs O(1) per join, not O(n).
	Hidden uint8 `json:"hidden_roles,omitempty"`
	// Archive is muc#roomconfig_enablearchiving: stored, and handed to
	// the Archiver seam when one is set.
	Archive bool `json:"archive,omitempty"`
	// ArchiveDays is how long the archive keeps a message, in days (the
	// owner's choice, fieldArchiveDays); 0 follows mam.retention, which
	// also bounds it (the shorter wins).
	ArchiveDays   int    `json:"archive_days,omitempty"`
	AllowPM       string `json:"allow_pm,omitempty"` // anyone, participants, moderators, none
	AllowInvites  bool   `json:"allow_invites,omitempty"`
	ChangeSubject bool   `json:"change_subject,omitempty"`
	Subject       string `json:"subject,omitempty"`
	SubjectFrom   string `json:"subject_from,omitempty"`
}

// defaultConfig is a new room's configuration: temporary, public, open,
// unmoderated, semi-anonymous, private messages from anyone.
func defaultConfig(maxHistory int) roomConfig {
	return roomConfig{Public: true, HistoryLength: maxHistory, AllowPM: "anyone"}
}

// occupant is one session in a room: a small fixed record.
type occupant struct {
	nick   string // as shown (PRECIS-enforced)
	key    string // as compared (PRECIS comparison key)
	full   string // real full JID
	bare   string
	toAttr []byte // full, escaped: what each copy to it carries
	id     string // XEP-0421 occupant id
	sess   hook.Session
	role   atomic.Uint32
	aff    affiliation
	part   uint8
	shown  bool        // the others have been sent its presence (presencebroadcast)
	twins  []*occupant // on the nick's first session: the account's other sessions under the nick
	extra  []byte      // the children of its last presence (show, status, caps), capped

	tokens float64 // message rate bucket
	last   time.Time
}

func (o *occupant) getRole() role  { return role(o.role.Load()) }
func (o *occupant) seesJIDs() bool { return o.getRole() == roleModerator }

// histEntry is one groupchat message kept for history: the stanza split
// around the recipient's address, and its delay.
type histEntry struct {
	head, tail []byte
	at         time.Time
}

// room is one loaded room. Guarded by mu unless said otherwise.
type room struct {
	m       *Module
	name    string // localpart
	jid     string // name@service
	creator string

	mu          sync.Mutex
	cfg         roomConfig
	locked      bool // reserved room awaiting its configuration
	fresh       bool // created, its first occupant not yet in
	affs        map[string]affiliation
	nicks       map[string]string    // reserved nicknames (XEP-0045 7.10) by bare JID
	reserved    map[string]string    // the same, bare JIDs by nickname comparison key
	occ         map[string]*occupant // by nick key: the nick's first session (others are its twins)
	byJID       map[string]*occupant // by real full JID
	history     []histEntry
	histBytes   int
	parts       [numParts]partition
	emptySince  time.Time
	gone        bool // evicted, destroyed or emptied: look it up again
	countedTemp bool // counted in Module.temp (guarded by Module.mu)
	writes      []func(context.Context, Store) error
	writing     bool
	pending     map[string]relayed // iqs relayed to occupants, by the room's id
	relaySeq    uint64
}

// newRoom creates a room for its first occupant, locked until configured.
func (m *Module) newRoom(h hook.Host, name, creator string) *room {
	r := &room{m: m, name: name, jid: name + "@" + m.domain, creator: creator,
		cfg: defaultConfig(h.Config().MUC.MaxHistory), locked: true, fresh: true,
		affs: map[string]affiliation{creator: affOwner}, nicks: map[string]string{}, reserved: map[string]string{}, occ: map[string]*occupant{}, byJID: map[string]*occupant{}}
	return r
}

// fromRecord loads a persistent room.
func (m *Module) fromRecord(h hook.Host, rec storage.MUCRoom) *room {
	r := &room{m: m, name: rec.Room, jid: rec.Room + "@" + m.domain, creator: rec.Creator,
		affs: map[string]affiliation{}, nicks: map[string]string{}, reserved: map[string]string{},
		occ: map[string]*occupant{}, byJID: map[string]*occupant{}, emptySince: time.Now()}
	r.cfg = defaultConfig(h.Config().MUC.MaxHistory)
	if err := json.Unmarshal(rec.Config, &r.cfg); err != nil {
		h.Logger().Error("muc room configuration unreadable", zap.String("room", rec.Room), zap.Error(err))
	}
	r.cfg.Persistent = true
	for j, a := range rec.Affiliations {
		if v, ok := parseAffiliation(a); ok {
			r.affs[j] = v
		}
	}
	for j, n := range rec.Nicks {
		if key, err := nickKey(n); err == nil && r.affs[j] > affNone {
			r.nicks[j], r.reserved[key] = n, j
		}
	}
	return r
}

// record is the room as stored. Called with r.mu held.
func (r *room) record() storage.MUCRoom {
	b, _ := json.Marshal(r.cfg)
	return storage.MUCRoom{Room: r.name, Config: b, Public: r.cfg.Public, Creator: r.creator, ArchiveDays: r.cfg.ArchiveDays}
}

// persist queues a storage write; writes of one room run in order, one at
// a time, on the worker pool. Called with r.mu held.
func (r *room) persist(h hook.Host, w func(context.Context, Store) error) {
	if r.m.Store == nil {
		return
	}
	r.writes = append(r.writes, w)
	if r.writing {
		return
	}
	r.writing = true
	if !h.Go(func(ctx context.Context) { r.writeAll(ctx, h) }) {
		go r.writeAll(context.Background(), h) // queue full: writes must not be lost
	}
}

func (r *room) writeAll(ctx context.Context, h hook.Host) {
	for {
		r.mu.Lock()
		ws := r.writes
		r.writes = nil
		if len(ws) == 0 {
			r.writing = false
			r.mu.Unlock()
			return
		}
		r.mu.Unlock()
		for _, w := range ws {
			if err := w(ctx, r.m.Store); err != nil {
				h.Logger().Error("muc room write failed", zap.String("room", r.name), zap.Error(err))
			}
		}
	}
}

// saveConfig queues a write of the configuration. Called with r.mu held.
func (r *room) saveConfig(h hook.Host) {
	if !r.cfg.Persistent {
		return
	}
	rec := r.record()
	r.persist(h, func(ctx context.Context, s Store) error { return s.SaveMUCRoom(ctx, rec) })
}

// saveAffiliation queues a write of one affiliation. Called with r.mu held.
func (r *room) saveAffiliation(h hook.Host, bare string, a affiliation, reason string) {
	if !r.cfg.Persistent {
		return
	}
	name := r.name
	r.persist(h, func(ctx context.Context, s Store) error {
		return s.SetMUCAffiliation(ctx, name, bare, a.String(), reason)
	})
}

// saveAll writes the whole room: when it becomes persistent. Called with
// r.mu held.
func (r *room) saveAll(h hook.Host) {
	rec := r.record()
	affs := make(map[string]affiliation, len(r.affs))
	for j, a := range r.affs {
		affs[j] = a
	}
	nicks := maps.Clone(r.nicks)
	name := r.name
	r.persist(h, func(ctx context.Context, s Store) error {
		if err := s.SaveMUCRoom(ctx, rec); err != nil {
			return err
		}
		for j, a := range affs {
			var err error
			if n := nicks[j]; n != "" {
				err = s.ReserveMUCNick(ctx, name, j, a.String(), n)
			} else {
				err = s.SetMUCAffiliation(ctx, name, j, a.String(), "")
			}
			if err != nil {
				return err
			}
		}
		return nil
	})
}

// drained reports whether no broadcast is queued. Called with r.mu held.
func (r *room) drained() bool {
	for i := range r.parts {
		if r.parts[i].draining || len(r.parts[i].queue) > 0 {
			return false
		}
	}
	return true
}

// affOf returns a bare JID's affiliation. Called with r.mu held.
func (r *room) affOf(bare string) affiliation {
	if a, ok := r.affs[bare]; ok {
		return a
	}
	return affNone
}

// broadcasts reports whether the presence of occupants with role is sent
// to the room (muc#roomconfig_presencebroadcast). Called with r.mu held.
func (r *room) broadcasts(x role) bool {
	return r.cfg.Hidden&(1<<x) == 0
}

// defaultRole is the role an affiliation gets on entering (XEP-0045 5.1.2).
func (r *room) defaultRole(a affiliation) role {
	switch {
	case a >= affAdmin:
		return roleModerator
	case a == affMember || !r.cfg.Moderated:
		return roleParticipant
	}
	return roleVisitor
}

// maxUsers is the room's occupant limit.
func (r *room) maxUsers(h hook.Host) int {
	limit := h.Config().MUC.MaxOccupants
	if r.cfg.MaxUsers > 0 && r.cfg.MaxUsers < limit {
		return r.cfg.MaxUsers
	}
	return limit
}

// occupantOf returns the occupant a session is, or nil.
func (r *room) occupantOf(sess hook.Session) *occupant {
	r.mu.Lock()
	defer r.mu.Unlock()
	if o := r.byJID[sess.Full()]; o != nil && o.sess == sess {
		return o
	}
	return nil
}

// handle handles a stanza to the room or an occupant; false when the room
// is gone and must be looked up again.
func (r *room) handle(c *hook.Ctx, st *hook.Stanza) bool {
	r.mu.Lock()
	if r.gone {
		r.mu.Unlock()
		return false
	}
	switch st.Kind {
	case hook.Presence:
		r.presence(c, st) // unlocks
	case hook.Message:
		r.message(c, st) // unlocks
	default:
		r.iq(c, st) // unlocks
	}
	return true
}

// presence handles presence to room/nick: join, update, nick change,
// leave. Called with r.mu held; it unlocks.
func (r *room) presence(c *hook.Ctx, st *hook.Stanza) {
	o := r.byJID[st.From]
	switch st.Type {
	case "":
	case "unavailable":
		if o == nil {
			r.mu.Unlock()
			return
		}
		r.leave(c.Host, o, presenceExtra(st.Raw), nil) // unlocks
		return
	case "error":
		// An occupant whose client bounces the room's presence is gone
		// (XEP-0045 7.2.15 leaves the choice; Prosody does this too);
		// one whose server bounced it for good (remote.go) is told why.
		if o != nil && o.remote() && kickable(st.Raw) {
			r.bounced(c.Host, o, errorCondition(st.Raw))
			return
		}
		if o != nil {
			r.leave(c.Host, o, nil, nil)
			return
		}
		r.mu.Unlock()
		return
	default:
		r.mu.Unlock()
		return // subscriptions to a room mean nothing
	}
	if st.Resource == "" {
		r.mu.Unlock()
		joinError(c, st, "modify", "jid-malformed", "a nickname is required")
		return
	}
	nick, err := precis.Nickname.String(st.Resource)
	key, kerr := precis.Nickname.CompareKey(st.Resource)
	if err != nil || kerr != nil || len(nick) > maxNick {
		r.mu.Unlock()
		joinError(c, st, "modify", "jid-malformed", errNick)
		return
	}
	if o != nil {
		if o.key == key {
			r.update(c.Host, o, presenceExtra(st.Raw)) // unlocks
			return
		}
		r.changeNick(c, o, nick, key, presenceExtra(st.Raw)) // unlocks
		return
	}
	r.join(c, st, nick, key) // unlocks
}

// joinError answers a join with a presence error, from room/nick.
func joinError(c *hook.Ctx, st *hook.Stanza, typ, cond, text string) {
	b := append(c.Scratch(), `<presence from='`...)
	b = stanza.AppendEscaped(b, st.To)
	b = append(b, `' to='`...)
	b = stanza.AppendEscaped(b, st.From)
	b = append(b, `' type='error'`...)
	if st.ID != "" {
		b = append(b, ` id='`...)
		b = stanza.AppendEscaped(b, st.ID)
		b = append(b, '\'')
	}
	b = append(b, `><x xmlns='`+NS+`'/><error type='`...)
	b = append(b, typ...)
	b = append(b, `'><`...)
	b = append(b, cond...)
	b = append(b, ` xmlns='`+nsStanzas+`'/>`...)
	if text != "" {
		b = append(b, `<text xmlns='`+nsStanzas+`'>`...)
		b = stanza.AppendEscaped(b, text)
		b = append(b, `</text>`...)
	}
	b = append(b, `</error></presence>`...)
	c.Reply(b)
}

// join enters a new occupant (XEP-0045 7.2). Called with r.mu held; it
// unlocks.
func (r *room) join(c *hook.Ctx, st *hook.Stanza, nick, key string) {
	h := c.Host
	bare := bareOf(st.From)
	aff := r.affOf(bare)
	mucX := childNS(st.Raw, "x", NS)
	fail := func(typ, cond, text string) {
		r.mu.Unlock()
		joinError(c, st, typ, cond, text)
	}
	created := r.fresh
	switch {
	case r.locked && aff != affOwner:
		fail("cancel", "item-not-found", "the room is locked until its owner configures it")
		return
	case aff == affOutcast:
		fail("auth", "forbidden", "banned from the room")
		return
	case r.cfg.MembersOnly && aff < affMember:
		fail("auth", "registration-required", "the room is members-only")
		return
	case r.occ[key] != nil && r.occ[key].bare != bare:
		fail("cancel", "conflict", "the nickname is in use")
		return
	case r.reserved[key] != "" && r.reserved[key] != bare:
		fail("cancel", "conflict", errReserved)
		return
	case r.occ[key] != nil && len(r.occ[key].twins) >= maxTwins:
		fail("wait", "policy-violation", "too many sessions under this nickname")
		return
	case len(r.occ) >= r.maxUsers(h):
		fail("wait", "service-unavailable", "the room is full")
		return
	case r.cfg.PasswordOn && aff < affOwner:
		pw, _ := stanza.Text(child(mucX, "password"))
		if pw != r.cfg.Password {
			fail("auth", "not-authorized", "a password is required")
			return
		}
	}
	r.fresh = false
	if !mucX.ok() && created {
		// A client without the MUC element cannot configure the room
		// (GC 1.0): create it as an instant room (XEP-0045 10.1.1).
		r.locked = false
	}
	o := &occupant{nick: nick, key: key, full: st.From, bare: bare, sess: sessionOf(c, st.From),
		id: r.m.occupantID(r.jid, bare), aff: aff, extra: presenceExtra(st.Raw)}
	o.toAttr = stanza.AppendEscaped(nil, st.From)
	o.role.Store(uint32(r.defaultRole(aff)))
	// What the joiner sees first: everyone already there.
	var before [][]byte
	seesAll := r.cfg.WhoisAnyone || o.getRole() == roleModerator
	for _, x := range r.occupantsSorted() {
		if x.shown {
			before = append(before, r.presenceFor(x, o.full, seesAll, "", nil, nil))
		}
	}
	head := r.occ[key]
	if head != nil {
		// Another session of the same account under the same nick
		// (XEP-0045 7.2.? multi-session): it shares the nick's role, and
		// the others see nothing new.
		o.role.Store(uint32(head.getRole()))
		o.shown = true
		head.twins = append(head.twins, o)
	} else {
		r.occ[key] = o
	}
	r.byJID[st.From] = o
	r.addMember(o)
	r.emptySince = time.Time{}
	r.m.joins.Add(1)
	var codes []int
	if r.cfg.WhoisAnyone {
		codes = append(codes, 100)
	}
	if r.cfg.Archive && r.m.Archiver != nil {
		codes = append(codes, 170)
	}
	if created {
		codes = append(codes, 201)
	}
	if nick != st.Resource {
		codes = append(codes, 210)
	}
	bc := r.presenceBroadcast(o, "", nil, codes)
	bc.onlySelf = bc.onlySelf || head != nil
	bc.before = before
	bc.after = r.historyFor(o, child(mucX, "history"))
	bc.after = append(bc.after, r.subjectFor(o))
	r.sendLocked(h, bc, nil)
	if c.Session != nil {
		r.m.remember(c.Session, r.name)
	}
}

// update broadcasts an occupant's new presence (show, status).
func (r *room) update(h hook.Host, o *occupant, extra []byte) {
	o.extra = extra
	r.sendLocked(h, r.presenceBroadcast(o, "", nil, nil), nil)
}

// changeNick renames an occupant (XEP-0045 7.6): unavailable with 303 and
// the new nick, then available under it. Every session of the account
// under the nick changes with it, each told with its own status 110
// copies; the room sees the nick change once.
func (r *room) changeNick(c *hook.Ctx, o *occupant, nick, key string, extra []byte) {
	h := c.Host
	if r.occ[key] != nil {
		r.mu.Unlock()
		joinError(c, c.Stanza, "cancel", "conflict", "the nickname is in use")
		return
	}
	if b := r.reserved[key]; b != "" && b != o.bare {
		r.mu.Unlock()
		joinError(c, c.Stanza, "cancel", "conflict", errReserved)
		return
	}
	if head := r.occ[o.key]; head != o || len(o.twins) > 0 {
		r.changeSharedNick(h, o, head, nick, key, extra) // unlocks
		return
	}
	gone := r.presenceBroadcast(o, "unavailable", []byte(` nick='`+string(stanza.AppendEscaped(nil, nick))+`'`), []int{303})
	start := r.enqueue(gone, nil)
	delete(r.occ, o.key)
	o.nick, o.key, o.extra = nick, key, extra
	r.occ[key] = o
	small := len(r.occ) <= inlineMax
	r.mu.Unlock()
	r.run(h, start, small)
	r.mu.Lock()
	if r.gone || r.byJID[o.full] != o {
		r.mu.Unlock()
		return
	}
	r.sendLocked(h, r.presenceBroadcast(o, "", nil, nil), nil)
}

// changeSharedNick is changeNick for a nick several sessions of o's
// account share (head and its twins): the room gets the nick's 303 and
// new presence once, as head's, and each session its own with 110.
// Called with r.mu held; it unlocks.
func (r *room) changeSharedNick(h hook.Host, o, head *occupant, nick, key string, extra []byte) {
	all := sessions(head)
	var start [numParts]bool
	queue := func(bc *broadcast) {
		for i, s := range r.enqueue(bc, nil) {
			start[i] = start[i] || s
		}
	}
	nickAttr := []byte(` nick='` + string(stanza.AppendEscaped(nil, nick)) + `'`)
	room := r.presenceBroadcast(head, "unavailable", nickAttr, []int{303})
	room.selfTail, room.skip = nil, all
	queue(room)
	for _, s := range all {
		own := r.presenceBroadcast(s, "unavailable", nickAttr, []int{303})
		own.onlySelf = true
		queue(own)
	}
	delete(r.occ, head.key)
	for _, s := range all {
		s.nick, s.key = nick, key
	}
	o.extra = extra
	r.occ[key] = head
	small := len(r.byJID) <= inlineMax
	r.mu.Unlock()
	r.run(h, start, small)
	r.mu.Lock()
	if r.gone || r.occ[key] != head {
		r.mu.Unlock()
		return
	}
	start = [numParts]bool{}
	all = sessions(head)
	room = r.presenceBroadcast(head, "", nil, nil)
	room.selfTail, room.skip = nil, all
	queue(room)
	for _, s := range all {
		own := r.presenceBroadcast(s, "", nil, nil)
		own.onlySelf = true
		queue(own)
	}
	small = len(r.byJID) <= inlineMax
	r.mu.Unlock()
	r.run(h, start, small)
}

// leave takes an occupant out with its unavailable presence, carrying
// extra (its status), the status codes and item children (reason, actor)
// given. Called with r.mu held; it unlocks.
func (r *room) leave(h hook.Host, o *occupant, extra []byte, codes []int, itemChildren ...[]byte) {
	r.leaveLocked(h, o, extra, codes, itemChildren...)
}

func (r *room) leaveLocked(h hook.Host, o *occupant, extra []byte, codes []int, itemChildren ...[]byte) {
	o.extra = extra
	o.role.Store(uint32(roleNone))
	bc := r.presenceBroadcast(o, "unavailable", nil, codes, itemChildren...)
	if r.removeOccupant(o) {
		bc.onlySelf = true // the nick stays, in the account's other sessions
	}
	start := r.enqueue(bc, o)
	small := len(r.byJID) <= inlineMax
	empty := len(r.byJID) == 0
	if empty {
		r.m.emptied(r)
	}
	gone := r.gone
	r.mu.Unlock()
	r.run(h, start, small)
	switch {
	case gone:
		r.m.drop(h, r)
	case empty:
		r.m.evictNow(h, r)
	}
}

// removeOccupant forgets o, and reports whether its nick stays in the
// room through another session of its account. Called with r.mu held.
func (r *room) removeOccupant(o *occupant) (stays bool) {
	delete(r.byJID, o.full)
	r.removeMember(o)
	head := r.occ[o.key]
	switch {
	case head == o && len(o.twins) > 0:
		next := o.twins[0]
		next.twins = o.twins[1:]
		o.twins = nil
		r.occ[o.key] = next
		return true
	case head == o:
		delete(r.occ, o.key)
		return false
	case head != nil:
		head.twins = slices.DeleteFunc(head.twins, func(x *occupant) bool { return x == o })
		return true
	}
	return false
}

// sessions returns the records of a nick: its first session and its
// twins. Called with r.mu held.
func sessions(head *occupant) []*occupant {
	if head == nil {
		return nil
	}
	return append([]*occupant{head}, head.twins...)
}

// allSorted returns every session in the room, by nick. Called with r.mu
// held.
func (r *room) allSorted() []*occupant {
	var out []*occupant
	for _, o := range r.occupantsSorted() {
		out = append(out, sessions(o)...)
	}
	return out
}

// maxTwins caps the sessions one account keeps under one nick.
const maxTwins = 16

// shutdown removes every occupant with status 332, each told by its own
// unavailable presence, and marks the room gone (Module.Drain).
func (r *room) shutdown() {
	type out struct {
		o *occupant
		b []byte
	}
	r.mu.Lock()
	if r.gone {
		r.mu.Unlock()
		return
	}
	var outs []out
	for _, o := range r.allSorted() {
		o.extra = nil
		o.role.Store(uint32(roleNone))
		b := append(r.presenceHead(o), o.toAttr...)
		b = append(b, r.presenceTail(o, "unavailable", true, nil, []int{110, 332}, true, nil)...)
		outs = append(outs, out{o, b})
		r.removeOccupant(o)
	}
	r.gone = true
	r.mu.Unlock()
	for _, x := range outs {
		x.o.sess.Deliver(x.b)
	}
}

// leaveSession takes a session out of the room, if it is in it.
func (r *room) leaveSession(h hook.Host, sess hook.Session) {
	r.mu.Lock()
	o := r.byJID[sess.Full()]
	if r.gone || o == nil || o.sess != sess {
		r.mu.Unlock()
		return
	}
	r.leave(h, o, nil, nil)
}

// occupantsSorted returns the occupants in nick order, for stable output.
// Called with r.mu held.
func (r *room) occupantsSorted() []*occupant {
	out := make([]*occupant, 0, len(r.occ))
	for _, o := range r.occ {
		out = append(out, o)
	}
	slices.SortFunc(out, func(a, b *occupant) int {
		switch {
		case a.key < b.key:
			return -1
		case a.key > b.key:
			return 1
		}
		return 0
	})
	return out
}

// appendItem appends o's muc#user item. Called with r.mu held.
func appendItem(b []byte, o *occupant, withJID bool, itemAttrs []byte, itemChildren [][]byte) []byte {
	b = append(b, `<item affiliation='`...)
	b = append(b, o.aff.String()...)
	if withJID {
		b = append(b, `' jid='`...)
		b = append(b, o.toAttr...)
	}
	b = append(b, `' role='`...)
	b = append(b, o.getRole().String()...)
	b = append(b, '\'')
	b = append(b, itemAttrs...)
	if len(itemChildren) == 0 {
		return append(b, `/>`...)
	}
	b = append(b, '>')
	for _, ch := range itemChildren {
		b = append(b, ch...)
	}
	return append(b, `</item>`...)
}

// presenceTail is a presence of o after the to value.
func (r *room) presenceTail(o *occupant, typ string, withJID bool, itemAttrs []byte, codes []int, self bool, itemChildren [][]byte) []byte {
	b := make([]byte, 0, 160+len(o.extra))
	b = append(b, '\'')
	if typ != "" {
		b = append(b, ` type='`...)
		b = append(b, typ...)
		b = append(b, '\'')
	}
	b = append(b, '>')
	b = append(b, o.extra...)
	b = append(b, `<x xmlns='`+NSUser+`'>`...)
	b = appendItem(b, o, withJID, itemAttrs, itemChildren)
	for _, code := range codes {
		if code == 110 && !self {
			continue
		}
		b = append(b, `<status code='`...)
		b = strconv.AppendInt(b, int64(code), 10)
		b = append(b, `'/>`...)
	}
	b = append(b, `</x><occupant-id xmlns='`+NSOccupantID+`' id='`...)
	b = append(b, o.id...)
	return append(b, `'/></presence>`...)
}

// presenceFor is o's presence as a complete stanza to one recipient.
func (r *room) presenceFor(o *occupant, to string, withJID bool, typ string, itemAttrs []byte, codes []int) []byte {
	b := r.presenceHead(o)
	b = stanza.AppendEscaped(b, to)
	return append(b, r.presenceTail(o, typ, withJID, itemAttrs, codes, false, nil)...)
}

func (r *room) presenceHead(o *occupant) []byte {
	b := make([]byte, 0, 32+len(r.jid)+len(o.nick))
	b = append(b, `<presence from='`...)
	b = stanza.AppendEscaped(b, r.jid+"/"+o.nick)
	return append(b, `' to='`...)
}

// presenceBroadcast is o's presence for the whole room: the self variant
// carries 110 and its own JID, the others the codes that concern them.
// Called with r.mu held.
func (r *room) presenceBroadcast(o *occupant, typ string, itemAttrs []byte, codes []int, itemChildren ...[]byte) *broadcast {
	// muc#roomconfig_presencebroadcast: the presence of an occupant whose
	// role is not broadcast goes to itself only, unless the others have
	// seen it (a role change, a departure).
	visible := typ == "" && r.broadcasts(o.getRole())
	onlySelf := !visible && !o.shown
	if typ == "" {
		o.shown = visible
	}
	selfCodes := append([]int{110}, codes...)
	slices.Sort(selfCodes)
	others := slices.DeleteFunc(slices.Clone(codes), func(c int) bool { return c == 100 || c == 170 || c == 201 || c == 210 })
	bc := &broadcast{head: r.presenceHead(o), self: o, onlySelf: onlySelf}
	bc.plain = r.presenceTail(o, typ, r.cfg.WhoisAnyone, itemAttrs, others, false, itemChildren)
	if !r.cfg.WhoisAnyone {
		bc.withJID = r.presenceTail(o, typ, true, itemAttrs, others, false, itemChildren)
	}
	bc.selfTail = r.presenceTail(o, typ, true, itemAttrs, selfCodes, true, itemChildren)
	return bc
}

// presenceExtra returns the children of a presence a room repeats: all
// but the MUC elements and any occupant id, capped at maxExtra bytes.
func presenceExtra(raw []byte) []byte {
	var b []byte
	stanza.Children(raw, func(ch []byte) bool {
		t, err := stanza.ParseStartTag(ch)
		if err != nil {
			return true
		}
		ns, _ := t.AttrString("xmlns")
		switch ns {
		case NS, NSUser, NSOccupantID:
			return true
		}
		if len(b)+len(ch) > maxExtra {
			return false
		}
		b = append(b, ch...)
		return true
	})
	return b
}

// maxNick caps a nickname's bytes.
const maxNick = 256

// errNick is the text of a refused nickname.
const errNick = "nickname refused by the PRECIS nickname profile (RFC 8266)"

// validNick reports whether a nickname passes the PRECIS nickname profile.
func validNick(s string) bool {
	n, err := precis.Nickname.String(s)
	return err == nil && len(n) <= maxNick
}

// maxExtra caps the presence children kept per occupant.
const maxExtra = 2048
