package server_test

import (
	"crypto/tls"
	"encoding/base64"
	"net"
	"strings"
	"testing"
	"time"

	msasl "mellium.im/sasl"
)

// XEP-0198 stream management (modules/sm) over real sockets, with the
// standard modules.

const nsSM = "urn:xmpp:sm:3"

// scramAuth authenticates with SCRAM-SHA-256 and opens the restarted
// stream, without binding: what a client that resumes does.
func (r *rawConn) scramAuth(user, password string) {
	r.t.Helper()
	r.open()
	c := msasl.NewClient(msasl.ScramSha256, msasl.Credentials(func() ([]byte, []byte, []byte) {
		return []byte(user), []byte(password), nil
	}))
	_, first, err := c.Step(nil)
	if err != nil {
		r.t.Fatal(err)
	}
	r.send(`<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='SCRAM-SHA-256'>` + base64.StdEncoding.EncodeToString(first) + `</auth>`)
	chal := between(r.expect(r.t, `<challenge xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>{*}</challenge>`), "'>", "</challenge>")
	raw, _ := base64.StdEncoding.DecodeString(chal)
	_, final, err := c.Step(raw)
	if err != nil {
		r.t.Fatal(err)
	}
	r.send(`<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>` + base64.StdEncoding.EncodeToString(final) + `</response>`)
	r.expect(r.t, `<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>{*}</success>`)
	if f := r.open(); !strings.Contains(f, `<sm xmlns='`+nsSM+`'/>`) {
		r.t.Fatalf("bind features without stream management: %q", f)
	}
}

// cut resets the connection (RST, no stream close): a lost connection.
func (r *rawConn) cut() {
	c := r.conn
	if tc, ok := c.(*tls.Conn); ok {
		c = tc.NetConn()
	}
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = c.Close()
}

func enableResume(t *testing.T, r *rawConn) string {
	t.Helper()
	got := r.exchange(t, `<enable xmlns='`+nsSM+`' resume='true'/>`, `<enabled xmlns='`+nsSM+`' id='{*}' resume='true' max='300'/>`)
	_, id, _ := strings.Cut(got, "id='")
	id, _, _ = strings.Cut(id, "'")
	return id
}

func chat(from, to, id, body string) string {
	return `<message type='chat' to='` + to + `' id='` + id + `' from='` + from + `'><body>` + body + `</body></message>`
}

func delayed(from, to, id, body string) string {
	return `<message type='chat' to='` + to + `' id='` + id + `' from='` + from + `'><body>` + body + `</body><delay xmlns='urn:xmpp:delay' from='localhost' stamp='{*}'/></message>`
}

func sendChat(r *rawConn, to, id, body string) {
	r.send(`<message type='chat' to='` + to + `' id='` + id + `'><body>` + body + `</body></message>`)
}

// TestSMEnableAck: counts both ways, <r/> after sm.request_every
// unacknowledged stanzas, a refused stanza counted, and an ack of more
// than was sent ends the stream with undefined-condition.
func TestSMEnableAck(t *testing.T) {
	cfg := testConfig(t)
	cfg.SM.RequestEvery = 3
	srv := startServer(t, cfg, "ann")
	r := dialRaw(t, srv)
	r.scramLogin("ann", testPassword, "a")
	r.exchange(t, `<r xmlns='`+nsSM+`'/>`, `<failed xmlns='`+nsSM+`'><unexpected-request xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></failed>`)
	r.exchange(t, `<enable xmlns='`+nsSM+`'/>`, `<enabled xmlns='`+nsSM+`'/>`)
	r.exchange(t, `<r xmlns='`+nsSM+`'/>`, `<a xmlns='`+nsSM+`' h='0'/>`)
	r.sync(t, "p1")
	// Refused before any module sees it (jid-malformed): counted all the same.
	r.exchange(t, `<iq type='get' id='bad' to='a@b@c'><ping xmlns='urn:xmpp:ping'/></iq>`, `<iq type='error' id='bad'{**}</iq>`)
	// The third unacknowledged stanza is followed by a request.
	r.exchange(t, `<iq type='get' id='p2' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>`,
		`<iq type='result' id='p2' from='localhost'/><r xmlns='`+nsSM+`'/>`)
	r.exchange(t, `<r xmlns='`+nsSM+`'/>`, `<a xmlns='`+nsSM+`' h='3'/>`)
	r.send(`<a xmlns='` + nsSM + `' h='2'/>`)
	r.send(`<a xmlns='` + nsSM + `' h='3'/>`)
	r.sync(t, "p3")
	r.send(`<a xmlns='` + nsSM + `' h='5'/>`)
	if got := r.closed(); got != `<stream:error><undefined-condition xmlns='urn:ietf:params:xml:ns:xmpp-streams'/><text xmlns='urn:ietf:params:xml:ns:xmpp-streams'>acknowledged more stanzas than were sent</text></stream:error></stream:stream>` {
		t.Fatalf("after a bad ack: %q", got)
	}
}

