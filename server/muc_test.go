package server_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/krill-xmpp/krill/config"
	"github.com/krill-xmpp/krill/hook"
	"github.com/krill-xmpp/krill/modules"
	"github.com/krill-xmpp/krill/modules/muc"
	"github.com/krill-xmpp/krill/server"
	"github.com/krill-xmpp/krill/storage"
)

// The multi-user chat tests (XEP-0045, modules/muc) drive the service at
// conference.localhost over real sockets and check the exact bytes.

const (
	mucSvc  = "conference.localhost"
	nsMUC   = "http://jabber.org/protocol/muc"
	nsUser  = nsMUC + "#user"
	nsOwner = nsMUC + "#owner"
	nsAdmin = nsMUC + "#admin"
)

// mucWorld is a server with accounts and what a test needs to predict the
// service's bytes.
type mucWorld struct {
	t      *testing.T
	srv    *server.Server
	secret []byte
}

func newMUCWorld(t *testing.T, cfg config.Config, users ...string) *mucWorld {
	t.Helper()
	srv, store := startServerOpts(t, cfg, serverOpts{}, users...)
	return &mucWorld{t: t, srv: srv, secret: mucSecret(t, store)}
}

func mucSecret(t *testing.T, store *storage.SQL) []byte {
	t.Helper()
	s, err := store.MUCSecret(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	b, _ := hex.DecodeString(s)
	return b
}

// id is the XEP-0421 occupant id the service gives bare in room.
func (w *mucWorld) id(room, bare string) string {
	h := hmac.New(sha256.New, w.secret)
	h.Write([]byte(room + "@" + mucSvc))
	h.Write([]byte{0})
	h.Write([]byte(bare))
	return base64.RawURLEncoding.EncodeToString(h.Sum(nil)[:18])
}

// user logs user in with resource; its full JID is user@localhost/resource.
func (w *mucWorld) user(user, resource string) *rawConn {
	c := dialRaw(w.t, w.srv)
	c.scramLogin(user, testPassword, resource)
	return c
}

// occ describes an occupant as a presence about it shows it.
type occ struct {
	room, nick, full, aff, role string
}

func (o occ) bare() string { return strings.SplitN(o.full, "/", 2)[0] }

// pres is the presence of o the service sends to `to`: typ "" or
// "unavailable", the real JID shown when withJID, the status codes, and
// extra inside the item (reason, actor) and after the x's statuses.
func (w *mucWorld) pres(o occ, to, typ string, withJID bool, codes []int, itemInner string) string {
	s := `<presence from='` + o.room + `@` + mucSvc + `/` + o.nick + `' to='` + to + `'`
	if typ != "" {
		s += ` type='` + typ + `'`
	}
	s += `><x xmlns='` + nsUser + `'><item affiliation='` + o.aff + `'`
	if withJID {
		s += ` jid='` + o.full + `'`
	}
	s += ` role='` + o.role + `'`
	if itemInner == "" {
		s += `/>`
	} else {
		s += `>` + itemInner + `</item>`
	}
	for _, c := range codes {
		s += fmt.Sprintf(`<status code='%d'/>`, c)
	}
	return s + `</x><occupant-id xmlns='urn:xmpp:occupant-id:0' id='` + w.id(o.room, o.bare()) + `'/></presence>`
}

// subject is the empty subject that ends a join.
func subject(room, to string) string {
	return `<message from='` + room + `@` + mucSvc + `' to='` + to + `' type='groupchat'><subject/></message>`
}

// groupchat is a groupchat message from o as the room relays it.
func (w *mucWorld) groupchat(o occ, to, id, body string) string {
	return `<message from='` + o.room + `@` + mucSvc + `/` + o.nick + `' to='` + to + `' type='groupchat' id='` + id + `'><body>` + body +
		`</body><occupant-id xmlns='urn:xmpp:occupant-id:0' id='` + w.id(o.room, o.bare()) + `'/></message>`
}

// create makes room an open instant room owned by c (joined as o).
func (w *mucWorld) create(c *rawConn, o occ) {
	t := w.t
	t.Helper()
	c.send(`<presence to='` + o.room + `@` + mucSvc + `/` + o.nick + `'><x xmlns='` + nsMUC + `'/></presence>`)
	c.expect(t, w.pres(o, o.full, "", true, []int{110, 201}, ""))
	c.expect(t, subject(o.room, o.full))
	c.exchange(t, `<iq type='set' id='inst' to='`+o.room+`@`+mucSvc+`'><query xmlns='`+nsOwner+`'><x xmlns='jabber:x:data' type='submit'/></query></iq>`,
		`<iq type='result' id='inst' from='`+o.room+`@`+mucSvc+`'/>`)
}

// configure submits fields (var suffix to value) of the room form as owner
// c, an occupant, and reads the notice of the change with its extra
// status codes.
func configure(t *testing.T, c *rawConn, room string, fields map[string]string, codes ...int) {
	t.Helper()
	f := `<field var='FORM_TYPE'><value>http://jabber.org/protocol/muc#roomconfig</value></field>`
	for k, v := range fields {
		f += `<field var='muc#roomconfig_` + k + `'><value>` + v + `</value></field>`
	}
	c.exchange(t, `<iq type='set' id='cfg' to='`+room+`@`+mucSvc+`'><query xmlns='`+nsOwner+`'><x xmlns='jabber:x:data' type='submit'>`+f+`</x></query></iq>`,
		`<iq type='result' id='cfg' from='`+room+`@`+mucSvc+`'/>`)
	// The owner is in the room: it is told of the change (10.2.1).
	c.expect(t, configChanged(room, "{*}", codes...))
}

// configChanged is the room's notice of a configuration change.
func configChanged(room, to string, codes ...int) string {
	s := `<message from='` + room + `@` + mucSvc + `' to='` + to + `' type='groupchat'><x xmlns='` + nsUser + `'>`
	for _, c := range append([]int{104}, codes...) {
		s += fmt.Sprintf(`<status code='%d'/>`, c)
	}
	return s + `</x></message>`
}

// TestMUCJoinMessageLeave: a reserved room is created locked (201) and
// opened by an instant configuration; a second user joins and sees the
// first; groupchat messages reach every occupant in the order sent; nick
// change (303) and conflict (409), leaving (110), and occupant ids stable
// per real JID and distinct between users.
func TestMUCJoinMessageLeave(t *testing.T) {
	w := newMUCWorld(t, testConfig(t), "alice", "bob", "carol")
	alice, bob := w.user("alice", "a"), w.user("bob", "b")
	a := occ{"room", "Alice", "alice@localhost/a", "owner", "moderator"}
	b := occ{"room", "Bob", "bob@localhost/b", "none", "participant"}

	alice.send(`<presence to='room@` + mucSvc + `/Alice'><x xmlns='` + nsMUC + `'/></presence>`)
	alice.expect(t, w.pres(a, a.full, "", true, []int{110, 201}, ""))
	alice.expect(t, subject("room", a.full))
	// Locked until configured: others cannot enter (XEP-0045 10.1.1).
	bob.exchange(t, `<presence to='room@`+mucSvc+`/Bob' id='j1'><x xmlns='`+nsMUC+`'/></presence>`,
		`<presence from='room@`+mucSvc+`/Bob' to='bob@localhost/b' type='error' id='j1'><x xmlns='`+nsMUC+`'/><error type='cancel'><item-not-found `+stanzasNS+`/><text `+stanzasNS+`>the room is locked until its owner configures it</text></error></presence>`)
	alice.exchange(t, `<iq type='set' id='inst' to='room@`+mucSvc+`'><query xmlns='`+nsOwner+`'><x xmlns='jabber:x:data' type='submit'/></query></iq>`,
		`<iq type='result' id='inst' from='room@`+mucSvc+`'/>`)

	bob.send(`<presence to='room@` + mucSvc + `/Bob'><x xmlns='` + nsMUC + `'/></presence>`)
	bob.expect(t, w.pres(a, b.full, "", false, nil, "")) // semi-anonymous: no JID for a participant
	bob.expect(t, w.pres(b, b.full, "", true, []int{110}, ""))
	bob.expect(t, subject("room", b.full))
	alice.expect(t, w.pres(b, a.full, "", true, nil, "")) // a moderator sees it

	// Nickname conflict.
	carol := w.user("carol", "c")
	carol.exchange(t, `<presence to='room@`+mucSvc+`/bob' id='j2'><x xmlns='`+nsMUC+`'/></presence>`,
		`<presence from='room@`+mucSvc+`/bob' to='carol@localhost/c' type='error' id='j2'><x xmlns='`+nsMUC+`'/><error type='cancel'><conflict `+stanzasNS+`/><text `+stanzasNS+`>the nickname is in use</text></error></presence>`)

	// Messages in order, to everyone, the sender included.
	for i := range 3 {
		bob.send(fmt.Sprintf(`<message to='room@%s' type='groupchat' id='m%d'><body>hi %d</body><occupant-id xmlns='urn:xmpp:occupant-id:0' id='forged'/></message>`, mucSvc, i, i))
	}
	for i := range 3 {
		alice.expect(t, w.groupchat(b, a.full, fmt.Sprintf("m%d", i), fmt.Sprintf("hi %d", i)))
		bob.expect(t, w.groupchat(b, b.full, fmt.Sprintf("m%d", i), fmt.Sprintf("hi %d", i)))
	}
	if w.id("room", "alice@localhost") == w.id("room", "bob@localhost") || w.id("room", "bob@localhost") == w.id("other", "bob@localhost") {
		t.Fatal("occupant ids collide")
	}

	// Nick change: unavailable with 303 and the new nick, then the new one.
	bob.send(`<presence to='room@` + mucSvc + `/Robert'/>`)
	b2 := b
	b2.nick = "Robert"
	bob.expect(t, w.pres(b, b.full, "unavailable", true, []int{110, 303}, "")[:0]+
		strings.Replace(w.pres(b, b.full, "unavailable", true, []int{110, 303}, ""), `role='participant'/>`, `role='participant' nick='Robert'/>`, 1))
	bob.expect(t, w.pres(b2, b.full, "", true, []int{110}, ""))
	alice.expect(t, strings.Replace(w.pres(b, a.full, "unavailable", true, []int{303}, ""), `role='participant'/>`, `role='participant' nick='Robert'/>`, 1))
	alice.expect(t, w.pres(b2, a.full, "", true, nil, ""))

	// Private message through the room.
	bob.send(`<message to='room@` + mucSvc + `/Alice' type='chat' id='pm1'><body>psst</body></message>`)
	alice.expect(t, `<message from='room@`+mucSvc+`/Robert' to='`+a.full+`' type='chat' id='pm1'><body>psst</body><occupant-id xmlns='urn:xmpp:occupant-id:0' id='`+w.id("room", "bob@localhost")+`'/><x xmlns='`+nsUser+`'/></message>`)
	carol.exchange(t, `<message to='room@`+mucSvc+`/Alice' type='chat' id='pm2'><body>psst</body></message>`,
		`<message type='error' id='pm2' from='room@`+mucSvc+`/Alice' to='carol@localhost/c'><error type='modify'><not-acceptable `+stanzasNS+`/><text `+stanzasNS+`>only occupants may send private messages</text></error></message>`)
	carol.exchange(t, `<message to='room@`+mucSvc+`' type='groupchat' id='g2'><body>x</body></message>`,
		`<message type='error' id='g2' from='room@`+mucSvc+`' to='carol@localhost/c'><error type='modify'><not-acceptable `+stanzasNS+`/><text `+stanzasNS+`>only occupants may send messages to the room</text></error></message>`)

	// Leaving.
	bob.send(`<presence to='room@` + mucSvc + `/Robert' type='unavailable'/>`)
	bob.expect(t, w.pres(occ{"room", "Robert", b.full, "none", "none"}, b.full, "unavailable", true, []int{110}, ""))
	alice.expect(t, w.pres(occ{"room", "Robert", b.full, "none", "none"}, a.full, "unavailable", true, nil, ""))
	bob.sync(t, "s1")
	alice.sync(t, "s2")
}

// join enters c into room as nick and reads past its join (checked
// byte for byte in TestMUCJoinMessageLeave) up to the subject.
func (w *mucWorld) join(c *rawConn, room, nick, extra string) {
	w.t.Helper()
	c.send(`<presence to='` + room + `@` + mucSvc + `/` + nick + `'><x xmlns='` + nsMUC + `'>` + extra + `</x></presence>`)
	c.skipUntil(`<subject/></message>`)
}

// TestMUCPrivileges walks XEP-0045's role and affiliation privilege tables
// (5.1.1, 5.2.1): who may kick, ban, grant and revoke voice, moderator,
// membership, admin and ownership, and what the target sees.
func TestMUCPrivileges(t *testing.T) {
	w := newMUCWorld(t, testConfig(t), "owner", "actor", "target")
	type side struct{ aff, role string } // role "moderator" is granted by the owner after joining
	cases := []struct {
		name          string
		actor, target side
		item          string // the request, %s is the target's nick or bare JID
		err           string // "": allowed
		targetSees    string // the target's presence about itself (codes, item) when allowed
	}{
		{"participant may not kick", side{"none", ""}, side{"none", ""}, `<item nick='T' role='none'/>`, "not-allowed", ""},
		{"moderator kicks participant", side{"none", "moderator"}, side{"none", ""}, `<item nick='T' role='none'><reason>spam</reason></item>`, "",
			`unavailable|none|none|307|<actor nick='A'/><reason>spam</reason>`},
		{"moderator may not kick admin", side{"none", "moderator"}, side{"admin", ""}, `<item nick='T' role='none'/>`, "not-allowed", ""},
		{"admin may not kick owner", side{"admin", ""}, side{"owner", ""}, `<item nick='T' role='none'/>`, "not-allowed", ""},
		{"admin bans member", side{"admin", ""}, side{"member", ""}, `<item affiliation='outcast' jid='target@localhost'/>`, "",
			`unavailable|outcast|none|301|<actor nick='A'/>`},
		{"admin may not ban admin", side{"admin", ""}, side{"admin", ""}, `<item affiliation='outcast' jid='target@localhost'/>`, "not-allowed", ""},
		{"admin may not grant admin", side{"admin", ""}, side{"none", ""}, `<item affiliation='admin' jid='target@localhost'/>`, "not-allowed", ""},
		{"owner grants admin", side{"owner", ""}, side{"none", ""}, `<item affiliation='admin' jid='target@localhost'/>`, "", `|admin|moderator||`},
		{"owner grants owner", side{"owner", ""}, side{"member", ""}, `<item affiliation='owner' jid='target@localhost'/>`, "", `|owner|moderator||`},
		{"admin grants membership", side{"admin", ""}, side{"none", ""}, `<item affiliation='member' jid='target@localhost'/>`, "", `|member|participant||`},
		{"member may not grant membership", side{"member", ""}, side{"none", ""}, `<item affiliation='member' jid='target@localhost'/>`, "not-allowed", ""},
		{"admin grants moderator", side{"admin", ""}, side{"none", ""}, `<item nick='T' role='moderator'/>`, "", `|none|moderator||`},
		{"moderator may not grant moderator", side{"none", "moderator"}, side{"none", ""}, `<item nick='T' role='moderator'/>`, "not-allowed", ""},
		{"moderator revokes voice", side{"none", "moderator"}, side{"none", ""}, `<item nick='T' role='visitor'/>`, "", `|none|visitor||`},
		{"admin removes admin: owners only", side{"admin", ""}, side{"admin", ""}, `<item affiliation='none' jid='target@localhost'/>`, "not-allowed", ""},
		{"the last owner stays", side{"owner", ""}, side{"none", ""}, `<item affiliation='none' jid='owner@localhost'/><item affiliation='member' jid='actor@localhost'/>`, "conflict", ""},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			room := fmt.Sprintf("priv%d", i)
			rj := room + "@" + mucSvc
			res := fmt.Sprint(i)
			owner, actor, target := w.user("owner", res), w.user("actor", res), w.user("target", res)
			w.t = t
			w.create(owner, occ{room, "O", "owner@localhost/" + res, "owner", "moderator"})
			for _, s := range []struct{ who, aff string }{{"actor", tc.actor.aff}, {"target", tc.target.aff}} {
				if s.aff != "none" {
					owner.exchange(t, `<iq type='set' id='aff' to='`+rj+`'><query xmlns='`+nsAdmin+`'><item affiliation='`+s.aff+`' jid='`+s.who+`@localhost'/></query></iq>`,
						`<iq type='result' id='aff' from='`+rj+`'/>`)
				}
			}
			w.join(actor, room, "A", "")
			owner.skipUntil(`</presence>`)
			if tc.actor.role == "moderator" {
				owner.exchange(t, `<iq type='set' id='mod' to='`+rj+`'><query xmlns='`+nsAdmin+`'><item nick='A' role='moderator'/></query></iq>`,
					`<iq type='result' id='mod' from='`+rj+`'/>`)
				owner.skipUntil(`</presence>`)
				actor.skipUntil(`</presence>`)
			}
			w.join(target, room, "T", "")
			owner.skipUntil(`</presence>`)
			actor.skipUntil(`</presence>`)
			actor.send(`<iq type='set' id='act' to='` + rj + `'><query xmlns='` + nsAdmin + `'>` + tc.item + `</query></iq>`)
			if tc.err != "" {
				actor.expect(t, `<iq type='error' id='act' from='`+rj+`' to='actor@localhost/`+res+`'><error type='cancel'><`+tc.err+` `+stanzasNS+`/>{**}</error></iq>`)
				return
			}
			actor.expect(t, `<iq type='result' id='act' from='`+rj+`'/>`)
			p := strings.Split(tc.targetSees, "|")
			var codes []int
			if p[3] != "" {
				var c int
				fmt.Sscan(p[3], &c)
				codes = []int{110, c}
			} else {
				codes = []int{110}
			}
			target.expect(t, w.pres(occ{room, "T", "target@localhost/" + res, p[1], p[2]}, "target@localhost/"+res, p[0], true, codes, p[4]))
		})
	}
}

