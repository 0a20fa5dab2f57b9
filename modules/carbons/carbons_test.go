package carbons

import (
	"slices"
	"testing"

	"mellium.im/xmpp/jid"

	"github.com/krill-xmpp/krill/hook"
	"github.com/krill-xmpp/krill/hook/hooktest"
	"github.com/krill-xmpp/krill/modules/internal/imtest"
	"github.com/krill-xmpp/krill/stanza"
)

// blocker blocks "owner jid" pairs.
type blocker map[string]bool

func (b blocker) Blocks(owner string, j jid.JID) bool { return b[owner+" "+j.String()] }

// world is a registry with the module and the sessions of a test.
type world struct {
	t   *testing.T
	m   *Module
	reg *hook.Registry
	h   *imtest.Host
}

func newWorld(t *testing.T, b Blocker) *world {
	t.Helper()
	m := &Module{Blocker: b}
	reg, err := hook.New(m)
	if err != nil {
		t.Fatal(err)
	}
	return &world{t: t, m: m, reg: reg, h: imtest.NewHost()}
}

// bind binds local/resource; prio < -128 leaves it unavailable, enabled
// enables carbons through the protocol.
func (w *world) bind(local, resource string, prio int, enabled bool) (*imtest.Session, *imtest.Conn) {
	w.t.Helper()
	s := w.h.Bind(local, resource)
	c := imtest.NewConn(w.h, w.reg, s)
	if prio >= -128 {
		s.SetPresence(c.Ctx(nil), []byte(`<presence/>`), prio)
	}
	if enabled {
		w.send(c, `<iq type='set' id='on'><enable xmlns='urn:xmpp:carbons:2'/></iq>`)
		if got := c.Written; len(got) != 1 || got[0] != `<iq type='result' id='on'/>` {
			w.t.Fatalf("enable: %q", got)
		}
		c.Written = nil
	}
	return s, c
}

func (w *world) send(c *imtest.Conn, raw string) hook.Verdict {
	w.t.Helper()
	v, err := c.Send(raw)
	if err != nil {
		w.t.Fatal(err)
	}
	return v
}

const unavailable = -1000

func TestToggle(t *testing.T) {
	w := newWorld(t, nil)
	s, c := w.bind("alice", "a", 0, false)
	cases := []struct {
		name, in, want string
		on             bool
	}{
		{"enable", `<iq type='set' id='e1'><enable xmlns='urn:xmpp:carbons:2'/></iq>`, `<iq type='result' id='e1'/>`, true},
		{"enable again", `<iq type='set' id='e2'><enable xmlns='urn:xmpp:carbons:2'/></iq>`, `<iq type='result' id='e2'/>`, true},
		{"disable to own bare jid", `<iq type='set' id='d1' to='alice@localhost'><disable xmlns='urn:xmpp:carbons:2'/></iq>`,
			`<iq type='result' id='d1' from='alice@localhost'/>`, false},
		{"disable again", `<iq type='set' id='d2'><disable xmlns='urn:xmpp:carbons:2'/></iq>`, `<iq type='result' id='d2'/>`, false},
		{"enable to own bare jid", `<iq type='set' id='e3' to='alice@localhost'><enable xmlns='urn:xmpp:carbons:2'/></iq>`,
			`<iq type='result' id='e3' from='alice@localhost'/>`, true},
		{"disable for another account", `<iq type='set' id='d3' to='bob@localhost'><disable xmlns='urn:xmpp:carbons:2'/></iq>`,
			`<iq type='error' id='d3' from='bob@localhost' to='alice@localhost/a'><error type='cancel'><not-allowed xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>`, true},
		{"get enable", `<iq type='get' id='g1'><enable xmlns='urn:xmpp:carbons:2'/></iq>`,
			`<iq type='error' id='g1' to='alice@localhost/a'><error type='modify'><bad-request xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>`, true},
	}
	for _, tc := range cases {
		c.Written = nil
		if v := w.send(c, tc.in); v != hook.Stop {
			t.Fatalf("%s: no handler", tc.name)
		}
		if len(c.Written) != 1 || c.Written[0] != tc.want {
			t.Errorf("%s:\n got %q\nwant %q", tc.name, c.Written, tc.want)
		}
		if s.Has(w.m.enabled) != tc.on || w.m.table.any("alice") != tc.on {
			t.Errorf("%s: enabled %v, counted %v, want %v", tc.name, s.Has(w.m.enabled), w.m.table.any("alice"), tc.on)
		}
	}
	c.Close()
	if w.m.table.any("alice") {
		t.Fatal("a closed session still counts")
	}
}

