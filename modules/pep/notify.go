package pep

import (
	"bytes"
	"context"
	"slices"
	"strings"
	"sync/atomic"

	"go.uber.org/zap"
	"mellium.im/xmpp/jid"

	"github.com/krill-xmpp/krill/hook"
	"github.com/krill-xmpp/krill/stanza"
	"github.com/krill-xmpp/krill/storage"
)

// msgID numbers notifications.
var msgID atomic.Uint64

// appendMessage appends a notification: a headline from the owner's bare
// JID (XEP-0163 4.3.1) to a full JID, carrying event.
func appendMessage(b []byte, from, to string, event []byte) []byte {
	b = append(b, `<message from='`...)
	b = stanza.AppendEscaped(b, from)
	b = append(b, `' to='`...)
	b = stanza.AppendEscaped(b, to)
	b = append(b, `' type='headline' id='pep-`...)
	b = append(b, itoa(msgID.Add(1))...)
	b = append(b, `'>`...)
	b = append(b, event...)
	return append(b, `</message>`...)
}

// notify sends event (about node of owner, of access model access) to the
// owner's available resources and to the available resources of the
// contacts with a presence subscription to the owner that the model
// allows, each only if its caps ask for node+notify (XEP-0163 4.2, 4.3);
// then to the explicit subscribers the model still allows, whatever their
// caps, once per session. Runs on a worker.
func (m *Module) notify(ctx context.Context, host hook.Host, owner, node string, cfg storage.PEPConfig, event []byte) int {
	access := cfg.Access
	from := owner + "@" + host.Domain()
	subs, err := m.Store.PEPSubscribers(ctx, owner, node)
	if err != nil {
		host.Logger().Error("pep subscribers read failed", zap.String("user", owner), zap.Error(err))
	}
	// Sessions notified, kept only when explicit subscribers may repeat
	// them.
	var done []hook.Session
	var remoteDone []string // remote resources notified by their caps
	sent := 0
	deliver := func(s hook.Session) {
		if s.Deliver(appendMessage(nil, from, s.Full(), event)) {
			sent++
			if len(subs) > 0 {
				done = append(done, s)
			}
		}
	}
	host.Sessions(owner, func(s hook.Session) {
		if s.Available() && m.caps.wants(s, node) {
			deliver(s)
		}
	})
	var items []storage.RosterItem
	if access != AccessWhitelist || len(subs) > 0 {
		if items, _, err = m.Store.Roster(ctx, owner); err != nil {
			host.Logger().Error("roster read for pep failed", zap.String("user", owner), zap.Error(err))
			return sent
		}
	}
	domain := host.Domain()
	if access != AccessWhitelist {
		for _, it := range items {
			if _, ok := allowed(cfg, it, true); !ok || it.Subscription != storage.SubFrom && it.Subscription != storage.SubBoth {
				continue
			}
			local, ok := localOf(it.Contact, domain)
			if !ok {
				// A contact at another server: its resources whose
				// caps (from their presence over federation) ask.
				for _, r := range m.caps.remotesWanting(it.Contact, node) {
					if !m.blocked(owner, it.Contact) && host.Deliver(string(r), appendMessage(nil, from, string(r), event)) > 0 {
						sent++
						if len(subs) > 0 {
							remoteDone = append(remoteDone, string(r))
						}
					}
				}
				continue
			}
			if local == owner {
				continue
			}
			// The blocklist is asked only about contacts with a
			// resource that wants the notification: parsing a JID is
			// the dearest step of the loop.
			checked, blocked := false, false
			host.Sessions(local, func(s hook.Session) {
				if !s.Available() || !m.caps.wants(s, node) {
					return
				}
				if !checked {
					checked, blocked = true, m.blocked(owner, it.Contact)
				}
				if !blocked {
					deliver(s)
				}
			})
		}
	}
	for _, sub := range subs {
		bare, _, _ := strings.Cut(sub, "/")
		if bare != from && !m.subscriberAllowed(cfg, bare, items) || m.blocked(owner, bare) {
			continue
		}
		if _, ok := localOf(bare, domain); !ok {
			// At another server: once, to the JID subscribed, unless
			// its resource was notified by its caps above.
			if slices.Contains(remoteDone, sub) || host.Deliver(sub, appendMessage(nil, from, sub, event)) > 0 {
				sent++
			}
			continue
		}
		m.toSubscriber(host, sub, func(s hook.Session) {
			if !slices.Contains(done, s) {
				deliver(s)
			}
		})
	}
	return sent
}

