package server

import (
	"net"
	"net/netip"
	"time"

	"github.com/panjf2000/gnet/v2"
	"go.uber.org/zap"
	"mellium.im/xmpp/stream"

	"github.com/krill-xmpp/krill/hook"
	"github.com/krill-xmpp/krill/sasl"
	"github.com/krill-xmpp/krill/stanza"
	"github.com/krill-xmpp/krill/timerwheel"
)

// phase is where a connection is in RFC 6120 negotiation.
type phase uint8

const (
	phaseHeader     phase = iota // waiting for the first stream header
	phaseNegotiate               // stream open, before authentication: STARTTLS, SASL
	phaseAuthHeader              // SASL succeeded; waiting for the restarted header
	phaseBind                    // authenticated stream open: waiting for resource binding
	phaseSession                 // bound: a routable session
)

// conn flags.
const (
	flagClosed      uint8 = 1 << iota // closed or closing; late callbacks are dropped
	flagHeaderSent                    // our stream header is on the wire
	flagPreauth                       // counted in the pre-auth limiter
	flagWorkPending                   // waiting for a worker; input is held in gnet's buffer
	flagAwaitPong                     // a server ping is outstanding
	flagWeb                           // accepted on the web listener: c.tr is a *wsConn (ws.go)
	flagS2S                           // a server-to-server stream; its state is in loop.s2s
)

// conn is the state of one client connection. It is kept small because
// every accepted socket has one, including hostile ones: SASL state and the
// session exist only once reached. Only the connection's own loop touches it.
type conn struct {
	gc     gnet.Conn
	loop   *loop
	timer  timerwheel.Timer[*conn] // the one deadline: pre-auth, then idle ping / pong wait
	framer stanza.Framer
	ip     peerAddr    // 16 bytes where a netip.Addr takes 24: conn stays in its size class
	ex     sasl.Server // non-nil only during a SASL exchange
	sess   *session    // non-nil once authenticated
	tr     transport   // plainTCP, then *tlsConn once STARTTLS or direct TLS began
	// preauthAt is the pre-auth deadline as an offset from the server's
	// epoch (monotonic, and 8 bytes instead of a time.Time's 24).
	preauthAt time.Duration
	phase     phase
	flags     uint8
	failed    uint8       // failed SASL attempts that checked a credential, and refused registrations
	failedEx  uint8       // SASL exchanges that failed before any credential was checked
	reason    closeReason // why it closes, once it does
}

func (c *conn) has(f uint8) bool { return c.flags&f != 0 }

// setReason records why c closes. The first reason wins: a stream error
// sent because of a deadline stays a deadline close.
func (c *conn) setReason(r closeReason) {
	if c.reason == reasonNone {
		c.reason = r
	}
}