// TestMUCConfigAndEntry: the owner's configuration form, and the entry
// rules it sets: members-only (registration-required; turning it on
// removes non-members with 322), password (not-authorized), ban
// (forbidden), and affiliation changes that remove from a members-only
// room (321).
func TestMUCConfigAndEntry(t *testing.T) {
	w := newMUCWorld(t, testConfig(t), "alice", "bob", "carol")
	alice, bob, carol := w.user("alice", "a"), w.user("bob", "b"), w.user("carol", "c")
	a := occ{"cfg", "Alice", "alice@localhost/a", "owner", "moderator"}
	w.create(alice, a)
	rj := "cfg@" + mucSvc
	f := func(v, typ, label, val string, opts ...string) string {
		s := `<field var='muc#roomconfig_` + v + `' type='` + typ + `' label='` + label + `'><value>` + val + `</value>`
		for _, o := range opts {
			s += `<option><value>` + o + `</value></option>`
		}
		return s + `</field>`
	}
	alice.exchange(t, `<iq type='get' id='f1' to='`+rj+`'><query xmlns='`+nsOwner+`'/></iq>`,
		`<iq type='result' id='f1' from='`+rj+`'><query xmlns='`+nsOwner+`'><x xmlns='jabber:x:data' type='form'><title>Room configuration</title>`+
			`<field var='FORM_TYPE' type='hidden'><value>http://jabber.org/protocol/muc#roomconfig</value></field>`+
			f("roomname", "text-single", "Name", "")+f("roomdesc", "text-single", "Description", "")+
			f("persistentroom", "boolean", "Persistent", "0")+f("publicroom", "boolean", "Listed in the directory", "1")+
			f("membersonly", "boolean", "Members only", "0")+f("moderatedroom", "boolean", "Moderated", "0")+
			f("passwordprotectedroom", "boolean", "Password protected", "0")+f("roomsecret", "text-private", "Password", "")+
			f("maxusers", "list-single", "Maximum occupants", "1000", "10", "20", "50", "100", "500", "1000")+
			f("whois", "list-single", "Who may see real JIDs", "moderators", "moderators", "anyone")+
			f("historylength", "text-single", "Messages of history", "50")+
			f("enablearchiving", "boolean", "Archive messages", "0")+
			`<field var='{https://krill-xmpp.github.io/protocol/muc}archive_days' type='list-single' label='Days the archive keeps a message (0: the service&apos;s policy)'>`+
			`<value>0</value><option><value>0</value></option><option><value>1</value></option><option><value>7</value></option>`+
			`<option><value>30</value></option><option><value>90</value></option><option><value>365</value></option></field>`+
			f("allowpm", "list-single", "Who may send private messages", "anyone", "anyone", "participants", "moderators", "none")+
			f("allowinvites", "boolean", "Occupants may invite", "0")+
			f("changesubject", "boolean", "Occupants may change the subject", "0")+
			`<field var='muc#roomconfig_presencebroadcast' type='list-multi' label='Roles whose presence is broadcast'>`+
			`<value>moderator</value><value>participant</value><value>visitor</value>`+
			`<option><value>moderator</value></option><option><value>participant</value></option><option><value>visitor</value></option></field>`+
			`</x></query></iq>`)
	bob.exchange(t, `<iq type='get' id='f2' to='`+rj+`'><query xmlns='`+nsOwner+`'/></iq>`,
		`<iq type='error' id='f2' from='`+rj+`' to='bob@localhost/b'><error type='auth'><forbidden `+stanzasNS+`/><text `+stanzasNS+`>only owners configure the room</text></error></iq>`)
	alice.exchange(t, `<iq type='set' id='f3' to='`+rj+`'><query xmlns='`+nsOwner+`'><x xmlns='jabber:x:data' type='submit'><field var='muc#roomconfig_whois'><value>everyone</value></field></x></query></iq>`,
		`<iq type='error' id='f3' from='`+rj+`' to='alice@localhost/a'><error type='modify'><not-acceptable `+stanzasNS+`/><text `+stanzasNS+`>a field has a value the room does not take</text></error></iq>`)

	// Bob joins; turning members-only on removes him (322).
	b := occ{"cfg", "Bob", "bob@localhost/b", "none", "participant"}
	w.join(bob, "cfg", "Bob", "")
	alice.expect(t, w.pres(b, a.full, "", true, nil, ""))
	alice.exchange(t, `<iq type='set' id='mo' to='`+rj+`'><query xmlns='`+nsOwner+`'><x xmlns='jabber:x:data' type='submit'>`+
		`<field var='muc#roomconfig_membersonly'><value>1</value></field></x></query></iq>`, `<iq type='result' id='mo' from='`+rj+`'/>`)
	gone := occ{"cfg", "Bob", "bob@localhost/b", "none", "none"}
	bob.expect(t, w.pres(gone, b.full, "unavailable", true, []int{110, 322}, ""))
	alice.expect(t, w.pres(gone, a.full, "unavailable", true, []int{322}, ""))
	alice.expect(t, configChanged("cfg", a.full)) // to those who stay
	bob.exchange(t, `<presence to='`+rj+`/Bob' id='j1'><x xmlns='`+nsMUC+`'/></presence>`,
		`<presence from='`+rj+`/Bob' to='bob@localhost/b' type='error' id='j1'><x xmlns='`+nsMUC+`'/><error type='auth'><registration-required `+stanzasNS+`/><text `+stanzasNS+`>the room is members-only</text></error></presence>`)

	// Made a member, he enters; made none again, he is removed (321).
	alice.exchange(t, `<iq type='set' id='m1' to='`+rj+`'><query xmlns='`+nsAdmin+`'><item affiliation='member' jid='bob@localhost'/></query></iq>`, `<iq type='result' id='m1' from='`+rj+`'/>`)
	w.join(bob, "cfg", "Bob", "")
	bm := occ{"cfg", "Bob", "bob@localhost/b", "member", "participant"}
	alice.expect(t, w.pres(bm, a.full, "", true, nil, ""))
	alice.exchange(t, `<iq type='get' id='l1' to='`+rj+`'><query xmlns='`+nsAdmin+`'><item affiliation='member'/></query></iq>`,
		`<iq type='result' id='l1' from='`+rj+`'><query xmlns='`+nsAdmin+`'><item affiliation='member' jid='bob@localhost'/></query></iq>`)
	bob.exchange(t, `<iq type='get' id='l2' to='`+rj+`'><query xmlns='`+nsAdmin+`'><item affiliation='member'/></query></iq>`,
		`<iq type='error' id='l2' from='`+rj+`' to='bob@localhost/b'><error type='auth'><forbidden `+stanzasNS+`/><text `+stanzasNS+`>only admins and owners see affiliation lists</text></error></iq>`)
	alice.exchange(t, `<iq type='set' id='m2' to='`+rj+`'><query xmlns='`+nsAdmin+`'><item affiliation='none' jid='bob@localhost'/></query></iq>`, `<iq type='result' id='m2' from='`+rj+`'/>`)
	bob.expect(t, w.pres(gone, b.full, "unavailable", true, []int{110, 321}, `<actor nick='Alice'/>`))
	alice.expect(t, w.pres(gone, a.full, "unavailable", true, []int{321}, `<actor nick='Alice'/>`))

	// Password.
	configure(t, alice, "cfg", map[string]string{"membersonly": "0", "passwordprotectedroom": "1", "roomsecret": "s3cret"})
	bob.exchange(t, `<presence to='`+rj+`/Bob' id='j2'><x xmlns='`+nsMUC+`'><password>wrong</password></x></presence>`,
		`<presence from='`+rj+`/Bob' to='bob@localhost/b' type='error' id='j2'><x xmlns='`+nsMUC+`'/><error type='auth'><not-authorized `+stanzasNS+`/><text `+stanzasNS+`>a password is required</text></error></presence>`)
	w.join(bob, "cfg", "Bob", "<password>s3cret</password>")
	alice.expect(t, w.pres(b, a.full, "", true, nil, ""))

	// Banned.
	alice.exchange(t, `<iq type='set' id='m3' to='`+rj+`'><query xmlns='`+nsAdmin+`'><item affiliation='outcast' jid='carol@localhost'/></query></iq>`, `<iq type='result' id='m3' from='`+rj+`'/>`)
	carol.exchange(t, `<presence to='`+rj+`/Carol' id='j3'><x xmlns='`+nsMUC+`'><password>s3cret</password></x></presence>`,
		`<presence from='`+rj+`/Carol' to='carol@localhost/c' type='error' id='j3'><x xmlns='`+nsMUC+`'/><error type='auth'><forbidden `+stanzasNS+`/><text `+stanzasNS+`>banned from the room</text></error></presence>`)

	// Disco#info reflects the configuration.
	carol.exchange(t, `<iq type='get' id='d1' to='`+rj+`'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>`,
		`<iq type='result' id='d1' from='`+rj+`'><query xmlns='http://jabber.org/protocol/disco#info'><identity category='conference' type='text' name='cfg'/>`+
			`<feature var='http://jabber.org/protocol/disco#info'/><feature var='http://jabber.org/protocol/disco#items'/><feature var='http://jabber.org/protocol/muc'/>`+
			`<feature var='http://jabber.org/protocol/muc#self-ping-optimization'/><feature var='muc_open'/><feature var='muc_passwordprotected'/><feature var='muc_public'/>`+
			`<feature var='muc_semianonymous'/><feature var='muc_temporary'/><feature var='muc_unmoderated'/><feature var='urn:xmpp:occupant-id:0'/>`+
			`<x xmlns='jabber:x:data' type='result'><field var='FORM_TYPE' type='hidden'><value>http://jabber.org/protocol/muc#roominfo</value></field>`+
			`<field var='muc#roominfo_description' label='Description'><value></value></field><field var='muc#roominfo_occupants' label='Number of occupants'><value>2</value></field></x></query></iq>`)
	carol.exchange(t, `<iq type='get' id='d2' to='`+rj+`'><query xmlns='http://jabber.org/protocol/disco#items'/></iq>`,
		`<iq type='result' id='d2' from='`+rj+`'><query xmlns='http://jabber.org/protocol/disco#items'><item jid='`+rj+`/Alice'/><item jid='`+rj+`/Bob'/></query></iq>`)

	// Destroy with an alternate venue: each occupant gets its own.
	alice.exchange(t, `<iq type='set' id='x1' to='`+rj+`'><query xmlns='`+nsOwner+`'><destroy jid='new@`+mucSvc+`'><reason>moved</reason></destroy></query></iq>`,
		`<iq type='result' id='x1' from='`+rj+`'/>`)
	destroyed := `<x xmlns='` + nsUser + `'><item affiliation='none' role='none'/><status code='110'/><destroy jid='new@` + mucSvc + `'><reason>moved</reason></destroy></x></presence>`
	alice.expect(t, `<presence from='`+rj+`/Alice' to='alice@localhost/a' type='unavailable'>`+destroyed)
	bob.expect(t, `<presence from='`+rj+`/Bob' to='bob@localhost/b' type='unavailable'>`+destroyed)
	carol.exchange(t, `<iq type='get' id='d3' to='`+rj+`'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>`,
		`<iq type='error' id='d3' from='`+rj+`' to='carol@localhost/c'><error type='cancel'><item-not-found `+stanzasNS+`/></error></iq>`)
}

