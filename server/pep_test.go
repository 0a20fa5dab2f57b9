package server_test

import (
	"context"
	"crypto/sha1"
	"encoding/base64"
	"sort"
	"strings"
	"testing"

	msasl "mellium.im/sasl"

	"github.com/krill-xmpp/krill/config"
	"github.com/krill-xmpp/krill/server"
	"github.com/krill-xmpp/krill/storage"
)

// Namespaces the PEP tests write often.
const (
	nsPubSub      = "http://jabber.org/protocol/pubsub"
	nsPubSubEvent = "http://jabber.org/protocol/pubsub#event"
	nsPubSubErr   = "http://jabber.org/protocol/pubsub#errors"
	stanzaErrNS   = "xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'"
	legacyDevices = "eu.siacs.conversations.axolotl.devicelist"
)

// testCaps is a client's XEP-0115 capabilities: its disco#info answer and
// the ver it hashes to (computed here by the rules of section 5.1, not by
// the server's code).
type testCaps struct {
	node     string
	features []string
}

func (c testCaps) ver() string {
	s := "client/pc//Test<"
	f := append([]string(nil), c.features...)
	sort.Strings(f)
	for _, v := range f {
		s += v + "<"
	}
	sum := sha1.Sum([]byte(s))
	return base64.StdEncoding.EncodeToString(sum[:])
}

// presence is an available presence announcing the caps.
func (c testCaps) presence() string {
	return `<presence><c xmlns='http://jabber.org/protocol/caps' hash='sha-1' node='` + c.node + `' ver='` + c.ver() + `'/></presence>`
}

// query is the server's disco#info query about these caps.
func (c testCaps) query(id, full string) string {
	return `<iq type='get' id='` + id + `' from='localhost' to='` + full + `'><query xmlns='http://jabber.org/protocol/disco#info' node='` + c.node + `#` + c.ver() + `'/></iq>`
}

// answer is the client's reply to query.
func (c testCaps) answer(id string) string {
	b := `<iq type='result' id='` + id + `' to='localhost'><query xmlns='http://jabber.org/protocol/disco#info' node='` + c.node + `#` + c.ver() + `'><identity category='client' type='pc' name='Test'/>`
	for _, f := range c.features {
		b += `<feature var='` + f + `'/>`
	}
	return b + `</query></iq>`
}

var (
	// capsOMEMO is a client that wants device lists, nicknames and
	// avatars (as Conversations does).
	capsOMEMO = testCaps{"http://conversations.im", []string{
		"http://jabber.org/protocol/caps", "http://jabber.org/protocol/disco#info",
		legacyDevices + "+notify", "urn:xmpp:omemo:2:devices+notify",
		"http://jabber.org/protocol/nick+notify", "urn:xmpp:avatar:metadata+notify",
		"urn:xmpp:bookmarks:1+notify", "http://jabber.org/protocol/tune+notify",
		"http://jabber.org/protocol/mood+notify",
	}}
	// capsPlain wants no notification.
	capsPlain = testCaps{"http://example.org/plain", []string{"http://jabber.org/protocol/caps", "http://jabber.org/protocol/disco#info"}}
)

// subscribe makes contact subscribed to owner's presence (owner's roster:
// contact "from", or "both" with mutual).
func subscribe(t *testing.T, store *storage.SQL, owner, contact string, mutual bool) {
	t.Helper()
	ownerSub, contactSub := storage.SubFrom, storage.SubTo
	if mutual {
		ownerSub, contactSub = storage.SubBoth, storage.SubBoth
	}
	err := store.UpdateRosters(context.Background(), func(tx storage.RosterTx) error {
		if err := tx.PutItem(owner, storage.RosterItem{Contact: contact + "@localhost", Subscription: ownerSub}); err != nil {
			return err
		}
		return tx.PutItem(contact, storage.RosterItem{Contact: owner + "@localhost", Subscription: contactSub})
	})
	if err != nil {
		t.Fatal(err)
	}
}

// pepLogin logs user/res in, sends available presence with caps and
// answers the caps query when asked (queryID non-empty); it reads up to
// the echo of its own presence.
func pepLogin(t *testing.T, srv *server.Server, user, res string, caps testCaps, queryID string) *rawConn {
	t.Helper()
	c := dialRaw(t, srv)
	full := c.scramLogin(user, testPassword, res)
	c.send(caps.presence())
	if queryID != "" {
		c.expect(t, caps.query(queryID, full))
		c.send(caps.answer(queryID))
	}
	c.expect(t, `<presence from='`+full+`'><c xmlns='http://jabber.org/protocol/caps' hash='sha-1' node='`+caps.node+`' ver='`+caps.ver()+`'/></presence>`)
	return c
}

