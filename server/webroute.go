package server

import (
	"bytes"
	"io"
	"net"
	"net/netip"
	"strconv"
	"time"

	"go.uber.org/zap"

	"github.com/krill-xmpp/krill/hook"
	"github.com/krill-xmpp/krill/workpool"
)

// Module routes on the web listener (hook.WebRouter): XEP-0363 upload's
// PUT and GET. A route runs on the loop like the core's; what it moves in
// bulk goes through a transfer, a connection stage of its own:
//
//   - wsWait: the route's Async job runs on the transfer pool; input stays
//     in the buffer below (at most a request head's worth).
//   - wsBody: Receive. Each chunk of body in the buffer below is copied
//     (gnet's Peek may return the loop's shared buffer, which a worker
//     cannot hold) into the transfer's buffer and written by a transfer
//     worker while input waits; the next chunk is taken when it is done.
//     So a transfer holds one chunk and what the kernel and gnet buffered.
//   - wsSend: Send. A worker reads a chunk, the loop writes it, and the
//     next is read once the client has taken most of it
//     (OutboundBuffered under xferChunk), so a slow reader holds one
//     chunk and the socket's buffer, not the file.
//
// Transfers run on their own pool of upload.max_transfers workers, apart
// from storage work, and at most upload.max_transfers at once (503
// beyond). A transfer leaves the pre-auth limiter (a signed PUT or a GET
// of an unguessable URL is the request's authentication) and its
// deadline becomes an inactivity deadline: preauth.timeout from the last
// chunk, so a stalled client still goes.

// xferChunk is the chunk size of a transfer, and the backlog a download
// waits to go under before the next chunk.
const xferChunk = 64 << 10

// drainPoll is how often a download whose client is slow checks whether
// its backlog went down (gnet has no write-drained event).
const drainPoll = 5 * time.Millisecond

// More web stages (ws.go has wsHTTP, wsOpen, wsClosing).
const (
	wsWait  wsStage = iota + wsClosing + 1 // a route's Async job runs
	wsBody                                 // Receive: a request body goes to a transfer worker
	wsSend                                 // Send: a file goes out
	wsDrain                                // answered: the refused body is read and dropped
)

// maxDrain caps the refused request body read after the answer. Closing
// with the body unread would reset the connection (RFC 9112 section 9.6),
// and the client could lose the answer; a larger body is not waited for.
const maxDrain = 1 << 20

// webXfer is a transfer in progress, in wsPartial.
type webXfer struct {
	buf   []byte
	left  int64 // bytes still to receive or send
	busy  bool  // a chunk job is on the pool
	ended bool  // end ran or was submitted; body closed
	write func(p []byte) error
	end   func(err error) (int, string, string, []byte)
	body  io.ReadCloser
}

// initWebRoutes adds the modules' routes after the core's, and the
// transfer pool they use.
func (s *Server) initWebRoutes() {
	for _, m := range s.hooks.Modules() {
		wr, ok := m.(hook.WebRouter)
		if !ok {
			continue
		}
		for _, r := range wr.WebRoutes() {
			serve := r.Serve
			s.web.routes = append(s.web.routes, webRoute{path: r.Path, prefix: r.Prefix,
				serve: func(s *Server, c *conn, w *wsConn, req *httpRequest) {
					wr := &webReq{s: s, c: c, w: w, req: req}
					serve(wr)
					wr.req = nil // the head is the input's, valid during serve only
				}})
			s.web.modRoutes = true
		}
	}
	if s.web.modRoutes {
		s.web.handshakeHold = maxRequestHead + int(min(s.cfg.Upload.MaxFileSize, 1<<30))
	}
}

// startTransfers makes the transfer pool and tells modules the web
// listener's base URL, once its port is known.
func (s *Server) startTransfers() {
	if !s.web.modRoutes || s.webListen == "" {
		return
	}
	n := s.cfg.Upload.MaxTransfers
	s.web.xfer = workpool.New(n, 4*n)
	base := s.webBase()
	for _, m := range s.hooks.Modules() {
		if l, ok := m.(hook.WebListening); ok {
			l.WebListening(base)
		}
	}
}

