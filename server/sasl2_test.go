package server_test

import (
	"crypto/tls"
	"encoding/base64"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	msasl "mellium.im/sasl"

	"github.com/krill-xmpp/krill/hook"
	"github.com/krill-xmpp/krill/server"
)

// XEP-0388 SASL2 and XEP-0386 Bind 2 over real sockets, with the standard
// modules: the same mechanisms and pre-auth policy as RFC 6120 SASL.

const (
	nsSASL2Test = "urn:xmpp:sasl:2"
	sasl2Open   = `<authenticate xmlns='urn:xmpp:sasl:2' mechanism='`
	// uaA and uaB are user-agent ids of two installations.
	uaA = "d4565fa7-4d72-4749-b3d3-740edbf87770"
	uaB = "6f1ad3c2-0a8e-4c41-9d0f-2b1f6f3c9a11"
	// sasl2Features is the <authentication/> feature over TLS with the
	// standard modules: every mechanism, -PLUS first, and the inline
	// features (Bind 2 with carbons, CSI and stream management; stream
	// management's resumption).
	sasl2Features = `<authentication xmlns='urn:xmpp:sasl:2'>` +
		`<mechanism>SCRAM-SHA-512-PLUS</mechanism><mechanism>SCRAM-SHA-256-PLUS</mechanism><mechanism>SCRAM-SHA-1-PLUS</mechanism>` +
		`<mechanism>SCRAM-SHA-512</mechanism><mechanism>SCRAM-SHA-256</mechanism><mechanism>SCRAM-SHA-1</mechanism><mechanism>PLAIN</mechanism>` +
		`<inline><bind xmlns='urn:xmpp:bind:0'><inline><feature var='urn:xmpp:carbons:2'/><feature var='urn:xmpp:csi:0'/><feature var='urn:xmpp:sm:3'/></inline></bind>` +
		`<sm xmlns='urn:xmpp:sm:3'/></inline>` + upgradeFeatures + `</authentication>`
	// boundFeatures follow <success/> when nothing was bound: the
	// authenticated stream's, without a restart.
	boundFeatures = `<stream:features><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/><session xmlns='urn:ietf:params:xml:ns:xmpp-session'><optional/></session>` +
		`<c xmlns='http://jabber.org/protocol/caps' hash='sha-1' node='https://github.com/krill-xmpp/krill' ver='{*}'/>` +
		`<ver xmlns='urn:xmpp:features:rosterver'/><sub xmlns='urn:xmpp:features:pre-approval'/><csi xmlns='urn:xmpp:csi:0'/><sm xmlns='urn:xmpp:sm:3'/></stream:features>`
	sasl2Fail = `<failure xmlns='urn:xmpp:sasl:2'>`
	// upgradeFeatures are the XEP-0480 upgrade tasks offered.
	upgradeFeatures = `<upgrade xmlns='urn:xmpp:sasl:upgrade:0'>UPGR-SCRAM-SHA-256</upgrade><upgrade xmlns='urn:xmpp:sasl:upgrade:0'>UPGR-SCRAM-SHA-512</upgrade>`
)

func sasl2Failure(cond, text string) string {
	return sasl2Fail + `<` + cond + ` xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/><text>` + text + `</text></failure>`
}

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

// sasl2TLS opens a STARTTLS stream and checks the SASL2 feature.
func sasl2TLS(t *testing.T, srv *server.Server, tc *tls.Config) *rawConn {
	t.Helper()
	r := tlsRaw(t, srv, tc)
	if f := r.open(); !strings.Contains(f, sasl2Features) {
		t.Fatalf("features over TLS %q lack %q", f, sasl2Features)
	}
	return r
}

