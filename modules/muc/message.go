package muc

import (
	"strconv"
	"strings"
	"time"

	"golang.org/x/text/secure/precis"

	"github.com/krill-xmpp/krill/config"
	"github.com/krill-xmpp/krill/hook"
	"github.com/krill-xmpp/krill/stanza"
)

// elem is an element's complete bytes; nil when absent.
type elem []byte

func (e elem) ok() bool { return e != nil }

// childNS returns the first child of raw named local in namespace ns.
func childNS(raw []byte, local, ns string) elem {
	var out elem
	stanza.Children(raw, func(ch []byte) bool {
		t, err := stanza.ParseStartTag(ch)
		if err != nil || string(t.Local()) != local {
			return true
		}
		if x, _ := t.AttrString("xmlns"); x != ns {
			return true
		}
		out = ch
		return false
	})
	return out
}

// child returns the first child of e named local, in any namespace (the
// children of a namespaced element inherit it).
func child(e elem, local string) elem {
	if e == nil {
		return nil
	}
	var out elem
	stanza.Children(e, func(ch []byte) bool {
		if t, err := stanza.ParseStartTag(ch); err == nil && string(t.Local()) == local {
			out = ch
			return false
		}
		return true
	})
	return out
}

// attr returns an attribute of e's start tag.
func attr(e elem, name string) string {
	if e == nil {
		return ""
	}
	t, err := stanza.ParseStartTag(e)
	if err != nil {
		return ""
	}
	v, _ := t.AttrString(name)
	return v
}

// text returns e's character data.
func text(e elem) string {
	if e == nil {
		return ""
	}
	s, _ := stanza.Text(e)
	return s
}

// messageError answers a message with an error from the address it was sent to.
func messageError(c *hook.Ctx, typ, cond, text string) {
	c.ReplyError(typ, cond, text)
}

// message handles a message to the room or to an occupant. Called with
// r.mu held; it unlocks.
func (r *room) message(c *hook.Ctx, st *hook.Stanza) {
	o := r.byJID[st.From]
	if st.Type == "error" {
		if o != nil && kickable(st.Raw) {
			// A copy the room sent the occupant came back for good:
			// its server is unreachable, or its session gone (remote.go).
			r.bounced(c.Host, o, errorCondition(st.Raw))
			return
		}
		r.mu.Unlock()
		return
	}
	if st.Resource != "" {
		r.private(c, st, o) // unlocks
		return
	}
	if st.Type == "groupchat" {
		r.groupchat(c, st, o) // unlocks
		return
	}
	if x := childNS(st.Raw, "x", NSUser); x.ok() {
		if inv := child(x, "invite"); inv.ok() {
			r.invite(c, st, o, inv) // unlocks
			return
		}
		if dec := child(x, "decline"); dec.ok() {
			r.decline(c, st, dec) // unlocks
			return
		}
	}
	if form := childNS(st.Raw, "x", NSData); form.ok() && formType(form) == NSRequest {
		r.voiceRequest(c, st, o, form) // unlocks
		return
	}
	r.mu.Unlock()
	messageError(c, "modify", "bad-request", "send groupchat messages to the room")
}

// allow takes one message from o's rate bucket (muc.message_rate, burst of
// five seconds' worth). Called with r.mu held.
func (r *room) allow(h hook.Host, o *occupant, now time.Time) bool {
	rate := h.Config().MUC.MessageRate
	if rate <= 0 {
		return true
	}
	burst := max(1, rate*5)
	if o.last.IsZero() {
		o.tokens = burst
	} else {
		o.tokens = min(burst, o.tokens+now.Sub(o.last).Seconds()*rate)
	}
	o.last = now
	if o.tokens < 1 {
		return false
	}
	o.tokens--
	return true
}