// webBase is the web listener's URL: its address, or the domain when it
// listens on every address.
func (s *Server) webBase() string {
	host, port, _ := net.SplitHostPort(s.webListen)
	if a, err := netip.ParseAddr(host); host == "" || err == nil && a.IsUnspecified() {
		host = s.cfg.Domain
	}
	scheme := "http://"
	if s.cfg.Web.TLS {
		scheme = "https://"
	}
	return scheme + net.JoinHostPort(host, port)
}

// webReq is a module route's request (hook.WebRequest).
type webReq struct {
	s   *Server
	c   *conn
	w   *wsConn
	req *httpRequest // nil once serve returned
}

var _ hook.WebRequest = (*webReq)(nil)

func (r *webReq) Method() string { return string(r.req.method) }
func (r *webReq) Path() string   { return string(r.req.path) }
func (r *webReq) Query() string  { return string(r.req.query) }

func (r *webReq) Header(name string) []byte { return headerValue(r.req.head, name) }

func (r *webReq) ContentLength() int64 { return r.req.clen }

func (r *webReq) CORS() string {
	origin := r.Header("Origin")
	switch {
	case origin == nil:
		return ""
	case r.s.web.anyOrig:
		return "Access-Control-Allow-Origin: *\r\n"
	case r.s.originAllowed(origin):
		return "Access-Control-Allow-Origin: " + string(origin) + "\r\nVary: Origin\r\n"
	}
	return ""
}

func (r *webReq) Respond(status int, ctype, header string, body []byte) {
	if r.c.has(flagClosed) {
		return
	}
	r.s.webWrite(r.c, r.w, status, ctype, header, body, r.isHead())
	if n := r.bodyLeft(); n > 0 && n <= maxDrain {
		r.w.partial().drain = n
		r.w.stage = wsDrain
		return
	}
	r.s.shut(r.c, reasonClient)
}

// bodyLeft is the request body not read yet.
func (r *webReq) bodyLeft() int64 {
	switch {
	case r.expects100() && (r.w.part == nil || r.w.part.xfer == nil):
		return 0 // refused before 100 Continue: the client sends no body
	case r.w.part != nil && r.w.part.xfer != nil:
		return r.w.part.xfer.left
	case r.req != nil:
		return max(r.req.clen, 0)
	case r.w.part != nil:
		return r.w.part.drain
	}
	return 0
}

// drainLeft is the announced request body not read yet, past the head.
func (w *wsConn) drainLeft() int64 {
	if w.part == nil {
		return 0
	}
	return w.part.drain
}

// webDrain drops the body of a refused request, then closes.
func (s *Server) webDrain(c *conn, w *wsConn, buf []byte) {
	p := w.part
	p.drain -= min(int64(len(buf)), p.drain)
	if p.drain == 0 {
		s.shut(c, reasonClient)
	}
}

func (r *webReq) isHead() bool {
	return r.w.part != nil && r.w.part.head || r.req != nil && string(r.req.method) == "HEAD"
}

// Async runs job on the transfer pool with the connection's input held.
func (r *webReq) Async(job func() func(gone bool), busy func()) {
	s, c, w := r.s, r.c, r.w
	if r.req != nil && string(r.req.method) == "HEAD" {
		w.partial().head = true
	}
	if r.req != nil && r.req.expect100 {
		w.partial().expect = true
	}
	if r.req != nil && r.req.clen > 0 {
		w.partial().drain = r.req.clen
	}
	if w.stage == wsHTTP {
		w.stage = wsWait
	}
	err := s.web.xfer.Submit(func() {
		then := job()
		if then == nil {
			return
		}
		s.onLoopOr(c, func() { then(false) }, func() { s.xferRun(func() { then(true) }) })
	})
	if err != nil {
		s.stats.workRejected.Add(1)
		if busy != nil {
			busy()
		}
		r.Respond(503, "text/plain; charset=utf-8", "Retry-After: 10\r\n", []byte("busy\n"))
	}
}

// xferRun runs a clean-up job on the transfer pool, or on a goroutine of
// its own when the pool is full or closed: it frees a file, so it must
// run.
func (s *Server) xferRun(job func()) {
	if s.web.xfer == nil || s.web.xfer.Submit(job) != nil {
		go job()
	}
}

