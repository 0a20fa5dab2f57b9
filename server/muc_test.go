package server_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"strings"
	"testing"

	"github.com/krill-xmpp/krill/config"
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

// configure submits fields (var suffix to value) of the room form as owner c.
func configure(t *testing.T, c *rawConn, room string, fields map[string]string) {
	t.Helper()
	f := `<field var='FORM_TYPE'><value>http://jabber.org/protocol/muc#roomconfig</value></field>`
	for k, v := range fields {
		f += `<field var='muc#roomconfig_` + k + `'><value>` + v + `</value></field>`
	}
	c.exchange(t, `<iq type='set' id='cfg' to='`+room+`@`+mucSvc+`'><query xmlns='`+nsOwner+`'><x xmlns='jabber:x:data' type='submit'>`+f+`</x></query></iq>`,
		`<iq type='result' id='cfg' from='`+room+`@`+mucSvc+`'/>`)
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
