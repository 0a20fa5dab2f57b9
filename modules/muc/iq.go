package muc

import (
	"context"
	"maps"
	"sort"
	"strconv"
	"time"

	"github.com/krill-xmpp/krill/hook"
	"github.com/krill-xmpp/krill/stanza"
)

// iq handles an iq to the room or an occupant. Called with r.mu held; it
// unlocks.
func (r *room) iq(c *hook.Ctx, st *hook.Stanza) {
	if st.Type != "get" && st.Type != "set" {
		if st.Resource != "" && (st.Type == "result" || st.Type == "error") {
			r.iqAnswer(st) // unlocks
			return
		}
		r.mu.Unlock()
		return
	}
	if st.Resource != "" {
		r.occupantIQ(c, st) // unlocks
		return
	}
	switch {
	case st.Type == "get" && st.NS == NSDiscoInfo && st.Name == "query" && attr(elem(st.Payload), "node") == nodeRoomUser:
		b := r.roomUserItem(bareOf(st.From))
		r.mu.Unlock()
		c.ReplyResult(b)
	case st.Type == "get" && st.NS == NSDiscoInfo && st.Name == "query":
		b := r.discoInfo()
		r.mu.Unlock()
		c.ReplyResult(b)
	case st.Type == "get" && st.NS == NSDiscoItems && st.Name == "query":
		b := r.discoItems(st.From)
		r.mu.Unlock()
		c.ReplyResult(b)
	case st.Type == "get" && st.NS == NSPing && st.Name == "ping":
		r.mu.Unlock()
		c.ReplyResult(nil)
	case st.NS == NSAdmin && st.Name == "query":
		r.admin(c, st) // unlocks
	case st.NS == NSOwner && st.Name == "query":
		r.owner(c, st) // unlocks
	case st.NS == NSMAM:
		r.archiveQuery(c, st) // unlocks
	case st.NS == NSRegister && st.Name == "query":
		r.register(c, st) // unlocks
	default:
		r.mu.Unlock()
		c.ReplyError("cancel", "service-unavailable", "")
	}
}

// occupantIQ handles an iq to room/nick: a self-ping (XEP-0410) is
// answered by the service; another iq from an occupant is relayed to the
// occupant addressed (XEP-0045 7.5: a vCard request, say) under an id of
// the room's, so that the answer comes back through the room and the
// asker's real JID stays hidden. Called with r.mu held; it unlocks.
func (r *room) occupantIQ(c *hook.Ctx, st *hook.Stanza) {
	o := r.byJID[st.From]
	key, err := nickKey(st.Resource)
	to := r.occ[key]
	self := o != nil && err == nil && o.key == key
	switch {
	case st.NS == NSPing && st.Name == "ping" && st.Type == "get" && self:
		r.mu.Unlock()
		c.ReplyResult(nil)
		return
	case o == nil:
		r.mu.Unlock()
		c.ReplyError("modify", "not-acceptable", "not an occupant of the room")
		return
	case to == nil || err != nil:
		r.mu.Unlock()
		c.ReplyError("cancel", "item-not-found", "no such occupant")
		return
	}
	now := time.Now()
	for id, p := range r.pending {
		if now.Sub(p.at) > relayTimeout {
			delete(r.pending, id)
		}
	}
	if len(r.pending) >= maxRelayed {
		r.mu.Unlock()
		c.ReplyError("wait", "resource-constraint", "too many iqs in flight in this room")
		return
	}
	if r.pending == nil {
		r.pending = make(map[string]relayed)
	}
	r.relaySeq++
	id := "muc" + strconv.FormatUint(r.relaySeq, 36)
	r.pending[id] = relayed{asker: o, id: st.ID, target: to, at: now}
	b := []byte(`<iq type='`)
	b = append(b, st.Type...)
	b = append(b, `' id='`...)
	b = append(b, id...)
	b = append(b, `' from='`...)
	b = stanza.AppendEscaped(b, r.jid+"/"+o.nick)
	b = append(b, `' to='`...)
	b = append(b, to.toAttr...)
	b = append(b, `'>`...)
	b = append(b, stanza.Inner(st.Raw)...)
	b = append(b, `</iq>`...)
	r.mu.Unlock()
	to.sess.Deliver(b)
}

