package hook

import (
	"context"
	"net/netip"
	"strings"

	"go.uber.org/zap"

	"github.com/krill-xmpp/krill/config"
	"github.com/krill-xmpp/krill/stanza"
)

// Kind is a stanza's kind.
type Kind uint8

// Stanza kinds.
const (
	Message Kind = iota
	Presence
	IQ
	numKinds
)

// KindOf returns the kind of a top-level element's local name.
func KindOf(local []byte) (Kind, bool) {
	switch string(local) {
	case "message":
		return Message, true
	case "presence":
		return Presence, true
	case "iq":
		return IQ, true
	}
	return 0, false
}

// String returns the element name of the kind.
func (k Kind) String() string {
	switch k {
	case Message:
		return "message"
	case Presence:
		return "presence"
	case IQ:
		return "iq"
	}
	return "kind(?)"
}

// Addr is how a stanza is addressed, as a bit set so that a handler can
// take several; a stanza has exactly one bit.
type Addr uint8

// Addressing of a stanza, from the server's point of view.
const (
	// ToNone: no to attribute. The server handles it on behalf of the
	// sender's account (RFC 6120 10.3).
	ToNone Addr = 1 << iota
	// ToHost: the server's own domain.
	ToHost
	// ToBare: the bare JID of a local account, the sender's own included.
	ToBare
	// ToFull: the full JID of a local account.
	ToFull
	// ToRemote: another domain.
	ToRemote
	// ToAccount is how a request for the sender's own account may come:
	// with no to, or to its own bare JID.
	ToAccount = ToNone | ToBare
	// ToLocal is any address of this server.
	ToLocal = ToNone | ToHost | ToBare | ToFull
)

// Phase is where a stream is in negotiation.
type Phase uint8

// Phases of a client stream.
const (
	_ Phase = iota
	// PhasePreAuth: before authentication (STARTTLS, SASL, registration).
	PhasePreAuth
	// PhaseBind: authenticated, the stream restarted, before resource
	// binding.
	PhaseBind
	// PhaseBound: a routable session.
	PhaseBound
	// PhaseRemote: a request from another server's entity over an
	// authenticated server-to-server stream, to the server or to an
	// account's bare JID. Only iq handlers registered for this phase
	// answer remote senders (the rest get service-unavailable): the Ctx
	// has no Session, Stanza.From is the sender's full JID at the peer
	// domain, Conn is the inbound stream (Async works) and Reply goes
	// back over federation. A handler shared with PhaseBound must not
	// assume a Session; Stanza.From names the sender in both phases.
	PhaseRemote
	numPhases
)

// IQType is the type of an iq request.
type IQType uint8

// Request types.
const (
	IQGet IQType = iota + 1
	IQSet
)

// String returns the type attribute's value.
func (t IQType) String() string {
	switch t {
	case IQGet:
		return "get"
	case IQSet:
		return "set"
	}
	return "iqtype(?)"
}

// Stage is when a stanza event fires.
type Stage uint8

// Stages of routing a stanza.
const (
	// Pre fires on the sender's loop after the core has checked the
	// stanza and before routing; a handler may rewrite (replace Raw and
	// Tag), consume or refuse it (reply and return Stop).
	Pre Stage = iota
	// Undelivered fires when routing found no session to take the
	// stanza (a message to an account with no available resource, say);
	// a handler that takes it returns Stop, otherwise the core answers as
	// RFC 6121 8.5 says.
	Undelivered
	numStages
)

// Verdict is what a handler tells the core.
type Verdict uint8

// Verdicts.
const (
	// Continue lets the next handler, then the core, go on.
	Continue Verdict = iota
	// Stop ends the event: the stanza was handled (or refused), the
	// outbound stanza was taken or dropped, the close was vetoed.
	Stop
)

// Event is a session lifecycle event.
type Event uint8

// Lifecycle events, in the order a session meets them.
const (
	// Authenticated: SASL succeeded; the session has its account but no
	// resource yet.
	Authenticated Event = iota
	// Bound: a resource is bound; the session is routable.
	Bound
	// Available: the session sent its initial available presence.
	Available
	// Unavailable: the session became unavailable (by presence, or
	// because it is closing while available).
	Unavailable
	// Closing: the connection is going away. A handler that returns Stop
	// keeps the session without a connection (resumption); it must then
	// take what is delivered to the session in an outbound filter, since
	// what no filter takes cannot be written and is counted as dropped
	// (krill_stanzas_dropped_total{reason="no_connection"}).
	Closing
	// Resumed: a kept session got a connection again.
	Resumed
	// Closed: the session is gone for good.
	Closed
	numEvents
)

// Flag is one bit of per-session state owned by a module.
type Flag uint32

// Slot names one value of per-session state owned by a module.
type Slot uint8

// Outbound is a filter's place in the outbound chain; the zero Outbound
// is before the first filter.
type Outbound uint8

