package server_test

import (
	"context"
	"encoding/xml"
	"strconv"
	"strings"
	"testing"
	"time"

	msasl "mellium.im/sasl"
	"mellium.im/xmlstream"
	"mellium.im/xmpp"
	"mellium.im/xmpp/jid"
	"mellium.im/xmpp/stanza"
)

// TestLoginAndMessage is the end-to-end path with an independent client:
// SCRAM-SHA-256 login, resource binding, and messages A to B by full and
// bare JID, stamped with A's full JID.
func TestLoginAndMessage(t *testing.T) {
	srv := startServer(t, testConfig(t), "alice", "bob")
	alice := login(t, srv, "alice", "phone", msasl.ScramSha256)
	bob := login(t, srv, "bob", "laptop", msasl.ScramSha1)

	aliceJID, bobJID := alice.LocalAddr().String(), bob.LocalAddr().String()
	if !strings.HasPrefix(aliceJID, "alice@localhost/") || !strings.HasPrefix(bobJID, "bob@localhost/") {
		t.Fatalf("bound %q and %q", aliceJID, bobJID)
	}
	received := make(chan string, 4)
	serveErr := make(chan error, 1)
	go func() {
		serveErr <- bob.Serve(xmpp.HandlerFunc(func(r xmlstream.TokenReadEncoder, start *xml.StartElement) error {
			if start.Name.Local != "message" {
				return nil
			}
			var msg struct {
				From string `xml:"from,attr"`
				Body string `xml:"body"`
			}
			if err := xml.NewTokenDecoder(xmlstream.MultiReader(xmlstream.Token(*start), r)).Decode(&msg); err != nil {
				return err
			}
			received <- msg.From + " " + msg.Body
			return nil
		}))
	}()
	// Bare-JID delivery needs an available resource.
	ctx, cancel := context.WithTimeout(context.Background(), ioTimeout)
	defer cancel()
	if err := bob.Send(ctx, stanza.Presence{}.Wrap(nil)); err != nil {
		t.Fatal(err)
	}
	if !waitFor(ioTimeout, func() bool { return srv.Stats().StanzasIn >= 1 }) {
		t.Fatal("the server did not read bob's presence")
	}

	// Each message arrives once, in order: the last, to the full JID
	// again, shows that nothing came twice after the bare-JID one.
	for i, to := range []string{bobJID, "bob@localhost", bobJID} {
		msg := stanza.Message{To: jid.MustParse(to), Type: stanza.ChatMessage}
		body := "hello " + to + " " + strconv.Itoa(i)
		if err := alice.Send(ctx, msg.Wrap(bodyTokens(body))); err != nil {
			t.Fatal(err)
		}
		select {
		case got := <-received:
			if want := aliceJID + " " + body; got != want {
				t.Fatalf("bob received %q, want %q", got, want)
			}
		case <-time.After(ioTimeout):
			t.Fatalf("bob received nothing for a message to %s", to)
		case err := <-serveErr:
			t.Fatalf("bob stopped serving: %v", err)
		}
	}
}

// TestMechanisms logs in with each SCRAM mechanism mellium's client has.
func TestMechanisms(t *testing.T) {
	srv := startServer(t, testConfig(t), "carol")
	for _, m := range []msasl.Mechanism{msasl.ScramSha1, msasl.ScramSha256} {
		t.Run(m.Name, func(t *testing.T) {
			s := login(t, srv, "carol", "", m)
			if s.LocalAddr().Resourcepart() == "" {
				t.Fatal("server generated no resource")
			}
		})
	}
	t.Run("wrong password", func(t *testing.T) {
		if _, err := dialSession(srv, "carol", "", "wrong", msasl.ScramSha256); err == nil {
			t.Fatal("login with a wrong password succeeded")
		}
	})
	t.Run("unknown user", func(t *testing.T) {
		if _, err := dialSession(srv, "nobody", "", testPassword, msasl.ScramSha256); err == nil {
			t.Fatal("login of an unknown user succeeded")
		}
	})
}