// TestSMResume: a connection reset with messages sent to the user
// meanwhile, then resumption on a new TLS connection delivers each exactly
// once, in order, with a delay; twice, so that with two event loops
// assigned round-robin one resumption crosses loops; then an unknown
// token fails with item-not-found and binding proceeds.
func TestSMResume(t *testing.T) {
	cfg := tlsConfig(t)
	srv := startServer(t, cfg, "ann", "ben")
	tc := clientTLS(t, cfg)
	const annFull = "ann@localhost/phone"

	ann := tlsRaw(t, srv, tc)
	ann.scramLogin("ann", testPassword, "phone")
	id := enableResume(t, ann)
	ben := tlsRaw(t, srv, tc)
	benFull := ben.scramLogin("ben", testPassword, "b")

	sendChat(ben, annFull, "m1", "one")
	ann.expect(t, chat(benFull, annFull, "m1", "one"))
	ann.cut()
	sendChat(ben, annFull, "m2", "two")
	sendChat(ben, annFull, "m3", "three")
	ben.sync(t, "s1")

	for round, tc2 := range []struct {
		h    string
		want []string
	}{
		{"0", []string{delayed(benFull, annFull, "m1", "one"), delayed(benFull, annFull, "m2", "two"), delayed(benFull, annFull, "m3", "three")}},
		{"4", []string{delayed(benFull, annFull, "m5", "five")}},
	} {
		next := tlsRaw(t, srv, tc)
		next.scramAuth("ann", testPassword)
		want := `<resumed xmlns='` + nsSM + `' previd='` + id + `' h='0'/>`
		for _, w := range tc2.want {
			want += w
		}
		next.exchange(t, `<resume xmlns='`+nsSM+`' previd='`+id+`' h='`+tc2.h+`'/>`, want+`<r xmlns='`+nsSM+`'/>`)
		ann = next
		if round == 0 {
			ann.send(`<a xmlns='` + nsSM + `' h='3'/>`)
			sendChat(ben, annFull, "m4", "four")
			ann.expect(t, chat(benFull, annFull, "m4", "four"))
			ann.cut()
			sendChat(ben, annFull, "m5", "five")
			ben.sync(t, "s2")
		}
	}
	ann.exchange(t, `<r xmlns='`+nsSM+`'/>`, `<a xmlns='`+nsSM+`' h='0'/>`)
	ann.sync(t, "s3")
	ann.exchange(t, `<r xmlns='`+nsSM+`'/>`, `<a xmlns='`+nsSM+`' h='1'/>`)
	if n := srv.Stats().Modules["sm.resumed"]; n != 2 {
		t.Fatalf("sm.resumed = %d", n)
	}
	// gnet deals connections to its two loops in turn: ann, ben, the
	// first resumption, the second; so the second crossed loops.
	if st := srv.Stats(); st.Resumed != 2 || st.ResumedAcross != 1 {
		t.Fatalf("resumed %d, across loops %d; want 2 and 1", st.Resumed, st.ResumedAcross)
	}

	t.Run("unknown token", func(t *testing.T) {
		r := tlsRaw(t, srv, tc)
		r.scramAuth("ann", testPassword)
		r.exchange(t, `<resume xmlns='`+nsSM+`' previd='nope' h='0'/>`, `<failed xmlns='`+nsSM+`'><item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></failed>`)
		// Another account's token fails the same way.
		b2 := tlsRaw(t, srv, tc)
		b2.scramAuth("ben", testPassword)
		b2.exchange(t, `<resume xmlns='`+nsSM+`' previd='`+id+`' h='0'/>`, `<failed xmlns='`+nsSM+`'><item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></failed>`)
		r.exchange(t, `<iq type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>laptop</resource></bind></iq>`,
			`<iq type='result' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><jid>ann@localhost/laptop</jid></bind></iq>`)
	})

	t.Run("failures count", func(t *testing.T) {
		// A failed resumption counts like a failed login: the third on one
		// connection (preauth.max_failed_auth) closes it.
		r := tlsRaw(t, srv, tc)
		r.scramAuth("ann", testPassword)
		notFound := `<failed xmlns='` + nsSM + `'><item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></failed>`
		r.exchange(t, `<resume xmlns='`+nsSM+`' previd='nope' h='0'/>`, notFound)
		r.exchange(t, `<resume xmlns='`+nsSM+`' previd='AAAAAAAAAAAAAAAAAAAAAA' h='0'/>`, notFound)
		r.exchange(t, `<resume xmlns='`+nsSM+`' previd='nope' h='0'/>`, notFound)
		if got := r.closed(); got != `<stream:error><policy-violation xmlns='urn:ietf:params:xml:ns:xmpp-streams'/><text xmlns='urn:ietf:params:xml:ns:xmpp-streams'>too many failed attempts</text></stream:error></stream:stream>` {
			t.Fatalf("after three failed resumptions got %q", got)
		}
	})

	t.Run("takeover", func(t *testing.T) {
		// The old connection still looks alive: it is closed, the session
		// lives on in the new one.
		r := tlsRaw(t, srv, tc)
		r.scramAuth("ann", testPassword)
		r.exchange(t, `<resume xmlns='`+nsSM+`' previd='`+id+`' h='6'/>`, `<resumed xmlns='`+nsSM+`' previd='`+id+`' h='1'/>`)
		if got := ann.closed(); got != `<stream:error><conflict xmlns='urn:ietf:params:xml:ns:xmpp-streams'/><text xmlns='urn:ietf:params:xml:ns:xmpp-streams'>the session was resumed on another connection</text></stream:error></stream:stream>` {
			t.Fatalf("old connection got %q", got)
		}
		sendChat(ben, annFull, "m6", "six")
		r.expect(t, chat(benFull, annFull, "m6", "six"))
	})
}

