// Package carbons implements XEP-0280 Message Carbons (urn:xmpp:carbons:2):
// a session that enables carbons gets a copy of each instant message its
// account's other resources send (<sent/>) and of each one sent to the
// account that routing gives to another of its resources or to none of
// them (<received/>), so that every device sees both sides of every
// conversation.
//
// The copies are made in the Pre stage of a message, on the sender's
// loop, before the core routes the original: the module runs after
// blocking (modules.Standard), so a message blocking refused is never
// copied. An account none of whose sessions enabled carbons costs one map
// lookup per message and nothing else: the message is not even scanned.
package carbons

import (
	"bytes"
	"hash/maphash"
	"strings"
	"sync"
	"sync/atomic"

	"mellium.im/xmpp/jid"

	"github.com/krill-xmpp/krill/hook"
	"github.com/krill-xmpp/krill/stanza"
)

// Namespaces.
const (
	// NS is the namespace of XEP-0280 and its disco feature.
	NS = "urn:xmpp:carbons:2"
	// NSForward is the namespace of XEP-0297 Stanza Forwarding, which
	// wraps the copied message.
	NSForward = "urn:xmpp:forward:0"
	// NSHints is the namespace of XEP-0334 Message Processing Hints.
	NSHints = "urn:xmpp:hints"

	nsClient     = "jabber:client"
	nsChatStates = "http://jabber.org/protocol/chatstates" // XEP-0085
	nsReceipts   = "urn:xmpp:receipts"                     // XEP-0184
	nsMarkers    = "urn:xmpp:chat-markers:0"               // XEP-0333
	nsConference = "jabber:x:conference"                   // XEP-0249
	nsMUCUser    = "http://jabber.org/protocol/muc#user"   // XEP-0045
)

// Blocker tells whether an account blocks a JID (XEP-0191). It answers
// from memory for accounts with sessions and is safe for use from any
// goroutine; modules/blocking implements it.
type Blocker interface {
	// Blocks reports whether the account owner (a localpart) blocks j.
	Blocks(owner string, j jid.JID) bool
}

// Module is XEP-0280. Use it by pointer: it holds its counters and the
// table of accounts with carbons enabled. Blocker may be nil (nobody
// blocks anybody).
type Module struct {
	Blocker Blocker
	// Archive, when set, is the message archive's Pre stage (package
	// mam's Module.Archive, with Chained set), run here first so that
	// the copies carry XEP-0359 stanza IDs as XEP-0313 §5.1.1 asks: a
	// <received/> copy the recipient's, as the original does, and a
	// <sent/> copy the sender's, which Archive returns ("" when the
	// sender's archive does not store the message), never the
	// recipient's.
	Archive func(c *hook.Ctx, st *hook.Stanza) (sentID string)

	// enabled marks a session that enabled carbons; other loops read it
	// when they copy a message to the session.
	enabled hook.Flag
	table   *table

	sent, received atomic.Uint64
}

// Name implements hook.Module.
func (*Module) Name() string { return "carbons" }

// Register implements hook.Module.
func (m *Module) Register(r *hook.Registrar) error {
	m.enabled = r.Flag()
	m.table = newTable()
	r.IQ(hook.PhaseBound, hook.IQSet, hook.ToAccount, NS, "enable", m.toggle)
	r.IQ(hook.PhaseBound, hook.IQSet, hook.ToAccount, NS, "disable", m.toggle)
	// A get of either is a malformed request of this protocol (§4, §5:
	// both are sets) rather than an unknown one.
	r.IQ(hook.PhaseBound, hook.IQGet, hook.ToAccount, NS, "enable", badRequest)
	r.IQ(hook.PhaseBound, hook.IQGet, hook.ToAccount, NS, "disable", badRequest)
	// Messages to other domains are not copied while there is no
	// server-to-server: the core bounces them with remote-server-not-found.
	r.Stanza(hook.Message, hook.ToBare|hook.ToFull|hook.ToRemote, hook.Pre, m.pre)
	r.On(hook.Closed, m.closed)
	r.DiscoFeature(NS)
	// XEP-0386: enabled inline in Bind 2's <bind/>; nothing to answer.
	r.Bind2Feature(NS)
	r.Bind2Inline(NS, "enable", func(c *hook.Ctx, _, b []byte) []byte {
		m.set(c.Session, true)
		return b
	})
	return nil
}

