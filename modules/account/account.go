// Package account implements XEP-0077 In-Band Registration after
// authentication: the account holder's own registration (§3.1), a password
// change (§3.3) and the removal of the account (§3.2). They are the
// account holder's, so they are allowed whether or not register.enabled
// lets strangers create accounts (that is modules/register, before
// authentication).
//
// A password change replaces the stored SCRAM keys (with a new salt) and
// closes the account's other sessions with not-authorized: a password is
// changed when it may have leaked, and a session opened with the old one
// must not outlive it. (Prosody and ejabberd keep the other sessions; the
// price here is that the user's other clients ask for the new password at
// once instead of at their next login.) The requesting session stays.
package account

import (
	"context"
	"errors"
	"sync/atomic"

	"go.uber.org/zap"
	"mellium.im/xmpp/jid"

	"github.com/krill-xmpp/krill/hook"
	"github.com/krill-xmpp/krill/sasl"
	"github.com/krill-xmpp/krill/stanza"
	"github.com/krill-xmpp/krill/storage"
)

// NS is the XEP-0077 namespace.
const NS = "jabber:iq:register"

// MaxPasswordLen bounds a new password in bytes: PBKDF2 runs over it on a
// worker.
const MaxPasswordLen = 1024

// Texts of the stream errors that end sessions of a changed or removed
// account.
const (
	// RemovedText closes the session that removed its account.
	RemovedText = "the account was removed"
	// KickedText closes the account's other sessions.
	KickedText = "the password of the account was changed, or the account removed"
)

// Store is what the module changes; storage.SQL implements it.
type Store interface {
	// SetCredentials replaces an account's credentials; storage.ErrNotFound
	// when there is no such account.
	SetCredentials(ctx context.Context, username string, c sasl.Credentials) error
	// RemoveAccount deletes an account and its data; storage.ErrNotFound
	// when there is no such account.
	RemoveAccount(ctx context.Context, username string) error
}

// Module answers an authenticated account's jabber:iq:register requests.
// Store must be set.
type Module struct {
	Store Store
	stats *counters
}

type counters struct{ changed, removed atomic.Uint64 }

// Stats counts what the module did since it was created.
type Stats struct {
	PasswordsChanged uint64 // password changes stored
	AccountsRemoved  uint64 // accounts removed by their owners
}

// New returns the module over store.
func New(store Store) Module { return Module{Store: store, stats: new(counters)} }

// Stats returns the module's counters; zero for a Module not made by New.
func (m Module) Stats() Stats {
	if m.stats == nil {
		return Stats{}
	}
	return Stats{PasswordsChanged: m.stats.changed.Load(), AccountsRemoved: m.stats.removed.Load()}
}

// Name implements hook.Module.
func (Module) Name() string { return "account" }

// Register implements hook.Module.
func (m Module) Register(r *hook.Registrar) error {
	if m.Store == nil {
		return errors.New("account: no store")
	}
	to := hook.ToNone | hook.ToHost | hook.ToBare
	r.IQ(hook.PhaseBound, hook.IQGet, to, NS, "query", m.get)
	r.IQ(hook.PhaseBound, hook.IQSet, to, NS, "query", m.set)
	r.DiscoFeature(NS)
	return nil
}

// own reports whether iq addresses the sender's own account (no to, the
// domain, or its own bare JID), and refuses it otherwise: another
// account's registration is not the sender's business.
func own(c *hook.Ctx, iq *hook.Stanza) bool {
	if iq.Local != "" && iq.Local != c.Session.Local() {
		c.ReplyError("auth", "forbidden", "")
		return false
	}
	return true
}

// get answers that the account is registered, with its username (§3.1).
func (m Module) get(c *hook.Ctx, iq *hook.Stanza) error {
	if !own(c, iq) {
		return nil
	}
	// Not in Scratch: ReplyResult builds the reply there.
	b := []byte(`<query xmlns='` + NS + `'><registered/><username>`)
	b = stanza.AppendEscaped(b, c.Session.Local())
	b = append(b, `</username><password/></query>`...)
	c.ReplyResult(b)
	return nil
}

