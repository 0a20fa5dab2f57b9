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
// account are capped (MaxPerAccount).
//
// With a Store, registrations are kept: a phone whose app sleeps is
// still woken after the server restarts, though it has not logged in to
// enable push again. They are loaded into memory when the module
// registers (each costs its JID, node and publish-options form, about
// 300 B with a typical secret) and enable and disable answer once the
// store has the change. In a cluster a message for an account with no
// session anywhere reads the account's registrations from the store,
// since another node may have taken the enable.
package push

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/krill-xmpp/krill/hook"
	"github.com/krill-xmpp/krill/stanza"
	"github.com/krill-xmpp/krill/storage"
)

// NS is XEP-0357's namespace.
const NS = "urn:xmpp:push:0"

// Defaults.
const (
	DefaultMinInterval   = 5 * time.Second
	DefaultMaxPerAccount = 8
	maxFieldLen          = 1024 // jid, node, secret: bytes
	// loadTimeout bounds reading every registration at start.
	loadTimeout = time.Minute
)

// Module is the push module. The zero value works with the defaults and
// keeps registrations in memory only.
type Module struct {
	// MinInterval is the least time between two notifications to one
	// registration; 0 means DefaultMinInterval.
	MinInterval time.Duration
	// MaxPerAccount caps an account's registrations; 0 means
	// DefaultMaxPerAccount. Enabling one more drops the oldest.
	MaxPerAccount int
	// Store keeps registrations across restarts; nil keeps them in
	// memory only (clients enable again at each login).
	Store storage.Push
	// Clustered makes a message for an account with no session read
	// the account's registrations from Store rather than memory: in a
	// cluster the enable may have reached another node.
	Clustered bool

	mu    sync.Mutex
	regs  map[string][]*registration // by account localpart
	count atomic.Int64               // registrations in total: the filter's fast path
	sent  atomic.Uint64
	host  atomic.Pointer[hostRef] // from the first enable: the filter has only the session

	// Notifications waiting for the app server's answer, by iq id, so
	// that an error disables the registration; at most maxOutstanding,
	// the oldest forgotten first (its answer is then ignored).
	outstanding     map[string]outstanding
	outstandingIDs  []string // in the order sent: a ring of maxOutstanding
	outstandingNext int
	disabledByError atomic.Uint64
}

// maxOutstanding bounds the notifications remembered for their answer.
const maxOutstanding = 4096

// outstanding is a notification sent and not answered yet.
type outstanding struct{ user, jid, node string }

type hostRef struct{ h hook.Host }

type registration struct {
	jid, node string
	options   []byte // the client's publish-options form, passed on (its secret)
	last      time.Time
	pending   int // messages since the last notification
}

// Name implements hook.Module.
func (*Module) Name() string { return "push" }

// Register implements hook.Module. With a Store it loads every kept
// registration.
func (m *Module) Register(r *hook.Registrar) error {
	m.regs = make(map[string][]*registration)
	if m.Store != nil {
		ctx, cancel := context.WithTimeout(context.Background(), loadTimeout)
		defer cancel()
		err := m.Store.EachPushRegistration(ctx, func(p storage.PushRegistration) error {
			m.regs[p.Account] = append(m.regs[p.Account], &registration{jid: p.JID, node: p.Node, options: p.Options})
			m.count.Add(1)
			return nil
		})
		if err != nil {
			return fmt.Errorf("push: load registrations: %w", err)
		}
	}
	r.IQ(hook.PhaseBound, hook.IQSet, hook.ToAccount, NS, "enable", m.enable)
	r.IQ(hook.PhaseBound, hook.IQSet, hook.ToAccount, NS, "disable", m.disable)
	r.DiscoFeature(NS)
	r.Outbound(m.filter)
	r.Stanza(hook.Message, hook.ToBare|hook.ToFull, hook.Undelivered, m.undelivered)
	return nil
}