// Stanza is a stanza being routed, as the core parsed it. It and the
// slices it holds are valid only during the handler call.
type Stanza struct {
	Kind Kind
	// Type is the type attribute ("" when absent).
	Type string
	// ID is the id attribute.
	ID string
	// From is the sender's full JID as the core stamps it ("" before
	// binding).
	From string
	// To is the to attribute as received; "" when absent.
	To string
	// Addr says how To addresses the stanza.
	Addr Addr
	// Local, Domain and Resource are To's parts, normalised by the core.
	Local, Domain, Resource string
	// Tag is the start tag of Raw.
	Tag stanza.StartTag
	// Raw is the complete stanza as received (not stamped).
	Raw []byte
	// Payload is an iq's first child element; NS and Name are its
	// namespace and local name.
	Payload  []byte
	NS, Name string
}

// IsRequest reports whether the stanza may be answered with an error: not
// an error itself, not an iq result, not presence.
func (st *Stanza) IsRequest() bool {
	return st.Type != "error" && st.Type != "result" && st.Kind != Presence
}

// FromBare returns the sender's bare JID: From without its resource.
func (st *Stanza) FromBare() string {
	if i := strings.IndexByte(st.From, '/'); i >= 0 {
		return st.From[:i]
	}
	return st.From
}

// Bare returns the bare JID To addresses, normalised ("" when To has no
// localpart).
func (st *Stanza) Bare() string {
	if st.Local == "" {
		return ""
	}
	return st.Local + "@" + st.Domain
}

// Handler types.
type (
	// IQHandler answers an iq request. An error is logged and answered
	// with internal-server-error.
	IQHandler func(c *Ctx, iq *Stanza) error
	// StanzaHandler handles a stanza event.
	StanzaHandler func(c *Ctx, st *Stanza) Verdict
	// NonzaHandler handles a nonza. An error closes the stream with
	// bad-request... the handler should prefer c.Conn.Fail with the
	// right condition.
	NonzaHandler func(c *Ctx, elem []byte) error
	// FeatureFunc appends stream features to b.
	FeatureFunc func(b []byte) []byte
	// OutboundFilter sees every stanza written to a session, in chain
	// order, on the session's loop. b may be reused once the call
	// returns: a filter that holds it keeps a copy. It returns the bytes to pass on (b,
	// or a rewrite) and Continue, or Stop when it took the bytes (held
	// or dropped them; a filter that drops must count it).
	OutboundFilter func(s Session, b []byte) ([]byte, Verdict)
	// EventHandler handles a lifecycle event.
	EventHandler func(c *Ctx, ev Event) Verdict
)

// Session is a client session as modules see it; the core implements it.
// Methods documented "any goroutine" may be called from workers and other
// loops; the rest only on the session's own loop.
type Session interface {
	// Local returns the account's localpart. Any goroutine.
	Local() string
	// Full returns the full JID once bound, "" before. Any goroutine.
	Full() string
	// Available reports whether the session has sent available presence.
	// Any goroutine.
	Available() bool
	// Priority returns the priority of its last available presence. Any
	// goroutine.
	Priority() int
	// SetPresence records the session's last broadcast presence, stamped
	// (nil: unavailable), and its priority; the core fires Available or
	// Unavailable on a change.
	SetPresence(c *Ctx, stamped []byte, priority int)
	// Presence returns the last broadcast presence, or nil. Any goroutine.
	Presence() []byte
	// Has reports a module flag. Any goroutine.
	Has(f Flag) bool
	// Set sets or clears a module flag. Any goroutine.
	Set(f Flag, on bool)
	// Slot returns a module's value, nil when unset.
	Slot(s Slot) any
	// SetSlot stores a module's value; nil clears it.
	SetSlot(s Slot, v any)
	// Deliver queues b for the session; b belongs to the session from
	// now on. It reports false when the session is gone. Any goroutine.
	Deliver(b []byte) bool
	// Pass sends the stanza b on through the filters after o, then to
	// the connection: for a filter at o that held b and releases it (it
	// went through the filters before o when it was taken). Dropped, and
	// counted, when the session has no connection and no later filter
	// takes it.
	Pass(o Outbound, b []byte)
	// Close ends the session with a stream error. Any goroutine.
	Close(cond, text string)
}

// Remote is implemented by a Session another node of a cluster holds:
// what this node sees of it is a copy, and work that must be serialised
// with the session's own (delivering stored messages, say) belongs to the
// node that holds it.
type Remote interface {
	Remote() bool
}

// Host is what the core offers modules beyond one request: routing, the
// sessions of an account, background work. It is safe for concurrent use.
type Host interface {
	// Domain returns the served domain.
	Domain() string
	// Deliver routes b (a stanza, stamped) to the normalised JID to as
	// RFC 6121 8.5 says for its kind, and returns how many sessions took
	// it. b belongs to Deliver from now on. It is the one place that
	// decides where a stanza goes.
	Deliver(to string, b []byte) int
	// Sessions calls fn for each bound session of an account, on a
	// snapshot.
	Sessions(local string, fn func(Session))
	// Session returns the session bound to local/resource, or nil.
	Session(local, resource string) Session
	// Go runs job on the worker pool, detached from any connection; it
	// reports false when the queue is full (the job does not run).
	Go(job func(ctx context.Context)) bool
	// Logger returns the server's logger.
	Logger() *zap.Logger
	// Config returns the configuration in force (live keys follow a
	// reload). The caller must not modify it.
	Config() *config.Config
}

