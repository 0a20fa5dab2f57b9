package server_test

import (
	"context"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/krill-xmpp/krill/modules"
	"github.com/krill-xmpp/krill/storage"
)

// TestRoster covers roster get, set, pushes to interested resources,
// versioning (XEP-0237) and removal.
func TestRoster(t *testing.T) {
	srv := startServer(t, testConfig(t), "alice", "bob")
	a1 := dialRaw(t, srv)
	a1.scramLogin("alice", testPassword, "one")
	a2 := dialRaw(t, srv)
	a2.scramLogin("alice", testPassword, "two")

	a1.exchange(t, `<iq type='get' id='r1'><query xmlns='jabber:iq:roster'/></iq>`, `<iq type='result' id='r1'><query xmlns='jabber:iq:roster' ver='0'></query></iq>`)
	a2.exchange(t, `<iq type='get' id='r1'><query xmlns='jabber:iq:roster' ver='0'/></iq>`, `<iq type='result' id='r1'/>`) // current version: nothing to send

	// Each set pushes to every interested resource, the setter's push
	// before its result.
	a1.send(`<iq type='set' id='s1'><query xmlns='jabber:iq:roster'><item jid='bob@localhost' name='Bob'><group>Friends</group><group>Work</group></item></query></iq>`)
	item := `<item jid='bob@localhost' name='Bob' subscription='none'><group>Friends</group><group>Work</group></item>`
	var vers []string
	for _, c := range []struct {
		r    *rawConn
		full string
	}{{a1, "alice@localhost/one"}, {a2, "alice@localhost/two"}} {
		got := c.r.expect(t, rosterPush(c.full, "{*}", item))
		vers = append(vers, between(got, ` ver='`, `'>`+item))
	}
	if vers[0] == "" || vers[0] == "0" || vers[0] != vers[1] {
		t.Fatalf("pushes carry versions %q, want one new version", vers)
	}
	a1.expect(t, `<iq type='result' id='s1'/>`)

	a1.exchange(t, `<iq type='get' id='r2'><query xmlns='jabber:iq:roster' ver='0'/></iq>`, `<iq type='result' id='r2'><query xmlns='jabber:iq:roster' ver='`+vers[0]+`'>`+item+`</query></iq>`)
	a1.exchange(t, `<iq type='get' id='r3'><query xmlns='jabber:iq:roster' ver='`+vers[0]+`'/></iq>`, `<iq type='result' id='r3'/>`)

	a1.send(`<iq type='set' id='s2'><query xmlns='jabber:iq:roster'><item jid='bob@localhost' subscription='remove'/></query></iq>`)
	removed := `<item jid='bob@localhost' subscription='remove'/>`
	v1 := between(a1.expect(t, rosterPush("alice@localhost/one", "{*}", removed)), ` ver='`, `'>`)
	v2 := between(a2.expect(t, rosterPush("alice@localhost/two", "{*}", removed)), ` ver='`, `'>`)
	if v1 == vers[0] || v1 != v2 {
		t.Fatalf("removal pushes carry versions %q and %q after %q, want one new version", v1, v2, vers[0])
	}
	a1.expect(t, `<iq type='result' id='s2'/>`)
	a1.exchange(t, `<iq type='set' id='s3'><query xmlns='jabber:iq:roster'><item jid='bob@localhost' subscription='remove'/></query></iq>`,
		`<iq type='error' id='s3' to='alice@localhost/one'><error type='cancel'><item-not-found `+stanzasNS+`/><text `+stanzasNS+`>no such roster item</text></error></iq>`)
	a1.exchange(t, `<iq type='set' id='s4'><query xmlns='jabber:iq:roster'><item jid='a@localhost'/><item jid='b@localhost'/></query></iq>`,
		`<iq type='error' id='s4' to='alice@localhost/one'><error type='modify'><bad-request `+stanzasNS+`/>{*}</error></iq>`)
	// Failed sets push nothing.
	a2.sync(t, "end")
}

// rosterPush is the roster push (RFC 6121 2.1.6) of item to full with
// version ver; its id is the server's own.
func rosterPush(full, ver, item string) string {
	return `<iq type='set' id='push{*}' to='` + full + `'><query xmlns='jabber:iq:roster' ver='` + ver + `'>` + item + `</query></iq>`
}

