package server_test

import (
	"strings"
	"testing"
)

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
	w.exchange(t, `<iq type='get' id='end' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>`, `<iq type='result' id='end' from='localhost'/>`)
	if !waitFor(ioTimeout, func() bool { return srv.Stats().Modules["offline.stored"] == 3 }) {
		t.Fatalf("stored %d, want 3", srv.Stats().Modules["offline.stored"])
	}
	x := dialRaw(t, srv)
	x.scramLogin("xena", testPassword, "x")
	x.send(`<presence/>`)
	x.until(`<presence from='xena@localhost/x'/>`)
	got := x.until(`<store xmlns="urn:xmpp:hints"/><delay`)
	for _, id := range []string{"cs1", "rc1", "ns1"} {
		if strings.Contains(got, `id='`+id+`'`) {
			t.Errorf("%s delivered from offline storage: %q", id, got)
		}
	}
	b1 := strings.Index(got, `<message id='b1' to='xena@localhost' type='chat' from='wes@localhost/w'><body>kept</body>`)
	om := strings.Index(got, `<message id='om' to='xena@localhost' type='chat' from='wes@localhost/w'><encrypted`)
	if b1 < 0 || om < b1 {
		t.Fatalf("stored messages missing or out of order: %q", got)
	}
	if n := srv.Stats().Modules["offline.stored"]; n != 3 {
		t.Fatalf("stored %d, want 3", n)
	}
}