// groupchat broadcasts an occupant's message (XEP-0045 7.4) or subject
// change (8.1). Called with r.mu held; it unlocks.
func (r *room) groupchat(c *hook.Ctx, st *hook.Stanza, o *occupant) {
	h := c.Host
	fail := func(typ, cond, text string) {
		r.mu.Unlock()
		messageError(c, typ, cond, text)
	}
	switch {
	case o == nil:
		fail("modify", "not-acceptable", "only occupants may send messages to the room")
		return
	case o.getRole() < roleParticipant:
		fail("auth", "forbidden", "visitors have no voice in this moderated room")
		return
	}
	now := time.Now()
	if !r.allow(h, o, now) {
		// RFC 6120 8.3.3.12: a local policy (the message rate), with
		// type wait since retrying later succeeds.
		fail("wait", "policy-violation", "message rate exceeded")
		return
	}
	subject := child(elem(st.Raw), "subject")
	body := child(elem(st.Raw), "body")
	isSubject := subject.ok() && !body.ok()
	if isSubject && !r.cfg.ChangeSubject && o.getRole() < roleModerator {
		fail("auth", "forbidden", "only moderators may change the subject")
		return
	}
	head, tail := r.fromOccupant(st, o, "groupchat", nil)
	if isSubject {
		r.cfg.Subject = text(subject)
		r.cfg.SubjectFrom = o.nick
		r.saveConfig(h)
	} else {
		r.m.messages.Add(1)
		if r.archives() {
			// The archive keeps the message as the room sends it,
			// without to; the copies and the history carry its
			// archive ID (XEP-0359 <stanza-id by=room/>), so that a
			// client recognises in the archive what it has.
			msg := append(append([]byte(nil), head[:len(head)-len(` to='`)]...), tail[1:]...)
			if id := r.m.Archiver.ArchiveGroupchat(h, r.jid, o.nick, o.bare, o.id, msg, now); id != "" {
				tail = r.withStanzaID(tail, id)
			}
		}
		r.remember(head, tail, now, h.Config().MUC.MaxHistory)
	}
	r.sendLocked(h, &broadcast{head: head, plain: tail}, nil)
}

// fromOccupant rewrites a message from o: from room/nick, the to left for
// each copy, the type given, the sender's occupant id in place of any the
// client put there (XEP-0421 4), extra appended.
func (r *room) fromOccupant(st *hook.Stanza, o *occupant, typ string, extra []byte) (head, tail []byte) {
	head = make([]byte, 0, 32+len(r.jid)+len(o.nick))
	head = append(head, `<message from='`...)
	head = stanza.AppendEscaped(head, r.jid+"/"+o.nick)
	head = append(head, `' to='`...)
	tail = make([]byte, 0, len(st.Raw)+96)
	tail = append(tail, `' type='`...)
	tail = append(tail, typ...)
	tail = append(tail, '\'')
	st.Tag.Attrs(func(name, raw []byte) bool {
		switch string(name) {
		case "from", "to", "type", "xmlns":
			return true
		}
		tail = append(tail, ' ')
		tail = append(tail, name...)
		tail = append(tail, `='`...)
		tail = append(tail, raw...)
		tail = append(tail, '\'')
		return true
	})
	tail = append(tail, '>')
	stanza.Children(st.Raw, func(ch []byte) bool {
		if t, err := stanza.ParseStartTag(ch); err == nil {
			switch string(t.Local()) {
			case "occupant-id":
				return true // stripped: only the room says who sent what
			case "stanza-id":
				// Only the room says where it archived a message
				// (XEP-0359 §4): one by the room's JID is forged.
				if by, _ := t.AttrString("by"); strings.EqualFold(by, r.jid) {
					return true
				}
			}
		}
		tail = append(tail, ch...)
		return true
	})
	tail = append(tail, extra...)
	tail = append(tail, `<occupant-id xmlns='`+NSOccupantID+`' id='`...)
	tail = append(tail, o.id...)
	tail = append(tail, `'/></message>`...)
	return head, tail
}

// archives reports whether the room archives its messages: archiving
// configured on, and an archive wired. Called with r.mu held.
func (r *room) archives() bool { return r.cfg.Archive && r.m.Archiver != nil }

// withStanzaID returns tail (ending in </message>) with the XEP-0359
// <stanza-id/> of the room's archive entry id before the end tag.
func (r *room) withStanzaID(tail []byte, id string) []byte {
	const end = `</message>`
	out := make([]byte, 0, len(tail)+len(r.jid)+len(id)+48)
	out = append(out, tail[:len(tail)-len(end)]...)
	out = append(out, `<stanza-id xmlns='`+NSSID+`' by='`...)
	out = stanza.AppendEscaped(out, r.jid)
	out = append(out, `' id='`...)
	out = stanza.AppendEscaped(out, id)
	out = append(out, `'/>`+end...)
	return out
}

