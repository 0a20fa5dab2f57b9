// Package hook is the event registry between Krill's core and its feature
// modules, modelled on Prosody's: the core fires events (an iq for a
// namespace, a message to a bare JID, a session binding, a stanza about to
// be written) and modules answer them. The core knows no feature by name;
// roster, presence, offline storage and blocking are modules like ping.
//
// A Module registers its handlers once, at start-up, through a Registrar.
// The Registry built from all modules is read-only afterwards: dispatch
// takes no lock and allocates nothing. Handlers run on the event loop of
// the session concerned and must not block; blocking work goes through
// Ctx.Async (the sender's input paused, the result back on its loop) or
// Host.Go (detached).
//
// Kinds of hooks:
//   - iq requests by phase, type, payload namespace and element, and
//     addressing (Registrar.IQ);
//   - stanza events by kind, addressing and stage: Pre runs on the sender's
//     loop before routing and may rewrite, consume or refuse; Undelivered
//     runs when routing found no session (Registrar.Stanza);
//   - nonzas (top-level elements that are not stanzas) by phase and name
//     (Registrar.Nonza);
//   - stream features by phase (Registrar.StreamFeature), inline
//     features of SASL2 and Bind 2 (Registrar.SASL2Feature,
//     Registrar.SASL2Inline, Registrar.Bind2Feature, Registrar.Bind2Inline;
//     see sasl2.go for the order of events), and disco
//     features of the domain and of accounts (Registrar.DiscoFeature,
//     Registrar.AccountFeature);
//   - an ordered outbound chain run on everything written to a session
//     (Registrar.Outbound);
//   - session lifecycle events, with a veto on closing (Registrar.On);
//   - every stanza a session sends, before any check (Registrar.Received),
//     and a probe of an idle session instead of the server's ping
//     (Registrar.Idle);
//   - per-session state owned by a module: a flag bit or a slot allocated
//     at registration (Registrar.Flag, Registrar.Slot);
//   - a domain the server hosts beside its own, served by one module as a
//     whole (Registrar.Domain): a multi-user chat service, say.
//
// The core's sessions and connections also offer deadlines on a session's
// loop (Timers) and the takeover of a kept session by a new connection
// (Resumer), which stream management builds on.
package hook

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
)

// Module is one feature of the server.
type Module interface {
	// Name identifies the module in logs and errors.
	Name() string
	// Register adds the module's handlers. It runs once, before the
	// server starts; the Registrar must not be kept.
	Register(r *Registrar) error
}

// Counter is an optional ability of a Module: counters of what it did,
// which the server exports in its stats and as the metric
// krill_module_events_total{module,event}. fn may be called from any
// goroutine, so Counters reads atomics.
type Counter interface {
	Counters(fn func(event string, n uint64))
}

// Stopper is an optional ability of a Module that holds work the server
// must finish before it exits, such as writes it batches. Stop runs once
// when the server stops, after the event loops have ended (no handler runs
// any more) and before the worker pool closes; it may block until ctx ends.
type Stopper interface {
	Stop(ctx context.Context)
}

// Drainer is an optional ability of a Module with something to tell the
// sessions before a graceful shutdown ends them, such as multi-user chat
// rooms telling their occupants they are being removed (XEP-0045 status
// 332). Drain runs once in Server.Shutdown, after new connections are
// refused and before any session is closed: what it hands to
// Session.Deliver is written before the system-shutdown stream error. It
// runs on the caller's goroutine, with handlers still running; it must
// not block long.
type Drainer interface {
	Drain(ctx context.Context)
}

// Errors from New.
var (
	// ErrDuplicate means two modules claim the same iq, nonza or event
	// that only one may answer.
	ErrDuplicate = errors.New("hook: duplicate handler")
	// ErrInvalid means a module registered a handler with an invalid key
	// (an empty namespace, an unknown kind, a nil function).
	ErrInvalid = errors.New("hook: invalid registration")
)

// Limits of per-session module state.
const (
	// MaxFlags is the number of flag bits a session carries.
	MaxFlags = 32
	// MaxSlots is the number of slots modules may allocate in all.
	MaxSlots = 16
)

