package server_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/tls"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/krill-xmpp/krill/config"
)

// Federation of the hosted domains: rooms of one Krill domain's MUC
// service reached from the other domain, and components reached from it.

// fedMUC predicts the bytes of the MUC service of a federation node.
type fedMUC struct {
	svc    string // conference.<domain>
	secret []byte
}

func newFedMUC(t *testing.T, n *fedNode) fedMUC {
	t.Helper()
	return fedMUC{svc: "conference." + n.domain, secret: mucSecret(t, n.store)}
}

// id is the XEP-0421 occupant id of bare in room.
func (m fedMUC) id(room, bare string) string {
	h := hmac.New(sha256.New, m.secret)
	h.Write([]byte(room + "@" + m.svc))
	h.Write([]byte{0})
	h.Write([]byte(bare))
	return base64.RawURLEncoding.EncodeToString(h.Sum(nil)[:18])
}

// pres is the presence of o the service sends to `to` (see mucWorld.pres).
func (m fedMUC) pres(o occ, to, typ string, withJID bool, codes []int, itemInner string) string {
	s := `<presence from='` + o.room + `@` + m.svc + `/` + o.nick + `' to='` + to + `'`
	if typ != "" {
		s += ` type='` + typ + `'`
	}
	s += `><x xmlns='` + nsUser + `'><item affiliation='` + o.aff + `'`
	if withJID {
		s += ` jid='` + o.full + `'`
	}
	s += ` role='` + o.role + `'`
	if itemInner == "" {
		s += `/>`
	} else {
		s += `>` + itemInner + `</item>`
	}
	for _, c := range codes {
		s += fmt.Sprintf(`<status code='%d'/>`, c)
	}
	return s + `</x><occupant-id xmlns='urn:xmpp:occupant-id:0' id='` + m.id(o.room, o.bare()) + `'/></presence>`
}

func (m fedMUC) subject(room, to string) string {
	return `<message from='` + room + `@` + m.svc + `' to='` + to + `' type='groupchat'><subject/></message>`
}

func (m fedMUC) groupchat(o occ, to, id, body string) string {
	return `<message from='` + o.room + `@` + m.svc + `/` + o.nick + `' to='` + to + `' type='groupchat' id='` + id + `'><body>` + body +
		`</body><occupant-id xmlns='urn:xmpp:occupant-id:0' id='` + m.id(o.room, o.bare()) + `'/></message>`
}

// create makes room an open instant room owned by c, which joins as o.
func (m fedMUC) create(t *testing.T, c *rawConn, o occ) {
	t.Helper()
	rj := o.room + "@" + m.svc
	c.send(`<presence to='` + rj + `/` + o.nick + `'><x xmlns='` + nsMUC + `'/></presence>`)
	c.expect(t, m.pres(o, o.full, "", true, []int{110, 201}, ""))
	c.expect(t, m.subject(o.room, o.full))
	c.exchange(t, `<iq type='set' id='inst' to='`+rj+`'><query xmlns='`+nsOwner+`'><x xmlns='jabber:x:data' type='submit'/></query></iq>`,
		`<iq type='result' id='inst' from='`+rj+`'/>`)
}