// TestMUCHistory: the history sent on join with each parameter of the
// history element (XEP-0045 7.2.13), with its delay.
func TestMUCHistory(t *testing.T) {
	w := newMUCWorld(t, testConfig(t), "alice", "bob")
	alice, bob := w.user("alice", "a"), w.user("bob", "b")
	a := occ{"hist", "Alice", "alice@localhost/a", "owner", "moderator"}
	w.create(alice, a)
	for i := range 4 {
		alice.send(fmt.Sprintf(`<message to='hist@%s' type='groupchat' id='h%d'><body>m%d</body></message>`, mucSvc, i, i))
		alice.expect(t, w.groupchat(a, a.full, fmt.Sprintf("h%d", i), fmt.Sprintf("m%d", i)))
	}
	hist := func(i int) string {
		return strings.TrimSuffix(w.groupchat(a, "bob@localhost/b", fmt.Sprintf("h%d", i), fmt.Sprintf("m%d", i)), `</message>`) +
			`<delay xmlns='urn:xmpp:delay' from='hist@` + mucSvc + `' stamp='{*}'/></message>`
	}
	b := occ{"hist", "Bob", "bob@localhost/b", "none", "participant"}
	gone := occ{"hist", "Bob", "bob@localhost/b", "none", "none"}
	one := len(hist(0)) - len(`{*}`) + len("2026-01-01T00:00:00Z")
	cases := []struct {
		name, history string
		want          []int
	}{
		{"all by default", ``, []int{0, 1, 2, 3}},
		{"maxstanzas", `<history maxstanzas='2'/>`, []int{2, 3}},
		{"maxstanzas 0", `<history maxstanzas='0'/>`, nil},
		{"maxchars", fmt.Sprintf(`<history maxchars='%d'/>`, 2*one+1), []int{2, 3}},
		{"maxchars 0", `<history maxchars='0'/>`, nil},
		{"seconds", `<history seconds='3600'/>`, []int{0, 1, 2, 3}},
		{"since, past", `<history since='2000-01-01T00:00:00Z'/>`, []int{0, 1, 2, 3}},
		{"since, future", `<history since='2999-01-01T00:00:00Z'/>`, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			bob.send(`<presence to='hist@` + mucSvc + `/Bob'><x xmlns='` + nsMUC + `'>` + tc.history + `</x></presence>`)
			bob.expect(t, w.pres(a, b.full, "", false, nil, ""))
			bob.expect(t, w.pres(b, b.full, "", true, []int{110}, ""))
			for _, i := range tc.want {
				bob.expect(t, hist(i))
			}
			bob.expect(t, subject("hist", b.full))
			alice.expect(t, w.pres(b, a.full, "", true, nil, ""))
			bob.send(`<presence to='hist@` + mucSvc + `/Bob' type='unavailable'/>`)
			bob.expect(t, w.pres(gone, b.full, "unavailable", true, []int{110}, ""))
			alice.expect(t, w.pres(gone, a.full, "unavailable", true, nil, ""))
		})
	}
}

