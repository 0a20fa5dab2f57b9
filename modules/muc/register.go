package muc

import (
	"context"

	"golang.org/x/text/secure/precis"

	"github.com/krill-xmpp/krill/hook"
	"github.com/krill-xmpp/krill/stanza"
)

// Registration with a room (XEP-0045 7.10) and the discovery of the
// nickname it reserves (7.12).
const (
	// NSRegister is In-Band Registration's namespace, which a room
	// answers with its muc#register form.
	NSRegister = "jabber:iq:register"
	// NSMUCRegister is the FORM_TYPE of the registration form.
	NSMUCRegister = NS + "#register"
	// nodeRoomUser is the disco#info node that returns the asker's
	// reserved nickname as an identity.
	nodeRoomUser = "x-roomuser-item"
	// errReserved is the text of a join or nick change refused because
	// another account registered the nickname.
	errReserved = "the nickname is reserved by another user of the room"
)

// roomUserItem answers disco#info on node x-roomuser-item (XEP-0045
// 7.12): an identity named after bare's reserved nickname, none when it
// has not reserved one. Called with r.mu held.
func (r *room) roomUserItem(bare string) []byte {
	b := []byte(`<query xmlns='` + NSDiscoInfo + `' node='` + nodeRoomUser + `'>`)
	if n := r.nicks[bare]; n != "" {
		b = append(b, `<identity category='conference' name='`...)
		b = stanza.AppendEscaped(b, n)
		b = append(b, `' type='text'/>`...)
	}
	return append(b, `</query>`...)
}

// unreserve drops bare's reserved nickname, in memory. Called with r.mu
// held.
func (r *room) unreserve(bare string) {
	n := r.nicks[bare]
	if n == "" {
		return
	}
	delete(r.nicks, bare)
	if key, err := nickKey(n); err == nil && r.reserved[key] == bare {
		delete(r.reserved, key)
	}
}

// register handles jabber:iq:register to the room (XEP-0045 7.10): a get
// returns the muc#register form, or the nickname already registered; a
// submitted form reserves muc#register_roomnick for the sender's bare JID
// and makes it a member (a member or more keeps its affiliation). In a
// members-only room only those with an affiliation register: membership
// there is the admins' to give. Called with r.mu held; it unlocks.
func (r *room) register(c *hook.Ctx, st *hook.Stanza) {
	bare := bareOf(st.From)
	aff := r.affOf(bare)
	refuse := func(typ, cond, text string) {
		r.mu.Unlock()
		c.ReplyError(typ, cond, text)
	}
	switch {
	case r.locked:
		refuse("cancel", "item-not-found", "the room is locked until its owner configures it")
		return
	case aff == affOutcast:
		refuse("auth", "forbidden", "banned from the room")
		return
	case r.cfg.MembersOnly && aff < affMember:
		refuse("cancel", "not-allowed", "the room is members-only: its admins grant membership")
		return
	}
	if st.Type == "get" {
		var b []byte
		if n := r.nicks[bare]; n != "" {
			b = append([]byte(`<query xmlns='`+NSRegister+`'><registered/><username>`), stanza.AppendEscaped(nil, n)...)
			b = append(b, `</username></query>`...)
		} else {
			b = []byte(`<query xmlns='` + NSRegister + `'><instructions>Choose the nickname to reserve in this room.</instructions>` +
				`<x xmlns='` + NSData + `' type='form'><title>Registration</title>` +
				`<field type='hidden' var='FORM_TYPE'><value>` + NSMUCRegister + `</value></field>` +
				`<field label='Desired Nickname' type='text-single' var='muc#register_roomnick'><required/></field></x></query>`)
		}
		r.mu.Unlock()
		c.ReplyResult(b)
		return
	}
	if child(st.Payload, "remove") != nil {
		r.deregister(c, bare, aff)
		return
	}
	form := childNS(st.Payload, "x", NSData)
	switch typ := attr(form, "type"); {
	case typ == "cancel":
		r.mu.Unlock()
		c.ReplyResult(nil)
		return
	case typ != "submit" || formType(form) != NSMUCRegister:
		refuse("modify", "bad-request", "a muc#register form of type submit was expected")
		return
	}
	raw := first(formValues(form)["muc#register_roomnick"])
	nick, err := precis.Nickname.String(raw)
	if err != nil || len(nick) > maxNick {
		refuse("modify", "not-acceptable", errNick)
		return
	}
	key, _ := nickKey(nick)
	if b := r.reserved[key]; b != "" && b != bare {
		refuse("cancel", "conflict", errReserved)
		return
	}
	if o := r.occ[key]; o != nil && o.bare != bare {
		refuse("cancel", "conflict", "the nickname is in use")
		return
	}
	r.unreserve(bare)
	r.nicks[bare], r.reserved[key] = nick, bare
	to := max(aff, affMember)
	if r.cfg.Persistent {
		name := r.name
		r.persist(c.Host, func(ctx context.Context, s Store) error { return s.ReserveMUCNick(ctx, name, bare, to.String(), nick) })
	}
	if to == aff {
		r.mu.Unlock()
	} else {
		// Its occupants, if any, see their new affiliation (and role);
		// the write is queued already, with the nickname.
		r.applyAffiliation(c.Host, bare, to, "", "") // unlocks
	}
	c.ReplyResult(nil)
}

// deregister cancels bare's registration (XEP-0077 <remove/> sent to the
// room): its reserved nickname goes, and so does a membership, which is
// what registering gave; an admin or owner keeps that affiliation, since
// registration did not give it (Prosody does the same). Losing membership
// of a members-only room removes its occupants with 321, as any
// affiliation change does. Nothing to cancel is not an error. Called with
// r.mu held; it unlocks.
func (r *room) deregister(c *hook.Ctx, bare string, aff affiliation) {
	switch {
	case aff == affMember:
		r.setAffiliation(c.Host, bare, affNone, "", "") // unlocks
	case aff > affMember && r.nicks[bare] != "":
		r.unreserve(bare)
		if r.cfg.Persistent {
			name, keep := r.name, aff.String()
			r.persist(c.Host, func(ctx context.Context, s Store) error { return s.ReserveMUCNick(ctx, name, bare, keep, "") })
		}
		r.mu.Unlock()
	default:
		r.mu.Unlock()
	}
	c.ReplyResult(nil)
}