// recipient is whom last items go to: a local session, or a resource at
// another server (remoteTarget).
type recipient interface {
	Full() string
	Deliver(b []byte) bool
}

// remoteTarget is a resource at another server as a recipient.
type remoteTarget struct {
	host hook.Host
	to   remote
}

func (r remoteTarget) Full() string          { return string(r.to) }
func (r remoteTarget) Deliver(b []byte) bool { return r.host.Deliver(string(r.to), b) > 0 }

// InboundStanza implements hook.Inbound: the caps of contacts at other
// servers come in their presence over federation, and the answers to the
// disco#info queries about unknown hashes come back the same way. A remote
// resource that becomes available with caps asking for some nodes gets
// the last items of the local account its presence is addressed to, as a
// local one does (XEP-0163 4.3.4).
func (m *Module) InboundStanza(c *hook.Ctx, st *hook.Stanza) hook.Verdict {
	switch st.Kind {
	case hook.IQ:
		if st.Addr == hook.ToHost && st.Resource == "" {
			return m.capsResult(c, st)
		}
	case hook.Presence:
		m.remotePresence(c, st)
	}
	return hook.Continue
}

// remotePresence follows the caps of a remote resource: available with
// caps to an account (a broadcast reaches each local contact) records
// them, asking the resource about an unknown hash; unavailable, or a
// broadcast without caps, forgets them.
func (m *Module) remotePresence(c *hook.Ctx, st *hook.Stanza) {
	if st.Local == "" || strings.IndexByte(st.From, '/') < 0 {
		return
	}
	r := remote(st.From)
	switch st.Type {
	case "":
	case "unavailable":
		m.caps.forget(r)
		return
	default:
		return
	}
	node, ver, algo, ok := parseCaps(st.Raw)
	if !ok {
		if st.Addr == hook.ToBare {
			m.caps.forget(r)
		}
		return
	}
	host := c.Host
	id, query, _ := m.caps.seen(r, node, ver, algo)
	if id != "" {
		b := append([]byte(`<query xmlns='`+nsDiscoInfo+`' node='`), stanza.AppendEscaped(nil, query)...)
		b = append(b, `'/>`...)
		host.Deliver(st.From, stanza.AppendIQ(nil, "get", id, host.Domain(), st.From, b))
	}
	if first, pending := m.caps.serve(r, st.Local); first && !pending {
		m.remoteLast(host, r, st.Local)
	}
}

// remoteLast sends remote resource r the last items of owner's nodes its
// caps ask for, if r's account has a subscription to owner's presence the
// nodes' access models allow. Detached, on a worker.
func (m *Module) remoteLast(host hook.Host, r remote, owner string) {
	wanted := m.caps.notifyNodes(r)
	if len(wanted) == 0 {
		return
	}
	host.Go(func(ctx context.Context) {
		items, _, err := m.Store.Roster(ctx, owner)
		if err != nil {
			host.Logger().Error("roster read for pep failed", zap.String("user", owner), zap.Error(err))
			return
		}
		bare := r.bare()
		for _, it := range items {
			if it.Contact == bare && (it.Subscription == storage.SubFrom || it.Subscription == storage.SubBoth) && !m.blocked(owner, bare) {
				m.sendLastOf(ctx, host, owner, remoteTarget{host, r}, wanted, false, SendOnSubPresence)
				return
			}
		}
	})
}

// inOwnerGroups reports whether contact (a bare JID) is in one of the
// roster groups a node of owner admits.
func (m *Module) inOwnerGroups(ctx context.Context, owner, contact string, c storage.PEPConfig) bool {
	items, _, err := m.Store.Roster(ctx, owner)
	if err != nil {
		return false
	}
	for _, it := range items {
		if it.Contact == contact {
			_, ok := allowed(c, it, true)
			return ok
		}
	}
	return false
}