// TestMUCInvitesAndPing: mediated invitations (XEP-0045 7.8.2) add the
// invitee to a members-only room's members; direct invitations (XEP-0249)
// pass through as messages; self-ping (XEP-0410) is answered by the
// service, not-acceptable when not joined.
func TestMUCInvitesAndPing(t *testing.T) {
	w := newMUCWorld(t, testConfig(t), "alice", "bob", "carol")
	alice, bob, carol := w.user("alice", "a"), w.user("bob", "b"), w.user("carol", "c")
	carol.exchange(t, `<presence/>`, `<presence from='carol@localhost/c'/>`)
	a := occ{"inv", "Alice", "alice@localhost/a", "owner", "moderator"}
	w.create(alice, a)
	rj := "inv@" + mucSvc
	configure(t, alice, "inv", map[string]string{"membersonly": "1"})
	alice.send(`<message to='` + rj + `' id='i1'><x xmlns='` + nsUser + `'><invite to='carol@localhost'><reason>join us</reason></invite></x></message>`)
	carol.expect(t, `<message from='`+rj+`' to='carol@localhost'><x xmlns='`+nsUser+`'><invite from='alice@localhost/a'><reason>join us</reason></invite></x></message>`)
	w.join(carol, "inv", "Carol", "") // a member now
	alice.expect(t, w.pres(occ{"inv", "Carol", "carol@localhost/c", "member", "participant"}, a.full, "", true, nil, ""))
	carol.exchange(t, `<message to='`+rj+`' id='i2'><x xmlns='`+nsUser+`'><invite to='bob@localhost'/></x></message>`,
		`<message type='error' id='i2' from='`+rj+`' to='carol@localhost/c'><error type='auth'><forbidden `+stanzasNS+`/><text `+stanzasNS+`>invitations are not allowed in this room</text></error></message>`)
	// XEP-0249: a message between users, which the server routes as is.
	bob.exchange(t, `<presence/>`, `<presence from='bob@localhost/b'/>`)
	carol.send(`<message to='bob@localhost' id='d1'><x xmlns='jabber:x:conference' jid='` + rj + `' reason='hi'/></message>`)
	bob.expect(t, `<message to='bob@localhost' id='d1' from='carol@localhost/c'><x xmlns='jabber:x:conference' jid='`+rj+`' reason='hi'/></message>`)

	// Self-ping.
	carol.exchange(t, `<iq type='get' id='p1' to='`+rj+`/Carol'><ping xmlns='urn:xmpp:ping'/></iq>`, `<iq type='result' id='p1' from='`+rj+`/Carol'/>`)
	// Other iqs to an occupant are relayed under the room's id, and the
	// answer comes back from the occupant's room JID (a vCard request).
	carol.send(`<iq type='get' id='v1' to='` + rj + `/Alice'><vCard xmlns='vcard-temp'/></iq>`)
	got := alice.expect(t, `<iq type='get' id='{*}' from='`+rj+`/Carol' to='alice@localhost/a'><vCard xmlns='vcard-temp'/></iq>`)
	relayID := regexp.MustCompile(`id='([^']*)'`).FindStringSubmatch(got)[1]
	alice.send(`<iq type='result' id='` + relayID + `' to='` + rj + `/Carol'><vCard xmlns='vcard-temp'><FN>Alice</FN></vCard></iq>`)
	carol.expect(t, `<iq type='result' id='v1' from='`+rj+`/Alice' to='carol@localhost/c'><vCard xmlns='vcard-temp'><FN>Alice</FN></vCard></iq>`)
	// An answer the room did not ask for goes nowhere.
	alice.send(`<iq type='result' id='` + relayID + `' to='` + rj + `/Carol'/>`)
	alice.sync(t, "s0")
	carol.exchange(t, `<iq type='get' id='p2' to='`+rj+`/Nobody'><ping xmlns='urn:xmpp:ping'/></iq>`,
		`<iq type='error' id='p2' from='`+rj+`/Nobody' to='carol@localhost/c'><error type='cancel'><item-not-found `+stanzasNS+`/><text `+stanzasNS+`>no such occupant</text></error></iq>`)
	bob.exchange(t, `<iq type='get' id='p3' to='`+rj+`/Carol'><ping xmlns='urn:xmpp:ping'/></iq>`,
		`<iq type='error' id='p3' from='`+rj+`/Carol' to='bob@localhost/b'><error type='modify'><not-acceptable `+stanzasNS+`/><text `+stanzasNS+`>not an occupant of the room</text></error></iq>`)
}

// TestMUCDisco: the server lists the service among its items; the service
// describes itself and lists public rooms.
func TestMUCDisco(t *testing.T) {
	w := newMUCWorld(t, testConfig(t), "alice")
	alice := w.user("alice", "a")
	alice.exchange(t, `<iq type='get' id='i1' to='localhost'><query xmlns='http://jabber.org/protocol/disco#items'/></iq>`,
		`<iq type='result' id='i1' from='localhost'><query xmlns='http://jabber.org/protocol/disco#items'><item jid='`+mucSvc+`'/></query></iq>`)
	alice.exchange(t, `<iq type='get' id='i2' to='`+mucSvc+`'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>`,
		`<iq type='result' id='i2' from='`+mucSvc+`'><query xmlns='http://jabber.org/protocol/disco#info'><identity category='conference' type='text' name='Chatrooms'/>`+
			`<feature var='http://jabber.org/protocol/disco#info'/><feature var='http://jabber.org/protocol/disco#items'/><feature var='http://jabber.org/protocol/muc'/>`+
			`<feature var='urn:xmpp:occupant-id:0'/><feature var='http://jabber.org/protocol/muc#self-ping-optimization'/><feature var='urn:xmpp:ping'/></query></iq>`)
	w.create(alice, occ{"pub", "Alice", "alice@localhost/a", "owner", "moderator"})
	alice.exchange(t, `<iq type='get' id='i3' to='`+mucSvc+`'><query xmlns='http://jabber.org/protocol/disco#items'/></iq>`,
		`<iq type='result' id='i3' from='`+mucSvc+`'><query xmlns='http://jabber.org/protocol/disco#items'><item jid='pub@`+mucSvc+`'/></query></iq>`)
	alice.exchange(t, `<message to='nosuch@`+mucSvc+`' type='groupchat' id='n1'><body>x</body></message>`,
		`<message type='error' id='n1' from='nosuch@`+mucSvc+`' to='alice@localhost/a'><error type='cancel'><item-not-found `+stanzasNS+`/></error></message>`)
	alice.exchange(t, `<presence to='bad@`+mucSvc+`/ '/>`, ``+
		`<presence from='bad@`+mucSvc+`/ ' to='alice@localhost/a' type='error'><x xmlns='`+nsMUC+`'/><error type='modify'><jid-malformed `+stanzasNS+`/><text `+stanzasNS+`>nickname refused by the PRECIS nickname profile (RFC 8266)</text></error></presence>`)
}

// TestMUCPersistence: a persistent room keeps its configuration and
// affiliations across a restart (a second server on the same data
// directory), loaded on demand; a temporary room vanishes when empty; an
// empty persistent room is evicted from memory after muc.idle_unload.
func TestMUCPersistence(t *testing.T) {
	cfg := testConfig(t)
	cfg.MUC.IdleUnload = 0
	t.Run("before", func(t *testing.T) {
		w := newMUCWorld(t, cfg, "alice", "bob", "carol")
		alice := w.user("alice", "a")
		w.create(alice, occ{"keep", "Alice", "alice@localhost/a", "owner", "moderator"})
		configure(t, alice, "keep", map[string]string{"persistentroom": "1", "membersonly": "1", "roomname": "Kept &amp; sound"})
		alice.exchange(t, `<iq type='set' id='m1' to='keep@`+mucSvc+`'><query xmlns='`+nsAdmin+`'><item affiliation='member' jid='bob@localhost'/></query></iq>`,
			`<iq type='result' id='m1' from='keep@`+mucSvc+`'/>`)
		// Bob, a member, reserves a nickname: it is stored with his
		// affiliation.
		w.user("bob", "b").exchange(t, `<iq type='set' id='r1' to='keep@`+mucSvc+`'><query xmlns='jabber:iq:register'><x xmlns='jabber:x:data' type='submit'>`+
			`<field var='FORM_TYPE'><value>http://jabber.org/protocol/muc#register</value></field><field var='muc#register_roomnick'><value>Bobby</value></field></x></query></iq>`,
			`<iq type='result' id='r1' from='keep@`+mucSvc+`'/>`)
		w.create(alice, occ{"temp", "Alice", "alice@localhost/a", "owner", "moderator"})
		alice.send(`<presence to='temp@` + mucSvc + `/Alice' type='unavailable'/>`)
		alice.expect(t, w.pres(occ{"temp", "Alice", "alice@localhost/a", "owner", "none"}, "alice@localhost/a", "unavailable", true, []int{110}, ""))
		alice.send(`<presence to='keep@` + mucSvc + `/Alice' type='unavailable'/>`)
		alice.expect(t, w.pres(occ{"keep", "Alice", "alice@localhost/a", "owner", "none"}, "alice@localhost/a", "unavailable", true, []int{110}, ""))
		if !waitFor(5*time.Second, func() bool { return w.srv.Stats().Modules["muc.rooms_evicted"] == 1 }) {
			t.Fatalf("the empty persistent room was not evicted: %v", w.srv.Stats().Modules)
		}
	})
	t.Run("after", func(t *testing.T) {
		srv, store := startServerOpts(t, cfg, serverOpts{})
		w := &mucWorld{t: t, srv: srv, secret: mucSecret(t, store)}
		bob, carol := w.user("bob", "b"), w.user("carol", "c")
		b := occ{"keep", "Bob", "bob@localhost/b", "member", "participant"}
		bob.exchange(t, `<iq type='get' id='u1' to='keep@`+mucSvc+`'><query xmlns='http://jabber.org/protocol/disco#info' node='x-roomuser-item'/></iq>`,
			`<iq type='result' id='u1' from='keep@`+mucSvc+`'><query xmlns='http://jabber.org/protocol/disco#info' node='x-roomuser-item'><identity category='conference' name='Bobby' type='text'/></query></iq>`)
		bob.send(`<presence to='keep@` + mucSvc + `/Bob'><x xmlns='` + nsMUC + `'/></presence>`)
		bob.expect(t, w.pres(b, b.full, "", true, []int{110}, ""))
		bob.expect(t, subject("keep", b.full))
		bob.exchange(t, `<iq type='get' id='d1' to='keep@`+mucSvc+`'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>`,
			`<iq type='result' id='d1' from='keep@`+mucSvc+`'><query xmlns='http://jabber.org/protocol/disco#info'><identity category='conference' type='text' name='Kept &amp; sound'/>{**}<feature var='muc_membersonly'/>{**}<feature var='muc_persistent'/>{**}</query></iq>`)
		carol.exchange(t, `<presence to='keep@`+mucSvc+`/Carol' id='j1'><x xmlns='`+nsMUC+`'/></presence>`,
			`<presence from='keep@`+mucSvc+`/Carol' to='carol@localhost/c' type='error' id='j1'><x xmlns='`+nsMUC+`'/><error type='auth'><registration-required `+stanzasNS+`/><text `+stanzasNS+`>the room is members-only</text></error></presence>`)
		// The temporary room is gone: joining creates it anew.
		carol.send(`<presence to='temp@` + mucSvc + `/Carol'><x xmlns='` + nsMUC + `'/></presence>`)
		carol.expect(t, w.pres(occ{"temp", "Carol", "carol@localhost/c", "owner", "moderator"}, "carol@localhost/c", "", true, []int{110, 201}, ""))
	})
}

