// Package csi implements XEP-0352 Client State Indication: a client that
// says it is <inactive/> (a phone with its screen off) is not woken for
// what can wait. While a session is inactive, an outbound filter holds
// what is not urgent (presence updates, chat states and other body-less
// messages, PEP notifications) in a per-session buffer, keeping only the
// latest presence of each sender, and sends it all, in order, as soon as
// something urgent comes (a message with a body, an encrypted message, a
// subscription request, an iq, an error), when the buffer reaches its byte
// cap, and when the client says it is <active/> again.
//
// The filter sits before stream management in the outbound chain, so what
// it holds is not yet counted there: stream management counts what reaches
// the client, whenever that is. Held stanzas are copies in one buffer per
// session, allocated only while something is held; when the session closes
// they are dropped (the connection is gone: presence is state that the next
// session asks for again, and body-less messages are not meant to be
// stored) and counted as "dropped".
package csi

import (
	"sync/atomic"

	"github.com/krill-xmpp/krill/hook"
	"github.com/krill-xmpp/krill/stanza"
)

// NS is the XEP-0352 namespace.
const NS = "urn:xmpp:csi:0"

// feature is the stream feature advertised after authentication.
const feature = `<csi xmlns='` + NS + `'/>`

// Module holds what an inactive session can do without. Build it with New
// and use it by pointer.
type Module struct {
	max      int           // csi.max_buffer_bytes
	inactive hook.Flag     // the client said <inactive/>
	buffer   hook.Slot     // *buffer, set only while something is held
	place    hook.Outbound // the filter's place, to pass on what it held

	held, flushed, superseded, dropped atomic.Uint64
}

// New returns the module holding at most maxBytes (csi.max_buffer_bytes)
// per session; 0 holds nothing (the state is still tracked).
func New(maxBytes int) *Module { return &Module{max: maxBytes} }

// Name implements hook.Module.
func (*Module) Name() string { return "csi" }

// Register implements hook.Module.
func (m *Module) Register(r *hook.Registrar) error {
	m.inactive = r.Flag()
	m.buffer = r.Slot()
	m.place = r.Outbound(m.filter)
	add := func(b []byte) []byte { return append(b, feature...) }
	r.StreamFeature(hook.PhaseBind, true, add)
	r.StreamFeature(hook.PhaseBind, false, add)
	r.Nonza(hook.PhaseBound, NS, "inactive", func(c *hook.Ctx, _ []byte) error {
		c.Session.Set(m.inactive, true)
		return nil
	})
	r.Nonza(hook.PhaseBound, NS, "active", func(c *hook.Ctx, _ []byte) error {
		m.activate(c.Session)
		return nil
	})
	// XEP-0352 (0.2.1): the state is not restored when a stream is
	// resumed, so a resumed session is active. Stream management fires
	// Resumed after it has resent its unacknowledged stanzas, which are
	// older than anything held here.
	r.On(hook.Resumed, func(c *hook.Ctx, _ hook.Event) hook.Verdict {
		m.activate(c.Session)
		return hook.Continue
	})
	r.On(hook.Closed, func(c *hook.Ctx, _ hook.Event) hook.Verdict {
		if b, _ := c.Session.Slot(m.buffer).(*buffer); b != nil {
			c.Session.SetSlot(m.buffer, nil)
			m.dropped.Add(uint64(b.live))
		}
		return hook.Continue
	})
	r.DiscoFeature(NS)
	// XEP-0386: the session may begin inactive (or active) from Bind 2.
	r.Bind2Feature(NS)
	r.Bind2Inline(NS, "inactive", func(c *hook.Ctx, _, b []byte) []byte {
		c.Session.Set(m.inactive, true)
		return b
	})
	r.Bind2Inline(NS, "active", func(c *hook.Ctx, _, b []byte) []byte { return b })
	return nil
}

// Counters implements hook.Counter: stanzas held, flushed (sent after
// being held), superseded (a held presence replaced by a later one from
// the same sender) and dropped (held when the session closed).
func (m *Module) Counters(fn func(event string, n uint64)) {
	fn("held", m.held.Load())
	fn("flushed", m.flushed.Load())
	fn("superseded", m.superseded.Load())
	fn("dropped", m.dropped.Load())
}

