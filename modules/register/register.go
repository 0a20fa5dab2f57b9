// Package register implements XEP-0077 In-Band Registration before
// authentication: a client that has not logged in creates an account.
//
// It is off unless register.enabled. It is part of the stream
// negotiation, so the pre-auth deadline, size limits and caps apply;
// a refused attempt counts like a failed SASL attempt (Conn.CountFailure);
// each source address may create at most register.max_per_ip accounts per
// register.window, addresses counted by prefix (preauth.ipv4_prefix,
// preauth.ipv6_prefix: an IPv6 /64 is one address by default); and since a password travels, it is offered only on
// encrypted streams unless c2s.allow_plaintext.
package register

import (
	"context"
	"errors"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"mellium.im/xmpp/jid"

	"github.com/krill-xmpp/krill/hook"
	"github.com/krill-xmpp/krill/ratelimit"
	"github.com/krill-xmpp/krill/sasl"
	"github.com/krill-xmpp/krill/stanza"
	"github.com/krill-xmpp/krill/storage"
)

// Namespaces of XEP-0077.
const (
	// NS is the namespace of the registration query.
	NS = "jabber:iq:register"
	// NSFeature is the stream feature's namespace.
	NSFeature = "http://jabber.org/features/iq-register"
)

// MaxPasswordLen bounds a password (PBKDF2 runs over it on a worker).
const MaxPasswordLen = 1024

// form is the answer to a registration get (§3.1).
const form = `<query xmlns='` + NS + `'><instructions>Choose a username and password.</instructions><username/><password/></query>`

// Accounts creates accounts; storage.SQL implements it.
type Accounts interface {
	// AddAccount creates an account; storage.ErrExists if the name is
	// taken.
	AddAccount(ctx context.Context, username string, c sasl.Credentials) error
}

// Module is XEP-0077 registration. Enabled and AllowPlaintext are the
// start-up values of register.enabled and c2s.allow_plaintext (both need a
// restart to change): they decide which handlers and stream features are
// registered, which the core builds once. The rate limit follows the live
// configuration. Use it by pointer: it holds its counters.
type Module struct {
	Accounts       Accounts
	Enabled        bool
	AllowPlaintext bool

	window      ratelimit.Window
	registered  atomic.Uint64
	rateLimited atomic.Uint64
}

// Stats are the module's counters since start.
type Stats struct {
	// Registered counts accounts created.
	Registered uint64
	// RateLimited counts attempts refused by register.max_per_ip (logged
	// only at debug).
	RateLimited uint64
}

// Stats returns the counters. Safe for concurrent use.
func (m *Module) Stats() Stats {
	return Stats{Registered: m.registered.Load(), RateLimited: m.rateLimited.Load()}
}

// Name implements hook.Module.
func (*Module) Name() string { return "register" }

// Register implements hook.Module. With registration off nothing is
// registered, and the core closes a stream that tries with not-authorized.
func (m *Module) Register(r *hook.Registrar) error {
	// XEP-0077 after authentication (the account's own registration,
	// password change, removal) is modules/account: it is the account
	// holder's, so it runs whether or not strangers may register.
	if !m.Enabled {
		return nil
	}
	to := hook.ToNone | hook.ToHost
	r.IQ(hook.PhasePreAuth, hook.IQGet, to, NS, "query", m.handleGet)
	r.IQ(hook.PhasePreAuth, hook.IQSet, to, NS, "query", m.handleSet)
	feature := func(b []byte) []byte { return append(b, `<register xmlns='`+NSFeature+`'/>`...) }
	r.StreamFeature(hook.PhasePreAuth, true, feature)
	if m.AllowPlaintext {
		r.StreamFeature(hook.PhasePreAuth, false, feature)
	}
	return nil
}

// offered reports whether registration may run on the connection, and
// closes it as the core would when not.
func (m *Module) offered(c *hook.Ctx) bool {
	if c.Conn.Secure() || m.AllowPlaintext {
		return true
	}
	c.Conn.Fail("not-authorized", "registration needs an encrypted stream")
	return false
}

// handleGet returns the registration form (§3.1).
func (m *Module) handleGet(c *hook.Ctx, _ *hook.Stanza) error {
	if m.offered(c) {
		c.ReplyResult([]byte(form))
	}
	return nil
}

// refuse answers the request with an error and counts a failed attempt.
func refuse(c *hook.Ctx, typ, cond string) {
	c.ReplyError(typ, cond, "")
	c.Conn.CountFailure()
}

