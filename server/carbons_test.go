package server_test

import "testing"

// carbon is the XEP-0280 copy of fwd (the original as the server stamped
// it, with its namespace declared) that the account bare sends to full:
// dir is "sent" or "received", typ the original's type attribute.
func carbon(dir, bare, full, typ, fwd string) string {
	return `<message from='` + bare + `' to='` + full + `' type='` + typ + `'><` + dir + ` xmlns='urn:xmpp:carbons:2'>` +
		`<forwarded xmlns='urn:xmpp:forward:0'>` + fwd + `</forwarded></` + dir + `></message>`
}

// TestCarbons covers XEP-0280 over real sockets: enable and disable, sent
// and received copies byte for byte (to a full JID, to the bare JID with a
// resource of negative priority, a reply), <private/> with <no-copy/>, no
// carbon of a carbon, no copy for resources that did not enable carbons
// or disabled them, and blocking applied before and to each copy.
//
// alice/a sends and has no carbons; alice/b enabled them; alice/c did
// not. bob/x (priority 0) and bob/y (priority -1) enabled them; bob/z
// enabled, then disabled, then enabled them again. A stanza that must
// not arrive would come before a later marker on the same stream: each
// negative check ends with a headline (never copied) that must be the
// next thing read.
func TestCarbons(t *testing.T) {
	srv := startServer(t, testConfig(t), "alice", "bob")
	a := dialRaw(t, srv)
	a.scramLogin("alice", testPassword, "a")
	b := dialRaw(t, srv)
	b.scramLogin("alice", testPassword, "b")
	c := dialRaw(t, srv)
	c.scramLogin("alice", testPassword, "c")
	x := dialRaw(t, srv)
	x.scramLogin("bob", testPassword, "x")
	x.exchange(t, `<presence/>`, `<presence from='bob@localhost/x'/>`)
	y := dialRaw(t, srv)
	y.scramLogin("bob", testPassword, "y")
	y.send(`<presence><priority>-1</priority></presence>`)
	y.expect(t, `<presence from='bob@localhost/y'><priority>-1</priority></presence>`)
	y.expect(t, `<presence from='bob@localhost/x' to='bob@localhost/y'/>`)
	x.expect(t, `<presence from='bob@localhost/y'><priority>-1</priority></presence>`)
	z := dialRaw(t, srv)
	z.scramLogin("bob", testPassword, "z")

	a.exchange(t, `<iq type='get' id='d' to='localhost'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>`,
		`<iq type='result' id='d' from='localhost'><query xmlns='http://jabber.org/protocol/disco#info'>{**}<feature var='urn:xmpp:carbons:2'/>{**}</query></iq>`)
	b.exchange(t, `<iq type='set' id='e1'><enable xmlns='urn:xmpp:carbons:2'/></iq>`, `<iq type='result' id='e1'/>`)
	x.exchange(t, `<iq type='set' id='e1' to='bob@localhost'><enable xmlns='urn:xmpp:carbons:2'/></iq>`, `<iq type='result' id='e1' from='bob@localhost'/>`)
	y.exchange(t, `<iq type='set' id='e1'><enable xmlns='urn:xmpp:carbons:2'/></iq>`, `<iq type='result' id='e1'/>`)
	y.exchange(t, `<iq type='set' id='e2'><enable xmlns='urn:xmpp:carbons:2'/></iq>`, `<iq type='result' id='e2'/>`) // again: no error (§10.1)
	z.exchange(t, `<iq type='set' id='e1'><enable xmlns='urn:xmpp:carbons:2'/></iq>`, `<iq type='result' id='e1'/>`)
	z.exchange(t, `<iq type='set' id='e2'><disable xmlns='urn:xmpp:carbons:2'/></iq>`, `<iq type='result' id='e2'/>`)
	c.exchange(t, `<iq type='set' id='e1' to='bob@localhost'><enable xmlns='urn:xmpp:carbons:2'/></iq>`,
		`<iq type='error' id='e1' from='bob@localhost' to='alice@localhost/c'><error type='cancel'><not-allowed `+stanzasNS+`/></error></iq>`)

	// To a full JID: bob/x gets the original, alice/b a sent copy, bob/y a
	// received copy.
	a.send(`<message to='bob@localhost/x' type='chat' id='m1'><body>hi</body></message>`)
	fwd := `<message xmlns='jabber:client' to='bob@localhost/x' type='chat' id='m1' from='alice@localhost/a'><body>hi</body></message>`
	x.expect(t, `<message to='bob@localhost/x' type='chat' id='m1' from='alice@localhost/a'><body>hi</body></message>`)
	b.expect(t, carbon("sent", "alice@localhost", "alice@localhost/b", "chat", fwd))
	y.expect(t, carbon("received", "bob@localhost", "bob@localhost/y", "chat", fwd))

	// To the bare JID: bob/x (priority 0) gets the original; bob/y
	// (priority -1), which RFC 6121 8.5.2.1.1 skips, a received copy.
	a.send(`<message to='bob@localhost' type='chat' id='m2'><body>bare</body></message>`)
	fwd = `<message xmlns='jabber:client' to='bob@localhost' type='chat' id='m2' from='alice@localhost/a'><body>bare</body></message>`
	x.expect(t, `<message to='bob@localhost' type='chat' id='m2' from='alice@localhost/a'><body>bare</body></message>`)
	b.expect(t, carbon("sent", "alice@localhost", "alice@localhost/b", "chat", fwd))
	y.expect(t, carbon("received", "bob@localhost", "bob@localhost/y", "chat", fwd))

	// The reply: alice/a gets the original, alice/b a received copy, bob/y
	// a sent copy.
	x.send(`<message to='alice@localhost/a' type='chat' id='r1'><body>hello</body></message>`)
	fwd = `<message xmlns='jabber:client' to='alice@localhost/a' type='chat' id='r1' from='bob@localhost/x'><body>hello</body></message>`
	a.expect(t, `<message to='alice@localhost/a' type='chat' id='r1' from='bob@localhost/x'><body>hello</body></message>`)
	b.expect(t, carbon("received", "alice@localhost", "alice@localhost/b", "chat", fwd))
	y.expect(t, carbon("sent", "bob@localhost", "bob@localhost/y", "chat", fwd))

	// <private/> with <no-copy/>: the original only, <private/> left in.
	a.send(`<message to='bob@localhost/x' type='chat' id='m3'><body>secret</body><private xmlns='urn:xmpp:carbons:2'/><no-copy xmlns='urn:xmpp:hints'/></message>`)
	x.expect(t, `<message to='bob@localhost/x' type='chat' id='m3' from='alice@localhost/a'><body>secret</body><private xmlns='urn:xmpp:carbons:2'/><no-copy xmlns='urn:xmpp:hints'/></message>`)
	// No carbon of a carbon (here a client's forgery of one).
	a.send(`<message to='bob@localhost/x' type='chat' id='m4'><received xmlns='urn:xmpp:carbons:2'><forwarded xmlns='urn:xmpp:forward:0'>` +
		`<message xmlns='jabber:client' from='eve@localhost/e' to='alice@localhost/a' type='chat'><body>old</body></message></forwarded></received></message>`)
	x.expect(t, `<message to='bob@localhost/x' type='chat' id='m4' from='alice@localhost/a'><received xmlns='urn:xmpp:carbons:2'><forwarded xmlns='urn:xmpp:forward:0'>`+
		`<message xmlns='jabber:client' from='eve@localhost/e' to='alice@localhost/a' type='chat'><body>old</body></message></forwarded></received></message>`)
	marker(t, a, "alice@localhost/a", b, "alice@localhost/b")
	marker(t, a, "alice@localhost/a", y, "bob@localhost/y")
	marker(t, a, "alice@localhost/a", z, "bob@localhost/z")

	// bob/z enables carbons again and gets copies again. alice blocks
	// bob/y: no copy goes there, as no message from alice would.
	z.exchange(t, `<iq type='set' id='e3'><enable xmlns='urn:xmpp:carbons:2'/></iq>`, `<iq type='result' id='e3'/>`)
	a.exchange(t, `<iq type='set' id='bk1'><block xmlns='urn:xmpp:blocking'><item jid='bob@localhost/y'/></block></iq>`, `<iq type='result' id='bk1'/>`)
	a.send(`<message to='bob@localhost/x' type='chat' id='m5'><body>again</body></message>`)
	fwd = `<message xmlns='jabber:client' to='bob@localhost/x' type='chat' id='m5' from='alice@localhost/a'><body>again</body></message>`
	x.expect(t, `<message to='bob@localhost/x' type='chat' id='m5' from='alice@localhost/a'><body>again</body></message>`)
	b.expect(t, carbon("sent", "alice@localhost", "alice@localhost/b", "chat", fwd))
	z.expect(t, carbon("received", "bob@localhost", "bob@localhost/z", "chat", fwd))
	marker(t, x, "bob@localhost/x", y, "bob@localhost/y")

	// A message blocking refuses is not copied: the Pre stage stopped
	// before carbons.
	a.exchange(t, `<iq type='set' id='bk2'><block xmlns='urn:xmpp:blocking'><item jid='bob@localhost'/></block></iq>`, `<iq type='result' id='bk2'/>`)
	a.exchange(t, `<message to='bob@localhost/x' type='chat' id='m6'><body>blocked</body></message>`,
		`<message type='error' id='m6' from='bob@localhost/x' to='alice@localhost/a'><error type='cancel'><not-acceptable `+stanzasNS+`/><blocked xmlns='urn:xmpp:blocking:errors'/></error></message>`)

	// alice/c never enabled carbons and got nothing; alice/b got nothing
	// more.
	marker(t, a, "alice@localhost/a", b, "alice@localhost/b")
	marker(t, a, "alice@localhost/a", c, "alice@localhost/c")
	marker(t, x, "bob@localhost/x", z, "bob@localhost/z")
	a.sync(t, "s")
	x.sync(t, "s")
	if got := srv.Stats().Modules; got["carbons.sent"] != 4 || got["carbons.received"] != 4 {
		t.Fatalf("carbons counters %v, want 4 sent and 4 received", got)
	}
}

// marker sends a headline (never copied) from one session to another and
// checks that it is the next thing the recipient reads: nothing that
// arrived before it was left unread.
func marker(t *testing.T, from *rawConn, fromJID string, to *rawConn, toJID string) {
	t.Helper()
	from.send(`<message to='` + toJID + `' type='headline' id='end'><body>end</body></message>`)
	to.expect(t, `<message to='`+toJID+`' type='headline' id='end' from='`+fromJID+`'><body>end</body></message>`)
}