// open accepts a connection, applies the pre-auth caps and arms the
// absolute pre-auth deadline.
func (s *Server) open(gc gnet.Conn) ([]byte, gnet.Action) {
	if d, ok := gc.Context().(*s2sDial); ok {
		return s.openOutbound(gc, d)
	}
	if in, direct, comp := s.isS2SListener(gc); in || comp {
		if comp {
			return s.openComponent(gc)
		}
		return s.openInbound(gc, direct)
	}
	s.stats.accepted.Add(1)
	ip := addrIP(gc.RemoteAddr())
	kind := s.listenerOf(gc)
	if s.stopping.Load() || s.drain.on.Load() {
		// No conn state exists yet: the context carries the close reason
		// to OnClose, which counts it.
		gc.SetContext(reasonShutdown)
		if kind == listenerWeb {
			return s.webRefusal(503, "the server is shutting down"), gnet.Close
		}
		if s.drain.on.Load() {
			return s.drainRefusal(), gnet.Close
		}
		b := s.appendHeader(nil)
		return appendStreamError(b, stream.SystemShutdown.Err, "the server is shutting down"), gnet.Close
	}
	if cond := s.preauth.acquire(ip); cond != "" {
		gc.SetContext(reasonPolicy)
		// Per connection, on the loop: debug, so that a flood is counted
		// (krill_connections_closed_total) rather than written line by line.
		s.log.Debug("connection refused", zap.String("reason", cond), zap.Stringer("ip", ip))
		text := "too many unauthenticated connections from your address"
		if cond == stream.ResourceConstraint.Err {
			text = "too many unauthenticated connections"
		}
		if kind == listenerWeb {
			return s.webRefusal(503, text), gnet.Close
		}
		b := s.appendHeader(nil)
		b = appendStreamError(b, cond, text)
		return b, gnet.Close
	}
	l := s.loopFor(gc.EventLoop())
	c := &conn{gc: gc, loop: l, ip: makePeerAddr(ip), tr: plainTCP{}, flags: flagPreauth}
	c.framer.SetLimits(stanza.Limits{
		MaxBytes:    s.conf().Preauth.MaxStanzaSize,
		MaxElements: s.conf().Preauth.MaxElements,
		MaxDepth:    s.conf().C2S.MaxDepth,
	})
	gc.SetContext(c)
	// Absolute from accept: nothing the client sends moves it.
	c.preauthAt = time.Since(s.epoch) + s.conf().Preauth.Timeout
	switch kind {
	case listenerWeb:
		s.startWeb(c) // counted in preauth_web
	case listenerDirectTLS:
		s.stats.preauthPlain.Add(1)
		s.startTLS(c, true)
	default:
		s.stats.preauthPlain.Add(1)
		s.armDeadline(c)
	}
	return nil, gnet.None
}

// armDeadline arms c's one timer for the earliest of its deadlines before
// binding: the absolute pre-auth deadline and the transport's set-up
// deadline (the TLS handshake's), if one runs.
func (s *Server) armDeadline(c *conn) {
	at := s.epoch.Add(c.preauthAt)
	if d := c.tr.deadline(); !d.IsZero() && d.Before(at) {
		at = d
	}
	c.loop.wheel.Arm(&c.timer, c, at)
}

func addrIP(a net.Addr) netip.Addr {
	if t, ok := a.(*net.TCPAddr); ok {
		if ip, ok := netip.AddrFromSlice(t.IP); ok {
			// Unmapped and zoneless, so that it fits a peerAddr unchanged.
			return ip.Unmap().WithZone("")
		}
	}
	return netip.Addr{}
}

// traffic frames and handles every complete unit in the input. Partial
// input stays in gnet's buffer; the framer resumes on it next time.
func (s *Server) traffic(gc gnet.Conn) (action gnet.Action) {
	c, _ := gc.Context().(*conn)
	if c == nil || c.has(flagClosed) {
		_, _ = gc.Discard(-1)
		return gnet.None
	}
	defer s.contain(c, &action)
	s.process(c)
	if c.has(flagClosed) {
		return gnet.Close
	}
	return gnet.None
}

// process handles buffered input until it runs out, the connection closes,
// or a worker is needed (the rest waits in gnet's buffer until it answers).
func (s *Server) process(c *conn) {
	tr := c.tr
	tr.input(s, c)
	if c.tr != tr && !c.has(flagClosed) {
		// STARTTLS swapped the layer: what follows <starttls/> (the
		// ClientHello) is the new layer's.
		c.tr.input(s, c)
	}
}

// frame handles the complete units at the start of buf (plaintext, from
// the transport) and returns how many bytes it consumed. It stops when the
// connection closes, waits for a worker, or swaps its transport (STARTTLS).
func (s *Server) frame(c *conn, buf []byte) int {
	if c.sess != nil && len(buf) > 0 {
		// Any input proves the session alive, the answer to a ping or not.
		c.sess.lastActive = c.loop.since()
		c.flags &^= flagAwaitPong
	}
	if c.has(flagWeb) {
		// HTTP, then WebSocket frames around the XML (ws.go).
		return s.webInput(c, buf)
	}
	return s.frameUnits(c, buf)
}