func TestTableCountsSessions(t *testing.T) {
	w := newWorld(t, nil)
	_, ca := w.bind("alice", "a", 0, true)
	_, cb := w.bind("alice", "b", 0, true)
	ca.Close()
	if !w.m.table.any("alice") {
		t.Fatal("alice/b has carbons enabled")
	}
	cb.Close()
	if w.m.table.any("alice") || len(w.m.table.shard("alice").m) != 0 {
		t.Fatal("the entry outlives the account's last enabled session")
	}
}

// TestCopies checks who gets which copy, byte for byte. The senders are
// alice/a (no carbons) and alice/b, alice/c (enabled) and alice/d (not);
// the recipients bob/x (available, priority 0, enabled), bob/y (available,
// priority -1, enabled), bob/z (unavailable, enabled), bob/w (available,
// not enabled).
func TestCopies(t *testing.T) {
	const (
		chat      = `<message to='bob@localhost/x' type='chat' id='m1'><body>hi</body></message>`
		fwdChat   = `<message xmlns='jabber:client' to='bob@localhost/x' type='chat' id='m1' from='alice@localhost/a'><body>hi</body></message>`
		bareChat  = `<message to='bob@localhost' type='chat' id='m2'><body>hi</body></message>`
		fwdBare   = `<message xmlns='jabber:client' to='bob@localhost' type='chat' id='m2' from='alice@localhost/a'><body>hi</body></message>`
		normal    = `<message to='bob@localhost'><body>hi</body></message>`
		fwdNormal = `<message xmlns='jabber:client' to='bob@localhost' from='alice@localhost/a'><body>hi</body></message>`
	)
	sent := func(to, typ, fwd string) string {
		return `<message from='alice@localhost' to='alice@localhost/` + to + `'` + typ +
			`><sent xmlns='urn:xmpp:carbons:2'><forwarded xmlns='urn:xmpp:forward:0'>` + fwd + `</forwarded></sent></message>`
	}
	received := func(to, typ, fwd string) string {
		return `<message from='bob@localhost' to='bob@localhost/` + to + `'` + typ +
			`><received xmlns='urn:xmpp:carbons:2'><forwarded xmlns='urn:xmpp:forward:0'>` + fwd + `</forwarded></received></message>`
	}
	cases := []struct {
		name, in string
		want     map[string][]string // full resource name ("alice/b") to its copies
	}{
		{"chat to a full jid", chat, map[string][]string{
			"alice/b": {sent("b", " type='chat'", fwdChat)}, "alice/c": {sent("c", " type='chat'", fwdChat)},
			"bob/y": {received("y", " type='chat'", fwdChat)}, "bob/z": {received("z", " type='chat'", fwdChat)},
		}},
		{"chat to the bare jid", bareChat, map[string][]string{
			"alice/b": {sent("b", " type='chat'", fwdBare)}, "alice/c": {sent("c", " type='chat'", fwdBare)},
			"bob/y": {received("y", " type='chat'", fwdBare)}, "bob/z": {received("z", " type='chat'", fwdBare)},
		}},
		{"normal with a body keeps no type", normal, map[string][]string{
			"alice/b": {sent("b", "", fwdNormal)}, "alice/c": {sent("c", "", fwdNormal)},
			"bob/y": {received("y", "", fwdNormal)}, "bob/z": {received("z", "", fwdNormal)},
		}},
		{"chat to an unbound resource goes as to the bare jid",
			`<message to='bob@localhost/gone' type='chat'><body>hi</body></message>`, map[string][]string{
				"alice/b": {sent("b", " type='chat'", `<message xmlns='jabber:client' to='bob@localhost/gone' type='chat' from='alice@localhost/a'><body>hi</body></message>`)},
				"alice/c": {sent("c", " type='chat'", `<message xmlns='jabber:client' to='bob@localhost/gone' type='chat' from='alice@localhost/a'><body>hi</body></message>`)},
				"bob/y":   {received("y", " type='chat'", `<message xmlns='jabber:client' to='bob@localhost/gone' type='chat' from='alice@localhost/a'><body>hi</body></message>`)},
				"bob/z":   {received("z", " type='chat'", `<message xmlns='jabber:client' to='bob@localhost/gone' type='chat' from='alice@localhost/a'><body>hi</body></message>`)},
			}},
		{"declared namespace kept, escaped values kept",
			`<message xmlns='jabber:client' to="bob@localhost/x" type='chat'><body>a &amp; 'b'</body></message>`, map[string][]string{
				"alice/b": {sent("b", " type='chat'", `<message xmlns='jabber:client' to='bob@localhost/x' type='chat' from='alice@localhost/a'><body>a &amp; 'b'</body></message>`)},
				"alice/c": {sent("c", " type='chat'", `<message xmlns='jabber:client' to='bob@localhost/x' type='chat' from='alice@localhost/a'><body>a &amp; 'b'</body></message>`)},
				"bob/y":   {received("y", " type='chat'", `<message xmlns='jabber:client' to='bob@localhost/x' type='chat' from='alice@localhost/a'><body>a &amp; 'b'</body></message>`)},
				"bob/z":   {received("z", " type='chat'", `<message xmlns='jabber:client' to='bob@localhost/x' type='chat' from='alice@localhost/a'><body>a &amp; 'b'</body></message>`)},
			}},
		{"private and no-copy", `<message to='bob@localhost/x' type='chat'><body>s</body><private xmlns='urn:xmpp:carbons:2'/><no-copy xmlns='urn:xmpp:hints'/></message>`, nil},
		{"private alone", `<message to='bob@localhost/x' type='chat'><body>s</body><private xmlns='urn:xmpp:carbons:2'/></message>`, nil},
		{"no-copy alone", `<message to='bob@localhost/x' type='chat'><body>s</body><no-copy xmlns='urn:xmpp:hints'/></message>`, nil},
		{"a carbon is not copied", `<message to='bob@localhost/x' type='chat'><received xmlns='urn:xmpp:carbons:2'><forwarded xmlns='urn:xmpp:forward:0'>` + fwdChat + `</forwarded></received></message>`, nil},
		{"a prefixed carbon is not copied", `<message to='bob@localhost/x' type='chat' xmlns:c='urn:xmpp:carbons:2'><c:sent><forwarded xmlns='urn:xmpp:forward:0'>` + fwdChat + `</forwarded></c:sent></message>`, nil},
		{"normal without a body", `<message to='bob@localhost/x'><subject>s</subject></message>`, nil},
		{"headline with a body", `<message to='bob@localhost/x' type='headline'><body>news</body></message>`, nil},
		{"groupchat", `<message to='bob@localhost/x' type='groupchat'><body>hi</body></message>`, nil},
		{"error to the bare jid", `<message to='bob@localhost' type='error'><body>hi</body><error type='cancel'><service-unavailable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></message>`, nil},
		{"error without the original", `<message to='bob@localhost/x' type='error'><error type='cancel'><service-unavailable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></message>`, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld(t, nil)
			sess := map[string]*imtest.Session{}
			sess["alice/a"], _ = w.bind("alice", "a", 0, false)
			sess["alice/b"], _ = w.bind("alice", "b", 0, true)
			sess["alice/c"], _ = w.bind("alice", "c", unavailable, true)
			sess["alice/d"], _ = w.bind("alice", "d", 0, false)
			sess["bob/x"], _ = w.bind("bob", "x", 0, true)
			sess["bob/y"], _ = w.bind("bob", "y", -1, true)
			sess["bob/z"], _ = w.bind("bob", "z", unavailable, true)
			sess["bob/w"], _ = w.bind("bob", "w", 0, false)
			c := imtest.NewConn(w.h, w.reg, sess["alice/a"])
			if v := w.send(c, tc.in); v != hook.Continue {
				t.Fatal("the original must go on to routing")
			}
			for name, s := range sess {
				got, want := s.Take(), tc.want[name]
				if !slices.Equal(got, want) {
					t.Errorf("%s:\n got %q\nwant %q", name, got, want)
				}
			}
			if len(c.Written) != 0 {
				t.Errorf("sender got %q", c.Written)
			}
		})
	}
}

