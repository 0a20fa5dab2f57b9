package csi

import (
	"slices"
	"strings"
	"testing"

	"github.com/krill-xmpp/krill/hook"
	"github.com/krill-xmpp/krill/modules/internal/imtest"
)

// Stanzas as the outbound chain sees them: stamped with their sender.
const (
	benAway    = `<presence from='ben@localhost/a'><show>away</show></presence>`
	benChat    = `<presence from='ben@localhost/a'><show>chat</show></presence>`
	benGone    = `<presence type='unavailable' from='ben@localhost/a'/>`
	benOther   = `<presence from='ben@localhost/b'/>`
	catOnline  = `<presence from='cat@localhost/x'/>`
	noFrom     = `<presence><status>from the server</status></presence>`
	subscribe  = `<presence type='subscribe' to='ann@localhost' from='ben@localhost'/>`
	subscribed = `<presence type='subscribed' to='ann@localhost' from='ben@localhost'/>`
	unsub      = `<presence type='unsubscribe' to='ann@localhost' from='ben@localhost'/>`
	unsubd     = `<presence type='unsubscribed' to='ann@localhost' from='ben@localhost'/>`
	presErr    = `<presence type='error' from='ben@localhost/a'><error type='cancel'><gone xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></presence>`
	composing  = `<message type='chat' to='ann@localhost/a' from='ben@localhost/a'><composing xmlns='http://jabber.org/protocol/chatstates'/></message>`
	paused     = `<message type='chat' to='ann@localhost/a' from='ben@localhost/a'><paused xmlns='http://jabber.org/protocol/chatstates'/></message>`
	receipt    = `<message to='ann@localhost/a' from='ben@localhost/a'><received xmlns='urn:xmpp:receipts' id='m1'/></message>`
	pep        = `<message type='headline' to='ann@localhost' from='ben@localhost'><event xmlns='http://jabber.org/protocol/pubsub#event'><items node='urn:xmpp:avatar:metadata'><item id='x'/></items></event></message>`
	hello      = `<message type='chat' to='ann@localhost/a' from='cat@localhost/x'><body>hello</body></message>`
	omemo      = `<message type='chat' to='ann@localhost/a' from='cat@localhost/x'><encrypted xmlns='eu.siacs.conversations.axolotl'><header sid='1'/></encrypted></message>`
	omemo2     = `<message type='chat' to='ann@localhost/a' from='cat@localhost/x'><encrypted xmlns='urn:xmpp:omemo:2'><header sid='1'/></encrypted></message>`
	ox         = `<message to='ann@localhost/a' from='cat@localhost/x'><openpgp xmlns='urn:xmpp:openpgp:0'>AAAA</openpgp></message>`
	pgp        = `<message to='ann@localhost/a' from='cat@localhost/x'><x xmlns='jabber:x:encrypted'>AAAA</x></message>`
	call       = `<message to='ann@localhost/a' from='cat@localhost/x'><propose xmlns='urn:xmpp:jingle-message:0' id='c1'><description xmlns='urn:xmpp:jingle:apps:rtp:1' media='audio'/></propose></message>`
	msgErr     = `<message type='error' to='ann@localhost/a' from='cat@localhost/x'><error type='cancel'><service-unavailable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></message>`
	carbonBody = `<message to='ann@localhost/a' from='ann@localhost'><received xmlns='urn:xmpp:carbons:2'><forwarded xmlns='urn:xmpp:forward:0'><message xmlns='jabber:client' type='chat' from='cat@localhost/x' to='ann@localhost/b'><body>hi b</body></message></forwarded></received></message>`
	carbonCS   = `<message to='ann@localhost/a' from='ann@localhost'><sent xmlns='urn:xmpp:carbons:2'><forwarded xmlns='urn:xmpp:forward:0'><message xmlns='jabber:client' type='chat' from='ann@localhost/b' to='cat@localhost'><active xmlns='http://jabber.org/protocol/chatstates'/></message></forwarded></sent></message>`
	pong       = `<iq type='result' id='p1' from='localhost'/>`
	ping       = `<iq type='get' id='s1' from='localhost' to='ann@localhost/a'><ping xmlns='urn:xmpp:ping'/></iq>`
)

// Steps of a sequence that are not outbound stanzas.
const (
	inactive = "<inactive/>"
	active   = "<active/>"
	resumed  = "resumed"
	closed   = "closed"
)

// harness runs the module alone: what its filter passes on, and what it
// passes from its place, both land in the session's inbox, which stands
// for the wire.
type harness struct {
	m    *Module
	reg  *hook.Registry
	sess *imtest.Session
	conn *imtest.Conn
}

func newHarness(t *testing.T, max int) *harness {
	t.Helper()
	m := New(max)
	reg, err := hook.New(m)
	if err != nil {
		t.Fatal(err)
	}
	host := imtest.NewHost()
	sess := host.Bind("ann", "a")
	return &harness{m: m, reg: reg, sess: sess, conn: imtest.NewConn(host, reg, sess)}
}

