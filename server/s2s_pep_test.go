package server_test

import (
	"strings"
	"testing"

	"github.com/krill-xmpp/krill/config"
)

// fedCaps returns caps' query and answer with the server named domain
// instead of localhost.
func fedCaps(c testCaps, id, domain, full string) (query, answer string) {
	query = strings.Replace(c.query(id, full), "from='localhost'", "from='"+domain+"'", 1)
	answer = strings.Replace(c.answer(id), "to='localhost'", "to='"+domain+"'", 1)
	return query, answer
}

// TestS2SPEP: alice@a.test and bob@b.test are subscribed both ways; bob's
// caps (+notify for tune and OMEMO device lists) reach a.test in his
// presence, and a.test asks bob's client over federation about the unknown
// hash. alice's publish then reaches bob's resource over s2s, and a
// second resource of bob's, whose caps a.test now knows without asking,
// gets the last item when it becomes available.
func TestS2SPEP(t *testing.T) {
	a, b := fedPair(t, true, nil)
	alice := fedLogin(t, a, "alice", "a")
	bob := fedLogin(t, b, "bob", "b")
	bob.exchange(t, `<presence/>`, `<presence from='bob@b.test/b'/>`)
	alice.exchange(t, `<presence/>`, `<presence from='alice@a.test/a'/>`)
	alice.send(`<presence type='subscribe' to='bob@b.test'/>`)
	bob.expect(t, `<presence type='subscribe' from='alice@a.test' to='bob@b.test'/>`)
	bob.send(`<presence type='subscribed' to='alice@a.test'/>`)
	alice.expect(t, `<presence type='subscribed' from='bob@b.test' to='alice@a.test'/>`)
	alice.expect(t, `<presence from='bob@b.test/b' to='alice@a.test'/>`)
	bob.send(`<presence type='subscribe' to='alice@a.test'/>`)
	alice.expect(t, `<presence type='subscribe' from='bob@b.test' to='alice@a.test'/>`)
	alice.send(`<presence type='subscribed' to='bob@b.test'/>`)
	bob.expect(t, `<presence type='subscribed' from='alice@a.test' to='bob@b.test'/>`)
	bob.expect(t, `<presence from='alice@a.test/a' to='bob@b.test'/>`)

	// bob announces caps: his own server asks him first, then a.test,
	// over federation, once his presence has reached alice.
	q, ans := fedCaps(capsOMEMO, "caps-1", "b.test", "bob@b.test/b")
	bob.send(capsOMEMO.presence())
	bob.expect(t, q)
	bob.send(ans)
	c := `<c xmlns='http://jabber.org/protocol/caps' hash='sha-1' node='` + capsOMEMO.node + `' ver='` + capsOMEMO.ver() + `'/>`
	bob.expect(t, `<presence from='bob@b.test/b'>`+c+`</presence>`)
	alice.expect(t, `<presence from='bob@b.test/b' to='alice@a.test'>`+c+`</presence>`)
	q, ans = fedCaps(capsOMEMO, "caps-1", "a.test", "bob@b.test/b")
	bob.expect(t, q)
	bob.send(ans)
	fedSync(t, bob, "b.test", "s1")
	if n := pepCapsQueries(a); n != 1 {
		t.Fatalf("a.test sent %d caps queries, want 1", n)
	}

	const tune = `<tune xmlns='http://jabber.org/protocol/tune'><title>Song</title></tune>`
	alice.exchange(t, `<iq type='set' id='p1'><pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='http://jabber.org/protocol/tune'><item id='t1'>`+tune+`</item></publish></pubsub></iq>`,
		`<iq type='result' id='p1'><pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='http://jabber.org/protocol/tune'><item id='t1'/></publish></pubsub></iq>`)
	ev := event("alice@a.test", "bob@b.test/b", "http://jabber.org/protocol/tune", "t1", tune)
	bob.expect(t, ev)
	// Subscribed to alice's presence, bob may ask her last activity
	// (XEP-0012 section 4): she is online. Before the answer, at most one
	// more copy of the event: the last item a.test sends bob's resource
	// once his caps are known runs detached, and under load it may read
	// the item the publish just stored (XEP-0163 allows the repeat).
	bob.send(`<iq type='get' id='l1' to='alice@a.test'><query xmlns='jabber:iq:last'/></iq>`)
	last := `<iq type='result' id='l1' from='alice@a.test' to='bob@b.test/b'><query xmlns='jabber:iq:last' seconds='0'/></iq>`
	if before := strings.TrimSuffix(bob.skipUntil(last), last); before != "" {
		id, _, _ := strings.Cut(before[strings.Index(before, "id='")+len("id='"):], "'")
		if want := strings.Replace(ev, "{*}", id, 1); before != want {
			t.Fatalf("before the last activity answer: %q, want nothing or one more %q", before, want)
		}
	}

	// A second resource with the same caps: a.test knows them (no
	// query) and sends the last item after alice's presence reaches it.
	b2 := fedLogin(t, b, "bob", "b2")
	b2.send(capsOMEMO.presence())
	got := b2.skipUntil(`<item id='t1'>` + tune + `</item></items></event></message>`)
	if !strings.Contains(got, `<message from='alice@a.test' to='bob@b.test/b2' type='headline' id='pep-`) {
		t.Fatalf("no last item for b2: %q", got)
	}
	if n := pepCapsQueries(a); n != 1 {
		t.Fatalf("a.test sent %d caps queries, want 1", n)
	}
}