// TestEligibleTypes covers the traits that decide, beside the message
// bodies of TestCopies.
func TestEligibleTypes(t *testing.T) {
	cases := []struct {
		name, raw string
		want      bool
	}{
		{"chat without a body (a chat state)", `<message to='b@localhost/r' type='chat'><composing xmlns='http://jabber.org/protocol/chatstates'/></message>`, true},
		{"normal with a receipt", `<message to='b@localhost/r'><received xmlns='urn:xmpp:receipts' id='x'/></message>`, true},
		{"normal with a marker", `<message to='b@localhost/r'><displayed xmlns='urn:xmpp:chat-markers:0' id='x'/></message>`, true},
		{"headline with a chat state", `<message to='b@localhost/r' type='headline'><active xmlns='http://jabber.org/protocol/chatstates'/></message>`, true},
		{"direct invitation", `<message to='b@localhost/r'><x xmlns='jabber:x:conference' jid='room@conference.localhost'/></message>`, true},
		{"mediated invitation", `<message to='b@localhost/r'><x xmlns='http://jabber.org/protocol/muc#user'><invite from='c@localhost'/></x></message>`, true},
		{"unknown type as normal", `<message to='b@localhost/r' type='weird'><body>x</body></message>`, true},
		{"error echoing a body to a full jid", `<message to='b@localhost/r' type='error'><body>x</body><error type='cancel'><gone xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></message>`, true},
		{"body in another namespace", `<message to='b@localhost/r'><body xmlns='urn:example'>x</body></message>`, false},
		{"prefixed private", `<message to='b@localhost/r' type='chat'><c:private xmlns:c='urn:xmpp:carbons:2'/></message>`, false},
		{"private with a character reference in its namespace", `<message to='b@localhost/r' type='chat'><private xmlns='urn:xmpp:carbons&#x3a;2'/></message>`, false},
		{"groupchat with a chat state", `<message to='b@localhost/r' type='groupchat'><active xmlns='http://jabber.org/protocol/chatstates'/></message>`, false},
		{"empty normal", `<message to='b@localhost/r'/>`, false},
	}
	for _, tc := range cases {
		st, err := hooktest.Parse("localhost", "a@localhost/r", tc.raw)
		if err != nil {
			t.Fatal(err)
		}
		if got := eligible(st, classify(st.Tag, st.Raw)); got != tc.want {
			t.Errorf("%s: eligible = %v, want %v", tc.name, got, tc.want)
		}
	}
	if tr := classify(mustParse(t, `<message to='b@localhost/r'><x xmlns='http://jabber.org/protocol/muc#user'/><body>pm</body></message>`)); tr&mucPM == 0 {
		t.Fatal("a muc#user x without an invitation marks a private message from a room")
	}
}