// remember keeps a groupchat message for history, within the room's
// history length, muc.max_history and MaxHistoryBytes. Called with r.mu
// held.
func (r *room) remember(head, tail []byte, at time.Time, limit int) {
	n := min(r.cfg.HistoryLength, limit)
	if n <= 0 || len(head)+len(tail) > maxHistoryBytes {
		return
	}
	r.history = append(r.history, histEntry{head: head, tail: tail, at: at})
	r.histBytes += len(head) + len(tail)
	for len(r.history) > n || r.histBytes > maxHistoryBytes {
		r.histBytes -= len(r.history[0].head) + len(r.history[0].tail)
		r.history[0] = histEntry{}
		r.history = r.history[1:]
	}
}

// maxHistoryBytes caps a room's history (config.MaxMUCHistoryBytes).
const maxHistoryBytes = config.MaxMUCHistoryBytes

// historyFor returns the history a joiner asked for with the history
// element (XEP-0045 7.2.13): maxstanzas, maxchars (counted over the
// stanzas as sent), seconds, since; all by default. Called with r.mu held.
func (r *room) historyFor(o *occupant, req elem) [][]byte {
	maxStanzas, maxChars := len(r.history), -1
	var since time.Time
	if req.ok() {
		if v, err := strconv.Atoi(attr(req, "maxstanzas")); err == nil && v >= 0 {
			maxStanzas = min(v, maxStanzas)
		}
		if v, err := strconv.Atoi(attr(req, "maxchars")); err == nil && v >= 0 {
			maxChars = v
		}
		if v, err := strconv.Atoi(attr(req, "seconds")); err == nil && v >= 0 {
			since = time.Now().Add(-time.Duration(v) * time.Second)
		}
		if t, err := time.Parse(time.RFC3339, attr(req, "since")); err == nil && t.After(since) {
			since = t
		}
	}
	var out [][]byte
	chars := 0
	for i := len(r.history) - 1; i >= 0 && len(out) < maxStanzas; i-- {
		e := r.history[i]
		if !since.IsZero() && e.at.Before(since) {
			break
		}
		b := make([]byte, 0, len(e.head)+len(o.toAttr)+len(e.tail)+96)
		b = append(b, e.head...)
		b = append(b, o.toAttr...)
		b = append(b, e.tail[:len(e.tail)-len(`</message>`)]...)
		b = append(b, `<delay xmlns='urn:xmpp:delay' from='`...)
		b = stanza.AppendEscaped(b, r.jid)
		b = append(b, `' stamp='`...)
		b = e.at.UTC().AppendFormat(b, "2006-01-02T15:04:05Z")
		b = append(b, `'/></message>`...)
		if maxChars >= 0 {
			if chars+len(b) > maxChars {
				break
			}
			chars += len(b)
		}
		out = append(out, b)
	}
	for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
		out[i], out[j] = out[j], out[i]
	}
	return out
}

// subjectFor is the subject message that ends a join (XEP-0045 7.2.15):
// an empty subject when none is set. Called with r.mu held.
func (r *room) subjectFor(o *occupant) []byte {
	b := make([]byte, 0, 96+len(r.jid)+len(r.cfg.Subject))
	b = append(b, `<message from='`...)
	from := r.jid
	if r.cfg.SubjectFrom != "" {
		from += "/" + r.cfg.SubjectFrom
	}
	b = stanza.AppendEscaped(b, from)
	b = append(b, `' to='`...)
	b = append(b, o.toAttr...)
	b = append(b, `' type='groupchat'>`...)
	if r.cfg.Subject == "" {
		return append(b, `<subject/></message>`...)
	}
	b = append(b, `<subject>`...)
	b = stanza.AppendEscaped(b, r.cfg.Subject)
	return append(b, `</subject></message>`...)
}

