// Package roster implements rosters and presence subscriptions for local
// accounts: RFC 6121 section 2 (roster get, set and remove, pushes to the
// resources that requested the roster, 2.1.6), section 3 (the
// subscription state machine of appendix A, pending requests stored and
// redelivered at each login, 3.1.3, and pre-approval, 3.4), and XEP-0237
// roster versioning.
//
// Both sides of a subscription are local accounts (one domain per server),
// so every change runs in one storage transaction covering both rosters;
// roster pushes and presence deliveries follow the commit, on the worker
// that ran it. Nothing of a roster is kept in memory.
package roster

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"sync/atomic"

	"go.uber.org/zap"

	"github.com/krill-xmpp/krill/hook"
	"github.com/krill-xmpp/krill/sasl"
	"github.com/krill-xmpp/krill/stanza"
	"github.com/krill-xmpp/krill/storage"
)

// NS is the roster namespace (RFC 6121 2.1).
const NS = "jabber:iq:roster"

// Stream features announced after authentication: XEP-0237 roster
// versioning (RFC 6121 2.6) and subscription pre-approval (RFC 6121 3.4).
const (
	NSRosterVer   = "urn:xmpp:features:rosterver"
	NSPreApproval = "urn:xmpp:features:pre-approval"
)

// Store keeps rosters and pending subscription requests; storage.SQL
// implements it.
type Store interface {
	// Roster returns the user's items and roster version.
	Roster(ctx context.Context, user string) ([]storage.RosterItem, uint64, error)
	// UpdateRosters runs fn in one transaction, retried on conflict.
	UpdateRosters(ctx context.Context, fn func(tx storage.RosterTx) error) error
	// Requests returns the user's pending inbound subscription requests.
	Requests(ctx context.Context, user string) ([]storage.SubscriptionRequest, error)
}

// Accounts tells whether an account exists: a subscription request to a
// missing account is refused. storage.SQL implements it; only
// storage.ErrNotFound is taken to mean "no such account".
type Accounts interface {
	Credentials(ctx context.Context, username string) (sasl.Credentials, error)
}

// Module answers roster requests, runs subscriptions and delivers pending
// requests at login. Store and Accounts must be set; use it by pointer.
type Module struct {
	Store    Store
	Accounts Accounts

	// interested marks sessions that requested the roster: only they get
	// roster pushes (RFC 6121 2.1.6).
	interested hook.Flag
	// pushSeq numbers roster pushes.
	pushSeq atomic.Uint64
}

// Name implements hook.Module.
func (*Module) Name() string { return "roster" }

// Register implements hook.Module.
func (m *Module) Register(r *hook.Registrar) error {
	if m.Store == nil || m.Accounts == nil {
		return errors.New("roster: Store and Accounts must be set")
	}
	m.interested = r.Flag()
	r.IQ(hook.PhaseBound, hook.IQGet, hook.ToAccount, NS, "query", m.get)
	r.IQ(hook.PhaseBound, hook.IQSet, hook.ToAccount, NS, "query", m.set)
	r.Stanza(hook.Presence, hook.ToLocal|hook.ToRemote, hook.Pre, m.subscription)
	for _, secure := range []bool{false, true} {
		r.StreamFeature(hook.PhaseBind, secure, appendFeatures)
	}
	r.On(hook.Available, m.available)
	return nil
}

func appendFeatures(b []byte) []byte {
	return append(b, `<ver xmlns='`+NSRosterVer+`'/><sub xmlns='`+NSPreApproval+`'/>`...)
}

// forbidden answers a roster request addressed to another account's bare
// JID (RFC 6121 2.1.5: only the user's own roster); it reports whether it
// did.
func forbidden(c *hook.Ctx, iq *hook.Stanza) bool {
	if iq.Addr == hook.ToBare && iq.Local != c.Session.Local() {
		c.ReplyError("auth", "forbidden", "")
		return true
	}
	return false
}

// get answers a roster get (RFC 6121 2.1.3), with nothing when the
// client's version is current (XEP-0237, RFC 6121 2.6.3).
func (m *Module) get(c *hook.Ctx, iq *hook.Stanza) error {
	if forbidden(c, iq) {
		return nil
	}
	tag, err := stanza.ParseStartTag(iq.Payload)
	if err != nil {
		c.ReplyError("modify", "bad-request", "malformed roster query")
		return nil
	}
	ver, hasVer := tag.AttrString("ver")
	sess, log := c.Session, c.Log
	sess.Set(m.interested, true)
	user := sess.Local()
	c.Conn.Async(func(ctx context.Context) func(*hook.Ctx) {
		items, v, err := m.Store.Roster(ctx, user)
		if err != nil {
			log.Error("roster read failed", zap.String("user", user), zap.Error(err))
			return internalError
		}
		current := strconv.FormatUint(v, 10)
		if hasVer && ver == current {
			return func(c *hook.Ctx) { c.ReplyResult(nil) }
		}
		b := []byte(`<query xmlns='` + NS + `' ver='` + current + `'>`)
		for _, it := range items {
			b = appendItem(b, it, false)
		}
		b = append(b, `</query>`...)
		return func(c *hook.Ctx) { c.ReplyResult(b) }
	}, nil)
	return nil
}