// sasl2Scram runs mech with mellium's client inside SASL2, children
// being the rest of <authenticate/>, up to the client's final message; it
// returns the client, which checks the server's signature.
func (r *rawConn) sasl2Scram(t *testing.T, mech msasl.Mechanism, user, password, children string) *msasl.Negotiator {
	t.Helper()
	opts := []msasl.Option{msasl.Credentials(func() ([]byte, []byte, []byte) {
		return []byte(user), []byte(password), nil
	})}
	if tc, ok := r.conn.(*tls.Conn); ok && strings.HasSuffix(mech.Name, "-PLUS") {
		// Without the offered list mellium's client flags 'y'.
		opts = append(opts, msasl.TLSState(tc.ConnectionState()), msasl.RemoteMechanisms(mech.Name))
	}
	c := msasl.NewClient(mech, opts...)
	_, first, err := c.Step(nil)
	if err != nil {
		t.Fatal(err)
	}
	r.send(sasl2Open + mech.Name + `'><initial-response>` + b64(first) + `</initial-response>` + children + `</authenticate>`)
	chal := between(r.expect(t, `<challenge xmlns='urn:xmpp:sasl:2'>{*}</challenge>`), "'>", "</challenge>")
	raw, _ := base64.StdEncoding.DecodeString(chal)
	_, final, err := c.Step(raw)
	if err != nil {
		t.Fatal(err)
	}
	r.send(`<response xmlns='urn:xmpp:sasl:2'>` + b64(final) + `</response>`)
	return c
}

// verify checks the server's signature in <additional-data/>.
func verify(t *testing.T, c *msasl.Negotiator, success string) {
	t.Helper()
	v, err := base64.StdEncoding.DecodeString(between(success, "<additional-data>", "</additional-data>"))
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.Step(v); err != nil {
		t.Fatalf("server signature refused: %v", err)
	}
}

// bind2Login logs user in with SCRAM-SHA-256-PLUS, user-agent ua and a
// Bind 2 request carrying tag and inline; it returns the <success/>
// element and the bound full JID.
func bind2Login(t *testing.T, srv *server.Server, tc *tls.Config, user, ua, tag, inline string) (*rawConn, string, string) {
	t.Helper()
	r := sasl2TLS(t, srv, tc)
	agent := ""
	if ua != "" {
		agent = `<user-agent id='` + ua + `'><software>Test</software><device>Laptop</device></user-agent>`
	}
	c := r.sasl2Scram(t, msasl.ScramSha256Plus, user, testPassword, agent+`<bind xmlns='urn:xmpp:bind:0'><tag>`+tag+`</tag>`+inline+`</bind>`)
	got := r.skipUntil("</success>")
	verify(t, c, got)
	r.expect(t, `<stream:features></stream:features>`)
	return r, got, between(got, "<authorization-identifier>", "</authorization-identifier>")
}

func TestSASL2ScramPlus(t *testing.T) {
	cfg := tlsConfig(t)
	srv := startServer(t, cfg, "alice")
	tc := clientTLS(t, cfg)
	r := sasl2TLS(t, srv, tc)
	c := r.sasl2Scram(t, msasl.ScramSha256Plus, "alice", testPassword,
		`<user-agent id='`+uaA+`'><software>AwesomeXMPP</software><device>Kiva&apos;s Phone</device></user-agent>`)
	got := r.expect(t, `<success xmlns='urn:xmpp:sasl:2'><additional-data>{*}</additional-data><authorization-identifier>alice@localhost</authorization-identifier></success>`+boundFeatures)
	verify(t, c, got)
	// No stream restart: legacy binding on the same stream.
	r.exchange(t, `<iq type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>r</resource></bind></iq>`,
		`<iq type='result' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><jid>alice@localhost/r</jid></bind></iq>`)
	r.sync(t, "p1")
	if st := srv.Stats(); st.AuthSASL2 != 1 || st.AuthSucceeded != 1 {
		t.Fatalf("logins %d, with SASL2 %d; want 1 and 1", st.AuthSucceeded, st.AuthSASL2)
	}
}

func TestSASL2Plain(t *testing.T) {
	cfg := tlsConfig(t)
	srv := startServer(t, cfg, "alice")
	r := sasl2TLS(t, srv, clientTLS(t, cfg))
	// Without an initial response: an empty challenge asks for it.
	r.exchange(t, sasl2Open+`PLAIN'/>`, `<challenge xmlns='urn:xmpp:sasl:2'/>`)
	r.exchange(t, `<response xmlns='urn:xmpp:sasl:2'>`+b64([]byte("\x00alice\x00"+testPassword))+`</response>`,
		`<success xmlns='urn:xmpp:sasl:2'><authorization-identifier>alice@localhost</authorization-identifier></success>`+boundFeatures)
}