func mustParse(t *testing.T, raw string) (tag stanza.StartTag, unit []byte) {
	t.Helper()
	st, err := hooktest.Parse("localhost", "a@localhost/r", raw)
	if err != nil {
		t.Fatal(err)
	}
	return st.Tag, st.Raw
}

// TestPrivateMessageFromRoomNotCopiedToRecipient: §6.1, the room gives it
// to each of the recipient's resources; the sender's copies still go.
func TestPrivateMessageFromRoomNotCopiedToRecipient(t *testing.T) {
	w := newWorld(t, nil)
	a, _ := w.bind("alice", "a", 0, false)
	b, _ := w.bind("alice", "b", 0, true)
	w.bind("bob", "x", 0, true)
	y, _ := w.bind("bob", "y", 0, true)
	w.send(imtest.NewConn(w.h, w.reg, a), `<message to='bob@localhost/x' type='chat'><body>pm</body><x xmlns='http://jabber.org/protocol/muc#user'/></message>`)
	if got := y.Take(); len(got) != 0 {
		t.Errorf("bob/y got %q", got)
	}
	if got := b.Take(); len(got) != 1 {
		t.Errorf("alice/b got %q", got)
	}
}

// TestMessageToOwnAccount: each resource gets one copy of a message: the
// original, or a <sent/> copy when the original does not reach it.
func TestMessageToOwnAccount(t *testing.T) {
	w := newWorld(t, nil)
	a, ca := w.bind("alice", "a", 0, true)
	b, _ := w.bind("alice", "b", 0, true)            // gets the original
	c, _ := w.bind("alice", "c", -1, true)           // does not
	d, _ := w.bind("alice", "d", unavailable, false) // not enabled
	w.send(ca, `<message to='alice@localhost' type='chat' id='n'><body>note</body></message>`)
	want := `<message from='alice@localhost' to='alice@localhost/c' type='chat'><sent xmlns='urn:xmpp:carbons:2'><forwarded xmlns='urn:xmpp:forward:0'>` +
		`<message xmlns='jabber:client' to='alice@localhost' type='chat' id='n' from='alice@localhost/a'><body>note</body></message></forwarded></sent></message>`
	if got := c.Take(); !slices.Equal(got, []string{want}) {
		t.Errorf("alice/c:\n got %q\nwant %q", got, want)
	}
	for _, s := range []*imtest.Session{a, b, d} {
		if got := s.Take(); len(got) != 0 {
			t.Errorf("%s got %q", s.Full(), got)
		}
	}
}