// set removes the account or changes its password.
func (m Module) set(c *hook.Ctx, iq *hook.Stanza) error {
	if !own(c, iq) {
		return nil
	}
	q, ok := parseQuery(iq.Payload)
	switch {
	case !ok:
		c.ReplyError("modify", "bad-request", "")
	case q.remove:
		m.remove(c)
	case q.username == nil || q.password == nil || *q.password == "" || len(*q.password) > MaxPasswordLen:
		c.ReplyError("modify", "bad-request", "")
	default:
		if u, err := jid.New(*q.username, c.Host.Domain(), ""); err != nil || u.Localpart() != c.Session.Local() {
			// Only the account's own password may be changed (§3.3).
			c.ReplyError("cancel", "not-allowed", "")
			return nil
		}
		m.change(c, *q.password)
	}
	return nil
}

// remove deletes the account, answers, and closes the requesting session
// and then every other one (§3.2: the result first, then the stream
// error).
func (m Module) remove(c *hook.Ctx) {
	sess, host, log, ip := c.Session, c.Host, c.Log, c.Conn.IP()
	local := sess.Local()
	c.Conn.Async(func(ctx context.Context) func(*hook.Ctx) {
		if err := m.Store.RemoveAccount(ctx, local); err != nil && !errors.Is(err, storage.ErrNotFound) {
			log.Error("account removal failed", zap.String("user", local), zap.Error(err))
			return func(c *hook.Ctx) { c.ReplyError("wait", "internal-server-error", "") }
		}
		log.Info("account removed by its owner", zap.String("user", local), zap.Stringer("ip", ip))
		if m.stats != nil {
			m.stats.removed.Add(1)
		}
		// Here, not in the continuation: the other sessions go even if
		// the requesting one is gone by now.
		closeOthers(host, sess)
		return func(c *hook.Ctx) {
			c.ReplyResult(nil)
			c.Conn.Fail("not-authorized", RemovedText)
		}
	}, nil)
}

// change stores new credentials for password and closes the account's
// other sessions.
func (m Module) change(c *hook.Ctx, password string) {
	sess, host, log, ip := c.Session, c.Host, c.Log, c.Conn.IP()
	local := sess.Local()
	c.Conn.Async(func(ctx context.Context) func(*hook.Ctx) {
		creds, err := sasl.NewCredentials(password, sasl.DefaultIterations)
		if errors.Is(err, sasl.ErrInvalidPassword) {
			return func(c *hook.Ctx) { c.ReplyError("modify", "not-acceptable", "") }
		}
		if err == nil {
			err = m.Store.SetCredentials(ctx, local, creds)
		}
		if err != nil {
			log.Error("password change failed", zap.String("user", local), zap.Error(err))
			return func(c *hook.Ctx) { c.ReplyError("wait", "internal-server-error", "") }
		}
		log.Info("password changed by its owner", zap.String("user", local), zap.Stringer("ip", ip))
		if m.stats != nil {
			m.stats.changed.Add(1)
		}
		closeOthers(host, sess)
		return func(c *hook.Ctx) { c.ReplyResult(nil) }
	}, nil)
}

// closeOthers closes every bound session of sess's account but sess with
// not-authorized. Any goroutine.
func closeOthers(host hook.Host, sess hook.Session) {
	full := sess.Full()
	host.Sessions(sess.Local(), func(o hook.Session) {
		if o.Full() != full {
			o.Close("not-authorized", KickedText)
		}
	})
}

// query is what a registration set carries.
type query struct {
	username, password *string
	remove             bool
}

// parseQuery reads the <username/>, <password/> and <remove/> children of
// the query; ok is false when the payload or a value cannot be read. It
// scans the payload once without a DOM, on the event loop: the work is
// bounded by the stanza size limit.
func parseQuery(payload []byte) (q query, ok bool) {
	bad := false
	ok = stanza.Children(payload, func(child []byte) bool {
		tag, err := stanza.ParseStartTag(child)
		if err != nil || len(tag.Prefix()) != 0 {
			return true
		}
		if ns, has := tag.AttrString("xmlns"); has && ns != NS {
			return true
		}
		var dst **string
		switch string(tag.Local()) {
		case "remove":
			q.remove = true
			return true
		case "username":
			dst = &q.username
		case "password":
			dst = &q.password
		default:
			return true
		}
		if *dst != nil {
			return true // the first one counts
		}
		v, err := stanza.Text(child)
		if err != nil {
			bad = true // markup or a bad reference in a text field
			return false
		}
		*dst = &v
		return true
	})
	return q, ok && !bad
}
