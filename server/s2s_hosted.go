package server

import (
	"bytes"
	"context"
	"net/netip"

	"github.com/panjf2000/gnet/v2"

	"github.com/krill-xmpp/krill/hook"
	"github.com/krill-xmpp/krill/stanza"
)

// Stanzas for a domain a module serves (Registrar.Domain) that come from
// neither a bound session nor a peer's stream: a component's, or the error
// the federation layer bounces for what the service itself sent (its
// outbound stream to a remote occupant's domain failed, say). They reach
// the module's handler on a loop task, with a hook.Conn that answers by
// routing (hostedConn), as a peer's stanzas are answered.

// toHosted hands b, a stamped stanza for a domain h serves, to h on from's
// loop (any loop when from is nil). It runs as a task of its own, so the
// loop's Ctx is free whatever the caller was doing.
func (s *Server) toHosted(from *loop, h hook.StanzaHandler, b []byte) {
	l := from
	if l == nil {
		l = s.anyLoop()
	}
	if l == nil {
		return
	}
	_ = l.el.Execute(bgctx, gnet.RunnableFunc(func(context.Context) error {
		defer s.containDetached()
		s.runHosted(l, h, b)
		return nil
	}))
}

// runHosted runs h for b on l.
func (s *Server) runHosted(l *loop, h hook.StanzaHandler, b []byte) {
	tag, err := stanza.ParseStartTag(b)
	if err != nil {
		return
	}
	kind, ok := hook.KindOf(tag.Local())
	if !ok {
		return
	}
	st := &l.stanza
	*st = hook.Stanza{Kind: kind, Tag: tag, Raw: b}
	st.Type, _ = tag.AttrString("type")
	st.ID, _ = tag.AttrString("id")
	st.From, _ = tag.AttrString("from")
	st.To, _ = tag.AttrString("to")
	if st.From == "" || !s.address(st) {
		return
	}
	if kind == hook.IQ {
		st.Payload, st.NS, st.Name, _ = payloadOf(b)
	}
	l.ctx.Reset(nil, hostedConn{s: s, l: l}, st)
	defer l.ctx.Reset(nil, nil, nil)
	h(&l.ctx, st)
}

// hostedConn is the hook.Conn of a stanza handed to a module's domain by
// toHosted: what the handler answers is routed to its address (to the
// sender when it has none), and its Async jobs run on the worker pool and
// continue on the loop.
type hostedConn struct {
	s *Server
	l *loop
}

var _ hook.Conn = hostedConn{}

// Write implements hook.Conn.
func (h hostedConn) Write(b []byte) {
	tag, err := stanza.ParseStartTag(b)
	if err != nil {
		return
	}
	to, ok := tag.AttrString("to")
	if st := h.l.ctx.Stanza; !ok && st != nil && st.From != "" {
		to, ok, b = st.From, true, stanza.WithAttr(tag, b, "to", st.From)
	}
	if ok {
		h.s.deliver(h.l, to, bytes.Clone(b)) // b may be the Ctx's scratch
	}
}

// WriteNonza implements hook.Conn: there is no stream to write it on.
func (hostedConn) WriteNonza([]byte) {}

// Async implements hook.Conn.
func (h hostedConn) Async(job func(ctx context.Context) func(*hook.Ctx), busy func(*hook.Ctx)) {
	saved := headerOf(h.l.ctx.Stanza)
	ok := h.s.detached(func(ctx context.Context) {
		then := job(ctx)
		if then == nil {
			return
		}
		_ = h.l.el.Execute(bgctx, gnet.RunnableFunc(func(context.Context) error {
			defer h.s.containDetached()
			h.l.ctx.Reset(nil, h, saved)
			defer h.l.ctx.Reset(nil, nil, nil)
			then(&h.l.ctx)
			return nil
		}))
	})
	if !ok {
		if busy != nil {
			busy(&h.l.ctx)
			return
		}
		h.l.ctx.ReplyError("wait", "resource-constraint", "")
	}
}

// Fail implements hook.Conn: nothing to close.
func (hostedConn) Fail(string, string) {}

// Secure implements hook.Conn: the stanza never left the server.
func (hostedConn) Secure() bool { return true }

// IP implements hook.Conn.
func (hostedConn) IP() netip.Addr { return netip.Addr{} }

// CountFailure implements hook.Conn.
func (hostedConn) CountFailure() {}
