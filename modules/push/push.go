// Package push implements XEP-0357 Push Notifications: a client registers
// an app server (a JID, usually of another domain reached over
// federation, or a component) and a node; when a message arrives for the
// account while none of its sessions is connected (all parked by stream
// management, or none at all), the server publishes a summary to the app
// server, which wakes the device through its vendor's push service.
//
// Notifications carry the XEP-0357 summary form (urn:xmpp:push:summary):
// message count and last sender, never the message body. Each
// registration is rate-limited (MinInterval), and registrations per
// account are capped (MaxPerAccount). Registrations live in memory: a
// client enables push again on each login, as Conversations, Monal and
// Siskin do.
package push

import (
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/krill-xmpp/krill/hook"
	"github.com/krill-xmpp/krill/stanza"
)

// NS is XEP-0357's namespace.
const NS = "urn:xmpp:push:0"

// Defaults.
const (
	DefaultMinInterval   = 5 * time.Second
	DefaultMaxPerAccount = 8
	maxFieldLen          = 1024 // jid, node, secret: bytes
)

// Module is the push module. The zero value works with the defaults.
type Module struct {
	// MinInterval is the least time between two notifications to one
	// registration; 0 means DefaultMinInterval.
	MinInterval time.Duration
	// MaxPerAccount caps an account's registrations; 0 means
	// DefaultMaxPerAccount. Enabling one more drops the oldest.
	MaxPerAccount int

	mu    sync.Mutex
	regs  map[string][]*registration // by account localpart
	count atomic.Int64               // registrations in total: the filter's fast path
	sent  atomic.Uint64
	host  atomic.Pointer[hostRef] // from the first enable: the filter has only the session
}

type hostRef struct{ h hook.Host }

type registration struct {
	jid, node string
	options   []byte // the client's publish-options form, passed on (its secret)
	last      time.Time
	pending   int // messages since the last notification
}

// Name implements hook.Module.
func (*Module) Name() string { return "push" }

// Register implements hook.Module.
func (m *Module) Register(r *hook.Registrar) error {
	m.regs = make(map[string][]*registration)
	r.IQ(hook.PhaseBound, hook.IQSet, hook.ToAccount, NS, "enable", m.enable)
	r.IQ(hook.PhaseBound, hook.IQSet, hook.ToAccount, NS, "disable", m.disable)
	r.DiscoFeature(NS)
	r.Outbound(m.filter)
	r.Stanza(hook.Message, hook.ToBare|hook.ToFull, hook.Undelivered, m.undelivered)
	return nil
}

// Counters implements hook.Counter.
func (m *Module) Counters(fn func(event string, n uint64)) { fn("notifications", m.sent.Load()) }

func (m *Module) enable(c *hook.Ctx, st *hook.Stanza) error {
	tag, err := stanza.ParseStartTag(st.Payload)
	if err != nil {
		c.ReplyError("modify", "bad-request", "")
		return nil
	}
	jid, _ := tag.AttrString("jid")
	node, _ := tag.AttrString("node")
	if jid == "" || len(jid) > maxFieldLen || len(node) > maxFieldLen {
		c.ReplyError("modify", "bad-request", "jid is required")
		return nil
	}
	var options []byte
	stanza.Children(st.Payload, func(child []byte) bool {
		if len(child) <= maxFieldLen {
			options = append([]byte(nil), child...)
		}
		return false
	})
	if m.host.Load() == nil {
		m.host.Store(&hostRef{c.Host})
	}
	user := c.Session.Local()
	max := m.MaxPerAccount
	if max <= 0 {
		max = DefaultMaxPerAccount
	}
	m.mu.Lock()
	regs := m.regs[user]
	for i, r := range regs {
		if r.jid == jid && r.node == node {
			regs = append(regs[:i], regs[i+1:]...)
			m.count.Add(-1)
			break
		}
	}
	if len(regs) >= max {
		regs = regs[1:]
		m.count.Add(-1)
	}
	m.regs[user] = append(regs, &registration{jid: jid, node: node, options: options})
	m.count.Add(1)
	m.mu.Unlock()
	c.ReplyResult(nil)
	return nil
}