// TestSubscriptionAndPresence walks the subscription state machine both
// ways (RFC 6121 section 3) and the presence that follows it (section 4).
func TestSubscriptionAndPresence(t *testing.T) {
	srv := startServer(t, testConfig(t), "alice", "bob")
	alice := dialRaw(t, srv)
	alice.scramLogin("alice", testPassword, "a")
	alice.send(`<iq type='get' id='r'><query xmlns='jabber:iq:roster'/></iq><presence/>`)
	alice.expect(t, `<iq type='result' id='r'><query xmlns='jabber:iq:roster' ver='0'></query></iq>`)
	alice.expect(t, `<presence from='alice@localhost/a'/>`) // own presence echoed
	bob := dialRaw(t, srv)
	bob.scramLogin("bob", testPassword, "b")
	bob.send(`<iq type='get' id='r'><query xmlns='jabber:iq:roster'/></iq><presence><priority>1</priority></presence>`)
	bob.expect(t, `<iq type='result' id='r'><query xmlns='jabber:iq:roster' ver='0'></query></iq>`)
	bob.expect(t, `<presence from='bob@localhost/b'><priority>1</priority></presence>`)
	// Neither is subscribed to the other: alice hears nothing of bob.
	alice.sync(t, "s0")

	// alice asks; bob sees the request; alice's item shows ask.
	alice.send(`<presence to='bob@localhost' type='subscribe'/>`)
	alice.expect(t, rosterPush("alice@localhost/a", "{*}", `<item jid='bob@localhost' subscription='none' ask='subscribe'/>`))
	bob.expect(t, `<presence type='subscribe' from='alice@localhost' to='bob@localhost'/>`)

	// bob approves: both rosters change, alice gets subscribed and then
	// bob's current presence.
	bob.send(`<presence to='alice@localhost' type='subscribed'/>`)
	bob.expect(t, rosterPush("bob@localhost/b", "{*}", `<item jid='alice@localhost' subscription='from'/>`))
	alice.expect(t, rosterPush("alice@localhost/a", "{*}", `<item jid='bob@localhost' subscription='to'/>`))
	alice.expect(t, `<presence type='subscribed' from='bob@localhost' to='alice@localhost'/>`)
	alice.expect(t, `<presence from='bob@localhost/b' to='alice@localhost'><priority>1</priority></presence>`)

	// bob changes status: his own resource and alice (subscribed to bob)
	// see it.
	bob.send(`<presence><show>away</show></presence>`)
	bob.expect(t, `<presence from='bob@localhost/b'><show>away</show></presence>`)
	alice.expect(t, `<presence from='bob@localhost/b' to='alice@localhost'><show>away</show></presence>`)

	// bob subscribes back, alice approves: both.
	bob.send(`<presence to='alice@localhost' type='subscribe'/>`)
	bob.expect(t, rosterPush("bob@localhost/b", "{*}", `<item jid='alice@localhost' subscription='from' ask='subscribe'/>`))
	alice.expect(t, `<presence type='subscribe' from='bob@localhost' to='alice@localhost'/>`)
	alice.send(`<presence to='bob@localhost' type='subscribed'/>`)
	alice.expect(t, rosterPush("alice@localhost/a", "{*}", `<item jid='bob@localhost' subscription='both'/>`))
	bob.expect(t, rosterPush("bob@localhost/b", "{*}", `<item jid='alice@localhost' subscription='both'/>`))
	bob.expect(t, `<presence type='subscribed' from='alice@localhost' to='bob@localhost'/>`)
	bob.expect(t, `<presence from='alice@localhost/a' to='bob@localhost'/>`)

	// alice unsubscribes from bob: alice both->from, bob both->to, alice
	// receives bob's unavailable presence, bob the unsubscribe.
	alice.send(`<presence to='bob@localhost' type='unsubscribe'/>`)
	alice.expect(t, rosterPush("alice@localhost/a", "{*}", `<item jid='bob@localhost' subscription='from'/>`))
	alice.expect(t, `<presence type='unavailable' from='bob@localhost/b' to='alice@localhost'/>`)
	bob.expect(t, rosterPush("bob@localhost/b", "{*}", `<item jid='alice@localhost' subscription='to'/>`))
	bob.expect(t, `<presence type='unsubscribe' from='alice@localhost' to='bob@localhost'/>`)
	alice.sync(t, "s1")

	// A second resource of bob's comes online: its initial presence goes
	// to bob's other resource and not to alice (no longer subscribed to
	// bob); it gets the presence of bob's other resource, then the probe
	// of bob's contacts brings it alice's presence.
	b2 := dialRaw(t, srv)
	b2.scramLogin("bob", testPassword, "b2")
	b2.send(`<presence/>`)
	b2.expect(t, `<presence from='bob@localhost/b2'/>`)
	b2.expect(t, `<presence from='bob@localhost/b' to='bob@localhost/b2'><show>away</show></presence>`)
	b2.expect(t, `<presence from='alice@localhost/a' to='bob@localhost/b2'/>`)
	b2.sync(t, "s1")
	bob.expect(t, `<presence from='bob@localhost/b2'/>`)
	bob.sync(t, "s1")
	alice.sync(t, "s2")

	// alice drops her connection without closing the stream: bob, who is
	// subscribed to her, learns she is unavailable.
	_ = alice.conn.Close()
	bob.expect(t, `<presence type='unavailable' from='alice@localhost/a' to='bob@localhost'/>`)
	bob.sync(t, "s2")
	b2.expect(t, `<presence type='unavailable' from='alice@localhost/a' to='bob@localhost'/>`)
	b2.sync(t, "s2")
}