// Counters implements hook.Counter: copies made, by direction.
func (m *Module) Counters(fn func(event string, n uint64)) {
	fn("sent", m.sent.Load())
	fn("received", m.received.Load())
}

func badRequest(c *hook.Ctx, _ *hook.Stanza) error {
	c.ReplyError("modify", "bad-request", "")
	return nil
}

// toggle enables or disables carbons for the session (§4, §5). Repeating
// either is no error (§10.1). A request addressed to another account gets
// not-allowed, as §5.1 recommends for disabling another client's carbons.
func (m *Module) toggle(c *hook.Ctx, st *hook.Stanza) error {
	sess := c.Session
	if st.Addr == hook.ToBare && st.Local != sess.Local() {
		c.ReplyError("cancel", "not-allowed", "")
		return nil
	}
	m.set(sess, st.Name == "enable")
	c.ReplyResult(nil)
	return nil
}

// set records a session's choice. Only the session's own loop changes its
// flag (here and in closed), so the test and the change do not race.
func (m *Module) set(sess hook.Session, on bool) {
	if sess.Has(m.enabled) == on {
		return
	}
	sess.Set(m.enabled, on)
	if on {
		m.table.add(sess.Local(), 1)
	} else {
		m.table.add(sess.Local(), -1)
	}
}

// closed uncounts a session that ends with carbons enabled.
func (m *Module) closed(c *hook.Ctx, _ hook.Event) hook.Verdict {
	if c.Session != nil {
		m.set(c.Session, false)
	}
	return hook.Continue
}

// pre copies an eligible message from a session to the sender's other
// carbons-enabled resources (§8) and to the recipient's carbons-enabled
// resources that routing does not give it to (§7), then lets the core
// route the original.
func (m *Module) pre(c *hook.Ctx, st *hook.Stanza) hook.Verdict {
	sentID := ""
	if m.Archive != nil {
		sentID = m.Archive(c, st)
	}
	sess := c.Session
	if sess == nil || st.Type == "groupchat" {
		return hook.Continue
	}
	self := sess.Local()
	remote := st.Addr == hook.ToRemote // over federation: only <sent/> copies here (remote.go)
	toSelf := !remote && st.Local == self
	copySent := m.table.any(self)
	copyReceived := !remote && !toSelf && m.table.any(st.Local)
	if !copySent && !copyReceived {
		return hook.Continue
	}
	t := classify(st.Tag, st.Raw)
	if !eligible(st, t) {
		return hook.Continue
	}
	var r route
	if !remote {
		r = planRoute(c.Host, st)
	}
	inner := forwarded(st)
	domain := c.Host.Domain()
	if copyReceived && !(t&mucPM != 0 && st.Addr == hook.ToFull) {
		m.copyReceived(c.Host, st, r, inner, domain)
	}
	if copySent {
		if m.Archive != nil && !toSelf {
			// The recipient's stanza ID is for the recipient's
			// devices; the sender's go with the sender's archive's.
			inner = sentInner(inner, st.Bare(), self+"@"+domain, sentID)
		}
		m.copySent(c.Host, sess, st, r, toSelf, inner, self+"@"+domain)
	}
	return hook.Continue
}