// subscriberAllowed reports whether the access model still lets an
// explicit subscriber (a bare JID) read, from the owner's roster items.
func (m *Module) subscriberAllowed(cfg storage.PEPConfig, bare string, items []storage.RosterItem) bool {
	for _, it := range items {
		if it.Contact == bare {
			_, ok := allowed(cfg, it, true)
			return ok
		}
	}
	_, ok := allowed(cfg, storage.RosterItem{}, false)
	return ok
}

// blocked reports whether owner blocks contact (a bare JID).
func (m *Module) blocked(owner, contact string) bool {
	if m.Blocker == nil {
		return false
	}
	j, err := jid.Parse(contact)
	return err != nil || m.Blocker.Blocks(owner, j)
}

// localOf returns the localpart of a normalised bare JID of domain.
func localOf(bare, domain string) (string, bool) {
	i := strings.IndexByte(bare, '@')
	if i <= 0 || bare[i+1:] != domain {
		return "", false
	}
	return bare[:i], true
}

// presence reads the caps of an available presence, broadcast or directed
// (XEP-0115), asks the client for an unknown hash, and sends the last
// items when a session already available announces new caps. It never consumes the
// presence: the presence module broadcasts it.
func (m *Module) presence(c *hook.Ctx, st *hook.Stanza) hook.Verdict {
	if st.Type != "" {
		return hook.Continue
	}
	if m.host.Load() == nil {
		m.host.Store(&hostRef{c.Host})
	}
	sess := c.Session
	node, ver, algo, ok := parseCaps(st.Raw)
	if !ok {
		// A broadcast without caps withdraws them; a directed presence
		// (a MUC join, say) without caps says nothing about them.
		if st.Addr == hook.ToNone {
			m.caps.forget(sess)
		}
		return hook.Continue
	}
	id, query, changed := m.caps.seen(sess, node, ver, algo)
	if id != "" {
		b := append([]byte(`<query xmlns='`+nsDiscoInfo+`' node='`), stanza.AppendEscaped(nil, query)...)
		b = append(b, `'/>`...)
		q := stanza.AppendIQ(nil, "get", id, c.Host.Domain(), sess.Full(), b)
		// Written at once, so that the client sees the query before the
		// echo of its presence, which the presence module sends from a
		// worker.
		if c.Conn != nil {
			c.Conn.Write(q)
		} else {
			sess.Deliver(q)
		}
	}
	if changed && sess.Available() && id == "" {
		m.sendLast(c, sess)
	}
	return hook.Continue
}

// capsResult takes the answers to the server's disco#info queries.
func (m *Module) capsResult(c *hook.Ctx, st *hook.Stanza) hook.Verdict {
	if (st.Type != "result" && st.Type != "error") || !strings.HasPrefix(st.ID, "caps-") {
		return hook.Continue
	}
	var result []byte
	if st.Type == "result" {
		result = st.Payload
	}
	var asked any = c.Session
	if c.Session == nil {
		asked = remote(st.From) // an answer over federation (InboundStanza)
	}
	waiters, ok := m.caps.resolve(st.ID, asked, result)
	if !ok {
		return hook.Continue
	}
	for _, w := range waiters {
		switch w := w.(type) {
		case hook.Session:
			if w.Available() {
				m.sendLast(c, w)
			}
		case lastFor:
			m.remoteLast(c.Host, w.to, w.owner)
		}
	}
	return hook.Stop
}

// subscribedPrefix starts the subscription approval the roster module
// delivers (RFC 6121 3.1.5), as it writes it.
var subscribedPrefix = []byte(`<presence type='subscribed' from='`)

// subscribed sees a subscription approval reach a session: the new
// subscriber gets the last items of the contact's nodes it wants
// (XEP-0163 4.3.4, on_sub). It never holds the stanza, and costs other
// stanzas one prefix comparison.
func (m *Module) subscribed(s hook.Session, b []byte) ([]byte, hook.Verdict) {
	if !bytes.HasPrefix(b, subscribedPrefix) || !s.Available() {
		return b, hook.Continue
	}
	wanted := m.caps.notifyNodes(s)
	if len(wanted) == 0 {
		return b, hook.Continue
	}
	tag, err := stanza.ParseStartTag(b)
	if err != nil {
		return b, hook.Continue
	}
	from, _ := tag.AttrString("from")
	ref := m.host.Load()
	if ref == nil {
		return b, hook.Continue
	}
	host := ref.Host
	owner, ok := localOf(from, host.Domain())
	if !ok {
		return b, hook.Continue
	}
	host.Go(func(ctx context.Context) {
		m.sendLastOf(ctx, host, owner, s, wanted, false, SendOnSub, SendOnSubPresence)
	})
	return b, hook.Continue
}

