// Package imtest runs the IM modules' handlers without a server, for unit
// tests: a Host with sessions that routes as RFC 6121 8.5 says for
// presence, Sessions that record what is delivered to them and fire
// Available and Unavailable like the core, and a Conn whose Async queues
// jobs until Run, in order, as the core runs one connection's jobs.
// Integration tests drive the real server instead (server/im_test.go).
package imtest

import (
	"context"
	"net/netip"
	"strings"
	"sync"

	"go.uber.org/zap"

	"github.com/krill-xmpp/krill/config"
	"github.com/krill-xmpp/krill/hook"
	"github.com/krill-xmpp/krill/hook/hooktest"
)

// Host is a server for one domain, "localhost".
type Host struct {
	Conf     config.Config
	mu       sync.Mutex
	sessions map[string][]*Session
}

// NewHost returns a Host with the default configuration.
func NewHost() *Host {
	return &Host{Conf: config.Default(), sessions: map[string][]*Session{}}
}

// Bind adds a bound session local/resource.
func (h *Host) Bind(local, resource string) *Session {
	s := &Session{local: local, full: local + "@localhost/" + resource, slots: map[hook.Slot]any{}}
	h.mu.Lock()
	h.sessions[local] = append(h.sessions[local], s)
	h.mu.Unlock()
	return s
}

// Unbind removes s, as the core does before firing Unavailable on close.
func (h *Host) Unbind(s *Session) {
	h.mu.Lock()
	defer h.mu.Unlock()
	list := h.sessions[s.local]
	for i, o := range list {
		if o == s {
			h.sessions[s.local] = append(list[:i:i], list[i+1:]...)
		}
	}
}

// Domain implements hook.Host.
func (h *Host) Domain() string { return "localhost" }

// Deliver implements hook.Host: to a full JID, that session; to a bare
// JID, every available resource.
func (h *Host) Deliver(to string, b []byte) int {
	bare, res, _ := strings.Cut(to, "/")
	local, _, _ := strings.Cut(bare, "@")
	n := 0
	h.Sessions(local, func(o hook.Session) {
		s := o.(*Session)
		if res != "" && s.full == to || res == "" && s.Available() {
			s.Deliver(append([]byte(nil), b...))
			n++
		}
	})
	return n
}

// Sessions implements hook.Host.
func (h *Host) Sessions(local string, fn func(hook.Session)) {
	h.mu.Lock()
	list := append([]*Session(nil), h.sessions[local]...)
	h.mu.Unlock()
	for _, s := range list {
		fn(s)
	}
}

// Session implements hook.Host.
func (h *Host) Session(local, resource string) hook.Session {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, s := range h.sessions[local] {
		if s.full == local+"@localhost/"+resource {
			return s
		}
	}
	return nil
}

// Go implements hook.Host: job runs at once.
func (h *Host) Go(job func(ctx context.Context)) bool { job(context.Background()); return true }

// Logger implements hook.Host.
func (h *Host) Logger() *zap.Logger { return zap.NewNop() }

// Config implements hook.Host.
func (h *Host) Config() *config.Config { return &h.Conf }

// Session is a bound session that records deliveries.
type Session struct {
	local, full string
	mu          sync.Mutex
	available   bool
	prio        int
	presence    []byte
	flags       hook.Flag
	slots       map[hook.Slot]any
	// Inbox holds what was delivered, in order.
	Inbox []string
}

// Local implements hook.Session.
func (s *Session) Local() string { return s.local }

// Full implements hook.Session.
func (s *Session) Full() string { return s.full }

// Available implements hook.Session.
func (s *Session) Available() bool { s.mu.Lock(); defer s.mu.Unlock(); return s.available }

// Priority implements hook.Session.
func (s *Session) Priority() int { s.mu.Lock(); defer s.mu.Unlock(); return s.prio }

// SetPresence implements hook.Session, firing Available and Unavailable
// through c.Registry as the core does.
func (s *Session) SetPresence(c *hook.Ctx, b []byte, prio int) {
	s.mu.Lock()
	was := s.available
	s.presence, s.prio, s.available = b, prio, b != nil
	s.mu.Unlock()
	switch {
	case !was && b != nil:
		c.Registry.Fire(c, hook.Available)
	case was && b == nil:
		c.Registry.Fire(c, hook.Unavailable)
	}
}

// Presence implements hook.Session.
func (s *Session) Presence() []byte { s.mu.Lock(); defer s.mu.Unlock(); return s.presence }

// Has implements hook.Session.
func (s *Session) Has(f hook.Flag) bool { s.mu.Lock(); defer s.mu.Unlock(); return s.flags&f != 0 }

// Set implements hook.Session.
func (s *Session) Set(f hook.Flag, on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if on {
		s.flags |= f
	} else {
		s.flags &^= f
	}
}

// Slot implements hook.Session.
func (s *Session) Slot(k hook.Slot) any { return s.slots[k] }

// SetSlot implements hook.Session.
func (s *Session) SetSlot(k hook.Slot, v any) {
	if v == nil {
		delete(s.slots, k)
		return
	}
	s.slots[k] = v
}

