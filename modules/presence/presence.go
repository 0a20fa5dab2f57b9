// Package presence implements presence for local accounts (RFC 6121
// section 4): an available or unavailable presence without a to is
// broadcast to the user's own resources (4.2.2, 4.5.2) and to contacts
// with a subscription from the user (4.4.2); the first available presence
// of a session (initial presence, 4.2) also brings it its contacts'
// current presence, as the answer to the probes the server sends on its
// behalf (4.3); presence sent to a JID (directed presence, 4.6) is
// remembered so that its recipients learn when the session goes away
// (4.6.3); and a session that ends while available is announced
// unavailable to everyone who saw it (4.5.1, 4.6.3).
//
// A session keeps only its last presence in wire form (Session.Presence)
// and its directed-presence recipients (a slot); who receives a broadcast
// is read from the roster in storage, on a worker, when presence changes,
// so an idle session holds no roster.
package presence

import (
	"bytes"
	"context"
	"errors"
	"slices"
	"strconv"
	"strings"

	"go.uber.org/zap"
	"mellium.im/xmpp/jid"

	"github.com/krill-xmpp/krill/hook"
	"github.com/krill-xmpp/krill/stanza"
	"github.com/krill-xmpp/krill/storage"
)

// MaxDirected is the most directed-presence recipients a session tracks.
// An available presence to one more recipient is refused with
// policy-violation (type modify) and not delivered: a recipient the
// session could not track would never learn that it went away. Sending
// unavailable presence to a recipient frees its place.
const MaxDirected = 64

// Store reads rosters; storage.SQL implements it.
type Store interface {
	Roster(ctx context.Context, user string) ([]storage.RosterItem, uint64, error)
}

// Blocker tells whether an account blocks a JID (XEP-0191): no presence
// goes to or comes from a blocked entity. It answers from memory for
// accounts with bound sessions and must be safe for use from any
// goroutine; modules/blocking implements it.
type Blocker interface {
	// Blocks reports whether the account owner (a localpart) blocks j.
	Blocks(owner string, j jid.JID) bool
}

// Module broadcasts presence. Store must be set; Blocker may be nil
// (nobody blocks anybody). Use it by pointer.
type Module struct {
	Store   Store
	Blocker Blocker

	// directed is the slot of a session's *recipients.
	directed hook.Slot
}

// recipients are a session's directed-presence recipients, normalised
// JIDs of local accounts and of other servers' entities, at most
// MaxDirected.
type recipients struct{ jids []string }

// Name implements hook.Module.
func (*Module) Name() string { return "presence" }

// Register implements hook.Module.
func (m *Module) Register(r *hook.Registrar) error {
	if m.Store == nil {
		return errors.New("presence: Store must be set")
	}
	m.directed = r.Slot()
	r.Stanza(hook.Presence, hook.ToLocal|hook.ToRemote, hook.Pre, m.presence)
	r.On(hook.Unavailable, m.gone)
	r.On(hook.Closed, m.closed)
	return nil
}

// presence handles a presence stanza from a bound session. Subscription
// types are the roster module's.
func (m *Module) presence(c *hook.Ctx, st *hook.Stanza) hook.Verdict {
	switch st.Type {
	case "", "unavailable", "error":
	case "subscribe", "subscribed", "unsubscribe", "unsubscribed":
		return hook.Continue
	case "probe":
		return hook.Stop // the server probes on the client's behalf (4.3)
	default:
		c.Reply(stanza.AppendError(c.Scratch(), "presence", st.ID, "", st.From, "modify", "bad-request", "unknown presence type"))
		return hook.Stop
	}
	switch st.Addr {
	case hook.ToNone:
		if st.Type != "error" {
			m.broadcast(c, st)
		}
		return hook.Stop
	case hook.ToHost:
		return hook.Stop // presence to the server itself is dropped
	case hook.ToBare, hook.ToFull:
	case hook.ToRemote:
		if m.hosted(c, st.Domain) {
			// A room of this server's own MUC service: it takes the
			// session out when it ends (its sessionGone).
			return hook.Continue
		}
		// Another server's entity (a room there, say): remembered, so
		// that it hears of the session's end (4.6.3).
	default:
		return hook.Continue
	}
	if st.Type == "error" {
		return hook.Continue
	}
	return m.direct(c, st)
}

