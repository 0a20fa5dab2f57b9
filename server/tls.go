package server

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/krill-xmpp/krill/sasl"
)

// TLS on the event loop, as the design brief describes: crypto/tls
// unforked, over an in-memory net.Conn (tlsPipe). The handshake runs on a
// short-lived goroutine, started only once a complete ClientHello record
// is buffered and a handshake slot is free; afterwards the loop itself
// drives tls.Conn: Read until the pipe reports would-block, Write straight
// into gnet's outbound buffer. No goroutine exists for an idle connection.

// tlsStage is where a connection's TLS layer is.
type tlsStage uint8

const (
	tlsAwaitHello  tlsStage = iota // waiting for a complete ClientHello record
	tlsQueued                      // ClientHello buffered, waiting for a handshake slot
	tlsHandshaking                 // a goroutine runs the handshake
	tlsEstablished                 // the loop drives tls.Conn
)

// maxRecord is the largest TLS record a client may send (RFC 8446 5.1).
const maxRecord = 5 + 16384 + 256

// maxSkipWhitespace bounds the whitespace skipped between <starttls/> and
// the ClientHello: a client's line ending after the element (go-sendxmpp
// writes one newline), with room for CRLF and indentation. More than that
// is not a client about to speak TLS.
const maxSkipWhitespace = 64

// maxHandshakeInput bounds what a client may send while its handshake
// runs or waits: a flood there costs at most this much.
const maxHandshakeInput = 64 << 10

// tlsConn is the TLS transport of one connection, allocated at STARTTLS or
// at accept on the direct TLS listener and owned by the connection's loop.
type tlsConn struct {
	tc         *tls.Conn
	pipe       tlsPipe
	plain      []byte    // decrypted input the framer has not consumed
	hsDeadline time.Time // end of the handshake allowance
	stage      tlsStage
	direct     bool  // direct TLS (XEP-0368): no XML came before the ClientHello
	skipped    uint8 // whitespace skipped before the ClientHello (STARTTLS only)
}

var _ transport = (*tlsConn)(nil)

// input takes the ciphertext gnet holds according to the TLS stage.
func (t *tlsConn) input(s *Server, c *conn) { s.processTLS(c, t) }

// write encrypts b into gnet's outbound buffer once the handshake is done.
func (t *tlsConn) write(_ *conn, b []byte) {
	if t.stage == tlsEstablished {
		_, _ = t.tc.Write(b)
	}
}

func (t *tlsConn) ready() bool  { return t.stage == tlsEstablished }
func (t *tlsConn) secure() bool { return true }

// binding serves tls-exporter (RFC 9266) and tls-server-end-point (RFC
// 5929) from the established connection.
func (t *tlsConn) binding() func(cbType string) ([]byte, error) {
	cs := t.tc.ConnectionState()
	return sasl.TLSBinding(&cs, t.pipe.leaf)
}

// deadline is the handshake deadline until the handshake is done.
func (t *tlsConn) deadline() time.Time {
	if t.stage == tlsEstablished {
		return time.Time{}
	}
	return t.hsDeadline
}

// expired closes a connection whose handshake did not finish in time.
func (t *tlsConn) expired(s *Server, c *conn) {
	s.stats.tlsFailed[causeTimeout].Add(1)
	s.log.Debug("tls handshake failed", zap.String("cause", tlsCauseNames[causeTimeout]), zap.Stringer("ip", c.ip))
	s.shut(c, reasonDeadline)
}

// shut sends close_notify on an established connection.
func (t *tlsConn) shut(*conn) {
	if t.stage == tlsEstablished {
		_ = t.tc.Close() // close_notify, then the pipe
	}
}

// release closes the pipe, which also ends a handshake goroutine blocked
// on it, and drops the decrypted input.
func (t *tlsConn) release(c *conn) {
	if c.reason == reasonTLSFailed && t.stage == tlsHandshaking {
		// The peer left mid-handshake: the handshake goroutine reads
		// what it sent last (an alert, perhaps), then EOF, and its
		// cause is counted when it ends (handshakeEnded).
		t.pipe.peerClosed()
	} else {
		_ = t.pipe.Close() // releases a blocked handshake goroutine
	}
	if t.stage == tlsQueued {
		c.loop.srv.handshakes.forget(t)
	}
	t.plain = nil
}

// dropped: a peer that leaves mid-handshake failed its TLS set-up.
func (t *tlsConn) dropped() closeReason {
	if t.stage == tlsHandshaking {
		return reasonTLSFailed
	}
	return reasonDropped
}

