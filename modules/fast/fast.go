// Package fast is the XEP-0484 (Fast Authentication Streamlining Tokens)
// module: it advertises <fast/> in SASL2's inline features, issues a token
// to a password login that asks for one (<request-token/>), and checks
// token logins (HT-SHA-256-*) for the core. The tokens themselves (their
// derivation, rotation, expiry, replay counter and revocation) are package
// github.com/krill-xmpp/krill/fast's; this package only plugs them into
// the hook core's SASL2 extension points (package hook, sasl2.go).
package fast

import (
	"context"
	"errors"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	tokens "github.com/krill-xmpp/krill/fast"
	"github.com/krill-xmpp/krill/hook"
	"github.com/krill-xmpp/krill/sasl"
	"github.com/krill-xmpp/krill/stanza"
)

// SweepEvery is how often, at most, the expired tokens of every account
// are deleted, on the worker that has just issued or checked a token. An
// expired token never logs in, and issuing a token already deletes its
// account's expired ones: sweeping only reclaims the rows of accounts
// that stopped logging in, so an hour is plenty.
const SweepEvery = time.Hour

// Module is the FAST module. Register it only when fast.enabled is on.
type Module struct {
	// Tokens issues and checks the tokens; required.
	Tokens *tokens.Tokens

	lastSweep atomic.Int64 // Unix seconds of the last sweep
}

// Name implements hook.Module.
func (m *Module) Name() string { return "fast" }

// Register implements hook.Module.
func (m *Module) Register(r *hook.Registrar) error {
	if m.Tokens == nil {
		return errors.New("fast: no token service")
	}
	// All three over TLS (SASL2 is offered over TLS only), like the
	// XEP-0440 list of channel-binding types next to it.
	mechs := sasl.HTMechanisms()
	feature := tokens.AppendFeature(nil, mechs)
	r.SASL2Feature(func(b []byte) []byte { return append(b, feature...) })
	r.SASL2Tokens(mechs, m.verify)
	r.SASL2Inline(tokens.NS, "request-token", hook.SASL2Inline{Request: m.request, Success: m.issue})
	return nil
}

// verify checks a token login, on a worker.
func (m *Module) verify(ctx context.Context, ht *sasl.HT, a *hook.Auth, l hook.TokenLogin) (additional, children []byte, err error) {
	res, err := m.Tokens.Authenticate(ctx, ht, tokens.Login{
		Username:     l.Username,
		Client:       a.UserAgent,
		Count:        l.Count,
		Invalidate:   l.Invalidate,
		RequestToken: l.RequestToken,
	})
	if err != nil {
		return nil, nil, err
	}
	m.sweep(ctx)
	if res.Token != nil {
		children = res.Token.AppendXML(nil)
	}
	return res.Additional, children, nil
}

// errMechanism and errNoClient refuse a <request-token/> before the
// exchange starts (malformed-request, with the error as text).
var (
	errMechanism = errors.New("unknown token mechanism")
	errNoClient  = errors.New("a token needs <user-agent id='...'/>")
)

// request checks a <request-token mechanism/> before the exchange and
// keeps the mechanism for issue. A token login's request is the
// verifier's (the token it issues replaces the one used): nil state.
func (m *Module) request(a *hook.Auth, elem []byte) (any, error) {
	if sasl.IsHT(a.Mechanism) {
		return nil, nil
	}
	tag, err := stanza.ParseStartTag(elem)
	if err != nil {
		return nil, err
	}
	mech, _ := tag.AttrString("mechanism")
	if !sasl.IsHT(mech) {
		return nil, errMechanism
	}
	if a.UserAgent == "" {
		return nil, errNoClient
	}
	return mech, nil
}

// issue appends a fresh token to the <success/> of a password login that
// asked for one; the token is stored on a worker. A token that cannot be
// issued is no reason to fail the login: the client keeps its password.
func (m *Module) issue(c *hook.Ctx, a *hook.Auth, state any, done func([]byte, bool)) {
	mech, _ := state.(string)
	if mech == "" {
		done(nil, false)
		return
	}
	user, client := c.Session.Local(), a.UserAgent
	c.Conn.Async(func(ctx context.Context) func(*hook.Ctx) {
		tok, err := m.Tokens.Issue(ctx, user, client, mech)
		m.sweep(ctx)
		return func(c *hook.Ctx) {
			if err != nil {
				c.Log.Warn("fast: token not issued", zap.String("user", user), zap.Error(err))
				done(nil, false)
				return
			}
			done(tok.AppendXML(c.Scratch()), false)
		}
	}, func(*hook.Ctx) { done(nil, false) })
}

// sweep deletes the expired tokens if SweepEvery has passed since the
// last sweep: one bounded DELETE, on the worker it is called from, by one
// worker at a time.
func (m *Module) sweep(ctx context.Context) {
	now := time.Now().Unix()
	last := m.lastSweep.Load()
	if now-last < int64(SweepEvery/time.Second) || !m.lastSweep.CompareAndSwap(last, now) {
		return
	}
	_, _ = m.Tokens.Sweep(ctx) // housekeeping: the next sweep retries
}

// Stop implements hook.Stopper: the replay counts waiting in memory are
// written (package fast, counts.go).
func (m *Module) Stop(ctx context.Context) { m.Tokens.Flush(ctx) }

// Counters implements hook.Counter: replay counts written behind, and
// such writes that failed (kept and tried again).
func (m *Module) Counters(fn func(event string, n uint64)) {
	written, failed := m.Tokens.CountStats()
	fn("counts_written", written)
	fn("counts_failed", failed)
}
