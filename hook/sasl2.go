package hook

import (
	"context"

	"github.com/krill-xmpp/krill/sasl"
)

// Inline features of SASL2 (XEP-0388) and Bind 2 (XEP-0386).
//
// A client that logs in with SASL2 may ask, inside its <authenticate/>
// element, for more than authentication: a resource (Bind 2's <bind/>),
// the resumption of a stream management session (<resume/>), a FAST token
// (XEP-0484's <request-token/>), and inside <bind/> the features its new
// session starts with (carbons, stream management, client state). The
// core owns SASL2 and Bind 2 themselves; each inline feature belongs to
// its module, which registers two things:
//
//   - its advertisement: Registrar.SASL2Feature appends an element to the
//     <inline/> child of SASL2's <authentication/> stream feature (stream
//     management's <sm xmlns='urn:xmpp:sm:3'/>), Registrar.Bind2Feature
//     adds a <feature var/> to Bind 2's own <inline/> list;
//   - its handler: Registrar.SASL2Inline for a child of <authenticate/>,
//     Registrar.Bind2Inline for a child of <bind/>.
//
// The order of events for one <authenticate/>:
//
//  1. On the loop, before the exchange starts and before any credential is
//     looked up, each SASL2 inline handler whose element the request
//     carries gets SASL2Inline.Request with the element and the Auth (the
//     mechanism chosen, the user-agent). It keeps what it needs in the
//     state it returns: the element's bytes are not kept. An error fails
//     the authentication (malformed-request) before it starts.
//  2. The exchange runs (challenges, responses) under the pre-auth policy.
//  3. On failure, abort or close, each handler that accepted a request
//     gets SASL2Inline.Failure; nothing else happens (XEP-0388: inline features
//     of a failed authentication are not processed).
//  4. On success, the handlers get SASL2Inline.Success in registration
//     order, one after the other, each on the loop with a Ctx for the
//     authenticated session (no resource yet). Each calls done once, at
//     once or later on the loop (a resumption takes over a session on
//     another loop first), with the children to append to <success/> and
//     whether it resumed a session. A resumption ends the chain: the
//     stream is re-established, <bind/> is ignored and no stream features
//     follow (XEP-0198 section 6).
//  5. Unless resumed, a <bind/> binds a resource, then each Bind 2 inline
//     handler whose element <bind/> carries runs with a Ctx for the bound
//     session and appends its answer (if any) to <bound/>.
//  6. The core writes <success/> with the authorization identifier, the
//     mechanism's additional data, the handlers' children and <bound/>,
//     then the stream features of the authenticated stream (none after a
//     resumption). There is no stream restart.
//
// A FAST implementation (XEP-0484) registers SASL2Inline for
// {urn:xmpp:fast:0}request-token and {urn:xmpp:fast:0}fast: Request sees
// the element and Auth.Mechanism before the exchange (and may refuse),
// Success appends <token xmlns='urn:xmpp:fast:0' expiry token/> to
// <success/> and calls done(b, false), Failure forgets what Request
// kept. Auth.UserAgent identifies the device a token is bound to.

// A token login (XEP-0484's HT-* mechanisms) is checked by the one module
// that registered Registrar.SASL2Tokens: its mechanisms are accepted in
// <authenticate/> only, never in RFC 6120 SASL nor listed among SASL2's
// <mechanism/>s (the module advertises them in its own inline feature).
// The core parses the HT initial response and XEP-0484's <fast/> on the
// loop, then calls the TokenVerifier on a worker; a failure counts like a
// wrong password when sasl.CheckedCredential says so. The verifier's
// children (a fresh token) go into <success/> before those of the inline
// handlers.

// TokenLogin is what a token login's <authenticate/> says beside the
// mechanism's message.
type TokenLogin struct {
	// Username is the account's localpart, normalised.
	Username string
	// Count is XEP-0484's <fast count='...'/>, or -1 without one.
	Count int64
	// Invalidate is <fast invalidate='true'/> (or '1').
	Invalidate bool
	// RequestToken is the mechanism of <request-token/>, "" without one.
	RequestToken string
}

// TokenVerifier checks a token login on a worker: ht has been started on
// the loop (it holds the client's proof and the channel-binding data). It
// returns the mechanism's additional data for <success/> and children to
// append to it (a fresh <token/>), or an error wrapping a sasl sentinel
// (sasl.Condition gives the <failure/> condition; any other error is
// temporary-auth-failure). It may block on storage.
type TokenVerifier func(ctx context.Context, ht *sasl.HT, a *Auth, l TokenLogin) (additional, children []byte, err error)

// Auth describes a SASL2 authentication to its inline handlers. It is
// valid for the exchange; handlers must not keep it after Success or
// Failure.
type Auth struct {
	// Mechanism is the SASL mechanism the client chose.
	Mechanism string
	// UserAgent is the user-agent id the client sent (a UUID, validated),
	// "" when it sent none.
	UserAgent string
	// Software and Device are the user-agent's descriptions ("" when
	// absent), capped in size by the core. They must not be shown to
	// other entities (XEP-0388).
	Software, Device string
}