// TestSubscriptionWhileOffline: a request made while the contact is offline
// is stored and delivered at its next login; pre-approval approves at once.
func TestSubscriptionWhileOffline(t *testing.T) {
	srv := startServer(t, testConfig(t), "carol", "dave", "erin")
	carol := dialRaw(t, srv)
	carol.scramLogin("carol", testPassword, "c")
	carol.exchange(t, `<iq type='get' id='r'><query xmlns='jabber:iq:roster'/></iq>`, `<iq type='result' id='r'><query xmlns='jabber:iq:roster' ver='0'></query></iq>`)
	carol.send(`<presence to='dave@localhost' type='subscribe'/>`)
	carol.expect(t, rosterPush("carol@localhost/c", "{*}", `<item jid='dave@localhost' subscription='none' ask='subscribe'/>`))

	dave := dialRaw(t, srv)
	dave.scramLogin("dave", testPassword, "d")
	dave.send(`<presence/>`)
	dave.expect(t, `<presence from='dave@localhost/d'/>`)
	dave.expect(t, `<presence type='subscribe' from='carol@localhost' to='dave@localhost'/>`)
	dave.sync(t, "end") // delivered once

	// erin pre-approves carol; carol's request is then approved at once.
	erin := dialRaw(t, srv)
	erin.scramLogin("erin", testPassword, "e")
	erin.exchange(t, `<iq type='get' id='r'><query xmlns='jabber:iq:roster'/></iq>`, `<iq type='result' id='r'><query xmlns='jabber:iq:roster' ver='0'></query></iq>`)
	erin.send(`<presence to='carol@localhost' type='subscribed'/>`)
	erin.expect(t, rosterPush("erin@localhost/e", "{*}", `<item jid='carol@localhost' subscription='none' approved='true'/>`))
	carol.send(`<presence to='erin@localhost' type='subscribe'/>`)
	carol.expect(t, rosterPush("carol@localhost/c", "{*}", `<item jid='erin@localhost' subscription='none' ask='subscribe'/>`))
	carol.expect(t, rosterPush("carol@localhost/c", "{*}", `<item jid='erin@localhost' subscription='to'/>`))
	erin.expect(t, rosterPush("erin@localhost/e", "{*}", `<item jid='carol@localhost' subscription='from'/>`))
	erin.sync(t, "end")

	// A subscription request to a missing account fails.
	carol.exchange(t, `<presence id='x' to='nobody@localhost' type='subscribe'/>`,
		`<presence type='error' id='x' from='nobody@localhost' to='carol@localhost/c'><error type='cancel'><service-unavailable `+stanzasNS+`/></error></presence>`)
}