// devicelist is the legacy OMEMO device-list publish as Conversations
// sends it (XEP-0384 0.3 section 4.2 with the item id 'current' and the
// publish-options form Conversations adds), whitespace as in the XEP.
func devicelist(id, device string) string {
	return `<iq from='alice@localhost' type='set' id='` + id + `'>
  <pubsub xmlns='http://jabber.org/protocol/pubsub'>
    <publish node='eu.siacs.conversations.axolotl.devicelist'>
      <item id='current'>
        <list xmlns='eu.siacs.conversations.axolotl'>
          <device id='` + device + `' />
        </list>
      </item>
    </publish>
    <publish-options>
      <x xmlns='jabber:x:data' type='submit'>
        <field var='FORM_TYPE' type='hidden'>
          <value>http://jabber.org/protocol/pubsub#publish-options</value>
        </field>
        <field var='pubsub#access_model'>
          <value>open</value>
        </field>
      </x>
    </publish-options>
  </pubsub>
</iq>`
}

func devicelistPayload(device string) string {
	return `<list xmlns='eu.siacs.conversations.axolotl'>
          <device id='` + device + `' />
        </list>`
}

func event(from, to, node, id, payload string) string {
	return `<message from='` + from + `' to='` + to + `' type='headline' id='{*}'><event xmlns='` + nsPubSubEvent + `'><items node='` + node + `'><item id='` + id + `'>` + payload + `</item></items></event></message>`
}

func publishResult(id, node, item string) string {
	return `<iq type='result' id='` + id + `'><pubsub xmlns='` + nsPubSub + `'><publish node='` + node + `'><item id='` + item + `'/></publish></pubsub></iq>`
}

// TestPEPNotifyByCaps: a publish notifies the owner's resource and the
// subscribed contacts whose caps ask for the node, and nobody else; one
// disco#info query per unknown hash, none for a cached one; the last item
// reaches a resource that comes online later.
func TestPEPNotifyByCaps(t *testing.T) {
	srv, store := startServerOpts(t, testConfig(t), serverOpts{}, "alice", "bob", "carol", "dave")
	subscribe(t, store, "alice", "bob", true)
	subscribe(t, store, "alice", "carol", false)
	// dave has OMEMO caps but no subscription to alice.
	alice := pepLogin(t, srv, "alice", "a", capsOMEMO, "caps-1")
	alice.sync(t, "s0")
	bob := pepLogin(t, srv, "bob", "b", capsOMEMO, "") // cached: no query
	bob.expect(t, `<presence from='alice@localhost/a' to='bob@localhost/b'><c xmlns='http://jabber.org/protocol/caps' hash='sha-1' node='`+capsOMEMO.node+`' ver='`+capsOMEMO.ver()+`'/></presence>`)
	bob.sync(t, "s0")
	alice.expect(t, `<presence from='bob@localhost/b' to='alice@localhost'><c xmlns='http://jabber.org/protocol/caps' hash='sha-1' node='`+capsOMEMO.node+`' ver='`+capsOMEMO.ver()+`'/></presence>`)
	carol := pepLogin(t, srv, "carol", "c", capsPlain, "caps-2")
	carol.expect(t, `<presence from='alice@localhost/a' to='carol@localhost/c'>{**}</presence>`)
	carol.sync(t, "s0")
	dave := pepLogin(t, srv, "dave", "d", capsOMEMO, "")
	dave.sync(t, "s0")

	alice.send(devicelist("pub1", "12345"))
	alice.expect(t, event("alice@localhost", "alice@localhost/a", legacyDevices, "current", devicelistPayload("12345")))
	alice.expect(t, `<iq type='result' id='pub1'><pubsub xmlns='`+nsPubSub+`'><publish node='`+legacyDevices+`'><item id='current'/></publish></pubsub></iq>`)
	bob.expect(t, event("alice@localhost", "bob@localhost/b", legacyDevices, "current", devicelistPayload("12345")))
	// carol (no +notify) and dave (not subscribed) get nothing.
	carol.sync(t, "s1")
	dave.sync(t, "s1")

	// A second resource of bob's gets the last item after the presence
	// of its contacts.
	b2 := dialRaw(t, srv)
	b2.scramLogin("bob", testPassword, "b2")
	b2.send(capsOMEMO.presence())
	b2.expect(t, `<presence from='bob@localhost/b2'>{**}</presence>`)
	b2.expect(t, `<presence from='bob@localhost/b' to='bob@localhost/b2'>{**}</presence>`)
	b2.expect(t, `<presence from='alice@localhost/a' to='bob@localhost/b2'>{**}</presence>`)
	b2.expect(t, event("alice@localhost", "bob@localhost/b2", legacyDevices, "current", devicelistPayload("12345")))
	b2.sync(t, "s2")

	// dave fetches the open node without any subscription, as OMEMO
	// does (XEP-0384 section 5.3).
	dave.exchange(t, `<iq type='get' to='alice@localhost' id='fetch1'><pubsub xmlns='http://jabber.org/protocol/pubsub'><items node='eu.siacs.conversations.axolotl.devicelist'/></pubsub></iq>`,
		`<iq type='result' id='fetch1' from='alice@localhost'><pubsub xmlns='`+nsPubSub+`'><items node='`+legacyDevices+`'><item id='current'>`+devicelistPayload("12345")+`</item></items></pubsub></iq>`)

	// dave subscribes to alice's presence and alice approves: dave's
	// resource gets the last item once the approval reaches it (on_sub).
	// The item is sent beside what the roster and presence modules send
	// from other workers, so only its arrival is checked, last.
	dave.send(`<presence to='alice@localhost' type='subscribe'/>`)
	alice.skipUntil(`<presence type='subscribe' from='dave@localhost' to='alice@localhost'/>`)
	alice.send(`<presence to='dave@localhost' type='subscribed'/>`)
	got := dave.skipUntil(`<message from='alice@localhost' to='dave@localhost/d' type='headline' id='`)
	got += dave.skipUntil(`<item id='current'>` + devicelistPayload("12345") + `</item></items></event></message>`)
	if !strings.Contains(got, `<presence type='subscribed' from='alice@localhost' to='dave@localhost'/>`) {
		t.Fatalf("the item came before the approval: %q", got)
	}
}