// TestS2SMUCRemoteOccupant: bob@b.test uses a room of conference.a.test
// over federation: joins (the occupants, the history, the subject), sends
// and gets groupchat messages and private messages, queries the room's
// archive, leaves; joins again and is kicked, then banned. Then the other
// way: alice@a.test joins a room of conference.b.test and exchanges
// messages with bob. With SASL EXTERNAL (the certificates name the MUC
// domains) and with dialback (keys per domain pair).
func TestS2SMUCRemoteOccupant(t *testing.T) {
	for _, tc := range []struct {
		name  string
		trust bool
	}{{"external", true}, {"dialback", false}} {
		t.Run(tc.name, func(t *testing.T) {
			a, b := fedPair(t, tc.trust, func(a, _ *config.Config) { a.Web.Listen = "127.0.0.2:0" }) // upload.a.test
			ma, mb := newFedMUC(t, a), newFedMUC(t, b)
			alice := fedLogin(t, a, "alice", "a")
			bob := fedLogin(t, b, "bob", "b")
			al := occ{"room", "Alice", "alice@a.test/a", "owner", "moderator"}
			bo := occ{"room", "Bob", "bob@b.test/b", "none", "participant"}
			rj := "room@" + ma.svc
			ma.create(t, alice, al)
			alice.send(`<message to='` + rj + `' type='groupchat' id='h0'><body>before</body></message>`)
			alice.expect(t, ma.groupchat(al, al.full, "h0", "before"))

			// Join: the occupants, self-presence, history, subject.
			bob.send(`<presence to='` + rj + `/Bob'><x xmlns='` + nsMUC + `'/></presence>`)
			bob.expect(t, ma.pres(al, bo.full, "", false, nil, ""))
			bob.expect(t, ma.pres(bo, bo.full, "", true, []int{110}, ""))
			bob.expect(t, strings.TrimSuffix(ma.groupchat(al, bo.full, "h0", "before"), `</message>`)+
				`<delay xmlns='urn:xmpp:delay' from='`+rj+`' stamp='{*}'/></message>`)
			bob.expect(t, ma.subject("room", bo.full))
			alice.expect(t, ma.pres(bo, al.full, "", true, nil, ""))

			// Groupchat both ways: every occupant, in order.
			bob.send(`<message to='` + rj + `' type='groupchat' id='g1'><body>from b</body></message>`)
			alice.expect(t, ma.groupchat(bo, al.full, "g1", "from b"))
			bob.expect(t, ma.groupchat(bo, bo.full, "g1", "from b"))
			alice.send(`<message to='` + rj + `' type='groupchat' id='g2'><body>from a</body></message>`)
			alice.expect(t, ma.groupchat(al, al.full, "g2", "from a"))
			bob.expect(t, ma.groupchat(al, bo.full, "g2", "from a"))

			// Private messages both ways.
			bob.send(`<message to='` + rj + `/Alice' type='chat' id='pm1'><body>psst</body></message>`)
			alice.expect(t, `<message from='`+rj+`/Bob' to='`+al.full+`' type='chat' id='pm1'><body>psst</body><occupant-id xmlns='urn:xmpp:occupant-id:0' id='`+ma.id("room", "bob@b.test")+`'/><x xmlns='`+nsUser+`'/></message>`)
			alice.send(`<message to='` + rj + `/Bob' type='chat' id='pm2'><body>hush</body></message>`)
			bob.expect(t, `<message from='`+rj+`/Alice' to='`+bo.full+`' type='chat' id='pm2'><body>hush</body><occupant-id xmlns='urn:xmpp:occupant-id:0' id='`+ma.id("room", "alice@a.test")+`'/><x xmlns='`+nsUser+`'/></message>`)

			// disco#info of the room, asked from the other server.
			bob.send(`<iq type='get' id='d1' to='` + rj + `'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>`)
			bob.expect(t, `<iq type='result' id='d1' from='`+rj+`' to='`+bo.full+`'><query xmlns='http://jabber.org/protocol/disco#info'>{**}</query></iq>`)

			// Leaving.
			bob.send(`<presence to='` + rj + `/Bob' type='unavailable'/>`)
			gone := bo
			gone.role = "none"
			bob.expect(t, ma.pres(gone, bo.full, "unavailable", true, []int{110}, ""))
			alice.expect(t, ma.pres(gone, al.full, "unavailable", true, nil, ""))

			// Moderation: kicked, then banned.
			bob.send(`<presence to='` + rj + `/Bob'><x xmlns='` + nsMUC + `'><history maxstanzas='0'/></x></presence>`)
			bob.expect(t, ma.pres(al, bo.full, "", false, nil, ""))
			bob.expect(t, ma.pres(bo, bo.full, "", true, []int{110}, ""))
			bob.expect(t, ma.subject("room", bo.full))
			alice.expect(t, ma.pres(bo, al.full, "", true, nil, ""))
			alice.exchange(t, `<iq type='set' id='k1' to='`+rj+`'><query xmlns='`+nsAdmin+`'><item nick='Bob' role='none'><reason>enough</reason></item></query></iq>`,
				`<iq type='result' id='k1' from='`+rj+`'/>`)
			bob.expect(t, ma.pres(gone, bo.full, "unavailable", true, []int{110, 307}, `<actor nick='Alice'/><reason>enough</reason>`))
			alice.expect(t, ma.pres(gone, al.full, "unavailable", true, []int{307}, `<actor nick='Alice'/><reason>enough</reason>`))
			alice.exchange(t, `<iq type='set' id='b1' to='`+rj+`'><query xmlns='`+nsAdmin+`'><item affiliation='outcast' jid='bob@b.test'/></query></iq>`,
				`<iq type='result' id='b1' from='`+rj+`'/>`)
			bob.exchange(t, `<presence to='`+rj+`/Bob' id='j3'><x xmlns='`+nsMUC+`'/></presence>`,
				`<presence from='`+rj+`/Bob' to='`+bo.full+`' type='error' id='j3'><x xmlns='`+nsMUC+`'/><error type='auth'><forbidden `+stanzasNS+`/><text `+stanzasNS+`>banned from the room</text></error></presence>`)

			// The other way: a local user in a room of the other server.
			bob2 := occ{"lobby", "Bob", "bob@b.test/b", "owner", "moderator"}
			al2 := occ{"lobby", "Alice", "alice@a.test/a", "none", "participant"}
			lj := "lobby@" + mb.svc
			mb.create(t, bob, bob2)
			alice.send(`<presence to='` + lj + `/Alice'><x xmlns='` + nsMUC + `'/></presence>`)
			alice.expect(t, mb.pres(bob2, al2.full, "", false, nil, ""))
			alice.expect(t, mb.pres(al2, al2.full, "", true, []int{110}, ""))
			alice.expect(t, mb.subject("lobby", al2.full))
			bob.expect(t, mb.pres(al2, bob2.full, "", true, nil, ""))
			alice.send(`<message to='` + lj + `' type='groupchat' id='l1'><body>hello lobby</body></message>`)
			alice.expect(t, mb.groupchat(al2, al2.full, "l1", "hello lobby"))
			bob.expect(t, mb.groupchat(al2, bob2.full, "l1", "hello lobby"))
			bob.send(`<message to='` + lj + `' type='groupchat' id='l2'><body>welcome</body></message>`)
			bob.expect(t, mb.groupchat(bob2, bob2.full, "l2", "welcome"))
			alice.expect(t, mb.groupchat(bob2, al2.full, "l2", "welcome"))

			// A room created over federation (loaded through the inbound
			// stream's Async), and the upload service, for local users only.
			bob.send(`<presence to='bobs@` + ma.svc + `/Bob'><x xmlns='` + nsMUC + `'/></presence>`)
			bob.expect(t, ma.pres(occ{"bobs", "Bob", "bob@b.test/b", "owner", "moderator"}, bo.full, "", true, []int{110, 201}, ""))
			bob.expect(t, ma.subject("bobs", bo.full))
			bob.exchange(t, `<iq type='get' id='u1' to='upload.a.test'><request xmlns='urn:xmpp:http:upload:0' filename='a.txt' size='10' content-type='text/plain'/></iq>`,
				`<iq type='error' id='u1' from='upload.a.test' to='bob@b.test/b'><error type='cancel'><not-allowed `+stanzasNS+`/><text `+stanzasNS+`>upload slots are for this server&apos;s users</text></error></iq>`)

			// alice's session ends without a word to the room: her
			// server tells it (RFC 6121 4.6.3, directed presence).
			_ = alice.conn.Close()
			left := al2
			left.role = "none"
			bob.expect(t, mb.pres(left, bob2.full, "unavailable", true, nil, ""))

			// One stream each way per domain pair: the services' streams
			// are their own, authenticated as the service's domain.
			as, bs := a.srv.S2SStats(), b.srv.S2SStats()
			if tc.trust && (as.AuthExternal == 0 || bs.AuthExternal == 0 || as.AuthDialback+bs.AuthDialback != 0) {
				t.Fatalf("want SASL EXTERNAL only: a %+v, b %+v", as, bs)
			}
			if !tc.trust && (as.AuthDialback == 0 || bs.AuthDialback == 0 || as.AuthExternal+bs.AuthExternal != 0) {
				t.Fatalf("want dialback only: a %+v, b %+v", as, bs)
			}
		})
	}
}