// frameUnits frames the XML stream in buf and handles each unit; frame
// without the web layer.
func (s *Server) frameUnits(c *conn, buf []byte) int {
	tr := c.tr
	off := 0
	for off < len(buf) && !c.has(flagClosed) && c.tr == tr {
		if c.has(flagWorkPending) {
			// Bound what a client may queue while a worker runs for it.
			if len(buf)-off > s.maxPending(c) {
				s.fail(c, stream.PolicyViolation.Err, "too much input while a request is processed")
			}
			return off
		}
		tok, err := c.framer.Next(buf[off:])
		if err != nil {
			c.setReason(reasonError) // even when the condition is policy-violation (a size limit)
			s.fail(c, stanza.Condition(err), err.Error())
			return off
		}
		if tok.Kind == stanza.KindNone {
			return off
		}
		unit := buf[off : off+tok.Len]
		off += tok.Len
		s.handleUnit(c, tok.Kind, unit)
	}
	return off
}

// handleUnit handles one complete unit the framer reported.
func (s *Server) handleUnit(c *conn, kind stanza.Kind, unit []byte) {
	switch kind {
	case stanza.KindHeader:
		s.handleHeader(c, unit)
	case stanza.KindElement:
		s.handleElement(c, unit)
	case stanza.KindClose:
		s.closeStream(c)
	case stanza.KindWhitespace:
		// Keepalive: it proves liveness of a session but buys a
		// pre-auth connection nothing.
	}
}

// maxPending bounds the input a connection may send while its input is
// paused for a worker: one stanza before authentication, a few after (a
// client may pipeline while a message is stored).
func (s *Server) maxPending(c *conn) int {
	if c.phase == phaseSession {
		return 4 * s.conf().C2S.MaxStanzaSize
	}
	return s.conf().Preauth.MaxStanzaSize
}

// write queues b on the connection through its transport (encrypted once
// TLS is up). Called on its loop only. Nothing is written while a TLS
// handshake is under way.
func (c *conn) write(b []byte) {
	if c.has(flagClosed) {
		return
	}
	if c.loop.corked == c {
		c.loop.cork = append(c.loop.cork, b...)
		return
	}
	c.tr.write(c, b)
	if max := c.loop.srv.conf().C2S.MaxOutbound; max > 0 && c.gc.OutboundBuffered() > max {
		c.loop.srv.slowReader(c)
	}
}

// cork gathers what is written to c from now until uncork into one write:
// one TLS record (or a few) instead of one per element. A resumption
// sends <resumed/>, or SASL2's <success/>, and then the queue: xmpp.js
// 0.14, parsing one record while it writes from the handler of the
// previous one, reads the next record re-entrantly and loses its place in
// the stream; the same bytes in one record parse. Only one connection of
// a loop is corked at a time, on the loop.
func (c *conn) cork() {
	if c.loop.corked == nil {
		c.loop.corked = c
	}
}

// uncork writes what was gathered since cork.
func (c *conn) uncork() {
	l := c.loop
	if l.corked != c {
		return
	}
	l.corked = nil
	b := l.cork
	l.cork = b[:0]
	if len(b) > 0 {
		c.write(b)
	}
	if cap(l.cork) > 64<<10 {
		l.cork = nil // a large queue's buffer is not kept by the loop
	}
}

// slowReader closes a connection whose client stopped reading: a stream
// error would only queue behind what it does not read. Logged at debug,
// like every per-connection close; krill_connections_closed_total counts it.
func (s *Server) slowReader(c *conn) {
	s.log.Debug("connection closed", zap.String("reason", "client does not read"),
		zap.Int("buffered", c.gc.OutboundBuffered()), zap.Stringer("ip", c.ip))
	s.sessionEnded(c, "client does not read", "", nil)
	s.shut(c, reasonPolicy)
}