// handleSet creates an account (§3.1).
func (m *Module) handleSet(c *hook.Ctx, st *hook.Stanza) error {
	if !m.offered(c) {
		return nil
	}
	username, password, ok := parseQuery(st.Payload)
	switch {
	case !ok:
		c.ReplyError("modify", "bad-request", "")
		return nil
	case username == nil || password == nil || *password == "" || len(*password) > MaxPasswordLen:
		refuse(c, "modify", "not-acceptable")
		return nil
	}
	local, err := normalizeLocal(*username, c.Host.Domain())
	if err != nil {
		refuse(c, "modify", "not-acceptable")
		return nil
	}
	cfg := c.Host.Config()
	ip := c.Conn.IP()
	limit := ratelimit.Limit{Max: cfg.Register.MaxPerIP, Window: cfg.Register.Window,
		Prefixes: ratelimit.Prefixes{V4: cfg.Preauth.IPv4Prefix, V6: cfg.Preauth.IPv6Prefix}}
	if !m.window.Allow(ip, time.Now(), limit) {
		// Debug: one line per refused attempt would let a client flood the log.
		c.Log.Debug("registration refused", zap.String("reason", "rate limit"), zap.Stringer("ip", ip))
		m.rateLimited.Add(1)
		refuse(c, "wait", "resource-constraint")
		return nil
	}
	pw, accounts, log := *password, m.Accounts, c.Log
	cl := hook.ClusterOf(c.Host)
	c.Conn.Async(func(ctx context.Context) func(*hook.Ctx) {
		if cl != nil && limit.Max > 0 {
			// In a cluster the limit holds across the nodes: a
			// registration is rare and already on a worker, worth a
			// key-value round trip. When the store fails, the node's
			// own count above still applies.
			ok, err := cl.Count(ctx, "register/"+limit.Prefixes.Key(ip).String(), limit.Window, limit.Max)
			if err != nil {
				log.Warn("cluster-wide registration count failed", zap.Error(err))
			} else if !ok {
				log.Debug("registration refused", zap.String("reason", "cluster rate limit"), zap.Stringer("ip", ip))
				m.rateLimited.Add(1)
				return func(c *hook.Ctx) { refuse(c, "wait", "resource-constraint") }
			}
		}
		creds, err := sasl.NewCredentials(pw, sasl.DefaultIterations)
		if err == nil {
			err = accounts.AddAccount(ctx, local, creds)
		}
		switch {
		case err == nil:
			log.Info("account registered", zap.String("user", local), zap.Stringer("ip", ip))
			m.registered.Add(1)
			return func(c *hook.Ctx) { c.ReplyResult(nil) }
		case errors.Is(err, storage.ErrExists):
			return func(c *hook.Ctx) { refuse(c, "cancel", "conflict") }
		case errors.Is(err, sasl.ErrInvalidPassword):
			return func(c *hook.Ctx) { refuse(c, "modify", "not-acceptable") }
		default:
			log.Error("registration failed", zap.String("user", local), zap.Error(err))
			return func(c *hook.Ctx) { refuse(c, "wait", "internal-server-error") }
		}
	}, func(c *hook.Ctx) { refuse(c, "wait", "resource-constraint") })
	return nil
}

// parseQuery returns the text of the query's <username/> and <password/>
// (nil when absent); ok is false when the payload or a value cannot be
// read. It scans the payload once, without a DOM: the stanza is bounded by
// the pre-auth size limit, and this runs on the event loop.
func parseQuery(payload []byte) (username, password *string, ok bool) {
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
		case "username":
			dst = &username
		case "password":
			dst = &password
		default:
			return true
		}
		v, err := stanza.Text(child)
		if err != nil {
			bad = true // markup or a bad reference in a text field
			return false
		}
		*dst = &v
		return true
	}) && !bad
	return username, password, ok
}

// normalizeLocal returns the normalised localpart of a username, as the
// SASL mechanisms normalise it at login.
func normalizeLocal(username, domain string) (string, error) {
	j, err := jid.New(username, domain, "")
	if err != nil {
		return "", err
	}
	if j.Localpart() == "" {
		return "", errors.New("register: empty username")
	}
	return j.Localpart(), nil
}

// Counters implements hook.Counter: accounts "registered", attempts
// "rate_limited".
func (m *Module) Counters(fn func(event string, n uint64)) {
	fn("registered", m.registered.Load())
	fn("rate_limited", m.rateLimited.Load())
}
