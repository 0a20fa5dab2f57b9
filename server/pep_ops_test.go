package server_test

import (
	"context"
	"strings"
	"testing"

	"github.com/krill-xmpp/krill/storage"
)

// perr is a pubsub error reply to a request without a to (from the
// account itself), or with from when from is set.
func perr(id, from, to, typ, cond, text, app string) string {
	b := `<iq type='error' id='` + id + `'`
	if from != "" {
		b += ` from='` + from + `'`
	}
	b += ` to='` + to + `'><error type='` + typ + `'><` + cond + ` ` + stanzaErrNS + `/>`
	if text != "" {
		b += `<text ` + stanzaErrNS + `>` + text + `</text>`
	}
	if app != "" {
		b += `<` + app + ` xmlns='` + nsPubSubErr + `'/>`
	}
	return b + `</error></iq>`
}

// publishOpts is a publish-options form with the given fields.
func publishOpts(fields ...string) string {
	b := `<publish-options><x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'><value>http://jabber.org/protocol/pubsub#publish-options</value></field>`
	for i := 0; i+1 < len(fields); i += 2 {
		b += `<field var='` + fields[i] + `'><value>` + fields[i+1] + `</value></field>`
	}
	return b + `</x></publish-options>`
}

// Payloads from the XEPs' examples.
const (
	tunePayload = `<tune xmlns='http://jabber.org/protocol/tune'><artist>Yes</artist><length>686</length><rating>8</rating><source>Yessongs</source><title>Heart of the Sunrise</title><track>3</track><uri>http://www.yesworld.com/lyrics/Fragile.html#9</uri></tune>`
	moodPayload = `<mood xmlns='http://jabber.org/protocol/mood'><happy/><text>Yay, the mood spec has been approved!</text></mood>`
	nickPayload = `<nick xmlns='http://jabber.org/protocol/nick'>Ishmael</nick>`
	bookmark    = `<conference xmlns='urn:xmpp:bookmarks:1' name='The Play&apos;s the Thing' autojoin='true'><nick>JC</nick></conference>`
	devices2    = `<devices xmlns='urn:xmpp:omemo:2'><device id='12345' /><device id='4223' label='Gajim on Ubuntu Linux' labelsig='b64/encoded/data' /></devices>`
	avatarData  = `<data xmlns='urn:xmpp:avatar:data'>iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGNgYGD4DwABBAEAwS2OUAAAAABJRU5ErkJggg==</data>`
	avatarMeta  = `<metadata xmlns='urn:xmpp:avatar:metadata'><info bytes='70' id='8e7a56c0b8e9df4ef4b2c1c2b3f1f4b3e7e3c5e1' height='1' type='image/png' width='1'/></metadata>`
	storageBM   = `<storage xmlns='storage:bookmarks'><conference name='The Play&apos;s the Thing' autojoin='true' jid='theplay@conference.shakespeare.lit'><nick>JC</nick></conference></storage>`
)

func bundle(n string) string {
	return `<bundle xmlns='urn:xmpp:omemo:2'><spk id='1'>b64/encoded/data</spk><spks>b64/encoded/data</spks><ik>b64/encoded/data</ik><prekeys><pk id='1'>b64/encoded/data</pk><pk id='` + n + `'>b64/encoded/data</pk></prekeys></bundle>`
}

func pub(id, node, itemID, payload, opts string) string {
	item := `<item>`
	if itemID != "" {
		item = `<item id='` + itemID + `'>`
	}
	return `<iq type='set' id='` + id + `'><pubsub xmlns='` + nsPubSub + `'><publish node='` + node + `'>` + item + payload + `</item></publish>` + opts + `</pubsub></iq>`
}

func items(id, to, node, attrs, inner string) string {
	toAttr := ""
	if to != "" {
		toAttr = ` to='` + to + `'`
	}
	if inner == "" {
		return `<iq type='get' id='` + id + `'` + toAttr + `><pubsub xmlns='` + nsPubSub + `'><items node='` + node + `'` + attrs + `/></pubsub></iq>`
	}
	return `<iq type='get' id='` + id + `'` + toAttr + `><pubsub xmlns='` + nsPubSub + `'><items node='` + node + `'` + attrs + `>` + inner + `</items></pubsub></iq>`
}