// available sends the last items to a session that became available with
// known caps.
func (m *Module) available(c *hook.Ctx, _ hook.Event) hook.Verdict {
	m.sendLast(c, c.Session)
	return hook.Continue
}

// gone forgets a session's caps.
func (m *Module) gone(c *hook.Ctx, _ hook.Event) hook.Verdict {
	m.caps.forget(c.Session)
	return hook.Continue
}

// sendLast queues the delivery of the last items s wants: after what the
// connection's jobs already queued when s is the connection's session (its
// presence broadcast and probes come first), else detached.
func (m *Module) sendLast(c *hook.Ctx, s hook.Session) {
	nodes := m.caps.notifyNodes(s)
	if len(nodes) == 0 {
		return
	}
	host := c.Host
	job := func(ctx context.Context) { m.lastItems(ctx, host, s, nodes) }
	if c.Conn != nil && c.Session == s {
		c.Conn.Async(func(ctx context.Context) func(*hook.Ctx) { job(ctx); return nil }, nil)
		return
	}
	host.Go(job)
}

// lastItems delivers to s the last item of each node it wants
// notifications of whose send_last_published_item is on_sub_and_presence:
// of its own account, and of the local contacts it has a presence
// subscription to whose access model allows it (XEP-0163 4.3.4). Runs on
// a worker.
func (m *Module) lastItems(ctx context.Context, host hook.Host, s hook.Session, wanted []string) {
	user := s.Local()
	log := host.Logger()
	m.sendLastOf(ctx, host, user, s, wanted, true, SendOnSubPresence)
	items, _, err := m.Store.Roster(ctx, user)
	if err != nil {
		log.Error("roster read for pep failed", zap.String("user", user), zap.Error(err))
		return
	}
	domain := host.Domain()
	me := user + "@" + domain
	for _, it := range items {
		if it.Subscription != storage.SubTo && it.Subscription != storage.SubBoth {
			continue
		}
		local, ok := localOf(it.Contact, domain)
		if !ok || local == user || m.blocked(local, me) {
			continue
		}
		m.sendLastOf(ctx, host, local, s, wanted, false, SendOnSubPresence)
	}
}

// sendLastOf sends session s the last item of each of owner's nodes in wanted
// whose send_last_published_item is one of when, for a contact only those
// whose model lets a subscriber to the owner's presence read.
func (m *Module) sendLastOf(ctx context.Context, host hook.Host, owner string, s recipient, wanted []string, self bool, when ...string) {
	nodes, err := m.Store.PEPNodes(ctx, owner)
	if err != nil {
		host.Logger().Error("pep nodes read failed", zap.String("user", owner), zap.Error(err))
		return
	}
	from := owner + "@" + host.Domain()
	for _, n := range nodes {
		if !slices.Contains(when, n.Config.SendLast) || !slices.Contains(wanted, n.Name) {
			continue
		}
		if !self && n.Config.Access == AccessWhitelist {
			continue
		}
		if !self && n.Config.Access == AccessRoster && n.Config.RosterGroups != "" {
			// Groups need the owner's roster; the subscription the
			// caller found says the rest.
			if bare, _, _ := strings.Cut(s.Full(), "/"); !m.inOwnerGroups(ctx, owner, bare, n.Config) {
				continue
			}
		}
		items, err := m.Store.PEPItems(ctx, owner, n.Name, nil, 1)
		if err != nil || len(items) == 0 {
			continue
		}
		// To the session itself: a headline to a resource that has gone
		// is dropped (RFC 6121 8.5.3.2.1), never stored.
		if !s.Deliver(appendMessage(nil, from, s.Full(), appendItemsEvent(nil, n.Name, items[0].ID, items[0].Payload))) {
			return
		}
	}
}

// isLocal reports whether bare (a normalised bare JID) is an account of
// domain.
func isLocal(bare, domain string) bool {
	_, ok := localOf(bare, domain)
	return ok
}
