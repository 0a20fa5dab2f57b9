// Package router is the seam between Krill's core and its feature modules.
//
// A feature (ping, disco, roster, ...) is a Module: it names the requests it
// answers as Routes keyed like Prosody's hooks (kind, namespace, element)
// and the disco features it adds. The core finds the handler for an iq by
// its type and its payload's namespace and name; it knows no feature by name.
// Handlers run on the connection's event loop and must not block: work
// that blocks belongs on the worker pool (a later optional interface).
package router

import (
	"context"
	"errors"
	"fmt"
	"sort"

	"mellium.im/xmpp/jid"
	"mellium.im/xmpp/stanza"
)

// Kind is the kind of stanza a Route matches.
type Kind uint8

// Stanza kinds a module can route on.
const (
	IQGet Kind = iota + 1
	IQSet
)

// Route keys a handler: iq of Kind whose payload is the element NS Local.
type Route struct {
	Kind  Kind
	NS    string
	Local string
}

// Module is one feature of the server.
type Module interface {
	// Name identifies the module in logs and errors.
	Name() string
	// Routes lists the iq payloads the module answers.
	Routes() []Route
	// Features lists the XEP-0030 features the module adds to the domain.
	Features() []string
	// HandleIQ answers one iq addressed to the server (or to the
	// sender's own bare JID) whose payload matches one of Routes.
	HandleIQ(c *Ctx, iq IQ) error
}

// IQ is an iq request as the core parsed it. Payload and its slices are
// valid only during HandleIQ.
type IQ struct {
	ID   string
	Type stanza.IQType
	// From is the sender's full JID, stamped by the server.
	From jid.JID
	// To is the addressee; the zero JID means the server itself.
	To jid.JID
	// Payload is the complete first child element as received.
	Payload []byte
}

// Replier sends a reply to the session that sent the request. The core
// implements it; modules reach it through Ctx.
type Replier interface {
	// ReplyResult sends an iq result with the given payload (may be nil).
	ReplyResult(iq IQ, payload []byte)
	// ReplyError sends an iq error with the given condition.
	ReplyError(iq IQ, typ stanza.ErrorType, cond stanza.Condition)
}

// Ctx is what a handler may use while handling one request.
type Ctx struct {
	// Domain is the server's XMPP domain.
	Domain string
	// Router is the router that dispatched the request (for features).
	Router *Router
	// Replier answers the request.
	Replier
	// Async runs job on the server's worker pool, where blocking (storage)
	// is allowed, with the connection's input paused; the function job
	// returns runs back on the connection's loop, where it may reply. If
	// the pool is full, the core answers resource-constraint itself. job
	// must not use the Replier; HandleIQ returns right after calling Async.
	Async func(job func(ctx context.Context) (then func()))
}

// Errors from Register.
var (
	// ErrDuplicateRoute means two modules claim the same Route.
	ErrDuplicateRoute = errors.New("router: duplicate route")
)

// Router maps Routes to Modules. Build it before the server starts;
// it is read-only (and so safe for concurrent use) afterwards.
// The zero value is an empty router.
type Router struct {
	routes   map[Route]Module
	features []string
	modules  []Module
}

// Register adds modules in order.
func (r *Router) Register(mods ...Module) error {
	if r.routes == nil {
		r.routes = make(map[Route]Module)
	}
	for _, m := range mods {
		for _, rt := range m.Routes() {
			if other, dup := r.routes[rt]; dup {
				return fmt.Errorf("%w: %s and %s both handle {%s}%s", ErrDuplicateRoute, other.Name(), m.Name(), rt.NS, rt.Local)
			}
			r.routes[rt] = m
		}
		r.features = append(r.features, m.Features()...)
		r.modules = append(r.modules, m)
	}
	sort.Strings(r.features)
	r.features = dedupe(r.features)
	return nil
}

// AddFeatures adds features the core itself provides.
func (r *Router) AddFeatures(fs ...string) {
	r.features = append(r.features, fs...)
	sort.Strings(r.features)
	r.features = dedupe(r.features)
}

// Lookup returns the module for a route, or nil.
func (r *Router) Lookup(rt Route) Module { return r.routes[rt] }

// Features returns every feature, sorted. The caller must not modify it.
func (r *Router) Features() []string { return r.features }

// Modules returns the registered modules in order.
func (r *Router) Modules() []Module { return r.modules }

func dedupe(s []string) []string {
	out := s[:0]
	for i, v := range s {
		if i == 0 || v != s[i-1] {
			out = append(out, v)
		}
	}
	return out
}