// TestSASL2Failures: each bad request gets its SASL2 failure and counts
// like its legacy SASL twin (credential or exchange), and the stream goes
// on; what is not allowed during an exchange ends the stream.
func TestSASL2Failures(t *testing.T) {
	cfg := tlsConfig(t)
	cfg.Preauth.MaxFailedExchanges = 100
	cfg.Preauth.MaxFailedAuth = 100
	srv := startServer(t, cfg, "alice")
	tc := clientTLS(t, cfg)
	plain := b64([]byte("\x00alice\x00" + testPassword))
	for _, tt := range []struct {
		name, send, want string
		credential       bool
	}{
		{"wrong password", sasl2Open + `PLAIN'><initial-response>` + b64([]byte("\x00alice\x00wrong")) + `</initial-response></authenticate>`,
			sasl2Failure("not-authorized", "wrong username or password"), true},
		{"missing mechanism", `<authenticate xmlns='urn:xmpp:sasl:2'><initial-response>` + plain + `</initial-response></authenticate>`,
			sasl2Failure("invalid-mechanism", "the mechanism attribute is missing"), false},
		{"unknown mechanism", sasl2Open + `X-UNKNOWN'/>`, sasl2Failure("invalid-mechanism", "that mechanism is not offered"), false},
		{"bad base64", sasl2Open + `PLAIN'><initial-response>!!!</initial-response></authenticate>`, sasl2Failure("incorrect-encoding", "invalid base64"), false},
		{"user-agent id not a UUID", sasl2Open + `PLAIN'><initial-response>` + plain + `</initial-response><user-agent id='phone'/></authenticate>`,
			sasl2Failure("malformed-request", "the user-agent id must be a UUID"), false},
		{"oversized user-agent", sasl2Open + `PLAIN'><initial-response>` + plain + `</initial-response><user-agent id='` + uaA + `'><software>` + strings.Repeat("x", 257) + `</software></user-agent></authenticate>`,
			sasl2Failure("malformed-request", "user-agent software is too long"), false},
		{"two initial responses", sasl2Open + `PLAIN'><initial-response>` + plain + `</initial-response><initial-response>` + plain + `</initial-response></authenticate>`,
			sasl2Failure("malformed-request", "more than one initial response"), false},
		{"abort", `<abort xmlns='urn:xmpp:sasl:2'/>`, sasl2Failure("aborted", "the exchange was aborted"), false},
		{"response without exchange", `<response xmlns='urn:xmpp:sasl:2'>AA==</response>`, sasl2Failure("malformed-request", "no exchange in progress"), false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := sasl2TLS(t, srv, tc)
			before := srv.Stats()
			r.exchange(t, tt.send, tt.want)
			// The stream goes on: a correct login succeeds on it.
			r.exchange(t, sasl2Open+`PLAIN'><initial-response>`+plain+`</initial-response></authenticate>`,
				`<success xmlns='urn:xmpp:sasl:2'><authorization-identifier>alice@localhost</authorization-identifier></success>`+boundFeatures)
			st := srv.Stats()
			cred, ex := st.AuthFailedCredential-before.AuthFailedCredential, st.AuthFailedExchange-before.AuthFailedExchange
			if tt.credential && (cred != 1 || ex != 0) || !tt.credential && (cred != 0 || ex != 1) {
				t.Fatalf("counted %d credential and %d exchange failures", cred, ex)
			}
		})
	}

	t.Run("abort mid-exchange", func(t *testing.T) {
		r := sasl2TLS(t, srv, tc)
		r.exchange(t, sasl2Open+`SCRAM-SHA-256'/>`, `<challenge xmlns='urn:xmpp:sasl:2'/>`)
		r.exchange(t, `<abort xmlns='urn:xmpp:sasl:2'/>`, sasl2Failure("aborted", "the exchange was aborted"))
	})

	t.Run("stanza during exchange", func(t *testing.T) {
		r := sasl2TLS(t, srv, tc)
		r.exchange(t, sasl2Open+`SCRAM-SHA-256'/>`, `<challenge xmlns='urn:xmpp:sasl:2'/>`)
		r.send(`<iq type='get' id='x'><ping xmlns='urn:xmpp:ping'/></iq>`)
		if got, want := r.closed(), `<stream:error><policy-violation xmlns='urn:ietf:params:xml:ns:xmpp-streams'/><text xmlns='urn:ietf:params:xml:ns:xmpp-streams'>only SASL2 responses during a SASL2 exchange</text></stream:error></stream:stream>`; got != want {
			t.Fatalf("got %q, want %q", got, want)
		}
	})

	t.Run("not offered without TLS", func(t *testing.T) {
		pcfg := testConfig(t)
		psrv := startServer(t, pcfg, "alice")
		r := dialRaw(t, psrv)
		if f := r.open(); strings.Contains(f, nsSASL2Test) {
			t.Fatalf("SASL2 offered without TLS: %q", f)
		}
		r.exchange(t, sasl2Open+`SCRAM-SHA-256'/>`, sasl2Failure("encryption-required", "SASL2 needs TLS"))
	})
}

