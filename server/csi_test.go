package server_test

import (
	"encoding/base64"
	"strings"
	"testing"

	msasl "mellium.im/sasl"

	"github.com/krill-xmpp/krill/server"
)

// XEP-0352 client state indication through the real server: the standard
// modules, real sockets. The server runs one event loop, so a stanza one
// client sends to another passes the receiver's outbound chain before the
// sender's next ping is answered: a sync on the sender orders it before
// whatever comes next, without sleeping.

const (
	csiInactive = `<inactive xmlns='urn:xmpp:csi:0'/>`
	csiActive   = `<active xmlns='urn:xmpp:csi:0'/>`
	// csiPing is answered with an iq, which is never held: after what
	// <active/> sends, or after what the answer flushes.
	csiPing = `<iq type='get' id='a' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>`
)

func startCSI(t *testing.T, maxBuffer int) *server.Server {
	t.Helper()
	cfg := testConfig(t)
	cfg.Server.EventLoops = 1
	if maxBuffer > 0 {
		cfg.CSI.MaxBufferBytes = maxBuffer
	}
	return startServer(t, cfg, "ann", "ben", "cat")
}

// csiClient is a logged-in raw connection and its full JID.
type csiClient struct {
	*rawConn
	jid string
}

func csiLogin(t *testing.T, srv *server.Server, user, resource string) csiClient {
	t.Helper()
	r := dialRaw(t, srv)
	return csiClient{r, r.scramLogin(user, testPassword, resource)}
}

// inactive tells the server the client is inactive; the ping after it
// (answered at once: nothing is held yet) orders it before what follows.
func (c csiClient) inactive(t *testing.T) {
	t.Helper()
	c.send(csiInactive)
	c.sync(t, "inactive")
}

// presence, chat state and body messages from c to another client, as
// they arrive stamped.
func (c csiClient) presence(to, show string) (send, recv string) {
	send = `<presence to='` + to + `'><show>` + show + `</show></presence>`
	return send, `<presence to='` + to + `' from='` + c.jid + `'><show>` + show + `</show></presence>`
}

func (c csiClient) chatState(to, id, state string) (send, recv string) {
	send = `<message type='chat' to='` + to + `' id='` + id + `'><` + state + ` xmlns='http://jabber.org/protocol/chatstates'/></message>`
	return send, `<message type='chat' to='` + to + `' id='` + id + `' from='` + c.jid + `'><` + state + ` xmlns='http://jabber.org/protocol/chatstates'/></message>`
}

func (c csiClient) body(to, id, text string) (send, recv string) {
	send = `<message type='chat' to='` + to + `' id='` + id + `'><body>` + text + `</body></message>`
	return send, `<message type='chat' to='` + to + `' id='` + id + `' from='` + c.jid + `'><body>` + text + `</body></message>`
}

// deliver sends s and waits until the server has handled it.
func (c csiClient) deliver(t *testing.T, s string) {
	t.Helper()
	c.send(s)
	c.sync(t, "d")
}

func TestCSIAdvertised(t *testing.T) {
	srv := startCSI(t, 0)
	r := dialRaw(t, srv)
	r.open()
	c := msasl.NewClient(msasl.ScramSha256, msasl.Credentials(func() ([]byte, []byte, []byte) {
		return []byte("ann"), []byte(testPassword), nil
	}))
	_, first, err := c.Step(nil)
	if err != nil {
		t.Fatal(err)
	}
	r.send(`<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='SCRAM-SHA-256'>` + base64.StdEncoding.EncodeToString(first) + `</auth>`)
	chal := between(r.expect(t, `<challenge xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>{*}</challenge>`), "'>", "</challenge>")
	raw, _ := base64.StdEncoding.DecodeString(chal)
	_, final, err := c.Step(raw)
	if err != nil {
		t.Fatal(err)
	}
	r.send(`<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>` + base64.StdEncoding.EncodeToString(final) + `</response>`)
	r.expect(t, `<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>{*}</success>`)
	// In module order: roster versioning, pre-approval, csi, then stream
	// management (registered last).
	const want = `<ver xmlns='urn:xmpp:features:rosterver'/><sub xmlns='urn:xmpp:features:pre-approval'/><csi xmlns='urn:xmpp:csi:0'/><sm xmlns='urn:xmpp:sm:3'/></stream:features>`
	if f := r.open(); !strings.HasSuffix(f, want) {
		t.Fatalf("features after authentication %q, want them to end %q", f, want)
	}
	r.send(`<iq type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>f</resource></bind></iq>`)
	r.expect(t, `<iq type='result' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><jid>ann@localhost/f</jid></bind></iq>`)
	feats := r.exchange(t, `<iq type='get' id='di' to='localhost'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>`,
		`<iq type='result' id='di' from='localhost'><query xmlns='http://jabber.org/protocol/disco#info'>{**}</query></iq>`)
	if !strings.Contains(feats, `<feature var='urn:xmpp:csi:0'/>`) {
		t.Fatalf("disco#info %q has no urn:xmpp:csi:0", feats)
	}
}

