// Package blocking implements XEP-0191 Blocking Command: an account keeps
// a list of JIDs it exchanges no stanzas with.
//
// The blocklist of an account with sessions is kept in memory from its
// first session's authentication to its last session's end, so that
// routing checks it with a few map lookups and no storage read; accounts
// with no session are checked in storage (BlocksStored) by the modules
// that act for them, offline storage say. A list holds at most
// im.max_blocklist_items JIDs.
package blocking

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"slices"
	"strconv"

	"go.uber.org/zap"
	"mellium.im/xmpp/jid"

	"github.com/krill-xmpp/krill/hook"
	"github.com/krill-xmpp/krill/stanza"
)

// Namespaces of XEP-0191.
const (
	// NS is the namespace of the protocol and its disco feature.
	NS = "urn:xmpp:blocking"
	// NSErrors is the namespace of the <blocked/> error condition.
	NSErrors = "urn:xmpp:blocking:errors"
)

// blockedApp is the application condition of an error to a stanza sent to
// a JID the sender blocks (XEP-0191 §3.5).
const blockedApp = `<blocked xmlns='` + NSErrors + `'/>`

// pushID is the id of blocklist pushes (§3.3, §3.4).
const pushID = "block-push"

// Store keeps blocklists; storage.SQL implements it.
type Store interface {
	// Blocklist returns the JIDs user blocks, sorted byte-wise.
	Blocklist(ctx context.Context, user string) ([]string, error)
	// Block adds jids to user's blocklist.
	Block(ctx context.Context, user string, jids []string) error
	// Unblock removes jids from user's blocklist; none removes all.
	Unblock(ctx context.Context, user string, jids []string) error
}

// Module is XEP-0191. Build it with New: it owns the blocklists of
// accounts with sessions.
type Module struct {
	store Store
	table *table
	// interested marks sessions that asked for the blocklist: they get
	// its pushes.
	interested hook.Flag
}

// New returns the module over store.
func New(store Store) *Module {
	return &Module{store: store, table: newTable()}
}

// Name implements hook.Module.
func (*Module) Name() string { return "blocking" }

// Register implements hook.Module.
func (m *Module) Register(r *hook.Registrar) error {
	m.interested = r.Flag()
	r.IQ(hook.PhaseBound, hook.IQGet, hook.ToAccount, NS, "blocklist", m.handleGet)
	r.IQ(hook.PhaseBound, hook.IQSet, hook.ToAccount, NS, "block", m.handleSet)
	r.IQ(hook.PhaseBound, hook.IQSet, hook.ToAccount, NS, "unblock", m.handleSet)
	// The other combinations are malformed requests of this protocol
	// rather than unknown ones (§3.1: a blocklist is got, a block set).
	r.IQ(hook.PhaseBound, hook.IQSet, hook.ToAccount, NS, "blocklist", badRequest)
	r.IQ(hook.PhaseBound, hook.IQGet, hook.ToAccount, NS, "block", badRequest)
	r.IQ(hook.PhaseBound, hook.IQGet, hook.ToAccount, NS, "unblock", badRequest)
	for _, k := range []hook.Kind{hook.Message, hook.Presence, hook.IQ} {
		r.Stanza(k, hook.ToBare|hook.ToFull, hook.Pre, m.pre)
	}
	r.On(hook.Authenticated, m.authenticated)
	r.On(hook.Closed, m.closed)
	r.DiscoFeature(NS)
	return nil
}

// maxItems is the blocklist cap in force (im.max_blocklist_items; 0: no
// cap).
func maxItems(c *hook.Ctx) int {
	if n := c.Host.Config().IM.MaxBlocklistItems; n > 0 {
		return n
	}
	return math.MaxInt32 // the stanza size limit still bounds a request
}

// Blocks reports whether owner, an account with a session, blocks j. It
// reads memory only: for an account with no session it reports false (use
// BlocksStored). Safe for concurrent use.
func (m *Module) Blocks(owner string, j jid.JID) bool {
	return m.table.get(owner).blocks(j.Localpart(), j.Domainpart(), j.Resourcepart())
}

// BlocksStored reports whether owner blocks j according to storage, for
// accounts with no session. It runs on a worker.
func (m *Module) BlocksStored(ctx context.Context, owner string, j jid.JID) (bool, error) {
	sorted, err := m.store.Blocklist(ctx, owner)
	if err != nil {
		return false, fmt.Errorf("blocking: blocklist of %q: %w", owner, err)
	}
	return sortedBlocks(sorted, j), nil
}