// Counters implements hook.Counter.
func (m *Module) Counters(fn func(event string, n uint64)) {
	fn("notifications", m.sent.Load())
	fn("registrations", uint64(max(m.count.Load(), 0)))
	fn("disabled_by_error", m.disabledByError.Load())
}

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
	m.keepHost(c.Host)
	user := c.Session.Local()
	max := m.MaxPerAccount
	if max <= 0 {
		max = DefaultMaxPerAccount
	}
	add := func() {
		m.mu.Lock()
		defer m.mu.Unlock()
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
	}
	if m.Store == nil {
		add()
		c.ReplyResult(nil)
		return nil
	}
	reg, log := storage.PushRegistration{Account: user, JID: jid, Node: node, Options: options, Created: time.Now().UnixNano()}, c.Log
	c.Conn.Async(func(ctx context.Context) func(*hook.Ctx) {
		if err := m.Store.PutPushRegistration(ctx, reg, max); err != nil {
			log.Error("push registration not stored", zap.String("user", user), zap.Error(err))
			return func(c *hook.Ctx) {
				c.ReplyError("wait", "internal-server-error", "the registration could not be stored")
			}
		}
		return func(c *hook.Ctx) {
			add()
			c.ReplyResult(nil)
		}
	}, nil)
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
	if jid == "" {
		c.ReplyError("modify", "bad-request", "jid is required")
		return nil
	}
	user := c.Session.Local()
	remove := func() {
		m.mu.Lock()
		defer m.mu.Unlock()
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
	}
	if m.Store == nil {
		remove()
		c.ReplyResult(nil)
		return nil
	}
	log := c.Log
	c.Conn.Async(func(ctx context.Context) func(*hook.Ctx) {
		if _, err := m.Store.DeletePushRegistrations(ctx, user, jid, node, !hasNode); err != nil {
			log.Error("push registration not deleted", zap.String("user", user), zap.Error(err))
			return func(c *hook.Ctx) {
				c.ReplyError("wait", "internal-server-error", "the registration could not be deleted")
			}
		}
		return func(c *hook.Ctx) {
			remove()
			c.ReplyResult(nil)
		}
	}, nil)
	return nil
}

// keepHost remembers the server's Host for the outbound filter, which
// sees only a session.
func (m *Module) keepHost(h hook.Host) {
	if m.host.Load() == nil {
		m.host.Store(&hostRef{h})
	}
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
	sender := ""
	if tag, err := stanza.ParseStartTag(b); err == nil {
		sender, _ = tag.AttrString("from")
	}
	m.notify(s.Local(), b, sender)
	return b, hook.Continue
}

// undelivered sees a message no session took (the account is offline; the
// offline module stores it after this).
func (m *Module) undelivered(c *hook.Ctx, st *hook.Stanza) hook.Verdict {
	if st.Local == "" {
		return hook.Continue
	}
	m.keepHost(c.Host)
	if m.Clustered && m.Store != nil && hasBody(st.Raw) {
		// Another node may have taken the enable: the store knows.
		// Raw is as the sender wrote it; From is who sent it.
		user, msg, sender, log := st.Local, append([]byte(nil), st.Raw...), st.From, c.Log
		c.Host.Go(func(ctx context.Context) {
			regs, err := m.Store.PushRegistrations(ctx, user)
			if err != nil {
				log.Error("push registrations not read", zap.String("user", user), zap.Error(err))
				return
			}
			m.refresh(user, regs)
			m.notify(user, msg, sender)
		})
		return hook.Continue
	}
	if m.count.Load() > 0 {
		m.notify(st.Local, st.Raw, st.From)
	}
	return hook.Continue
}

// refresh replaces user's registrations in memory with regs, read from
// the store, keeping the rate-limiting state of those it already had.
func (m *Module) refresh(user string, regs []storage.PushRegistration) {
	m.mu.Lock()
	defer m.mu.Unlock()
	old := m.regs[user]
	fresh := make([]*registration, 0, len(regs))
	for _, p := range regs {
		r := &registration{jid: p.JID, node: p.Node, options: p.Options}
		for _, o := range old {
			if o.jid == p.JID && o.node == p.Node {
				r.last, r.pending = o.last, o.pending
			}
		}
		fresh = append(fresh, r)
	}
	m.count.Add(int64(len(fresh) - len(old)))
	if len(fresh) == 0 {
		delete(m.regs, user)
	} else {
		m.regs[user] = fresh
	}
}

