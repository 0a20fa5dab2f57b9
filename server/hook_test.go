package server_test

import (
	"bytes"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/krill-xmpp/krill/hook"
	"github.com/krill-xmpp/krill/server"
	"github.com/krill-xmpp/krill/stanza"
)

// probe is a test module that registers one handler of every hook kind
// and records what the core fires, so that each kind is tested through
// the real server over real sockets.
type probe struct {
	mu     sync.Mutex
	events []string // "event local"
	seen   hook.Flag
	count  hook.Slot
	held   hook.Slot         // stanzas the holding filter keeps, [][]byte
	holder hook.Outbound     // its place in the chain
	kept   chan hook.Session // sessions kept by the Closing veto
}

func (*probe) Name() string { return "probe" }

func (p *probe) record(s string) {
	p.mu.Lock()
	p.events = append(p.events, s)
	p.mu.Unlock()
}

func (p *probe) log() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.events)
}

func (p *probe) Register(r *hook.Registrar) error {
	p.seen = r.Flag()
	p.count = r.Slot()
	// iq by addressing: one handler answers with where the request went.
	r.IQ(hook.PhaseBound, hook.IQGet, hook.ToNone|hook.ToHost|hook.ToBare, "urn:test", "where", func(c *hook.Ctx, iq *hook.Stanza) error {
		c.ReplyResult([]byte(`<where xmlns='urn:test'>` + iq.Addr.String() + `</where>`))
		return nil
	})
	// A pre stage that refuses, consumes or rewrites.
	r.Stanza(hook.Message, hook.ToBare|hook.ToFull, hook.Pre, func(c *hook.Ctx, st *hook.Stanza) hook.Verdict {
		switch {
		case bytes.Contains(st.Raw, []byte("refuse")):
			c.ReplyError("modify", "not-acceptable", "refused by probe")
			return hook.Stop
		case bytes.Contains(st.Raw, []byte("swallow")):
			return hook.Stop
		case bytes.Contains(st.Raw, []byte("rewrite")):
			st.Raw = bytes.ReplaceAll(st.Raw, []byte("rewrite"), []byte("rewritten"))
			st.Tag, _ = stanza.ParseStartTag(st.Raw)
		}
		return hook.Continue
	})
	// Undelivered: take messages for resources that are not bound.
	r.Stanza(hook.Message, hook.ToBare, hook.Undelivered, func(c *hook.Ctx, st *hook.Stanza) hook.Verdict {
		if strings.Contains(st.To, "/kept") {
			p.record("undelivered " + st.To)
			return hook.Stop
		}
		return hook.Continue
	})
	// A nonza after binding: answered with a count kept in a slot.
	r.Nonza(hook.PhaseBound, "urn:test", "poke", func(c *hook.Ctx, _ []byte) error {
		n, _ := c.Session.Slot(p.count).(int)
		n++
		c.Session.SetSlot(p.count, n)
		c.Conn.Write([]byte(`<poked xmlns='urn:test' n='` + string(rune('0'+n)) + `'/>`))
		return nil
	})
	r.StreamFeature(hook.PhaseBind, true, func(b []byte) []byte { return append(b, `<probe xmlns='urn:test'/>`...) })
	r.StreamFeature(hook.PhasePreAuth, false, func(b []byte) []byte { return append(b, `<pre xmlns='urn:test'/>`...) })
	r.DiscoFeature("urn:test")
	// The outbound chain: redact, and drop what says so.
	r.Outbound(func(s hook.Session, b []byte) ([]byte, hook.Verdict) {
		if bytes.Contains(b, []byte("classified")) {
			return nil, hook.Stop
		}
		return bytes.ReplaceAll(b, []byte("secret"), []byte("[redacted]")), hook.Continue
	})
	// A filter that holds what says so, and a nonza that releases it
	// through the rest of the chain (which redacts).
	p.held = r.Slot()
	p.holder = r.Outbound(func(s hook.Session, b []byte) ([]byte, hook.Verdict) {
		if !bytes.Contains(b, []byte("hold")) {
			return b, hook.Continue
		}
		held, _ := s.Slot(p.held).([][]byte)
		s.SetSlot(p.held, append(held, bytes.Clone(b)))
		return nil, hook.Stop
	})
	// Registered after the holder: what it releases passes here.
	r.Outbound(func(s hook.Session, b []byte) ([]byte, hook.Verdict) {
		return bytes.ReplaceAll(b, []byte("hold"), []byte("held")), hook.Continue
	})
	r.Nonza(hook.PhaseBound, "urn:test", "release", func(c *hook.Ctx, _ []byte) error {
		held, _ := c.Session.Slot(p.held).([][]byte)
		c.Session.SetSlot(p.held, nil)
		for _, b := range held {
			c.Session.Pass(p.holder, b)
		}
		c.Conn.WriteNonza([]byte(`<released xmlns='urn:test'/>`))
		return nil
	})
	for _, ev := range []hook.Event{hook.Authenticated, hook.Bound, hook.Available, hook.Unavailable, hook.Closing, hook.Closed} {
		r.On(ev, func(c *hook.Ctx, ev hook.Event) hook.Verdict {
			name := [...]string{"authenticated", "bound", "available", "unavailable", "closing", "resumed", "closed"}[ev]
			p.record(name + " " + c.Session.Local())
			if ev == hook.Bound {
				c.Session.Set(p.seen, true)
			}
			if ev == hook.Closing && c.Session.Local() == "keeper" {
				p.kept <- c.Session
				return hook.Stop
			}
			return hook.Continue
		})
	}
	// Presence without to: mark available (what the presence module does).
	r.Stanza(hook.Presence, hook.ToNone, hook.Pre, func(c *hook.Ctx, st *hook.Stanza) hook.Verdict {
		if st.Type == "unavailable" {
			c.Session.SetPresence(c, nil, 0)
		} else {
			c.Session.SetPresence(c, stanza.WithAttr(st.Tag, st.Raw, "from", st.From), 0)
		}
		return hook.Stop
	})
	return nil
}