// TestPEPCapsVerification: an answer that does not hash to the announced
// ver is not cached (the next session announcing it is asked again); an
// error answer neither; a verified answer is cached for everyone.
func TestPEPCapsVerification(t *testing.T) {
	srv, store := startServerOpts(t, testConfig(t), serverOpts{}, "alice", "bob")
	subscribe(t, store, "alice", "bob", true)
	c1 := dialRaw(t, srv)
	full := c1.scramLogin("bob", testPassword, "r1")
	c1.send(capsOMEMO.presence())
	c1.expect(t, capsOMEMO.query("caps-1", full))
	// Lies: answers with capsPlain's features under capsOMEMO's ver.
	lie := strings.Replace(capsPlain.answer("caps-1"), capsPlain.node+"#"+capsPlain.ver(), capsOMEMO.node+"#"+capsOMEMO.ver(), 1)
	c1.send(lie)
	c1.expect(t, `<presence from='`+full+`'>{**}</presence>`)
	c1.sync(t, "s0")
	// The next session with that ver is asked again; it answers with an
	// error: still not cached.
	c2 := dialRaw(t, srv)
	full2 := c2.scramLogin("bob", testPassword, "r2")
	c2.send(capsOMEMO.presence())
	c2.expect(t, capsOMEMO.query("caps-2", full2))
	c2.send(`<iq type='error' id='caps-2' to='localhost'><error type='cancel'><service-unavailable ` + stanzaErrNS + `/></error></iq>`)
	c2.expect(t, `<presence from='`+full2+`'>{**}</presence>`)
	c2.expect(t, `<presence from='`+full+`' to='`+full2+`'>{**}</presence>`)
	c2.sync(t, "s0")
	c1.expect(t, `<presence from='`+full2+`'>{**}</presence>`)
	c1.sync(t, "s1")
	// A third answers truthfully: cached, and it gets notifications;
	// the two before it do not (their caps never verified).
	c3 := pepLogin(t, srv, "bob", "r3", capsOMEMO, "caps-3")
	c3.expect(t, `<presence from='`+full+`' to='bob@localhost/r3'>{**}</presence>`)
	c3.expect(t, `<presence from='`+full2+`' to='bob@localhost/r3'>{**}</presence>`)
	c3.sync(t, "s0")
	c1.expect(t, `<presence from='bob@localhost/r3'>{**}</presence>`)
	c2.expect(t, `<presence from='bob@localhost/r3'>{**}</presence>`)
	alice := pepLogin(t, srv, "alice", "a", capsOMEMO, "")
	for _, r := range []string{"r1", "r2", "r3"} {
		alice.expect(t, `<presence from='bob@localhost/`+r+`' to='alice@localhost/a'>{**}</presence>`)
	}
	alice.send(devicelist("p", "1"))
	alice.expect(t, event("alice@localhost", "alice@localhost/a", legacyDevices, "current", devicelistPayload("1")))
	alice.expect(t, publishResult("p", legacyDevices, "current"))
	c3.skipUntil(`<presence from='alice@localhost/a' to='bob@localhost'>`)
	c3.skipUntil(`</presence>`)
	c3.expect(t, event("alice@localhost", "bob@localhost/r3", legacyDevices, "current", devicelistPayload("1")))
	c3.sync(t, "s1")
	for _, c := range []*rawConn{c1, c2} {
		c.expect(t, `<presence from='alice@localhost/a' to='bob@localhost'>{**}</presence>`)
		c.sync(t, "s2")
	}
}

// pepConfig is a test configuration with small PEP limits.
func pepConfig(t *testing.T) config.Config {
	cfg := testConfig(t)
	cfg.PEP.MaxNodes = 4
	cfg.PEP.MaxItems = 3
	cfg.PEP.MaxItemBytes = 200
	cfg.PEP.MaxBytes = 700
	return cfg
}

