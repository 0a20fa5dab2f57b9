// Package pep implements XEP-0163 personal eventing: every account's bare
// JID is a publish-subscribe service (the subset of XEP-0060 PEP clients
// use) whose nodes are created on first publish with publish-options
// preconditions, whose items are kept in storage, and whose notifications
// go to the owner's resources and to the contacts the node's access model
// allows whose XEP-0115 entity capabilities ask for them (NODE+notify),
// without explicit subscriptions. The last item goes to a resource that
// becomes available with such capabilities.
//
// Capabilities are cached once for the whole server (capsCache): a session
// costs one map entry pointing at a shared feature set, made when it sends
// available presence with caps and dropped when it goes unavailable. An
// unknown hash costs one disco#info query to the first client that
// announces it, and the answer is cached only if it hashes to that ver.
package pep

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"strconv"
	"strings"
	"sync/atomic"

	"go.uber.org/zap"
	"mellium.im/xmpp/jid"

	"github.com/krill-xmpp/krill/config"
	"github.com/krill-xmpp/krill/hook"
	"github.com/krill-xmpp/krill/stanza"
	"github.com/krill-xmpp/krill/storage"
)

// Namespaces of XEP-0060.
const (
	NS       = "http://jabber.org/protocol/pubsub"
	NSOwner  = "http://jabber.org/protocol/pubsub#owner"
	NSEvent  = "http://jabber.org/protocol/pubsub#event"
	NSErrors = "http://jabber.org/protocol/pubsub#errors"

	nsDiscoInfo  = "http://jabber.org/protocol/disco#info"
	nsDiscoItems = "http://jabber.org/protocol/disco#items"
)

// Features are the XEP-0060 features the accounts' PEP services implement,
// reported in the disco#info of every account.
var Features = []string{
	NS,
	NS + "#access-open",
	NS + "#access-presence",
	NS + "#access-roster",
	NS + "#access-whitelist",
	NS + "#auto-create",
	NS + "#auto-subscribe",
	NS + "#config-node",
	NS + "#config-node-max",
	NS + "#create-and-configure",
	NS + "#create-nodes",
	NS + "#delete-items",
	NS + "#delete-nodes",
	NS + "#filtered-notifications",
	NS + "#item-ids",
	NS + "#last-published",
	NS + "#multi-items",
	NS + "#persistent-items",
	NS + "#presence-notifications",
	NS + "#publish",
	NS + "#publish-options",
	NS + "#retract-items",
	NS + "#retrieve-items",
	NS + "#subscribe",
}

// Store is what the module keeps nodes in and reads rosters from;
// storage.SQL implements it.
type Store interface {
	storage.PEP
	Roster(ctx context.Context, user string) ([]storage.RosterItem, uint64, error)
}

// Blocker tells whether an account blocks a JID (XEP-0191): a blocked
// contact gets no notification. modules/blocking implements it.
type Blocker interface {
	Blocks(owner string, j jid.JID) bool
}

// Module is the PEP service of every account. Store must be set; Blocker
// may be nil. Use it by pointer.
type Module struct {
	Store   Store
	Blocker Blocker
	// OnPublish, when set, is called on a worker after an item was
	// published, before the reply (avatars follow the metadata node this
	// way).
	OnPublish func(ctx context.Context, log *zap.Logger, owner, node string, payload []byte)

	caps *capsCache
	// host is the server, kept from the first presence for the outbound
	// filter, which is given none (a session that can be subscribed to
	// has sent presence).
	host atomic.Pointer[hostRef]
}

type hostRef struct{ hook.Host }

// Name implements hook.Module.
func (*Module) Name() string { return "pep" }

