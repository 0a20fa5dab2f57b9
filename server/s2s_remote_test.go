package server_test

import (
	"strings"
	"testing"
)

// TestS2SRemoteIQ: requests from bob@b.test to a.test and to alice@a.test
// go through a.test's modules (hook.PhaseRemote) and their answers come
// back over federation: the server's disco#info, version, uptime and ping;
// an account's disco#info, vCard and PEP items as the node's access model
// allows; last activity refused without a subscription; what only the
// owner may do refused with forbidden, what nobody answers for remote
// senders with service-unavailable.
func TestS2SRemoteIQ(t *testing.T) {
	a, b := fedPair(t, true, nil)
	alice := fedLogin(t, a, "alice", "a")
	bob := fedLogin(t, b, "bob", "b")
	alice.exchange(t, `<iq type='set' id='v1'><vCard xmlns='vcard-temp'><FN>Alice</FN></vCard></iq>`, `<iq type='result' id='v1'/>`)
	alice.exchange(t, `<iq type='set' id='p1'><pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='http://jabber.org/protocol/tune'><item id='t1'><tune xmlns='http://jabber.org/protocol/tune'><title>Song</title></tune></item></publish></pubsub></iq>`,
		`<iq type='result' id='p1'><pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='http://jabber.org/protocol/tune'><item id='t1'/></publish></pubsub></iq>`)
	alice.exchange(t, `<iq type='set' id='p2'><pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='urn:xmpp:omemo:2:devices'><item id='current'><devices xmlns='urn:xmpp:omemo:2'><device id='7'/></devices></item></publish><publish-options><x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'><value>http://jabber.org/protocol/pubsub#publish-options</value></field><field var='pubsub#access_model'><value>open</value></field></x></publish-options></pubsub></iq>`,
		`<iq type='result' id='p2'><pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='urn:xmpp:omemo:2:devices'><item id='current'/></publish></pubsub></iq>`)

	// The disco#info answers a remote sender gets are the local ones,
	// addressed back to it.
	payload := func(got, prefix string) string {
		if !strings.HasPrefix(got, prefix) || !strings.HasSuffix(got, `</iq>`) {
			t.Fatalf("got %q, want it to start with %q", got, prefix)
		}
		return strings.TrimSuffix(strings.TrimPrefix(got, prefix), `</iq>`)
	}
	hostInfo := payload(alice.exchange(t, `<iq type='get' id='d0' to='a.test'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>`,
		`<iq type='result' id='d0' from='a.test'><query xmlns='http://jabber.org/protocol/disco#info'><identity category='server' type='im' name='Krill'/>{**}</query></iq>`),
		`<iq type='result' id='d0' from='a.test'>`)
	accountInfo := payload(alice.exchange(t, `<iq type='get' id='d1' to='alice@a.test'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>`,
		`<iq type='result' id='d1' from='alice@a.test'><query xmlns='http://jabber.org/protocol/disco#info'><identity category='account' type='registered'/><identity category='pubsub' type='pep'/>{**}</query></iq>`),
		`<iq type='result' id='d1' from='alice@a.test'>`)

	const forbidden = `<error type='auth'><forbidden xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error>`
	const unavailable = `<error type='cancel'><service-unavailable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error>`
	for _, tc := range []struct{ name, send, want string }{
		{"server disco#info", `<iq type='get' id='r1' to='a.test'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>`,
			`<iq type='result' id='r1' from='a.test' to='bob@b.test/b'>` + hostInfo + `</iq>`},
		{"server disco#items", `<iq type='get' id='r2' to='a.test'><query xmlns='http://jabber.org/protocol/disco#items'/></iq>`,
			`<iq type='result' id='r2' from='a.test' to='bob@b.test/b'><query xmlns='http://jabber.org/protocol/disco#items'><item jid='conference.a.test'/></query></iq>`},
		{"server version", `<iq type='get' id='r3' to='a.test'><query xmlns='jabber:iq:version'/></iq>`,
			`<iq type='result' id='r3' from='a.test' to='bob@b.test/b'><query xmlns='jabber:iq:version'><name>Krill</name><version>dev</version></query></iq>`},
		{"server uptime", `<iq type='get' id='r4' to='a.test'><query xmlns='jabber:iq:last'/></iq>`,
			`<iq type='result' id='r4' from='a.test' to='bob@b.test/b'><query xmlns='jabber:iq:last' seconds='{*}'/></iq>`},
		{"server ping", `<iq type='get' id='r5' to='a.test'><ping xmlns='urn:xmpp:ping'/></iq>`,
			`<iq type='result' id='r5' from='a.test' to='bob@b.test/b'/>`},
		{"account disco#info", `<iq type='get' id='r6' to='alice@a.test'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>`,
			`<iq type='result' id='r6' from='alice@a.test' to='bob@b.test/b'>` + accountInfo + `</iq>`},
		{"account disco#items: the nodes bob may read", `<iq type='get' id='r7' to='alice@a.test'><query xmlns='http://jabber.org/protocol/disco#items'/></iq>`,
			`<iq type='result' id='r7' from='alice@a.test' to='bob@b.test/b'><query xmlns='http://jabber.org/protocol/disco#items'><item jid='alice@a.test' node='urn:xmpp:omemo:2:devices'/></query></iq>`},
		{"vCard get", `<iq type='get' id='r8' to='alice@a.test'><vCard xmlns='vcard-temp'/></iq>`,
			`<iq type='result' id='r8' from='alice@a.test' to='bob@b.test/b'><vCard xmlns='vcard-temp'><FN>Alice</FN></vCard></iq>`},
		{"vCard set refused", `<iq type='set' id='r9' to='alice@a.test'><vCard xmlns='vcard-temp'><FN>Mallory</FN></vCard></iq>`,
			`<iq type='error' id='r9' from='alice@a.test' to='bob@b.test/b'>` + forbidden + `</iq>`},
		{"PEP items of an open node", `<iq type='get' id='r10' to='alice@a.test'><pubsub xmlns='http://jabber.org/protocol/pubsub'><items node='urn:xmpp:omemo:2:devices'/></pubsub></iq>`,
			`<iq type='result' id='r10' from='alice@a.test' to='bob@b.test/b'><pubsub xmlns='http://jabber.org/protocol/pubsub'><items node='urn:xmpp:omemo:2:devices'><item id='current'><devices xmlns='urn:xmpp:omemo:2'><device id='7'/></devices></item></items></pubsub></iq>`},
		{"PEP items of a presence node, no subscription", `<iq type='get' id='r11' to='alice@a.test'><pubsub xmlns='http://jabber.org/protocol/pubsub'><items node='http://jabber.org/protocol/tune'/></pubsub></iq>`,
			`<iq type='error' id='r11' from='alice@a.test' to='bob@b.test/b'><error type='auth'><not-authorized xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/><presence-subscription-required xmlns='http://jabber.org/protocol/pubsub#errors'/></error></iq>`},
		{"PEP publish refused", `<iq type='set' id='r12' to='alice@a.test'><pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='x'><item id='1'><x xmlns='y'/></item></publish></pubsub></iq>`,
			`<iq type='error' id='r12' from='alice@a.test' to='bob@b.test/b'>` + forbidden + `</iq>`},
		{"last activity, no subscription", `<iq type='get' id='r13' to='alice@a.test'><query xmlns='jabber:iq:last'/></iq>`,
			`<iq type='error' id='r13' from='alice@a.test' to='bob@b.test/b'>` + forbidden + `</iq>`},
		{"account ping", `<iq type='get' id='r14' to='alice@a.test'><ping xmlns='urn:xmpp:ping'/></iq>`,
			`<iq type='result' id='r14' from='alice@a.test' to='bob@b.test/b'/>`},
		{"roster of another account", `<iq type='get' id='r15' to='alice@a.test'><query xmlns='jabber:iq:roster'/></iq>`,
			`<iq type='error' id='r15' from='alice@a.test' to='bob@b.test/b'>` + unavailable + `</iq>`},
		{"private storage of another account", `<iq type='get' id='r16' to='alice@a.test'><query xmlns='jabber:iq:private'><storage xmlns='storage:bookmarks'/></query></iq>`,
			`<iq type='error' id='r16' from='alice@a.test' to='bob@b.test/b'>` + unavailable + `</iq>`},
	} {
		t.Run(tc.name, func(t *testing.T) { bob.exchange(t, tc.send, tc.want) })
	}

	// bob subscribes explicitly to the open node (as OMEMO does between
	// strangers): the result, then the last item, then alice's next
	// publish, all over federation.
	const devices = `urn:xmpp:omemo:2:devices`
	bob.exchange(t, `<iq type='set' id='r17' to='alice@a.test'><pubsub xmlns='http://jabber.org/protocol/pubsub'><subscribe node='`+devices+`' jid='bob@b.test/b'/></pubsub></iq>`,
		`<iq type='result' id='r17' from='alice@a.test' to='bob@b.test/b'><pubsub xmlns='http://jabber.org/protocol/pubsub'><subscription node='`+devices+`' jid='bob@b.test/b' subscription='subscribed'/></pubsub></iq>`)
	bob.expect(t, event("alice@a.test", "bob@b.test/b", devices, "current", `<devices xmlns='urn:xmpp:omemo:2'><device id='7'/></devices>`))
	alice.exchange(t, `<iq type='set' id='p3'><pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='`+devices+`'><item id='current'><devices xmlns='urn:xmpp:omemo:2'><device id='8'/></devices></item></publish></pubsub></iq>`,
		`<iq type='result' id='p3'><pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='`+devices+`'><item id='current'/></publish></pubsub></iq>`)
	bob.expect(t, event("alice@a.test", "bob@b.test/b", devices, "current", `<devices xmlns='urn:xmpp:omemo:2'><device id='8'/></devices>`))

	// Nothing else reached alice's session.
	fedSync(t, alice, "a.test", "s1")
}
