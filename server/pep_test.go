package server_test

import (
	"context"
	"crypto/sha1"
	"encoding/base64"
	"sort"
	"strings"
	"testing"

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
	cfg.PEP.MaxBytes = 600
	return cfg
}