// Register implements hook.Module.
func (m *Module) Register(r *hook.Registrar) error {
	if m.Store == nil {
		return errors.New("pep: Store must be set")
	}
	if m.caps == nil {
		m.caps = newCapsCache(CapsCacheBytes)
	}
	to := hook.ToNone | hook.ToBare
	r.IQ(hook.PhaseBound, hook.IQSet, to, NS, "pubsub", m.set)
	r.IQ(hook.PhaseBound, hook.IQGet, to, NS, "pubsub", m.get)
	r.IQ(hook.PhaseBound, hook.IQSet, to, NSOwner, "pubsub", m.ownerSet)
	r.IQ(hook.PhaseBound, hook.IQGet, to, NSOwner, "pubsub", m.ownerGet)
	r.IQ(hook.PhaseBound, hook.IQGet, hook.ToBare, nsDiscoItems, "query", m.discoItems)
	// Contacts on other servers read (and subscribe) as the access model
	// allows; what only the owner may do they are refused (forbidden).
	r.IQ(hook.PhaseRemote, hook.IQSet, hook.ToBare, NS, "pubsub", m.set)
	r.IQ(hook.PhaseRemote, hook.IQGet, hook.ToBare, NS, "pubsub", m.get)
	r.IQ(hook.PhaseRemote, hook.IQSet, hook.ToBare, NSOwner, "pubsub", m.ownerSet)
	r.IQ(hook.PhaseRemote, hook.IQGet, hook.ToBare, NSOwner, "pubsub", m.ownerGet)
	r.IQ(hook.PhaseRemote, hook.IQGet, hook.ToBare, nsDiscoItems, "query", m.discoItems)
	r.AccountFeature(Features...)
	r.Stanza(hook.Presence, hook.ToNone|hook.ToBare|hook.ToFull, hook.Pre, m.presence)
	r.Stanza(hook.IQ, hook.ToHost|hook.ToNone, hook.Pre, m.capsResult)
	r.Outbound(m.subscribed)
	r.On(hook.Available, m.available)
	r.On(hook.Unavailable, m.gone)
	r.On(hook.Closed, m.gone)
	return nil
}

// Counters implements hook.Counter: the caps cache's entries, bytes, the
// disco#info queries sent and the remote resources followed.
func (m *Module) Counters(fn func(event string, n uint64)) {
	e, b, q := m.caps.stats()
	fn("caps_entries", uint64(e))
	fn("caps_bytes", uint64(b))
	fn("caps_queries", q)
	fn("caps_remote", uint64(m.caps.remoteCount()))
}

// PeerGone implements hook.PeerGone: the caps of the resources at a server
// that went away are forgotten, since it sends no unavailable presence
// for them.
func (m *Module) PeerGone(domain string) {
	m.caps.forgetDomain(domain)
}

// limits returns the account limits in force.
func limits(cfg *config.Config) storage.PEPLimits {
	return storage.PEPLimits{MaxNodes: cfg.PEP.MaxNodes, MaxItems: cfg.PEP.MaxItems, MaxBytes: cfg.PEP.MaxBytes}
}

// perr is a pubsub error reply: the stanza error, and the pubsub#errors
// condition (or "").
type perr struct {
	typ, cond, app, text string
}

func (e perr) reply(c *hook.Ctx) {
	st := c.Stanza
	app := ""
	if e.app != "" {
		app = `<` + e.app + ` xmlns='` + NSErrors + `'/>`
	}
	to := st.From
	from := ""
	if st.Addr != hook.ToNone {
		from = st.To
	}
	c.Reply(stanza.AppendErrorApp(c.Scratch(), "iq", st.ID, from, to, e.typ, e.cond, e.text, app))
}

var (
	errNodeID      = perr{"modify", "bad-request", "nodeid-required", ""}
	errNotFound    = perr{"cancel", "item-not-found", "", ""}
	errForbidden   = perr{"auth", "forbidden", "", ""}
	errInternal    = perr{"wait", "internal-server-error", "", ""}
	errTooMany     = perr{"wait", "policy-violation", "max-nodes-exceeded", "too many nodes (pep.max_nodes)"}
	errQuota       = perr{"wait", "resource-constraint", "", "storage quota reached (pep.max_bytes)"}
	errItemReq     = perr{"modify", "bad-request", "item-required", ""}
	errBadPayload  = perr{"modify", "bad-request", "invalid-payload", ""}
	errPresenceReq = perr{"auth", "not-authorized", "presence-subscription-required", ""}
	errRosterReq   = perr{"auth", "not-authorized", "not-in-roster-group", ""}
	errClosed      = perr{"cancel", "not-allowed", "closed-node", ""}
)

// errPrecondition is a publish-options field the node does not satisfy.
type errPrecondition struct{ field string }

func (e errPrecondition) Error() string { return "Field does not match: " + e.field }