// TestSMExpiry: a parked session that is not resumed ends after its
// resumption timeout (here the client's max), and the messages its client never acknowledged are
// stored offline and delivered at the next login.
func TestSMExpiry(t *testing.T) {
	srv := startServer(t, testConfig(t), "ann", "ben")
	ann := dialRaw(t, srv)
	annFull := ann.scramLogin("ann", testPassword, "phone")
	// The client's preferred maximum, lower than sm.resume_timeout, applies.
	ann.exchange(t, `<enable xmlns='`+nsSM+`' resume='true' max='1'/>`, `<enabled xmlns='`+nsSM+`' id='{*}' resume='true' max='1'/>`)
	ben := dialRaw(t, srv)
	benFull := ben.scramLogin("ben", testPassword, "b")
	sendChat(ben, annFull, "m1", "one")
	ann.expect(t, chat(benFull, annFull, "m1", "one"))
	ann.cut()
	sendChat(ben, annFull, "m2", "two")
	ben.sync(t, "s1")
	if !waitFor(5*ioTimeout, func() bool { return srv.Stats().Modules["offline.stored"] == 2 }) {
		t.Fatalf("stats %v", srv.Stats().Modules)
	}
	if n := srv.Stats().Modules["sm.expired"]; n != 1 {
		t.Fatalf("sm.expired = %d", n)
	}
	again := dialRaw(t, srv)
	again.scramLogin("ann", testPassword, "phone")
	again.send(`<presence/>`)
	again.skipUntil(`<body>one</body>`)
	again.skipUntil(`<body>two</body>`)
}