// Relayed iqs: how many may be in flight per room, and how long an answer
// is waited for.
const (
	maxRelayed   = 256
	relayTimeout = time.Minute
)

// relayed is an iq the room passed to an occupant, awaiting its answer.
type relayed struct {
	asker, target *occupant
	id            string // the asker's id
	at            time.Time
}

// iqAnswer passes an occupant's answer to a relayed iq back to the asker,
// from the answerer's room JID. Called with r.mu held; it unlocks.
func (r *room) iqAnswer(st *hook.Stanza) {
	p, ok := r.pending[st.ID]
	if !ok || p.target.full != st.From || r.byJID[p.asker.full] != p.asker {
		r.mu.Unlock()
		return
	}
	delete(r.pending, st.ID)
	b := []byte(`<iq type='`)
	b = append(b, st.Type...)
	b = append(b, `' id='`...)
	b = stanza.AppendEscaped(b, p.id)
	b = append(b, `' from='`...)
	b = stanza.AppendEscaped(b, r.jid+"/"+p.target.nick)
	b = append(b, `' to='`...)
	b = append(b, p.asker.toAttr...)
	if inner := stanza.Inner(st.Raw); len(inner) > 0 {
		b = append(b, `'>`...)
		b = append(b, inner...)
		b = append(b, `</iq>`...)
	} else {
		b = append(b, `'/>`...)
	}
	r.mu.Unlock()
	p.asker.sess.Deliver(b)
}

// features returns the room's disco features (XEP-0045 15.2). Called with
// r.mu held.
func (r *room) features() []string {
	f := []string{NS, NSOccupantID, NSSelfPing, NSDiscoInfo, NSDiscoItems}
	pick := func(on bool, yes, no string) {
		if on {
			f = append(f, yes)
		} else {
			f = append(f, no)
		}
	}
	pick(r.cfg.Persistent, "muc_persistent", "muc_temporary")
	pick(r.cfg.Public, "muc_public", "muc_hidden")
	pick(r.cfg.MembersOnly, "muc_membersonly", "muc_open")
	pick(r.cfg.Moderated, "muc_moderated", "muc_unmoderated")
	pick(r.cfg.PasswordOn, "muc_passwordprotected", "muc_unsecured")
	pick(r.cfg.WhoisAnyone, "muc_nonanonymous", "muc_semianonymous")
	if r.archives() {
		f = append(f, NSMAM)
	}
	sort.Strings(f)
	return f
}

// discoInfo is the room's disco#info with its muc#roominfo form. Called
// with r.mu held.
func (r *room) discoInfo() []byte {
	b := []byte(`<query xmlns='` + NSDiscoInfo + `'><identity category='conference' type='text' name='`)
	name := r.cfg.Name
	if name == "" {
		name = r.name
	}
	b = stanza.AppendEscaped(b, name)
	b = append(b, `'/>`...)
	for _, f := range r.features() {
		b = append(b, `<feature var='`...)
		b = append(b, f...)
		b = append(b, `'/>`...)
	}
	b = append(b, `<x xmlns='`+NSData+`' type='result'><field var='FORM_TYPE' type='hidden'><value>`+NS+`#roominfo</value></field>`+
		`<field var='muc#roominfo_description' label='Description'><value>`...)
	b = stanza.AppendEscaped(b, r.cfg.Desc)
	b = append(b, `</value></field><field var='muc#roominfo_occupants' label='Number of occupants'><value>`...)
	b = strconv.AppendInt(b, int64(len(r.occ)), 10)
	b = append(b, `</value></field></x></query>`...)
	return b
}