// TestSASL2Limits: SASL2 meets the pre-auth policy of legacy SASL: failed
// attempts close the stream, and so does the deadline.
func TestSASL2Limits(t *testing.T) {
	t.Run("failed attempts", func(t *testing.T) {
		cfg := tlsConfig(t)
		srv := startServer(t, cfg, "alice")
		r := sasl2TLS(t, srv, clientTLS(t, cfg))
		for i := 0; i < cfg.Preauth.MaxFailedAuth-1; i++ {
			r.sasl2Scram(t, msasl.ScramSha256Plus, "alice", "wrong", "")
			r.expect(t, sasl2Failure("not-authorized", "wrong username or password"))
		}
		r.sasl2Scram(t, msasl.ScramSha256Plus, "alice", "wrong", "")
		want := sasl2Failure("not-authorized", "wrong username or password") +
			`<stream:error><policy-violation xmlns='urn:ietf:params:xml:ns:xmpp-streams'/><text xmlns='urn:ietf:params:xml:ns:xmpp-streams'>too many failed authentication attempts</text></stream:error></stream:stream>`
		if got := r.closed(); got != want {
			t.Fatalf("got %q, want %q", got, want)
		}
	})

	t.Run("failed exchanges", func(t *testing.T) {
		cfg := tlsConfig(t)
		cfg.Preauth.MaxFailedExchanges = 3
		srv := startServer(t, cfg, "alice")
		r := sasl2TLS(t, srv, clientTLS(t, cfg))
		for i := 0; i < 2; i++ {
			r.exchange(t, `<abort xmlns='urn:xmpp:sasl:2'/>`, sasl2Failure("aborted", "the exchange was aborted"))
		}
		r.send(sasl2Open + `X-UNKNOWN'/>`)
		want := sasl2Failure("invalid-mechanism", "that mechanism is not offered") +
			`<stream:error><policy-violation xmlns='urn:ietf:params:xml:ns:xmpp-streams'/><text xmlns='urn:ietf:params:xml:ns:xmpp-streams'>too many failed SASL exchanges</text></stream:error></stream:stream>`
		if got := r.closed(); got != want {
			t.Fatalf("got %q, want %q", got, want)
		}
	})

	t.Run("deadline", func(t *testing.T) {
		cfg := tlsConfig(t)
		cfg.Preauth.Timeout = time.Second
		srv := startServer(t, cfg, "alice")
		r := sasl2TLS(t, srv, clientTLS(t, cfg))
		r.exchange(t, sasl2Open+`SCRAM-SHA-256'/>`, `<challenge xmlns='urn:xmpp:sasl:2'/>`)
		want := `<stream:error><connection-timeout xmlns='urn:ietf:params:xml:ns:xmpp-streams'/><text xmlns='urn:ietf:params:xml:ns:xmpp-streams'>authentication took too long</text></stream:error></stream:stream>`
		if got := r.closed(); got != want {
			t.Fatalf("got %q, want %q", got, want)
		}
	})

	t.Run("throttled address", func(t *testing.T) {
		cfg := tlsConfig(t)
		cfg.Preauth.MaxFailuresPerIP = 2
		cfg.Preauth.MaxFailedAuth = 10
		srv := startServer(t, cfg, "alice")
		r := sasl2TLS(t, srv, clientTLS(t, cfg))
		wrong := sasl2Open + `PLAIN'><initial-response>` + b64([]byte("\x00alice\x00wrong")) + `</initial-response></authenticate>`
		for range 2 {
			r.exchange(t, wrong, sasl2Failure("not-authorized", "wrong username or password"))
		}
		// Throttled: even the right password is refused without a look-up.
		r.exchange(t, sasl2Open+`PLAIN'><initial-response>`+b64([]byte("\x00alice\x00"+testPassword))+`</initial-response></authenticate>`,
			sasl2Failure("temporary-auth-failure", "too many failed logins from your address; try later"))
		if st := srv.Stats(); st.AuthThrottled != 1 {
			t.Fatalf("throttled %d, want 1", st.AuthThrottled)
		}
	})
}