// TestSMOverflow: the queue's stanza cap ends the stream with
// resource-constraint; what was queued goes to offline storage.
func TestSMOverflow(t *testing.T) {
	cfg := testConfig(t)
	cfg.SM.MaxQueueStanzas = 3
	srv := startServer(t, cfg, "ann", "ben")
	ann := dialRaw(t, srv)
	annFull := ann.scramLogin("ann", testPassword, "phone")
	ann.exchange(t, `<enable xmlns='`+nsSM+`' resume='true'/>`, `<enabled xmlns='`+nsSM+`' id='{*}' resume='true' max='300'/>`)
	ben := dialRaw(t, srv)
	benFull := ben.scramLogin("ben", testPassword, "b")
	for i, b := range []string{"one", "two", "three", "four"} {
		sendChat(ben, annFull, "m"+string(rune('1'+i)), b)
	}
	got := ann.closed()
	want := chat(benFull, annFull, "m1", "one") + chat(benFull, annFull, "m2", "two") + chat(benFull, annFull, "m3", "three") +
		`<stream:error><resource-constraint xmlns='urn:ietf:params:xml:ns:xmpp-streams'/><text xmlns='urn:ietf:params:xml:ns:xmpp-streams'>too many stanzas waiting for this session</text></stream:error></stream:stream>`
	if got != want {
		t.Fatalf("got %q\nwant %q", got, want)
	}
	if !waitFor(ioTimeout, func() bool { return srv.Stats().Modules["offline.stored"] == 4 }) {
		t.Fatalf("stats %v", srv.Stats().Modules)
	}
	if n := srv.Stats().Modules["sm.overflows"]; n != 1 {
		t.Fatalf("sm.overflows = %d", n)
	}
}

// TestSMSilentLoss: a client that stops answering (no reset: the idle
// ack request that replaces the idle ping goes unanswered) is parked like
// a reset one, and resumes; a message sent meanwhile is resent.
func TestSMSilentLoss(t *testing.T) {
	cfg := testConfig(t)
	cfg.C2S.IdlePing = 300 * time.Millisecond
	cfg.C2S.PingTimeout = 300 * time.Millisecond
	srv := startServer(t, cfg, "ann", "ben")
	ann := dialRaw(t, srv)
	annFull := ann.scramLogin("ann", testPassword, "phone")
	id := enableResume(t, ann)
	// Stream management asks for an ack instead of the idle ping.
	ann.expect(t, `<r xmlns='`+nsSM+`'/>`)
	if got := ann.closed(); got != `<stream:error><connection-timeout xmlns='urn:ietf:params:xml:ns:xmpp-streams'/><text xmlns='urn:ietf:params:xml:ns:xmpp-streams'>no answer to ping</text></stream:error></stream:stream>` {
		t.Fatalf("silent client got %q", got)
	}
	if !waitFor(ioTimeout, func() bool { return srv.Stats().Modules["sm.parked_now"] == 1 }) {
		t.Fatalf("not parked: %v", srv.Stats().Modules)
	}
	// A message while parked, resent after the resumption.
	ben := dialRaw(t, srv)
	benFull := ben.scramLogin("ben", testPassword, "b")
	sendChat(ben, annFull, "m1", "one")
	ben.sync(t, "s1")
	next := dialRaw(t, srv)
	next.scramAuth("ann", testPassword)
	next.exchange(t, `<resume xmlns='`+nsSM+`' previd='`+id+`' h='0'/>`,
		`<resumed xmlns='`+nsSM+`' previd='`+id+`' h='0'/>`+delayed(benFull, annFull, "m1", "one")+`<r xmlns='`+nsSM+`'/>`)
	next.exchange(t, `<a xmlns='`+nsSM+`' h='1'/><r xmlns='`+nsSM+`'/>`, `<a xmlns='`+nsSM+`' h='0'/>`)
	if n := srv.Stats().Modules["sm.parked_now"]; n != 0 {
		t.Fatalf("sm.parked_now = %d after resumption", n)
	}
}

// TestSMShutdown: a graceful shutdown ends parked sessions like an
// expiry: their unacknowledged messages are stored and delivered after the
// restart.
func TestSMShutdown(t *testing.T) {
	cfg := testConfig(t)
	srv := startServer(t, cfg, "ann", "ben")
	ann := dialRaw(t, srv)
	annFull := ann.scramLogin("ann", testPassword, "phone")
	enableResume(t, ann)
	ben := dialRaw(t, srv)
	benFull := ben.scramLogin("ben", testPassword, "b")
	sendChat(ben, annFull, "m1", "one")
	ann.expect(t, chat(benFull, annFull, "m1", "one"))
	ann.cut()
	if !waitFor(ioTimeout, func() bool { return srv.Stats().Modules["sm.parked_now"] == 1 }) {
		t.Fatalf("not parked: %v", srv.Stats().Modules)
	}
	ctx, cancel := contextTimeout()
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if n := srv.Stats().Modules["offline.stored"]; n != 1 {
		t.Fatalf("offline.stored = %d after shutdown", n)
	}
	srv2 := startServer(t, cfg)
	again := dialRaw(t, srv2)
	again.scramLogin("ann", testPassword, "phone")
	again.send(`<presence/>`)
	again.skipUntil(`<body>one</body>`)
}