func (m *Module) disable(c *hook.Ctx, st *hook.Stanza) error {
	tag, err := stanza.ParseStartTag(st.Payload)
	if err != nil {
		c.ReplyError("modify", "bad-request", "")
		return nil
	}
	jid, _ := tag.AttrString("jid")
	node, hasNode := tag.AttrString("node")
	user := c.Session.Local()
	m.mu.Lock()
	regs := m.regs[user][:0]
	for _, r := range m.regs[user] {
		if r.jid == jid && (!hasNode || r.node == node) {
			m.count.Add(-1)
			continue
		}
		regs = append(regs, r)
	}
	if len(regs) == 0 {
		delete(m.regs, user)
	} else {
		m.regs[user] = regs
	}
	m.mu.Unlock()
	c.ReplyResult(nil)
	return nil
}

// filter sees what is written to a session: a message with a body for a
// session that is parked wakes the account's devices.
func (m *Module) filter(s hook.Session, b []byte) ([]byte, hook.Verdict) {
	if m.count.Load() == 0 || len(b) < 9 || string(b[:8]) != "<message" {
		return b, hook.Continue
	}
	if a, ok := s.(hook.Attached); !ok || a.Attached() {
		return b, hook.Continue
	}
	m.notify(s.Local(), b)
	return b, hook.Continue
}

// undelivered sees a message no session took (the account is offline; the
// offline module stores it after this).
func (m *Module) undelivered(c *hook.Ctx, st *hook.Stanza) hook.Verdict {
	if m.count.Load() > 0 && st.Local != "" {
		m.notify(st.Local, st.Raw)
	}
	return hook.Continue
}

// notify publishes a summary notification to each of user's
// registrations not notified within MinInterval; msg is the message that
// woke it (its sender is named, its body is not).
func (m *Module) notify(user string, msg []byte) {
	ref := m.host.Load()
	if ref == nil || !hasBody(msg) {
		return
	}
	host := ref.h
	sender := ""
	if tag, err := stanza.ParseStartTag(msg); err == nil {
		sender, _ = tag.AttrString("from")
	}
	every := m.MinInterval
	if every <= 0 {
		every = DefaultMinInterval
	}
	now := time.Now()
	type out struct {
		to string
		b  []byte
	}
	var sends []out
	m.mu.Lock()
	for _, r := range m.regs[user] {
		r.pending++
		if now.Sub(r.last) < every {
			continue // rate-limited: counted in the next summary
		}
		r.last = now
		n := r.pending
		r.pending = 0
		sends = append(sends, out{r.jid, m.appendNotification(nil, user+"@"+host.Domain(), r, n, sender)})
	}
	m.mu.Unlock()
	for _, o := range sends {
		m.sent.Add(1)
		host.Deliver(o.to, o.b)
	}
}

var seq atomic.Uint64

// appendNotification appends the pubsub publish of XEP-0357 section 7.
func (m *Module) appendNotification(b []byte, from string, r *registration, count int, sender string) []byte {
	b = append(b, `<iq type='set' id='push`...)
	b = strconv.AppendUint(b, seq.Add(1), 10)
	b = append(b, `' from='`...)
	b = stanza.AppendEscaped(b, from)
	b = append(b, `' to='`...)
	b = stanza.AppendEscaped(b, r.jid)
	b = append(b, `'><pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='`...)
	b = stanza.AppendEscaped(b, r.node)
	b = append(b, `'><item><notification xmlns='`+NS+`'><x xmlns='jabber:x:data' type='result'>`...)
	b = append(b, `<field var='FORM_TYPE'><value>urn:xmpp:push:summary</value></field><field var='message-count'><value>`...)
	b = strconv.AppendInt(b, int64(count), 10)
	b = append(b, `</value></field>`...)
	if sender != "" {
		b = append(b, `<field var='last-message-sender'><value>`...)
		b = stanza.AppendEscaped(b, sender)
		b = append(b, `</value></field>`...)
	}
	b = append(b, `</x></notification></item></publish>`...)
	if len(r.options) > 0 {
		b = append(b, `<publish-options>`...)
		b = append(b, r.options...)
		b = append(b, `</publish-options>`...)
	}
	return append(b, `</pubsub></iq>`...)
}

// hasBody reports whether a message carries a body: chat states and
// receipts wake nobody.
func hasBody(msg []byte) bool {
	found := false
	stanza.Children(msg, func(child []byte) bool {
		if tag, err := stanza.ParseStartTag(child); err == nil && string(tag.Local()) == "body" {
			found = true
			return false
		}
		return true
	})
	return found
}