// errWouldBlock is what the pipe's Read returns on the loop when no
// ciphertext is left. It is a temporary, timeout net.Error, which crypto/tls
// does not keep as a permanent error after the handshake (pinned by
// TestTLSTemporaryErrorNotSticky).
var errWouldBlock net.Error = wouldBlock{}

type wouldBlock struct{}

func (wouldBlock) Error() string   { return "server: no TLS input buffered" }
func (wouldBlock) Timeout() bool   { return true }
func (wouldBlock) Temporary() bool { return true }

// tlsPipe is the net.Conn under tls.Conn. During the handshake the
// goroutine reads (blocking) and writes (into out, flushed by the loop);
// afterwards only the loop uses it, reads never block and writes go to
// gnet directly.
type tlsPipe struct {
	c    *conn
	leaf *x509.Certificate // the certificate sent, for tls-server-end-point

	mu          sync.Mutex // guards everything below while a handshake runs
	in          []byte     // ciphertext not yet read by tls.Conn
	out         []byte     // handshake output not yet written to gnet
	ready       chan struct{}
	handshaking bool
	closed      bool
	flushPosted bool
	// tail holds the last bytes the client sent during the handshake, to
	// recognise a plaintext alert record that crypto/tls could only report
	// as "bad record MAC" (see handshakeCause).
	tail  [alertRecordLen]byte
	ntail uint8
	// tickets counts the NewSessionTicket messages crypto/tls wrote
	// (tickets.go): in TLS 1.3 each is one record under the server's
	// application key, sealed before the lean layer takes that key over.
	tickets uint8
	// recordBound (tls.lean) makes Read return at most the rest of the
	// current record while the handshake runs, so that crypto/tls never
	// buffers what the client sent after its Finished: that belongs to
	// the lean layer, under the application key. recLeft is what is left
	// of the current record, header included; 0 at a record boundary.
	recordBound bool
	recLeft     int
	// secrets are the application traffic secrets the key-log writer
	// took (tls.lean), until the switch takes them.
	secrets *trafficSecrets
}

// alertRecordLen is the length of a TLS record carrying one plaintext
// alert: a 5-byte header and level, description.
const alertRecordLen = 7

// noteTail remembers the last alertRecordLen bytes of the client's
// handshake input. Called with p.mu held, or before the handshake starts.
func (p *tlsPipe) noteTail(b []byte) {
	if len(b) >= alertRecordLen {
		copy(p.tail[:], b[len(b)-alertRecordLen:])
		p.ntail = alertRecordLen
		return
	}
	keep := min(int(p.ntail), alertRecordLen-len(b))
	copy(p.tail[:], p.tail[int(p.ntail)-keep:p.ntail])
	copy(p.tail[keep:], b)
	p.ntail = uint8(keep + len(b))
}

// lastAlert reports the description of the plaintext alert record the
// client sent last, if its last bytes were one.
func (p *tlsPipe) lastAlert() (uint8, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	t := p.tail
	if p.ntail != alertRecordLen || t[0] != 21 || t[1] != 3 || t[3] != 0 || t[4] != 2 {
		return 0, false
	}
	return t[6], true
}

// Read implements net.Conn.
func (p *tlsPipe) Read(b []byte) (int, error) {
	p.mu.Lock()
	for {
		if n := p.readable(); n > 0 {
			n = copy(b, p.in[:n])
			p.in = p.in[n:]
			if p.recLeft > 0 {
				p.recLeft = max(p.recLeft-n, 0)
			}
			if len(p.in) == 0 {
				p.in = nil
			}
			p.mu.Unlock()
			return n, nil
		}
		if p.closed {
			p.mu.Unlock()
			return 0, io.EOF
		}
		if !p.handshaking {
			p.mu.Unlock()
			return 0, errWouldBlock
		}
		// The handshake goroutine is about to wait for the client: what it
		// wrote must reach the client first, or both wait forever.
		post := len(p.out) > 0 && !p.flushPosted
		p.flushPosted = p.flushPosted || post
		ready := p.ready
		p.mu.Unlock()
		if post {
			p.c.loop.srv.onLoop(p.c, p.flush)
		}
		<-ready
		p.mu.Lock()
	}
}