// TestServerIQ covers ping, disco#info and unhandled namespaces.
func TestServerIQ(t *testing.T) {
	srv := startServer(t, testConfig(t), "dave")
	r := dialRaw(t, srv)
	r.scramLogin("dave", testPassword, "r")
	cases := []struct {
		name, send, want string
	}{
		{"ping", `<iq type='get' id='p1' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>`, `<iq type='result' id='p1' from='localhost'/>`},
		{"disco info", `<iq type='get' id='d1' to='localhost'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>`, `<iq type='result' id='d1' from='localhost'><query xmlns='http://jabber.org/protocol/disco#info'><identity category='server' type='im' name='Krill'/>{**}<feature var='urn:xmpp:ping'/>{**}</query></iq>`},
		{"unknown namespace", `<iq type='get' id='u1'><query xmlns='urn:example:nothing'/></iq>`, `<iq type='error' id='u1' to='dave@localhost/r'><error type='cancel'><service-unavailable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>`},
		{"offline full jid", `<iq type='get' id='o1' to='dave@localhost/elsewhere'><ping xmlns='urn:xmpp:ping'/></iq>`, `<iq type='error' id='o1' from='dave@localhost/elsewhere' to='dave@localhost/r'><error type='cancel'><service-unavailable ` + stanzasNS + `/></error></iq>`},
		{"remote domain", `<message id='m1' to='x@example.org'><body>hi</body></message>`, `<message type='error' id='m1' from='x@example.org' to='dave@localhost/r'><error type='cancel'><remote-server-not-found ` + stanzasNS + `/>{**}</error></message>`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r.exchange(t, tc.send, tc.want)
		})
	}
}

// TestConflict binds the same full JID twice: the first session gets the
// conflict stream error.
func TestConflict(t *testing.T) {
	srv := startServer(t, testConfig(t), "erin")
	first := dialRaw(t, srv)
	first.scramLogin("erin", testPassword, "same")
	second := dialRaw(t, srv)
	if got := second.scramLogin("erin", testPassword, "same"); got != "erin@localhost/same" {
		t.Fatalf("second bind got %q", got)
	}
	out := first.closed()
	if !strings.Contains(out, "<conflict xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>") {
		t.Fatalf("first session got %q, want a conflict stream error", out)
	}
	second.sync(t, "p")
}

// TestIdlePing: an idle session is pinged; one that answers stays, one that
// does not is closed with connection-timeout. No ping before binding.
func TestIdlePing(t *testing.T) {
	cfg := testConfig(t)
	cfg.C2S.IdlePing = 200 * time.Millisecond
	cfg.C2S.PingTimeout = 300 * time.Millisecond
	srv := startServer(t, cfg, "frank")

	answers := dialRaw(t, srv)
	answers.scramLogin("frank", testPassword, "a")
	silent := dialRaw(t, srv)
	silent.scramLogin("frank", testPassword, "b")

	// Each idle period brings exactly one ping, and nothing else.
	const idlePing = `<iq type='get' id='krill-ping' from='localhost' to='frank@localhost/a'><ping xmlns='urn:xmpp:ping'/></iq>`
	for range 2 {
		answers.expect(t, idlePing)
		answers.send(`<iq type='result' id='krill-ping' to='localhost'/>`)
	}
	silent.expect(t, `<iq type='get' id='krill-ping' from='localhost' to='frank@localhost/b'><ping xmlns='urn:xmpp:ping'/></iq>`)
	if out := silent.closed(); !strings.Contains(out, "<connection-timeout") {
		t.Fatalf("silent session got %q, want connection-timeout", out)
	}
	// answers stays: a ping of its own is answered, though another idle
	// ping may come first (answered too; the loop is bounded).
	answers.send(`<iq type='get' id='still' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>`)
	const still = `<iq type='result' id='still' from='localhost'/>`
	if got := answers.skipUntil(still); got != still && got != idlePing+still {
		t.Fatalf("got %q, want %q, perhaps after one idle ping", got, still)
	}
}

func bodyTokens(s string) xml.TokenReader {
	return xmlstream.Wrap(xmlstream.Token(xml.CharData(s)), xml.StartElement{Name: xml.Name{Local: "body"}})
}