// TestOfflineMessages: a message to an account with no available resource is
// stored, delivered with a delay stamp at the next available presence, and
// not again after.
func TestOfflineMessages(t *testing.T) {
	cfg := testConfig(t)
	cfg.IM.OfflineQuota = 2
	srv := startServer(t, cfg, "frank", "gina")
	frank := dialRaw(t, srv)
	frank.scramLogin("frank", testPassword, "f")
	for i, body := range []string{"first", "second", "over quota"} {
		frank.send(`<message id='m` + string(rune('0'+i)) + `' to='gina@localhost' type='chat'><body>` + body + `</body></message>`)
	}
	// Only the third, over the quota, bounces.
	frank.expect(t, `<message type='error' id='m2' from='gina@localhost' to='frank@localhost/f'><error type='cancel'><service-unavailable `+stanzasNS+`/></error></message>`)
	frank.exchange(t, `<message id='u' to='nobody@localhost'><body>x</body></message>`,
		`<message type='error' id='u' from='nobody@localhost' to='frank@localhost/f'><error type='cancel'><service-unavailable `+stanzasNS+`/></error></message>`)

	gina := dialRaw(t, srv)
	gina.scramLogin("gina", testPassword, "g")
	gina.send(`<presence/>`)
	// The presence echo, then the stored messages in the order sent, each
	// with a delay stamp from the server.
	gina.expect(t, `<presence from='gina@localhost/g'/>`)
	for i, body := range []string{"first", "second"} {
		got := gina.expect(t, `<message id='m`+string(rune('0'+i))+`' to='gina@localhost' type='chat' from='frank@localhost/f'><body>`+body+`</body><delay xmlns='urn:xmpp:delay' from='localhost' stamp='{*}'/></message>`)
		if stamp := between(got, "stamp='", "'/>"); !delayStamp.MatchString(stamp) {
			t.Fatalf("delay stamp %q is not an XEP-0082 UTC date-time", stamp)
		}
	}
	gina.sync(t, "end")
	if !waitFor(ioTimeout, func() bool { return srv.Stats().Modules["offline.delivered"] == 2 }) {
		t.Fatalf("stats: %+v", srv.Stats())
	}
	// Not again: a second resource gets its own presence echo and that
	// of the other resource, and no stored message.
	gina2 := dialRaw(t, srv)
	gina2.scramLogin("gina", testPassword, "g2")
	gina2.send(`<presence/>`)
	gina2.expect(t, `<presence from='gina@localhost/g2'/>`)
	gina2.expect(t, `<presence from='gina@localhost/g' to='gina@localhost/g2'/>`)
	gina2.sync(t, "end")
	gina.expect(t, `<presence from='gina@localhost/g2'/>`)
	gina.sync(t, "end2")
}

// delayStamp is the form of an XEP-0203 stamp: XEP-0082 DateTime in UTC.
var delayStamp = regexp.MustCompile(`^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$`)

