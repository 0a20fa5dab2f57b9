package server_test

import (
	"net"
	"strings"
	"testing"
)

const streamsNS = "xmlns='urn:ietf:params:xml:ns:xmpp-streams'"

// TestBadInput sends one class of bad input per case and checks the RFC 6120
// stream error that names it, that the connection closes, and that a
// bystander session is untouched.
func TestBadInput(t *testing.T) {
	cfg := testConfig(t)
	cfg.C2S.MaxStanzaSize = 4096
	cfg.C2S.MaxDepth = 8
	srv := startServer(t, cfg, "grace", "bystander")
	by := dialRaw(t, srv)
	by.scramLogin("bystander", testPassword, "b")

	deep := strings.Repeat("<x>", 9) + strings.Repeat("</x>", 9)
	cases := []struct {
		name   string
		stage  string // "none": nothing sent before; "open": stream opened; "auth": bound session
		send   string
		cond   string
		denied string // must not appear in the output
	}{
		{"doctype", "none", `<?xml version='1.0'?><!DOCTYPE stream:stream>`, "restricted-xml", ""},
		{"comment", "open", `<!-- hello -->`, "restricted-xml", ""},
		{"processing instruction", "open", `<?evil instruction?>`, "restricted-xml", ""},
		{"undeclared entity", "open", `<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>&xxe;</auth>`, "restricted-xml", ""},
		{"mismatched tag", "open", `<a></b>`, "not-well-formed", ""},
		{"invalid utf-8", "open", "<a>\xff\xfe</a>", "not-well-formed", ""},
		{"undeclared prefix", "open", `<foo:bar/>`, "not-well-formed", ""},
		{"text between stanzas", "open", `hello`, "not-well-formed", ""},
		{"element before header", "none", `<message/>`, "not-well-formed", ""},
		{"pre-auth stanza too large", "open", `<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>` + strings.Repeat("A", 9000) + `</auth>`, "policy-violation", ""},
		{"pre-auth too many elements", "open", `<a>` + strings.Repeat("<b/>", 40) + `</a>`, "policy-violation", ""},
		{"message before auth", "open", `<message to='bystander@localhost'><body>spam</body></message>`, "not-authorized", ""},
		{"ping before auth", "open", `<iq type='get' id='p'><ping xmlns='urn:xmpp:ping'/></iq>`, "not-authorized", "type='result'"},
		{"header namespace", "none", `<stream:stream to='localhost' xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>`, "invalid-namespace", ""},
		{"unknown host", "none", `<stream:stream to='example.org' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>`, "host-unknown", ""},
		{"unsupported version", "none", `<stream:stream to='localhost' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' version='2.0'>`, "unsupported-version", ""},
		{"invalid from", "auth", `<message from='bystander@localhost/b' to='grace@localhost'><body>forged</body></message>`, "invalid-from", ""},
		{"unsupported stanza type", "auth", `<foo/>`, "unsupported-stanza-type", ""},
		{"stanza namespace", "auth", `<message xmlns='jabber:server'/>`, "invalid-namespace", ""},
		{"post-auth stanza too large", "auth", `<message><body>` + strings.Repeat("A", 5000) + `</body></message>`, "policy-violation", ""},
		{"nesting too deep", "auth", `<message>` + deep + `</message>`, "policy-violation", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := dialRaw(t, srv)
			switch tc.stage {
			case "open":
				r.open()
			case "auth":
				r.scramLogin("grace", testPassword, "g")
			}
			r.send(tc.send)
			out := r.closed()
			if want := "<" + tc.cond + " " + streamsNS + "/>"; !strings.Contains(out, want) {
				t.Fatalf("got %q, want the stream error %s", out, want)
			}
			if !strings.HasSuffix(out, "</stream:stream>") {
				t.Fatalf("stream not closed cleanly: %q", out)
			}
			if tc.denied != "" && strings.Contains(out, tc.denied) {
				t.Fatalf("output contains %q: %q", tc.denied, out)
			}
		})
	}
	// The bystander still works.
	by.sync(t, "alive")
}

