package server

import (
	"context"
	"slices"

	"go.uber.org/zap"

	"github.com/krill-xmpp/krill/config"
	"github.com/krill-xmpp/krill/hook"
	"github.com/krill-xmpp/krill/stanza"
)

// host is the server as modules see it (hook.Host). Deliver is the one
// place that decides where a stanza for a JID goes: today a local session
// or nobody; parked sessions, remote domains and other cluster nodes join
// it here.
type host struct{ s *Server }

var _ hook.Host = host{}

// Domain implements hook.Host.
func (h host) Domain() string { return h.s.cfg.Domain }

// Logger implements hook.Host.
func (h host) Logger() *zap.Logger { return h.s.log }

// Config implements hook.Host.
func (h host) Config() *config.Config { return h.s.conf() }

// Go implements hook.Host.
func (h host) Go(job func(ctx context.Context)) bool { return h.s.detached(job) }

// Sessions implements hook.Host: in a cluster, the account's sessions on
// other nodes too.
func (h host) Sessions(local string, fn func(hook.Session)) {
	h.s.sessions.each(local, func(o *session) { fn(o) })
	h.s.remoteEach(local, func(r *remote) { fn(r) })
}

// Session implements hook.Host.
func (h host) Session(local, resource string) hook.Session {
	if o := h.s.sessions.find(local, resource); o != nil {
		return o
	}
	if r := h.s.remoteFind(local, resource); r != nil {
		return r
	}
	return nil
}

// Deliver implements hook.Host.
func (h host) Deliver(to string, b []byte) int { return h.s.deliver(nil, to, b) }

// deliver routes b, a stamped stanza, to the normalised JID to as RFC 6121
// 8.5 says for its kind, and returns how many sessions took it. from is
// the caller's loop, if it runs on one (a session on the same loop is
// written at once). b belongs to deliver; each further recipient gets a
// copy.
//   - to a full JID: that session; a message of type normal or chat for a
//     resource that is not bound goes as if to the bare JID;
//   - message to a bare JID: every available resource with a non-negative
//     priority (normal, chat, headline), nobody for groupchat and error;
//   - presence to a bare JID: every available resource;
//   - iq to a bare JID: nobody (the server answers for the account).
func (s *Server) deliver(from *loop, to string, b []byte) int {
	local, domain, resource := splitJID(to)
	return s.deliverTo(from, local, domain, resource, b)
}

// deliverTo is deliver with the JID in its normalised parts.
func (s *Server) deliverTo(from *loop, local, domain, resource string, b []byte) int {
	if domain != s.cfg.Domain {
		if h := s.hooks.Domain(domain); h != nil {
			s.toHosted(from, h, b) // a domain a module serves (s2s_hosted.go)
			return 1
		}
		if s.toComponent(domain, b) { // XEP-0114 (s2s_component.go)
			return 1
		}
		return s.deliverRemote(from, domain, b) // federation (s2s_out.go)
	}
	if local == "" {
		return 0
	}
	tag, err := stanza.ParseStartTag(b)
	if err != nil {
		return 0
	}
	kind, _ := hook.KindOf(tag.Local())
	typ, _ := tag.Attr("type")
	if resource != "" {
		if o := s.sessions.find(local, resource); o != nil && o.deliver(from, b) {
			s.stats.stanzasRouted.Add(1)
			return 1
		}
		if r := s.remoteFind(local, resource); r != nil && r.Deliver(b) {
			return 1 // another cluster node holds it
		}
		if kind != hook.Message || !(len(typ) == 0 || string(typ) == "normal" || string(typ) == "chat") {
			return 0
		}
	}
	switch {
	case kind == hook.IQ:
		return 0
	case kind == hook.Message && (string(typ) == "groupchat" || string(typ) == "error"):
		return 0
	}
	// Other cluster nodes first: a publish copies b, the last local
	// session takes it. Remote deliveries count themselves as routed.
	remoteN := 0
	s.remoteEach(local, func(r *remote) {
		if r.Available() && (kind != hook.Message || r.Priority() >= 0) && r.Deliver(b) {
			remoteN++
		}
	})
	n := 0
	var next *session
	s.sessions.each(local, func(o *session) {
		if !o.available.Load() || (kind == hook.Message && o.priority.Load() < 0) {
			return
		}
		// Each mailbox owns its bytes: all but the last get a copy.
		if next != nil && next.deliver(from, slices.Clone(b)) {
			n++
		}
		next = o
	})
	if next != nil && next.deliver(from, b) {
		n++
	}
	s.stats.stanzasRouted.Add(uint64(n))
	return n + remoteN
}