// TestBind2: the resource is the tag and a part derived from the account
// and the user-agent id: the same device gets the same one back, and its
// earlier session is replaced like a legacy bind of the same full JID.
func TestBind2(t *testing.T) {
	cfg := tlsConfig(t)
	srv := startServer(t, cfg, "alice")
	tc := clientTLS(t, cfg)
	r1, succ, full1 := bind2Login(t, srv, tc, "alice", uaA, "AwesomeXMPP", "")
	if !strings.HasPrefix(full1, "alice@localhost/AwesomeXMPP/") || len(full1) != len("alice@localhost/AwesomeXMPP/")+13 || strings.Contains(full1, uaA) {
		t.Fatalf("bound %q", full1)
	}
	if !strings.HasSuffix(succ, `<authorization-identifier>`+full1+`</authorization-identifier><bound xmlns='urn:xmpp:bind:0'></bound></success>`) {
		t.Fatalf("success %q", succ)
	}
	r1.sync(t, "p1")
	// The same device again: the same resource, the first session replaced.
	r2, _, full2 := bind2Login(t, srv, tc, "alice", uaA, "AwesomeXMPP", "")
	if full2 != full1 {
		t.Fatalf("second login bound %q, first %q", full2, full1)
	}
	if got, want := r1.closed(), `<stream:error><conflict xmlns='urn:ietf:params:xml:ns:xmpp-streams'/><text xmlns='urn:ietf:params:xml:ns:xmpp-streams'>replaced by a new session with the same resource</text></stream:error></stream:stream>`; got != want {
		t.Fatalf("replaced session got %q, want %q", got, want)
	}
	r2.sync(t, "p2")
	// The same device under another tag: another resource, and the
	// device's earlier session ends all the same (XEP-0386).
	_, _, full5 := bind2Login(t, srv, tc, "alice", uaA, "Other", "")
	if full5 != "alice@localhost/Other/"+full1[len("alice@localhost/AwesomeXMPP/"):] {
		t.Fatalf("under another tag bound %q (first %q)", full5, full1)
	}
	if got, want := r2.closed(), `<stream:error><conflict xmlns='urn:ietf:params:xml:ns:xmpp-streams'/><text xmlns='urn:ietf:params:xml:ns:xmpp-streams'>replaced by a new session with the same resource</text></stream:error></stream:stream>`; got != want {
		t.Fatalf("same device's session got %q, want %q", got, want)
	}
	// Another device, and none: other resources.
	_, _, full3 := bind2Login(t, srv, tc, "alice", uaB, "AwesomeXMPP", "")
	_, _, full4 := bind2Login(t, srv, tc, "alice", "", " Awesome\tXMPP ", "")
	if full3 == full1 || !strings.HasPrefix(full4, "alice@localhost/Awesome-XMPP/") || full4 == full1 {
		t.Fatalf("other devices bound %q and %q (first %q)", full3, full4, full1)
	}
	if st := srv.Stats(); st.Bound != 5 || st.Replaced != 2 {
		t.Fatalf("bound %d, replaced %d; want 5 and 2", st.Bound, st.Replaced)
	}
}