// TestMUCLimits: occupants per room (service-unavailable), rooms per user
// (not-allowed), the message rate per occupant (policy-violation, type
// wait).
func TestMUCLimits(t *testing.T) {
	cfg := testConfig(t)
	cfg.MUC.MaxOccupants = 2
	cfg.MUC.MaxRoomsPerUser = 1
	cfg.MUC.MessageRate = 0.01 // a burst of 1, then one per 100 s
	w := newMUCWorld(t, cfg, "alice", "bob", "carol")
	alice, bob, carol := w.user("alice", "a"), w.user("bob", "b"), w.user("carol", "c")
	a := occ{"lim", "Alice", "alice@localhost/a", "owner", "moderator"}
	w.create(alice, a)
	w.join(bob, "lim", "Bob", "")
	alice.skipUntil(`</presence>`)
	carol.exchange(t, `<presence to='lim@`+mucSvc+`/Carol' id='j1'><x xmlns='`+nsMUC+`'/></presence>`,
		`<presence from='lim@`+mucSvc+`/Carol' to='carol@localhost/c' type='error' id='j1'><x xmlns='`+nsMUC+`'/><error type='wait'><service-unavailable `+stanzasNS+`/><text `+stanzasNS+`>the room is full</text></error></presence>`)
	alice.exchange(t, `<presence to='second@`+mucSvc+`/Alice' id='j2'><x xmlns='`+nsMUC+`'/></presence>`,
		`<presence from='second@`+mucSvc+`/Alice' to='alice@localhost/a' type='error' id='j2'><x xmlns='`+nsMUC+`'/><error type='cancel'><not-allowed `+stanzasNS+`/><text `+stanzasNS+`>too many rooms created by this account</text></error></presence>`)
	alice.send(`<message to='lim@` + mucSvc + `' type='groupchat' id='r1'><body>one</body></message>`)
	alice.expect(t, w.groupchat(a, a.full, "r1", "one"))
	alice.exchange(t, `<message to='lim@`+mucSvc+`' type='groupchat' id='r2'><body>two</body></message>`,
		`<message type='error' id='r2' from='lim@`+mucSvc+`' to='alice@localhost/a'><error type='wait'><policy-violation `+stanzasNS+`/><text `+stanzasNS+`>message rate exceeded</text></error></message>`)
}

// TestMUCSessionEnd: an occupant whose session ends leaves the room; one
// whose connection is lost while stream management parks the session
// stays in it, and gets what the room sent meanwhile on resumption.
func TestMUCSessionEnd(t *testing.T) {
	cfg := tlsConfig(t)
	cfg.Server.EventLoops = 2
	srv, store := startServerOpts(t, cfg, serverOpts{}, "alice", "bob", "carol")
	w := &mucWorld{t: t, srv: srv, secret: mucSecret(t, store)}
	tc := clientTLS(t, cfg)
	login := func(user, res string) *rawConn {
		c := tlsRaw(t, srv, tc)
		c.scramLogin(user, testPassword, res)
		return c
	}
	alice, bob, carol := login("alice", "a"), login("bob", "b"), login("carol", "c")
	a := occ{"end", "Alice", "alice@localhost/a", "owner", "moderator"}
	w.create(alice, a)
	w.join(carol, "end", "Carol", "")
	alice.skipUntil(`</presence>`)
	_ = carol.conn.Close()
	alice.expect(t, w.pres(occ{"end", "Carol", "carol@localhost/c", "none", "none"}, a.full, "unavailable", true, nil, ""))

	id := enableResume(t, bob)
	w.join(bob, "end", "Bob", "")
	alice.skipUntil(`</presence>`)
	bob.cut()
	alice.send(`<message to='end@` + mucSvc + `' type='groupchat' id='g1'><body>still there?</body></message>`)
	alice.expect(t, w.groupchat(a, a.full, "g1", "still there?"))
	alice.exchange(t, `<iq type='get' id='d1' to='end@`+mucSvc+`'><query xmlns='http://jabber.org/protocol/disco#items'/></iq>`,
		`<iq type='result' id='d1' from='end@`+mucSvc+`'><query xmlns='http://jabber.org/protocol/disco#items'><item jid='end@`+mucSvc+`/Alice'/><item jid='end@`+mucSvc+`/Bob'/></query></iq>`)
	next := tlsRaw(t, srv, tc)
	next.scramAuth("bob", testPassword)
	next.send(`<resume xmlns='` + nsSM + `' previd='` + id + `' h='0'/>`)
	next.skipUntil(`<body>still there?</body>`)
	next.exchange(t, `<iq type='get' id='p1' to='end@`+mucSvc+`/Bob'><ping xmlns='urn:xmpp:ping'/></iq>`, `{**}<iq type='result' id='p1' from='end@`+mucSvc+`/Bob'/>`)
}

// fakeArchive stands for the archive module on the MUC archive seam.
type fakeArchive struct {
	mu  sync.Mutex
	got []string
}

func (f *fakeArchive) ArchiveGroupchat(_ hook.Host, room, nick, realBare, occupantID string, msg []byte, _ time.Time) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.got = append(f.got, room+" "+nick+" "+realBare+" "+string(msg))
	return "" // not archived: the copies carry no stanza-id
}

func (f *fakeArchive) DeleteRoomArchive(hook.Host, string) {}

func (f *fakeArchive) QueryRoom(c *hook.Ctx, st *hook.Stanza, room string) error {
	c.ReplyResult([]byte(`<fin xmlns='urn:xmpp:mam:2' complete='true'/>`))
	return nil
}

// TestMUCArchiveSeam: with an archive wired (muc.Module.Archiver), a room
// configured with enablearchiving announces 170 on join, hands each
// groupchat message to the archive and forwards XEP-0313 queries to it;
// a room without archiving refuses them.
func TestMUCArchiveSeam(t *testing.T) {
	cfg := testConfig(t)
	arch := &fakeArchive{}
	srv, store := startServerOpts(t, cfg, serverOpts{modsFor: func(st modules.Store) []hook.Module {
		mods := modules.Standard(st, modules.Options{Config: cfg})
		for i, m := range mods {
			if mm, ok := m.(*muc.Module); ok {
				mm.Archiver = arch
				mods[i] = mm
			}
		}
		return mods
	}}, "alice", "bob")
	w := &mucWorld{t: t, srv: srv, secret: mucSecret(t, store)}
	alice, bob := w.user("alice", "a"), w.user("bob", "b")
	a := occ{"arch", "Alice", "alice@localhost/a", "owner", "moderator"}
	w.create(alice, a)
	rj := "arch@" + mucSvc
	query := `<query xmlns='urn:xmpp:mam:2'/>`
	bob.exchange(t, `<iq type='set' id='q0' to='`+rj+`'>`+query+`</iq>`,
		`<iq type='error' id='q0' from='`+rj+`' to='bob@localhost/b'><error type='cancel'><service-unavailable `+stanzasNS+`/><text `+stanzasNS+`>this room keeps no archive</text></error></iq>`)
	configure(t, alice, "arch", map[string]string{"enablearchiving": "1"}, 170)
	b := occ{"arch", "Bob", "bob@localhost/b", "none", "participant"}
	bob.send(`<presence to='` + rj + `/Bob'><x xmlns='` + nsMUC + `'/></presence>`)
	bob.expect(t, w.pres(a, b.full, "", false, nil, ""))
	bob.expect(t, w.pres(b, b.full, "", true, []int{110, 170}, ""))
	bob.expect(t, subject("arch", b.full))
	bob.send(`<message to='` + rj + `' type='groupchat' id='a1'><body>keep me</body></message>`)
	bob.expect(t, w.groupchat(b, b.full, "a1", "keep me"))
	bob.exchange(t, `<iq type='set' id='q1' to='`+rj+`'>`+query+`</iq>`, `<iq type='result' id='q1' from='`+rj+`'><fin xmlns='urn:xmpp:mam:2' complete='true'/></iq>`)
	arch.mu.Lock()
	defer arch.mu.Unlock()
	want := rj + " Bob bob@localhost <message from='" + rj + "/Bob' type='groupchat' id='a1'><body>keep me</body><occupant-id xmlns='urn:xmpp:occupant-id:0' id='" + w.id("arch", "bob@localhost") + "'/></message>"
	if len(arch.got) != 1 || arch.got[0] != want {
		t.Fatalf("archived %q, want [%q]", arch.got, want)
	}
}