// fail sends a stream error with cond and text, closes the stream and the
// connection. It logs once, here, at debug: a client can cause one per
// connection, and the closes are counted by reason in
// krill_connections_closed_total. The close reason follows from cond unless
// the caller set one first.
func (s *Server) fail(c *conn, cond, text string) {
	if c.has(flagClosed) {
		return
	}
	if !c.tr.ready() {
		// No stream to speak on mid-handshake.
		s.log.Debug("connection closed during tls setup", zap.String("condition", cond), zap.Stringer("ip", c.ip))
		s.shut(c, reasonFor(cond))
		return
	}
	b := c.loop.scratch[:0]
	if !c.has(flagHeaderSent) {
		b = s.appendHeaderFor(c, b)
		c.flags |= flagHeaderSent
	}
	b = appendStreamError(b, cond, text)
	c.write(b)
	c.loop.scratch = b[:0]
	if ce := s.log.Check(zap.DebugLevel, "stream error"); ce != nil {
		fields := []zap.Field{zap.String("condition", cond), zap.String("text", text), zap.Stringer("ip", c.ip)}
		if c.sess != nil && c.sess.bound {
			fields = append(fields, zap.String("jid", c.sess.full))
		}
		ce.Write(fields...)
	}
	s.sessionEnded(c, "stream error", cond, nil)
	s.shut(c, reasonFor(cond))
}

// reasonFor maps the stream error condition a connection is closed with to
// its close reason.
func reasonFor(cond string) closeReason {
	switch cond {
	case stream.ConnectionTimeout.Err:
		return reasonDeadline
	case stream.PolicyViolation.Err, stream.NotAuthorized.Err, stream.ResourceConstraint.Err:
		return reasonPolicy
	case stream.Conflict.Err:
		return reasonReplaced
	case stream.SystemShutdown.Err:
		return reasonShutdown
	}
	return reasonError
}

// sessionEnded logs, at debug, why a bound session ended: with the
// stanza errors logged as they are sent, it tells an operator why a
// client gave up. It costs nothing when debug is off.
func (s *Server) sessionEnded(c *conn, reason, cond string, err error) {
	if c.sess == nil || !c.sess.bound || c.has(flagClosed) {
		return
	}
	if ce := s.log.Check(zap.DebugLevel, "session ended"); ce != nil {
		fields := []zap.Field{zap.String("jid", c.sess.full), zap.String("reason", reason), zap.Stringer("ip", c.ip)}
		if cond != "" {
			fields = append(fields, zap.String("condition", cond))
		}
		if err != nil {
			fields = append(fields, zap.Error(err))
		}
		ce.Write(fields...)
	}
}

// closeStream answers the client's </stream:stream> and closes.
func (s *Server) closeStream(c *conn) {
	c.write([]byte(streamClose))
	s.sessionEnded(c, "client closed the stream", "", nil)
	s.shut(c, reasonClient)
}

// shut marks the connection closed for why (unless a reason was already
// set) and asks its loop to close the socket after flushing what was
// written. Called on the loop.
func (s *Server) shut(c *conn, why closeReason) {
	if c.has(flagClosed) {
		return
	}
	c.uncork() // what was gathered goes before the close
	c.tr.shut(c)
	s.release(c, why)
	_ = c.loop.el.Close(c.gc)
}

// release drops everything the connection holds in shared state and
// records why it closes (unless a reason was already set). It runs exactly
// once per connection, from shut, from gnet's OnClose or after a panic.
func (s *Server) release(c *conn, why closeReason) {
	c.setReason(why)
	if c.loop.corked == c {
		c.loop.corked, c.loop.cork = nil, c.loop.cork[:0] // the socket is gone
	}
	s.stats.move(c, func() { c.flags |= flagClosed })
	c.loop.wheel.Cancel(&c.timer)
	if c.has(flagS2S) {
		s.s2sRelease(c) // its pre-auth count is the s2s limiter's
	}
	if c.has(flagPreauth) {
		c.flags &^= flagPreauth
		s.preauth.release(c.ip.Addr())
	}
	if c.ex != nil {
		s.sasl2Abandoned(c)
	}
	c.ex = nil
	c.tr.release(c)
	if sess := c.sess; sess != nil && sess.conn == c && !sess.resuming {
		s.lose(sess, c.reason == reasonDropped || c.reason == reasonDeadline)
	}
}