// TestPEPLimits: each per-account limit refuses with its error and stores
// nothing of the refused publish.
func TestPEPLimits(t *testing.T) {
	srv := startServer(t, pepConfig(t), "alice")
	c := dialRaw(t, srv)
	c.scramLogin("alice", testPassword, "r")
	const A = "alice@localhost/r"
	item := func(n int) string { return `<x xmlns='urn:example'>` + strings.Repeat("z", n) + `</x>` }
	steps := []struct{ name, send, want string }{
		{"item too big", pub("l1", "urn:example:1", "1", item(200), ""),
			perr("l1", "", A, "modify", "not-acceptable", "item larger than pep.max_item_bytes (200)", "payload-too-big")},
		{"max_items above the limit", pub("l2", "urn:example:1", "1", item(1), publishOpts("pubsub#max_items", "4")),
			perr("l2", "", A, "modify", "not-acceptable", "pubsub#max_items above pep.max_items (3)", "")},
		{"max is the limit", pub("l3", "urn:example:1", "1", item(150), publishOpts("pubsub#max_items", "max")), publishResult("l3", "urn:example:1", "1")},
		{"2", pub("l4", "urn:example:1", "2", item(150), publishOpts("pubsub#max_items", "max")), publishResult("l4", "urn:example:1", "2")},
		{"3", pub("l5", "urn:example:1", "3", item(150), publishOpts("pubsub#max_items", "max")), publishResult("l5", "urn:example:1", "3")},
		{"4th drops the oldest", pub("l6", "urn:example:1", "4", item(150), publishOpts("pubsub#max_items", "max")), publishResult("l6", "urn:example:1", "4")},
		{"three kept", items("l7", "", "urn:example:1", "", ""),
			itemsResult("l7", "", "urn:example:1", "2", item(150), "3", item(150), "4", item(150))},
		{"bytes: 3 x 177 + 177 > 700", pub("l8", "urn:example:2", "1", item(150), ""),
			perr("l8", "", A, "wait", "resource-constraint", "storage quota reached (pep.max_bytes)", "")},
		{"nothing stored", items("l9", "", "urn:example:2", "", ""), perr("l9", "", A, "cancel", "item-not-found", "", "")},
		{"node 2", pub("l10", "urn:example:2", "1", item(1), ""), publishResult("l10", "urn:example:2", "1")},
		{"node 3", pub("l11", "urn:example:3", "1", item(1), ""), publishResult("l11", "urn:example:3", "1")},
		{"node 4", pub("l12", "urn:example:4", "1", item(1), ""), publishResult("l12", "urn:example:4", "1")},
		{"node 5", pub("l13", "urn:example:5", "1", item(1), ""),
			perr("l13", "", A, "wait", "policy-violation", "too many nodes (pep.max_nodes)", "max-nodes-exceeded")},
		{"create node 5", `<iq type='set' id='l14'><pubsub xmlns='` + nsPubSub + `'><create node='urn:example:5'/></pubsub></iq>`,
			perr("l14", "", A, "wait", "policy-violation", "too many nodes (pep.max_nodes)", "max-nodes-exceeded")},
	}
	for _, st := range steps {
		c.exchange(t, st.send, st.want)
	}
}

