// Package ping implements XEP-0199 XMPP Ping for clients pinging the server.
//
// The server's own pings of idle sessions are part of the core, since they
// drive the session's deadline; this module only answers.
package ping

import "github.com/krill-xmpp/krill/router"

// NS is the XEP-0199 namespace.
const NS = "urn:xmpp:ping"

// Module answers pings addressed to the server. Its zero value is ready.
type Module struct{}

// Name implements router.Module.
func (Module) Name() string { return "ping" }

// Routes implements router.Module.
func (Module) Routes() []router.Route {
	return []router.Route{{Kind: router.IQGet, NS: NS, Local: "ping"}}
}

// Features implements router.Module.
func (Module) Features() []string { return []string{NS} }

// HandleIQ implements router.Module: a ping gets an empty result.
func (Module) HandleIQ(c *router.Ctx, iq router.IQ) error {
	c.ReplyResult(iq, nil)
	return nil
}