func itemsResult(id, from, node string, its ...string) string {
	fromAttr := ""
	if from != "" {
		fromAttr = ` from='` + from + `'`
	}
	b := `<iq type='result' id='` + id + `'` + fromAttr + `><pubsub xmlns='` + nsPubSub + `'><items node='` + node + `'>`
	for i := 0; i+1 < len(its); i += 2 {
		b += `<item id='` + its[i] + `'>` + its[i+1] + `</item>`
	}
	return b + `</items></pubsub></iq>`
}

const configureForm = `<x xmlns='jabber:x:data' type='form'><field var='FORM_TYPE' type='hidden'><value>http://jabber.org/protocol/pubsub#node_config</value></field>` +
	`<field var='pubsub#access_model' type='list-single' label='Who may subscribe and retrieve items'><option><value>open</value></option><option><value>presence</value></option><option><value>roster</value></option><option><value>whitelist</value></option><value>%ACCESS%</value></field>` +
	`<field var='pubsub#persist_items' type='boolean' label='Persist items'><value>1</value></field>` +
	`<field var='pubsub#max_items' type='text-single' label='Maximum number of items to persist, or max'><value>%MAX%</value></field>` +
	`<field var='pubsub#send_last_published_item' type='list-single' label='When to send the last published item'><option><value>never</value></option><option><value>on_sub</value></option><option><value>on_sub_and_presence</value></option><value>%SEND%</value></field>` +
	`<field var='pubsub#notify_retract' type='boolean' label='Notify when items are retracted'><value>1</value></field>` +
	`<field var='pubsub#roster_groups_allowed' type='list-multi' label='Roster groups allowed to subscribe'>%GROUPS%</field></x>`

func form(access, max, send string, groups ...string) string {
	g := ""
	for _, v := range groups {
		g += `<value>` + v + `</value>`
	}
	return strings.NewReplacer("%ACCESS%", access, "%MAX%", max, "%SEND%", send, "%GROUPS%", g).Replace(configureForm)
}