// TestPEPRetractAndWhitelist: a retract notifies contacts as configured
// (notify_retract, or notify='true'); a whitelist node notifies only the
// owner's resources; a node deleted notifies.
func TestPEPRetractAndWhitelist(t *testing.T) {
	srv, store := startServerOpts(t, testConfig(t), serverOpts{}, "alice", "bob")
	subscribe(t, store, "alice", "bob", true)
	alice := pepLogin(t, srv, "alice", "a", capsOMEMO, "caps-1")
	alice.sync(t, "s0") // the caps answer is processed: bob's are known
	bob := pepLogin(t, srv, "bob", "b", capsOMEMO, "")
	bob.expect(t, `<presence from='alice@localhost/a' to='bob@localhost/b'>{**}</presence>`)
	alice.expect(t, `<presence from='bob@localhost/b' to='alice@localhost'>{**}</presence>`)
	const tune = "http://jabber.org/protocol/tune"
	alice.send(pub("t1", tune, "song", tunePayload, ""))
	alice.expect(t, event("alice@localhost", "alice@localhost/a", tune, "song", tunePayload))
	alice.expect(t, publishResult("t1", tune, "song"))
	bob.expect(t, event("alice@localhost", "bob@localhost/b", tune, "song", tunePayload))
	retracted := func(to string) string {
		return `<message from='alice@localhost' to='` + to + `' type='headline' id='{*}'><event xmlns='` + nsPubSubEvent + `'><items node='` + tune + `'><retract id='song'/></items></event></message>`
	}
	alice.send(`<iq type='set' id='r1'><pubsub xmlns='` + nsPubSub + `'><retract node='` + tune + `'><item id='song'/></retract></pubsub></iq>`)
	alice.expect(t, retracted("alice@localhost/a"))
	alice.expect(t, `<iq type='result' id='r1'/>`)
	bob.expect(t, retracted("bob@localhost/b"))

	// Bookmarks (whitelist): only alice's own resources hear of them.
	alice.send(pub("b1", "urn:xmpp:bookmarks:1", "theplay@conference.shakespeare.lit", bookmark,
		publishOpts("pubsub#persist_items", "true", "pubsub#max_items", "max", "pubsub#send_last_published_item", "never", "pubsub#access_model", "whitelist")))
	alice.expect(t, event("alice@localhost", "alice@localhost/a", "urn:xmpp:bookmarks:1", "theplay@conference.shakespeare.lit", bookmark))
	alice.expect(t, publishResult("b1", "urn:xmpp:bookmarks:1", "theplay@conference.shakespeare.lit"))
	bob.sync(t, "s1")
	// XEP-0402 section 3.3: removing a bookmark is a retract with
	// notify='true'.
	alice.send(`<iq type='set' id='r2'><pubsub xmlns='` + nsPubSub + `'><retract node='urn:xmpp:bookmarks:1' notify='true'><item id='theplay@conference.shakespeare.lit'/></retract></pubsub></iq>`)
	alice.expect(t, `<message from='alice@localhost' to='alice@localhost/a' type='headline' id='{*}'><event xmlns='`+nsPubSubEvent+`'><items node='urn:xmpp:bookmarks:1'><retract id='theplay@conference.shakespeare.lit'/></items></event></message>`)
	alice.expect(t, `<iq type='result' id='r2'/>`)
	bob.sync(t, "s2")

	// A node deleted: subscribers hear of it.
	alice.send(`<iq type='set' id='d1'><pubsub xmlns='http://jabber.org/protocol/pubsub#owner'><delete node='` + tune + `'/></pubsub></iq>`)
	alice.expect(t, `<message from='alice@localhost' to='alice@localhost/a' type='headline' id='{*}'><event xmlns='`+nsPubSubEvent+`'><delete node='`+tune+`'/></event></message>`)
	alice.expect(t, `<iq type='result' id='d1'/>`)
	bob.expect(t, `<message from='alice@localhost' to='bob@localhost/b' type='headline' id='{*}'><event xmlns='`+nsPubSubEvent+`'><delete node='`+tune+`'/></event></message>`)
}

// TestPrivateStorage: XEP-0049 with the XEP's own examples: set, get,
// get of nothing stored, another account, reserved namespaces, the caps.
func TestPrivateStorage(t *testing.T) {
	srv := startServer(t, pepConfig(t), "hamlet", "macbeth")
	c := dialRaw(t, srv)
	c.scramLogin("hamlet", testPassword, "denmark")
	m := dialRaw(t, srv)
	m.scramLogin("macbeth", testPassword, "x")
	const H = "hamlet@localhost/denmark"
	exodus := `<exodus xmlns="exodus:prefs">
      <defaultnick>Hamlet</defaultnick>
    </exodus>`
	steps := []struct {
		name       string
		c          *rawConn
		send, want string
	}{
		{"set", c, `<iq type="set" id="1001">
  <query xmlns="jabber:iq:private">
    ` + exodus + `
  </query>
</iq>`, `<iq type='result' id='1001'/>`},
		{"get", c, `<iq type="get" id="1002">
  <query xmlns="jabber:iq:private">
    <exodus xmlns="exodus:prefs"/>
  </query>
</iq>`, `<iq type='result' id='1002'><query xmlns='jabber:iq:private'>` + exodus + `</query></iq>`},
		{"get nothing stored", c, `<iq type='get' id='g2'><query xmlns='jabber:iq:private'><storage xmlns='storage:bookmarks'/></query></iq>`,
			`<iq type='result' id='g2'><query xmlns='jabber:iq:private'><storage xmlns='storage:bookmarks'/></query></iq>`},
		{"another account", m, `<iq type="get" id="1003" to="hamlet@localhost"><query xmlns="jabber:iq:private"><exodus xmlns="exodus:prefs"/></query></iq>`,
			`<iq type='error' id='1003' from='hamlet@localhost' to='macbeth@localhost/x'><error type='cancel'><forbidden ` + stanzaErrNS + `/><text ` + stanzaErrNS + `>private data of another account</text></error></iq>`},
		{"own data only", m, `<iq type='get' id='g3'><query xmlns='jabber:iq:private'><exodus xmlns='exodus:prefs'/></query></iq>`,
			`<iq type='result' id='g3'><query xmlns='jabber:iq:private'><exodus xmlns='exodus:prefs'/></query></iq>`},
		{"no child", c, `<iq type="set" id="1004">
  <query xmlns="jabber:iq:private"/>
</iq>`, `<iq type='error' id='1004' to='` + H + `'><error type='modify'><not-acceptable ` + stanzaErrNS + `/><text ` + stanzaErrNS + `>the query needs a child element</text></error></iq>`},
		{"reserved", c, `<iq type="set" id="1005">
  <query xmlns="jabber:iq:private">
    <vCard xmlns="vcard-temp">
      <FN>Hamlet</FN>
    </vCard>
  </query>
</iq>`, `<iq type='error' id='1005' to='` + H + `'><error type='modify'><not-acceptable ` + stanzaErrNS + `/><text ` + stanzaErrNS + `>reserved namespace vcard-temp</text></error></iq>`},
		{"jabber:client", c, `<iq type='set' id='r2'><query xmlns='jabber:iq:private'><message xmlns='jabber:client'/></query></iq>`,
			`<iq type='error' id='r2' to='` + H + `'><error type='modify'><not-acceptable ` + stanzaErrNS + `/><text ` + stanzaErrNS + `>reserved namespace jabber:client</text></error></iq>`},
		{"too big", c, `<iq type='set' id='b1'><query xmlns='jabber:iq:private'><a xmlns='urn:a'>` + strings.Repeat("x", 200) + `</a></query></iq>`,
			`<iq type='error' id='b1' to='` + H + `'><error type='modify'><not-acceptable ` + stanzaErrNS + `/><text ` + stanzaErrNS + `>fragment larger than pep.max_item_bytes</text></error></iq>`},
		{"fill", c, `<iq type='set' id='b2'><query xmlns='jabber:iq:private'><a xmlns='urn:a'>` + strings.Repeat("x", 170) + `</a><b xmlns='urn:a'>` + strings.Repeat("x", 170) + `</b><c xmlns='urn:a'>` + strings.Repeat("x", 170) + `</c></query></iq>`,
			`<iq type='result' id='b2'/>`},
		{"quota", c, `<iq type='set' id='b3'><query xmlns='jabber:iq:private'><d xmlns='urn:a'>` + strings.Repeat("x", 170) + `</d></query></iq>`,
			`<iq type='error' id='b3' to='` + H + `'><error type='wait'><resource-constraint ` + stanzaErrNS + `/><text ` + stanzaErrNS + `>private storage full (pep.max_bytes)</text></error></iq>`},
	}
	for _, st := range steps {
		st.c.exchange(t, st.send, st.want)
	}
}