// TestBind2Inline: carbons, stream management and CSI enabled inside
// Bind 2, checked by what they do.
func TestBind2Inline(t *testing.T) {
	cfg := tlsConfig(t)
	cfg.Server.EventLoops = 1
	srv := startServer(t, cfg, "alice", "bob")
	tc := clientTLS(t, cfg)
	a1, succ, a1JID := bind2Login(t, srv, tc, "alice", uaA, "Phone",
		`<enable xmlns='urn:xmpp:carbons:2'/><enable xmlns='urn:xmpp:sm:3' resume='true'/><inactive xmlns='urn:xmpp:csi:0'/>`)
	if !strings.Contains(succ, `<bound xmlns='urn:xmpp:bind:0'><enabled xmlns='urn:xmpp:sm:3' id='`) || !strings.HasSuffix(succ, `' resume='true' max='300'/></bound></success>`) {
		t.Fatalf("success %q", succ)
	}
	// Stream management: counted from the bind on.
	a1.exchange(t, `<r xmlns='`+nsSM+`'/>`, `<a xmlns='`+nsSM+`' h='0'/>`)

	a2 := tlsRaw(t, srv, tc)
	a2JID := a2.scramLoginOpened("alice", testPassword, "desk")
	bob := tlsRaw(t, srv, tc)
	bobJID := bob.scramLoginOpened("bob", testPassword, "b")

	// CSI: alice's phone is inactive, so bob's presence is held and the
	// later one replaces the earlier; a message with a body flushes.
	bob.send(`<presence to='` + a1JID + `'><show>away</show></presence>`)
	bob.sync(t, "b1")
	bob.send(`<presence to='` + a1JID + `'><show>chat</show></presence>`)
	bob.sync(t, "b2")
	// Carbons: what alice sends from her desk is copied to her phone,
	// whose copy is urgent (it has a body) and flushes the presence.
	a2.send(`<message type='chat' to='` + bobJID + `' id='m1'><body>hi</body></message>`)
	bob.expect(t, chat(a2JID, bobJID, "m1", "hi"))
	a1.expect(t, `<presence to='`+a1JID+`' from='`+bobJID+`'><show>chat</show></presence>`+
		carbon("sent", "alice@localhost", a1JID, "chat", `<message xmlns='jabber:client' type='chat' to='`+bobJID+`' id='m1' from='`+a2JID+`'><body>hi</body></message>`))
	// Two stanzas since the bind, acknowledged.
	a1.exchange(t, `<a xmlns='`+nsSM+`' h='0'/><r xmlns='`+nsSM+`'/>`, `<a xmlns='`+nsSM+`' h='0'/>`)
	a1.send(`<a xmlns='` + nsSM + `' h='2'/>`)
	a1.sync(t, "p1")
}