// readable returns how many bytes of p.in Read may return: all of them,
// or with recordBound during the handshake what is left of the current
// record, nothing while its header is incomplete. Called with p.mu held.
func (p *tlsPipe) readable() int {
	if !p.recordBound || !p.handshaking {
		return len(p.in)
	}
	if p.recLeft == 0 {
		if len(p.in) < 5 {
			if p.closed {
				return len(p.in)
			}
			return 0
		}
		p.recLeft = 5 + int(binary.BigEndian.Uint16(p.in[3:5]))
	}
	return min(len(p.in), p.recLeft)
}

// Write implements net.Conn.
func (p *tlsPipe) Write(b []byte) (int, error) {
	p.mu.Lock()
	if p.handshaking {
		p.out = append(p.out, b...)
		p.mu.Unlock()
		return len(b), nil
	}
	closed := p.closed
	p.mu.Unlock()
	if closed {
		return 0, net.ErrClosed
	}
	// Established: we are on the connection's loop.
	_, _ = p.c.gc.Write(b)
	return len(b), nil
}

// flush writes pending handshake output. Runs on the loop.
func (p *tlsPipe) flush() {
	p.mu.Lock()
	out := p.out
	p.out = nil
	p.flushPosted = false
	p.mu.Unlock()
	if len(out) > 0 {
		_, _ = p.c.gc.Write(out)
	}
}

// feed appends ciphertext for the handshake goroutine and wakes it.
func (p *tlsPipe) feed(b []byte) {
	p.mu.Lock()
	p.in = append(p.in, b...)
	p.noteTail(b)
	if p.ready != nil {
		select {
		case p.ready <- struct{}{}:
		default:
		}
	}
	p.mu.Unlock()
}

// Close implements net.Conn; it also releases a blocked handshake.
func (p *tlsPipe) Close() error {
	p.mu.Lock()
	p.closed = true
	p.in, p.out = nil, nil
	if p.ready != nil {
		close(p.ready)
		p.ready = nil
	}
	p.mu.Unlock()
	return nil
}

// peerClosed ends the pipe because the client closed its side during the
// handshake: unlike Close, the input already received stays readable (it
// may end with the alert that says why), then Read reports EOF.
func (p *tlsPipe) peerClosed() {
	p.mu.Lock()
	p.closed = true
	p.out = nil
	if p.ready != nil {
		close(p.ready)
		p.ready = nil
	}
	p.mu.Unlock()
}

// LocalAddr implements net.Conn.
func (p *tlsPipe) LocalAddr() net.Addr { return p.c.gc.LocalAddr() }

// RemoteAddr implements net.Conn.
func (p *tlsPipe) RemoteAddr() net.Addr { return p.c.gc.RemoteAddr() }

// SetDeadline implements net.Conn; deadlines live in the timer wheel.
func (p *tlsPipe) SetDeadline(time.Time) error { return nil }

// SetReadDeadline implements net.Conn.
func (p *tlsPipe) SetReadDeadline(time.Time) error { return nil }

// SetWriteDeadline implements net.Conn; tls.Conn.Close calls it.
func (p *tlsPipe) SetWriteDeadline(time.Time) error { return nil }

// startTLS gives c a TLS layer waiting for the ClientHello, with its
// handshake deadline. Called on the loop.
func (s *Server) startTLS(c *conn, direct bool) {
	cfg := s.tlsStartTLS
	if direct {
		cfg = s.tlsDirect
	}
	t := s.newTLS(c, cfg, direct)
	s.stats.move(c, func() { c.tr = t })
	s.armDeadline(c)
}

// newTLS returns a TLS layer for c waiting for the ClientHello, its
// handshake deadline running; the caller makes it c's transport (or the
// layer under the web one, ws.go).
func (s *Server) newTLS(c *conn, cfg *tls.Config, direct bool) *tlsConn {
	t := &tlsConn{hsDeadline: time.Now().Add(s.conf().TLS.HandshakeTimeout), direct: direct}
	t.pipe.c = c
	t.pipe.recordBound = leanConfig(cfg)
	t.tc = tls.Server(&t.pipe, cfg)
	return t
}

