package server_test

import (
	"context"
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

	a1.send(`<iq type='get' id='r1'><query xmlns='jabber:iq:roster'/></iq>`)
	a1.until(`<iq type='result' id='r1'><query xmlns='jabber:iq:roster' ver='0'></query></iq>`)
	a2.send(`<iq type='get' id='r1'><query xmlns='jabber:iq:roster' ver='0'/></iq>`)
	a2.until(`<iq type='result' id='r1'/>`) // current version: nothing to send

	a1.send(`<iq type='set' id='s1'><query xmlns='jabber:iq:roster'><item jid='bob@localhost' name='Bob'><group>Friends</group><group>Work</group></item></query></iq>`)
	item := `<item jid='bob@localhost' name='Bob' subscription='none'><group>Friends</group><group>Work</group></item>`
	var vers []string
	for _, r := range []*rawConn{a1, a2} {
		got := r.until(item + `</query></iq>`)
		vers = append(vers, between(got, `<query xmlns='jabber:iq:roster' ver='`, `'>`+item))
	}
	if vers[0] == "" || vers[0] == "0" || vers[0] != vers[1] {
		t.Fatalf("pushes carry versions %q, want one new version", vers)
	}
	a1.until(`<iq type='result' id='s1'/>`)

	a1.send(`<iq type='get' id='r2'><query xmlns='jabber:iq:roster' ver='0'/></iq>`)
	a1.until(`ver='` + vers[0] + `'>` + item + `</query></iq>`)
	a1.send(`<iq type='get' id='r3'><query xmlns='jabber:iq:roster' ver='` + vers[0] + `'/></iq>`)
	a1.until(`<iq type='result' id='r3'/>`)

	a1.send(`<iq type='set' id='s2'><query xmlns='jabber:iq:roster'><item jid='bob@localhost' subscription='remove'/></query></iq>`)
	a2.until(`<item jid='bob@localhost' subscription='remove'/>`)
	a1.until(`<iq type='result' id='s2'/>`)
	a1.send(`<iq type='set' id='s3'><query xmlns='jabber:iq:roster'><item jid='bob@localhost' subscription='remove'/></query></iq>`)
	a1.until(`<item-not-found`)
	a1.send(`<iq type='set' id='s4'><query xmlns='jabber:iq:roster'><item jid='a@localhost'/><item jid='b@localhost'/></query></iq>`)
	a1.until(`<bad-request`)
}

