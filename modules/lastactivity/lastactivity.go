// Package lastactivity implements XEP-0012 Last Activity: a query to the
// domain is answered with the server's uptime in seconds; a query to an
// account's bare JID (or with no to, the sender's own) with how long ago
// its last resource went unavailable and the status it gave then.
//
// An account's last activity is shown to the account itself and to the
// contacts with a subscription to its presence (from or both in the
// account's roster), who see its presence anyway; to others it is
// forbidden. An account with an available resource was active 0 seconds
// ago. The time is written on a worker when the account's last available
// resource goes unavailable (by presence or by closing), not on each
// presence.
package lastactivity

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/krill-xmpp/krill/hook"
	"github.com/krill-xmpp/krill/sasl"
	"github.com/krill-xmpp/krill/stanza"
	"github.com/krill-xmpp/krill/storage"
)

// NS is the XEP-0012 namespace.
const NS = "jabber:iq:last"

// MaxStatusLen bounds the status text kept as last activity, in bytes.
const MaxStatusLen = 1024

// nsClient is the namespace of a client stream's stanzas and of their
// <status/>.
const nsClient = "jabber:client"

// processStart is when this package was initialised: the default start.
var processStart = time.Now()

// Store keeps accounts' last activity and what decides who may read it;
// storage.SQL implements it.
type Store interface {
	// Credentials tells whether the account exists (storage.ErrNotFound).
	Credentials(ctx context.Context, user string) (sasl.Credentials, error)
	// Roster returns the account's roster.
	Roster(ctx context.Context, user string) ([]storage.RosterItem, uint64, error)
	// LastActivity returns the stored activity; false when never stored.
	LastActivity(ctx context.Context, user string) (storage.Activity, bool, error)
	// SetLastActivities stores several in one transaction, skipping
	// accounts that are gone.
	SetLastActivities(ctx context.Context, acts map[string]storage.Activity) error
}

// Module answers last-activity queries and records accounts' activity.
type Module struct {
	// Started is when the server started; the zero value means when the
	// process started.
	Started time.Time
	// Now returns the current time; nil means time.Now (tests set it).
	Now func() time.Time
	// Store keeps accounts' last activity; nil answers only queries to
	// the server.
	Store Store
	// FlushDelay is how long a recorded activity waits to be written with
	// others; zero means the package's FlushDelay.
	FlushDelay time.Duration

	w *writer // batches the writes; made by Register
}

// Name implements hook.Module.
func (*Module) Name() string { return "lastactivity" }

// Register implements hook.Module.
func (m *Module) Register(r *hook.Registrar) error {
	r.IQ(hook.PhaseBound, hook.IQGet, hook.ToHost, NS, "query", m.uptime)
	r.IQ(hook.PhaseRemote, hook.IQGet, hook.ToHost, NS, "query", m.uptime)
	r.DiscoFeature(NS)
	if m.Store != nil {
		m.w = &writer{store: m.Store, delay: m.FlushDelay}
		if m.w.delay <= 0 {
			m.w.delay = FlushDelay
		}
		r.IQ(hook.PhaseBound, hook.IQGet, hook.ToAccount, NS, "query", m.account)
		r.IQ(hook.PhaseRemote, hook.IQGet, hook.ToBare, NS, "query", m.account)
		r.AccountFeature(NS)
		r.On(hook.Unavailable, m.unavailable)
	}
	return nil
}

func (m *Module) now() time.Time {
	if m.Now != nil {
		return m.Now()
	}
	return time.Now()
}

// appendQuery appends the reply's payload.
func appendQuery(b []byte, seconds int64, status string) []byte {
	b = append(b, `<query xmlns='`+NS+`' seconds='`...)
	b = strconv.AppendInt(b, max(0, seconds), 10)
	if status == "" {
		return append(b, `'/>`...)
	}
	b = append(b, `'>`...)
	b = stanza.AppendEscaped(b, status)
	return append(b, `</query>`...)
}

// uptime answers with the server's uptime, in whole seconds (XEP-0012 §5).
func (m *Module) uptime(c *hook.Ctx, _ *hook.Stanza) error {
	start := m.Started
	if start.IsZero() {
		start = processStart
	}
	c.ReplyResult(appendQuery(nil, int64(m.now().Sub(start)/time.Second), ""))
	return nil
}