// lose ends sess, whose connection has gone, unless a module keeps it
// (the Closing veto). lost tells the modules whether the connection was
// lost rather than closed (hook.Ctx.Lost).
func (s *Server) lose(sess *session, lost bool) {
	if sess.bound && s.hooks.HasEvent(hook.Closing) && !s.stopping.Load() {
		cx := sess.loop.sessionCtx(sess)
		cx.Conn = nil
		cx.Lost = lost
		kept := s.hooks.Fire(cx, hook.Closing) == hook.Stop
		cx.Reset(nil, nil, nil)
		if kept {
			// A module keeps the session without its connection
			// (resumption); it ends it later with Session.Close.
			sess.conn = nil
			return
		}
	}
	s.endSession(sess)
}

// closed is gnet's OnClose: the socket is gone (by us or by the peer). It
// counts every accepted connection once, with its one close reason.
func (s *Server) closed(gc gnet.Conn, err error) {
	switch v := gc.Context().(type) {
	case *conn:
		c := v
		if !c.has(flagClosed) {
			why := c.tr.dropped() // tls_failed when the peer gave up mid-handshake
			if s.stopped.Load() {
				why = reasonShutdown // Stop closes what is left
			}
			s.sessionEnded(c, "connection lost", "", err)
			s.release(c, why)
		}
		if c.has(flagS2S) {
			s.s2sClosed(c.reason)
			gc.SetContext(nil)
			return
		}
		s.stats.closedBy[c.reason].Add(1)
	case s2sRefused:
		s.s2sClosed(closeReason(v))
		gc.SetContext(nil)
		return
	case closeReason:
		s.stats.closedBy[v].Add(1) // refused in open
	default:
		return // not ours
	}
	s.stats.closed.Add(1)
	gc.SetContext(nil)
}

// contain stops a panic raised while handling c from taking down its event
// loop and every other connection on it: it is logged with its stack,
// counted, and c alone is closed (invariant 7 of the design brief).
func (s *Server) contain(c *conn, action *gnet.Action) {
	r := recover()
	if r == nil {
		return
	}
	s.stats.panics.Add(1)
	s.log.Error("panic handling a connection; closing it", zap.Any("panic", r), zap.Stack("stack"), zap.Stringer("ip", c.ip))
	if !c.has(flagClosed) {
		func() {
			defer func() { _ = recover() }() // releasing must not panic twice
			s.release(c, reasonPanic)
		}()
	}
	if action != nil {
		*action = gnet.Close
		return
	}
	_ = c.loop.el.Close(c.gc)
}

// onDeadline runs on the loop when a connection's one timer fires.
func (s *Server) onDeadline(c *conn) {
	if c.has(flagClosed) {
		return
	}
	defer s.contain(c, nil)
	if c.has(flagS2S) {
		s.s2sDeadline(c)
		return
	}
	if c.phase != phaseSession {
		now := time.Now()
		if d := c.tr.deadline(); !d.IsZero() && !now.Before(d) {
			c.tr.expired(s, c)
			return
		}
		due := s.epoch.Add(c.preauthAt)
		if now.Before(due) {
			s.armDeadline(c) // the handshake deadline was re-armed away
			return
		}
		s.stats.noteLateness(now.Sub(due))
		s.fail(c, stream.ConnectionTimeout.Err, "authentication took too long")
		return
	}
	sess := c.sess
	now := c.loop.now
	idle := s.conf().C2S.IdlePing
	if c.has(flagAwaitPong) {
		// Any input since the ping would have cleared the flag.
		s.fail(c, stream.ConnectionTimeout.Err, "no answer to ping")
		return
	}
	if idle <= 0 {
		return
	}
	if due := s.epoch.Add(sess.lastActive + idle); due.After(now) {
		c.loop.wheel.Arm(&c.timer, c, due)
		return
	}
	c.flags |= flagAwaitPong
	if !s.hooks.Idle(sess) {
		// A stanza: through the outbound chain, which counts and may hold.
		sess.send(s.appendPing(c.loop.scratch[:0], sess))
	}
	c.loop.wheel.Arm(&c.timer, c, now.Add(s.conf().C2S.PingTimeout))
}