// owner returns the account a request addresses and whether the sender
// is that account (never for a remote sender, who has no Session).
func owner(c *hook.Ctx, iq *hook.Stanza) (string, bool) {
	if c.Session == nil {
		return iq.Local, false
	}
	me := c.Session.Local()
	if iq.Local == "" || iq.Local == me {
		return me, true
	}
	return iq.Local, false
}

// action returns the first child of a <pubsub/> request (publish, items,
// configure...) and the publish-options or configure form beside it.
func action(payload []byte) (verb []byte, name string, options []byte) {
	stanza.Children(payload, func(ch []byte) bool {
		t, err := stanza.ParseStartTag(ch)
		if err != nil {
			return true
		}
		switch l := string(t.Local()); {
		case l == "publish-options" || (l == "configure" && verb != nil):
			options, _ = stanza.FirstChild(ch)
		case verb == nil:
			verb, name = ch, l
		}
		return true
	})
	return verb, name, options
}

func attr(elem []byte, name string) string {
	t, err := stanza.ParseStartTag(elem)
	if err != nil {
		return ""
	}
	v, _ := t.AttrString(name)
	return v
}

// set handles publish, retract and create.
func (m *Module) set(c *hook.Ctx, iq *hook.Stanza) error {
	user, self := owner(c, iq)
	verb, name, options := action(iq.Payload)
	node := attr(verb, "node")
	switch name {
	case "subscribe", "unsubscribe":
		if node == "" {
			errNodeID.reply(c)
			return nil
		}
		m.subscription(c, user, self, node, verb, name == "subscribe")
		return nil
	case "options":
		perr{"cancel", "feature-not-implemented", "unsupported feature='subscription-options'", ""}.reply(c)
		return nil
	}
	if !self {
		errForbidden.reply(c)
		return nil
	}
	switch name {
	case "publish":
		if node == "" {
			errNodeID.reply(c)
			return nil
		}
		m.publish(c, user, node, verb, options)
	case "retract":
		if node == "" {
			errNodeID.reply(c)
			return nil
		}
		m.retract(c, user, node, verb)
	case "create":
		if node == "" {
			perr{"modify", "not-acceptable", "nodeid-required", ""}.reply(c)
			return nil
		}
		m.create(c, user, node, options)
	default:
		perr{"modify", "bad-request", "", ""}.reply(c)
	}
	return nil
}

// MaxSubscribers is the most explicit subscriptions one node keeps; one
// more gets policy-violation. (Implicit subscribers, contacts with caps,
// cost nothing.)
const MaxSubscribers = 1024

// subscription handles subscribe (XEP-0060 6.1) and unsubscribe (6.2):
// explicit subscriptions, for those who get no presence (OMEMO between
// strangers, XEP-0384 section 4.3).
func (m *Module) subscription(c *hook.Ctx, user string, self bool, node string, verb []byte, subscribe bool) {
	requester := c.Stanza.From
	sj, err := jid.Parse(attr(verb, "jid"))
	if err != nil || (sj.String() != requester && sj.String() != sj.Bare().String()) || sj.Bare().String() != c.Stanza.FromBare() {
		perr{"modify", "bad-request", "invalid-jid", ""}.reply(c)
		return
	}
	subscriber := sj.String()
	host, log := c.Host, c.Log
	c.Conn.Async(func(ctx context.Context) func(*hook.Ctx) {
		n, fail := m.readNode(ctx, log, user, node, true, "")
		if fail != nil {
			return fail
		}
		if !subscribe {
			found, err := m.Store.PEPUnsubscribe(ctx, user, node, subscriber)
			if err != nil {
				log.Error("pep unsubscribe failed", zap.String("user", user), zap.Error(err))
				return errInternal.reply
			}
			if !found {
				return perr{"cancel", "unexpected-request", "not-subscribed", ""}.reply
			}
			return func(c *hook.Ctx) { c.ReplyResult(nil) }
		}
		if !self {
			if e, ok := m.mayRead(ctx, user, n.Config, requester); !ok {
				return e.reply
			}
		}
		err = m.Store.PEPSubscribe(ctx, user, node, subscriber, MaxSubscribers)
		if errors.Is(err, storage.ErrPEPTooManySubscribers) {
			return perr{"wait", "policy-violation", "", "too many subscribers"}.reply
		}
		if e, ok := storeError(err); ok {
			return e.reply
		}
		if err != nil {
			log.Error("pep subscribe failed", zap.String("user", user), zap.Error(err))
			return errInternal.reply
		}
		b := append([]byte(`<pubsub xmlns='`+NS+`'><subscription node='`), stanza.AppendEscaped(nil, node)...)
		b = append(b, `' jid='`...)
		b = stanza.AppendEscaped(b, subscriber)
		b = append(b, `' subscription='subscribed'/></pubsub>`...)
		return func(c *hook.Ctx) {
			c.ReplyResult(b)
			if n.Config.SendLast == SendNever {
				return
			}
			// After the result (XEP-0060 6.1.7).
			host.Go(func(ctx context.Context) {
				items, err := m.Store.PEPItems(ctx, user, node, nil, 1)
				if err != nil || len(items) == 0 {
					return
				}
				event := appendItemsEvent(nil, node, items[0].ID, items[0].Payload)
				from := user + "@" + host.Domain()
				if bare, _, _ := strings.Cut(subscriber, "/"); !isLocal(bare, host.Domain()) {
					// At another server (hook.PhaseRemote): over
					// federation, to the JID subscribed.
					host.Deliver(subscriber, appendMessage(nil, from, subscriber, event))
					return
				}
				m.toSubscriber(host, subscriber, func(s hook.Session) {
					s.Deliver(appendMessage(nil, from, s.Full(), event))
				})
			})
		}
	}, nil)
}

