package server_test

import (
	"context"
	"strings"
	"testing"
	"time"
)

// TestPushKeptAcrossRestart: push registrations are stored. After a.test
// restarts, a message for alice, who has no session at all (her phone's
// app sleeps and has not logged in again), still wakes her device through
// the app server on b.test; a registration she disabled before the
// restart stays disabled.
func TestPushKeptAcrossRestart(t *testing.T) {
	a, b := fedPair(t, true, nil)
	app := fedLogin(t, b, "bob", "app")
	app.exchange(t, `<presence/>`, `<presence from='bob@b.test/app'/>`)
	bob := fedLogin(t, b, "bob", "b")

	alice := fedLogin(t, a, "alice", "phone")
	for _, node := range []string{"dev-1", "dev-2"} {
		alice.exchange(t, `<iq type='set' id='e-`+node+`'><enable xmlns='urn:xmpp:push:0' jid='bob@b.test/app' node='`+node+`'><x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE'><value>http://jabber.org/protocol/pubsub#publish-options</value></field><field var='secret'><value>tok-`+node+`</value></field></x></enable></iq>`,
			`<iq type='result' id='e-`+node+`'/>`)
	}
	alice.exchange(t, `<iq type='set' id='d1'><disable xmlns='urn:xmpp:push:0' jid='bob@b.test/app' node='dev-2'/></iq>`, `<iq type='result' id='d1'/>`)
	// A disable without jid is refused.
	alice.exchange(t, `<iq type='set' id='d2'><disable xmlns='urn:xmpp:push:0'/></iq>`,
		`<iq type='error' id='d2' to='alice@a.test/phone'><error type='modify'><bad-request `+stanzasNS+`/><text `+stanzasNS+`>jid is required</text></error></iq>`)
	_ = alice.conn.Close() // no stream management: the session ends

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := a.srv.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	a.srv = startServer(t, a.cfg) // the same data directory, alice exists
	if n := a.srv.Stats().Modules["push.notifications"]; n != 0 {
		t.Fatalf("notifications = %d on a fresh server", n)
	}

	bob.send(`<message type='chat' id='m1' to='alice@a.test'><body>wake up</body></message>`)
	app.expect(t, `<iq type='set' id='{*}' from='alice@a.test' to='bob@b.test/app'><pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='dev-1'><item><notification xmlns='urn:xmpp:push:0'><x xmlns='jabber:x:data' type='result'><field var='FORM_TYPE'><value>urn:xmpp:push:summary</value></field><field var='message-count'><value>1</value></field><field var='last-message-sender'><value>bob@b.test/b</value></field></x></notification></item></publish><publish-options><x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE'><value>http://jabber.org/protocol/pubsub#publish-options</value></field><field var='secret'><value>tok-dev-1</value></field></x></publish-options></pubsub></iq>`)
	// Every notification of one message is counted before any is sent:
	// one means the disabled dev-2 was not notified.
	if n := a.srv.Stats().Modules["push.notifications"]; n != 1 {
		t.Fatalf("notifications = %d, want 1 (dev-2 was disabled)", n)
	}
	// The message itself waits offline for the next login.
	alice = fedLogin(t, a, "alice", "phone")
	alice.send(`<presence/>`)
	alice.expect(t, `<presence from='alice@a.test/phone'/>`)
	alice.expect(t, `<message type='chat' id='m1' to='alice@a.test' from='bob@b.test/b'><body>wake up</body><delay xmlns='urn:xmpp:delay' from='a.test' stamp='{*}'/></message>`)
}

// TestPushAppServerError: an app server answering a notification with an
// error (not of type wait) disables that registration, in memory and in
// the store; a result or a wait error keeps it, and an error for another
// registration's id from a JID that was not notified changes nothing.
func TestPushAppServerError(t *testing.T) {
	a, b := fedPair(t, true, nil)
	app := fedLogin(t, b, "bob", "app")
	app.exchange(t, `<presence/>`, `<presence from='bob@b.test/app'/>`)
	bob := fedLogin(t, b, "bob", "b")
	alice := fedLogin(t, a, "alice", "phone")
	for _, node := range []string{"dev-1", "dev-2", "dev-3"} {
		alice.exchange(t, `<iq type='set' id='e-`+node+`'><enable xmlns='urn:xmpp:push:0' jid='bob@b.test/app' node='`+node+`'/></iq>`,
			`<iq type='result' id='e-`+node+`'/>`)
	}
	_ = alice.conn.Close()

	bob.send(`<message type='chat' id='m1' to='alice@a.test'><body>wake up</body></message>`)
	ids := make([]string, 3)
	for i, node := range []string{"dev-1", "dev-2", "dev-3"} {
		got := app.expect(t, `<iq type='set' id='{*}' from='alice@a.test' to='bob@b.test/app'><pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='`+node+`'><item><notification xmlns='urn:xmpp:push:0'><x xmlns='jabber:x:data' type='result'><field var='FORM_TYPE'><value>urn:xmpp:push:summary</value></field><field var='message-count'><value>1</value></field><field var='last-message-sender'><value>bob@b.test/b</value></field></x></notification></item></publish></pubsub></iq>`)
		id := got[strings.Index(got, "id='")+len("id='"):]
		ids[i] = id[:strings.IndexByte(id, '\'')]
	}
	// An error from a JID the notification did not go to is not the
	// app server's: dev-2 stays.
	bob.send(`<iq type='error' id='` + ids[1] + `' to='alice@a.test'><error type='cancel'><item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>`)
	bob.send(`<message type='chat' id='probe1' to='alice@a.test'><body>after the forged error</body></message>`)
	if !waitFor(ioTimeout, func() bool { return a.srv.Stats().Modules["offline.stored"] == 2 }) {
		t.Fatalf("the probe after the forged error did not arrive: %v", a.srv.Stats().Modules)
	}
	if n := a.srv.Stats().Modules["push.disabled_by_error"]; n != 0 {
		t.Fatalf("a forged error disabled %d registrations", n)
	}
	// A wait error and a result keep dev-1 and dev-2; a cancel error
	// disables dev-3.
	app.send(`<iq type='error' id='` + ids[0] + `' to='alice@a.test'><error type='wait'><resource-constraint xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>`)
	app.send(`<iq type='result' id='` + ids[1] + `' to='alice@a.test'/>`)
	app.send(`<iq type='error' id='` + ids[2] + `' to='alice@a.test'><error type='cancel'><item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>`)
	// The same session's next stanza travels the same link after them.
	app.send(`<message type='chat' id='probe2' to='alice@a.test'><body>after the answers</body></message>`)
	if !waitFor(ioTimeout, func() bool { return a.srv.Stats().Modules["offline.stored"] == 3 }) {
		t.Fatalf("the probe after the answers did not arrive: %v", a.srv.Stats().Modules)
	}
	if n := a.srv.Stats().Modules["push.disabled_by_error"]; n != 1 {
		t.Fatalf("%d registrations disabled, want 1", n)
	}
	if n := a.srv.Stats().Modules["push.registrations"]; n != 2 {
		t.Fatalf("registrations = %d, want 2", n)
	}
	// The store forgot dev-3 too: a restarted server loads two.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := a.srv.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	a.srv = startServer(t, a.cfg)
	if n := a.srv.Stats().Modules["push.registrations"]; n != 2 {
		t.Fatalf("after a restart: registrations = %d, want 2", n)
	}
}