// direct remembers (available) or forgets (unavailable) the recipient of a
// directed presence (4.6); the core delivers it.
func (m *Module) direct(c *hook.Ctx, st *hook.Stanza) hook.Verdict {
	to := st.Local + "@" + st.Domain
	if st.Resource != "" {
		to += "/" + st.Resource
	}
	r, _ := c.Session.Slot(m.directed).(*recipients)
	i := -1
	if r != nil {
		i = slices.Index(r.jids, to)
	}
	switch {
	case st.Type == "unavailable":
		if i >= 0 {
			r.jids = slices.Delete(r.jids, i, i+1)
		}
	case i >= 0:
	case r != nil && len(r.jids) >= MaxDirected:
		c.Reply(stanza.AppendError(c.Scratch(), "presence", st.ID, "", st.From, "modify", "policy-violation",
			"too many directed-presence recipients ("+strconv.Itoa(MaxDirected)+")"))
		return hook.Stop
	default:
		if r == nil {
			r = &recipients{}
			c.Session.SetSlot(m.directed, r)
		}
		r.jids = append(r.jids, to)
	}
	return hook.Continue
}

// take removes and returns the session's directed-presence recipients.
func (m *Module) take(s hook.Session) []string {
	r, _ := s.Slot(m.directed).(*recipients)
	if r == nil {
		return nil
	}
	s.SetSlot(m.directed, nil)
	return r.jids
}

// broadcast handles available and unavailable presence without a to. The
// broadcast (and for an initial presence the probes) is queued before the
// session's presence changes, so that it runs before what other modules
// queue when the session becomes available (pending subscription
// requests, offline messages): jobs of one connection run in order, and
// the client sees its own presence, then its contacts', then the rest.
func (m *Module) broadcast(c *hook.Ctx, st *hook.Stanza) {
	sess := c.Session
	stamped := stanza.WithAttr(st.Tag, st.Raw, "from", st.From)
	var directed []string
	initial := false
	prio := 0
	if st.Type == "unavailable" {
		if !sess.Available() {
			return
		}
		directed = m.take(sess)
	} else {
		initial = !sess.Available()
		prio = priority(st.Raw)
	}
	host, log := c.Host, c.Log
	c.Conn.Async(func(ctx context.Context) func(*hook.Ctx) {
		// One roster read serves the broadcast and the probes: they run
		// in the same job, and a login reads the roster once less.
		items, _, err := m.Store.Roster(ctx, sess.Local())
		if err != nil {
			log.Error("roster read for presence failed", zap.String("user", sess.Local()), zap.Error(err))
		}
		m.fanOut(host, sess, stamped, directed, items)
		if initial {
			m.probe(host, sess, items)
		}
		return nil
	}, func(*hook.Ctx) {
		log.Warn("presence not broadcast: worker queue full", zap.String("jid", sess.Full()))
	})
	if st.Type == "unavailable" {
		sess.SetPresence(c, nil, 0)
	} else {
		sess.SetPresence(c, stamped, prio)
	}
}

// gone announces a session that ended while available (4.5.1, 4.6.3).
// When the session itself sent unavailable presence (c.Conn set), the
// broadcast already went out.
func (m *Module) gone(c *hook.Ctx, _ hook.Event) hook.Verdict {
	if c.Conn != nil {
		return hook.Continue
	}
	sess, host, log := c.Session, c.Host, c.Log
	directed := m.take(sess)
	b := stanza.AppendPresence(nil, "unavailable", sess.Full(), "")
	if !host.Go(func(ctx context.Context) {
		items, _, err := m.Store.Roster(ctx, sess.Local())
		if err != nil {
			log.Error("roster read for presence failed", zap.String("user", sess.Local()), zap.Error(err))
		}
		m.fanOut(host, sess, b, directed, items)
	}) {
		log.Warn("unavailable presence not broadcast: worker queue full", zap.String("jid", sess.Full()))
	}
	return hook.Continue
}

// closed tells the directed-presence recipients at other servers of a
// session that ends without having been available (a client that only
// joined rooms there) that it is gone (4.6.3): nothing else would tell a
// remote room. gone has announced an available one and taken its
// recipients.
func (m *Module) closed(c *hook.Ctx, _ hook.Event) hook.Verdict {
	for _, d := range m.take(c.Session) {
		if domainOf(d) != c.Host.Domain() {
			c.Host.Deliver(d, stanza.AppendPresence(nil, "unavailable", c.Session.Full(), d))
		}
	}
	return hook.Continue
}

// domainOf returns the domain of a normalised JID.
func domainOf(j string) string {
	if i := indexByte(j, '/'); i >= 0 {
		j = j[:i]
	}
	if i := indexByte(j, '@'); i >= 0 {
		j = j[i+1:]
	}
	return j
}