// processTLS takes the ciphertext gnet holds for c according to the stage
// of t, c's transport.
func (s *Server) processTLS(c *conn, t *tlsConn) {
	buf, _ := c.gc.Peek(-1)
	switch t.stage {
	case tlsAwaitHello:
		if ws := leadingSpace(buf); ws > 0 && !t.direct {
			// STARTTLS: the client begins TLS only once it has read our
			// <proceed/> (RFC 6120 5.4.3.3), so whitespace it wrote after
			// its <starttls/> (go-sendxmpp: a newline) still belongs to
			// the XML stream. Direct TLS has no XML stream: there the
			// first byte must start the ClientHello.
			if int(t.skipped)+ws > maxSkipWhitespace {
				s.tlsFail(c, causeNotTLS, "whitespace instead of a ClientHello", nil)
				return
			}
			t.skipped += uint8(ws)
			_, _ = c.gc.Discard(ws)
			buf = buf[ws:]
		}
		if len(buf) == 0 {
			return
		}
		if buf[0] != 0x16 { // not a handshake record: not TLS at all
			s.tlsFail(c, causeNotTLS, "not a TLS handshake record", nil)
			return
		}
		if len(buf) < 5 {
			return
		}
		n := 5 + int(binary.BigEndian.Uint16(buf[3:5]))
		if n > maxRecord {
			s.tlsFail(c, causeNotTLS, "oversized first record", nil)
			return
		}
		if len(buf) < n {
			// Stays in gnet's buffer: a trickled ClientHello holds no
			// goroutine and no copy.
			return
		}
		t.pipe.in = append([]byte(nil), buf...)
		t.pipe.noteTail(buf)
		_, _ = c.gc.Discard(len(buf))
		s.beginHandshake(c, t)
	case tlsQueued, tlsHandshaking:
		if len(buf) == 0 {
			return
		}
		t.pipe.mu.Lock()
		pending := len(t.pipe.in)
		t.pipe.mu.Unlock()
		if pending+len(buf) > maxHandshakeInput {
			if !c.has(flagWeb) || len(buf) > s.web.handshakeHold {
				s.tlsFail(c, causeOther, "too much input during the handshake", nil)
				return
			}
			// A browser or HTTP client sends its request, an upload's
			// body with it, right after its Finished: the pipe takes
			// up to the cap, which holds the Finished, and the rest
			// waits in gnet's buffer for the record layer (see
			// handshakeHold).
			buf = buf[:maxHandshakeInput-pending]
			if len(buf) == 0 {
				return // (gnet's Discard(0) would drop everything)
			}
		}
		t.pipe.feed(buf)
		_, _ = c.gc.Discard(len(buf))
	case tlsEstablished:
		s.readTLS(c, t, buf)
	}
}

// readTLS decrypts everything buffered and frames the plaintext. buf is
// gnet's input, lent to the pipe only for this call.
func (s *Server) readTLS(c *conn, t *tlsConn, buf []byte) {
	p := &t.pipe
	if len(buf) > 0 {
		if len(p.in) > 0 {
			p.in = append(p.in, buf...)
		} else {
			p.in = buf
		}
	}
	scratch := c.loop.tlsScratch()
	var rerr error
	for {
		n, err := t.tc.Read(scratch)
		if n > 0 {
			t.plain = append(t.plain, scratch[:n]...)
		}
		if err != nil {
			if !errors.Is(err, errWouldBlock) {
				rerr = err
			}
			break
		}
	}
	p.in = nil
	if len(buf) > 0 {
		_, _ = c.gc.Discard(len(buf))
	}
	off := s.frame(c, t.plain)
	if c.has(flagClosed) {
		return
	}
	switch rest := t.plain[off:]; {
	case len(rest) == 0:
		t.plain = nil // an idle connection keeps no buffer
	case cap(t.plain) > 2*len(rest)+4096:
		t.plain = append([]byte(nil), rest...)
	default:
		t.plain = append(t.plain[:0], rest...)
	}
	if rerr != nil {
		// close_notify, an alert or a broken record: the stream is over.
		why := reasonDropped
		if !errors.Is(rerr, io.EOF) {
			why = reasonError
			s.log.Debug("tls read failed", zap.Error(rerr), zap.Stringer("ip", c.ip))
		}
		s.shut(c, why)
	}
}

// beginHandshake runs the handshake now if a slot is free, or queues it.
// When the queue is full too, c is closed at once: it is counted as a
// policy close and a TLS failure (queue_full), logged at debug like the
// other TLS failures.
func (s *Server) beginHandshake(c *conn, t *tlsConn) {
	switch s.handshakes.acquire(t) {
	case slotTaken:
		s.runHandshake(c, t)
	case slotQueued:
		t.stage = tlsQueued
	default:
		s.countTLSFailure(c, causeQueueFull, "handshake queue full", nil)
		s.shut(c, reasonPolicy)
	}
}