// TestSMParkedCap: beyond sm.max_parked_per_account, or
// sm.max_parked_total, parked sessions, the oldest ends (its token is then
// unknown) and the newest stays resumable.
func TestSMParkedCap(t *testing.T) {
	for _, tc := range []struct {
		name       string
		perAccount int
		total      int
		users      [2]string
	}{
		{"per account", 1, 0, [2]string{"ann", "ann"}},
		{"total", 0, 1, [2]string{"ann", "ben"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig(t)
			cfg.SM.MaxParkedPerAccount, cfg.SM.MaxParkedTotal = tc.perAccount, tc.total
			srv := startServer(t, cfg, "ann", "ben")
			var ids []string
			for i, user := range tc.users {
				r := dialRaw(t, srv)
				r.scramLogin(user, testPassword, "r"+string(rune('0'+i)))
				ids = append(ids, enableResume(t, r))
				r.cut()
				if !waitFor(ioTimeout, func() bool {
					st := srv.Stats()
					return st.Modules["sm.parked_now"] == 1 && st.Sessions == 1 && st.Modules["sm.closed_parked"] == uint64(i)
				}) {
					t.Fatalf("after parking %d: %+v", i, srv.Stats())
				}
			}
			if n := srv.Stats().Modules["sm.evicted"]; n != 1 {
				t.Fatalf("sm.evicted = %d", n)
			}
			r := dialRaw(t, srv)
			r.scramAuth(tc.users[0], testPassword)
			r.exchange(t, `<resume xmlns='`+nsSM+`' previd='`+ids[0]+`' h='0'/>`, `<failed xmlns='`+nsSM+`'><item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></failed>`)
			r2 := dialRaw(t, srv)
			r2.scramAuth(tc.users[1], testPassword)
			r2.exchange(t, `<resume xmlns='`+nsSM+`' previd='`+ids[1]+`' h='0'/>`, `<resumed xmlns='`+nsSM+`' previd='`+ids[1]+`' h='0'/>`)
		})
	}
}

// TestSMResumeDropped: the connection that resumes drops at once (before
// or after the handover completes, as the race goes); either way the
// session is parked again and a third connection resumes it, with the
// message that came meanwhile, once.
func TestSMResumeDropped(t *testing.T) {
	cfg := testConfig(t)
	srv := startServer(t, cfg, "ann", "ben")
	ann := dialRaw(t, srv)
	annFull := ann.scramLogin("ann", testPassword, "phone")
	id := enableResume(t, ann)
	ben := dialRaw(t, srv)
	benFull := ben.scramLogin("ben", testPassword, "b")
	ann.cut()
	if !waitFor(ioTimeout, func() bool { return srv.Stats().Modules["sm.parks"] == 1 }) {
		t.Fatalf("not parked: %v", srv.Stats().Modules)
	}
	for i := range 5 {
		r := dialRaw(t, srv)
		r.scramAuth("ann", testPassword)
		r.send(`<resume xmlns='` + nsSM + `' previd='` + id + `' h='0'/>`)
		r.cut()
		if !waitFor(ioTimeout, func() bool { return srv.Stats().Modules["sm.parks"] == uint64(2+i) }) {
			t.Fatalf("round %d: not parked again: %v", i, srv.Stats().Modules)
		}
	}
	sendChat(ben, annFull, "m1", "one")
	ben.sync(t, "s1")
	r := dialRaw(t, srv)
	r.scramAuth("ann", testPassword)
	r.exchange(t, `<resume xmlns='`+nsSM+`' previd='`+id+`' h='0'/>`,
		`<resumed xmlns='`+nsSM+`' previd='`+id+`' h='0'/>`+delayed(benFull, annFull, "m1", "one")+`<r xmlns='`+nsSM+`'/>`)
	if n := srv.Stats().Modules["sm.parked_now"]; n != 0 {
		t.Fatalf("sm.parked_now = %d", n)
	}
}
