package server_test

import "testing"

// TestRepliesOnBehalf: an iq without to is handled by the server on the
// account's behalf, so the reply has no from (RFC 6120 8.1.2.1, 10.3.3);
// an iq to the domain is answered from the domain, one to the account's
// own bare JID from the bare JID. Every module and core handler, results
// and errors alike.
func TestRepliesOnBehalf(t *testing.T) {
	srv := startServer(t, testConfig(t), "una", "vera")
	r := dialRaw(t, srv)
	r.scramLogin("una", testPassword, "u")
	cases := []struct{ name, send, want string }{
		{"ping no to", `<iq type='get' id='p0'><ping xmlns='urn:xmpp:ping'/></iq>`,
			`<iq type='result' id='p0'/>`},
		{"ping to domain", `<iq type='get' id='p1' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>`,
			`<iq type='result' id='p1' from='localhost'/>`},
		{"ping to own bare jid", `<iq type='get' id='p2' to='una@localhost'><ping xmlns='urn:xmpp:ping'/></iq>`,
			`<iq type='result' id='p2' from='una@localhost'/>`},
		{"vcard no to", `<iq type='get' id='v0'><vCard xmlns='vcard-temp'/></iq>`,
			`<iq type='result' id='v0'><vCard xmlns='vcard-temp'/></iq>`},
		{"vcard to own bare jid", `<iq type='get' id='v1' to='una@localhost'><vCard xmlns='vcard-temp'/></iq>`,
			`<iq type='result' id='v1' from='una@localhost'><vCard xmlns='vcard-temp'/></iq>`},
		{"vcard set for another", `<iq type='set' id='v2' to='vera@localhost'><vCard xmlns='vcard-temp'/></iq>`,
			`<iq type='error' id='v2' from='vera@localhost' to='una@localhost/u'><error type='auth'><forbidden ` + stanzasNS + `/></error></iq>`},
		{"version no to", `<iq type='get' id='sv0'><query xmlns='jabber:iq:version'/></iq>`,
			`<iq type='result' id='sv0'><query xmlns='jabber:iq:version'><name>Krill</name><version>dev</version></query></iq>`},
		{"version to domain", `<iq type='get' id='sv1' to='localhost'><query xmlns='jabber:iq:version'/></iq>`,
			`<iq type='result' id='sv1' from='localhost'><query xmlns='jabber:iq:version'><name>Krill</name><version>dev</version></query></iq>`},
		{"disco items no to", `<iq type='get' id='di0'><query xmlns='http://jabber.org/protocol/disco#items'/></iq>`,
			`<iq type='result' id='di0'><query xmlns='http://jabber.org/protocol/disco#items'/></iq>`},
		{"disco node no to", `<iq type='get' id='di1'><query xmlns='http://jabber.org/protocol/disco#info' node='x'/></iq>`,
			`<iq type='error' id='di1' to='una@localhost/u'><error type='cancel'><item-not-found ` + stanzasNS + `/></error></iq>`},
		{"roster no to", `<iq type='get' id='r0'><query xmlns='jabber:iq:roster'/></iq>`,
			`<iq type='result' id='r0'><query xmlns='jabber:iq:roster' ver='0'></query></iq>`},
		{"roster to own bare jid", `<iq type='get' id='r1' to='una@localhost'><query xmlns='jabber:iq:roster'/></iq>`,
			`<iq type='result' id='r1' from='una@localhost'><query xmlns='jabber:iq:roster' ver='0'></query></iq>`},
		{"roster error no to", `<iq type='set' id='r2'><query xmlns='jabber:iq:roster'/></iq>`,
			`<iq type='error' id='r2' to='una@localhost/u'><error type='modify'><bad-request ` + stanzasNS + `/></error></iq>`},
		{"roster error to own bare jid", `<iq type='set' id='r3' to='una@localhost'><query xmlns='jabber:iq:roster'/></iq>`,
			`<iq type='error' id='r3' from='una@localhost' to='una@localhost/u'><error type='modify'><bad-request ` + stanzasNS + `/></error></iq>`},
		{"roster of another", `<iq type='get' id='r4' to='vera@localhost'><query xmlns='jabber:iq:roster'/></iq>`,
			`<iq type='error' id='r4' from='vera@localhost' to='una@localhost/u'><error type='auth'><forbidden ` + stanzasNS + `/></error></iq>`},
		{"blocklist no to", `<iq type='get' id='b0'><blocklist xmlns='urn:xmpp:blocking'/></iq>`,
			`<iq type='result' id='b0'><blocklist xmlns='urn:xmpp:blocking'></blocklist></iq>`},
		{"blocklist to own bare jid", `<iq type='get' id='b1' to='una@localhost'><blocklist xmlns='urn:xmpp:blocking'/></iq>`,
			`<iq type='result' id='b1' from='una@localhost'><blocklist xmlns='urn:xmpp:blocking'></blocklist></iq>`},
		{"blocking error no to", `<iq type='set' id='b2'><block xmlns='urn:xmpp:blocking'/></iq>`,
			`<iq type='error' id='b2' to='una@localhost/u'><error type='modify'><bad-request ` + stanzasNS + `/><text ` + stanzasNS + `>a block names at least one JID</text></error></iq>`},
		{"unknown namespace no to", `<iq type='get' id='u0'><query xmlns='urn:example:nothing'/></iq>`,
			`<iq type='error' id='u0' to='una@localhost/u'><error type='cancel'><service-unavailable ` + stanzasNS + `/></error></iq>`},
		{"unknown namespace to domain", `<iq type='get' id='u1' to='localhost'><query xmlns='urn:example:nothing'/></iq>`,
			`<iq type='error' id='u1' from='localhost' to='una@localhost/u'><error type='cancel'><service-unavailable ` + stanzasNS + `/></error></iq>`},
		{"unknown namespace to own bare jid", `<iq type='get' id='u2' to='una@localhost'><query xmlns='urn:example:nothing'/></iq>`,
			`<iq type='error' id='u2' from='una@localhost' to='una@localhost/u'><error type='cancel'><service-unavailable ` + stanzasNS + `/></error></iq>`},
		{"no payload no to", `<iq type='get' id='e0'/>`,
			`<iq type='error' id='e0' to='una@localhost/u'><error type='modify'><bad-request ` + stanzasNS + `/></error></iq>`},
		{"bad type no to", `<iq type='bogus' id='e1'><ping xmlns='urn:xmpp:ping'/></iq>`,
			`<iq type='error' id='e1' to='una@localhost/u'><error type='modify'><bad-request ` + stanzasNS + `/></error></iq>`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) { r.exchange(t, tc.send, tc.want) })
	}
}