// TestS2SMUCBounce: an occupant on a third server whose domain cannot be
// reached: the room's copy for it comes back as remote-server-not-found
// (type cancel) and the room removes it, with 307 and 333, as XEP-0045
// services do. The third server is a raw stream authenticated with SASL
// EXTERNAL to conference.a.test itself, whose replies have nowhere to go.
func TestS2SMUCBounce(t *testing.T) {
	refused := freePort(t, "127.0.0.4")
	a, b := fedPair(t, true, func(a, _ *config.Config) { a.S2S.Routes["c.test"] = refused })
	ma := newFedMUC(t, a)
	alice := fedLogin(t, a, "alice", "a")
	al := occ{"room", "Alice", "alice@a.test/a", "owner", "moderator"}
	rj := "room@" + ma.svc
	ma.create(t, alice, al)

	// c.test's certificate, from the CA a.test trusts (b.test's).
	cert := b.ca.issue(t, "c.test")
	s := dialHosted(t, a, "c.test", ma.svc, &cert)
	s.exchange(t, `<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='EXTERNAL'>`+base64.StdEncoding.EncodeToString([]byte("c.test"))+`</auth>`, `<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>`)
	s.send(`<?xml version='1.0'?><stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams' from='c.test' to='` + ma.svc + `' version='1.0'>`)
	s.expect(t, `<?xml version='1.0'?><stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams' xmlns:db='jabber:server:dialback' from='`+ma.svc+`' to='c.test' id='{*}' version='1.0'><stream:features/>`)

	carol := occ{"room", "Carol", "carol@c.test/c", "none", "participant"}
	s.send(`<presence from='carol@c.test/c' to='` + rj + `/Carol'><x xmlns='` + nsMUC + `'/></presence>`)
	alice.expect(t, ma.pres(carol, al.full, "", true, nil, ""))
	// What the room sent carol bounced: she is removed.
	gone := carol
	gone.role = "none"
	alice.expect(t, ma.pres(gone, al.full, "unavailable", true, []int{307, 333}, `<reason>remote-server-not-found</reason>`))
	// The room goes on without her: nothing more is sent her way.
	alice.send(`<message to='` + rj + `' type='groupchat' id='g1'><body>still here</body></message>`)
	alice.expect(t, ma.groupchat(al, al.full, "g1", "still here"))
	if !waitFor(ioTimeout, func() bool { return a.srv.S2SStats().Bounced >= 1 }) {
		t.Fatalf("nothing bounced: %+v", a.srv.S2SStats())
	}
}