// account answers a query to an account's bare JID, or with no to for the
// sender's own (XEP-0012 §4).
func (m *Module) account(c *hook.Ctx, iq *hook.Stanza) error {
	self := "" // a remote sender (hook.PhaseRemote) has no local account
	if c.Session != nil {
		self = c.Session.Local()
	}
	user := iq.Local
	if user == "" {
		user = self
	}
	host, log := c.Host, c.Log
	requester := iq.FromBare()
	reply := func(typ, cond string) func(*hook.Ctx) {
		return func(c *hook.Ctx) { c.ReplyError(typ, cond, "") }
	}
	c.Conn.Async(func(ctx context.Context) func(*hook.Ctx) {
		if _, err := m.Store.Credentials(ctx, user); err != nil {
			if errors.Is(err, storage.ErrNotFound) {
				return reply("cancel", "service-unavailable")
			}
			log.Error("account read for last activity failed", zap.String("user", user), zap.Error(err))
			return reply("wait", "internal-server-error")
		}
		if user != self {
			items, _, err := m.Store.Roster(ctx, user)
			if err != nil {
				log.Error("roster read for last activity failed", zap.String("user", user), zap.Error(err))
				return reply("wait", "internal-server-error")
			}
			if !subscribed(items, requester) {
				return reply("auth", "forbidden")
			}
		}
		if anyAvailable(host, user, "") {
			b := appendQuery(nil, 0, "")
			return func(c *hook.Ctx) { c.ReplyResult(b) }
		}
		a, ok := m.w.get(user)
		var err error
		if !ok {
			a, ok, err = m.Store.LastActivity(ctx, user)
		}
		switch {
		case err != nil:
			log.Error("last activity read failed", zap.String("user", user), zap.Error(err))
			return reply("wait", "internal-server-error")
		case !ok:
			return reply("cancel", "item-not-found")
		}
		b := appendQuery(nil, int64(m.now().Sub(a.At)/time.Second), a.Status)
		return func(c *hook.Ctx) { c.ReplyResult(b) }
	}, nil)
	return nil
}

// subscribed reports whether contact has a subscription to the presence
// of the roster's owner.
func subscribed(items []storage.RosterItem, contact string) bool {
	for _, it := range items {
		if it.Contact == contact {
			return it.Subscription == storage.SubFrom || it.Subscription == storage.SubBoth
		}
	}
	return false
}

// anyAvailable reports whether a session of user other than the one bound
// to except (a full JID) is available. Any goroutine.
func anyAvailable(host hook.Host, user, except string) bool {
	found := false
	host.Sessions(user, func(o hook.Session) {
		found = found || o.Full() != except && o.Available()
	})
	return found
}

// unavailable records the account's last activity when a session goes
// unavailable, by an unavailable presence (c.Stanza, whose status is
// kept) or by closing (no stanza), unless another of its resources is
// still available. Writes are batched (see FlushDelay).
func (m *Module) unavailable(c *hook.Ctx, _ hook.Event) hook.Verdict {
	sess := c.Session
	if sess == nil {
		return hook.Continue
	}
	status := ""
	if st := c.Stanza; st != nil && st.Kind == hook.Presence {
		status = presenceStatus(st.Raw)
	}
	m.w.add(c.Host, c.Log, sess.Local(), entry{act: storage.Activity{At: m.now(), Status: status}, full: sess.Full()})
	return hook.Continue
}

// Stop implements hook.Stopper: what is pending is written.
func (m *Module) Stop(ctx context.Context) {
	if m.w != nil {
		m.w.stop(ctx)
	}
}

// Counters implements hook.Counter: batches written, activities written,
// activities whose write failed and activities dropped because the worker
// queue was full.
func (m *Module) Counters(fn func(event string, n uint64)) {
	if m.w == nil {
		return
	}
	fn("flushes", m.w.flushes.Load())
	fn("written", m.w.written.Load())
	fn("failed", m.w.failed.Load())
	fn("dropped", m.w.dropped.Load())
}

// presenceStatus returns the text of a presence's first <status/>, cut to
// MaxStatusLen bytes (at a character boundary); "" if none or malformed.
// Its work is bounded by the stanza size limit.
func presenceStatus(raw []byte) string {
	var status string
	stanza.Children(raw, func(child []byte) bool {
		tag, err := stanza.ParseStartTag(child)
		if err != nil || string(tag.Local()) != "status" || tag.Prefix() != nil {
			return true
		}
		if ns, ok := tag.AttrString("xmlns"); ok && ns != nsClient {
			return true
		}
		text, err := stanza.Unescape(nil, stanza.Inner(child))
		if err != nil {
			return false
		}
		if len(text) > MaxStatusLen {
			text = text[:MaxStatusLen]
		}
		status = strings.ToValidUTF8(string(text), "")
		return false
	})
	return status
}