// TestPEPOperations drives one account's PEP service through what clients
// send, step by step with the exact replies: every publish option, the
// precondition checks, access models seen by contacts, items by id and
// count, retract, configure, create and delete, disco.
func TestPEPOperations(t *testing.T) {
	srv, store := startServerOpts(t, testConfig(t), serverOpts{}, "alice", "bob", "carol", "dave")
	subscribe(t, store, "alice", "bob", true)
	// carol is in alice's roster without a subscription.
	if err := store.UpdateRosters(context.Background(), func(tx storage.RosterTx) error {
		return tx.PutItem("alice", storage.RosterItem{Contact: "carol@localhost", Groups: []string{"Friends"}})
	}); err != nil {
		t.Fatal(err)
	}
	conns := map[string]*rawConn{}
	for _, u := range []string{"alice", "bob", "carol", "dave"} {
		c := dialRaw(t, srv)
		c.scramLogin(u, testPassword, "r")
		conns[u] = c
	}
	const A = "alice@localhost"
	steps := []struct {
		name, who, send, want string
	}{
		// Publishing with defaults, a generated id (XEP-0118 example).
		{"tune, no id", "alice", pub("t1", "http://jabber.org/protocol/tune", "", tunePayload, ""),
			publishResult("t1", "http://jabber.org/protocol/tune", "{*}")},
		{"mood", "alice", pub("m1", "http://jabber.org/protocol/mood", "", moodPayload, ""),
			publishResult("m1", "http://jabber.org/protocol/mood", "{*}")},
		{"nick", "alice", pub("n1", "http://jabber.org/protocol/nick", "nick", nickPayload, ""),
			publishResult("n1", "http://jabber.org/protocol/nick", "nick")},
		// XEP-0402 with the four options Conversations sends.
		{"bookmarks2", "alice", pub("b1", "urn:xmpp:bookmarks:1", "theplay@conference.shakespeare.lit", bookmark,
			publishOpts("pubsub#persist_items", "true", "pubsub#max_items", "max", "pubsub#send_last_published_item", "never", "pubsub#access_model", "whitelist")),
			publishResult("b1", "urn:xmpp:bookmarks:1", "theplay@conference.shakespeare.lit")},
		{"bookmarks2 again, same options", "alice", pub("b2", "urn:xmpp:bookmarks:1", "orchard@chat.shakespeare.lit", strings.Replace(bookmark, "JC", "JC2", 1),
			publishOpts("pubsub#persist_items", "1", "pubsub#max_items", "max", "pubsub#send_last_published_item", "never", "pubsub#access_model", "whitelist")),
			publishResult("b2", "urn:xmpp:bookmarks:1", "orchard@chat.shakespeare.lit")},
		// OMEMO 2 (XEP-0384 0.8 examples).
		{"omemo devices", "alice", pub("o1", "urn:xmpp:omemo:2:devices", "current", devices2, publishOpts("pubsub#access_model", "open")),
			publishResult("o1", "urn:xmpp:omemo:2:devices", "current")},
		{"omemo bundle 1", "alice", pub("o2", "urn:xmpp:omemo:2:bundles", "1", bundle("1"), publishOpts("pubsub#max_items", "max", "pubsub#access_model", "open")),
			publishResult("o2", "urn:xmpp:omemo:2:bundles", "1")},
		{"omemo bundle 2", "alice", pub("o3", "urn:xmpp:omemo:2:bundles", "2", bundle("2"), publishOpts("pubsub#max_items", "max", "pubsub#access_model", "open")),
			publishResult("o3", "urn:xmpp:omemo:2:bundles", "2")},
		{"omemo bundle 3", "alice", pub("o4", "urn:xmpp:omemo:2:bundles", "3", bundle("3"), publishOpts("pubsub#max_items", "max", "pubsub#access_model", "open")),
			publishResult("o4", "urn:xmpp:omemo:2:bundles", "3")},
		// XEP-0084 data then metadata.
		{"avatar data", "alice", pub("a1", "urn:xmpp:avatar:data", "8e7a56c0b8e9df4ef4b2c1c2b3f1f4b3e7e3c5e1", avatarData, ""),
			publishResult("a1", "urn:xmpp:avatar:data", "8e7a56c0b8e9df4ef4b2c1c2b3f1f4b3e7e3c5e1")},
		{"avatar metadata", "alice", pub("a2", "urn:xmpp:avatar:metadata", "8e7a56c0b8e9df4ef4b2c1c2b3f1f4b3e7e3c5e1", avatarMeta, ""),
			publishResult("a2", "urn:xmpp:avatar:metadata", "8e7a56c0b8e9df4ef4b2c1c2b3f1f4b3e7e3c5e1")},
		// XEP-0223 private data in PEP.
		{"xep-0223", "alice", pub("p1", "storage:bookmarks", "current", storageBM, publishOpts("pubsub#persist_items", "true", "pubsub#access_model", "whitelist")),
			publishResult("p1", "storage:bookmarks", "current")},
		{"notify_retract option", "alice", pub("nr", "urn:example:nr", "x", `<x xmlns='urn:example:nr'/>`, publishOpts("pubsub#notify_retract", "false")),
			publishResult("nr", "urn:example:nr", "x")},

		// Preconditions an existing node does not meet.
		{"access differs", "alice", pub("e1", "urn:xmpp:bookmarks:1", "x@y", bookmark, publishOpts("pubsub#access_model", "open")),
			perr("e1", "", A+"/r", "cancel", "conflict", "Field does not match: pubsub#access_model", "precondition-not-met")},
		{"max_items differs", "alice", pub("e2", "urn:xmpp:omemo:2:bundles", "4", bundle("4"), publishOpts("pubsub#max_items", "5")),
			perr("e2", "", A+"/r", "cancel", "conflict", "Field does not match: pubsub#max_items", "precondition-not-met")},
		{"send_last differs", "alice", pub("e3", "urn:xmpp:bookmarks:1", "x@y", bookmark, publishOpts("pubsub#send_last_published_item", "on_sub_and_presence")),
			perr("e3", "", A+"/r", "cancel", "conflict", "Field does not match: pubsub#send_last_published_item", "precondition-not-met")},
		{"persist differs", "alice", pub("e4", "http://jabber.org/protocol/nick", "nick", nickPayload, publishOpts("pubsub#persist_items", "false")),
			perr("e4", "", A+"/r", "cancel", "conflict", "Field does not match: pubsub#persist_items", "precondition-not-met")},
		{"notify_retract differs", "alice", pub("e5", "urn:example:nr", "x", `<x xmlns='urn:example:nr'/>`, publishOpts("pubsub#notify_retract", "true")),
			perr("e5", "", A+"/r", "cancel", "conflict", "Field does not match: pubsub#notify_retract", "precondition-not-met")},
		{"unknown field", "alice", pub("e6", "http://jabber.org/protocol/nick", "nick", nickPayload, publishOpts("pubsub#deliver_payloads", "1")),
			perr("e6", "", A+"/r", "cancel", "conflict", "unsupported field pubsub#deliver_payloads", "precondition-not-met")},
		{"bad value", "alice", pub("e7", "urn:example:new", "1", `<x xmlns='urn:example:new'/>`, publishOpts("pubsub#access_model", "authorize")),
			perr("e7", "", A+"/r", "modify", "bad-request", `field pubsub#access_model: invalid value &quot;authorize&quot;`, "invalid-options")},
		{"no node", "alice", `<iq type='set' id='e8'><pubsub xmlns='` + nsPubSub + `'><publish><item/></publish></pubsub></iq>`,
			perr("e8", "", A+"/r", "modify", "bad-request", "", "nodeid-required")},
		{"no item", "alice", `<iq type='set' id='e9'><pubsub xmlns='` + nsPubSub + `'><publish node='n'/></pubsub></iq>`,
			perr("e9", "", A+"/r", "modify", "bad-request", "", "item-required")},
		{"two payloads", "alice", pub("e10", "urn:example:new", "1", `<a xmlns='x'/><b xmlns='x'/>`, ""),
			perr("e10", "", A+"/r", "modify", "bad-request", "", "invalid-payload")},
		{"publish to another account", "bob", strings.Replace(pub("e11", "http://jabber.org/protocol/nick", "nick", nickPayload, ""), "<iq ", "<iq to='alice@localhost' ", 1),
			perr("e11", A, "bob@localhost/r", "auth", "forbidden", "", "")},

		// Access models, seen by contacts.
		{"presence: subscribed contact", "bob", items("g1", A, "http://jabber.org/protocol/mood", "", ""),
			itemsResult("g1", A, "http://jabber.org/protocol/mood", "{*}", moodPayload)},
		{"presence: roster without subscription", "carol", items("g2", A, "http://jabber.org/protocol/mood", "", ""),
			perr("g2", A, "carol@localhost/r", "auth", "not-authorized", "", "presence-subscription-required")},
		{"presence: stranger", "dave", items("g3", A, "http://jabber.org/protocol/mood", "", ""),
			perr("g3", A, "dave@localhost/r", "auth", "not-authorized", "", "presence-subscription-required")},
		{"open: stranger", "dave", items("g4", A, "urn:xmpp:omemo:2:devices", "", ""),
			itemsResult("g4", A, "urn:xmpp:omemo:2:devices", "current", devices2)},
		{"whitelist: contact", "bob", items("g5", A, "urn:xmpp:bookmarks:1", "", ""),
			perr("g5", A, "bob@localhost/r", "cancel", "not-allowed", "", "closed-node")},
		{"whitelist: owner", "alice", items("g6", "", "urn:xmpp:bookmarks:1", "", ""),
			itemsResult("g6", "", "urn:xmpp:bookmarks:1", "theplay@conference.shakespeare.lit", bookmark, "orchard@chat.shakespeare.lit", strings.Replace(bookmark, "JC", "JC2", 1))},
		{"to roster", "alice", `<iq type='set' id='c1'><pubsub xmlns='http://jabber.org/protocol/pubsub#owner'><configure node='http://jabber.org/protocol/nick'><x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'><value>http://jabber.org/protocol/pubsub#node_config</value></field><field var='pubsub#access_model'><value>roster</value></field></x></configure></pubsub></iq>`,
			`<iq type='result' id='c1'/>`},
		{"roster: in roster", "carol", items("g7", A, "http://jabber.org/protocol/nick", "", ""),
			itemsResult("g7", A, "http://jabber.org/protocol/nick", "nick", nickPayload)},
		{"roster: stranger", "dave", items("g8", A, "http://jabber.org/protocol/nick", "", ""),
			perr("g8", A, "dave@localhost/r", "auth", "not-authorized", "", "not-in-roster-group")},
		// Roster groups (pubsub#roster_groups_allowed): carol is in
		// Friends, bob in no group.
		{"to roster groups", "alice", `<iq type='set' id='c2'><pubsub xmlns='http://jabber.org/protocol/pubsub#owner'><configure node='http://jabber.org/protocol/nick'><x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'><value>http://jabber.org/protocol/pubsub#node_config</value></field><field var='pubsub#roster_groups_allowed'><value>Friends</value><value>Family</value></field></x></configure></pubsub></iq>`,
			`<iq type='result' id='c2'/>`},
		{"groups shown", "alice", `<iq type='get' id='c3'><pubsub xmlns='http://jabber.org/protocol/pubsub#owner'><configure node='http://jabber.org/protocol/nick'/></pubsub></iq>`,
			`<iq type='result' id='c3'><pubsub xmlns='http://jabber.org/protocol/pubsub#owner'><configure node='http://jabber.org/protocol/nick'>` + form("roster", "1", "on_sub_and_presence", "Family", "Friends") + `</configure></pubsub></iq>`},
		{"roster group: member", "carol", items("g10", A, "http://jabber.org/protocol/nick", "", ""),
			itemsResult("g10", A, "http://jabber.org/protocol/nick", "nick", nickPayload)},
		{"roster group: not a member", "bob", items("g11", A, "http://jabber.org/protocol/nick", "", ""),
			perr("g11", A, "bob@localhost/r", "auth", "not-authorized", "", "not-in-roster-group")},
		{"unknown node", "bob", items("g9", A, "urn:example:none", "", ""),
			perr("g9", A, "bob@localhost/r", "cancel", "item-not-found", "", "")},

		// Items by count and id.
		{"max_items", "dave", items("i1", A, "urn:xmpp:omemo:2:bundles", " max_items='2'", ""),
			itemsResult("i1", A, "urn:xmpp:omemo:2:bundles", "2", bundle("2"), "3", bundle("3"))},
		{"by id (XEP-0384 fetch)", "dave", items("i2", A, "urn:xmpp:omemo:2:bundles", "", `<item id='1'/>`),
			itemsResult("i2", A, "urn:xmpp:omemo:2:bundles", "1", bundle("1"))},
		{"bad max_items", "dave", items("i3", A, "urn:xmpp:omemo:2:bundles", " max_items='x'", ""),
			perr("i3", A, "dave@localhost/r", "modify", "bad-request", "max_items must be a positive integer", "")},

		// Retract.
		{"retract", "alice", `<iq type='set' id='r1'><pubsub xmlns='` + nsPubSub + `'><retract node='urn:xmpp:omemo:2:bundles'><item id='1'/></retract></pubsub></iq>`,
			`<iq type='result' id='r1'/>`},
		{"retracted", "dave", items("r2", A, "urn:xmpp:omemo:2:bundles", "", `<item id='1'/>`),
			itemsResult("r2", A, "urn:xmpp:omemo:2:bundles")},
		{"retract again", "alice", `<iq type='set' id='r3'><pubsub xmlns='` + nsPubSub + `'><retract node='urn:xmpp:omemo:2:bundles'><item id='1'/></retract></pubsub></iq>`,
			perr("r3", "", A+"/r", "cancel", "item-not-found", "", "")},

		// Configure.
		{"configure get", "alice", `<iq type='get' id='k1'><pubsub xmlns='http://jabber.org/protocol/pubsub#owner'><configure node='urn:xmpp:bookmarks:1'/></pubsub></iq>`,
			`<iq type='result' id='k1'><pubsub xmlns='http://jabber.org/protocol/pubsub#owner'><configure node='urn:xmpp:bookmarks:1'>` + form("whitelist", "max", "never") + `</configure></pubsub></iq>`},
		{"configure by a contact", "bob", `<iq type='get' id='k2' to='alice@localhost'><pubsub xmlns='http://jabber.org/protocol/pubsub#owner'><configure node='urn:xmpp:bookmarks:1'/></pubsub></iq>`,
			perr("k2", A, "bob@localhost/r", "auth", "forbidden", "", "")},
		{"configure max_items 1", "alice", `<iq type='set' id='k3'><pubsub xmlns='http://jabber.org/protocol/pubsub#owner'><configure node='urn:xmpp:omemo:2:bundles'><x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'><value>http://jabber.org/protocol/pubsub#node_config</value></field><field var='pubsub#max_items'><value>1</value></field></x></configure></pubsub></iq>`,
			`<iq type='result' id='k3'/>`},
		{"trimmed to 1", "alice", items("k4", "", "urn:xmpp:omemo:2:bundles", "", ""),
			itemsResult("k4", "", "urn:xmpp:omemo:2:bundles", "3", bundle("3"))},
		{"configured", "alice", `<iq type='get' id='k5'><pubsub xmlns='http://jabber.org/protocol/pubsub#owner'><configure node='urn:xmpp:omemo:2:bundles'/></pubsub></iq>`,
			`<iq type='result' id='k5'><pubsub xmlns='http://jabber.org/protocol/pubsub#owner'><configure node='urn:xmpp:omemo:2:bundles'>` + form("open", "1", "on_sub_and_presence") + `</configure></pubsub></iq>`},
		{"configure cancel", "alice", `<iq type='set' id='k6'><pubsub xmlns='http://jabber.org/protocol/pubsub#owner'><configure node='urn:xmpp:omemo:2:bundles'><x xmlns='jabber:x:data' type='cancel'/></configure></pubsub></iq>`,
			`<iq type='result' id='k6'/>`},
		{"configure unknown node", "alice", `<iq type='get' id='k7'><pubsub xmlns='http://jabber.org/protocol/pubsub#owner'><configure node='urn:example:none'/></pubsub></iq>`,
			perr("k7", "", A+"/r", "cancel", "item-not-found", "", "")},

		// Create with configure, delete.
		{"create", "alice", `<iq type='set' id='n1'><pubsub xmlns='` + nsPubSub + `'><create node='urn:example:created'/><configure><x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'><value>http://jabber.org/protocol/pubsub#node_config</value></field><field var='pubsub#access_model'><value>open</value></field></x></configure></pubsub></iq>`,
			`<iq type='result' id='n1'/>`},
		{"create again", "alice", `<iq type='set' id='n2'><pubsub xmlns='` + nsPubSub + `'><create node='urn:example:created'/></pubsub></iq>`,
			perr("n2", "", A+"/r", "cancel", "conflict", "", "")},
		{"created open", "dave", items("n3", A, "urn:example:created", "", ""), itemsResult("n3", A, "urn:example:created")},
		{"delete", "alice", `<iq type='set' id='n4'><pubsub xmlns='http://jabber.org/protocol/pubsub#owner'><delete node='urn:example:created'/></pubsub></iq>`,
			`<iq type='result' id='n4'/>`},
		{"delete again", "alice", `<iq type='set' id='n5'><pubsub xmlns='http://jabber.org/protocol/pubsub#owner'><delete node='urn:example:created'/></pubsub></iq>`,
			perr("n5", "", A+"/r", "cancel", "item-not-found", "", "")},
		{"deleted", "dave", items("n6", A, "urn:example:created", "", ""), perr("n6", A, "dave@localhost/r", "cancel", "item-not-found", "", "")},

		// Disco of the account: what a stranger may see.
		{"disco items, stranger", "dave", `<iq type='get' id='d1' to='alice@localhost'><query xmlns='http://jabber.org/protocol/disco#items'/></iq>`,
			`<iq type='result' id='d1' from='alice@localhost'><query xmlns='http://jabber.org/protocol/disco#items'><item jid='alice@localhost' node='urn:xmpp:omemo:2:bundles'/><item jid='alice@localhost' node='urn:xmpp:omemo:2:devices'/></query></iq>`},
		{"disco items, owner", "alice", `<iq type='get' id='d2' to='alice@localhost'><query xmlns='http://jabber.org/protocol/disco#items'/></iq>`,
			`<iq type='result' id='d2' from='alice@localhost'><query xmlns='http://jabber.org/protocol/disco#items'>` +
				`<item jid='alice@localhost' node='http://jabber.org/protocol/mood'/><item jid='alice@localhost' node='http://jabber.org/protocol/nick'/><item jid='alice@localhost' node='http://jabber.org/protocol/tune'/>` +
				`<item jid='alice@localhost' node='storage:bookmarks'/><item jid='alice@localhost' node='urn:example:nr'/><item jid='alice@localhost' node='urn:xmpp:avatar:data'/><item jid='alice@localhost' node='urn:xmpp:avatar:metadata'/>` +
				`<item jid='alice@localhost' node='urn:xmpp:bookmarks:1'/><item jid='alice@localhost' node='urn:xmpp:omemo:2:bundles'/><item jid='alice@localhost' node='urn:xmpp:omemo:2:devices'/></query></iq>`},
		{"disco info of an open node", "dave", `<iq type='get' id='d4' to='alice@localhost'><query xmlns='http://jabber.org/protocol/disco#info' node='urn:xmpp:omemo:2:devices'/></iq>`,
			`<iq type='result' id='d4' from='alice@localhost'><query xmlns='http://jabber.org/protocol/disco#info' node='urn:xmpp:omemo:2:devices'><identity category='pubsub' type='leaf'/><feature var='http://jabber.org/protocol/pubsub'/></query></iq>`},
		{"disco info of a presence node, stranger", "dave", `<iq type='get' id='d5' to='alice@localhost'><query xmlns='http://jabber.org/protocol/disco#info' node='http://jabber.org/protocol/mood'/></iq>`,
			perr("d5", A, "dave@localhost/r", "auth", "not-authorized", "", "presence-subscription-required")},
		{"disco info of no node", "alice", `<iq type='get' id='d6' to='alice@localhost'><query xmlns='http://jabber.org/protocol/disco#info' node='urn:example:none'/></iq>`,
			perr("d6", A, A+"/r", "cancel", "item-not-found", "", "")},
		{"disco items of a node", "dave", `<iq type='get' id='d7' to='alice@localhost'><query xmlns='http://jabber.org/protocol/disco#items' node='urn:xmpp:omemo:2:devices'/></iq>`,
			`<iq type='result' id='d7' from='alice@localhost'><query xmlns='http://jabber.org/protocol/disco#items' node='urn:xmpp:omemo:2:devices'><item jid='alice@localhost' name='current'/></query></iq>`},
		{"disco items of a whitelist node, contact", "bob", `<iq type='get' id='d8' to='alice@localhost'><query xmlns='http://jabber.org/protocol/disco#items' node='urn:xmpp:bookmarks:1'/></iq>`,
			perr("d8", A, "bob@localhost/r", "cancel", "not-allowed", "", "closed-node")},
		{"disco info", "bob", `<iq type='get' id='d3' to='alice@localhost'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>`,
			`<iq type='result' id='d3' from='alice@localhost'><query xmlns='http://jabber.org/protocol/disco#info'><identity category='account' type='registered'/><identity category='pubsub' type='pep'/>{**}</query></iq>`},
	}
	for _, st := range steps {
		c := conns[st.who]
		got := c.exchange(t, st.send, st.want)
		if st.name == "disco info" {
			for _, f := range []string{"#publish'", "#publish-options'", "#access-whitelist'", "#auto-create'", "#filtered-notifications'", "#last-published'", "#persistent-items'", "#retract-items'", "#delete-nodes'", "#config-node'", "#retrieve-items'", "#multi-items'", "#item-ids'"} {
				if !strings.Contains(got, `<feature var='http://jabber.org/protocol/pubsub`+f+`/>`) {
					t.Errorf("disco#info lacks pubsub%s: %s", f, got)
				}
			}
		}
	}
}