// TestNoReceivedCopyWhenNobodyGetsIt: a message to the bare JID that no
// resource takes goes to offline storage; copying it now would deliver it
// twice.
func TestNoReceivedCopyWhenNobodyGetsIt(t *testing.T) {
	w := newWorld(t, nil)
	a, _ := w.bind("alice", "a", 0, false)
	y, _ := w.bind("bob", "y", -1, true)
	z, _ := w.bind("bob", "z", unavailable, true)
	w.send(imtest.NewConn(w.h, w.reg, a), `<message to='bob@localhost' type='chat'><body>hi</body></message>`)
	if got := append(y.Take(), z.Take()...); len(got) != 0 {
		t.Fatalf("copies of an undelivered message: %q", got)
	}
}

// TestReceivedCopyBlocked: the sender blocks one of the recipient's
// resources, so a copy to it is refused like a message to it would be.
func TestReceivedCopyBlocked(t *testing.T) {
	w := newWorld(t, blocker{"alice bob@localhost/y": true})
	a, _ := w.bind("alice", "a", 0, false)
	w.bind("bob", "x", 0, false)
	y, _ := w.bind("bob", "y", 0, true)
	z, _ := w.bind("bob", "z", 0, true)
	w.send(imtest.NewConn(w.h, w.reg, a), `<message to='bob@localhost/x' type='chat'><body>hi</body></message>`)
	if got := y.Take(); len(got) != 0 {
		t.Errorf("blocked bob/y got %q", got)
	}
	if got := z.Take(); len(got) != 1 {
		t.Errorf("bob/z got %q", got)
	}
	if w.m.received.Load() != 1 {
		t.Errorf("received counter %d", w.m.received.Load())
	}
}

// TestUnusedCostsNothing: a message between accounts without carbons is
// let through without allocating.
func TestUnusedCostsNothing(t *testing.T) {
	w := newWorld(t, nil)
	a, _ := w.bind("alice", "a", 0, false)
	w.bind("bob", "x", 0, false)
	w.bind("carol", "c", 0, true) // someone else uses carbons
	st, err := imtest.Parse(a, `<message to='bob@localhost/x' type='chat'><body>hi</body></message>`)
	if err != nil {
		t.Fatal(err)
	}
	x := hooktest.Ctx(w.reg, w.h, a, &hooktest.Conn{}, st)
	if n := testing.AllocsPerRun(100, func() { w.m.pre(x, st) }); n != 0 {
		t.Fatalf("pre allocates %v times", n)
	}
	st2, _ := imtest.Parse(a, `<message to='bob@localhost/x' type='chat' xmlns:c='urn:xmpp:carbons:2'><body>hi</body><c:private/><composing xmlns='http://jabber.org/protocol/chatstates'/></message>`)
	if n := testing.AllocsPerRun(100, func() { classify(st2.Tag, st2.Raw) }); n != 0 {
		t.Fatalf("classify allocates %v times", n)
	}
}

// TestSentInner: a <sent/> copy's message loses the recipient's stanza-id
// and gains the sender's, whatever else is around it.
func TestSentInner(t *testing.T) {
	const (
		bob   = `<stanza-id xmlns='urn:xmpp:sid:0' by='bob@localhost' id='R'/>`
		alice = `<stanza-id xmlns='urn:xmpp:sid:0' by='alice@localhost' id='S'/>`
		room  = `<stanza-id xmlns='urn:xmpp:sid:0' by='room@muc.example' id='K'/>`
		open  = `<message xmlns='jabber:client' to='bob@localhost' from='alice@localhost/a'>`
	)
	cases := []struct {
		name, in, sentID, want string
	}{
		{"replaced", open + `<body>x</body>` + bob + `</message>`, "S", open + `<body>x</body>` + alice + `</message>`},
		{"removed, none of the sender's", open + `<body>x</body>` + bob + `</message>`, "", open + `<body>x</body></message>`},
		{"whitespace and a remote one kept", open + "\n <body>x</body>\n " + room + "\n " + bob + "\n</message>", "S", open + "\n <body>x</body>\n " + room + "\n \n" + alice + "</message>"},
		{"no stanza-id, none to add", open + `<body>x</body></message>`, "", open + `<body>x</body></message>`},
		{"no stanza-id, the sender's added", open + `<body>x</body></message>`, "S", open + `<body>x</body>` + alice + `</message>`},
		{"another namespace kept", open + `<stanza-id xmlns='urn:other' by='bob@localhost' id='R'/></message>`, "", open + `<stanza-id xmlns='urn:other' by='bob@localhost' id='R'/></message>`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := string(sentInner([]byte(tc.in), "bob@localhost", "alice@localhost", tc.sentID)); got != tc.want {
				t.Errorf("got  %s\nwant %s", got, tc.want)
			}
		})
	}
}