func internalError(c *hook.Ctx) { c.ReplyError("wait", "internal-server-error", "") }

// set adds, updates or removes one roster item (RFC 6121 2.3, 2.5).
func (m *Module) set(c *hook.Ctx, iq *hook.Stanza) error {
	if forbidden(c, iq) {
		return nil
	}
	in, err := parseSet(iq.Payload)
	if err != nil {
		var pe *parseError
		if errors.As(err, &pe) {
			c.ReplyError("modify", pe.cond, pe.text)
			return nil
		}
		return err
	}
	limit := c.Host.Config().IM.MaxRosterItems
	sess, host, log := c.Session, c.Host, c.Log
	user := sess.Local()
	sm := machine{domain: host.Domain()}
	c.Conn.Async(func(ctx context.Context) func(*hook.Ctx) {
		if !in.remove {
			if err := m.room(ctx, user, in.contact, limit); err != nil {
				if errors.Is(err, errRosterFull) {
					return func(c *hook.Ctx) {
						c.ReplyError("modify", "policy-violation", "the roster is full ("+strconv.Itoa(limit)+" items)")
					}
				}
				log.Error("roster read failed", zap.String("user", user), zap.Error(err))
				return internalError
			}
		}
		var fx effects
		err := m.Store.UpdateRosters(ctx, func(tx storage.RosterTx) error {
			fx = effects{} // the transaction may run again
			if in.remove {
				return sm.remove(tx, &fx, user, in.contact)
			}
			item, _, err := tx.Item(user, in.contact)
			if err != nil {
				return err
			}
			item.Contact, item.Name, item.Groups = in.contact, in.name, in.groups
			return fx.put(tx, user, item)
		})
		if errors.Is(err, errItemNotFound) {
			return func(c *hook.Ctx) { c.ReplyError("cancel", "item-not-found", "no such roster item") }
		}
		if err != nil {
			log.Error("roster set failed", zap.String("user", user), zap.Error(err))
			return internalError
		}
		m.apply(host, &fx)
		return func(c *hook.Ctx) { c.ReplyResult(nil) }
	}, nil)
	return nil
}

var (
	errItemNotFound = errors.New("roster: no such roster item")
	errRosterFull   = errors.New("roster: roster full")
)

// room reports errRosterFull when user's roster has limit items or more
// and none for contact. It reads before the change's transaction: the cap
// guards against abuse, it is not an exact count under concurrent sets.
func (m *Module) room(ctx context.Context, user, contact string, limit int) error {
	if limit <= 0 {
		return nil
	}
	items, _, err := m.Store.Roster(ctx, user)
	if err != nil {
		return err
	}
	if len(items) >= limit && !slices.ContainsFunc(items, func(it storage.RosterItem) bool { return it.Contact == contact }) {
		return errRosterFull
	}
	return nil
}

// available delivers the pending subscription requests to a session that
// has just become available (RFC 6121 3.1.3: at each login until they are
// answered). It runs after the presence module's broadcast and probes,
// which were queued before the session became available.
func (m *Module) available(c *hook.Ctx, _ hook.Event) hook.Verdict {
	sess, log := c.Session, c.Log
	job := func(ctx context.Context) {
		reqs, err := m.Store.Requests(ctx, sess.Local())
		if err != nil {
			log.Error("subscription requests read failed", zap.String("user", sess.Local()), zap.Error(err))
			return
		}
		for _, r := range reqs {
			if !sess.Deliver(slices.Clone(r.Stanza)) {
				return
			}
		}
	}
	if c.Conn == nil {
		if !c.Host.Go(job) {
			log.Warn("subscription requests not delivered: worker queue full", zap.String("jid", sess.Full()))
		}
		return hook.Continue
	}
	c.Conn.Async(func(ctx context.Context) func(*hook.Ctx) {
		job(ctx)
		return nil
	}, func(*hook.Ctx) {
		log.Warn("subscription requests not delivered: worker queue full", zap.String("jid", sess.Full()))
	})
	return hook.Continue
}

// appendItem appends one <item/> (RFC 6121 2.1.2).
func appendItem(b []byte, it storage.RosterItem, remove bool) []byte {
	b = append(b, `<item jid='`...)
	b = stanza.AppendEscaped(b, it.Contact)
	b = append(b, '\'')
	if remove {
		return append(b, ` subscription='remove'/>`...)
	}
	if it.Name != "" {
		b = append(b, ` name='`...)
		b = stanza.AppendEscaped(b, it.Name)
		b = append(b, '\'')
	}
	b = append(b, ` subscription='`...)
	b = append(b, it.Subscription.String()...)
	b = append(b, '\'')
	if it.AskOut {
		b = append(b, ` ask='subscribe'`...)
	}
	if it.PreApproved {
		b = append(b, ` approved='true'`...)
	}
	if len(it.Groups) == 0 {
		return append(b, `/>`...)
	}
	b = append(b, '>')
	for _, g := range it.Groups {
		b = append(b, `<group>`...)
		b = stanza.AppendEscaped(b, g)
		b = append(b, `</group>`...)
	}
	return append(b, `</item>`...)
}