// TestSASLFailures covers malformed and failed exchanges: each gets a SASL
// failure with its condition, and the third failure closes the stream.
func TestSASLFailures(t *testing.T) {
	cfg := testConfig(t)
	// These failures check no credential: they count towards
	// preauth.max_failed_exchanges, lowered here to 3.
	cfg.Preauth.MaxFailedExchanges = 3
	srv := startServer(t, cfg, "heidi")
	r := dialRaw(t, srv)
	r.open()
	steps := []struct{ send, want string }{
		{`<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='X-UNKNOWN'>AA==</auth>`, "<invalid-mechanism/>"},
		{`<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='SCRAM-SHA-256'>!!!notbase64</auth>`, "<incorrect-encoding/>"},
	}
	for _, s := range steps {
		r.exchange(t, s.send, saslFailed(s.want))
	}
	// A malformed SCRAM client-first message is the third failure.
	r.send(`<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='SCRAM-SHA-256'>eCxuPWZvbw==</auth>`)
	out := r.closed()
	if !strings.Contains(out, "<malformed-request/>") || !strings.Contains(out, "<policy-violation "+streamsNS+"/>") {
		t.Fatalf("got %q, want malformed-request then policy-violation", out)
	}
}

// saslFailed is the SASL failure (RFC 6120 6.5) with condition cond,
// whatever its text.
func saslFailed(cond string) string {
	return `<failure xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>` + cond + `{**}</failure>`
}

// TestPlainNotOffered: PLAIN needs TLS, which this build does not offer.
func TestPlainNotOffered(t *testing.T) {
	srv := startServer(t, testConfig(t), "ivan")
	r := dialRaw(t, srv)
	if feats := r.open(); strings.Contains(feats, ">PLAIN<") || !strings.Contains(feats, ">SCRAM-SHA-256<") {
		t.Fatalf("features %q: want SCRAM and no PLAIN", feats)
	}
	r.send(`<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AGl2YW4AY29ycmVjdA==</auth>`)
	r.expect(t, saslFailed("<invalid-mechanism/>"))
}

// TestPlaintextRefused: with allow_plaintext off and no TLS, STARTTLS is
// required, no mechanism is offered and SASL gets encryption-required.
func TestPlaintextRefused(t *testing.T) {
	cfg := testConfig(t)
	cfg.C2S.AllowPlaintext = false
	srv := startServer(t, cfg, "judy")
	r := dialRaw(t, srv)
	if feats := r.open(); strings.Contains(feats, "<mechanism>") || !strings.Contains(feats, "<required/></starttls>") {
		t.Fatalf("features %q: want required STARTTLS and no mechanism", feats)
	}
	r.send(`<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='SCRAM-SHA-256'>biwsbj1qdWR5LHI9YWJj</auth>`)
	r.expect(t, saslFailed("<encryption-required/>"))
}

// TestSlowReader: a client that stops reading is closed once
// c2s.max_outbound bytes wait for it in user space; the sender is fine.
func TestSlowReader(t *testing.T) {
	cfg := testConfig(t)
	cfg.C2S.MaxOutbound = 64 << 10
	srv := startServer(t, cfg, "wes", "xia")
	slow := dialRaw(t, srv)
	slow.scramLogin("xia", testPassword, "x")
	_ = slow.conn.(*net.TCPConn).SetReadBuffer(4096)
	sender := dialRaw(t, srv)
	sender.scramLogin("wes", testPassword, "w")
	body := strings.Repeat("z", 4000)
	policy := srv.Stats().ClosedPolicy
	closed := false
	for i := 0; i < 20000 && !closed; i++ {
		// Headlines to a gone resource are dropped, not stored: the
		// sender never waits for storage here.
		sender.send(`<message type='headline' to='xia@localhost/x'><body>` + body + `</body></message>`)
		if i%100 == 99 {
			closed = srv.Stats().ClosedPolicy > policy
		}
	}
	if !closed && !waitFor(ioTimeout, func() bool { return srv.Stats().ClosedPolicy > policy }) {
		t.Fatalf("the slow reader was never closed: %+v", srv.Stats())
	}
	sender.sync(t, "fine")
}