// activate marks s active and sends what it held.
func (m *Module) activate(s hook.Session) {
	s.Set(m.inactive, false)
	m.flush(s)
}

// filter is the outbound filter: it passes everything through while the
// session is active; while inactive it holds what can wait and flushes
// the buffer ahead of what cannot.
func (m *Module) filter(s hook.Session, b []byte) ([]byte, hook.Verdict) {
	if !s.Has(m.inactive) {
		return b, hook.Continue
	}
	urgent, from := classify(b)
	buf, _ := s.Slot(m.buffer).(*buffer)
	if urgent {
		if buf != nil {
			m.flush(s)
		}
		return b, hook.Continue
	}
	if buf != nil && from != nil {
		if buf.supersede(from) {
			m.superseded.Add(1)
		}
	}
	size := 0
	if buf != nil {
		size = buf.size()
	}
	if size+len(b) > m.max {
		// Full: what is held goes first, then b after it.
		if buf != nil {
			m.flush(s)
		}
		return b, hook.Continue
	}
	if buf == nil {
		buf = &buffer{}
		s.SetSlot(m.buffer, buf)
	}
	buf.add(b, from, m.max)
	m.held.Add(1)
	return nil, hook.Stop
}

// flush sends what s holds through the rest of the chain, in order, and
// frees the buffer.
func (m *Module) flush(s hook.Session) {
	buf, _ := s.Slot(m.buffer).(*buffer)
	if buf == nil {
		return
	}
	// Detached first: a write may close the session (a client that does
	// not read), and Closed must not count what is being sent.
	s.SetSlot(m.buffer, nil)
	for _, e := range buf.ents {
		if e.n == 0 {
			continue
		}
		s.Pass(m.place, buf.b[e.off:e.off+e.n])
		m.flushed.Add(1)
	}
}

// buffer holds one session's stanzas, copied one after another into b.
type buffer struct {
	b    []byte
	ents []entry
	live int // entries not superseded
	dead int // bytes of superseded entries still in b
}

// entry is one held stanza: b[off:off+n], n == 0 once superseded. A
// presence also records where its from attribute's value is, the key under
// which a later presence replaces it.
type entry struct {
	off, n      int32
	from, fromN int32 // fromN == 0: not a presence
}

// size is the bytes held that count against the cap.
func (b *buffer) size() int { return len(b.b) - b.dead }

// add copies s (from is its presence key, nil for a message) into b.
// The caller checked that size()+len(s) <= limit; the buffer never grows
// past limit bytes, superseded ones included.
func (b *buffer) add(s, from []byte, limit int) {
	if len(b.b)+len(s) > cap(b.b) {
		if b.dead > 0 {
			b.compact()
		}
		if need := len(b.b) + len(s); need > cap(b.b) {
			n := min(max(2*cap(b.b), need, 512), limit)
			b.b = append(make([]byte, 0, max(n, need)), b.b...)
		}
	}
	off := len(b.b)
	b.b = append(b.b, s...)
	e := entry{off: int32(off), n: int32(len(s))}
	if from != nil {
		// from is a subslice of s (stanza.StartTag.Attr): its offset is
		// the difference of their capacities.
		e.from, e.fromN = int32(off+cap(s)-cap(from)), int32(len(from))
	}
	b.ents = append(b.ents, e)
	b.live++
}

// supersede forgets the held presence from the same sender, if any.
func (b *buffer) supersede(from []byte) bool {
	for i := range b.ents {
		e := &b.ents[i]
		if e.n != 0 && e.fromN == int32(len(from)) && string(b.b[e.from:e.from+e.fromN]) == string(from) {
			b.dead += int(e.n)
			b.live--
			e.n, e.fromN = 0, 0
			return true // at most one is held per sender
		}
	}
	return false
}

// compact moves the live entries to the front of b, dropping the
// superseded ones, so that the buffer does not grow past its cap with
// presence a sender has since replaced.
func (b *buffer) compact() {
	w, k := 0, 0
	for _, e := range b.ents {
		if e.n == 0 {
			continue
		}
		copy(b.b[w:], b.b[e.off:e.off+e.n])
		if e.fromN != 0 {
			e.from -= e.off - int32(w)
		}
		e.off = int32(w)
		w += int(e.n)
		b.ents[k] = e
		k++
	}
	b.b, b.ents, b.dead = b.b[:w], b.ents[:k], 0
}