// discoItems lists the occupants (XEP-0045 6.5) to occupants, and to
// anyone for a public room. Called with r.mu held.
func (r *room) discoItems(from string) []byte {
	b := []byte(`<query xmlns='` + NSDiscoItems + `'>`)
	if r.cfg.Public || r.byJID[from] != nil {
		for _, o := range r.occupantsSorted() {
			b = append(b, `<item jid='`...)
			b = stanza.AppendEscaped(b, r.jid+"/"+o.nick)
			b = append(b, `'/>`...)
		}
	}
	return append(b, `</query>`...)
}

// adminItem is one item of a muc#admin request.
type adminItem struct {
	nick, jid, reason string
	role              role
	aff               affiliation
	hasRole, hasAff   bool
}

// admin handles muc#admin (XEP-0045 8 and 9): role and affiliation
// changes, and their lists. Called with r.mu held; it unlocks.
func (r *room) admin(c *hook.Ctx, st *hook.Stanza) {
	h := c.Host
	actor := r.byJID[st.From]
	actorAff := r.affOf(bareOf(st.From))
	actorRole := roleNone
	if actor != nil {
		actorRole = actor.getRole()
	}
	fail := func(typ, cond, text string) {
		r.mu.Unlock()
		c.ReplyError(typ, cond, text)
	}
	var items []adminItem
	bad := false
	stanza.Children(st.Payload, func(ch []byte) bool {
		t, err := stanza.ParseStartTag(ch)
		if err != nil || string(t.Local()) != "item" {
			return true
		}
		it := adminItem{nick: attr(ch, "nick"), jid: attr(ch, "jid"), reason: text(child(ch, "reason"))}
		if v := attr(ch, "role"); v != "" {
			it.role, it.hasRole = parseRole(v)
			bad = bad || !it.hasRole
		}
		if v := attr(ch, "affiliation"); v != "" {
			it.aff, it.hasAff = parseAffiliation(v)
			bad = bad || !it.hasAff
		}
		items = append(items, it)
		return true
	})
	if bad || len(items) == 0 {
		fail("modify", "bad-request", "items need a known role or affiliation")
		return
	}
	if st.Type == "get" {
		r.adminList(c, items[0], actorAff, actorRole) // unlocks
		return
	}
	// Check every item first, in order, on a copy of the affiliations: a
	// request is applied whole or not at all.
	sim := maps.Clone(r.affs)
	for i := range items {
		it := &items[i]
		switch {
		case it.hasAff:
			if it.jid == "" && it.nick != "" {
				key, err := nickKey(it.nick)
				if t := r.occ[key]; err == nil && t != nil {
					it.jid = t.bare
				}
			}
			it.jid = bareOf(it.jid)
			if it.jid == "" {
				fail("modify", "bad-request", "an affiliation change needs a jid")
				return
			}
			from := r.affOf(it.jid)
			if a, ok := sim[it.jid]; ok {
				from = a
			}
			if cond, text := mayAffiliate(sim, actorAff, from, it.aff); cond != "" {
				fail("cancel", cond, text)
				return
			}
			sim[it.jid] = it.aff
		case it.hasRole:
			key, err := nickKey(it.nick)
			t := r.occ[key]
			if err != nil || t == nil {
				fail("cancel", "item-not-found", "no occupant with that nickname")
				return
			}
			if !mayRole(actorAff, actorRole, t, it.role) {
				fail("cancel", "not-allowed", "not allowed to change that occupant's role")
				return
			}
		default:
			fail("modify", "bad-request", "items need a role or an affiliation")
			return
		}
	}
	actorNick := ""
	if actor != nil {
		actorNick = actor.nick
	}
	for _, it := range items {
		if it.hasAff {
			r.setAffiliation(h, it.jid, it.aff, it.reason, actorNick) // unlocks
		} else {
			key, _ := nickKey(it.nick)
			for i, t := range sessions(r.occ[key]) {
				if i > 0 {
					r.mu.Lock()
					if r.gone || r.byJID[t.full] != t {
						r.mu.Unlock()
						continue
					}
				}
				r.setRole(h, t, it.role, it.reason, actorNick) // unlocks
			}
		}
		r.mu.Lock()
		if r.gone {
			break
		}
	}
	r.mu.Unlock()
	c.ReplyResult(nil)
}

