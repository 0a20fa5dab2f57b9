package server_test

import (
	"encoding/xml"
	"testing"
	"time"

	msasl "mellium.im/sasl"
	"mellium.im/xmlstream"
	"mellium.im/xmpp"
	"mellium.im/xmpp/jid"
	"mellium.im/xmpp/roster"
	"mellium.im/xmpp/stanza"
)

// presenceEvents serves s, reporting each presence's type and sender, and
// approving subscription requests when approve is set.
func presenceEvents(t *testing.T, s *xmpp.Session, approve bool) <-chan string {
	events := make(chan string, 32)
	go func() {
		_ = s.Serve(xmpp.HandlerFunc(func(r xmlstream.TokenReadEncoder, start *xml.StartElement) error {
			if start.Name.Local != "presence" {
				return nil
			}
			var p stanza.Presence
			for _, a := range start.Attr {
				switch a.Name.Local {
				case "type":
					p.Type = stanza.PresenceType(a.Value)
				case "from":
					p.From, _ = jid.Parse(a.Value)
				}
			}
			select {
			case events <- string(p.Type) + " " + p.From.String():
			default:
			}
			if approve && p.Type == stanza.SubscribePresence {
				ctx, cancel := contextTimeout()
				defer cancel()
				return s.Send(ctx, stanza.Presence{To: p.From, Type: stanza.SubscribedPresence}.Wrap(nil))
			}
			return nil
		}))
	}()
	return events
}

func waitEvent(t *testing.T, events <-chan string, want string) {
	t.Helper()
	deadline := time.After(ioTimeout)
	for {
		select {
		case e := <-events:
			if e == want {
				return
			}
		case <-deadline:
			t.Fatalf("no presence %q", want)
		}
	}
}

// TestIMWithMellium drives subscriptions and the roster with mellium's
// client and its roster package: an implementation we did not write.
func TestIMWithMellium(t *testing.T) {
	srv := startServer(t, testConfig(t), "alice", "bob")
	alice := login(t, srv, "alice", "", msasl.ScramSha256)
	bob := login(t, srv, "bob", "", msasl.ScramSha256)
	aliceEvents := presenceEvents(t, alice, false)
	bobEvents := presenceEvents(t, bob, true)
	ctx, cancel := contextTimeout()
	defer cancel()
	for _, s := range []*xmpp.Session{alice, bob} {
		if err := s.Send(ctx, stanza.Presence{}.Wrap(nil)); err != nil {
			t.Fatal(err)
		}
	}
	bobJID := jid.MustParse("bob@localhost")
	if err := alice.Send(ctx, stanza.Presence{To: bobJID, Type: stanza.SubscribePresence}.Wrap(nil)); err != nil {
		t.Fatal(err)
	}
	waitEvent(t, bobEvents, "subscribe alice@localhost")
	waitEvent(t, aliceEvents, "subscribed bob@localhost")
	waitEvent(t, aliceEvents, " "+bob.LocalAddr().String()) // bob's presence follows

	if err := roster.Set(ctx, alice, roster.Item{JID: bobJID, Name: "Bob", Group: []string{"Friends"}}); err != nil {
		t.Fatal(err)
	}
	iter := roster.Fetch(ctx, alice)
	var items []roster.Item
	for iter.Next() {
		items = append(items, iter.Item())
	}
	if err := iter.Err(); err != nil {
		t.Fatal(err)
	}
	_ = iter.Close()
	if len(items) != 1 || !items[0].JID.Equal(bobJID) || items[0].Subscription != "to" || items[0].Name != "Bob" ||
		len(items[0].Group) != 1 || items[0].Group[0] != "Friends" {
		t.Fatalf("alice's roster: %+v", items)
	}
	if iter.Version() == "" {
		t.Fatal("roster without a version")
	}
}