// authenticated loads the account's blocklist before the session can bind:
// input is paused while the job runs, so XEP-0191 applies from the
// session's first stanza.
func (m *Module) authenticated(c *hook.Ctx, _ hook.Event) hook.Verdict {
	local := c.Session.Local()
	if !m.table.acquire(local) || c.Conn == nil {
		return hook.Continue
	}
	store, log := m.store, c.Log
	c.Conn.Async(func(ctx context.Context) func(*hook.Ctx) {
		jids, err := store.Blocklist(ctx, local)
		if err != nil {
			log.Error("blocklist read failed", zap.String("user", local), zap.Error(err))
			return func(c *hook.Ctx) {
				if c.Conn != nil {
					c.Conn.Fail("internal-server-error", "the blocklist could not be read")
				}
			}
		}
		return func(*hook.Ctx) { m.table.loaded(local, jids) }
	}, func(c *hook.Ctx) {
		// Without its blocklist the session would reach blocked
		// contacts: it may not go on.
		c.Conn.Fail("resource-constraint", "the server is busy")
	})
	return hook.Continue
}

// closed drops the account's blocklist with its last session.
func (m *Module) closed(c *hook.Ctx, _ hook.Event) hook.Verdict {
	if c.Session != nil {
		m.table.release(c.Session.Local())
	}
	return hook.Continue
}

// pre applies XEP-0191 §3.5 to a stanza for a local account: to a JID the
// sender blocks, the sender gets not-acceptable with <blocked/>; from a
// JID the recipient blocks, presence is dropped and the rest gets
// service-unavailable, as if the recipient did not exist.
func (m *Module) pre(c *hook.Ctx, st *hook.Stanza) hook.Verdict {
	if c.Session == nil {
		return hook.Continue
	}
	if m.table.get(c.Session.Local()).blocks(st.Local, st.Domain, st.Resource) {
		if st.IsRequest() {
			c.Reply(stanza.AppendErrorApp(c.Scratch(), st.Kind.String(), st.ID, st.To, st.From,
				"cancel", "not-acceptable", "", blockedApp))
		}
		return hook.Stop
	}
	if l := m.table.get(st.Local); l != nil {
		if fl, fd, fr := splitFull(st.From); l.blocks(fl, fd, fr) {
			if st.IsRequest() {
				c.ReplyError("cancel", "service-unavailable", "")
			}
			return hook.Stop
		}
	}
	return hook.Continue
}

func badRequest(c *hook.Ctx, _ *hook.Stanza) error {
	c.ReplyError("modify", "bad-request", "")
	return nil
}

// own reports whether the request is for the sender's own account, and
// answers forbidden when not.
func own(c *hook.Ctx, st *hook.Stanza) bool {
	if st.Addr == hook.ToBare && st.Local != c.Session.Local() {
		c.ReplyError("auth", "forbidden", "")
		return false
	}
	return true
}

// handleGet answers a blocklist request (§3.2); the session gets pushes
// from now on.
func (m *Module) handleGet(c *hook.Ctx, st *hook.Stanza) error {
	if !own(c, st) {
		return nil
	}
	sess := c.Session
	sess.Set(m.interested, true)
	local, store := sess.Local(), m.store
	c.Conn.Async(func(ctx context.Context) func(*hook.Ctx) {
		jids, err := store.Blocklist(ctx, local)
		if err != nil {
			return func(c *hook.Ctx) { c.ReplyError("wait", "internal-server-error", "") }
		}
		b := append([]byte(`<blocklist xmlns='`+NS+`'>`), appendItems(nil, jids)...)
		b = append(b, `</blocklist>`...)
		return func(c *hook.Ctx) { c.ReplyResult(b) }
	}, nil)
	return nil
}