// step runs one step: a nonza, a lifecycle event, or a stanza written to
// the session through the outbound chain.
func (h *harness) step(t *testing.T, s string) {
	t.Helper()
	switch s {
	case inactive, active:
		name := strings.Trim(s, "</>")
		nz := h.reg.Nonza(hook.PhaseBound, NS, name)
		if nz == nil {
			t.Fatalf("no nonza handler for %s", name)
		}
		if err := nz(h.conn.Ctx(nil), []byte(`<`+name+` xmlns='`+NS+`'/>`)); err != nil {
			t.Fatal(err)
		}
	case resumed:
		h.reg.Fire(h.conn.Ctx(nil), hook.Resumed)
	case closed:
		h.reg.Fire(h.conn.Ctx(nil), hook.Closed)
	default:
		// The chain may reuse b once a filter returns: scribble over it
		// to prove that what is held is a copy.
		b := []byte(s)
		for _, f := range h.reg.Outbound() {
			var v hook.Verdict
			if b, v = f(h.sess, b); v == hook.Stop {
				for i := range b {
					b[i] = 'X'
				}
				return
			}
		}
		h.sess.Deliver(b)
	}
}

func (h *harness) counters() map[string]uint64 {
	got := map[string]uint64{}
	h.m.Counters(func(ev string, n uint64) { got[ev] = n })
	return got
}

func TestSequences(t *testing.T) {
	cases := []struct {
		name  string
		max   int // 0: the default
		steps []string
		want  []string
		count map[string]uint64 // nil: not checked
	}{
		{
			name:  "active passes everything",
			steps: []string{benAway, composing, pep},
			want:  []string{benAway, composing, pep},
			count: map[string]uint64{"held": 0, "flushed": 0, "superseded": 0, "dropped": 0},
		},
		{
			name:  "latest presence per sender, flushed before a message with a body",
			steps: []string{inactive, benAway, catOnline, benOther, benChat, hello},
			want:  []string{catOnline, benOther, benChat, hello},
			count: map[string]uint64{"held": 4, "flushed": 3, "superseded": 1, "dropped": 0},
		},
		{
			name:  "unavailable replaces the pending available",
			steps: []string{inactive, benAway, composing, benGone, active},
			want:  []string{composing, benGone},
		},
		{
			name:  "available after unavailable replaces it",
			steps: []string{inactive, benGone, benChat, active},
			want:  []string{benChat},
		},
		{
			name:  "presence without a from is held and replaces nothing",
			steps: []string{inactive, noFrom, noFrom, active},
			want:  []string{noFrom, noFrom},
		},
		{
			name:  "chat states, receipts and PEP held in order, flushed before an iq",
			steps: []string{inactive, composing, receipt, pep, paused, pong},
			want:  []string{composing, receipt, pep, paused, pong},
		},
		{
			name:  "an iq request flushes too",
			steps: []string{inactive, benAway, ping},
			want:  []string{benAway, ping},
		},
		{
			name:  "chat states do not flush presence",
			steps: []string{inactive, benAway, composing, benChat, hello},
			want:  []string{composing, benChat, hello},
		},
		{
			name: "subscription presence is urgent",
			steps: []string{inactive, benAway, subscribe, catOnline, subscribed,
				composing, unsub, paused, unsubd},
			want: []string{benAway, subscribe, catOnline, subscribed, composing, unsub, paused, unsubd},
		},
		{
			name:  "errors are urgent",
			steps: []string{inactive, benAway, presErr, composing, msgErr},
			want:  []string{benAway, presErr, composing, msgErr},
		},
		{
			name: "encrypted messages and calls are urgent",
			steps: []string{inactive, composing, omemo, paused, omemo2, composing, ox,
				paused, pgp, composing, call},
			want: []string{composing, omemo, paused, omemo2, composing, ox, paused, pgp, composing, call},
		},
		{
			name:  "a carbon is as urgent as the message it carries",
			steps: []string{inactive, carbonCS, benAway, carbonBody},
			want:  []string{carbonCS, benAway, carbonBody},
		},
		{
			name:  "active flushes, then everything passes",
			steps: []string{inactive, benAway, pep, active, composing},
			want:  []string{benAway, pep, composing},
		},
		{
			name:  "active with nothing held",
			steps: []string{inactive, active, benAway},
			want:  []string{benAway},
		},
		{
			name:  "resumption makes the session active",
			steps: []string{inactive, benAway, resumed, composing},
			want:  []string{benAway, composing},
		},
		{
			name:  "held stanzas are dropped and counted when the session closes",
			steps: []string{inactive, benAway, benChat, composing, closed},
			want:  nil,
			count: map[string]uint64{"held": 3, "flushed": 0, "superseded": 1, "dropped": 2},
		},
		{
			name:  "the cap flushes what is held, then the stanza that did not fit",
			max:   len(composing) + len(paused),
			steps: []string{inactive, composing, paused, receipt, composing, active},
			want:  []string{composing, paused, receipt, composing},
			count: map[string]uint64{"held": 3, "flushed": 3, "superseded": 0, "dropped": 0},
		},
		{
			name:  "a stanza larger than the cap passes at once",
			max:   len(composing),
			steps: []string{inactive, pep, composing, active},
			want:  []string{pep, composing},
		},
		{
			name:  "superseded presence does not count against the cap",
			max:   len(benAway) + len(catOnline),
			steps: []string{inactive, catOnline, benAway, benChat, benAway, benChat, benAway, active},
			want:  []string{catOnline, benAway},
			count: map[string]uint64{"held": 6, "flushed": 2, "superseded": 4, "dropped": 0},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			max := tc.max
			if max == 0 {
				max = 64 << 10
			}
			h := newHarness(t, max)
			for _, s := range tc.steps {
				h.step(t, s)
			}
			if got := h.sess.Take(); !slices.Equal(got, tc.want) {
				t.Errorf("wire\n got %q\nwant %q", got, tc.want)
			}
			if tc.count != nil {
				if got := h.counters(); !mapsEqual(got, tc.count) {
					t.Errorf("counters %v, want %v", got, tc.count)
				}
			}
		})
	}
}