func startWithModules(t *testing.T, mods []hook.Module, users ...string) *server.Server {
	t.Helper()
	srv, _ := startServerOpts(t, testConfig(t), serverOpts{mods: mods}, users...)
	return srv
}

func TestHookKinds(t *testing.T) {
	p := &probe{kept: make(chan hook.Session, 1)}
	srv := startWithModules(t, []hook.Module{p}, "ann", "ben", "keeper")

	t.Run("stream features", func(t *testing.T) {
		r := dialRaw(t, srv)
		if f := r.open(); !strings.Contains(f, `<pre xmlns='urn:test'/></stream:features>`) {
			t.Fatalf("pre-auth features %q", f)
		}
	})

	ann := dialRaw(t, srv)
	annJID := ann.scramLogin("ann", testPassword, "a")
	ben := dialRaw(t, srv)
	benJID := ben.scramLogin("ben", testPassword, "b")

	t.Run("iq by addressing", func(t *testing.T) {
		for _, tc := range []struct{ to, want string }{
			{"", `<iq type='result' id='w'><where xmlns='urn:test'>none</where></iq>`},
			{" to='localhost'", `<iq type='result' id='w' from='localhost'><where xmlns='urn:test'>host</where></iq>`},
			{" to='ben@localhost'", `<iq type='result' id='w' from='ben@localhost'><where xmlns='urn:test'>bare</where></iq>`},
		} {
			ann.send(`<iq type='get' id='w'` + tc.to + `><where xmlns='urn:test'/></iq>`)
			ann.expect(t, tc.want)
		}
		ann.send(`<iq type='set' id='w'><where xmlns='urn:test'/></iq>`)
		ann.expect(t, `<iq type='error' id='w' to='`+annJID+`'><error type='cancel'><service-unavailable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>`)
	})

	t.Run("pre stage", func(t *testing.T) {
		ann.send(`<message to='` + benJID + `' id='m1'><body>refuse</body></message>`)
		ann.expect(t, `<message type='error' id='m1' from='`+benJID+`' to='`+annJID+`'><error type='modify'><not-acceptable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/><text xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'>refused by probe</text></error></message>`)
		ann.send(`<message to='` + benJID + `' id='m2'><body>swallow</body></message>`)
		ann.send(`<message to='` + benJID + `' id='m3'><body>rewrite</body></message>`)
		// Nothing of m2 arrives before m3, which arrives rewritten.
		ben.expect(t, `<message to='`+benJID+`' id='m3' from='`+annJID+`'><body>rewritten</body></message>`)
	})

	t.Run("outbound chain", func(t *testing.T) {
		ann.send(`<message to='` + benJID + `' id='o1'><body>classified</body></message>`)
		ann.send(`<message to='` + benJID + `' id='o2'><body>a secret</body></message>`)
		ben.expect(t, `<message to='`+benJID+`' id='o2' from='`+annJID+`'><body>a [redacted]</body></message>`)
	})

	t.Run("undelivered stage", func(t *testing.T) {
		ann.send(`<message type='chat' to='ben@localhost/kept' id='u1'><body>later</body></message>`)
		ann.send(`<message type='chat' to='ben@localhost/gone' id='u2'><body>never</body></message>`)
		ann.expect(t, `<message type='error' id='u2' from='ben@localhost/gone' to='`+annJID+`'><error type='cancel'><service-unavailable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></message>`)
	})

	t.Run("hold and pass", func(t *testing.T) {
		ann.send(`<message to='` + benJID + `' id='h1'><body>hold one</body></message>`)
		ann.send(`<message to='` + benJID + `' id='h2'><body>hold two</body></message>`)
		ann.send(`<message to='` + benJID + `' id='h3'><body>now</body></message>`)
		ben.expect(t, `<message to='`+benJID+`' id='h3' from='`+annJID+`'><body>now</body></message>`)
		ben.send(`<release xmlns='urn:test'/>`)
		ben.expect(t, `<message to='`+benJID+`' id='h1' from='`+annJID+`'><body>held one</body></message>`+
			`<message to='`+benJID+`' id='h2' from='`+annJID+`'><body>held two</body></message><released xmlns='urn:test'/>`)
	})

	t.Run("nonza and slot", func(t *testing.T) {
		ann.send(`<poke xmlns='urn:test'/>`)
		ann.expect(t, `<poked xmlns='urn:test' n='1'/>`)
		ann.send(`<poke xmlns='urn:test'/>`)
		ann.expect(t, `<poked xmlns='urn:test' n='2'/>`)
		ben.send(`<poke xmlns='urn:test'/>`)
		ben.expect(t, `<poked xmlns='urn:test' n='1'/>`)
	})

	t.Run("lifecycle and veto", func(t *testing.T) {
		ann.send(`<presence/>`)
		ann.send(`<presence type='unavailable'/>`)
		ann.exchange(t, `<iq type='get' id='sync'><where xmlns='urn:test'/></iq>`, `<iq type='result' id='sync'><where xmlns='urn:test'>none</where></iq>`)
		ann.send(`<presence/>`)
		ann.exchange(t, `<iq type='get' id='sync2'><where xmlns='urn:test'/></iq>`, `<iq type='result' id='sync2'><where xmlns='urn:test'>none</where></iq>`)
		ann.send(`</stream:stream>`)
		ann.closed()
		keeper := dialRaw(t, srv)
		keeper.scramLogin("keeper", testPassword, "k")
		_ = keeper.conn.Close()
		var kept hook.Session
		select {
		case kept = <-p.kept:
		case <-time.After(ioTimeout):
			t.Fatal("the Closing veto was not asked")
		}
		if !waitFor(ioTimeout, func() bool { return srv.Stats().Sessions == 2 }) {
			t.Fatalf("sessions %d; want ben and the kept keeper", srv.Stats().Sessions)
		}
		kept.Close("connection-timeout", "")
		if !waitFor(ioTimeout, func() bool { return srv.Stats().Sessions == 1 }) {
			t.Fatalf("sessions %d after closing the kept session", srv.Stats().Sessions)
		}
		var got []string
		for _, e := range p.log() {
			if strings.HasSuffix(e, " ann") || strings.HasSuffix(e, " keeper") || strings.HasPrefix(e, "undelivered") {
				got = append(got, e)
			}
		}
		want := []string{
			"authenticated ann", "bound ann",
			"undelivered ben@localhost/kept",
			"available ann", "unavailable ann", "available ann",
			"closing ann", "unavailable ann", "closed ann",
			"authenticated keeper", "bound keeper", "closing keeper", "closed keeper",
		}
		if !slices.Equal(got, want) {
			t.Fatalf("events\n got %q\nwant %q", got, want)
		}
	})
}