// runHandshake starts the handshake goroutine; the caller holds a slot.
func (s *Server) runHandshake(c *conn, t *tlsConn) {
	t.stage = tlsHandshaking
	p := &t.pipe
	p.mu.Lock()
	p.handshaking = true
	p.ready = make(chan struct{}, 1)
	p.mu.Unlock()
	s.stats.tlsHandshakes.Add(1)
	tc := t.tc
	// The one goroutine a connection may have: for its handshake only,
	// bounded by tls.max_handshakes and the handshake deadline.
	go func() {
		err := tc.Handshake()
		s.handshakes.release()
		s.onLoopOr(c, func() { s.finishHandshake(c, t, err) }, func() { s.handshakeEnded(c, t, err) })
	}()
}

// handshakeEnded runs when a handshake goroutine ends after its connection
// closed. If the client closed it mid-handshake, the handshake's outcome
// says why (an alert, or nothing) and is counted here; a connection the
// server closed (deadline, shutdown) was counted when it did.
func (s *Server) handshakeEnded(c *conn, t *tlsConn, err error) {
	if c.reason != reasonTLSFailed {
		return
	}
	cause, alert := handshakeCause(err, &t.pipe)
	s.countTLSFailure(c, cause, alert, err)
}

// handshakeCause classifies a failed handshake (err nil: the client closed
// the connection after a handshake that had not finished for us). alert
// names the alert the client sent, if any.
func handshakeCause(err error, p *tlsPipe) (cause tlsCause, alert string) {
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Op == "remote error" {
		return causeClientAlert, oe.Err.Error()
	}
	if err == nil {
		return causeClientClosed, ""
	}
	if a, ok := p.lastAlert(); ok {
		// A client that gives up before it has its handshake keys (OpenSSL
		// refusing our certificate under TLS 1.3) sends its alert in
		// plaintext, which crypto/tls, expecting an encrypted record,
		// reports as "bad record MAC".
		return causeClientAlert, tls.AlertError(a).Error()
	}
	var rh tls.RecordHeaderError
	switch {
	case errors.As(err, &rh):
		return causeNotTLS, ""
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return causeClientClosed, ""
	}
	return causeOther, ""
}

// tlsFail counts a failed TLS setup with its cause and closes c. The log
// line is at debug level: per-connection lines would flood the log under
// attack, and krill_tls_handshake_failures_total says how many and why.
func (s *Server) tlsFail(c *conn, cause tlsCause, what string, err error) {
	s.countTLSFailure(c, cause, what, err)
	s.shut(c, reasonTLSFailed)
}

// countTLSFailure counts and logs one failed handshake.
func (s *Server) countTLSFailure(c *conn, cause tlsCause, detail string, err error) {
	s.stats.tlsFailed[cause].Add(1)
	if ce := s.log.Check(zap.DebugLevel, "tls handshake failed"); ce != nil {
		fields := []zap.Field{zap.String("cause", tlsCauseNames[cause]), zap.Stringer("ip", c.ip)}
		switch {
		case cause == causeClientAlert:
			fields = append(fields, zap.String("alert", detail))
		case detail != "":
			fields = append(fields, zap.String("detail", detail))
		}
		if err != nil {
			fields = append(fields, zap.Error(err))
		}
		ce.Write(fields...)
	}
}

// leadingSpace returns how many XML whitespace bytes start b.
func leadingSpace(b []byte) int {
	n := 0
	for n < len(b) && (b[n] == ' ' || b[n] == '\t' || b[n] == '\r' || b[n] == '\n') {
		n++
	}
	return n
}