// SASL2Inline handles one inline element of SASL2's <authenticate/>.
// Request and Failure may be nil; Success may not.
type SASL2Inline struct {
	// Request is called on the loop when <authenticate/> carries the
	// element, before the exchange starts. It returns what Success and
	// Failure need (the element's bytes are valid only during the call),
	// or an error, which fails the authentication with malformed-request
	// and the error's text.
	Request func(a *Auth, elem []byte) (state any, err error)
	// Success runs on the loop after the credentials were verified, with
	// a Ctx for the authenticated session (Session unbound, Conn the
	// connection). It must call done exactly once, on the loop, with b
	// (from c.Scratch or not) holding the children to append to
	// <success/>, possibly none, and resumed true only if it took over a
	// session (stream management). c is valid only during the call. A
	// handler that finishes later does so through Conn.Async or
	// Resumer.Resume, which hold the connection's input meanwhile, and
	// calls done from the continuation, which gets its own Ctx.
	Success func(c *Ctx, a *Auth, state any, done func(b []byte, resumed bool))
	// Failure is called on the loop when the authentication failed or was
	// aborted after Request accepted the element, or the connection
	// closed before the outcome.
	Failure func(a *Auth, state any)
}

// Bind2Handler enables a feature for a session that Bind 2 has just bound:
// elem is the client's request inside <bind/> (valid during the call
// only), c.Session the bound session. It appends its answer for <bound/>
// to b, if any (stream management's <enabled/>), and returns b. It runs
// before <success/> is written and before the Bound event fires; it must
// not write to the connection.
type Bind2Handler func(c *Ctx, elem []byte, b []byte) []byte

type sasl2Entry struct {
	ns, local string
	h         SASL2Inline
}

type bind2Key struct{ ns, local string }

// SASL2Feature registers f to add elements to the <inline/> child of
// SASL2's <authentication/> stream feature (stream management's <sm/>).
// Like StreamFeature, f must depend only on the configuration.
func (r *Registrar) SASL2Feature(f FeatureFunc) {
	if f == nil {
		r.fail("%w: nil SASL2 feature", ErrInvalid)
		return
	}
	r.g.sasl2Features = append(r.g.sasl2Features, f)
}

// Bind2Feature adds the features named by vars (disco features or
// namespaces) to Bind 2's list of inline features.
func (r *Registrar) Bind2Feature(vars ...string) {
	r.g.bind2Vars = append(r.g.bind2Vars, vars...)
}

// SASL2Inline registers h for the element {ns}local inside SASL2's
// <authenticate/>.
func (r *Registrar) SASL2Inline(ns, local string, h SASL2Inline) {
	if ns == "" || local == "" || h.Success == nil {
		r.fail("%w: SASL2 inline {%s}%s", ErrInvalid, ns, local)
		return
	}
	for _, e := range r.g.sasl2 {
		if e.ns == ns && e.local == local {
			r.fail("%w: SASL2 inline {%s}%s", ErrDuplicate, ns, local)
			return
		}
	}
	r.g.sasl2 = append(r.g.sasl2, sasl2Entry{ns: ns, local: local, h: h})
}

// Bind2Inline registers h for the element {ns}local inside Bind 2's
// <bind/>.
func (r *Registrar) Bind2Inline(ns, local string, h Bind2Handler) {
	if ns == "" || local == "" || h == nil {
		r.fail("%w: Bind 2 inline {%s}%s", ErrInvalid, ns, local)
		return
	}
	if r.g.bind2 == nil {
		r.g.bind2 = make(map[bind2Key]Bind2Handler)
	}
	k := bind2Key{ns, local}
	if _, dup := r.g.bind2[k]; dup {
		r.fail("%w: Bind 2 inline {%s}%s", ErrDuplicate, ns, local)
		return
	}
	r.g.bind2[k] = h
}

// SASL2Tokens registers v to check logins with the token mechanisms
// mechs (sasl.HTMechanisms), which SASL2's <authenticate/> then accepts
// over TLS. At most one module registers it.
func (r *Registrar) SASL2Tokens(mechs []string, v TokenVerifier) {
	if len(mechs) == 0 || v == nil {
		r.fail("%w: SASL2 token verifier", ErrInvalid)
		return
	}
	if r.g.tokens != nil {
		r.fail("%w: SASL2 token verifier", ErrDuplicate)
		return
	}
	r.g.tokenMechs, r.g.tokens = mechs, v
}

// TokenVerifier returns the verifier of token mechanism mech, or nil when
// no module registered mech.
func (g *Registry) TokenVerifier(mech string) TokenVerifier {
	for _, m := range g.tokenMechs {
		if m == mech {
			return g.tokens
		}
	}
	return nil
}

// SASL2Features appends the modules' SASL2 inline advertisements to b.
func (g *Registry) SASL2Features(b []byte) []byte {
	for _, f := range g.sasl2Features {
		b = f(b)
	}
	return b
}

// Bind2Features returns the vars of Bind 2's inline features, in
// registration order. The caller must not modify the slice.
func (g *Registry) Bind2Features() []string { return g.bind2Vars }

// SASL2Inline returns the index of the handler of {ns}local inside
// <authenticate/>, or -1. Handlers run in index order.
func (g *Registry) SASL2Inline(ns, local string) int {
	for i, e := range g.sasl2 {
		if e.ns == ns && e.local == local {
			return i
		}
	}
	return -1
}

// SASL2Handler returns the handler at index i (from SASL2Inline).
func (g *Registry) SASL2Handler(i int) *SASL2Inline { return &g.sasl2[i].h }

// Bind2Inline returns the handler of {ns}local inside <bind/>, or nil.
func (g *Registry) Bind2Inline(ns, local string) Bind2Handler {
	return g.bind2[bind2Key{ns, local}]
}