// copyReceived sends <received/> copies to the recipient's enabled
// resources that the original does not reach. A message that reaches none
// of them gets no copy: it goes to offline storage (or is refused), and a
// copy now would be a second delivery when it comes back from storage.
// Each copy is checked against the sender's blocklist as a message to
// that resource would be: the original passed blocking for the account,
// but a blocklist may name one resource.
func (m *Module) copyReceived(h hook.Host, st *hook.Stanza, r route, inner []byte, domain string) {
	var targets []hook.Session
	reached := false
	h.Sessions(st.Local, func(o hook.Session) {
		switch {
		case r.gets(o):
			reached = true
		case o.Has(m.enabled):
			targets = append(targets, o)
		}
	})
	if !reached || len(targets) == 0 {
		return
	}
	sender := localOf(st.From)
	// A sender of another domain (remote.go) has no blocklist here.
	local := sender != "" && strings.HasPrefix(st.From[len(sender)+1:], domain) &&
		(len(st.From) == len(sender)+1+len(domain) || st.From[len(sender)+1+len(domain)] == '/')
	c := newCopies("received", st.Local+"@"+domain, st.Type, inner)
	for _, o := range targets {
		if m.Blocker != nil && local {
			if j, err := jid.Parse(o.Full()); err != nil || m.Blocker.Blocks(sender, j) {
				continue
			}
		}
		if o.Deliver(c.to(o.Full())) {
			m.received.Add(1)
		}
	}
}

// copySent sends <sent/> copies to the sender's other enabled resources,
// whether or not the sender enabled carbons itself (§8). For a message to
// the sender's own account, a resource the original reaches gets no copy:
// each resource gets one copy of a message.
func (m *Module) copySent(h hook.Host, sess hook.Session, st *hook.Stanza, r route, toSelf bool, inner []byte, bare string) {
	var c *copies
	from := sess.Full()
	h.Sessions(sess.Local(), func(o hook.Session) {
		if !o.Has(m.enabled) || o.Full() == from || toSelf && r.gets(o) {
			return
		}
		if c == nil {
			c = newCopies("sent", bare, st.Type, inner)
		}
		if o.Deliver(c.to(o.Full())) {
			m.sent.Add(1)
		}
	})
}

// route is where the core will deliver a message to a local account, as
// server/deliver.go does it (RFC 6121 8.5): to the session of a bound
// full JID; a chat or normal message to a full JID that is not bound, as
// to the bare JID; to a bare JID, each available resource with a
// non-negative priority.
type route struct {
	full string // the session addressed, "" for none
	bare bool   // the bare JID rule applies
}

func planRoute(h hook.Host, st *hook.Stanza) route {
	if st.Addr == hook.ToFull {
		if o := h.Session(st.Local, st.Resource); o != nil {
			return route{full: o.Full()}
		}
		switch st.Type {
		case "", "normal", "chat":
			return route{bare: true}
		}
		return route{}
	}
	return route{bare: st.Type != "error"}
}

// gets reports whether o receives the original.
func (r route) gets(o hook.Session) bool {
	if r.full != "" {
		return o.Full() == r.full
	}
	return r.bare && o.Available() && o.Priority() >= 0
}

// forwarded returns the original as it goes in <forwarded/>: stamped with
// the sender's full JID as the core stamps it, and with its namespace
// declared, since inside <forwarded xmlns='urn:xmpp:forward:0'> it would
// otherwise inherit that one (XEP-0297 §3).
func forwarded(st *hook.Stanza) []byte {
	stamped := stanza.WithAttr(st.Tag, st.Raw, "from", st.From)
	if _, ok := st.Tag.Attr("xmlns"); ok {
		return stamped
	}
	name := 1 + len(st.Tag.Local()) // "<message"
	b := make([]byte, 0, len(stamped)+len(nsClient)+10)
	b = append(b, stamped[:name]...)
	b = append(b, ` xmlns='`+nsClient+`'`...)
	return append(b, stamped[name:]...)
}

// NSSID is XEP-0359's namespace, of the <stanza-id/> the archive adds.
const NSSID = "urn:xmpp:sid:0"

