package server

import (
	"bytes"
	"context"
	"net/netip"

	"mellium.im/xmpp/stream"

	"github.com/krill-xmpp/krill/hook"
	"github.com/krill-xmpp/krill/stanza"
)

// The core's side of the hook contract: a connection is the hook.Conn a
// handler answers on, each loop reuses one hook.Ctx, and lifecycle events
// fire from here.

var _ hook.Conn = (*conn)(nil)

// Write implements hook.Conn: a bound session's stanzas pass the outbound
// chain; before binding they go straight to the connection.
func (c *conn) Write(b []byte) {
	if c.has(flagS2S) {
		// Streams between servers go one way: an answer to a peer
		// goes on the outbound stream to its domain.
		if tag, err := stanza.ParseStartTag(b); err == nil {
			to, ok := tag.AttrString("to")
			if st := c.loop.ctx.Stanza; !ok && st != nil && st.From != "" {
				// A reply built for a client (no to): to the remote
				// sender of the stanza being handled.
				to, ok, b = st.From, true, stanza.WithAttr(tag, b, "to", st.From)
			}
			if ok {
				// b may be the Ctx's scratch, reused by the next
				// reply; the outbound stream queues it.
				c.loop.srv.deliver(c.loop, to, bytes.Clone(b))
			}
		}
		return
	}
	if c.sess != nil && c.sess.bound {
		c.sess.send(b)
		return
	}
	c.write(b)
}

// WriteNonza implements hook.Conn.
func (c *conn) WriteNonza(b []byte) { c.write(b) }

// Fail implements hook.Conn.
func (c *conn) Fail(cond, text string) { c.loop.srv.fail(c, cond, text) }

// Secure implements hook.Conn.
func (c *conn) Secure() bool { return c.tr.secure() }

// IP implements hook.Conn.
func (c *conn) IP() netip.Addr { return c.ip.Addr() }

// CountFailure implements hook.Conn: a failed attempt before
// authentication (a refused registration, say) counts like a failed SASL
// attempt that checked a credential.
func (c *conn) CountFailure() {
	s := c.loop.srv
	c.failed++
	if int(c.failed) >= s.conf().Preauth.MaxFailedAuth {
		s.fail(c, stream.PolicyViolation.Err, "too many failed attempts")
	}
}

// Async implements hook.Conn. The continuation gets the loop's Ctx set up
// again for this connection and a copy of the stanza's header fields.
func (c *conn) Async(job func(ctx context.Context) func(*hook.Ctx), busy func(*hook.Ctx)) {
	s := c.loop.srv
	saved := headerOf(c.loop.ctx.Stanza)
	s.async(c, func(ctx context.Context) func() {
		then := job(ctx)
		if then == nil {
			return nil
		}
		return func() { then(c.loop.ctxFor(c, saved)) }
	}, func() {
		cx := c.loop.ctxFor(c, saved)
		if busy != nil {
			busy(cx)
			return
		}
		cx.ReplyError("wait", "resource-constraint", "")
	})
}

// headerOf copies what of a stanza outlives its handler call.
func headerOf(st *hook.Stanza) *hook.Stanza {
	if st == nil {
		return nil
	}
	cp := *st
	cp.Raw, cp.Payload, cp.Tag = nil, nil, stanza.StartTag{}
	return &cp
}

// ctxFor sets the loop's Ctx up for an event of c (nil: a session with no
// connection) about st.
func (l *loop) ctxFor(c *conn, st *hook.Stanza) *hook.Ctx {
	var sess hook.Session
	var hc hook.Conn
	if c != nil {
		hc = c
		if c.sess != nil {
			sess = c.sess
		}
	}
	l.ctx.Reset(sess, hc, st)
	return &l.ctx
}

// sessionCtx sets the loop's Ctx up for a lifecycle event of sess.
func (l *loop) sessionCtx(sess *session) *hook.Ctx {
	var hc hook.Conn
	if sess.conn != nil && !sess.conn.has(flagClosed) {
		hc = sess.conn
	}
	l.ctx.Reset(sess, hc, nil)
	return &l.ctx
}

// endSession ends a session for good: the unavailable event when it was
// available, the closed event, and its place in the session table. It runs
// on the session's loop once the connection is gone (or was vetoed away
// and the session is now closed).
func (s *Server) endSession(sess *session) {
	if sess.bound {
		s.sessions.unbind(sess)
		s.clusterUnbound(sess)
	}
	sess.closeMailbox()
	cx := sess.loop.sessionCtx(sess)
	cx.Conn = nil
	if sess.available.Swap(false) {
		s.hooks.Fire(cx, hook.Unavailable)
	}
	s.hooks.Fire(cx, hook.Closed)
	cx.Reset(nil, nil, nil)
	sess.stopTimers()
}