// dialHosted opens a stream from domain to the hosted domain `to` of n,
// with STARTTLS and cert, and returns it with the post-TLS features read.
func dialHosted(t *testing.T, n *fedNode, from, to string, cert *tls.Certificate) *s2sClient {
	t.Helper()
	nc, err := net.DialTimeout("tcp", n.s2s, ioTimeout)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = nc.Close() })
	r := &rawConn{t: t, conn: nc}
	header := `<?xml version='1.0'?><stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams' xmlns:db='jabber:server:dialback' from='` + from + `' to='` + to + `' version='1.0'>`
	r.send(header)
	r.expect(t, `<?xml version='1.0'?><stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams' xmlns:db='jabber:server:dialback' from='`+to+`' to='`+from+`' id='{*}' version='1.0'><stream:features><starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required/></starttls></stream:features>`)
	r.exchange(t, `<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>`, `<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>`)
	cfg := &tls.Config{ServerName: to, InsecureSkipVerify: true}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	tc := tls.Client(nc, cfg)
	_ = tc.SetDeadline(time.Now().Add(ioTimeout))
	if err := tc.Handshake(); err != nil {
		t.Fatal(err)
	}
	r.conn = tc
	r.send(header)
	feats := r.skipUntil("</stream:features>")
	if !strings.Contains(feats, `<mechanism>EXTERNAL</mechanism>`) {
		t.Fatalf("features %q", feats)
	}
	return &s2sClient{r}
}