// mayRole applies XEP-0045's role privileges (5.1.1, 8.2-8.5, 9.6-9.7): a
// moderator kicks and grants or revokes voice of those below admin; only
// admins and owners grant or revoke moderator; nobody changes the role of
// an admin or an owner.
func mayRole(actorAff affiliation, actorRole role, t *occupant, to role) bool {
	switch {
	case actorRole != roleModerator && actorAff < affAdmin:
		return false
	case t.aff >= affAdmin:
		return false // admins and owners are moderators while present
	case to == roleModerator || t.getRole() == roleModerator:
		return actorAff >= affAdmin
	}
	return true
}

// mayAffiliate applies XEP-0045's affiliation privileges (5.2.1, 9, 10):
// an admin changes none, member and outcast of those below admin; an owner
// changes everything, but the last owner stays. It returns the error
// condition and text, or "".
func mayAffiliate(affs map[string]affiliation, actor, from, to affiliation) (cond, text string) {
	switch {
	case actor < affAdmin:
		return "not-allowed", "only admins and owners change affiliations"
	case actor == affAdmin && (from >= affAdmin || to >= affAdmin):
		return "not-allowed", "only owners change admins and owners"
	case from == affOwner && to != affOwner:
		owners := 0
		for _, a := range affs {
			if a == affOwner {
				owners++
			}
		}
		if owners <= 1 {
			return "conflict", "the room needs an owner"
		}
	}
	return "", ""
}

// reasonActor returns the item children of a kick or ban: actor and reason.
func reasonActor(actorNick, reason string) [][]byte {
	var out [][]byte
	if actorNick != "" {
		out = append(out, append(stanza.AppendEscaped([]byte(`<actor nick='`), actorNick), `'/>`...))
	}
	if reason != "" {
		out = append(out, append(stanza.AppendEscaped([]byte(`<reason>`), reason), `</reason>`...))
	}
	return out
}

// setRole changes an occupant's role; none kicks it (307). Called with
// r.mu held; it unlocks.
func (r *room) setRole(h hook.Host, t *occupant, to role, reason, actorNick string) {
	if to == roleNone {
		r.leaveLocked(h, t, nil, []int{307}, reasonActor(actorNick, reason)...)
		return
	}
	t.role.Store(uint32(to))
	r.sendLocked(h, r.presenceBroadcast(t, "", nil, nil, reasonActor("", reason)...), nil)
}

// setAffiliation changes a bare JID's affiliation and what it means for
// its occupants: a ban removes them (301), losing membership of a
// members-only room removes them (321), the rest changes their role.
// Called with r.mu held; it unlocks.
func (r *room) setAffiliation(h hook.Host, bare string, to affiliation, reason, actorNick string) {
	r.saveAffiliation(h, bare, to, reason)
	r.applyAffiliation(h, bare, to, reason, actorNick)
}

// applyAffiliation is setAffiliation without the storage write. Called
// with r.mu held; it unlocks.
func (r *room) applyAffiliation(h hook.Host, bare string, to affiliation, reason, actorNick string) {
	if to == affNone {
		delete(r.affs, bare)
	} else {
		r.affs[bare] = to
	}
	if to <= affNone {
		r.unreserve(bare) // storage drops it with the affiliation
	}
	var hit []*occupant
	for _, o := range r.allSorted() {
		if o.bare == bare {
			hit = append(hit, o)
		}
	}
	if len(hit) == 0 {
		r.mu.Unlock()
		return
	}
	for i, o := range hit {
		if i > 0 {
			r.mu.Lock()
			if r.gone || r.byJID[o.full] != o {
				r.mu.Unlock()
				continue
			}
		}
		o.aff = to
		switch {
		case to == affOutcast:
			r.leaveLocked(h, o, nil, []int{301}, reasonActor(actorNick, reason)...)
		case to == affNone && r.cfg.MembersOnly:
			r.leaveLocked(h, o, nil, []int{321}, reasonActor(actorNick, reason)...)
		default:
			o.role.Store(uint32(r.defaultRole(to)))
			r.sendLocked(h, r.presenceBroadcast(o, "", nil, nil, reasonActor("", reason)...), nil)
		}
	}
}