// TestMUCModeration: in a moderated room a visitor has no voice
// (forbidden), asks for it with the muc#request form, which goes to the
// moderators, and gets it when one approves; only moderators change the
// subject unless changesubject allows everyone.
func TestMUCModeration(t *testing.T) {
	w := newMUCWorld(t, testConfig(t), "alice", "bob")
	alice, bob := w.user("alice", "a"), w.user("bob", "b")
	a := occ{"mod", "Alice", "alice@localhost/a", "owner", "moderator"}
	w.create(alice, a)
	rj := "mod@" + mucSvc
	configure(t, alice, "mod", map[string]string{"moderatedroom": "1"})
	v := occ{"mod", "Bob", "bob@localhost/b", "none", "visitor"}
	w.join(bob, "mod", "Bob", "")
	alice.expect(t, w.pres(v, a.full, "", true, nil, ""))
	bob.exchange(t, `<message to='`+rj+`' type='groupchat' id='v1'><body>hello?</body></message>`,
		`<message type='error' id='v1' from='`+rj+`' to='bob@localhost/b'><error type='auth'><forbidden `+stanzasNS+`/><text `+stanzasNS+`>visitors have no voice in this moderated room</text></error></message>`)
	bob.send(`<message to='` + rj + `'><x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE'><value>http://jabber.org/protocol/muc#request</value></field>` +
		`<field var='muc#role' type='list-single'><value>participant</value></field></x></message>`)
	alice.expect(t, `<message from='`+rj+`' to='alice@localhost/a' type='normal'><x xmlns='jabber:x:data' type='form'><title>Voice request</title>`+
		`<field var='FORM_TYPE' type='hidden'><value>http://jabber.org/protocol/muc#request</value></field>`+
		`<field var='muc#role' type='list-single' label='Requested role'><value>participant</value></field>`+
		`<field var='muc#jid' type='jid-single' label='User ID'><value>bob@localhost/b</value></field>`+
		`<field var='muc#roomnick' type='text-single' label='Room nickname'><value>Bob</value></field>`+
		`<field var='muc#request_allow' type='boolean' label='Grant voice to this person?'><value>false</value></field></x></message>`)
	alice.send(`<message to='` + rj + `'><x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE'><value>http://jabber.org/protocol/muc#request</value></field>` +
		`<field var='muc#roomnick'><value>Bob</value></field><field var='muc#request_allow'><value>true</value></field></x></message>`)
	p := occ{"mod", "Bob", "bob@localhost/b", "none", "participant"}
	bob.expect(t, w.pres(p, p.full, "", true, []int{110}, ""))
	alice.expect(t, w.pres(p, a.full, "", true, nil, ""))

	bob.exchange(t, `<message to='`+rj+`' type='groupchat' id='s1'><subject>mine</subject></message>`,
		`<message type='error' id='s1' from='`+rj+`' to='bob@localhost/b'><error type='auth'><forbidden `+stanzasNS+`/><text `+stanzasNS+`>only moderators may change the subject</text></error></message>`)
	alice.send(`<message to='` + rj + `' type='groupchat' id='s2'><subject>Rules</subject></message>`)
	subj := func(to string) string {
		return `<message from='` + rj + `/Alice' to='` + to + `' type='groupchat' id='s2'><subject>Rules</subject><occupant-id xmlns='urn:xmpp:occupant-id:0' id='` + w.id("mod", "alice@localhost") + `'/></message>`
	}
	alice.expect(t, subj(a.full))
	bob.expect(t, subj(p.full))
	// A later joiner gets the subject as the end of its join.
	bob.send(`<presence to='` + rj + `/Bob' type='unavailable'/>`)
	bob.skipUntil(`<status code='110'/>`)
	bob.skipUntil(`</presence>`)
	bob.send(`<presence to='` + rj + `/Bob'><x xmlns='` + nsMUC + `'/></presence>`)
	bob.skipUntil(`<status code='110'/>`)
	bob.skipUntil(`</presence>`)
	bob.expect(t, `<message from='`+rj+`/Alice' to='bob@localhost/b' type='groupchat'><subject>Rules</subject></message>`)
}

// TestMUCBigRoomOrder: in a room past the inline size (64 occupants),
// where the fan-out runs on the worker pool in partitions, every occupant
// still gets every message, in the order sent, after everyone's join.
func TestMUCBigRoomOrder(t *testing.T) {
	const n, msgs = 80, 30
	users := make([]string, n)
	for i := range users {
		users[i] = fmt.Sprintf("u%d", i)
	}
	w := newMUCWorld(t, testConfig(t), users...)
	conns := make([]*rawConn, n)
	for i := range conns {
		conns[i] = w.user(users[i], "r")
	}
	w.create(conns[0], occ{"big", "u0", "u0@localhost/r", "owner", "moderator"})
	for i := 1; i < n; i++ {
		w.join(conns[i], "big", users[i], "<history maxstanzas='0'/>")
	}
	// Everyone has seen everyone's join: the last joiner's presence.
	for i := 0; i < n-1; i++ {
		conns[i].skipUntil(`from='big@` + mucSvc + `/u` + fmt.Sprint(n-1) + `'`)
		conns[i].skipUntil(`</presence>`)
	}
	for m := range msgs {
		conns[m%3].send(fmt.Sprintf(`<message to='big@%s' type='groupchat' id='m%d'><body>%d</body></message>`, mucSvc, m, m))
		// Three senders take turns, each waiting for its own copy, so
		// the room's order is m0, m1, ... for everyone.
		conns[m%3].skipUntil(fmt.Sprintf(`id='m%d'`, m))
	}
	ids := regexp.MustCompile(`type='groupchat' id='(m\d+)'`)
	var first []string
	for i, c := range conns {
		got := c.skipUntil(fmt.Sprintf(`<body>%d</body>`, msgs-1))
		var seq []string
		for _, m := range ids.FindAllStringSubmatch(got, -1) {
			seq = append(seq, m[1])
		}
		if i < 3 {
			continue // the senders consumed part of their stream above
		}
		if len(seq) != msgs {
			t.Fatalf("occupant %d got %d messages: %q", i, len(seq), seq)
		}
		if first == nil {
			for m := range msgs {
				first = append(first, fmt.Sprintf("m%d", m))
			}
		}
		if !slices.Equal(seq, first) {
			t.Fatalf("occupant %d got %q, want %q", i, seq, first)
		}
	}
}

// TestMUCPresenceBroadcast: with muc#roomconfig_presencebroadcast set to
// moderators only, a participant's join, updates and departure go to
// itself alone, and a joiner sees only the moderators: a big room then
// costs O(1) per join.
func TestMUCPresenceBroadcast(t *testing.T) {
	w := newMUCWorld(t, testConfig(t), "alice", "bob")
	alice, bob := w.user("alice", "a"), w.user("bob", "b")
	a := occ{"pb", "Alice", "alice@localhost/a", "owner", "moderator"}
	w.create(alice, a)
	configure(t, alice, "pb", map[string]string{"presencebroadcast": "moderator"})
	b := occ{"pb", "Bob", "bob@localhost/b", "none", "participant"}
	bob.send(`<presence to='pb@` + mucSvc + `/Bob'><x xmlns='` + nsMUC + `'/></presence>`)
	bob.expect(t, w.pres(a, b.full, "", false, nil, ""))
	bob.expect(t, w.pres(b, b.full, "", true, []int{110}, ""))
	bob.expect(t, subject("pb", b.full))
	bob.send(`<message to='pb@` + mucSvc + `' type='groupchat' id='x1'><body>quiet</body></message>`)
	alice.expect(t, w.groupchat(b, a.full, "x1", "quiet")) // no presence of Bob before it
	bob.expect(t, w.groupchat(b, b.full, "x1", "quiet"))
	bob.send(`<presence to='pb@` + mucSvc + `/Bob' type='unavailable'/>`)
	bob.expect(t, w.pres(occ{"pb", "Bob", b.full, "none", "none"}, b.full, "unavailable", true, []int{110}, ""))
	alice.sync(t, "s1") // nothing for Alice
}