// Registry holds every module's handlers. Build it with New; it is
// read-only, and so safe for concurrent use, afterwards.
type Registry struct {
	modules  []Module
	iqs      map[iqKey][]iqEntry
	stanzas  [numKinds][numStages][]stanzaEntry
	nonzas   map[nonzaKey]NonzaHandler
	features [numPhases][2][]FeatureFunc
	disco    []string
	account  []string
	outbound []OutboundFilter
	received []func(Session)
	idle     []func(Session) bool
	events   [numEvents][]EventHandler
	domains  map[string]StanzaHandler
	names    []string
	flags    int
	slots    int
	// SASL2 and Bind 2 inline features (sasl2.go).
	sasl2Features []FeatureFunc
	bind2Vars     []string
	sasl2         []sasl2Entry
	bind2         map[bind2Key]Bind2Handler
	tokenMechs    []string
	tokens        TokenVerifier
}

type iqKey struct {
	phase Phase
	typ   IQType
	ns    string
	local string
}

type iqEntry struct {
	to  Addr
	h   IQHandler
	mod string
}

type stanzaEntry struct {
	to Addr
	h  StanzaHandler
}

type nonzaKey struct {
	phase Phase
	ns    string
	local string
}

// New registers mods in order and returns the registry. Handlers of the
// same stanza event and outbound filters run in module order.
func New(mods ...Module) (*Registry, error) {
	g := &Registry{
		iqs:     make(map[iqKey][]iqEntry),
		nonzas:  make(map[nonzaKey]NonzaHandler),
		domains: make(map[string]StanzaHandler),
	}
	var errs []error
	for _, m := range mods {
		r := &Registrar{g: g, mod: m.Name()}
		if err := m.Register(r); err != nil {
			errs = append(errs, fmt.Errorf("hook: module %s: %w", m.Name(), err))
		}
		errs = append(errs, r.errs...)
		g.modules = append(g.modules, m)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	g.disco = sortedSet(g.disco)
	g.account = sortedSet(g.account)
	sort.Strings(g.names)
	return g, nil
}

// Domain returns the handler of a domain a module serves (Registrar.Domain),
// or nil. Stanzas a session sends to that domain or to any JID at it go to
// the handler instead of being refused as remote.
func (g *Registry) Domain(name string) StanzaHandler { return g.domains[name] }

// Domains returns the domains modules serve, sorted: the server lists them
// as items of its disco#items. The caller must not modify the slice.
func (g *Registry) Domains() []string { return g.names }

// Modules returns the registered modules in order.
func (g *Registry) Modules() []Module { return g.modules }

// IQ returns the handler for an iq request, or nil. to is the request's
// addressing (exactly one Addr bit).
func (g *Registry) IQ(p Phase, t IQType, to Addr, ns, local string) IQHandler {
	for _, e := range g.iqs[iqKey{p, t, ns, local}] {
		if e.to&to != 0 {
			return e.h
		}
	}
	return nil
}

// Stanza runs the handlers of a stanza event in module order until one
// returns Stop, and returns the last verdict (Continue when none ran).
func (g *Registry) Stanza(c *Ctx, stage Stage, st *Stanza) Verdict {
	if st.Kind >= numKinds || stage >= numStages {
		return Continue
	}
	for _, e := range g.stanzas[st.Kind][stage] {
		if e.to&st.Addr == 0 {
			continue
		}
		if e.h(c, st) == Stop {
			return Stop
		}
	}
	return Continue
}

// HasStanza reports whether any handler is registered for the event.
func (g *Registry) HasStanza(k Kind, stage Stage, to Addr) bool {
	if k >= numKinds || stage >= numStages {
		return false
	}
	for _, e := range g.stanzas[k][stage] {
		if e.to&to != 0 {
			return true
		}
	}
	return false
}

// Nonza returns the handler of a nonza, or nil.
func (g *Registry) Nonza(p Phase, ns, local string) NonzaHandler {
	return g.nonzas[nonzaKey{p, ns, local}]
}

// StreamFeatures appends the modules' stream features of phase p to b.
// secure tells whether the stream is encrypted.
func (g *Registry) StreamFeatures(b []byte, p Phase, secure bool) []byte {
	if p >= numPhases {
		return b
	}
	for _, f := range g.features[p][boolIndex(secure)] {
		b = f(b)
	}
	return b
}

// DiscoFeatures returns the XEP-0030 features of the domain, sorted and
// deduplicated. The caller must not modify the slice.
func (g *Registry) DiscoFeatures() []string { return g.disco }

// AccountFeatures returns the XEP-0030 features an account's bare JID
// reports, sorted and deduplicated. The caller must not modify the slice.
func (g *Registry) AccountFeatures() []string { return g.account }

// Outbound returns the outbound chain in order. The caller must not
// modify the slice.
func (g *Registry) Outbound() []OutboundFilter { return g.outbound }

// After returns the filters that follow o in the chain (all of them for
// the zero Outbound). The caller must not modify the slice.
func (g *Registry) After(o Outbound) []OutboundFilter {
	if int(o) > len(g.outbound) {
		return nil
	}
	return g.outbound[o:]
}

// Fire runs the handlers of a lifecycle event in module order. For
// Closing, a handler that returns Stop vetoes the close (the session is
// kept without its connection) and the rest do not run; for the other
// events every handler runs and the verdict is Continue.
func (g *Registry) Fire(c *Ctx, ev Event) Verdict {
	if ev >= numEvents {
		return Continue
	}
	for _, h := range g.events[ev] {
		if h(c, ev) == Stop && ev == Closing {
			return Stop
		}
	}
	return Continue
}

// Received runs the handlers registered with Registrar.Received for a
// stanza the session sent.
func (g *Registry) Received(s Session) {
	for _, h := range g.received {
		h(s)
	}
}

// Idle asks the handlers registered with Registrar.Idle, in module
// order, to probe an idle session; it reports whether one did.
func (g *Registry) Idle(s Session) bool {
	for _, h := range g.idle {
		if h(s) {
			return true
		}
	}
	return false
}

// HasEvent reports whether any handler is registered for ev.
func (g *Registry) HasEvent(ev Event) bool { return ev < numEvents && len(g.events[ev]) > 0 }

// Flags returns the number of flag bits allocated.
func (g *Registry) Flags() int { return g.flags }

// Slots returns the number of slots allocated.
func (g *Registry) Slots() int { return g.slots }

// Registrar is what a module registers its handlers with. It is valid only
// during Module.Register.
type Registrar struct {
	g    *Registry
	mod  string
	errs []error
}

func (r *Registrar) fail(format string, args ...any) {
	r.errs = append(r.errs, fmt.Errorf("hook: module %s: "+format, append([]any{r.mod}, args...)...))
}

// Registry returns the registry being built. A module may keep it, but may
// read it only once New has returned (in its handlers and in the
// FeatureFuncs the core runs at start-up), when it is complete.
func (r *Registrar) Registry() *Registry { return r.g }

// IQ registers h for iq requests of type t in phase p whose payload is the
// element {ns}local, addressed as any bit of to says. Two modules may share
// a key only with disjoint addressing.
func (r *Registrar) IQ(p Phase, t IQType, to Addr, ns, local string, h IQHandler) {
	switch {
	case p == 0 || p >= numPhases || (t != IQGet && t != IQSet) || to == 0 || ns == "" || local == "" || h == nil:
		r.fail("%w: iq %v %v {%s}%s", ErrInvalid, p, t, ns, local)
		return
	}
	k := iqKey{p, t, ns, local}
	for _, e := range r.g.iqs[k] {
		if e.to&to != 0 {
			r.fail("%w: %s and %s both answer iq %v {%s}%s", ErrDuplicate, e.mod, r.mod, t, ns, local)
			return
		}
	}
	r.g.iqs[k] = append(r.g.iqs[k], iqEntry{to: to, h: h, mod: r.mod})
}

// Stanza registers h for stanzas of kind k addressed as any bit of to
// says, at stage s. Handlers of one event run in module order.
func (r *Registrar) Stanza(k Kind, to Addr, s Stage, h StanzaHandler) {
	if k >= numKinds || s >= numStages || to == 0 || h == nil {
		r.fail("%w: stanza %v %v", ErrInvalid, k, s)
		return
	}
	r.g.stanzas[k][s] = append(r.g.stanzas[k][s], stanzaEntry{to: to, h: h})
}

// Nonza registers h for the top-level element {ns}local in phase p.
func (r *Registrar) Nonza(p Phase, ns, local string, h NonzaHandler) {
	if p == 0 || p >= numPhases || ns == "" || local == "" || h == nil {
		r.fail("%w: nonza {%s}%s", ErrInvalid, ns, local)
		return
	}
	k := nonzaKey{p, ns, local}
	if _, dup := r.g.nonzas[k]; dup {
		r.fail("%w: nonza {%s}%s", ErrDuplicate, ns, local)
		return
	}
	r.g.nonzas[k] = h
}

// StreamFeature registers f to add stream features in phase p, on
// encrypted streams when secure is true and on plaintext streams when
// false; register twice for both. The core builds each phase's features
// once at start-up, so f must depend only on the configuration.
func (r *Registrar) StreamFeature(p Phase, secure bool, f FeatureFunc) {
	if p == 0 || p >= numPhases || f == nil {
		r.fail("%w: stream feature in phase %v", ErrInvalid, p)
		return
	}
	i := boolIndex(secure)
	r.g.features[p][i] = append(r.g.features[p][i], f)
}

// DiscoFeature adds XEP-0030 features to the domain's disco#info.
func (r *Registrar) DiscoFeature(ns ...string) { r.g.disco = append(r.g.disco, ns...) }

// AccountFeature adds XEP-0030 features to the disco#info of accounts.
func (r *Registrar) AccountFeature(ns ...string) { r.g.account = append(r.g.account, ns...) }

// Outbound appends f to the outbound chain and returns its place, with
// which the module passes on what f held (Session.Pass).
func (r *Registrar) Outbound(f OutboundFilter) Outbound {
	if f == nil {
		r.fail("%w: nil outbound filter", ErrInvalid)
		return 0
	}
	r.g.outbound = append(r.g.outbound, f)
	return Outbound(len(r.g.outbound))
}

// Received registers h to see every stanza a bound session sends, before
// the core checks it further (its addressing, its from): stream
// management counts what the client sent, refused or not. h runs on the
// session's loop and must be cheap.
func (r *Registrar) Received(h func(s Session)) {
	if h == nil {
		r.fail("%w: nil received handler", ErrInvalid)
		return
	}
	r.g.received = append(r.g.received, h)
}

// Idle registers h to probe a session that has been silent for
// c2s.idle_ping, instead of the server's ping: h writes something the
// client must answer (stream management's <r/>) and returns true, or
// returns false to leave the session to the ping. Any input answers; none
// within c2s.ping_timeout closes the stream with connection-timeout. h
// runs on the session's loop.
func (r *Registrar) Idle(h func(s Session) bool) {
	if h == nil {
		r.fail("%w: nil idle handler", ErrInvalid)
		return
	}
	r.g.idle = append(r.g.idle, h)
}

// On registers h for a lifecycle event.
func (r *Registrar) On(ev Event, h EventHandler) {
	if ev >= numEvents || h == nil {
		r.fail("%w: event %v", ErrInvalid, ev)
		return
	}
	r.g.events[ev] = append(r.g.events[ev], h)
}

// Domain registers h for every stanza a bound session sends to the domain
// name or to a JID at it, after the stanza's Pre stage: the module serves
// that domain as a whole (a multi-user chat service at
// conference.example.org). h runs on the sender's loop with the stanza
// addressed ToRemote; what it answers goes back on the connection, and
// what it sends elsewhere goes through Host.Deliver or a Session. Its
// verdict is ignored. A domain has one handler.
//
// The server also answers for the domain over federation: h gets the
// stanzas other servers send to it, those of components, and the errors
// bounced for what it sent to other servers. Then the Ctx has no Session
// (From is the remote or component sender), and its Conn routes what h
// answers back to the sender, over federation if need be; a handler that
// serves only local users checks for a Session.
func (r *Registrar) Domain(name string, h StanzaHandler) {
	if name == "" || h == nil {
		r.fail("%w: domain %q", ErrInvalid, name)
		return
	}
	if _, dup := r.g.domains[name]; dup {
		r.fail("%w: domain %s", ErrDuplicate, name)
		return
	}
	r.g.domains[name] = h
	r.g.names = append(r.g.names, name)
}

// Flag allocates one flag bit in every session for the module. Flags are
// atomic: any loop may read them.
func (r *Registrar) Flag() Flag {
	if r.g.flags >= MaxFlags {
		r.fail("%w: more than %d session flags", ErrInvalid, MaxFlags)
		return 0
	}
	f := Flag(1) << r.g.flags
	r.g.flags++
	return f
}

// Slot allocates one slot in every session for the module. A slot holds
// one value, read and written on the session's loop only; sessions that
// never set a slot pay nothing for it.
func (r *Registrar) Slot() Slot {
	if r.g.slots >= MaxSlots {
		r.fail("%w: more than %d session slots", ErrInvalid, MaxSlots)
		return 0
	}
	r.g.slots++
	return Slot(r.g.slots) // 1-based: the zero Slot is invalid
}

func boolIndex(b bool) int {
	if b {
		return 1
	}
	return 0
}

func sortedSet(s []string) []string {
	sort.Strings(s)
	out := s[:0]
	for i, v := range s {
		if i == 0 || v != s[i-1] {
			out = append(out, v)
		}
	}
	return out
}

// String returns a readable name of the addressing bits.
func (a Addr) String() string {
	names := []string{"none", "host", "bare", "full", "remote"}
	var parts []string
	for i, n := range names {
		if a&(1<<i) != 0 {
			parts = append(parts, n)
		}
	}
	if len(parts) == 0 {
		return "addr(0)"
	}
	return strings.Join(parts, "|")
}