// Namespaces that make a message urgent.
const (
	nsClient    = "jabber:client"
	nsCarbons   = "urn:xmpp:carbons:2"             // XEP-0280
	nsForward   = "urn:xmpp:forward:0"             // XEP-0297
	nsJMI       = "urn:xmpp:jingle-message:0"      // XEP-0353: a call ringing
	nsOMEMO     = "eu.siacs.conversations.axolotl" // XEP-0384 before 0.4
	nsOMEMO2    = "urn:xmpp:omemo:2"               // XEP-0384 0.4 and later
	nsPGPLegacy = "jabber:x:encrypted"             // XEP-0027
	nsOX        = "urn:xmpp:openpgp:0"             // XEP-0373
)

// classify tells whether the outbound stanza b is urgent, and for a
// presence that may wait, the raw value of its from attribute (a subslice
// of b): the sender whose later presence replaces it. What does not parse
// is urgent: it is not held.
//
// Urgent: iq; errors; presence of a subscription type (subscribe,
// subscribed, unsubscribe, unsubscribed) or any type but available and
// unavailable; messages with a body, an encrypted payload or a call
// (XEP-0353), and carbons (XEP-0280) of such messages. Everything else
// waits: available and unavailable presence, chat states, receipts,
// markers, PEP and other pubsub notifications.
func classify(b []byte) (urgent bool, from []byte) {
	tag, err := stanza.ParseStartTag(b)
	if err != nil {
		return true, nil
	}
	typ, _ := tag.Attr("type")
	switch string(tag.Local()) {
	case "presence":
		if len(typ) != 0 && string(typ) != "unavailable" {
			return true, nil
		}
		f, ok := tag.Attr("from")
		if !ok {
			// No sender to key it by: it replaces nothing and is
			// replaced by nothing.
			return false, nil
		}
		return false, f
	case "message":
		if string(typ) == "error" {
			return true, nil
		}
		return important(b, 0), nil
	}
	return true, nil
}

// important reports whether the message msg carries something a person is
// waiting for; depth limits the look into carbons to one level.
func important(msg []byte, depth int) bool {
	found := false
	stanza.Children(msg, func(child []byte) bool {
		n, l, ok := name(child)
		if !ok {
			return true
		}
		switch ns, local := string(n), string(l); {
		case ns == nsClient && local == "body",
			ns == nsOMEMO && local == "encrypted", ns == nsOMEMO2 && local == "encrypted",
			ns == nsPGPLegacy && local == "x", ns == nsOX && local == "openpgp",
			ns == nsJMI:
			found = true
		case ns == nsCarbons && (local == "sent" || local == "received") && depth == 0:
			found = forwardedImportant(child)
		}
		return !found
	})
	return found
}

// forwardedImportant looks at the message a carbon forwards.
func forwardedImportant(carbon []byte) bool {
	found := false
	stanza.Children(carbon, func(fwd []byte) bool {
		if ns, local, ok := name(fwd); !ok || string(ns) != nsForward || string(local) != "forwarded" {
			return true
		}
		stanza.Children(fwd, func(inner []byte) bool {
			if ns, local, ok := name(inner); ok && string(ns) == nsClient && string(local) == "message" {
				found = important(inner, 1)
				return false
			}
			return true
		})
		return false
	})
	return found
}

// name returns a child element's namespace (raw, as declared) and local
// name, without allocating. A child with no namespace declaration of its
// own inherits jabber:client: the outbound stanzas are the server's own or
// client stanzas as received.
func name(elem []byte) (ns, local []byte, ok bool) {
	tag, err := stanza.ParseStartTag(elem)
	if err != nil {
		return nil, nil, false
	}
	if p := tag.Prefix(); p != nil {
		ns, _ = tag.Attr("xmlns:" + string(p))
	} else if v, ok := tag.Attr("xmlns"); ok {
		ns = v
	} else {
		ns = []byte(nsClient)
	}
	return ns, tag.Local(), true
}