// toSubscriber calls fn for the available sessions a subscription JID
// names: the one resource of a full JID, every resource of a bare one.
func (m *Module) toSubscriber(host hook.Host, subscriber string, fn func(hook.Session)) {
	local, rest, ok := strings.Cut(subscriber, "@")
	if !ok {
		return
	}
	domain, resource, _ := strings.Cut(rest, "/")
	if domain != host.Domain() {
		return
	}
	host.Sessions(local, func(s hook.Session) {
		if s.Available() && (resource == "" || s.Full() == subscriber) {
			fn(s)
		}
	})
}

// newItemID is a server-generated item id.
func newItemID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// publish stores an item and notifies (XEP-0060 7.1, 7.1.5).
func (m *Module) publish(c *hook.Ctx, user, node string, verb, options []byte) {
	cfg := c.Host.Config()
	var item []byte
	count := 0
	stanza.Children(verb, func(ch []byte) bool {
		if t, err := stanza.ParseStartTag(ch); err == nil && string(t.Local()) == "item" {
			item = ch
			count++
		}
		return true
	})
	switch {
	case count == 0:
		errItemReq.reply(c)
		return
	case count > 1:
		perr{"modify", "bad-request", "invalid-payload", "one item per publish"}.reply(c)
		return
	}
	payload, ok := onePayload(item)
	if !ok {
		errBadPayload.reply(c)
		return
	}
	if len(payload) > cfg.PEP.MaxItemBytes {
		perr{"modify", "not-acceptable", "payload-too-big", "item larger than pep.max_item_bytes (" + strconv.Itoa(cfg.PEP.MaxItemBytes) + ")"}.reply(c)
		return
	}
	id := attr(item, "id")
	if id == "" {
		id = newItemID()
	}
	create := DefaultConfig
	var opts []option
	if options != nil {
		var err error
		if opts, _, err = parseForm(options, FormPublishOptions); err != nil {
			var uf *unknownField
			if errors.As(err, &uf) {
				perr{"cancel", "conflict", "precondition-not-met", uf.Error()}.reply(c)
				return
			}
			perr{"modify", "bad-request", "invalid-options", err.Error()}.reply(c)
			return
		}
		for _, o := range opts {
			o.set(&create)
		}
	}
	if e, bad := checkMax(create, cfg); bad {
		e.reply(c)
		return
	}
	check := func(existing storage.PEPConfig) error {
		for _, o := range opts {
			if !o.match(existing) {
				return errPrecondition{o.field}
			}
		}
		return nil
	}
	payload = bytes.Clone(payload)
	lim := limits(cfg)
	host, log := c.Host, c.Log
	c.Conn.Async(func(ctx context.Context) func(*hook.Ctx) {
		nc, err := m.Store.PEPPublish(ctx, user, node, create, check, storage.PEPItem{ID: id, Payload: payload}, lim)
		if e, ok := storeError(err); ok {
			return e.reply
		}
		if err != nil {
			log.Error("pep publish failed", zap.String("user", user), zap.String("node", node), zap.Error(err))
			return errInternal.reply
		}
		m.notify(ctx, host, user, node, nc, appendItemsEvent(nil, node, id, payload))
		if m.OnPublish != nil {
			m.OnPublish(ctx, log, user, node, payload)
		}
		return func(c *hook.Ctx) {
			b := append(make([]byte, 0, 128), `<pubsub xmlns='`+NS+`'><publish node='`...)
			b = stanza.AppendEscaped(b, node)
			b = append(b, `'><item id='`...)
			b = stanza.AppendEscaped(b, id)
			b = append(b, `'/></publish></pubsub>`...)
			c.ReplyResult(b)
		}
	}, nil)
}