// adminList answers a muc#admin get: the JIDs with an affiliation (admins
// and owners ask) or the occupants with a role (moderators ask). Called
// with r.mu held; it unlocks.
func (r *room) adminList(c *hook.Ctx, it adminItem, actorAff affiliation, actorRole role) {
	b := []byte(`<query xmlns='` + NSAdmin + `'>`)
	switch {
	case it.hasAff:
		if actorAff < affAdmin {
			r.mu.Unlock()
			c.ReplyError("auth", "forbidden", "only admins and owners see affiliation lists")
			return
		}
		var jids []string
		for j, a := range r.affs {
			if a == it.aff {
				jids = append(jids, j)
			}
		}
		sort.Strings(jids)
		for _, j := range jids {
			b = append(b, `<item affiliation='`...)
			b = append(b, it.aff.String()...)
			b = append(b, `' jid='`...)
			b = stanza.AppendEscaped(b, j)
			if n := r.nicks[j]; n != "" {
				b = append(b, `' nick='`...)
				b = stanza.AppendEscaped(b, n)
			}
			b = append(b, `'/>`...)
		}
	case it.hasRole:
		if actorRole != roleModerator {
			r.mu.Unlock()
			c.ReplyError("auth", "forbidden", "only moderators see role lists")
			return
		}
		for _, o := range r.occupantsSorted() {
			if o.getRole() != it.role {
				continue
			}
			b = append(b, `<item affiliation='`...)
			b = append(b, o.aff.String()...)
			b = append(b, `' jid='`...)
			b = append(b, o.toAttr...)
			b = append(b, `' nick='`...)
			b = stanza.AppendEscaped(b, o.nick)
			b = append(b, `' role='`...)
			b = append(b, o.getRole().String()...)
			b = append(b, `'/>`...)
		}
	}
	r.mu.Unlock()
	c.ReplyResult(append(b, `</query>`...))
}

// owner handles muc#owner (XEP-0045 10): the configuration form, its
// submission or cancellation, and destruction. Called with r.mu held; it
// unlocks.
func (r *room) owner(c *hook.Ctx, st *hook.Stanza) {
	if r.affOf(bareOf(st.From)) != affOwner {
		r.mu.Unlock()
		c.ReplyError("auth", "forbidden", "only owners configure the room")
		return
	}
	if st.Type == "get" {
		b := r.configForm(c.Host)
		r.mu.Unlock()
		c.ReplyResult(b)
		return
	}
	if d := child(elem(st.Payload), "destroy"); d.ok() {
		r.destroy(c.Host, attr(d, "jid"), text(child(d, "reason")), text(child(d, "password"))) // unlocks
		c.ReplyResult(nil)
		return
	}
	form := childNS(st.Payload, "x", NSData)
	switch attr(form, "type") {
	case "submit":
		if err := r.configure(c, formValues(form)); err != "" {
			r.mu.Unlock()
			c.ReplyError("modify", "not-acceptable", err)
			return
		}
		// configure unlocked.
		c.ReplyResult(nil)
	case "cancel":
		if r.locked {
			r.destroy(c.Host, "", "", "") // unlocks
		} else {
			r.mu.Unlock()
		}
		c.ReplyResult(nil)
	default:
		r.mu.Unlock()
		c.ReplyError("modify", "bad-request", "a muc#roomconfig form of type submit or cancel, or destroy, was expected")
	}
}

// fieldArchiveDays is the configuration field of a room's own archive
// retention. XEP-0045 registers none, so it is named in Clark notation
// under a namespace of ours, as XEP-0068 asks of unregistered fields
// (Prosody does the same for its own).
const fieldArchiveDays = "{https://krill-xmpp.github.io/protocol/muc}archive_days"

// maxArchiveDays bounds the retention an owner may set: a hundred years.
const maxArchiveDays = 36500