// private forwards a private message between occupants (XEP-0045 7.5), as
// the room's allowpm says. Called with r.mu held; it unlocks.
func (r *room) private(c *hook.Ctx, st *hook.Stanza, o *occupant) {
	fail := func(typ, cond, text string) {
		r.mu.Unlock()
		messageError(c, typ, cond, text)
	}
	if o == nil {
		fail("modify", "not-acceptable", "only occupants may send private messages")
		return
	}
	if st.Type == "groupchat" {
		fail("modify", "bad-request", "groupchat messages go to the room")
		return
	}
	allowed := true
	switch r.cfg.AllowPM {
	case "none":
		allowed = false
	case "participants":
		allowed = o.getRole() >= roleParticipant
	case "moderators":
		allowed = o.getRole() == roleModerator
	}
	if !allowed {
		fail("cancel", "not-allowed", "private messages are not allowed in this room")
		return
	}
	key, err := nickKey(st.Resource)
	to := r.occ[key]
	if err != nil || to == nil {
		fail("cancel", "item-not-found", "no such occupant")
		return
	}
	if !r.allow(c.Host, o, time.Now()) {
		fail("wait", "policy-violation", "message rate exceeded")
		return
	}
	typ := st.Type
	if typ == "" {
		typ = "normal"
	}
	head, tail := r.fromOccupant(st, o, typ, nil)
	// The <x/> marks it as private through a room (XEP-0045 7.5).
	tail = append(tail[:len(tail)-len(`</message>`)], `<x xmlns='`+NSUser+`'/></message>`...)
	bc := &broadcast{head: head, plain: tail}
	targets := sessions(to)
	r.mu.Unlock()
	bc.deliver(targets) // every session under the nick
}

// nickKey returns a nickname's comparison key (PRECIS nickname profile,
// RFC 8266).
func nickKey(nick string) (string, error) { return precis.Nickname.CompareKey(nick) }

// formType returns a data form's FORM_TYPE.
func formType(form elem) string {
	var v string
	stanza.Children(form, func(ch []byte) bool {
		if attr(ch, "var") == "FORM_TYPE" {
			v = text(child(ch, "value"))
			return false
		}
		return true
	})
	return v
}

// formValues returns a submitted form's fields: var to values.
func formValues(form elem) map[string][]string {
	out := map[string][]string{}
	stanza.Children(form, func(ch []byte) bool {
		t, err := stanza.ParseStartTag(ch)
		if err != nil || string(t.Local()) != "field" {
			return true
		}
		v := attr(ch, "var")
		vals := []string{}
		stanza.Children(ch, func(x []byte) bool {
			if t, err := stanza.ParseStartTag(x); err == nil && string(t.Local()) == "value" {
				vals = append(vals, text(x))
			}
			return true
		})
		out[v] = vals
		return true
	})
	return out
}

func first(v []string) string {
	if len(v) == 0 {
		return ""
	}
	return v[0]
}

func formBool(v []string) bool { s := first(v); return s == "1" || s == "true" }

// invite forwards a mediated invitation (XEP-0045 7.8.2), adding the
// invitee to the members of a members-only room when the inviter may.
// Called with r.mu held; it unlocks.
func (r *room) invite(c *hook.Ctx, st *hook.Stanza, o *occupant, inv elem) {
	h := c.Host
	fail := func(typ, cond, text string) {
		r.mu.Unlock()
		messageError(c, typ, cond, text)
	}
	if o == nil {
		fail("modify", "not-acceptable", "only occupants may invite")
		return
	}
	mayInvite := r.cfg.AllowInvites || o.aff >= affAdmin || (!r.cfg.MembersOnly && o.getRole() >= roleParticipant)
	if !mayInvite {
		fail("auth", "forbidden", "invitations are not allowed in this room")
		return
	}
	to := attr(inv, "to")
	toBare := bareOf(to)
	if to == "" || toBare == "" {
		fail("modify", "bad-request", "the invitation names nobody")
		return
	}
	if r.cfg.MembersOnly && r.affOf(toBare) < affMember && r.affOf(toBare) != affOutcast {
		r.affs[toBare] = affMember
		r.saveAffiliation(h, toBare, affMember, "")
	}
	b := []byte(`<message from='`)
	b = stanza.AppendEscaped(b, r.jid)
	b = append(b, `' to='`...)
	b = stanza.AppendEscaped(b, to)
	b = append(b, `'><x xmlns='`+NSUser+`'><invite from='`...)
	b = stanza.AppendEscaped(b, o.full)
	b = append(b, `'>`...)
	if reason := child(inv, "reason"); reason.ok() {
		b = append(b, `<reason>`...)
		b = stanza.AppendEscaped(b, text(reason))
		b = append(b, `</reason>`...)
	}
	b = append(b, `</invite>`...)
	if r.cfg.PasswordOn {
		b = append(b, `<password>`...)
		b = stanza.AppendEscaped(b, r.cfg.Password)
		b = append(b, `</password>`...)
	}
	b = append(b, `</x></message>`...)
	r.mu.Unlock()
	h.Deliver(to, b)
}