// checkMax refuses a max_items above the server's limit.
func checkMax(c storage.PEPConfig, cfg *config.Config) (perr, bool) {
	if cfg.PEP.MaxItems > 0 && c.MaxItems > cfg.PEP.MaxItems {
		return perr{"modify", "not-acceptable", "", "pubsub#max_items above pep.max_items (" + strconv.Itoa(cfg.PEP.MaxItems) + ")"}, true
	}
	return perr{}, false
}

// storeError maps the store's refusals to pubsub errors.
func storeError(err error) (perr, bool) {
	var pe errPrecondition
	switch {
	case err == nil:
		return perr{}, false
	case errors.As(err, &pe):
		return perr{"cancel", "conflict", "precondition-not-met", pe.Error()}, true
	case errors.Is(err, storage.ErrPEPTooManyNodes):
		return errTooMany, true
	case errors.Is(err, storage.ErrPEPQuota):
		return errQuota, true
	case errors.Is(err, storage.ErrPEPNoNode):
		return errNotFound, true
	case errors.Is(err, storage.ErrPEPNodeExists):
		return perr{"cancel", "conflict", "", ""}, true
	case errors.Is(err, storage.ErrInvalidText):
		return perr{"modify", "not-acceptable", "", "text not storable"}, true
	}
	return perr{}, false
}

// onePayload returns the one child element of an <item/> (XEP-0060 7.1.3.6:
// exactly one payload).
func onePayload(item []byte) ([]byte, bool) {
	var payload []byte
	n := 0
	ok := stanza.Children(item, func(ch []byte) bool {
		payload = ch
		n++
		return true
	})
	if !ok || n != 1 {
		return nil, false
	}
	// Only whitespace may surround it.
	in := stanza.Inner(item)
	i := bytes.Index(in, payload)
	if len(bytes.TrimSpace(in[:i])) != 0 || len(bytes.TrimSpace(in[i+len(payload):])) != 0 {
		return nil, false
	}
	return payload, true
}

// retract deletes an item and notifies when asked to or configured to
// (XEP-0060 7.2).
func (m *Module) retract(c *hook.Ctx, user, node string, verb []byte) {
	item, ok := stanza.FirstChild(verb)
	id := attr(item, "id")
	if !ok || id == "" {
		errItemReq.reply(c)
		return
	}
	notifyAttr := attr(verb, "notify")
	notify, _ := parseBool(notifyAttr)
	host, log := c.Host, c.Log
	c.Conn.Async(func(ctx context.Context) func(*hook.Ctx) {
		n, fail := m.readNode(ctx, log, user, node, true, "")
		if fail != nil {
			return fail
		}
		found, err := m.Store.PEPRetract(ctx, user, node, id)
		if err != nil {
			log.Error("pep retract failed", zap.String("user", user), zap.Error(err))
			return errInternal.reply
		}
		if !found {
			return errNotFound.reply
		}
		if notify || (notifyAttr == "" && n.Config.NotifyRetract) {
			b := append([]byte(`<event xmlns='`+NSEvent+`'><items node='`), stanza.AppendEscaped(nil, node)...)
			b = append(b, `'><retract id='`...)
			b = stanza.AppendEscaped(b, id)
			b = append(b, `'/></items></event>`...)
			m.notify(ctx, host, user, node, n.Config, b)
		}
		return func(c *hook.Ctx) { c.ReplyResult(nil) }
	}, nil)
}

