package server_test

import "testing"

// TestOfflineOnlyWhatIsRead: to an account with no available resource, a
// chat state (as profanity/libstrophe sends it), a receipt and a message
// with a no-store hint are dropped without an error; a body, an OMEMO
// payload and a store hint are stored and delivered at the next login, in
// order, and only those are counted.
func TestOfflineOnlyWhatIsRead(t *testing.T) {
	srv := startServer(t, testConfig(t), "wes", "xena")
	w := dialRaw(t, srv)
	w.scramLogin("wes", testPassword, "w")
	sent := []string{
		`<message id="cs1" to="xena@localhost" type="chat"><composing xmlns="http://jabber.org/protocol/chatstates"/></message>`,
		`<message id="rc1" to="xena@localhost"><received xmlns="urn:xmpp:receipts" id="m0"/></message>`,
		`<message id="ns1" to="xena@localhost" type="chat"><body>not kept</body><no-store xmlns="urn:xmpp:hints"/></message>`,
		`<message id="cs2" to="nobody@localhost" type="chat"><paused xmlns="http://jabber.org/protocol/chatstates"/></message>`,
		`<message id="b1" to="xena@localhost" type="chat"><body>kept</body><active xmlns="http://jabber.org/protocol/chatstates"/></message>`,
		`<message id="om" to="xena@localhost" type="chat"><encrypted xmlns="eu.siacs.conversations.axolotl"><header sid="1"/></encrypted></message>`,
		`<message id="st" to="xena@localhost"><received xmlns="urn:xmpp:receipts" id="m1"/><store xmlns="urn:xmpp:hints"/></message>`,
	}
	for _, m := range sent {
		w.send(m)
	}
	// Only cs2, to no account, could bounce, and a chat state does not.
	w.sync(t, "end")
	if !waitFor(ioTimeout, func() bool { return srv.Stats().Modules["offline.stored"] == 3 }) {
		t.Fatalf("stored %d, want 3", srv.Stats().Modules["offline.stored"])
	}
	x := dialRaw(t, srv)
	x.scramLogin("xena", testPassword, "x")
	x.send(`<presence/>`)
	// Exactly the three kept, in the order sent, each stamped; cs1, rc1
	// and ns1 never come.
	x.expect(t, `<presence from='xena@localhost/x'/>`)
	const delay = `<delay xmlns='urn:xmpp:delay' from='localhost' stamp='{*}'/>`
	x.expect(t, `<message id='b1' to='xena@localhost' type='chat' from='wes@localhost/w'><body>kept</body><active xmlns="http://jabber.org/protocol/chatstates"/>`+delay+`</message>`)
	x.expect(t, `<message id='om' to='xena@localhost' type='chat' from='wes@localhost/w'><encrypted xmlns="eu.siacs.conversations.axolotl"><header sid="1"/></encrypted>`+delay+`</message>`)
	x.expect(t, `<message id='st' to='xena@localhost' from='wes@localhost/w'><received xmlns="urn:xmpp:receipts" id="m1"/><store xmlns="urn:xmpp:hints"/>`+delay+`</message>`)
	x.sync(t, "end")
	if n := srv.Stats().Modules["offline.stored"]; n != 3 {
		t.Fatalf("stored %d, want 3", n)
	}
}