// fanOut delivers a presence of sess (stamped, without a to): to its own
// resources, itself included, that are available (4.2.2); to the contacts
// with a subscription from the user (4.4.2); and to the directed-presence
// recipients that are not among them (4.6.3). items is the user's
// roster, nil when it could not be read. Runs on a worker.
func (m *Module) fanOut(host hook.Host, sess hook.Session, stamped []byte, directed []string, items []storage.RosterItem) {
	user, full := sess.Local(), sess.Full()
	host.Sessions(user, func(o hook.Session) {
		if o.Full() == full || o.Available() {
			o.Deliver(slices.Clone(stamped))
		}
	})
	tag, err := stanza.ParseStartTag(stamped)
	if err != nil {
		return
	}
	sender, _ := jid.Parse(full)
	domain := host.Domain()
	for _, it := range items {
		if !hasFrom(it.Subscription) {
			continue
		}
		directed = slices.DeleteFunc(directed, func(d string) bool { return d == it.Contact })
		local, ok := localOf(it.Contact, domain)
		if ok && m.blocked(user, local, it.Contact, sender) {
			continue
		}
		if !ok && m.blockedRemote(user, it.Contact) {
			continue
		}
		// A contact of another domain gets it over federation.
		host.Deliver(it.Contact, stanza.WithAttr(tag, stamped, "to", it.Contact))
	}
	for _, d := range directed {
		host.Deliver(d, stanza.WithAttr(tag, stamped, "to", d))
	}
}

// probe sends a session that has just become available the presence of
// the account's other available resources, then its contacts' current
// presence: what probes of the contacts with a subscription to the user
// would bring back (4.3.2). items is the user's roster. Runs on a worker.
func (m *Module) probe(host hook.Host, sess hook.Session, items []storage.RosterItem) {
	user, full := sess.Local(), sess.Full()
	// The new resource learns of the others as they learn of it (4.2.2
	// broadcasts its presence to them), as Prosody's mod_presence does.
	host.Sessions(user, func(o hook.Session) { sendLast(sess, o, full) })
	me, _ := jid.Parse(full)
	domain := host.Domain()
	for _, it := range items {
		if !hasTo(it.Subscription) {
			continue
		}
		local, ok := localOf(it.Contact, domain)
		if !ok {
			m.probeRemote(host, user, it.Contact) // remote.go
			continue
		}
		if m.blocked(user, local, it.Contact, me) {
			continue
		}
		host.Sessions(local, func(o hook.Session) { sendLast(sess, o, full) })
	}
}

// sendLast delivers to sess (whose full JID is full) the last broadcast
// presence of o, if o is another session and available.
func sendLast(sess, o hook.Session, full string) {
	if o.Full() == full {
		return
	}
	last := o.Presence()
	if last == nil {
		return
	}
	tag, err := stanza.ParseStartTag(last)
	if err != nil {
		return
	}
	sess.Deliver(stanza.WithAttr(tag, last, "to", full))
}

// blocked reports whether presence between user (whose session's full JID
// is j) and contact (local, bare) is cut by XEP-0191 either way.
func (m *Module) blocked(user, local, contact string, j jid.JID) bool {
	if m.Blocker == nil {
		return false
	}
	cj, err := jid.Parse(contact)
	if err != nil {
		return true
	}
	return m.Blocker.Blocks(user, cj) || m.Blocker.Blocks(local, j)
}

func hasTo(s storage.Subscription) bool   { return s == storage.SubTo || s == storage.SubBoth }
func hasFrom(s storage.Subscription) bool { return s == storage.SubFrom || s == storage.SubBoth }

// localOf returns the localpart of a normalised bare JID of domain.
func localOf(bare, domain string) (string, bool) {
	i := strings.IndexByte(bare, '@')
	if i <= 0 || bare[i+1:] != domain {
		return "", false
	}
	return bare[:i], true
}

// priority reads <priority/> of an available presence (4.7.2.3): an
// integer from -128 to 127, 0 when absent or invalid.
func priority(raw []byte) int {
	inner := stanza.Inner(raw)
	i := bytes.Index(inner, []byte("<priority>"))
	if i < 0 {
		return 0
	}
	inner = inner[i+len("<priority>"):]
	j := bytes.Index(inner, []byte("</priority>"))
	if j < 0 {
		return 0
	}
	n, err := strconv.Atoi(string(bytes.TrimSpace(inner[:j])))
	if err != nil || n < -128 || n > 127 {
		return 0
	}
	return n
}

// hosted reports whether domain is one of this server's own services
// (muc.domain, upload.domain), whose presence needs no tracking here.
func (m *Module) hosted(c *hook.Ctx, domain string) bool {
	cfg := c.Host.Config()
	return domain == cfg.MUCDomain() || domain == cfg.UploadDomain()
}