// TestRestartKeepsRosterAndOffline: a roster and an offline message survive
// a server restart on the same data directory.
func TestRestartKeepsRosterAndOffline(t *testing.T) {
	cfg := testConfig(t)
	first := startServer(t, cfg, "hank", "ivy")
	hank := dialRaw(t, first)
	hank.scramLogin("hank", testPassword, "h")
	hank.exchange(t, `<iq type='set' id='s'><query xmlns='jabber:iq:roster'><item jid='ivy@localhost' name='Ivy'/></query></iq>`, `<iq type='result' id='s'/>`)
	hank.send(`<message id='m' to='ivy@localhost'><body>kept</body></message>`)
	hank.sync(t, "end")
	if !waitFor(ioTimeout, func() bool { return first.Stats().Modules["offline.stored"] == 1 }) {
		t.Fatal("message not stored")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := first.Stop(ctx); err != nil {
		t.Fatal(err)
	}

	second := startServer(t, cfg) // same data directory, no new accounts
	hank = dialRaw(t, second)
	hank.scramLogin("hank", testPassword, "h")
	hank.exchange(t, `<iq type='get' id='r'><query xmlns='jabber:iq:roster'/></iq>`,
		`<iq type='result' id='r'><query xmlns='jabber:iq:roster' ver='{*}'><item jid='ivy@localhost' name='Ivy' subscription='none'/></query></iq>`)
	ivy := dialRaw(t, second)
	ivy.scramLogin("ivy", testPassword, "i")
	ivy.send(`<presence/>`)
	ivy.expect(t, `<presence from='ivy@localhost/i'/>`)
	ivy.expect(t, `<message id='m' to='ivy@localhost' from='hank@localhost/h'><body>kept</body><delay xmlns='urn:xmpp:delay' from='localhost' stamp='{*}'/></message>`)
	ivy.sync(t, "end")
}

// TestModulesWithStorage: vCards (XEP-0054) through the worker pool, and
// the software version (XEP-0092).
func TestModulesWithStorage(t *testing.T) {
	srv := startServer(t, testConfig(t), "judy", "ken")
	judy := dialRaw(t, srv)
	judy.scramLogin("judy", testPassword, "j")
	ken := dialRaw(t, srv)
	ken.scramLogin("ken", testPassword, "k")
	steps := []struct {
		who        *rawConn
		send, want string
	}{
		{judy, `<iq type='get' id='v0'><vCard xmlns='vcard-temp'/></iq>`, `<iq type='result' id='v0'><vCard xmlns='vcard-temp'/></iq>`},
		{judy, `<iq type='set' id='v1'><vCard xmlns='vcard-temp'><FN>Judy</FN></vCard></iq>`, `<iq type='result' id='v1'/>`},
		{judy, `<iq type='get' id='v2'><vCard xmlns='vcard-temp'/></iq>`, `<iq type='result' id='v2'><vCard xmlns='vcard-temp'><FN>Judy</FN></vCard></iq>`},
		{ken, `<iq type='get' id='v3' to='judy@localhost'><vCard xmlns='vcard-temp'/></iq>`, `<iq type='result' id='v3' from='judy@localhost'><vCard xmlns='vcard-temp'><FN>Judy</FN></vCard></iq>`},
		{ken, `<iq type='set' id='v4' to='judy@localhost'><vCard xmlns='vcard-temp'><FN>Evil</FN></vCard></iq>`, `<iq type='error' id='v4' from='judy@localhost' to='ken@localhost/k'><error type='auth'><forbidden ` + stanzasNS + `/></error></iq>`},
		{ken, `<iq type='get' id='sv' to='localhost'><query xmlns='jabber:iq:version'/></iq>`, `<iq type='result' id='sv' from='localhost'><query xmlns='jabber:iq:version'><name>Krill</name><version>dev</version></query></iq>`},
		// The refused set changed nothing.
		{judy, `<iq type='get' id='v5'><vCard xmlns='vcard-temp'/></iq>`, `<iq type='result' id='v5'><vCard xmlns='vcard-temp'><FN>Judy</FN></vCard></iq>`},
	}
	for _, st := range steps {
		st.who.exchange(t, st.send, st.want)
	}
}

// TestBlocking covers XEP-0191: the blocklist, pushes, and enforcement both
// ways, online and offline.
func TestBlocking(t *testing.T) {
	srv := startServer(t, testConfig(t), "lea", "max")
	lea := dialRaw(t, srv)
	lea.scramLogin("lea", testPassword, "l")
	lea2 := dialRaw(t, srv)
	lea2.scramLogin("lea", testPassword, "l2")
	max := dialRaw(t, srv)
	max.scramLogin("max", testPassword, "m")
	max.exchange(t, `<presence/>`, `<presence from='max@localhost/m'/>`)

	lea2.exchange(t, `<iq type='get' id='bl'><blocklist xmlns='urn:xmpp:blocking'/></iq>`, `<iq type='result' id='bl'><blocklist xmlns='urn:xmpp:blocking'></blocklist></iq>`)
	lea.exchange(t, `<iq type='set' id='b1'><block xmlns='urn:xmpp:blocking'><item jid='max@localhost'/></block></iq>`, `<iq type='result' id='b1'/>`)
	// Only lea2 asked for the blocklist, so only lea2 gets the push.
	lea2.expect(t, `<iq type='set' id='block-push' to='lea@localhost/l2'><block xmlns='urn:xmpp:blocking'><item jid='max@localhost'/></block></iq>`)

	max.exchange(t, `<message id='x1' to='lea@localhost/l' type='chat'><body>hi</body></message>`,
		`<message type='error' id='x1' from='lea@localhost/l' to='max@localhost/m'><error type='cancel'><service-unavailable `+stanzasNS+`/></error></message>`)
	lea.exchange(t, `<message id='x2' to='max@localhost' type='chat'><body>hi</body></message>`,
		`<message type='error' id='x2' from='max@localhost' to='lea@localhost/l'><error type='cancel'><not-acceptable `+stanzasNS+`/><blocked xmlns='urn:xmpp:blocking:errors'/></error></message>`)
	// Neither message reached the other side.
	lea.sync(t, "end")
	lea2.sync(t, "end")
	max.sync(t, "end")

	// Offline: lea gone, max's message is refused, not stored.
	_ = lea.conn.Close()
	_ = lea2.conn.Close()
	if !waitFor(ioTimeout, func() bool { return srv.Stats().Sessions == 1 }) {
		t.Fatalf("sessions %d after lea left; want max's only", srv.Stats().Sessions)
	}
	max.exchange(t, `<message id='x3' to='lea@localhost' type='chat'><body>hi</body></message>`,
		`<message type='error' id='x3' from='lea@localhost' to='max@localhost/m'><error type='cancel'><service-unavailable `+stanzasNS+`/></error></message>`)
	if got := srv.Stats().Modules["offline.stored"]; got != 0 {
		t.Fatalf("%d messages stored from a blocked sender", got)
	}

	// Unblock all: messages flow again.
	lea = dialRaw(t, srv)
	lea.scramLogin("lea", testPassword, "l")
	lea.exchange(t, `<iq type='set' id='u1'><unblock xmlns='urn:xmpp:blocking'/></iq>`, `<iq type='result' id='u1'/>`)
	lea.exchange(t, `<presence/>`, `<presence from='lea@localhost/l'/>`)
	max.send(`<message id='x4' to='lea@localhost' type='chat'><body>back</body></message>`)
	lea.expect(t, `<message id='x4' to='lea@localhost' type='chat' from='max@localhost/m'><body>back</body></message>`)
	max.sync(t, "end2")
}

// TestRegistration covers XEP-0077 before authentication: off by default,
// rate-limited per address when on, and failures count like failed logins.
func TestRegistration(t *testing.T) {
	off := startServer(t, testConfig(t))
	r := dialRaw(t, off)
	if feats := r.open(); strings.Contains(feats, "iq-register") {
		t.Fatalf("registration offered while disabled: %q", feats)
	}
	r.send(`<iq type='get' id='g'><query xmlns='jabber:iq:register'/></iq>`)
	if out := r.closed(); !strings.Contains(out, "<not-authorized "+streamsNS+"/>") {
		t.Fatalf("registration while disabled got %q", out)
	}

	cfg := testConfig(t)
	cfg.Register.Enabled = true
	cfg.Register.MaxPerIP = 2
	cfg.Preauth.MaxFailedAuth = 5
	srv := startServer(t, cfg, "taken")
	r = dialRaw(t, srv)
	if feats := r.open(); !strings.Contains(feats, "<register xmlns='http://jabber.org/features/iq-register'/>") {
		t.Fatalf("registration not offered: %q", feats)
	}
	steps := []struct{ send, want string }{
		{`<iq type='get' id='g'><query xmlns='jabber:iq:register'/></iq>`, `<iq type='result' id='g'><query xmlns='jabber:iq:register'><instructions>Choose a username and password.</instructions><username/><password/></query></iq>`},
		{`<iq type='set' id='r1'><query xmlns='jabber:iq:register'><username>newbie</username><password>pw1</password></query></iq>`, `<iq type='result' id='r1'/>`},
		{`<iq type='set' id='r2'><query xmlns='jabber:iq:register'><username>taken</username><password>pw</password></query></iq>`, `<iq type='error' id='r2'><error type='cancel'><conflict ` + stanzasNS + `/>{*}</error></iq>`},
		{`<iq type='set' id='r3'><query xmlns='jabber:iq:register'><username>bad@name</username><password>pw</password></query></iq>`, `<iq type='error' id='r3'><error type='modify'><not-acceptable ` + stanzasNS + `/>{*}</error></iq>`},
		{`<iq type='set' id='r4'><query xmlns='jabber:iq:register'><username>third</username><password>pw</password></query></iq>`, `<iq type='error' id='r4'><error type='wait'><resource-constraint ` + stanzasNS + `/>{*}</error></iq>`},
	}
	for _, st := range steps {
		r.exchange(t, st.send, st.want)
	}
	// The new account logs in.
	n := dialRaw(t, srv)
	if got := n.scramLogin("newbie", "pw1", "x"); got != "newbie@localhost/x" {
		t.Fatalf("bound %q", got)
	}
}

// TestMessageDelivery is RFC 6121 section 8.5's delivery rules as a table:
// each message type to a bare JID, a bound full JID and an unbound full
// JID, of an account with an available resource, of one whose only
// resource has negative priority, and of no account.
func TestMessageDelivery(t *testing.T) {
	srv := startServer(t, testConfig(t), "snd", "rcpt", "neg")
	snd := dialRaw(t, srv)
	snd.scramLogin("snd", testPassword, "s")
	rcpt := dialRaw(t, srv)
	rcpt.scramLogin("rcpt", testPassword, "r")
	rcpt.exchange(t, `<presence/>`, `<presence from='rcpt@localhost/r'/>`)
	neg := dialRaw(t, srv)
	neg.scramLogin("neg", testPassword, "n")
	neg.exchange(t, `<presence><priority>-1</priority></presence>`, `<presence from='neg@localhost/n'><priority>-1</priority></presence>`)

	cases := []struct {
		stanza, to string
		want       string // delivered (to rcpt), stored, error, dropped
	}{
		{"message type='chat'", "rcpt@localhost", "delivered"},
		{"message type='normal'", "rcpt@localhost/r", "delivered"},
		{"message", "rcpt@localhost", "delivered"},
		{"message type='headline'", "rcpt@localhost", "delivered"},
		{"message type='groupchat'", "rcpt@localhost", "error"},
		{"message type='chat'", "rcpt@localhost/gone", "delivered"},
		{"message type='headline'", "rcpt@localhost/gone", "dropped"},
		{"message type='groupchat'", "rcpt@localhost/gone", "error"},
		{"message type='error'", "rcpt@localhost/gone", "dropped"},
		{"message type='chat'", "neg@localhost", "stored"},
		{"message type='normal'", "neg@localhost", "stored"},
		{"message type='headline'", "neg@localhost", "dropped"},
		{"message type='chat'", "nobody@localhost", "error"},
		{"iq type='get'", "rcpt@localhost/gone", "error"},
		{"iq type='error'", "rcpt@localhost/gone", "dropped"},
	}
	for i, tc := range cases {
		name := tc.stanza + " to " + tc.to
		t.Run(name, func(t *testing.T) {
			id := "c" + strings.Repeat("x", i)
			body := "case-" + id
			elem, _, _ := strings.Cut(tc.stanza, " ")
			payload := `<body>` + body + `</body>`
			if elem == "iq" {
				payload = `<query xmlns='urn:example:` + body + `'/>`
			}
			stored := srv.Stats().Modules["offline.stored"]
			sent := `<` + tc.stanza + ` id='` + id + `' to='` + tc.to + `'>` + payload + `</` + elem + `>`
			snd.send(sent)
			// The sender gets exactly the error, or nothing, before the
			// result of a ping round trip that orders what came back.
			if tc.want == "error" {
				snd.expect(t, `<`+elem+` type='error' id='`+id+`' from='`+tc.to+`' to='snd@localhost/s'><error type='{*}'><{*} `+stanzasNS+`/></error></`+elem+`>`)
			}
			snd.sync(t, "end-"+id)
			// The recipient gets exactly the message stamped with the
			// sender's full JID, or nothing before its own round trip.
			// Deliveries go through the mailbox, which may run after the
			// round trip: an undelivered message arriving late fails the
			// next case's exact read.
			if tc.want == "delivered" {
				rcpt.expect(t, `<`+tc.stanza+` id='`+id+`' to='`+tc.to+`' from='snd@localhost/s'>`+payload+`</message>`)
			}
			rcpt.sync(t, "mark-"+id)
			if now := srv.Stats().Modules["offline.stored"]; (now > stored) != (tc.want == "stored") {
				t.Fatalf("stored %d -> %d, want %s", stored, now, tc.want)
			}
		})
	}
	// Nothing arrived late for the last cases either.
	snd.sync(t, "last")
	rcpt.sync(t, "last")
	neg.sync(t, "last")
}

// heldStore holds every roster read until release is closed.
type heldStore struct {
	modules.Store
	entered chan struct{}
	release chan struct{}
}

func (h *heldStore) Roster(ctx context.Context, user string) ([]storage.RosterItem, uint64, error) {
	h.entered <- struct{}{}
	<-h.release
	return h.Store.Roster(ctx, user)
}

// TestWorkerOverload: with the one worker busy and its queue full, storage
// requests are answered with resource-constraint (type wait) at once; the
// event loop does not stall, and the queued work completes afterwards.
func TestWorkerOverload(t *testing.T) {
	cfg := testConfig(t)
	cfg.Server.Workers = 1
	cfg.Server.WorkQueue = 1
	held := &heldStore{entered: make(chan struct{}, 4), release: make(chan struct{})}
	srv := startServerWith(t, cfg, func(s modules.Store) modules.Store { held.Store = s; return held }, "olga", "pete", "quin")
	var conns []*rawConn
	for _, u := range []string{"olga", "pete", "quin"} {
		r := dialRaw(t, srv)
		r.scramLogin(u, testPassword, "x")
		conns = append(conns, r)
	}
	conns[0].send(`<iq type='get' id='busy'><query xmlns='jabber:iq:roster'/></iq>`)
	<-held.entered // the worker is held
	conns[1].send(`<iq type='get' id='queued'><query xmlns='jabber:iq:roster'/></iq>`)
	if !waitFor(ioTimeout, func() bool { return srv.Stats().StanzasIn >= 2 }) {
		t.Fatal("second request not received")
	}
	conns[2].send(`<iq type='get' id='refused'><query xmlns='jabber:iq:roster'/></iq>`)
	conns[2].expect(t, `<iq type='error' id='refused' to='quin@localhost/x'><error type='wait'><resource-constraint `+stanzasNS+`/>{*}</error></iq>`)
	// The loops still serve everyone else meanwhile.
	conns[2].sync(t, "alive")
	close(held.release)
	conns[0].expect(t, `<iq type='result' id='busy'><query xmlns='jabber:iq:roster' ver='0'></query></iq>`)
	conns[1].expect(t, `<iq type='result' id='queued'><query xmlns='jabber:iq:roster' ver='0'></query></iq>`)
	if srv.Stats().WorkRejected == 0 {
		t.Fatal("rejection not counted")
	}
}

// TestRosterCap: im.max_roster_items refuses new contacts beyond the cap;
// existing ones can still be edited.
func TestRosterCap(t *testing.T) {
	cfg := testConfig(t)
	cfg.IM.MaxRosterItems = 2
	srv := startServer(t, cfg, "vic")
	r := dialRaw(t, srv)
	r.scramLogin("vic", testPassword, "v")
	for i, j := range []string{"a@localhost", "b@localhost", "c@localhost", "a@localhost"} {
		id := string(rune('0' + i))
		r.send(`<iq type='set' id='` + id + `'><query xmlns='jabber:iq:roster'><item jid='` + j + `' name='x'/></query></iq>`)
		if i == 2 {
			r.expect(t, `<iq type='error' id='`+id+`' to='vic@localhost/v'><error type='modify'><policy-violation `+stanzasNS+`/><text `+stanzasNS+`>the roster is full (2 items)</text></error></iq>`)
			continue
		}
		// Pushes go only to resources that asked for the roster: vic
		// did not, so the result is all that comes.
		r.expect(t, `<iq type='result' id='`+id+`'/>`)
	}
}