// TestS2SHostedDomains: an inbound stream may be addressed to any domain
// the server hosts (its MUC service's, a component's), not to another;
// the pre-auth policy holds for them (nothing routed before
// authentication, the absolute deadline, counted as s2s).
func TestS2SHostedDomains(t *testing.T) {
	a, _ := fedPair(t, true, func(a, _ *config.Config) {
		a.Component.Listen = "127.0.0.2:0"
		a.Component.Secrets = map[string]string{"push.a.test": "s3cret"}
		a.Preauth.Timeout = time.Second
	})
	open := func(to string) *rawConn {
		nc, err := net.DialTimeout("tcp", a.s2s, ioTimeout)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = nc.Close() })
		r := &rawConn{t: t, conn: nc}
		r.send(`<?xml version='1.0'?><stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams' from='b.test' to='` + to + `' version='1.0'>`)
		return r
	}
	for _, to := range []string{"a.test", "conference.a.test", "push.a.test"} {
		r := open(to)
		r.expect(t, `<?xml version='1.0'?><stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams' xmlns:db='jabber:server:dialback' from='`+to+`' to='b.test' id='{*}' version='1.0'><stream:features><starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required/></starttls></stream:features>`)
		r.send(`<message from='bob@b.test/b' to='room@conference.a.test' type='groupchat'><body>early</body></message>`)
		if got := r.closed(); !strings.Contains(got, `<not-authorized xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>`) {
			t.Fatalf("to %s: pre-auth stanza: got %q", to, got)
		}
	}
	r := open("nope.a.test")
	if got := r.closed(); !strings.Contains(got, `<host-unknown xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>`) {
		t.Fatalf("unknown domain: got %q", got)
	}
	// The absolute pre-auth deadline holds for a hosted domain's stream.
	r = open("conference.a.test")
	r.skipUntil(`</stream:features>`)
	if got := r.closed(); !strings.Contains(got, `<connection-timeout xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>`) {
		t.Fatalf("silent stream: got %q", got)
	}
	if st := a.srv.S2SStats(); st.StanzasIn != 0 || st.Preauth != 0 || st.ClosedDeadline != 1 {
		t.Fatalf("after: %+v", st)
	}
}

// TestS2SComponentRemote: a stanza from b.test to a component of a.test
// reaches the component over federation, and the component's answer goes
// back over a stream from the component's domain.
func TestS2SComponentRemote(t *testing.T) {
	for _, tc := range []struct {
		name  string
		trust bool
	}{{"external", true}, {"dialback", false}} {
		t.Run(tc.name, func(t *testing.T) {
			a, b := fedPair(t, tc.trust, func(a, _ *config.Config) {
				a.Component.Listen = "127.0.0.2:0"
				a.Component.Secrets = map[string]string{"push.a.test": "s3cret"}
			})
			nc, err := net.DialTimeout("tcp", a.srv.ComponentAddr(), ioTimeout)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = nc.Close() })
			comp := &rawConn{t: t, conn: nc}
			comp.send(`<?xml version='1.0'?><stream:stream xmlns='jabber:component:accept' xmlns:stream='http://etherx.jabber.org/streams' to='push.a.test'>`)
			got := comp.expect(t, `<?xml version='1.0'?><stream:stream xmlns:stream='http://etherx.jabber.org/streams' xmlns='jabber:component:accept' from='push.a.test' id='{*}'>`)
			sum := sha1Hex(between(got, "id='", "'>") + "s3cret")
			comp.exchange(t, `<handshake>`+sum+`</handshake>`, `<handshake/>`)

			bob := fedLogin(t, b, "bob", "b")
			bob.send(`<iq type='get' id='q1' to='push.a.test'><ping xmlns='urn:xmpp:ping'/></iq>`)
			comp.expect(t, `<iq type='get' id='q1' to='push.a.test' from='bob@b.test/b'><ping xmlns='urn:xmpp:ping'/></iq>`)
			comp.send(`<iq type='result' id='q1' from='push.a.test' to='bob@b.test/b'/>`)
			bob.expect(t, `<iq type='result' id='q1' from='push.a.test' to='bob@b.test/b'/>`)
			comp.send(`<message from='news@push.a.test' to='bob@b.test/b' id='n1'><body>extra</body></message>`)
			bob.expect(t, `<message from='news@push.a.test' to='bob@b.test/b' id='n1'><body>extra</body></message>`)
			if st := b.srv.S2SStats(); st.Authenticated != 1 {
				t.Fatalf("b: want one inbound stream, from push.a.test: %+v", st)
			}
		})
	}
}

func sha1Hex(s string) string {
	sum := sha1.Sum([]byte(s))
	return hex.EncodeToString(sum[:])
}