// TestSASL2Resume: a session parked by stream management is resumed
// inside <authenticate/>, with <bind/> ignored; a resumption that fails
// falls back to the bind (XEP-0198 section 6).
func TestSASL2Resume(t *testing.T) {
	cfg := tlsConfig(t)
	cfg.Server.EventLoops = 1
	srv := startServer(t, cfg, "alice", "bob")
	tc := clientTLS(t, cfg)
	a1, succ, a1JID := bind2Login(t, srv, tc, "alice", uaA, "Phone", `<enable xmlns='urn:xmpp:sm:3' resume='true'/>`)
	id := between(succ, "id='", "' resume=")
	bob := tlsRaw(t, srv, tc)
	bobJID := bob.scramLoginOpened("bob", testPassword, "b")
	a1.cut()
	if !waitFor(ioTimeout, func() bool { return srv.Stats().Modules["sm.parked_now"] == 1 }) {
		t.Fatal("the session was not parked")
	}
	sendChat(bob, a1JID, "m1", "while away")
	bob.sync(t, "b1")

	// Resumed: <resumed/> in <success/> with the full JID, no features,
	// then the queue.
	r := sasl2TLS(t, srv, tc)
	r.sasl2Scram(t, msasl.ScramSha256Plus, "alice", testPassword,
		`<user-agent id='`+uaA+`'/><resume xmlns='urn:xmpp:sm:3' previd='`+id+`' h='0'/><bind xmlns='urn:xmpp:bind:0'><tag>Phone</tag><enable xmlns='urn:xmpp:sm:3' resume='true'/></bind>`)
	// All in one TLS record (crypto/tls returns one record per Read):
	// xmpp.js 0.14 loses its place when the queue comes in records of its
	// own after <success/> (conn.cork).
	var rec [32 << 10]byte
	_ = r.conn.SetReadDeadline(time.Now().Add(ioTimeout))
	n, err := r.conn.Read(rec[:])
	if err != nil || !strings.HasPrefix(string(rec[:n]), "<success ") || !strings.HasSuffix(string(rec[:n]), `<r xmlns='`+nsSM+`'/>`) {
		t.Fatalf("first record after the response %q (%v), want <success/> to <r/>", rec[:n], err)
	}
	r.buf.Write(rec[:n])
	r.expect(t, `<success xmlns='urn:xmpp:sasl:2'><additional-data>{*}</additional-data><authorization-identifier>`+a1JID+`</authorization-identifier>`+
		`<resumed xmlns='urn:xmpp:sm:3' previd='`+id+`' h='0'/></success>`+
		delayed(bobJID, a1JID, "m1", "while away")+`<r xmlns='`+nsSM+`'/>`)
	r.exchange(t, `<a xmlns='`+nsSM+`' h='1'/><r xmlns='`+nsSM+`'/>`, `<a xmlns='`+nsSM+`' h='0'/>`)
	sendChat(bob, a1JID, "m2", "back")
	r.expect(t, chat(bobJID, a1JID, "m2", "back"))

	// An unknown token: <failed/> in <success/>, and the bind proceeds.
	r2 := sasl2TLS(t, srv, tc)
	r2.sasl2Scram(t, msasl.ScramSha256Plus, "alice", testPassword,
		`<user-agent id='`+uaB+`'/><resume xmlns='urn:xmpp:sm:3' previd='AAAAAAAAAAAAAAAAAAAAAA' h='0'/><bind xmlns='urn:xmpp:bind:0'><tag>Desk</tag></bind>`)
	got := r2.expect(t, `<success xmlns='urn:xmpp:sasl:2'><additional-data>{*}</additional-data><authorization-identifier>alice@localhost/Desk/{*}</authorization-identifier>`+
		`<failed xmlns='urn:xmpp:sm:3'><item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></failed><bound xmlns='urn:xmpp:bind:0'></bound></success><stream:features></stream:features>`)
	full := between(got, "<authorization-identifier>", "</authorization-identifier>")
	sendChat(bob, full, "m3", "new")
	r2.expect(t, chat(bobJID, full, "m3", "new"))
	if st := srv.Stats(); st.Resumed != 1 || st.Modules["sm.resume_failed"] != 1 {
		t.Fatalf("resumed %d, failed %d", st.Resumed, st.Modules["sm.resume_failed"])
	}
}

// fakeFAST is a module in the place XEP-0484 will take: a SASL2 inline
// handler for <request-token/> that sees the request before the exchange
// and adds a <token/> to <success/>.
type fakeFAST struct {
	mu                            sync.Mutex // the loop writes, the test reads
	requests, successes, failures int
	mech, ua                      string
}