// TestMUCBadInput: each class of malformed or misdirected request gets
// its stanza error, with its text.
func TestMUCBadInput(t *testing.T) {
	w := newMUCWorld(t, testConfig(t), "alice")
	alice := w.user("alice", "a")
	w.create(alice, occ{"bad", "Alice", "alice@localhost/a", "owner", "moderator"})
	rj := "bad@" + mucSvc
	errIQ := func(id, from, typ, cond, text string) string {
		s := `<iq type='error' id='` + id + `' from='` + from + `' to='alice@localhost/a'><error type='` + typ + `'><` + cond + ` ` + stanzasNS + `/>`
		if text != "" {
			s += `<text ` + stanzasNS + `>` + text + `</text>`
		}
		return s + `</error></iq>`
	}
	errMsg := func(id, from, typ, cond, text string) string {
		return strings.Replace(strings.Replace(errIQ(id, from, typ, cond, text), `<iq type='error'`, `<message type='error'`, 1), `</iq>`, `</message>`, 1)
	}
	admin := func(id, items string) string {
		return `<iq type='set' id='` + id + `' to='` + rj + `'><query xmlns='` + nsAdmin + `'>` + items + `</query></iq>`
	}
	owner := func(id, inner string) string {
		return `<iq type='set' id='` + id + `' to='` + rj + `'><query xmlns='` + nsOwner + `'>` + inner + `</query></iq>`
	}
	cases := []struct{ name, send, want string }{
		{"unknown role", admin("b1", `<item nick='Alice' role='king'/>`), errIQ("b1", rj, "modify", "bad-request", "items need a known role or affiliation")},
		{"no items", admin("b2", ``), errIQ("b2", rj, "modify", "bad-request", "items need a known role or affiliation")},
		{"item with neither", admin("b3", `<item nick='Alice'/>`), errIQ("b3", rj, "modify", "bad-request", "items need a role or an affiliation")},
		{"affiliation without jid", admin("b4", `<item affiliation='member'/>`), errIQ("b4", rj, "modify", "bad-request", "an affiliation change needs a jid")},
		{"role of nobody", admin("b5", `<item nick='Nobody' role='visitor'/>`), errIQ("b5", rj, "cancel", "item-not-found", "no occupant with that nickname")},
		{"owner set without form", owner("b6", ``), errIQ("b6", rj, "modify", "bad-request", "a muc#roomconfig form of type submit or cancel, or destroy, was expected")},
		{"foreign form", owner("b7", `<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE'><value>urn:example</value></field></x>`),
			errIQ("b7", rj, "modify", "not-acceptable", "unknown FORM_TYPE")},
		{"password without secret", owner("b8", `<x xmlns='jabber:x:data' type='submit'><field var='muc#roomconfig_passwordprotectedroom'><value>1</value></field></x>`),
			errIQ("b8", rj, "modify", "not-acceptable", "a password-protected room needs a password")},
		{"unknown iq to the room", `<iq type='get' id='b9' to='` + rj + `'><query xmlns='urn:example'/></iq>`, errIQ("b9", rj, "cancel", "service-unavailable", "")},
		{"unknown iq to the service", `<iq type='get' id='b10' to='` + mucSvc + `'><query xmlns='urn:example'/></iq>`, errIQ("b10", mucSvc, "cancel", "service-unavailable", "")},
		{"message to the service", `<message id='b11' to='` + mucSvc + `'><body>x</body></message>`, errMsg("b11", mucSvc, "cancel", "service-unavailable", "")},
		{"plain message to the room", `<message id='b12' to='` + rj + `'><body>x</body></message>`, errMsg("b12", rj, "modify", "bad-request", "send groupchat messages to the room")},
		{"groupchat to an occupant", `<message id='b13' type='groupchat' to='` + rj + `/Alice'><body>x</body></message>`, errMsg("b13", rj+"/Alice", "modify", "bad-request", "groupchat messages go to the room")},
		{"private message to nobody", `<message id='b14' type='chat' to='` + rj + `/Nobody'><body>x</body></message>`, errMsg("b14", rj+"/Nobody", "cancel", "item-not-found", "no such occupant")},
		{"invitation to nobody", `<message id='b15' to='` + rj + `'><x xmlns='` + nsUser + `'><invite/></x></message>`, errMsg("b15", rj, "modify", "bad-request", "the invitation names nobody")},
		{"presence without a nick", `<presence id='b16' to='` + rj + `'/>`, `<presence from='` + rj + `' to='alice@localhost/a' type='error' id='b16'><x xmlns='` + nsMUC + `'/><error type='modify'><jid-malformed ` + stanzasNS + `/><text ` + stanzasNS + `>a nickname is required</text></error></presence>`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			alice.exchange(t, tc.send, tc.want)
		})
	}
	// Answers and errors sent to the room are dropped, unanswered.
	alice.send(`<iq type='result' id='r1' to='` + rj + `'/><iq type='error' id='r2' to='` + rj + `'/><message type='error' id='r3' to='` + rj + `'/>`)
	alice.sync(t, "s1")
}

// TestMUCMultiSession: two sessions of one account share a nick: the
// second's join and the first's departure are seen only by themselves,
// both get the room's messages and the nick's private messages, and the
// nick leaves the room with its last session.
func TestMUCMultiSession(t *testing.T) {
	w := newMUCWorld(t, testConfig(t), "alice", "bob", "carol")
	a1, a2, bob, carol := w.user("alice", "one"), w.user("alice", "two"), w.user("bob", "b"), w.user("carol", "c")
	o1 := occ{"ms", "Alice", "alice@localhost/one", "owner", "moderator"}
	o2 := occ{"ms", "Alice", "alice@localhost/two", "owner", "moderator"}
	w.create(a1, o1)
	b := occ{"ms", "Bob", "bob@localhost/b", "none", "participant"}
	w.join(bob, "ms", "Bob", "")
	a1.expect(t, w.pres(b, o1.full, "", true, nil, ""))

	a2.send(`<presence to='ms@` + mucSvc + `/Alice'><x xmlns='` + nsMUC + `'/></presence>`)
	a2.expect(t, w.pres(o1, o2.full, "", true, nil, ""))
	a2.expect(t, w.pres(b, o2.full, "", true, nil, ""))
	a2.expect(t, w.pres(o2, o2.full, "", true, []int{110}, ""))
	a2.expect(t, subject("ms", o2.full))
	carol.exchange(t, `<presence to='ms@`+mucSvc+`/Alice' id='j1'><x xmlns='`+nsMUC+`'/></presence>`,
		`<presence from='ms@`+mucSvc+`/Alice' to='carol@localhost/c' type='error' id='j1'><x xmlns='`+nsMUC+`'/><error type='cancel'><conflict `+stanzasNS+`/><text `+stanzasNS+`>the nickname is in use</text></error></presence>`)

	bob.send(`<message to='ms@` + mucSvc + `' type='groupchat' id='g1'><body>hi all</body></message>`)
	for _, c := range []struct {
		r  *rawConn
		to string
	}{{a1, o1.full}, {a2, o2.full}, {bob, b.full}} {
		c.r.expect(t, w.groupchat(b, c.to, "g1", "hi all"))
	}
	bob.send(`<message to='ms@` + mucSvc + `/Alice' type='chat' id='p1'><body>psst</body></message>`)
	for _, c := range []struct {
		r  *rawConn
		to string
	}{{a1, o1.full}, {a2, o2.full}} {
		c.r.expect(t, `<message from='ms@`+mucSvc+`/Bob' to='`+c.to+`' type='chat' id='p1'><body>psst</body><occupant-id xmlns='urn:xmpp:occupant-id:0' id='`+w.id("ms", "bob@localhost")+`'/><x xmlns='`+nsUser+`'/></message>`)
	}

	a1.send(`<presence to='ms@` + mucSvc + `/Alice' type='unavailable'/>`)
	a1.expect(t, w.pres(occ{"ms", "Alice", o1.full, "owner", "none"}, o1.full, "unavailable", true, []int{110}, ""))
	bob.sync(t, "s1") // Bob saw nothing: Alice is still there
	a2.exchange(t, `<iq type='get' id='sp' to='ms@`+mucSvc+`/Alice'><ping xmlns='urn:xmpp:ping'/></iq>`, `<iq type='result' id='sp' from='ms@`+mucSvc+`/Alice'/>`)
	a2.send(`<presence to='ms@` + mucSvc + `/Alice' type='unavailable'/>`)
	gone := occ{"ms", "Alice", o2.full, "owner", "none"}
	a2.expect(t, w.pres(gone, o2.full, "unavailable", true, []int{110}, ""))
	bob.expect(t, w.pres(gone, b.full, "unavailable", false, nil, ""))
}