// startTransfer counts a transfer in, or answers 503 when
// upload.max_transfers are running; the connection leaves the pre-auth
// limiter and gets the transfer deadline.
func (r *webReq) startTransfer() bool {
	s, c := r.s, r.c
	if s.web.xfers.Add(1) > int32(s.cfg.Upload.MaxTransfers) {
		s.web.xfers.Add(-1)
		r.Respond(503, "text/plain; charset=utf-8", "Retry-After: 10\r\n", []byte("too many transfers\n"))
		return false
	}
	s.stats.move(c, func() {
		if c.has(flagPreauth) {
			c.flags &^= flagPreauth
			s.preauth.release(c.ip.Addr())
		}
	})
	s.renewTransfer(c)
	return true
}

// renewTransfer moves the deadline of a transfer to preauth.timeout from
// now: it is an inactivity deadline.
func (s *Server) renewTransfer(c *conn) {
	c.preauthAt = time.Since(s.epoch) + s.conf().Preauth.Timeout
	s.armDeadline(c)
}

func (r *webReq) Receive(n int64, write func(p []byte) error, end func(err error) (int, string, string, []byte)) {
	s, c, w := r.s, r.c, r.w
	if c.has(flagClosed) {
		s.xferRun(func() { end(hook.ErrWebAborted) })
		return
	}
	if !r.startTransfer() {
		s.xferRun(func() { end(hook.ErrWebAborted) })
		return
	}
	x := &webXfer{buf: make([]byte, min(n, xferChunk)), left: n, write: write, end: end}
	w.partial().xfer = x
	w.stage = wsBody
	if r.expects100() {
		w.under.write(c, []byte("HTTP/1.1 100 Continue\r\n\r\n"))
	}
	if n == 0 {
		s.xferEnd(c, w, x, nil)
		return
	}
	if r.req == nil {
		// Called from a continuation: the body may already be buffered.
		s.process(c)
	}
}

// expects100 reports whether the client waits for 100 Continue before
// its body (RFC 9110 section 10.1.1).
func (r *webReq) expects100() bool {
	if r.w.part != nil && r.w.part.expect {
		return true
	}
	return r.req != nil && r.req.expect100
}

// webBody takes the body of a Receive from the plaintext below.
func (s *Server) webBody(c *conn, w *wsConn, buf []byte) int {
	x := w.part.xfer
	if int64(len(buf)) > x.left+maxRequestHead {
		// More than the announced body: what gnet buffers for a transfer
		// is bounded by its Content-Length (at most upload.max_file_size).
		s.log.Debug("web transfer refused", zap.String("why", "input beyond Content-Length"), zap.Stringer("ip", c.ip))
		s.shut(c, reasonPolicy)
		return len(buf)
	}
	if x.busy || x.ended {
		return 0
	}
	if x.left == 0 {
		return len(buf) // beyond the announced length: ignored, the connection closes
	}
	n := int(min(int64(len(buf)), x.left, int64(len(x.buf))))
	if n == 0 {
		return 0
	}
	chunk := x.buf[:n]
	copy(chunk, buf)
	x.left -= int64(n)
	x.busy = true
	s.renewTransfer(c)
	err := s.web.xfer.Submit(func() {
		err := x.write(chunk)
		s.onLoopOr(c, func() {
			x.busy = false
			if err != nil || x.left == 0 {
				s.xferEnd(c, w, x, err)
				return
			}
			s.process(c) // the body that arrived meanwhile
		}, func() {
			x.busy = false
			s.xferAbort(x)
		})
	})
	if err != nil {
		x.busy = false
		s.stats.workRejected.Add(1)
		s.xferEnd(c, w, x, err)
	}
	return n
}

// xferEnd runs a Receive's end on the pool and answers what it returns.
func (s *Server) xferEnd(c *conn, w *wsConn, x *webXfer, err error) {
	if x.ended {
		return
	}
	x.ended = true
	s.xferRun(func() {
		status, ctype, header, body := x.end(err)
		s.web.xfers.Add(-1)
		s.onLoop(c, func() {
			s.webWrite(c, w, status, ctype, header, body, false)
			s.shut(c, reasonClient)
		})
	})
}