// Deliver implements hook.Session.
func (s *Session) Deliver(b []byte) bool {
	s.mu.Lock()
	s.Inbox = append(s.Inbox, string(b))
	s.mu.Unlock()
	return true
}

// Pass implements hook.Session: like Deliver, recorded in the inbox.
func (s *Session) Pass(_ hook.Outbound, b []byte) { s.Deliver(b) }

// Close implements hook.Session.
func (s *Session) Close(string, string) {}

// Take returns the inbox and empties it.
func (s *Session) Take() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	in := s.Inbox
	s.Inbox = nil
	return in
}

// Conn records writes; Async queues jobs until Run.
type Conn struct {
	// Written holds each write, in order.
	Written []string
	// Busy makes Async run busy instead of queueing.
	Busy bool

	host *Host
	reg  *hook.Registry
	sess *Session
	jobs []queued
	cur  *hook.Stanza
}

type queued struct {
	job func(context.Context) func(*hook.Ctx)
	st  *hook.Stanza
}

// NewConn returns the connection of sess.
func NewConn(h *Host, reg *hook.Registry, sess *Session) *Conn {
	return &Conn{host: h, reg: reg, sess: sess}
}

// Ctx returns a handler context for st (nil for lifecycle events) on c.
func (c *Conn) Ctx(st *hook.Stanza) *hook.Ctx {
	x := &hook.Ctx{Host: c.host, Registry: c.reg, Log: zap.NewNop()}
	x.Reset(c.sess, c, st)
	return x
}

// Write implements hook.Conn.
func (c *Conn) Write(b []byte) { c.Written = append(c.Written, string(b)) }

// WriteNonza implements hook.Conn.
func (c *Conn) WriteNonza(b []byte) { c.Written = append(c.Written, string(b)) }

// Async implements hook.Conn.
func (c *Conn) Async(job func(context.Context) func(*hook.Ctx), busy func(*hook.Ctx)) {
	var st *hook.Stanza
	if x := c.current(); x != nil {
		cp := *x
		cp.Raw, cp.Payload = nil, nil
		st = &cp
	}
	if c.Busy {
		if busy != nil {
			busy(c.Ctx(st))
		} else {
			c.Ctx(st).ReplyError("wait", "resource-constraint", "")
		}
		return
	}
	c.jobs = append(c.jobs, queued{job, st})
}

// current is the stanza being handled, set by Handle.
func (c *Conn) current() *hook.Stanza { return c.cur }

// Run runs the queued jobs and their continuations in order, including
// jobs queued meanwhile.
func (c *Conn) Run() {
	for len(c.jobs) > 0 {
		q := c.jobs[0]
		c.jobs = c.jobs[1:]
		if then := q.job(context.Background()); then != nil {
			then(c.Ctx(q.st))
		}
	}
}

// Pending returns the number of queued jobs.
func (c *Conn) Pending() int { return len(c.jobs) }

// Fail implements hook.Conn.
func (c *Conn) Fail(string, string) {}

// Secure implements hook.Conn.
func (c *Conn) Secure() bool { return true }

// IP implements hook.Conn.
func (c *Conn) IP() netip.Addr { return netip.MustParseAddr("127.0.0.1") }

// CountFailure implements hook.Conn.
func (c *Conn) CountFailure() {}

// Parse builds the hook.Stanza the core would hand the Pre stage for raw
// sent by sess.
func Parse(sess *Session, raw string) (*hook.Stanza, error) {
	return hooktest.Parse("localhost", sess.full, raw)
}

// Send hands raw to the modules as the core would (an iq request to its
// handler, anything else to the Pre stage), then runs the queued jobs. It
// returns the Pre verdict, or Stop for an iq that found a handler.
func (c *Conn) Send(raw string) (hook.Verdict, error) {
	v, err := c.Handle(raw)
	c.Run()
	return v, err
}

// Handle is Send without running the jobs.
func (c *Conn) Handle(raw string) (hook.Verdict, error) {
	st, err := Parse(c.sess, raw)
	if err != nil {
		return hook.Continue, err
	}
	c.cur = st
	defer func() { c.cur = nil }()
	x := c.Ctx(st)
	if st.Kind == hook.IQ && (st.Type == "get" || st.Type == "set") {
		t := hook.IQGet
		if st.Type == "set" {
			t = hook.IQSet
		}
		h := c.reg.IQ(hook.PhaseBound, t, st.Addr, st.NS, st.Name)
		if h == nil {
			return hook.Continue, nil
		}
		return hook.Stop, h(x, st)
	}
	return c.reg.Stanza(x, hook.Pre, st), nil
}

// Close ends the session as the core does: unbound, then Unavailable with
// no connection when it was available, then Closed.
func (c *Conn) Close() {
	c.host.Unbind(c.sess)
	x := &hook.Ctx{Host: c.host, Registry: c.reg, Log: zap.NewNop()}
	x.Reset(c.sess, nil, nil)
	c.sess.mu.Lock()
	was := c.sess.available
	c.sess.available, c.sess.presence = false, nil
	c.sess.mu.Unlock()
	if was {
		c.reg.Fire(x, hook.Unavailable)
	}
	c.reg.Fire(x, hook.Closed)
}