// TestServerCaps: the stream features carry the server's XEP-0115 caps
// (section 6.3), before and after authentication, whose ver is the hash
// of the domain's disco#info as the server answers it.
func TestServerCaps(t *testing.T) {
	srv := startServer(t, testConfig(t), "alice")
	c := dialRaw(t, srv)
	pre := c.open()
	c2 := dialRaw(t, srv)
	c2.scramLogin("alice", testPassword, "r")
	info := c2.exchange(t, `<iq type='get' id='di' to='localhost'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>`,
		`<iq type='result' id='di' from='localhost'><query xmlns='http://jabber.org/protocol/disco#info'><identity category='server' type='im' name='Krill'/>{**}</query></iq>`)
	s := "server/im//Krill<"
	var features []string
	for _, part := range strings.Split(info, `<feature var='`)[1:] {
		features = append(features, part[:strings.IndexByte(part, '\'')])
	}
	sort.Strings(features)
	for _, f := range features {
		s += f + "<"
	}
	sum := sha1.Sum([]byte(s))
	want := `<c xmlns='http://jabber.org/protocol/caps' hash='sha-1' node='https://github.com/krill-xmpp/krill' ver='` + base64.StdEncoding.EncodeToString(sum[:]) + `'/>`
	if !strings.Contains(pre, want) {
		t.Errorf("pre-auth features %q lack %q", pre, want)
	}
	got := featuresAfterAuth(t, dialRaw(t, srv), "alice")
	if !strings.Contains(got, want) {
		t.Errorf("features after authentication %q lack %q", got, want)
	}
}

// featuresAfterAuth authenticates as scramLogin does and returns the
// stream features of the restarted stream.
func featuresAfterAuth(t *testing.T, r *rawConn, user string) string {
	t.Helper()
	r.open()
	c := msasl.NewClient(msasl.ScramSha256, msasl.Credentials(func() ([]byte, []byte, []byte) {
		return []byte(user), []byte(testPassword), nil
	}))
	_, first, err := c.Step(nil)
	if err != nil {
		t.Fatal(err)
	}
	r.send(`<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='SCRAM-SHA-256'>` + base64.StdEncoding.EncodeToString(first) + `</auth>`)
	chal := between(r.expect(t, `<challenge xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>{*}</challenge>`), "'>", "</challenge>")
	raw, _ := base64.StdEncoding.DecodeString(chal)
	_, final, err := c.Step(raw)
	if err != nil {
		t.Fatal(err)
	}
	r.send(`<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>` + base64.StdEncoding.EncodeToString(final) + `</response>`)
	r.expect(t, `<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>{*}</success>`)
	return r.open()
}