// finishHandshake switches c to loop-driven TLS. The last handshake bytes
// are written before anything else, in the same critical section that
// ends the handshake mode.
func (s *Server) finishHandshake(c *conn, t *tlsConn, err error) {
	p := &t.pipe
	p.mu.Lock()
	out := p.out
	p.out, p.ready, p.handshaking, p.flushPosted = nil, nil, false, false
	p.mu.Unlock()
	if len(out) > 0 {
		_, _ = c.gc.Write(out)
	}
	if err != nil {
		cause, alert := handshakeCause(err, p)
		s.tlsFail(c, cause, alert, err)
		return
	}
	cs := t.tc.ConnectionState()
	if cs.DidResume {
		s.stats.tlsResumed.Add(1)
	}
	l, lerr := newLeanTLS(t, &cs)
	switch {
	case lerr == nil:
		s.stats.tlsLean.Add(1)
	case t.pipe.recordBound:
		s.stats.tlsStock.Add(1) // TLS 1.2, or a suite the lean layer lacks
		if !errors.Is(lerr, errNotLean) {
			s.log.Debug("tls: staying on the stock record layer", zap.Error(lerr), zap.Stringer("ip", c.ip))
		}
	default:
		s.stats.tlsStock.Add(1)
	}
	t.stage = tlsEstablished
	c.phase = phaseHeader
	c.flags &^= flagHeaderSent
	if !t.direct {
		// STARTTLS restarts the stream; direct TLS opens its first one,
		// and the framer has seen nothing yet.
		c.framer.Reset()
	}
	if c.has(flagS2S) {
		s.s2sSecured(c, t)
	}
	s.armDeadline(c)
	if l != nil {
		// The tls.Conn is dropped and can never write again: its pipe is
		// closed, so a stray Close could not put a record sealed with the
		// key and nonce the lean layer now uses on the wire. What the
		// client sent after its Finished stayed in the pipe (recordBound).
		p.mu.Lock()
		l.pending = p.in
		p.in = nil
		p.closed = true
		p.mu.Unlock()
		t.tc = nil
		c.swapLayer(l) // both layers are secure: the state gauges do not move
		l.input(s, c)
		return
	}
	// Clients often send their stream header with their Finished: read
	// now, with what waited in gnet's buffer (a web request's body).
	s.processTLS(c, t)
}

// tlsScratch returns the loop's buffer for decrypted records.
func (l *loop) tlsScratch() []byte {
	if l.plainBuf == nil {
		// Room for one sealed record of the lean layer too.
		l.plainBuf = make([]byte, maxRecord)
	}
	return l.plainBuf
}

// handshakeLimiter caps concurrent handshakes; connections beyond the cap
// wait in FIFO order, their deadlines running, up to maxQueue of them.
type handshakeLimiter struct {
	srv      *Server
	mu       sync.Mutex
	max      int // tls.max_handshakes
	maxQueue int // tls.max_handshake_queue
	active   int
	// wait holds the connections waiting for a slot, open ones only: one
	// that closes while it waits leaves (forget), so the queue bounds
	// live connections and holds no dead one.
	wait []*tlsConn
}

// slot is the outcome of handshakeLimiter.acquire.
type slot uint8

const (
	slotTaken   slot = iota // a slot is the caller's: run the handshake
	slotQueued              // queued: handOver runs it when a slot frees
	slotRefused             // the queue is full
)

// acquire takes a slot, or queues t, or refuses it when the queue is full.
// Called on t's loop.
func (h *handshakeLimiter) acquire(t *tlsConn) slot {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.active < h.max {
		h.active++
		return slotTaken
	}
	if len(h.wait) >= h.maxQueue {
		return slotRefused
	}
	h.wait = append(h.wait, t)
	return slotQueued
}

// forget removes a queued connection that closed. Called on its loop. The
// scan is bounded by tls.max_handshake_queue.
func (h *handshakeLimiter) forget(t *tlsConn) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for i, w := range h.wait {
		if w == t {
			n := copy(h.wait[i:], h.wait[i+1:])
			h.wait[i+n] = nil
			h.wait = h.wait[:i+n]
			break
		}
	}
	if len(h.wait) == 0 {
		h.wait = nil
	}
}

// release frees a slot, handing it to the next waiting connection. A
// connection that closed meanwhile passes the slot on.
func (h *handshakeLimiter) release() {
	h.mu.Lock()
	if len(h.wait) == 0 {
		h.active--
		h.mu.Unlock()
		return
	}
	next := h.wait[0]
	h.wait[0] = nil
	h.wait = h.wait[1:]
	if len(h.wait) == 0 {
		h.wait = nil
	}
	h.mu.Unlock()
	h.handOver(next)
}

// handOver gives a held slot to a waiting connection on its loop; one that
// closed meanwhile passes the slot on. A connection's TLS layer is never
// swapped, so next is still its transport.
func (h *handshakeLimiter) handOver(next *tlsConn) {
	c := next.pipe.c
	h.srv.onLoopOr(c, func() {
		if next.stage == tlsQueued {
			h.srv.runHandshake(c, next)
			return
		}
		h.release()
	}, h.release)
}

// inFlight returns the handshakes running and waiting.
func (h *handshakeLimiter) inFlight() (active, waiting int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.active, len(h.wait)
}