// TestSubscriptionAndPresence walks the subscription state machine both
// ways (RFC 6121 section 3) and the presence that follows it (section 4).
func TestSubscriptionAndPresence(t *testing.T) {
	srv := startServer(t, testConfig(t), "alice", "bob")
	alice := dialRaw(t, srv)
	alice.scramLogin("alice", testPassword, "a")
	alice.send(`<iq type='get' id='r'><query xmlns='jabber:iq:roster'/></iq><presence/>`)
	alice.until(`<presence from='alice@localhost/a'`) // own presence echoed
	bob := dialRaw(t, srv)
	bob.scramLogin("bob", testPassword, "b")
	bob.send(`<iq type='get' id='r'><query xmlns='jabber:iq:roster'/></iq><presence><priority>1</priority></presence>`)
	bob.until(`<presence from='bob@localhost/b'`)

	// alice asks; bob sees the request; alice's item shows ask.
	alice.send(`<presence to='bob@localhost' type='subscribe'/>`)
	alice.until(`<item jid='bob@localhost' subscription='none' ask='subscribe'/>`)
	bob.until(`<presence type='subscribe' from='alice@localhost' to='bob@localhost'/>`)

	// bob approves: both rosters change, alice gets subscribed and bob's presence.
	bob.send(`<presence to='alice@localhost' type='subscribed'/>`)
	bob.until(`<item jid='alice@localhost' subscription='from'/>`)
	alice.until(`<item jid='bob@localhost' subscription='to'/>`)
	alice.until(`<presence type='subscribed' from='bob@localhost' to='alice@localhost'/>`)
	alice.until(`from='bob@localhost/b'`)

	// bob changes status: alice (subscribed to bob) sees it.
	bob.send(`<presence><show>away</show></presence>`)
	alice.until(`<show>away</show></presence>`)

	// bob subscribes back, alice approves: both.
	bob.send(`<presence to='alice@localhost' type='subscribe'/>`)
	alice.until(`<presence type='subscribe' from='bob@localhost' to='alice@localhost'/>`)
	alice.send(`<presence to='bob@localhost' type='subscribed'/>`)
	alice.until(`<item jid='bob@localhost' subscription='both'/>`)
	bob.until(`<item jid='alice@localhost' subscription='both'/>`)

	// alice unsubscribes from bob: alice none->from, bob both->to, and
	// alice receives bob's unavailable presence.
	alice.send(`<presence to='bob@localhost' type='unsubscribe'/>`)
	alice.until(`<item jid='bob@localhost' subscription='from'/>`)
	bob.until(`<item jid='alice@localhost' subscription='to'/>`)
	alice.until(`<presence type='unavailable' from='bob@localhost/b' to='alice@localhost'/>`)

	// alice drops her connection without closing the stream: bob, who is
	// subscribed to her, learns she is unavailable.
	_ = alice.conn.Close()
	bob.until(`<presence type='unavailable' from='alice@localhost/a'`)
}

// TestSubscriptionWhileOffline: a request made while the contact is offline
// is stored and delivered at its next login; pre-approval approves at once.
func TestSubscriptionWhileOffline(t *testing.T) {
	srv := startServer(t, testConfig(t), "carol", "dave", "erin")
	carol := dialRaw(t, srv)
	carol.scramLogin("carol", testPassword, "c")
	carol.send(`<presence to='dave@localhost' type='subscribe'/>`)
	carol.send(`<iq type='get' id='r'><query xmlns='jabber:iq:roster'/></iq>`)
	carol.until(`<item jid='dave@localhost' subscription='none' ask='subscribe'/>`)

	dave := dialRaw(t, srv)
	dave.scramLogin("dave", testPassword, "d")
	dave.send(`<presence/>`)
	dave.until(`<presence type='subscribe' from='carol@localhost' to='dave@localhost'/>`)

	// erin pre-approves carol; carol's request is then approved at once.
	erin := dialRaw(t, srv)
	erin.scramLogin("erin", testPassword, "e")
	erin.send(`<iq type='get' id='r'><query xmlns='jabber:iq:roster'/></iq>`)
	erin.send(`<presence to='carol@localhost' type='subscribed'/>`)
	erin.until(`<item jid='carol@localhost' subscription='none' approved='true'/>`)
	carol.send(`<presence to='erin@localhost' type='subscribe'/>`)
	carol.until(`<item jid='erin@localhost' subscription='to'/>`)
	erin.until(`<item jid='carol@localhost' subscription='from'/>`)

	// A subscription request to a missing account fails.
	carol.send(`<presence id='x' to='nobody@localhost' type='subscribe'/>`)
	carol.until(`<service-unavailable`)
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
	frank.until(`<message type='error' id='m2'`)
	frank.send(`<message id='u' to='nobody@localhost'><body>x</body></message>`)
	frank.until(`<message type='error' id='u'`)

	gina := dialRaw(t, srv)
	gina.scramLogin("gina", testPassword, "g")
	gina.send(`<presence/>`)
	got := gina.until(`second</body><delay xmlns='urn:xmpp:delay' from='localhost'`)
	if !strings.Contains(got, `first</body><delay`) || strings.Index(got, "first") > strings.Index(got, "second") {
		t.Fatalf("offline messages out of order or missing: %q", got)
	}
	if !waitFor(ioTimeout, func() bool { return srv.Stats().Modules["offline.delivered"] == 2 }) {
		t.Fatalf("stats: %+v", srv.Stats())
	}
	gina2 := dialRaw(t, srv)
	gina2.scramLogin("gina", testPassword, "g2")
	gina2.send(`<presence/><iq type='get' id='end' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>`)
	if out := gina2.until(`id='end'`); strings.Contains(out, "<body>") {
		t.Fatalf("offline messages delivered twice: %q", out)
	}
}