// configForm is the room's muc#roomconfig form. Called with r.mu held.
func (r *room) configForm(h hook.Host) []byte {
	b := []byte(`<query xmlns='` + NSOwner + `'><x xmlns='` + NSData + `' type='form'><title>Room configuration</title>` +
		`<field var='FORM_TYPE' type='hidden'><value>` + NSRoomConfig + `</value></field>`)
	field := func(v, typ, label, val string, opts ...string) {
		b = append(b, `<field var='muc#roomconfig_`...)
		b = append(b, v...)
		b = append(b, `' type='`...)
		b = append(b, typ...)
		b = append(b, `' label='`...)
		b = append(b, label...)
		b = append(b, `'><value>`...)
		b = stanza.AppendEscaped(b, val)
		b = append(b, `</value>`...)
		for _, o := range opts {
			b = append(b, `<option><value>`...)
			b = append(b, o...)
			b = append(b, `</value></option>`...)
		}
		b = append(b, `</field>`...)
	}
	boolean := func(on bool) string {
		if on {
			return "1"
		}
		return "0"
	}
	field("roomname", "text-single", "Name", r.cfg.Name)
	field("roomdesc", "text-single", "Description", r.cfg.Desc)
	field("persistentroom", "boolean", "Persistent", boolean(r.cfg.Persistent))
	field("publicroom", "boolean", "Listed in the directory", boolean(r.cfg.Public))
	field("membersonly", "boolean", "Members only", boolean(r.cfg.MembersOnly))
	field("moderatedroom", "boolean", "Moderated", boolean(r.cfg.Moderated))
	field("passwordprotectedroom", "boolean", "Password protected", boolean(r.cfg.PasswordOn))
	field("roomsecret", "text-private", "Password", r.cfg.Password)
	field("maxusers", "list-single", "Maximum occupants", strconv.Itoa(r.maxUsers(h)), "10", "20", "50", "100", "500", "1000")
	whois := "moderators"
	if r.cfg.WhoisAnyone {
		whois = "anyone"
	}
	field("whois", "list-single", "Who may see real JIDs", whois, "moderators", "anyone")
	field("historylength", "text-single", "Messages of history", strconv.Itoa(r.cfg.HistoryLength))
	field("enablearchiving", "boolean", "Archive messages", boolean(r.cfg.Archive))
	b = append(b, `<field var='`+fieldArchiveDays+`' type='list-single' label='Days the archive keeps a message (0: the service&apos;s policy)'><value>`...)
	b = strconv.AppendInt(b, int64(r.cfg.ArchiveDays), 10)
	b = append(b, `</value><option><value>0</value></option><option><value>1</value></option><option><value>7</value></option>`+
		`<option><value>30</value></option><option><value>90</value></option><option><value>365</value></option></field>`...)
	field("allowpm", "list-single", "Who may send private messages", r.cfg.AllowPM, "anyone", "participants", "moderators", "none")
	field("allowinvites", "boolean", "Occupants may invite", boolean(r.cfg.AllowInvites))
	field("changesubject", "boolean", "Occupants may change the subject", boolean(r.cfg.ChangeSubject))
	b = append(b, `<field var='muc#roomconfig_presencebroadcast' type='list-multi' label='Roles whose presence is broadcast'>`...)
	for _, x := range []role{roleModerator, roleParticipant, roleVisitor} {
		if r.broadcasts(x) {
			b = append(b, `<value>`...)
			b = append(b, x.String()...)
			b = append(b, `</value>`...)
		}
	}
	b = append(b, `<option><value>moderator</value></option><option><value>participant</value></option><option><value>visitor</value></option></field>`...)
	return append(b, `</x></query>`...)
}

