// Package ping implements XEP-0199 XMPP Ping for clients pinging the server.
//
// The server's own pings of idle sessions are part of the core, since they
// drive the session's deadline; this module only answers.
package ping

import "github.com/krill-xmpp/krill/hook"

// NS is the XEP-0199 namespace.
const NS = "urn:xmpp:ping"

// Module answers pings addressed to the server or to an account. Its zero
// value is ready.
type Module struct{}

// Name implements hook.Module.
func (Module) Name() string { return "ping" }

// Register implements hook.Module.
func (Module) Register(r *hook.Registrar) error {
	r.IQ(hook.PhaseBound, hook.IQGet, hook.ToNone|hook.ToHost|hook.ToBare, NS, "ping", handle)
	r.IQ(hook.PhaseRemote, hook.IQGet, hook.ToHost|hook.ToBare, NS, "ping", handle)
	r.DiscoFeature(NS)
	return nil
}

// handle answers a ping with an empty result.
func handle(c *hook.Ctx, _ *hook.Stanza) error {
	c.ReplyResult(nil)
	return nil
}
