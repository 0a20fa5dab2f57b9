// Package iqtest sends one iq to the handler a module registered, as the
// core would, for the modules' unit tests: the stanza parsed into a
// hook.Stanza, the handler looked up in the registry by phase, type,
// addressing and payload, its replies recorded by a hooktest.Conn.
package iqtest

import (
	"testing"

	"github.com/krill-xmpp/krill/hook"
	"github.com/krill-xmpp/krill/hook/hooktest"
)

// Session is a bound session with what the simple modules use; the rest of
// hook.Session panics (nil embedded interface) if a module calls it.
type Session struct {
	hook.Session
	// Account and JID are what Local and Full return.
	Account, JID string
	// Avail is what Available returns.
	Avail bool
	// Closed records Close as "cond: text".
	Closed string
}

// Local implements hook.Session.
func (s *Session) Local() string { return s.Account }

// Full implements hook.Session.
func (s *Session) Full() string { return s.JID }

// Available implements hook.Session.
func (s *Session) Available() bool { return s.Avail }

// Close implements hook.Session.
func (s *Session) Close(cond, text string) { s.Closed = cond + ": " + text }

// Bound returns the session local@localhost/resource.
func Bound(local, resource string) *Session {
	return &Session{Account: local, JID: local + "@localhost/" + resource}
}

// Host is a hooktest.Host with sessions.
type Host struct {
	hooktest.Host
	List []*Session
}

// Sessions implements hook.Host.
func (h *Host) Sessions(local string, fn func(hook.Session)) {
	for _, s := range h.List {
		if s.Account == local {
			fn(s)
		}
	}
}

// Parse builds the hook.Stanza the core hands a handler for raw sent by
// the full JID from, for the domain "localhost".
func Parse(from, raw string) (*hook.Stanza, error) {
	return hooktest.Parse("localhost", from, raw)
}

// Result is what a Send produced.
type Result struct {
	// Handled is false when no handler is registered for the iq (the core
	// then answers service-unavailable).
	Handled bool
	// Conn holds what the handler wrote and whether it failed the stream.
	Conn *hooktest.Conn
}

// Send hands the iq request raw from sess to its handler in reg, with h
// as the host (nil: a hooktest.Host). Async jobs run at once.
func Send(t testing.TB, reg *hook.Registry, h hook.Host, sess hook.Session, raw string) Result {
	t.Helper()
	st, err := Parse(sess.Full(), raw)
	if err != nil {
		t.Fatal(err)
	}
	typ := hook.IQGet
	if st.Type == "set" {
		typ = hook.IQSet
	}
	res := Result{Conn: &hooktest.Conn{}}
	handler := reg.IQ(hook.PhaseBound, typ, st.Addr, st.NS, st.Name)
	if handler == nil {
		return res
	}
	res.Handled = true
	if h == nil {
		h = &hooktest.Host{}
	}
	if err := handler(hooktest.Ctx(reg, h, sess, res.Conn, st), st); err != nil {
		t.Fatalf("handler: %v", err)
	}
	return res
}

// Registry registers mods or fails the test.
func Registry(t testing.TB, mods ...hook.Module) *hook.Registry {
	t.Helper()
	reg, err := hook.New(mods...)
	if err != nil {
		t.Fatal(err)
	}
	return reg
}