// TestS2SMUCArchive: an occupant on another server queries the archive
// of a room (XEP-0313 on the room's JID) over federation and gets the
// room's messages and the final result.
func TestS2SMUCArchive(t *testing.T) {
	a, b := fedPair(t, true, func(a, _ *config.Config) { a.MAM.Enabled = true })
	ma := newFedMUC(t, a)
	alice := fedLogin(t, a, "alice", "a")
	bob := fedLogin(t, b, "bob", "b")
	al := occ{"arch", "Alice", "alice@a.test/a", "owner", "moderator"}
	bo := occ{"arch", "Bob", "bob@b.test/b", "none", "participant"}
	rj := "arch@" + ma.svc
	ma.create(t, alice, al)
	alice.exchange(t, `<iq type='set' id='cfg' to='`+rj+`'><query xmlns='`+nsOwner+`'><x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE'><value>http://jabber.org/protocol/muc#roomconfig</value></field><field var='muc#roomconfig_enablearchiving'><value>1</value></field></x></query></iq>`,
		`<iq type='result' id='cfg' from='`+rj+`'/>`)
	alice.expect(t, `<message from='`+rj+`' to='`+al.full+`' type='groupchat'><x xmlns='`+nsUser+`'><status code='104'/><status code='170'/></x></message>`)

	bob.send(`<presence to='` + rj + `/Bob'><x xmlns='` + nsMUC + `'/></presence>`)
	bob.expect(t, ma.pres(al, bo.full, "", false, nil, ""))
	bob.expect(t, ma.pres(bo, bo.full, "", true, []int{110, 170}, ""))
	bob.expect(t, ma.subject("arch", bo.full))
	alice.expect(t, ma.pres(bo, al.full, "", true, nil, ""))

	alice.send(`<message to='` + rj + `' type='groupchat' id='g1'><body>kept</body></message>`)
	rest := `' type='groupchat' id='g1'><body>kept</body><occupant-id xmlns='urn:xmpp:occupant-id:0' id='` + ma.id("arch", "alice@a.test") + `'/>`
	got := alice.expect(t, `<message from='`+rj+`/Alice' to='`+al.full+rest+`<stanza-id xmlns='urn:xmpp:sid:0' by='`+rj+`' id='{*}'/></message>`)
	id := stanzaID(t, got, rj)
	bob.expect(t, `<message from='`+rj+`/Alice' to='`+bo.full+rest+`<stanza-id xmlns='urn:xmpp:sid:0' by='`+rj+`' id='`+id+`'/></message>`)

	bob.send(roomQuery(rj, "q1", "r1", ""))
	bob.expect(t, roomResult(rj, bo.full, "r1", id, "{*}", `<message xmlns='jabber:client' from='`+rj+`/Alice`+rest+`</message>`))
	bob.expect(t, strings.Replace(roomFin(rj, "q1", true, id, id, 1), `from='`+rj+`'`, `from='`+rj+`' to='`+bo.full+`'`, 1))
}

// TestS2SMUCGhost: an occupant from a.test whose session is not there (it
// joined, then its server lost it without telling the room) is removed by
// the room when a.test answers a groupchat copy for it with
// service-unavailable (RFC 6121 8.5.3.2.1), with 307 and 333. The join is
// played over a raw stream authenticated as a.test.
func TestS2SMUCGhost(t *testing.T) {
	a, b := fedPair(t, true, nil)
	mb := newFedMUC(t, b)
	bob := fedLogin(t, b, "bob", "b")
	bo := occ{"lobby", "Bob", "bob@b.test/b", "owner", "moderator"}
	lj := "lobby@" + mb.svc
	mb.create(t, bob, bo)

	s := dialHosted(t, b, "a.test", mb.svc, &a.ca.cert)
	s.exchange(t, `<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='EXTERNAL'>=</auth>`, `<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>`)
	s.send(`<?xml version='1.0'?><stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams' from='a.test' to='` + mb.svc + `' version='1.0'>`)
	s.expect(t, `<?xml version='1.0'?><stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams' xmlns:db='jabber:server:dialback' from='`+mb.svc+`' to='a.test' id='{*}' version='1.0'><stream:features/>`)
	ghost := occ{"lobby", "Ghost", "alice@a.test/ghost", "none", "participant"}
	s.send(`<presence from='alice@a.test/ghost' to='` + lj + `/Ghost'><x xmlns='` + nsMUC + `'/></presence>`)
	bob.expect(t, mb.pres(ghost, bo.full, "", true, nil, ""))

	bob.send(`<message to='` + lj + `' type='groupchat' id='g1'><body>anyone?</body></message>`)
	bob.expect(t, mb.groupchat(bo, bo.full, "g1", "anyone?"))
	gone := ghost
	gone.role = "none"
	bob.expect(t, mb.pres(gone, bo.full, "unavailable", true, []int{307, 333}, `<reason>service-unavailable</reason>`))
}