// configure applies a submitted configuration (an empty one makes an
// instant room, XEP-0045 10.1.2). It returns a reason to refuse, with r.mu
// still held, or "" with r.mu unlocked.
func (r *room) configure(c *hook.Ctx, v map[string][]string) string {
	h := c.Host
	if ft := first(v["FORM_TYPE"]); ft != "" && ft != NSRoomConfig {
		return "unknown FORM_TYPE"
	}
	cfg := r.cfg
	set := func(key string, fn func(string) bool) bool {
		vals, ok := v["muc#roomconfig_"+key]
		if !ok {
			return true
		}
		return fn(first(vals))
	}
	boolean := func(dst *bool) func(string) bool {
		return func(s string) bool {
			switch s {
			case "1", "true":
				*dst = true
			case "0", "false", "":
				*dst = false
			default:
				return false
			}
			return true
		}
	}
	str := func(dst *string, limit int) func(string) bool {
		return func(s string) bool { *dst = s; return len(s) <= limit }
	}
	ok := set("roomname", str(&cfg.Name, 256)) &&
		set("roomdesc", str(&cfg.Desc, 1024)) &&
		set("persistentroom", boolean(&cfg.Persistent)) &&
		set("publicroom", boolean(&cfg.Public)) &&
		set("membersonly", boolean(&cfg.MembersOnly)) &&
		set("moderatedroom", boolean(&cfg.Moderated)) &&
		set("passwordprotectedroom", boolean(&cfg.PasswordOn)) &&
		set("roomsecret", str(&cfg.Password, 256)) &&
		set("enablearchiving", boolean(&cfg.Archive)) &&
		set("allowinvites", boolean(&cfg.AllowInvites)) &&
		set("changesubject", boolean(&cfg.ChangeSubject)) &&
		set("maxusers", func(s string) bool {
			n, err := strconv.Atoi(s)
			if s == "none" || s == "" {
				n, err = 0, nil
			}
			cfg.MaxUsers = min(max(n, 0), h.Config().MUC.MaxOccupants)
			return err == nil
		}) &&
		set("historylength", func(s string) bool {
			n, err := strconv.Atoi(s)
			cfg.HistoryLength = min(max(n, 0), h.Config().MUC.MaxHistory)
			return err == nil
		}) &&
		set("whois", func(s string) bool {
			cfg.WhoisAnyone = s == "anyone"
			return s == "anyone" || s == "moderators"
		}) &&
		set("allowpm", func(s string) bool {
			cfg.AllowPM = s
			return s == "anyone" || s == "participants" || s == "moderators" || s == "none"
		})
	if vals, present := v[fieldArchiveDays]; present && ok {
		n, err := strconv.Atoi(first(vals))
		ok = err == nil && n >= 0 && n <= maxArchiveDays
		cfg.ArchiveDays = n
	}
	if vals, present := v["muc#roomconfig_presencebroadcast"]; present && ok {
		cfg.Hidden = 1<<roleModerator | 1<<roleParticipant | 1<<roleVisitor
		for _, x := range vals {
			ro, known := parseRole(x)
			if !known || ro == roleNone {
				ok = false
				break
			}
			cfg.Hidden &^= 1 << ro
		}
	}
	if !ok {
		return "a field has a value the room does not take"
	}
	if cfg.PasswordOn && cfg.Password == "" {
		return "a password-protected room needs a password"
	}
	if cfg.Persistent && r.m.Store == nil {
		return "rooms cannot be persistent on this service"
	}
	was, wasLocked := r.cfg, r.locked
	r.cfg = cfg
	r.locked = false
	switch {
	case cfg.Persistent && !was.Persistent:
		r.saveAll(h)
		defer r.m.untemp(r)
	case !cfg.Persistent && was.Persistent:
		name := r.name
		r.persist(h, func(ctx context.Context, s Store) error { return s.DeleteMUCRoom(ctx, name) })
	case cfg.Persistent:
		r.saveConfig(h)
	}
	if len(r.history) > cfg.HistoryLength {
		r.history = append([]histEntry(nil), r.history[len(r.history)-cfg.HistoryLength:]...)
		r.histBytes = 0
		for _, e := range r.history {
			r.histBytes += len(e.head) + len(e.tail)
		}
	}
	// Turning members-only on removes those who are not members (322).
	if cfg.MembersOnly && !was.MembersOnly {
		for _, o := range r.allSorted() {
			if o.aff >= affMember {
				continue
			}
			r.leaveLocked(h, o, nil, []int{322}) // unlocks
			r.mu.Lock()
			if r.gone {
				break
			}
		}
	}
	if wasLocked || r.gone || len(r.byJID) == 0 {
		r.mu.Unlock()
		return ""
	}
	// Tell the occupants the configuration changed (XEP-0045 10.2.1):
	// 104, and what concerns their privacy, logging (170, 171) and who
	// sees real JIDs (172, 173). Not for a reserved room's first
	// configuration: nobody else is in it yet.
	codes := []int{104}
	if cfg.Archive != was.Archive && r.m.Archiver != nil {
		codes = append(codes, map[bool]int{true: 170, false: 171}[cfg.Archive])
	}
	if cfg.WhoisAnyone != was.WhoisAnyone {
		codes = append(codes, map[bool]int{true: 172, false: 173}[cfg.WhoisAnyone])
	}
	head := stanza.AppendEscaped([]byte(`<message from='`), r.jid)
	head = append(head, `' to='`...)
	tail := []byte(`' type='groupchat'><x xmlns='` + NSUser + `'>`)
	for _, code := range codes {
		tail = append(tail, `<status code='`...)
		tail = strconv.AppendInt(tail, int64(code), 10)
		tail = append(tail, `'/>`...)
	}
	tail = append(tail, `</x></message>`...)
	r.sendLocked(h, &broadcast{head: head, plain: tail}, nil)
	return ""
}