// create makes a node, configured by the form beside it (XEP-0060 8.1).
func (m *Module) create(c *hook.Ctx, user, node string, form []byte) {
	n := storage.PEPNode{Name: node, Config: DefaultConfig}
	if form != nil {
		opts, _, err := parseForm(form, FormNodeConfig)
		if err != nil {
			perr{"modify", "not-acceptable", "", err.Error()}.reply(c)
			return
		}
		for _, o := range opts {
			o.set(&n.Config)
		}
	}
	cfg := c.Host.Config()
	if e, bad := checkMax(n.Config, cfg); bad {
		e.reply(c)
		return
	}
	lim, log := limits(cfg), c.Log
	c.Conn.Async(func(ctx context.Context) func(*hook.Ctx) {
		err := m.Store.PEPCreate(ctx, user, n, lim)
		if e, ok := storeError(err); ok {
			return e.reply
		}
		if err != nil {
			log.Error("pep create failed", zap.String("user", user), zap.Error(err))
			return errInternal.reply
		}
		return func(c *hook.Ctx) { c.ReplyResult(nil) }
	}, nil)
}

// allowed reports whether a contact, whose item in the owner's roster is
// item (inRoster false: none), may read a node configured c; it returns
// the error to give when not.
func allowed(c storage.PEPConfig, item storage.RosterItem, inRoster bool) (perr, bool) {
	switch c.Access {
	case AccessOpen:
		return perr{}, true
	case AccessPresence:
		if inRoster && (item.Subscription == storage.SubFrom || item.Subscription == storage.SubBoth) {
			return perr{}, true
		}
		return errPresenceReq, false
	case AccessRoster:
		if inRoster && inGroups(c.RosterGroups, item.Groups) {
			return perr{}, true
		}
		return errRosterReq, false
	}
	return errClosed, false
}

// inGroups reports whether one of groups is in allowed (one per line; ""
// allows the whole roster).
func inGroups(allowed string, groups []string) bool {
	if allowed == "" {
		return true
	}
	for _, g := range groups {
		for a := range strings.SplitSeq(allowed, "\n") {
			if a == g {
				return true
			}
		}
	}
	return false
}

// get answers items requests (XEP-0060 6.5), of the owner or of a contact
// the node's access model allows.
func (m *Module) get(c *hook.Ctx, iq *hook.Stanza) error {
	user, self := owner(c, iq)
	verb, name, _ := action(iq.Payload)
	if name != "items" {
		perr{"cancel", "feature-not-implemented", "", ""}.reply(c)
		return nil
	}
	node := attr(verb, "node")
	if node == "" {
		errNodeID.reply(c)
		return nil
	}
	var ids []string
	stanza.Children(verb, func(ch []byte) bool {
		if id := attr(ch, "id"); id != "" && len(ids) < 256 {
			ids = append(ids, id)
		}
		return true
	})
	max := 0
	if v := attr(verb, "max_items"); v != "" {
		var err error
		if max, err = strconv.Atoi(v); err != nil || max < 1 {
			perr{"modify", "bad-request", "", "max_items must be a positive integer"}.reply(c)
			return nil
		}
	}
	requester := iq.From
	log := c.Log
	c.Conn.Async(func(ctx context.Context) func(*hook.Ctx) {
		_, fail := m.readNode(ctx, log, user, node, self, requester)
		if fail != nil {
			return fail
		}
		items, err := m.Store.PEPItems(ctx, user, node, ids, max)
		if err != nil {
			log.Error("pep items read failed", zap.String("user", user), zap.Error(err))
			return errInternal.reply
		}
		b := append([]byte(`<pubsub xmlns='`+NS+`'><items node='`), stanza.AppendEscaped(nil, node)...)
		b = append(b, `'>`...)
		for _, it := range items {
			b = appendItem(b, it.ID, it.Payload)
		}
		b = append(b, `</items></pubsub>`...)
		return func(c *hook.Ctx) { c.ReplyResult(b) }
	}, nil)
	return nil
}

// readNode reads an account's node, on a worker. When it cannot be read,
// or does not exist, or (unless self, the owner asking) the requester's
// access is refused by the node's access model, it returns the error
// reply to send instead.
func (m *Module) readNode(ctx context.Context, log *zap.Logger, user, node string, self bool, requester string) (storage.PEPNode, func(*hook.Ctx)) {
	n, ok, err := m.Store.PEPNode(ctx, user, node)
	if err != nil {
		log.Error("pep node read failed", zap.String("user", user), zap.Error(err))
		return n, errInternal.reply
	}
	if !ok {
		return n, errNotFound.reply
	}
	if !self {
		if e, ok := m.mayRead(ctx, user, n.Config, requester); !ok {
			return n, e.reply
		}
	}
	return n, nil
}