// TestMUCReservedNick: registering with a room (XEP-0045 7.10) through
// its muc#register form reserves a nickname and makes the user a member;
// the nickname is then refused to others, on join and on nick change
// (409), and discovered on node x-roomuser-item (7.12); a ban drops it.
func TestMUCReservedNick(t *testing.T) {
	w := newMUCWorld(t, testConfig(t), "alice", "bob", "carol", "dave", "erin")
	alice, bob, carol, dave := w.user("alice", "a"), w.user("bob", "b"), w.user("carol", "c"), w.user("dave", "d")
	a := occ{"reg", "Alice", "alice@localhost/a", "owner", "moderator"}
	w.create(alice, a)
	rj := "reg@" + mucSvc
	const nsReg = "jabber:iq:register"
	regForm := func(id, nick string) string {
		return `<iq type='set' id='` + id + `' to='` + rj + `'><query xmlns='` + nsReg + `'><x xmlns='jabber:x:data' type='submit'>` +
			`<field var='FORM_TYPE'><value>http://jabber.org/protocol/muc#register</value></field>` +
			`<field var='muc#register_roomnick'><value>` + nick + `</value></field></x></query></iq>`
	}
	errIQ := func(id, to, typ, cond, text string) string {
		return `<iq type='error' id='` + id + `' from='` + rj + `' to='` + to + `'><error type='` + typ + `'><` + cond + ` ` + stanzasNS + `/><text ` + stanzasNS + `>` + text + `</text></error></iq>`
	}
	roomUser := func(c *rawConn, id, identity string) {
		t.Helper()
		c.exchange(t, `<iq type='get' id='`+id+`' to='`+rj+`'><query xmlns='http://jabber.org/protocol/disco#info' node='x-roomuser-item'/></iq>`,
			`<iq type='result' id='`+id+`' from='`+rj+`'><query xmlns='http://jabber.org/protocol/disco#info' node='x-roomuser-item'>`+identity+`</query></iq>`)
	}
	witch := `<identity category='conference' name='Witch' type='text'/>`

	// Carol, not in the room, asks for the form and registers.
	carol.exchange(t, `<iq type='get' id='r1' to='`+rj+`'><query xmlns='`+nsReg+`'/></iq>`,
		`<iq type='result' id='r1' from='`+rj+`'><query xmlns='`+nsReg+`'><instructions>Choose the nickname to reserve in this room.</instructions>`+
			`<x xmlns='jabber:x:data' type='form'><title>Registration</title><field type='hidden' var='FORM_TYPE'><value>http://jabber.org/protocol/muc#register</value></field>`+
			`<field label='Desired Nickname' type='text-single' var='muc#register_roomnick'><required/></field></x></query></iq>`)
	roomUser(carol, "u0", "")
	carol.exchange(t, regForm("r2", "Witch"), `<iq type='result' id='r2' from='`+rj+`'/>`)
	carol.exchange(t, `<iq type='get' id='r3' to='`+rj+`'><query xmlns='`+nsReg+`'/></iq>`,
		`<iq type='result' id='r3' from='`+rj+`'><query xmlns='`+nsReg+`'><registered/><username>Witch</username></query></iq>`)
	roomUser(carol, "u1", witch)
	roomUser(bob, "u2", "")

	// The nickname is Carol's: refused to Bob on join (compared by
	// its PRECIS key), to his registration, and to Alice's nick change.
	bob.exchange(t, `<presence to='`+rj+`/WITCH' id='j1'><x xmlns='`+nsMUC+`'/></presence>`,
		`<presence from='`+rj+`/WITCH' to='bob@localhost/b' type='error' id='j1'><x xmlns='`+nsMUC+`'/><error type='cancel'><conflict `+stanzasNS+`/><text `+stanzasNS+`>the nickname is reserved by another user of the room</text></error></presence>`)
	bob.exchange(t, regForm("r4", "witch"), errIQ("r4", "bob@localhost/b", "cancel", "conflict", "the nickname is reserved by another user of the room"))
	alice.exchange(t, `<presence to='`+rj+`/Witch' id='n1'/>`,
		`<presence from='`+rj+`/Witch' to='alice@localhost/a' type='error' id='n1'><x xmlns='`+nsMUC+`'/><error type='cancel'><conflict `+stanzasNS+`/><text `+stanzasNS+`>the nickname is reserved by another user of the room</text></error></presence>`)
	// Nor may Carol reserve a nickname someone else is using.
	carol.exchange(t, regForm("r5", "alice"), errIQ("r5", "carol@localhost/c", "cancel", "conflict", "the nickname is in use"))

	// Bob, in the room, registers: he becomes a member, which the room sees.
	b := occ{"reg", "Bob", "bob@localhost/b", "none", "participant"}
	w.join(bob, "reg", "Bob", "")
	alice.expect(t, w.pres(b, a.full, "", true, nil, ""))
	bob.send(regForm("r6", "Bob"))
	bm := occ{"reg", "Bob", "bob@localhost/b", "member", "participant"}
	bob.expect(t, `<iq type='result' id='r6' from='`+rj+`'/>`)
	bob.expect(t, w.pres(bm, b.full, "", true, []int{110}, ""))
	alice.expect(t, w.pres(bm, a.full, "", true, nil, ""))

	// Carol enters under her nickname as the member she became.
	carol.send(`<presence to='` + rj + `/Witch'><x xmlns='` + nsMUC + `'/></presence>`)
	cm := occ{"reg", "Witch", "carol@localhost/c", "member", "participant"}
	carol.expect(t, w.pres(a, cm.full, "", false, nil, ""))
	carol.expect(t, w.pres(bm, cm.full, "", false, nil, ""))
	carol.expect(t, w.pres(cm, cm.full, "", true, []int{110}, ""))
	carol.expect(t, subject("reg", cm.full))
	alice.expect(t, w.pres(cm, a.full, "", true, nil, ""))
	bob.expect(t, w.pres(cm, b.full, "", false, nil, ""))
	alice.exchange(t, `<iq type='get' id='l1' to='`+rj+`'><query xmlns='`+nsAdmin+`'><item affiliation='member'/></query></iq>`,
		`<iq type='result' id='l1' from='`+rj+`'><query xmlns='`+nsAdmin+`'><item affiliation='member' jid='bob@localhost' nick='Bob'/>`+
			`<item affiliation='member' jid='carol@localhost' nick='Witch'/></query></iq>`)

	// A ban drops the reservation: Dave may take the nickname.
	alice.exchange(t, `<iq type='set' id='m1' to='`+rj+`'><query xmlns='`+nsAdmin+`'><item affiliation='outcast' jid='carol@localhost'/></query></iq>`, `<iq type='result' id='m1' from='`+rj+`'/>`)
	banned := occ{"reg", "Witch", "carol@localhost/c", "outcast", "none"}
	carol.expect(t, w.pres(banned, cm.full, "unavailable", true, []int{110, 301}, `<actor nick='Alice'/>`))
	alice.expect(t, w.pres(banned, a.full, "unavailable", true, []int{301}, `<actor nick='Alice'/>`))
	roomUser(carol, "u3", "")
	carol.exchange(t, regForm("r7", "Witch"), errIQ("r7", "carol@localhost/c", "auth", "forbidden", "banned from the room"))
	dave.exchange(t, regForm("r8", "Witch"), `<iq type='result' id='r8' from='`+rj+`'/>`)

	// Bad forms, and a members-only room whose membership is the admins'.
	dave.exchange(t, `<iq type='set' id='r9' to='`+rj+`'><query xmlns='`+nsReg+`'><x xmlns='jabber:x:data' type='submit'/></query></iq>`,
		errIQ("r9", "dave@localhost/d", "modify", "bad-request", "a muc#register form of type submit was expected"))
	dave.exchange(t, regForm("r10", ""), errIQ("r10", "dave@localhost/d", "modify", "not-acceptable", "nickname refused by the PRECIS nickname profile (RFC 8266)"))
	configure(t, alice, "reg", map[string]string{"membersonly": "1"})
	w.user("erin", "e").exchange(t, regForm("r11", "Erin"), errIQ("r11", "erin@localhost/e", "cancel", "not-allowed", "the room is members-only: its admins grant membership"))

	// Cancelling a registration (XEP-0077 <remove/>): an owner keeps
	// the affiliation and loses the nickname; a member loses both,
	// which in a members-only room removes him with 321.
	remove := func(id string) string {
		return `<iq type='set' id='` + id + `' to='` + rj + `'><query xmlns='` + nsReg + `'><remove/></query></iq>`
	}
	alice.exchange(t, regForm("r12", "Queen"), `<iq type='result' id='r12' from='`+rj+`'/>`)
	roomUser(alice, "u4", `<identity category='conference' name='Queen' type='text'/>`)
	alice.exchange(t, remove("r13"), `<iq type='result' id='r13' from='`+rj+`'/>`)
	roomUser(alice, "u5", "")
	// Bob has seen Carol banned and the configuration change.
	bob.expect(t, w.pres(banned, b.full, "unavailable", false, []int{301}, `<actor nick='Alice'/>`))
	bob.expect(t, `<message from='`+rj+`' to='bob@localhost/b' type='groupchat'><x xmlns='http://jabber.org/protocol/muc#user'><status code='104'/></x></message>`)
	bob.send(remove("r14"))
	bob.expect(t, `<iq type='result' id='r14' from='`+rj+`'/>`)
	gone := occ{"reg", "Bob", "bob@localhost/b", "none", "none"}
	bob.expect(t, w.pres(gone, b.full, "unavailable", true, []int{110, 321}, ""))
	alice.expect(t, w.pres(gone, a.full, "unavailable", true, []int{321}, ""))
	roomUser(bob, "u6", "")
	alice.exchange(t, `<iq type='get' id='l2' to='`+rj+`'><query xmlns='`+nsAdmin+`'><item affiliation='member'/></query></iq>`,
		`<iq type='result' id='l2' from='`+rj+`'><query xmlns='`+nsAdmin+`'><item affiliation='member' jid='dave@localhost' nick='Witch'/></query></iq>`)
	// The owner's affiliation stayed.
	alice.exchange(t, `<iq type='get' id='l3' to='`+rj+`'><query xmlns='`+nsAdmin+`'><item affiliation='owner'/></query></iq>`,
		`<iq type='result' id='l3' from='`+rj+`'><query xmlns='`+nsAdmin+`'><item affiliation='owner' jid='alice@localhost'/></query></iq>`)
}

// TestMUCShutdown: a graceful shutdown removes every occupant with status
// 332, each told by its own unavailable presence before its stream ends
// with system-shutdown; two sessions sharing a nick each get theirs.
func TestMUCShutdown(t *testing.T) {
	w := newMUCWorld(t, testConfig(t), "alice", "bob")
	alice, bob, bob2 := w.user("alice", "a"), w.user("bob", "b"), w.user("bob", "b2")
	a := occ{"bye", "Alice", "alice@localhost/a", "owner", "moderator"}
	w.create(alice, a)
	w.join(bob, "bye", "Bob", "")
	alice.skipUntil(`</presence>`)
	w.join(bob2, "bye", "Bob", "")
	bob2.sync(t, "s1")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- w.srv.Shutdown(ctx) }()
	for _, c := range []struct {
		r *rawConn
		o occ
	}{
		{alice, occ{"bye", "Alice", "alice@localhost/a", "owner", "none"}},
		{bob, occ{"bye", "Bob", "bob@localhost/b", "none", "none"}},
		{bob2, occ{"bye", "Bob", "bob@localhost/b2", "none", "none"}},
	} {
		c.r.expect(t, w.pres(c.o, c.o.full, "unavailable", true, []int{110, 332}, ""))
		if out := c.r.closed(); !strings.HasPrefix(out, "<stream:error><system-shutdown "+streamsNS+"/>") {
			t.Fatalf("%s got %q after its 332, want the system-shutdown stream error", c.o.full, out)
		}
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// TestMUCSharedNickChange: when two sessions of one account share a nick
// and one changes it, both change (XEP-0045 7.6 with multiple sessions):
// each gets its own 303 and 110, the room sees the change once, and the
// old nick is free.
func TestMUCSharedNickChange(t *testing.T) {
	w := newMUCWorld(t, testConfig(t), "alice", "bob", "carol")
	a1, a2, bob, carol := w.user("alice", "one"), w.user("alice", "two"), w.user("bob", "b"), w.user("carol", "c")
	o1 := occ{"sn", "Alice", "alice@localhost/one", "owner", "moderator"}
	o2 := occ{"sn", "Alice", "alice@localhost/two", "owner", "moderator"}
	w.create(a1, o1)
	b := occ{"sn", "Bob", "bob@localhost/b", "none", "participant"}
	w.join(bob, "sn", "Bob", "")
	a1.expect(t, w.pres(b, o1.full, "", true, nil, ""))
	w.join(a2, "sn", "Alice", "")

	renamed := func(s string) string {
		return strings.Replace(s, `role='moderator'/>`, `role='moderator' nick='Alicia'/>`, 1)
	}
	a2.send(`<presence to='sn@` + mucSvc + `/Alicia'/>`)
	n1, n2 := o1, o2
	n1.nick, n2.nick = "Alicia", "Alicia"
	for _, c := range []struct {
		r    *rawConn
		o, n occ
	}{{a1, o1, n1}, {a2, o2, n2}} {
		c.r.expect(t, renamed(w.pres(c.o, c.o.full, "unavailable", true, []int{110, 303}, "")))
		c.r.expect(t, w.pres(c.n, c.n.full, "", true, []int{110}, ""))
	}
	bob.expect(t, renamed(w.pres(o1, b.full, "unavailable", false, []int{303}, "")))
	bob.expect(t, w.pres(n1, b.full, "", false, nil, ""))

	// Messages from either session come from the new nick; the old one
	// is free for others.
	a1.send(`<message to='sn@` + mucSvc + `' type='groupchat' id='g1'><body>renamed</body></message>`)
	bob.expect(t, w.groupchat(n1, b.full, "g1", "renamed"))
	a1.expect(t, w.groupchat(n1, o1.full, "g1", "renamed"))
	a2.expect(t, w.groupchat(n1, o2.full, "g1", "renamed"))
	carol.send(`<presence to='sn@` + mucSvc + `/Alice'><x xmlns='` + nsMUC + `'/></presence>`)
	c := occ{"sn", "Alice", "carol@localhost/c", "none", "participant"}
	carol.skipUntil(`<subject/></message>`)
	bob.expect(t, w.pres(c, b.full, "", false, nil, ""))
}