// pepCapsQueries is the disco#info queries n's pep module has sent.
func pepCapsQueries(n *fedNode) uint64 { return n.srv.Stats().Modules["pep.caps_queries"] }

// TestS2SPEPPeerGone: the caps a.test follows for the resources of a peer
// domain go when the peer does (hook.PeerGone): carol@c.test/x (a domain
// b.test's CA vouches for, on raw sockets) announces caps alice's client
// made known, so a.test asks nobody. Her stream closing in order (an idle
// close) keeps them; with two streams up, one dropped keeps them; the
// last one dropped (the TCP connection ends without a stream close)
// takes them. Announced again and closed in order, they go when a.test
// finds c.test unreachable (its route refuses connections).
func TestS2SPEPPeerGone(t *testing.T) {
	refused := freePort(t, "127.0.0.1")
	a, b := fedPair(t, true, func(a, _ *config.Config) { a.S2S.Routes["c.test"] = refused })
	alice := fedLogin(t, a, "alice", "a")
	q, ans := fedCaps(capsOMEMO, "caps-1", "a.test", "alice@a.test/a")
	alice.send(capsOMEMO.presence())
	alice.expect(t, q)
	alice.send(ans)
	c := `<c xmlns='http://jabber.org/protocol/caps' hash='sha-1' node='` + capsOMEMO.node + `' ver='` + capsOMEMO.ver() + `'/>`
	alice.expect(t, `<presence from='alice@a.test/a'>`+c+`</presence>`)

	cert := b.ca.issue(t, "c.test")
	remoteCaps := func() uint64 { return a.srv.Stats().Modules["pep.caps_remote"] }
	announce := func(s *s2sClient) {
		t.Helper()
		p := `<presence from='carol@c.test/x' to='alice@a.test'>` + c + `</presence>`
		s.send(p)
		alice.expect(t, p) // pep saw it before the session did
		if n := remoteCaps(); n != 1 {
			t.Fatalf("caps_remote = %d, want 1", n)
		}
	}
	authed := func(n int64) {
		t.Helper()
		if !waitFor(ioTimeout, func() bool { return a.srv.S2SStats().Authenticated == n }) {
			t.Fatalf("authenticated inbound streams: %+v", a.srv.S2SStats())
		}
	}

	s, _ := dialS2S(t, a, "c.test", &cert)
	s2sExternal(t, s, a, "c.test")
	announce(s)
	s.send(`</stream:stream>`)
	if got := s.closed(); got != `</stream:stream>` {
		t.Fatalf("close: got %q", got)
	}
	authed(0)
	if n := remoteCaps(); n != 1 {
		t.Fatalf("after an orderly close: caps_remote = %d, want 1", n)
	}

	s1, _ := dialS2S(t, a, "c.test", &cert)
	s2sExternal(t, s1, a, "c.test")
	s2, _ := dialS2S(t, a, "c.test", &cert)
	s2sExternal(t, s2, a, "c.test")
	announce(s2)
	_ = s1.conn.Close()
	authed(1)
	if n := remoteCaps(); n != 1 {
		t.Fatalf("with a stream left: caps_remote = %d, want 1", n)
	}
	_ = s2.conn.Close()
	authed(0)
	if n := remoteCaps(); n != 0 {
		t.Fatalf("after the peer went: caps_remote = %d, want 0", n)
	}

	s, _ = dialS2S(t, a, "c.test", &cert)
	s2sExternal(t, s, a, "c.test")
	announce(s)
	s.send(`</stream:stream>`)
	if got := s.closed(); got != `</stream:stream>` {
		t.Fatalf("close: got %q", got)
	}
	authed(0)
	alice.send(`<message type='chat' id='m1' to='carol@c.test/x'><body>there?</body></message>`)
	alice.expect(t, `<message type='error' id='m1' from='carol@c.test/x' to='alice@a.test/a'><error type='cancel'><remote-server-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></message>`)
	if n := remoteCaps(); n != 0 {
		t.Fatalf("after c.test was unreachable: caps_remote = %d, want 0", n)
	}
}