// decline forwards an invitee's decline to the inviter (XEP-0045 7.8.2).
// Called with r.mu held; it unlocks.
func (r *room) decline(c *hook.Ctx, st *hook.Stanza, dec elem) {
	r.mu.Unlock()
	to := attr(dec, "to")
	if to == "" {
		messageError(c, "modify", "bad-request", "the decline names nobody")
		return
	}
	b := []byte(`<message from='`)
	b = stanza.AppendEscaped(b, r.jid)
	b = append(b, `' to='`...)
	b = stanza.AppendEscaped(b, to)
	b = append(b, `'><x xmlns='`+NSUser+`'><decline from='`...)
	b = stanza.AppendEscaped(b, bareOf(st.From))
	b = append(b, `'>`...)
	if reason := child(dec, "reason"); reason.ok() {
		b = append(b, `<reason>`...)
		b = stanza.AppendEscaped(b, text(reason))
		b = append(b, `</reason>`...)
	}
	b = append(b, `</decline></x></message>`...)
	c.Host.Deliver(to, b)
}

// voiceRequest handles the muc#request form: from a visitor, it goes to
// every moderator (XEP-0045 7.13); from a moderator approving one, the
// visitor gets voice (8.6). Called with r.mu held; it unlocks.
func (r *room) voiceRequest(c *hook.Ctx, st *hook.Stanza, o *occupant, form elem) {
	h := c.Host
	if o == nil {
		r.mu.Unlock()
		messageError(c, "modify", "not-acceptable", "only occupants may request voice")
		return
	}
	vals := formValues(form)
	if o.getRole() == roleModerator {
		key, err := nickKey(first(vals["muc#roomnick"]))
		target := r.occ[key]
		if err != nil || target == nil || !formBool(vals["muc#request_allow"]) || target.getRole() != roleVisitor {
			r.mu.Unlock()
			return
		}
		for _, t := range target.twins {
			t.role.Store(uint32(roleParticipant))
		}
		target.role.Store(uint32(roleParticipant))
		r.sendLocked(h, r.presenceBroadcast(target, "", nil, nil), nil)
		return
	}
	if o.getRole() != roleVisitor {
		r.mu.Unlock()
		return
	}
	var b []byte
	b = append(b, `' type='normal'><x xmlns='`+NSData+`' type='form'><title>Voice request</title>`+
		`<field var='FORM_TYPE' type='hidden'><value>`+NSRequest+`</value></field>`+
		`<field var='muc#role' type='list-single' label='Requested role'><value>participant</value></field>`+
		`<field var='muc#jid' type='jid-single' label='User ID'><value>`...)
	b = stanza.AppendEscaped(b, o.full)
	b = append(b, `</value></field><field var='muc#roomnick' type='text-single' label='Room nickname'><value>`...)
	b = stanza.AppendEscaped(b, o.nick)
	b = append(b, `</value></field><field var='muc#request_allow' type='boolean' label='Grant voice to this person?'><value>false</value></field></x></message>`...)
	head := []byte(`<message from='`)
	head = stanza.AppendEscaped(head, r.jid)
	head = append(head, `' to='`...)
	bc := &broadcast{head: head, plain: b}
	var mods []*occupant
	for _, x := range r.byJID {
		if x.getRole() == roleModerator {
			mods = append(mods, x)
		}
	}
	r.mu.Unlock()
	bc.deliver(mods)
}