// Conn is the connection an event came in on, as the core offers it to a
// handler. It is valid only during the handler call and on its loop.
type Conn interface {
	// Write sends the stanza b on the connection, through the outbound
	// chain when a session is bound.
	Write(b []byte)
	// WriteNonza sends b, which is not a stanza (a stream management
	// <a/>, say), on the connection past the outbound chain: the filters
	// count and hold stanzas only.
	WriteNonza(b []byte)
	// Async runs job on the worker pool with the connection's input
	// paused; the function job returns (nil: nothing) runs back on the
	// loop with a Ctx for the same connection and stanza, unless the
	// connection has gone. Jobs of one session run one at a time, in
	// order (before authentication the input is paused while the one job
	// runs, and a second one asked meanwhile is refused like a full pool).
	// When the pool is full, busy runs at once instead (nil: the core
	// answers the stanza with resource-constraint).
	Async(job func(ctx context.Context) func(c *Ctx), busy func(c *Ctx))
	// Fail closes the stream with a stream error.
	Fail(cond, text string)
	// Secure reports whether the stream is encrypted.
	Secure() bool
	// IP returns the client's address.
	IP() netip.Addr
	// CountFailure counts a failed attempt before authentication; too
	// many close the stream with policy-violation.
	CountFailure()
}

// Ctx is what a handler may use. The core reuses one per event loop, so a
// handler must not keep it: Async hands a fresh one to its continuation.
type Ctx struct {
	// Host is the server.
	Host Host
	// Registry is the registry that dispatched the event.
	Registry *Registry
	// Session is the session concerned; nil before binding.
	Session Session
	// Conn is the connection; nil when the session has none.
	Conn Conn
	// Stanza is the stanza being handled; nil for nonzas and lifecycle
	// events. In an Async continuation only its header fields (Kind,
	// Type, ID, From, To and its parts, Addr, NS, Name) remain.
	Stanza *Stanza
	// Log is the server's logger.
	Log *zap.Logger
	// Lost is set for Closing when the connection was lost (the peer
	// went away without closing its stream, or stopped answering pings)
	// rather than closed: only such a session is worth keeping for
	// resumption (XEP-0198). False for every other event.
	Lost bool

	scratch []byte
}

// Scratch returns a buffer to build a reply in; it is reused by the next
// handler on the loop.
func (c *Ctx) Scratch() []byte { return c.scratch[:0] }

// Reply writes b (built in Scratch or not) to the connection and keeps the
// buffer for reuse.
func (c *Ctx) Reply(b []byte) {
	if c.Conn != nil {
		c.Conn.Write(b)
	}
	if cap(b) <= 4096 {
		c.scratch = b[:0]
	}
}

// ReplyResult answers the iq being handled with a result carrying payload
// (nil: empty).
func (c *Ctx) ReplyResult(payload []byte) {
	st := c.Stanza
	c.Reply(stanza.AppendResult(c.Scratch(), st.ID, replyFrom(st), "", payload))
}

// ReplyError answers the stanza being handled with a stanza error of type
// typ ("cancel", "modify", "auth", "wait") and condition cond, and text
// when not empty. Stanzas that may not be answered are not.
func (c *Ctx) ReplyError(typ, cond, text string) {
	st := c.Stanza
	if st == nil || !st.IsRequest() && !(st.Kind == Presence && st.Type == "subscribe") {
		return
	}
	// Each error sent is logged at debug: it is often the only trace of
	// why a client gave up.
	if ce := c.Log.Check(zap.DebugLevel, "stanza error sent"); ce != nil {
		fields := []zap.Field{zap.String("condition", cond), zap.String("type", typ),
			zap.String("stanza", st.Kind.String()), zap.String("id", st.ID)}
		if from := replyFrom(st); from != "" {
			fields = append(fields, zap.String("from", from))
		}
		if st.NS != "" && cond == "service-unavailable" {
			fields = append(fields, zap.String("namespace", st.NS))
		}
		if st.From != "" {
			fields = append(fields, zap.String("jid", st.From))
		} else if c.Conn != nil {
			fields = append(fields, zap.Stringer("ip", c.Conn.IP()))
		}
		ce.Write(fields...)
	}
	c.Reply(stanza.AppendError(c.Scratch(), st.Kind.String(), st.ID, replyFrom(st), st.From, typ, cond, text))
}

// replyFrom is the from of a reply (RFC 6120 8.1.2.1, 10.3.3): none for
// a request handled on the account's behalf, else whom it was sent to.
func replyFrom(st *Stanza) string {
	if st.Addr == ToNone {
		return ""
	}
	return st.To
}

// Reset prepares a loop's Ctx for the next event. The core calls it.
func (c *Ctx) Reset(s Session, conn Conn, st *Stanza) {
	c.Session, c.Conn, c.Stanza, c.Lost = s, conn, st, false
}