// TestPEPLastItemOptions: a resource of the owner's that comes online gets
// the last item of the nodes it wants whose send_last_published_item is
// on_sub_and_presence, not of those set to never (XEP-0402 bookmarks);
// a contact the owner blocks gets no notification.
func TestPEPLastItemOptions(t *testing.T) {
	srv, store := startServerOpts(t, testConfig(t), serverOpts{}, "alice", "bob")
	subscribe(t, store, "alice", "bob", true)
	a1 := dialRaw(t, srv)
	a1.scramLogin("alice", testPassword, "a1")
	const nick = "http://jabber.org/protocol/nick"
	a1.exchange(t, pub("n1", nick, "current", nickPayload, ""), publishResult("n1", nick, "current"))
	a1.exchange(t, pub("b1", "urn:xmpp:bookmarks:1", "theplay@conference.shakespeare.lit", bookmark,
		publishOpts("pubsub#persist_items", "true", "pubsub#max_items", "max", "pubsub#send_last_published_item", "never", "pubsub#access_model", "whitelist")),
		publishResult("b1", "urn:xmpp:bookmarks:1", "theplay@conference.shakespeare.lit"))
	// Legacy OMEMO bundle as Conversations publishes it (node per device).
	legacyBundle := `<bundle xmlns='eu.siacs.conversations.axolotl'><signedPreKeyPublic signedPreKeyId='1'>BQ==</signedPreKeyPublic><signedPreKeySignature>c2ln</signedPreKeySignature><identityKey>BQ==</identityKey><prekeys><preKeyPublic preKeyId='1'>BQ==</preKeyPublic></prekeys></bundle>`
	a1.exchange(t, pub("o1", "eu.siacs.conversations.axolotl.bundles:12345", "current", legacyBundle, publishOpts("pubsub#access_model", "open")),
		publishResult("o1", "eu.siacs.conversations.axolotl.bundles:12345", "current"))
	a2 := pepLogin(t, srv, "alice", "a2", capsOMEMO, "caps-1")
	a2.expect(t, event("alice@localhost", "alice@localhost/a2", nick, "current", nickPayload))
	a2.sync(t, "s0")

	// bob is blocked: the nick published again reaches alice's a2 only.
	bob := pepLogin(t, srv, "bob", "b", capsOMEMO, "")
	bob.expect(t, `<presence from='alice@localhost/a2' to='bob@localhost/b'>{**}</presence>`)
	bob.expect(t, event("alice@localhost", "bob@localhost/b", nick, "current", nickPayload))
	bob.sync(t, "s0")
	a2.expect(t, `<presence from='bob@localhost/b' to='alice@localhost'>{**}</presence>`)
	a1.exchange(t, `<iq type='set' id='bk'><block xmlns='urn:xmpp:blocking'><item jid='bob@localhost'/></block></iq>`, `<iq type='result' id='bk'/>`)
	a1.exchange(t, pub("n2", nick, "current", nickPayload, ""), publishResult("n2", nick, "current"))
	a2.expect(t, event("alice@localhost", "alice@localhost/a2", nick, "current", nickPayload))
	// XEP-0191: blocking shows bob alice's resources unavailable.
	bob.expect(t, `<presence type='unavailable' from='alice@localhost/a2' to='bob@localhost'/>`)
	bob.sync(t, "s1")
	// Nor can bob read it: the blocking module answers for alice.
	bob.exchange(t, items("g", "alice@localhost", nick, "", ""), perr("g", "alice@localhost", "bob@localhost/b", "cancel", "service-unavailable", "", ""))
}

