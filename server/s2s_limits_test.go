package server_test

import (
	"encoding/base64"
	"strconv"
	"testing"

	"github.com/krill-xmpp/krill/config"
	"github.com/krill-xmpp/krill/server"
)

// s2sExternal authenticates s, a stream from from to n opened by
// dialS2S with from's certificate, with SASL EXTERNAL and restarts it.
func s2sExternal(t *testing.T, s *s2sClient, n *fedNode, from string) {
	t.Helper()
	s.exchange(t, `<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='EXTERNAL'>`+base64.StdEncoding.EncodeToString([]byte(from))+`</auth>`, `<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>`)
	s.send(`<?xml version='1.0'?><stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams' from='` + from + `' to='` + n.domain + `' version='1.0'>`)
	s.expect(t, `<?xml version='1.0'?><stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams' xmlns:db='jabber:server:dialback' from='`+n.domain+`' to='`+from+`' id='{*}' version='1.0'><stream:features/>`)
}

// capRefusal is the stream error of a stream beyond
// s2s.max_streams_per_domain.
const capRefusal = `<stream:error><policy-violation xmlns='urn:ietf:params:xml:ns:xmpp-streams'/><text xmlns='urn:ietf:params:xml:ns:xmpp-streams'>too many streams from this domain</text></stream:error></stream:stream>`

// TestS2SMaxStreamsPerDomain: with s2s.max_streams_per_domain = 3, b.test
// (its certificate, raw sockets) authenticates three streams to a.test;
// the fourth is refused with policy-violation where SASL success would
// be, and a fifth authenticating by dialback with its certificate
// (XEP-0344) where db:result valid would be. The three keep carrying
// stanzas; once one closes, a new stream takes its place.
func TestS2SMaxStreamsPerDomain(t *testing.T) {
	const max = 3
	a, b := fedPair(t, true, func(a, _ *config.Config) { a.S2S.MaxStreamsPerDomain = max })
	alice := fedLogin(t, a, "alice", "a")
	alice.exchange(t, `<presence/>`, `<presence from='alice@a.test/a'/>`)

	var streams []*s2sClient
	for range max {
		s, _ := dialS2S(t, a, "b.test", &b.ca.cert)
		s2sExternal(t, s, a, "b.test")
		streams = append(streams, s)
	}
	over, _ := dialS2S(t, a, "b.test", &b.ca.cert)
	over.send(`<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='EXTERNAL'>` + base64.StdEncoding.EncodeToString([]byte("b.test")) + `</auth>`)
	if got := over.closed(); got != capRefusal {
		t.Fatalf("SASL beyond the cap: got %q", got)
	}
	db, _ := dialS2S(t, a, "b.test", &b.ca.cert)
	db.send(`<db:result from='b.test' to='a.test'>0123</db:result>`)
	if got := db.closed(); got != capRefusal {
		t.Fatalf("dialback beyond the cap: got %q", got)
	}

	for i, s := range streams {
		id := "m" + strconv.Itoa(i)
		s.send(`<message from='bob@b.test/x' to='alice@a.test/a' id='` + id + `' type='chat'><body>hi</body></message>`)
		alice.expect(t, `<message from='bob@b.test/x' to='alice@a.test/a' id='`+id+`' type='chat'><body>hi</body></message>`)
	}
	st := a.srv.S2SStats()
	if st.DomainCapped != 2 || st.ClosedBy["policy"] != 2 || st.Authenticated != max {
		t.Fatalf("stats: %+v", st)
	}

	// An orderly close frees a place.
	streams[0].send(`</stream:stream>`)
	if got := streams[0].closed(); got != `</stream:stream>` {
		t.Fatalf("close: got %q", got)
	}
	if !waitFor(ioTimeout, func() bool { return a.srv.S2SStats().Authenticated == max-1 }) {
		t.Fatalf("stats after a close: %+v", a.srv.S2SStats())
	}
	s, _ := dialS2S(t, a, "b.test", &b.ca.cert)
	s2sExternal(t, s, a, "b.test")
	s.send(`<message from='bob@b.test/y' to='alice@a.test/a' id='n1' type='chat'><body>again</body></message>`)
	alice.expect(t, `<message from='bob@b.test/y' to='alice@a.test/a' id='n1' type='chat'><body>again</body></message>`)
}

// TestS2SLinkLoops: outbound links are spread over the event loops (two
// here) rather than put on the loop of whoever asked first: alice's
// requests to b.test and to conference.b.test, both from her loop, open
// two links that land on different loops, and both carry their answers.
func TestS2SLinkLoops(t *testing.T) {
	a, _ := fedPair(t, true, nil)
	alice := fedLogin(t, a, "alice", "a")
	alice.exchange(t, `<iq type='get' id='p1' to='b.test'><ping xmlns='urn:xmpp:ping'/></iq>`,
		`<iq type='result' id='p1' from='b.test' to='alice@a.test/a'/>`)
	alice.exchange(t, `<iq type='get' id='p2' to='conference.b.test'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>`,
		`<iq type='result' id='p2' from='conference.b.test' to='alice@a.test/a'>{**}</iq>`)
	got := server.LinkLoops(a.srv)
	l1, ok1 := got["a.test>b.test"]
	l2, ok2 := got["a.test>conference.b.test"]
	if !ok1 || !ok2 || l1 == l2 {
		t.Fatalf("link loops = %v, want the two links on different loops", got)
	}
}