// destroy ends the room (XEP-0045 10.9): each occupant gets its own
// unavailable presence with the destroy element (the alternate venue and
// reason), and a persistent room leaves storage. Called with r.mu held; it
// unlocks.
func (r *room) destroy(h hook.Host, alt, reason, password string) {
	d := []byte(`<destroy`)
	if alt != "" {
		d = append(d, ` jid='`...)
		d = stanza.AppendEscaped(d, alt)
		d = append(d, '\'')
	}
	d = append(d, '>')
	if reason != "" {
		d = append(d, `<reason>`...)
		d = stanza.AppendEscaped(d, reason)
		d = append(d, `</reason>`...)
	}
	if password != "" {
		d = append(d, `<password>`...)
		d = stanza.AppendEscaped(d, password)
		d = append(d, `</password>`...)
	}
	d = append(d, `</destroy>`...)
	type out struct {
		o *occupant
		b []byte
	}
	var outs []out
	for _, o := range r.allSorted() {
		b := r.presenceHead(o)
		b = append(b, o.toAttr...)
		b = append(b, `' type='unavailable'><x xmlns='`+NSUser+`'><item affiliation='none' role='none'/><status code='110'/>`...)
		b = append(b, d...)
		b = append(b, `</x></presence>`...)
		outs = append(outs, out{o, b})
		r.removeOccupant(o)
	}
	if r.cfg.Persistent {
		name := r.name
		r.persist(h, func(ctx context.Context, s Store) error { return s.DeleteMUCRoom(ctx, name) })
	}
	r.gone = true
	r.mu.Unlock()
	r.m.drop(h, r)
	for _, x := range outs {
		x.o.sess.Deliver(x.b)
	}
}

// archiveQuery hands an XEP-0313 query to the archive seam, when one is
// wired and the room archives. Called with r.mu held; it unlocks.
func (r *room) archiveQuery(c *hook.Ctx, st *hook.Stanza) {
	q, _ := r.m.Archiver.(ArchiveQuerier)
	may := r.byJID[st.From] != nil || (r.cfg.Public && !r.cfg.MembersOnly)
	archiving := r.cfg.Archive
	r.mu.Unlock()
	switch {
	case q == nil || !archiving:
		c.ReplyError("cancel", "service-unavailable", "this room keeps no archive")
	case !may:
		c.ReplyError("auth", "forbidden", "only occupants read this room's archive")
	default:
		if err := q.QueryRoom(c, st, r.jid); err != nil {
			c.ReplyError("cancel", "internal-server-error", "")
		}
	}
}