// TestPEPSubscribe: explicit subscriptions (XEP-0060 6.1, 6.2), which
// XEP-0163 section 5 requires beside the implicit ones: a stranger
// subscribes to an open node and gets the last item, then notifications
// without caps or presence; a contact subscribed both ways gets each
// notification once; the access model and the subscriber's JID are
// checked; unsubscribe ends it.
func TestPEPSubscribe(t *testing.T) {
	srv, store := startServerOpts(t, testConfig(t), serverOpts{}, "alice", "bob", "dave")
	subscribe(t, store, "alice", "bob", true)
	alice := pepLogin(t, srv, "alice", "a", capsPlain, "caps-1")
	alice.sync(t, "s0")
	alice.exchange(t, devicelist("p1", "1"), publishResult("p1", legacyDevices, "current"))
	alice.exchange(t, pub("m1", "http://jabber.org/protocol/mood", "current", moodPayload, ""), publishResult("m1", "http://jabber.org/protocol/mood", "current"))
	dave := dialRaw(t, srv)
	dave.scramLogin("dave", testPassword, "d")
	dave.send(`<presence/>`)
	dave.expect(t, `<presence from='dave@localhost/d'/>`)
	sub := func(id, verb, node, j string) string {
		return `<iq type='set' id='` + id + `' to='alice@localhost'><pubsub xmlns='http://jabber.org/protocol/pubsub'><` + verb + ` node='` + node + `' jid='` + j + `'/></pubsub></iq>`
	}
	const A, D = "alice@localhost", "dave@localhost/d"
	dave.exchange(t, sub("s1", "subscribe", legacyDevices, "dave@localhost"),
		`<iq type='result' id='s1' from='alice@localhost'><pubsub xmlns='`+nsPubSub+`'><subscription node='`+legacyDevices+`' jid='dave@localhost' subscription='subscribed'/></pubsub></iq>`)
	dave.expect(t, event(A, D, legacyDevices, "current", devicelistPayload("1")))
	dave.exchange(t, sub("s2", "subscribe", "http://jabber.org/protocol/mood", "dave@localhost"),
		perr("s2", A, D, "auth", "not-authorized", "", "presence-subscription-required"))
	dave.exchange(t, sub("s3", "subscribe", legacyDevices, "bob@localhost"), perr("s3", A, D, "modify", "bad-request", "", "invalid-jid"))
	dave.exchange(t, sub("s4", "subscribe", "urn:example:none", "dave@localhost"), perr("s4", A, D, "cancel", "item-not-found", "", ""))

	// bob: +notify caps and an explicit subscription of his full JID.
	bob := pepLogin(t, srv, "bob", "b", capsOMEMO, "caps-2")
	bob.expect(t, `<presence from='alice@localhost/a' to='bob@localhost/b'>{**}</presence>`)
	bob.expect(t, event(A, "bob@localhost/b", legacyDevices, "current", devicelistPayload("1")))
	bob.expect(t, event(A, "bob@localhost/b", "http://jabber.org/protocol/mood", "current", moodPayload))
	bob.exchange(t, sub("s5", "subscribe", legacyDevices, "bob@localhost/b"),
		`<iq type='result' id='s5' from='alice@localhost'><pubsub xmlns='`+nsPubSub+`'><subscription node='`+legacyDevices+`' jid='bob@localhost/b' subscription='subscribed'/></pubsub></iq>`)
	bob.expect(t, event(A, "bob@localhost/b", legacyDevices, "current", devicelistPayload("1")))
	alice.skipUntil(`<presence from='bob@localhost/b' to='alice@localhost'>`)
	alice.skipUntil(`</presence>`)

	alice.exchange(t, devicelist("p2", "2"), publishResult("p2", legacyDevices, "current"))
	dave.expect(t, event(A, D, legacyDevices, "current", devicelistPayload("2")))
	bob.expect(t, event(A, "bob@localhost/b", legacyDevices, "current", devicelistPayload("2")))
	bob.sync(t, "s6") // once

	dave.exchange(t, sub("u1", "unsubscribe", legacyDevices, "dave@localhost"), `<iq type='result' id='u1' from='alice@localhost'/>`)
	dave.exchange(t, sub("u2", "unsubscribe", legacyDevices, "dave@localhost"), perr("u2", A, D, "cancel", "unexpected-request", "", "not-subscribed"))
	alice.exchange(t, devicelist("p3", "3"), publishResult("p3", legacyDevices, "current"))
	bob.expect(t, event(A, "bob@localhost/b", legacyDevices, "current", devicelistPayload("3")))
	dave.sync(t, "s7") // nothing more
}

// TestPEPCapsFromDirectedPresence: caps announced in a directed presence
// count too; a directed presence without caps does not withdraw them.
func TestPEPCapsFromDirectedPresence(t *testing.T) {
	srv, store := startServerOpts(t, testConfig(t), serverOpts{}, "alice", "bob")
	subscribe(t, store, "alice", "bob", true)
	alice := dialRaw(t, srv)
	alice.scramLogin("alice", testPassword, "a")
	alice.send(`<presence/>`)
	alice.expect(t, `<presence from='alice@localhost/a'/>`)
	bob := dialRaw(t, srv)
	bob.scramLogin("bob", testPassword, "b")
	bob.send(`<presence/>`)
	bob.expect(t, `<presence from='bob@localhost/b'/>`)
	bob.expect(t, `<presence from='alice@localhost/a' to='bob@localhost/b'/>`)
	alice.expect(t, `<presence from='bob@localhost/b' to='alice@localhost'/>`)
	c := strings.Replace(capsOMEMO.presence(), "<presence>", "<presence to='alice@localhost/a'>", 1)
	bob.send(c)
	bob.expect(t, capsOMEMO.query("caps-1", "bob@localhost/b"))
	bob.send(capsOMEMO.answer("caps-1"))
	bob.sync(t, "s0")
	alice.skipUntil(`</presence>`) // the directed presence
	bob.send(`<presence to='alice@localhost/a'/>`)
	bob.sync(t, "s1")
	alice.expect(t, `<presence to='alice@localhost/a' from='bob@localhost/b'/>`)
	alice.exchange(t, devicelist("p", "7"), publishResult("p", legacyDevices, "current"))
	bob.expect(t, event("alice@localhost", "bob@localhost/b", legacyDevices, "current", devicelistPayload("7")))
}