// mayRead checks a contact's access to a node of owner, from owner's
// roster (read only for the models that need it) and blocklist.
func (m *Module) mayRead(ctx context.Context, owner string, c storage.PEPConfig, requester string) (perr, bool) {
	access := c.Access
	j, err := jid.Parse(requester)
	if err != nil {
		return errForbidden, false
	}
	if m.Blocker != nil && m.Blocker.Blocks(owner, j) {
		return errNotFound, false
	}
	if access == AccessOpen {
		return perr{}, true
	}
	if access == AccessWhitelist {
		return errClosed, false
	}
	items, _, err := m.Store.Roster(ctx, owner)
	if err != nil {
		return errInternal, false
	}
	bare := j.Bare().String()
	for _, it := range items {
		if it.Contact == bare {
			return allowed(c, it, true)
		}
	}
	return allowed(c, storage.RosterItem{}, false)
}

func appendItem(b []byte, id string, payload []byte) []byte {
	b = append(b, `<item id='`...)
	b = stanza.AppendEscaped(b, id)
	b = append(b, `'>`...)
	b = append(b, payload...)
	return append(b, `</item>`...)
}

// appendItemsEvent appends the <event/> of a published item.
func appendItemsEvent(b []byte, node, id string, payload []byte) []byte {
	b = append(b, `<event xmlns='`+NSEvent+`'><items node='`...)
	b = stanza.AppendEscaped(b, node)
	b = append(b, `'>`...)
	b = appendItem(b, id, payload)
	return append(b, `</items></event>`...)
}

// ownerGet answers a configure request (XEP-0060 8.2).
func (m *Module) ownerGet(c *hook.Ctx, iq *hook.Stanza) error {
	user, self := owner(c, iq)
	verb, name, _ := action(iq.Payload)
	if !self {
		errForbidden.reply(c)
		return nil
	}
	if name != "configure" {
		perr{"cancel", "feature-not-implemented", "", ""}.reply(c)
		return nil
	}
	node := attr(verb, "node")
	if node == "" {
		errNodeID.reply(c)
		return nil
	}
	log := c.Log
	c.Conn.Async(func(ctx context.Context) func(*hook.Ctx) {
		n, fail := m.readNode(ctx, log, user, node, true, "")
		if fail != nil {
			return fail
		}
		b := append([]byte(`<pubsub xmlns='`+NSOwner+`'><configure node='`), stanza.AppendEscaped(nil, node)...)
		b = append(b, `'>`...)
		b = appendConfigForm(b, n.Config)
		b = append(b, `</configure></pubsub>`...)
		return func(c *hook.Ctx) { c.ReplyResult(b) }
	}, nil)
	return nil
}

// ownerSet handles configure (XEP-0060 8.2.4) and delete (8.4).
func (m *Module) ownerSet(c *hook.Ctx, iq *hook.Stanza) error {
	user, self := owner(c, iq)
	verb, name, _ := action(iq.Payload)
	if !self {
		errForbidden.reply(c)
		return nil
	}
	node := attr(verb, "node")
	if node == "" {
		errNodeID.reply(c)
		return nil
	}
	cfg := c.Host.Config()
	lim, host, log := limits(cfg), c.Host, c.Log
	switch name {
	case "delete":
		c.Conn.Async(func(ctx context.Context) func(*hook.Ctx) {
			n, ok, err := m.Store.PEPNode(ctx, user, node)
			if err == nil && ok {
				ok, err = m.Store.PEPDelete(ctx, user, node)
			}
			if err != nil {
				log.Error("pep delete failed", zap.String("user", user), zap.Error(err))
				return errInternal.reply
			}
			if !ok {
				return errNotFound.reply
			}
			b := append([]byte(`<event xmlns='`+NSEvent+`'><delete node='`), stanza.AppendEscaped(nil, node)...)
			b = append(b, `'/></event>`...)
			m.notify(ctx, host, user, node, n.Config, b)
			return func(c *hook.Ctx) { c.ReplyResult(nil) }
		}, nil)
	case "configure":
		form, ok := stanza.FirstChild(verb)
		if !ok {
			perr{"modify", "bad-request", "", "configure needs a form"}.reply(c)
			return nil
		}
		opts, cancel, err := parseForm(form, FormNodeConfig)
		if err != nil {
			perr{"modify", "not-acceptable", "", err.Error()}.reply(c)
			return nil
		}
		c.Conn.Async(func(ctx context.Context) func(*hook.Ctx) {
			n, fail := m.readNode(ctx, log, user, node, true, "")
			if fail != nil {
				return fail
			}
			if cancel {
				return func(c *hook.Ctx) { c.ReplyResult(nil) }
			}
			for _, o := range opts {
				o.set(&n.Config)
			}
			if e, bad := checkMax(n.Config, cfg); bad {
				return e.reply
			}
			err = m.Store.PEPConfigure(ctx, user, n, lim)
			if e, ok := storeError(err); ok {
				return e.reply
			}
			if err != nil {
				log.Error("pep configure failed", zap.String("user", user), zap.Error(err))
				return errInternal.reply
			}
			return func(c *hook.Ctx) { c.ReplyResult(nil) }
		}, nil)
	default:
		perr{"cancel", "feature-not-implemented", "", ""}.reply(c)
	}
	return nil
}