// TestRestartKeepsRosterAndOffline: a roster and an offline message survive
// a server restart on the same data directory.
func TestRestartKeepsRosterAndOffline(t *testing.T) {
	cfg := testConfig(t)
	first := startServer(t, cfg, "hank", "ivy")
	hank := dialRaw(t, first)
	hank.scramLogin("hank", testPassword, "h")
	hank.send(`<iq type='set' id='s'><query xmlns='jabber:iq:roster'><item jid='ivy@localhost' name='Ivy'/></query></iq>`)
	hank.until(`<iq type='result' id='s'/>`)
	hank.send(`<message id='m' to='ivy@localhost'><body>kept</body></message>`)
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
	hank.send(`<iq type='get' id='r'><query xmlns='jabber:iq:roster'/></iq>`)
	hank.until(`<item jid='ivy@localhost' name='Ivy' subscription='none'/>`)
	ivy := dialRaw(t, second)
	ivy.scramLogin("ivy", testPassword, "i")
	ivy.send(`<presence/>`)
	ivy.until(`kept</body>`)
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
		{judy, `<iq type='get' id='v2'><vCard xmlns='vcard-temp'/></iq>`, `<FN>Judy</FN></vCard></iq>`},
		{ken, `<iq type='get' id='v3' to='judy@localhost'><vCard xmlns='vcard-temp'/></iq>`, `<iq type='result' id='v3' from='judy@localhost'><vCard xmlns='vcard-temp'><FN>Judy</FN></vCard></iq>`},
		{ken, `<iq type='set' id='v4' to='judy@localhost'><vCard xmlns='vcard-temp'><FN>Evil</FN></vCard></iq>`, `<forbidden`},
		{ken, `<iq type='get' id='sv' to='localhost'><query xmlns='jabber:iq:version'/></iq>`, `<name>Krill</name>`},
	}
	for _, st := range steps {
		st.who.send(st.send)
		st.who.until(st.want)
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
	max.send(`<presence/>`)
	max.until(`<presence from='max@localhost/m'`)

	lea2.send(`<iq type='get' id='bl'><blocklist xmlns='urn:xmpp:blocking'/></iq>`)
	lea2.until(`<iq type='result' id='bl'><blocklist xmlns='urn:xmpp:blocking'></blocklist></iq>`)
	lea.send(`<iq type='set' id='b1'><block xmlns='urn:xmpp:blocking'><item jid='max@localhost'/></block></iq>`)
	lea.until(`<iq type='result' id='b1'/>`)
	lea2.until(`<block xmlns='urn:xmpp:blocking'><item jid='max@localhost'/></block></iq>`)

	max.send(`<message id='x1' to='lea@localhost/l' type='chat'><body>hi</body></message>`)
	max.until(`<message type='error' id='x1' from='lea@localhost/l' to='max@localhost/m'><error type='cancel'><service-unavailable`)
	lea.send(`<message id='x2' to='max@localhost' type='chat'><body>hi</body></message>`)
	lea.until(`<not-acceptable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/><blocked xmlns='urn:xmpp:blocking:errors'/>`)

	// Offline: lea gone, max's message is refused, not stored.
	_ = lea.conn.Close()
	_ = lea2.conn.Close()
	waitFor(ioTimeout, func() bool { return srv.Stats().Sessions == 1 })
	max.send(`<message id='x3' to='lea@localhost' type='chat'><body>hi</body></message>`)
	max.until(`<message type='error' id='x3'`)
	if got := srv.Stats().Modules["offline.stored"]; got != 0 {
		t.Fatalf("%d messages stored from a blocked sender", got)
	}

	// Unblock all: messages flow again.
	lea = dialRaw(t, srv)
	lea.scramLogin("lea", testPassword, "l")
	lea.send(`<iq type='set' id='u1'><unblock xmlns='urn:xmpp:blocking'/></iq>`)
	lea.until(`<iq type='result' id='u1'/>`)
	lea.send(`<presence/>`)
	lea.until(`<presence from='lea@localhost/l'`)
	max.send(`<message id='x4' to='lea@localhost' type='chat'><body>back</body></message>`)
	lea.until(`back</body></message>`)
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
		{`<iq type='get' id='g'><query xmlns='jabber:iq:register'/></iq>`, `<username/><password/></query></iq>`},
		{`<iq type='set' id='r1'><query xmlns='jabber:iq:register'><username>newbie</username><password>pw1</password></query></iq>`, `<iq type='result' id='r1'/>`},
		{`<iq type='set' id='r2'><query xmlns='jabber:iq:register'><username>taken</username><password>pw</password></query></iq>`, `<conflict xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>`},
		{`<iq type='set' id='r3'><query xmlns='jabber:iq:register'><username>bad@name</username><password>pw</password></query></iq>`, `<not-acceptable`},
		{`<iq type='set' id='r4'><query xmlns='jabber:iq:register'><username>third</username><password>pw</password></query></iq>`, `<resource-constraint`},
	}
	for _, st := range steps {
		r.send(st.send)
		r.until(st.want)
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
	rcpt.send(`<presence/>`)
	rcpt.until(`<presence from='rcpt@localhost/r'`)
	neg := dialRaw(t, srv)
	neg.scramLogin("neg", testPassword, "n")
	neg.send(`<presence><priority>-1</priority></presence>`)
	neg.until(`<presence from='neg@localhost/n'`)

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
			snd.send(`<` + tc.stanza + ` id='` + id + `' to='` + tc.to + `'>` + payload + `</` + elem + `>`)
			// A ping round trip orders what came back for this case.
			snd.send(`<iq type='get' id='end-` + id + `' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>`)
			back := snd.until(`id='end-` + id + `'`)
			gotError := strings.Contains(back, `type='error' id='`+id+`'`)
			if gotError != (tc.want == "error") {
				t.Fatalf("error reply %v, want %s: %q", gotError, tc.want, back)
			}
			rcpt.send(`<iq type='get' id='mark-` + id + `' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>`)
			// Deliveries go through the mailbox; give them the same path.
			got := rcpt.until(`id='mark-` + id + `'`)
			if tc.want == "delivered" && !strings.Contains(got, body) {
				got += rcpt.until(body)
			}
			if delivered := strings.Contains(got, body); delivered != (tc.want == "delivered") {
				t.Fatalf("delivered %v, want %s: %q", delivered, tc.want, got)
			}
			if now := srv.Stats().Modules["offline.stored"]; (now > stored) != (tc.want == "stored") {
				t.Fatalf("stored %d -> %d, want %s", stored, now, tc.want)
			}
		})
	}
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
	conns[2].until(`<iq type='error' id='refused' to='quin@localhost/x'><error type='wait'><resource-constraint`)
	// The loops still serve everyone else meanwhile.
	conns[2].send(`<iq type='get' id='alive' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>`)
	conns[2].until(`id='alive'`)
	close(held.release)
	conns[0].until(`<iq type='result' id='busy'>`)
	conns[1].until(`<iq type='result' id='queued'>`)
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
			r.until(`<iq type='error' id='` + id + `' to='vic@localhost/v'><error type='modify'><policy-violation`)
			continue
		}
		r.until(`<iq type='result' id='` + id + `'/>`)
	}
}