// sentInner returns the forwarded message inner of a <sent/> copy
// without the <stanza-id/> by the recipient's bare JID recipient (the
// archive added it; forged ones were removed before), and with the
// sender's (by sender, id sentID) when there is one.
func sentInner(inner []byte, recipient, sender, sentID string) []byte {
	if !bytes.Contains(inner, []byte(NSSID)) && sentID == "" {
		return inner
	}
	out := make([]byte, 0, len(inner)+len(sender)+len(sentID)+48)
	prev := 0
	stanza.Children(inner, func(ch []byte) bool {
		t, err := stanza.ParseStartTag(ch)
		if err != nil || string(t.Local()) != "stanza-id" {
			return true
		}
		ns, _ := t.AttrString("xmlns")
		by, _ := t.AttrString("by")
		if ns == NSSID && by == recipient {
			off := cap(inner) - cap(ch)
			out = append(out, inner[prev:off]...)
			prev = off + len(ch)
		}
		return true
	})
	end := bytes.LastIndex(inner, []byte("</"))
	if sentID == "" || end < prev {
		return append(out, inner[prev:]...)
	}
	out = append(out, inner[prev:end]...)
	out = append(out, `<stanza-id xmlns='`+NSSID+`' by='`...)
	out = stanza.AppendEscaped(out, sender)
	out = append(out, `' id='`...)
	out = stanza.AppendEscaped(out, sentID)
	out = append(out, `'/>`...)
	return append(out, inner[end:]...)
}

// copies builds the wrapping messages of one original, which differ only
// in their to (§7, §8): from the carbons user's bare JID, the original's
// type, <sent/> or <received/> holding <forwarded/> holding the original.
type copies struct {
	head, tail []byte
}

func newCopies(dir, bare, typ string, inner []byte) *copies {
	head := append([]byte(`<message from='`), stanza.AppendEscaped(nil, bare)...)
	head = append(head, `' to='`...)
	tail := make([]byte, 0, len(inner)+len(typ)+128)
	tail = append(tail, '\'')
	if typ != "" {
		tail = append(tail, ` type='`...)
		tail = stanza.AppendEscaped(tail, typ)
		tail = append(tail, '\'')
	}
	tail = append(tail, `><`+dir+` xmlns='`+NS+`'><forwarded xmlns='`+NSForward+`'>`...)
	tail = append(tail, inner...)
	tail = append(tail, `</forwarded></`+dir+`></message>`...)
	return &copies{head: head, tail: tail}
}

// to returns the copy for the full JID full, in a buffer of its own (a
// session's mailbox owns what it is given).
func (c *copies) to(full string) []byte {
	b := make([]byte, 0, len(c.head)+len(full)+len(c.tail)+8)
	b = append(b, c.head...)
	b = stanza.AppendEscaped(b, full)
	return append(b, c.tail...)
}

// localOf returns the localpart of a normalised JID string ("" for
// none): a localpart holds neither '@' nor '/'.
func localOf(s string) string {
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '@':
			return s[:i]
		case '/':
			return ""
		}
	}
	return ""
}

// table counts the carbons-enabled sessions of each account, so that a
// message between accounts that use no carbons is let through after one
// lookup per account. It is sharded by localpart: every loop reads it for
// every message.
type table struct {
	seed   maphash.Seed
	shards [32]shard
}

type shard struct {
	mu sync.RWMutex
	m  map[string]int32
}

func newTable() *table {
	t := &table{seed: maphash.MakeSeed()}
	for i := range t.shards {
		t.shards[i].m = make(map[string]int32)
	}
	return t
}

func (t *table) shard(local string) *shard {
	return &t.shards[maphash.String(t.seed, local)%uint64(len(t.shards))]
}

// add changes local's count by d, dropping the entry at zero.
func (t *table) add(local string, d int32) {
	sh := t.shard(local)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if n := sh.m[local] + d; n > 0 {
		sh.m[local] = n
	} else {
		delete(sh.m, local)
	}
}

// any reports whether local has a session with carbons enabled.
func (t *table) any(local string) bool {
	if local == "" {
		return false
	}
	sh := t.shard(local)
	sh.mu.RLock()
	n := sh.m[local]
	sh.mu.RUnlock()
	return n > 0
}