// TestS2SStopNoDial: a server that stops opens no new streams. alice is
// in a room of b.test, the streams have closed idle, and a.test stops:
// her session's end sends the room her unavailable presence (directed
// presence), which must not dial b.test while the loops are stopping
// (the dial would wait s2s.connect_timeout for an enrolment that never
// comes, and Stop with it).
func TestS2SStopNoDial(t *testing.T) {
	a, b := fedPair(t, true, func(a, b *config.Config) {
		a.S2S.IdleTimeout = 300 * time.Millisecond
		b.S2S.IdleTimeout = 300 * time.Millisecond
	})
	mb := newFedMUC(t, b)
	bob := fedLogin(t, b, "bob", "b")
	alice := fedLogin(t, a, "alice", "a")
	bo := occ{"lobby", "Bob", "bob@b.test/b", "owner", "moderator"}
	al := occ{"lobby", "Alice", "alice@a.test/a", "none", "participant"}
	mb.create(t, bob, bo)
	alice.send(`<presence to='lobby@` + mb.svc + `/Alice'><x xmlns='` + nsMUC + `'/></presence>`)
	alice.expect(t, mb.pres(bo, al.full, "", false, nil, ""))
	bob.expect(t, mb.pres(al, bo.full, "", true, nil, ""))
	if !waitFor(ioTimeout, func() bool { return a.srv.S2SStats().Outbound == 0 && b.srv.S2SStats().Outbound == 0 }) {
		t.Fatalf("streams not closed idle: a %+v, b %+v", a.srv.S2SStats(), b.srv.S2SStats())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Now()
	if err := a.srv.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if el := time.Since(start); el > 5*time.Second {
		t.Fatalf("Stop took %v", el)
	}
	if d := a.srv.S2SStats().Dialled; d != 1 {
		t.Fatalf("dialled %d, want 1 (no stream opened while stopping)", d)
	}
}

// TestS2SMUCFanout: the copies of a groupchat message for several
// occupants of one remote domain share one stream, from the MUC domain to
// that domain, in the room's order.
func TestS2SMUCFanout(t *testing.T) {
	a, b := fedPair(t, true, nil)
	ma := newFedMUC(t, a)
	alice := fedLogin(t, a, "alice", "a")
	al := occ{"fan", "Alice", "alice@a.test/a", "owner", "moderator"}
	rj := "fan@" + ma.svc
	ma.create(t, alice, al)
	var bobs []*rawConn
	var occs []occ
	for i := range 3 {
		res, nick := fmt.Sprintf("b%d", i), fmt.Sprintf("Bob%d", i)
		o := occ{"fan", nick, "bob@b.test/" + res, "none", "participant"}
		c := fedLogin(t, b, "bob", res)
		c.send(`<presence to='` + rj + `/` + nick + `'><x xmlns='` + nsMUC + `'/></presence>`)
		c.skipUntil(`<subject/></message>`)
		alice.expect(t, ma.pres(o, al.full, "", true, nil, ""))
		for j, prev := range bobs {
			prev.expect(t, ma.pres(o, occs[j].full, "", false, nil, ""))
		}
		bobs, occs = append(bobs, c), append(occs, o)
	}
	for i := range 5 {
		alice.send(fmt.Sprintf(`<message to='%s' type='groupchat' id='f%d'><body>n%d</body></message>`, rj, i, i))
	}
	for i := range 5 {
		alice.expect(t, ma.groupchat(al, al.full, fmt.Sprintf("f%d", i), fmt.Sprintf("n%d", i)))
		for j, c := range bobs {
			c.expect(t, ma.groupchat(al, occs[j].full, fmt.Sprintf("f%d", i), fmt.Sprintf("n%d", i)))
		}
	}
	if st := a.srv.S2SStats(); st.Outbound != 1 || st.Dialled != 1 || st.StanzasOut < 3*5 {
		t.Fatalf("a: want one outbound stream (conference.a.test to b.test) carrying every copy: %+v", st)
	}
}