// NodeInfo answers disco#info about one of an account's nodes (XEP-0060
// 5.3): a leaf node, to those who may read it. The disco module calls it
// (disco.Module.AccountNode).
func (m *Module) NodeInfo(c *hook.Ctx, iq *hook.Stanza) error {
	user, self := owner(c, iq)
	node := attr(iq.Payload, "node")
	requester, log := iq.From, c.Log
	c.Conn.Async(func(ctx context.Context) func(*hook.Ctx) {
		_, fail := m.readNode(ctx, log, user, node, self, requester)
		if fail != nil {
			return fail
		}
		b := append([]byte(`<query xmlns='`+nsDiscoInfo+`' node='`), stanza.AppendEscaped(nil, node)...)
		b = append(b, `'><identity category='pubsub' type='leaf'/><feature var='`+NS+`'/></query>`...)
		return func(c *hook.Ctx) { c.ReplyResult(b) }
	}, nil)
	return nil
}

// discoItems lists an account's nodes that the requester may read
// (XEP-0163 6.2, XEP-0060 5.2), or the item ids of one node (5.5).
func (m *Module) discoItems(c *hook.Ctx, iq *hook.Stanza) error {
	user, self := owner(c, iq)
	node := attr(iq.Payload, "node")
	requester, log := iq.From, c.Log
	bare := user + "@" + c.Host.Domain()
	c.Conn.Async(func(ctx context.Context) func(*hook.Ctx) {
		nodes, err := m.Store.PEPNodes(ctx, user)
		if err != nil {
			log.Error("pep nodes read failed", zap.String("user", user), zap.Error(err))
			return errInternal.reply
		}
		b := []byte(`<query xmlns='` + nsDiscoItems + `'`)
		if node != "" {
			b = append(b, ` node='`...)
			b = stanza.AppendEscaped(b, node)
			b = append(b, '\'')
		}
		b = append(b, '>')
		found := false
		for _, n := range nodes {
			if node != "" && n.Name != node {
				continue
			}
			if !self {
				if e, ok := m.mayRead(ctx, user, n.Config, requester); !ok {
					if node != "" {
						return e.reply
					}
					continue
				}
			}
			found = true
			if node == "" {
				b = append(b, `<item jid='`...)
				b = stanza.AppendEscaped(b, bare)
				b = append(b, `' node='`...)
				b = stanza.AppendEscaped(b, n.Name)
				b = append(b, `'/>`...)
				continue
			}
			items, err := m.Store.PEPItems(ctx, user, node, nil, 0)
			if err != nil {
				log.Error("pep items read failed", zap.String("user", user), zap.Error(err))
				return errInternal.reply
			}
			for _, it := range items {
				b = append(b, `<item jid='`...)
				b = stanza.AppendEscaped(b, bare)
				b = append(b, `' name='`...)
				b = stanza.AppendEscaped(b, it.ID)
				b = append(b, `'/>`...)
			}
		}
		if node != "" && !found {
			return errNotFound.reply
		}
		b = append(b, `</query>`...)
		return func(c *hook.Ctx) { c.ReplyResult(b) }
	}, nil)
	return nil
}