// handleSet blocks or unblocks JIDs (§3.3, §3.4).
func (m *Module) handleSet(c *hook.Ctx, st *hook.Stanza) error {
	if !own(c, st) {
		return nil
	}
	max := maxItems(c)
	jids, cond, text := parseItems(st.Payload, max)
	block := st.Name == "block"
	if cond == "" && block && len(jids) == 0 {
		cond, text = "bad-request", "a block names at least one JID"
	}
	if cond != "" {
		c.ReplyError("modify", cond, text)
		return nil
	}
	local, store, host, interested := c.Session.Local(), m.store, c.Host, m.interested
	log, op := c.Log, st.Name // st is valid only during this call
	c.Conn.Async(func(ctx context.Context) func(*hook.Ctx) {
		fail := func(err error) func(*hook.Ctx) {
			log.Error("blocklist change failed", zap.String("user", local), zap.Error(err))
			return func(c *hook.Ctx) { c.ReplyError("wait", "internal-server-error", "") }
		}
		var err error
		if block {
			var cur []string
			if cur, err = store.Blocklist(ctx, local); err != nil {
				return fail(err)
			}
			if n := unionLen(cur, jids); n > max {
				text := "a blocklist holds at most " + strconv.Itoa(max) + " JIDs"
				return func(c *hook.Ctx) { c.ReplyError("modify", "policy-violation", text) }
			}
			err = store.Block(ctx, local, jids)
		} else {
			err = store.Unblock(ctx, local, jids)
		}
		if err != nil {
			return fail(err)
		}
		list, err := store.Blocklist(ctx, local)
		if err != nil {
			return fail(err)
		}
		m.table.set(local, list)
		push := append([]byte(`<`+op+` xmlns='`+NS+`'>`), appendItems(nil, jids)...)
		push = append(push, `</`+op+`>`...)
		host.Sessions(local, func(o hook.Session) {
			if o.Has(interested) {
				o.Deliver(stanza.AppendIQ(nil, "set", pushID, "", o.Full(), push))
			}
		})
		if block {
			unavailableTo(host, local, jids)
		}
		return func(c *hook.Ctx) { c.ReplyResult(nil) }
	}, nil)
	return nil
}

// unavailableTo has the blocked local JIDs see local's available sessions
// go unavailable (§3.3).
func unavailableTo(host hook.Host, local string, jids []string) {
	domain := host.Domain()
	for _, j := range jids {
		jl, jd, _ := splitFull(j)
		if jd != domain || jl == "" {
			continue
		}
		host.Sessions(local, func(o hook.Session) {
			if o.Available() {
				host.Deliver(j, stanza.AppendPresence(nil, "unavailable", o.Full(), j))
			}
		})
	}
}

// unionLen returns how many JIDs cur (sorted) and add hold together.
func unionLen(cur, add []string) int {
	n := len(cur)
	seen := make(map[string]struct{}, len(add))
	for _, j := range add {
		if _, dup := seen[j]; dup {
			continue
		}
		seen[j] = struct{}{}
		if _, found := slices.BinarySearch(cur, j); !found {
			n++
		}
	}
	return n
}

func appendItems(b []byte, jids []string) []byte {
	for _, j := range jids {
		b = append(b, `<item jid='`...)
		b = stanza.AppendEscaped(b, j)
		b = append(b, `'/>`...)
	}
	return b
}

// parseItems returns the normalised JIDs of the <item/> children of a
// block or unblock element, or the condition and text to refuse it with.
// Its work is linear in the payload, and it counts the items before
// parsing any JID, refusing more than max: the payload may be as large as
// a stanza, and this runs on the event loop.
func parseItems(payload []byte, max int) (jids []string, cond, text string) {
	in := stanza.Inner(payload)
	n := 0
	ok := eachItem(in, func(stanza.StartTag) bool { n++; return n <= max })
	switch {
	case !ok:
		return nil, "bad-request", ""
	case n > max:
		return nil, "bad-request", "at most " + strconv.Itoa(max) + " items per request"
	case n == 0:
		return nil, "", ""
	}
	jids = make([]string, 0, n)
	eachItem(in, func(tag stanza.StartTag) bool {
		v, _ := tag.AttrString("jid")
		j, err := jid.Parse(v)
		if err != nil {
			cond = "jid-malformed"
			return false
		}
		jids = append(jids, j.String())
		return true
	})
	if cond != "" {
		return nil, cond, ""
	}
	return jids, "", ""
}

// eachItem calls fn with the start tag of each <item> child in in (the
// content of an element the framer checked for well-formedness) until fn
// returns false. It reports false for markup it cannot read.
func eachItem(in []byte, fn func(stanza.StartTag) bool) bool {
	depth := 0
	for i := 0; i < len(in); {
		k := bytes.IndexByte(in[i:], '<')
		if k < 0 {
			return true
		}
		i += k
		if i+1 < len(in) && in[i+1] == '/' {
			depth--
			i += 2
			continue
		}
		tag, err := stanza.ParseStartTag(in[i:])
		if err != nil {
			return false // a CDATA section, say: not in a blocking payload
		}
		i += tag.Len()
		if depth == 0 && string(tag.Local()) == "item" && !fn(tag) {
			return true
		}
		if !tag.SelfClosing() {
			depth++
		}
	}
	return true
}
