package server_test

import "testing"

// TestClusterPush: alice enables push on node a; a message for her, with
// no session anywhere, reaching node b (which started before the enable,
// so has nothing in memory) wakes her device: b reads the registration
// from the shared store.
func TestClusterPush(t *testing.T) {
	dsn := clusterDSN(t)
	_, url := testNATS(t)
	a := startNode(t, clusterConfig(t, url, dsn, "a"), "alice", "bob", "app")
	b := startNode(t, clusterConfig(t, url, dsn, "b"))

	app := dialRaw(t, a)
	app.scramLogin("app", testPassword, "srv")
	app.exchange(t, `<presence/>`, `<presence from='app@localhost/srv'/>`)
	seen(t, b, "app", "srv", true)

	alice := dialRaw(t, a)
	alice.scramLogin("alice", testPassword, "phone")
	alice.exchange(t, `<iq type='set' id='e1'><enable xmlns='urn:xmpp:push:0' jid='app@localhost/srv' node='dev-1'/></iq>`, `<iq type='result' id='e1'/>`)
	seen(t, b, "alice", "phone", false)
	_ = alice.conn.Close() // no stream management: the session ends
	gone(t, b, "alice", "phone")

	bob := dialRaw(t, b)
	bob.scramLogin("bob", testPassword, "b")
	bob.send(`<message type='chat' id='m1' to='alice@localhost'><body>wake up</body></message>`)
	app.expect(t, `<iq type='set' id='{*}' from='alice@localhost' to='app@localhost/srv'><pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='dev-1'><item><notification xmlns='urn:xmpp:push:0'><x xmlns='jabber:x:data' type='result'><field var='FORM_TYPE'><value>urn:xmpp:push:summary</value></field><field var='message-count'><value>1</value></field><field var='last-message-sender'><value>bob@localhost/b</value></field></x></notification></item></publish></pubsub></iq>`)
	if n := b.Stats().Modules["push.notifications"]; n != 1 {
		t.Fatalf("node b sent %d notifications, want 1", n)
	}
}