func (f *fakeFAST) check(t *testing.T, requests, failures, successes int) {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.requests != requests || f.failures != failures || f.successes != successes || f.mech != "SCRAM-SHA-256-PLUS" || f.ua != uaA {
		t.Fatalf("requests %d, failures %d, successes %d, mechanism %q, user-agent %q; want %d, %d, %d",
			f.requests, f.failures, f.successes, f.mech, f.ua, requests, failures, successes)
	}
}

func (*fakeFAST) Name() string { return "fakefast" }

func (f *fakeFAST) Register(r *hook.Registrar) error {
	const ns = "urn:xmpp:fast:0"
	r.SASL2Feature(func(b []byte) []byte {
		return append(b, `<fast xmlns='`+ns+`'><mechanism>HT-SHA-256-NONE</mechanism></fast>`...)
	})
	r.SASL2Inline(ns, "request-token", hook.SASL2Inline{
		Request: func(a *hook.Auth, elem []byte) (any, error) {
			f.mu.Lock()
			defer f.mu.Unlock()
			f.requests++
			if strings.Contains(string(elem), "mechanism='X'") {
				return nil, errors.New("unknown token mechanism")
			}
			f.mech, f.ua = a.Mechanism, a.UserAgent
			return "t-" + a.Mechanism, nil
		},
		Success: func(c *hook.Ctx, _ *hook.Auth, state any, done func([]byte, bool)) {
			f.mu.Lock()
			f.successes++
			f.mu.Unlock()
			done(append(c.Scratch(), `<token xmlns='`+ns+`' expiry='2026-12-01T00:00:00Z' token='`+state.(string)+`'/>`...), false)
		},
		Failure: func(*hook.Auth, any) {
			f.mu.Lock()
			f.failures++
			f.mu.Unlock()
		},
	})
	return nil
}

// TestSASL2InlineHook: the extension point FAST plugs into.
func TestSASL2InlineHook(t *testing.T) {
	cfg := tlsConfig(t)
	cfg.Server.EventLoops = 1
	f := &fakeFAST{}
	srv, _ := startServerOpts(t, cfg, serverOpts{extra: []hook.Module{f}}, "alice")
	tc := clientTLS(t, cfg)
	r := tlsRaw(t, srv, tc)
	if feats := r.open(); !strings.Contains(feats, `<sm xmlns='urn:xmpp:sm:3'/><fast xmlns='urn:xmpp:fast:0'><mechanism>HT-SHA-256-NONE</mechanism></fast></inline>`+upgradeFeatures+`</authentication>`) {
		t.Fatalf("features %q", feats)
	}
	req := `<request-token xmlns='urn:xmpp:fast:0' mechanism='HT-SHA-256-NONE'/>`
	// A wrong password: the handler hears of it, no token.
	r.sasl2Scram(t, msasl.ScramSha256Plus, "alice", "wrong", `<user-agent id='`+uaA+`'/>`+req)
	r.expect(t, sasl2Failure("not-authorized", "wrong username or password"))
	f.check(t, 1, 1, 0)
	// Refused by the handler before the exchange starts.
	r.exchange(t, sasl2Open+`PLAIN'><initial-response>`+b64([]byte("\x00alice\x00"+testPassword))+`</initial-response><request-token xmlns='urn:xmpp:fast:0' mechanism='X'/></authenticate>`,
		sasl2Failure("malformed-request", "unknown token mechanism"))
	// Success: the token is in <success/>, before <bound/>; a repeated
	// request is one request.
	r.sasl2Scram(t, msasl.ScramSha256Plus, "alice", testPassword, `<user-agent id='`+uaA+`'/>`+req+req+`<bind xmlns='urn:xmpp:bind:0'><tag>T</tag></bind>`)
	r.expect(t, `<success xmlns='urn:xmpp:sasl:2'><additional-data>{*}</additional-data><authorization-identifier>alice@localhost/T/{*}</authorization-identifier>`+
		`<token xmlns='urn:xmpp:fast:0' expiry='2026-12-01T00:00:00Z' token='t-SCRAM-SHA-256-PLUS'/><bound xmlns='urn:xmpp:bind:0'></bound></success><stream:features></stream:features>`)
	r.sync(t, "p1")
	f.check(t, 3, 1, 1)
}