func mapsEqual(a, b map[string]uint64) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// TestBufferOnlyWhileHolding: an inactive session with nothing held costs
// a flag bit, and the buffer goes as soon as it is flushed.
func TestBufferOnlyWhileHolding(t *testing.T) {
	h := newHarness(t, 1024)
	slot := func() *buffer { b, _ := h.sess.Slot(h.m.buffer).(*buffer); return b }
	h.step(t, inactive)
	h.step(t, hello)
	if slot() != nil {
		t.Fatal("a buffer was allocated with nothing held")
	}
	h.step(t, benAway)
	if slot() == nil {
		t.Fatal("nothing held")
	}
	h.step(t, pong)
	if slot() != nil {
		t.Fatal("the buffer outlived the flush")
	}
	h.step(t, composing)
	h.step(t, closed)
	if slot() != nil {
		t.Fatal("the buffer outlived the session")
	}
}

// TestBufferStaysUnderCap: presence replaced again and again is compacted
// away, so the buffer's memory stays within the cap however long the
// session is inactive.
func TestBufferStaysUnderCap(t *testing.T) {
	const max = 1024
	h := newHarness(t, max)
	h.step(t, inactive)
	h.step(t, catOnline)
	for i := range 10000 {
		h.step(t, []string{benAway, benChat}[i%2])
		b, _ := h.sess.Slot(h.m.buffer).(*buffer)
		if b == nil || cap(b.b) > max || len(b.ents) > max/len(benAway)+1 {
			t.Fatalf("after %d presences: buffer %d bytes, %d entries", i+1, cap(b.b), len(b.ents))
		}
	}
	if got := h.sess.Take(); len(got) != 0 {
		t.Fatalf("sent %q while inactive", got)
	}
	h.step(t, active)
	if got, want := h.sess.Take(), []string{catOnline, benChat}; !slices.Equal(got, want) {
		t.Fatalf("got %q, want %q", got, want)
	}
}

func TestAdvertised(t *testing.T) {
	reg, err := hook.New(New(1024))
	if err != nil {
		t.Fatal(err)
	}
	for _, secure := range []bool{true, false} {
		if got := string(reg.StreamFeatures(nil, hook.PhaseBind, secure)); got != `<csi xmlns='urn:xmpp:csi:0'/>` {
			t.Errorf("bind features (secure %v) %q", secure, got)
		}
		if got := reg.StreamFeatures(nil, hook.PhasePreAuth, secure); len(got) != 0 {
			t.Errorf("pre-auth features (secure %v) %q", secure, got)
		}
	}
	if got := reg.DiscoFeatures(); !slices.Equal(got, []string{NS}) {
		t.Errorf("disco features %q", got)
	}
	if reg.Nonza(hook.PhaseBind, NS, "inactive") != nil {
		t.Error("inactive is taken before binding")
	}
}

func BenchmarkFilterActive(b *testing.B) {
	m := New(64 << 10)
	reg, _ := hook.New(m)
	sess := imtest.NewHost().Bind("ann", "a")
	f := reg.Outbound()[0]
	msg := []byte(hello)
	b.ReportAllocs()
	for b.Loop() {
		f(sess, msg)
	}
}

func BenchmarkClassify(b *testing.B) {
	for _, tc := range []struct{ name, s string }{{"carbon", carbonBody}, {"pep", pep}, {"presence", benAway}} {
		b.Run(tc.name, func(b *testing.B) {
			msg := []byte(tc.s)
			b.ReportAllocs()
			for b.Loop() {
				classify(msg)
			}
		})
	}
}