// xferAbort ends a transfer whose connection has gone, on the pool.
func (s *Server) xferAbort(x *webXfer) {
	if x.ended || x.busy {
		return // ended, or the chunk job in flight aborts it when it is done
	}
	x.ended = true
	s.xferRun(func() {
		if x.end != nil {
			x.end(hook.ErrWebAborted)
		}
		if x.body != nil {
			_ = x.body.Close()
		}
		s.web.xfers.Add(-1)
	})
}

func (r *webReq) Send(status int, ctype, header string, n int64, body io.ReadCloser) {
	s, c, w := r.s, r.c, r.w
	if c.has(flagClosed) {
		s.xferRun(func() { _ = body.Close() })
		return
	}
	head := r.isHead()
	if !r.startTransfer() {
		s.xferRun(func() { _ = body.Close() })
		return
	}
	x := &webXfer{left: n, body: body}
	w.partial().xfer = x
	w.stage = wsSend
	b := appendHead(c.loop.wsOut[:0], status, ctype, header, n)
	s.stats.webRequest(status)
	w.under.write(c, b)
	c.loop.wsOut = b[:0]
	if head || n == 0 {
		x.left = 0
		s.sendDone(c, w, x)
		return
	}
	x.buf = make([]byte, min(n, xferChunk))
	s.sendNext(c, w, x)
}

// sendNext reads the next chunk of a Send on the pool and writes it.
func (s *Server) sendNext(c *conn, w *wsConn, x *webXfer) {
	chunk := x.buf[:min(x.left, int64(len(x.buf)))]
	x.busy = true
	err := s.web.xfer.Submit(func() {
		k, err := io.ReadFull(x.body, chunk)
		s.onLoopOr(c, func() {
			x.busy = false
			if err != nil {
				s.log.Debug("web transfer read failed", zap.Error(err))
				s.xferAbort(x)
				s.shut(c, reasonError) // the length was announced: the client sees it cut short
				return
			}
			w.under.write(c, chunk[:k])
			x.left -= int64(k)
			s.renewTransfer(c)
			s.sendWhenDrained(c, w, x)
		}, func() {
			x.busy = false
			s.xferAbort(x)
		})
	})
	if err != nil {
		x.busy = false
		s.stats.workRejected.Add(1)
		s.xferAbort(x)
		s.shut(c, reasonError)
	}
}

// sendWhenDrained reads the next chunk once the backlog is under
// xferChunk, or, at the end, closes once everything is written: gnet's
// close would drop what the socket has not taken.
func (s *Server) sendWhenDrained(c *conn, w *wsConn, x *webXfer) {
	limit := xferChunk
	if x.left == 0 {
		limit = 0
	}
	if c.gc.OutboundBuffered() > limit {
		time.AfterFunc(drainPoll, func() {
			s.onLoop(c, func() { s.sendWhenDrained(c, w, x) })
		})
		return
	}
	if x.left > 0 {
		s.sendNext(c, w, x)
		return
	}
	s.sendDone(c, w, x)
}

// sendDone closes the file and the connection after a Send.
func (s *Server) sendDone(c *conn, w *wsConn, x *webXfer) {
	s.xferAbort(x) // closes the body and counts the transfer out
	s.shut(c, reasonClient)
}

// appendHead appends a response head announcing a body of n bytes.
func appendHead(b []byte, status int, ctype, extra string, n int64) []byte {
	b = append(b, "HTTP/1.1 "...)
	b = strconv.AppendInt(b, int64(status), 10)
	b = append(b, ' ')
	b = append(b, statusText[status]...)
	b = append(b, "\r\nContent-Type: "...)
	b = append(b, ctype...)
	b = append(b, "\r\nContent-Length: "...)
	b = strconv.AppendInt(b, n, 10)
	b = append(b, "\r\nConnection: close\r\n"...)
	b = append(b, extra...)
	return append(b, "\r\n"...)
}

// headerValue returns the first value of the named header in a request
// head (its lines after the request line), trimmed; nil when absent.
func headerValue(head []byte, name string) []byte {
	_, rest, _ := bytes.Cut(head, []byte("\r\n"))
	for len(rest) > 0 {
		var line []byte
		line, rest, _ = bytes.Cut(rest, []byte("\r\n"))
		n, v, ok := bytes.Cut(line, []byte(":"))
		if ok && bytes.EqualFold(n, []byte(name)) {
			return bytes.Trim(v, " \t")
		}
	}
	return nil
}