func TestCSIHolding(t *testing.T) {
	srv := startCSI(t, 0)
	ben1 := csiLogin(t, srv, "ben", "b1")
	ben2 := csiLogin(t, srv, "ben", "b2")
	cat := csiLogin(t, srv, "cat", "c")

	t.Run("latest presence per contact delivered before a message with a body", func(t *testing.T) {
		ann := csiLogin(t, srv, "ann", "p1")
		ann.inactive(t)
		away, _ := ben1.presence(ann.jid, "away")
		chat, chatRecv := ben1.presence(ann.jid, "chat")
		other, otherRecv := ben2.presence(ann.jid, "dnd")
		ben1.deliver(t, away)
		ben2.deliver(t, other)
		ben1.deliver(t, chat)
		hello, helloRecv := cat.body(ann.jid, "m1", "hello")
		cat.send(hello)
		// ben/b1's away was replaced by its chat; all of it comes just
		// before the message, in the order it came.
		ann.expect(t, otherRecv+chatRecv+helloRecv)
		// Active again after the flush: the next presence is not held.
		ann.send(csiActive)
		ann.sync(t, "a")
		ben1.deliver(t, away)
		_, awayRecv := ben1.presence(ann.jid, "away")
		ann.expect(t, awayRecv)
	})

	t.Run("latest presence delivered on active", func(t *testing.T) {
		ann := csiLogin(t, srv, "ann", "p2")
		ann.inactive(t)
		away, _ := ben1.presence(ann.jid, "away")
		xa, _ := ben1.presence(ann.jid, "xa")
		ben1.deliver(t, away)
		ben1.deliver(t, xa)
		ben1.deliver(t, `<presence type='unavailable' to='`+ann.jid+`'/>`)
		ben2.deliver(t, xa)
		_, xa2 := ben2.presence(ann.jid, "xa")
		ann.send(csiActive + csiPing)
		ann.expect(t, `<presence type='unavailable' to='`+ann.jid+`' from='`+ben1.jid+`'/>`+xa2+`<iq type='result' id='a' from='localhost'/>`)
	})

	t.Run("chat states held and do not flush presence", func(t *testing.T) {
		ann := csiLogin(t, srv, "ann", "p3")
		ann.inactive(t)
		away, _ := ben1.presence(ann.jid, "away")
		comp, compRecv := ben1.chatState(ann.jid, "c1", "composing")
		paused, pausedRecv := ben1.chatState(ann.jid, "c2", "paused")
		chat, chatRecv := ben1.presence(ann.jid, "chat")
		for _, s := range []string{away, comp, paused, chat} {
			ben1.deliver(t, s)
		}
		hi, hiRecv := ben1.body(ann.jid, "m2", "hi")
		ben1.send(hi)
		// Had a chat state flushed, away would have come before it.
		ann.expect(t, compRecv+pausedRecv+chatRecv+hiRecv)
	})

	t.Run("iq not held", func(t *testing.T) {
		ann := csiLogin(t, srv, "ann", "p4")
		ann.inactive(t)
		away, awayRecv := ben1.presence(ann.jid, "away")
		ben1.deliver(t, away)
		ben1.send(`<iq type='get' id='v1' to='` + ann.jid + `'><query xmlns='jabber:iq:version'/></iq>`)
		ann.expect(t, awayRecv+`<iq type='get' id='v1' to='`+ann.jid+`' from='`+ben1.jid+`'><query xmlns='jabber:iq:version'/></iq>`)
		// The server's own answers are iq too.
		chat, chatRecv := ben1.presence(ann.jid, "chat")
		ben1.deliver(t, chat)
		ann.send(`<iq type='get' id='s' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>`)
		ann.expect(t, chatRecv+`<iq type='result' id='s' from='localhost'/>`)
	})

	t.Run("subscription request not held", func(t *testing.T) {
		ann := csiLogin(t, srv, "ann", "p5")
		// Available, so that the request is delivered now (RFC 6121 3.1.3).
		ann.send(`<presence/>`)
		ann.expect(t, `<presence from='`+ann.jid+`'/>`)
		ann.inactive(t)
		away, awayRecv := ben1.presence(ann.jid, "away")
		ben1.deliver(t, away)
		cat.send(`<presence type='subscribe' to='ann@localhost'/>`)
		ann.expect(t, awayRecv+`<presence type='subscribe' from='cat@localhost' to='ann@localhost'/>`)
	})

	t.Run("inbound stanzas do not flush", func(t *testing.T) {
		ann := csiLogin(t, srv, "ann", "p6")
		ann.inactive(t)
		away, _ := ben1.presence(ann.jid, "away")
		ben1.deliver(t, away)
		// ann talks; what it sends is not what it receives.
		out, outRecv := ann.body(ben1.jid, "o1", "from ann")
		ann.send(out)
		ben1.expect(t, outRecv)
		ann.send(`<presence to='` + ben1.jid + `'/>`)
		ben1.expect(t, `<presence to='`+ben1.jid+`' from='`+ann.jid+`'/>`)
		chat, chatRecv := ben1.presence(ann.jid, "chat")
		ben1.deliver(t, chat)
		ann.send(csiActive + csiPing)
		// Had ann's own stanzas flushed, away would be here.
		ann.expect(t, chatRecv+`<iq type='result' id='a' from='localhost'/>`)
	})

	t.Run("held stanzas dropped and counted when the session closes", func(t *testing.T) {
		before := srv.Stats().Modules["csi.dropped"]
		ann := csiLogin(t, srv, "ann", "p7")
		ann.inactive(t)
		away, _ := ben1.presence(ann.jid, "away")
		comp, _ := ben1.chatState(ann.jid, "c3", "composing")
		ben1.deliver(t, away)
		ben1.deliver(t, comp)
		ann.send(`</stream:stream>`)
		if got := ann.closed(); got != `</stream:stream>` {
			t.Fatalf("sent at close %q", got)
		}
		if !waitFor(ioTimeout, func() bool { return srv.Stats().Modules["csi.dropped"] == before+2 }) {
			t.Fatalf("csi.dropped %d, want %d", srv.Stats().Modules["csi.dropped"], before+2)
		}
	})
}

func TestCSIBufferCap(t *testing.T) {
	// Room for two chat states, not three.
	probe := csiClient{jid: "ben@localhost/b"}
	_, one := probe.chatState("ann@localhost/a", "c1", "composing")
	srv := startCSI(t, 2*len(one)+len(one)/2)
	ben := csiLogin(t, srv, "ben", "b")
	ann := csiLogin(t, srv, "ann", "a")
	ann.inactive(t)
	var want strings.Builder
	for i, id := range []string{"c1", "c2", "c3"} {
		s, recv := ben.chatState(ann.jid, id, "composing")
		want.WriteString(recv)
		ben.send(s)
		if i < 2 {
			ben.sync(t, "s")
		}
	}
	// The third does not fit: the two held come first, then it.
	ann.expect(t, want.String())
	// Held again after the flush, until active.
	s, recv := ben.chatState(ann.jid, "c4", "paused")
	ben.deliver(t, s)
	ann.send(csiActive + csiPing)
	ann.expect(t, recv+`<iq type='result' id='a' from='localhost'/>`)
	if n := srv.Stats().Modules["csi.flushed"]; n != 3 {
		t.Errorf("csi.flushed %d, want 3", n)
	}
}