// notify publishes a summary notification to each of user's
// registrations not notified within MinInterval; msg is the message that
// woke it, from sender (named in the summary; the body is not).
func (m *Module) notify(user string, msg []byte, sender string) {
	ref := m.host.Load()
	if ref == nil || !hasBody(msg) {
		return
	}
	host := ref.h
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
		id := "push" + strconv.FormatUint(seq.Add(1), 10)
		m.remember(id, outstanding{user, r.jid, r.node})
		sends = append(sends, out{r.jid, m.appendNotification(nil, id, user+"@"+host.Domain(), r, n, sender)})
	}
	m.mu.Unlock()
	for _, o := range sends {
		m.sent.Add(1)
		host.Deliver(o.to, o.b)
	}
}

var seq atomic.Uint64

// remember keeps a sent notification for its answer; m.mu is held.
func (m *Module) remember(id string, o outstanding) {
	if m.outstanding == nil {
		m.outstanding = make(map[string]outstanding)
		m.outstandingIDs = make([]string, maxOutstanding)
	}
	if old := m.outstandingIDs[m.outstandingNext]; old != "" {
		delete(m.outstanding, old)
	}
	m.outstandingIDs[m.outstandingNext] = id
	m.outstandingNext = (m.outstandingNext + 1) % maxOutstanding
	m.outstanding[id] = o
}

// InboundStanza implements hook.Inbound: the app server's answer to a
// notification. An error other than of type wait (a device token the
// push service no longer knows, say) disables the registration, as
// Prosody's mod_cloud_notify and MongooseIM do: the client enables it
// again when it next logs in. Only the JID the notification went to can
// answer for it.
func (m *Module) InboundStanza(c *hook.Ctx, st *hook.Stanza) hook.Verdict {
	if st.Kind != hook.IQ || (st.Type != "result" && st.Type != "error") || !strings.HasPrefix(st.ID, "push") {
		return hook.Continue
	}
	m.mu.Lock()
	o, ok := m.outstanding[st.ID]
	if ok && o.jid == st.From && st.Local == o.user && st.Resource == "" {
		delete(m.outstanding, st.ID) // its slot in the ring is reused later
	} else {
		ok = false
	}
	m.mu.Unlock()
	if !ok {
		return hook.Continue
	}
	if st.Type == "result" || errorType(st.Raw) == "wait" {
		return hook.Stop
	}
	m.mu.Lock()
	regs := m.regs[o.user][:0]
	for _, r := range m.regs[o.user] {
		if r.jid == o.jid && r.node == o.node {
			m.count.Add(-1)
			continue
		}
		regs = append(regs, r)
	}
	if len(regs) == 0 {
		delete(m.regs, o.user)
	} else {
		m.regs[o.user] = regs
	}
	m.mu.Unlock()
	m.disabledByError.Add(1)
	if m.Store != nil {
		log := c.Log
		c.Host.Go(func(ctx context.Context) {
			if _, err := m.Store.DeletePushRegistrations(ctx, o.user, o.jid, o.node, false); err != nil {
				log.Error("push registration not deleted after an app server error", zap.String("user", o.user), zap.Error(err))
			}
		})
	}
	return hook.Stop
}

// errorType returns the type of an error stanza's error child.
func errorType(b []byte) string {
	typ := ""
	stanza.Children(b, func(child []byte) bool {
		if tag, err := stanza.ParseStartTag(child); err == nil && string(tag.Local()) == "error" {
			typ, _ = tag.AttrString("type")
			return false
		}
		return true
	})
	return typ
}

// appendNotification appends the pubsub publish of XEP-0357 section 7.
func (m *Module) appendNotification(b []byte, id, from string, r *registration, count int, sender string) []byte {
	b = append(b, `<iq type='set' id='`...)
	b = append(b, id...)
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
