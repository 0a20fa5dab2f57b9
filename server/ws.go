package server

import (
	"bytes"
	"net"
	"time"
	"unicode/utf8"

	"mellium.im/xmpp/stream"

	"github.com/krill-xmpp/krill/hook"
	"github.com/krill-xmpp/krill/stanza"
	"github.com/krill-xmpp/krill/websocket"
)

// XMPP over WebSocket (RFC 7395) on the event loops. A connection accepted
// on the web listener gets a wsConn as its transport, over plain TCP or
// the TLS layer (web.tls). The layer first reads an HTTP/1.1 request head
// from the plaintext below it (web.go); after a 101 it unwraps RFC 6455
// frames and hands the framer exactly what a TCP client would have sent:
// <open/> becomes a stream header, <close/> the stream close, and every
// other message one top-level element. On the way out it does the
// reverse, one WebSocket text message per top-level element. The core
// (negotiation, SASL, routing) does not know the difference, except that
// STARTTLS is neither offered nor accepted (RFC 7395: TLS is
// the WebSocket's, wss://). Partial frames stay in the buffer below (gnet's
// or the TLS layer's), as partial stanzas do on TCP: an idle WebSocket
// holds no buffer of its own.

// nsFraming is RFC 7395's namespace of <open/> and <close/>.
const nsFraming = "urn:ietf:params:xml:ns:xmpp-framing"

// wsStage is where a web connection is.
type wsStage uint8

const (
	wsHTTP    wsStage = iota // reading the HTTP request head
	wsOpen                   // upgraded: WebSocket frames carry the XML stream
	wsClosing                // a close frame was sent or received: no more data either way
)

// wsConn is the web transport of one connection: HTTP, then WebSocket,
// over under (plainTCP, or the TLS layer). Owned by the connection's loop.
type wsConn struct {
	under transport
	// part exists only while a message comes in several frames, or the
	// core wrote part of an element: 32 bytes per idle WebSocket, not 80.
	part  *wsPartial
	stage wsStage
	// fragOp is OpText while a fragmented message is assembled, else 0.
	fragOp websocket.Opcode
	// code is the close status sent with the closing handshake.
	code uint16
}

// wsPartial holds what a WebSocket connection has in part.
type wsPartial struct {
	// frag holds the fragments of a message that came in several frames
	// (RFC 6455 section 5.4), up to the stanza size limit.
	frag []byte
	// out holds the start of a top-level element the core wrote in part
	// (the core writes whole elements: this is a safety net).
	out []byte
	// xfer is a module route's transfer (webroute.go); head and expect
	// remember, past the request head, a HEAD request and an
	// Expect: 100-continue.
	xfer         *webXfer
	head, expect bool
	// drain is the request body still to be read and dropped after an
	// answer that refused it (webroute.go).
	drain int64
}

// partial returns w.part, allocating it.
func (w *wsConn) partial() *wsPartial {
	if w.part == nil {
		w.part = new(wsPartial)
	}
	return w.part
}

// tidy drops w.part once it holds nothing.
func (w *wsConn) tidy() {
	if p := w.part; p != nil && p.frag == nil && p.out == nil && p.xfer == nil && !p.head && !p.expect && p.drain == 0 {
		w.part = nil
	}
}

var _ transport = (*wsConn)(nil)

// startWeb gives c, just accepted on the web listener, its web layer: over
// TLS when web.tls is on.
func (s *Server) startWeb(c *conn) {
	c.flags |= flagWeb
	w := &wsConn{under: plainTCP{}, code: websocket.CloseNormal}
	c.tr = w
	s.stats.preauthWeb.Add(1)
	s.stats.webOpen.Add(1)
	if s.cfg.Web.TLS {
		t := s.newTLS(c, s.web.tls, true)
		w.under = t
	}
	s.armDeadline(c)
}

// swapLayer replaces c's TLS layer by the lean record layer at the end of
// a handshake: under the web layer when there is one.
func (c *conn) swapLayer(l transport) {
	if w, ok := c.tr.(*wsConn); ok {
		w.under = l
		return
	}
	c.tr = l
}

func (w *wsConn) input(s *Server, c *conn) { w.under.input(s, c) }

// write sends the core's XML as WebSocket messages: one text message per
// top-level element, the stream header as <open/> and the stream close as
// <close/>. Nothing is sent before the upgrade or after a close frame.
func (w *wsConn) write(c *conn, b []byte) {
	if w.stage != wsOpen || !w.under.ready() {
		return
	}
	var held []byte
	if w.part != nil && len(w.part.out) > 0 {
		held = append(w.part.out, b...)
		b = held
	}
	out := c.loop.wsOut[:0]
	for len(b) > 0 {
		n, kind := outUnit(b)
		if n == 0 {
			break
		}
		out = appendMessage(out, kind, b[:n])
		b = b[n:]
	}
	switch {
	case len(b) == 0:
		if w.part != nil {
			w.part.out = nil
			w.tidy()
		}
	case held != nil:
		// b is the rest of held: keep it, copied down.
		w.part.out = append(held[:0], b...)
	default:
		w.partial().out = append([]byte(nil), b...)
	}
	if len(out) > 0 {
		w.under.write(c, out)
	}
	if cap(out) <= 64<<10 {
		c.loop.wsOut = out[:0] // a huge message's buffer is not kept
	} else {
		c.loop.wsOut = nil
	}
}

// ready: a stream error can be sent once the WebSocket is open.
func (w *wsConn) ready() bool  { return w.stage == wsOpen && w.under.ready() }
func (w *wsConn) secure() bool { return w.under.secure() }
func (w *wsConn) binding() func(cbType string) ([]byte, error) {
	return w.under.binding()
}
func (w *wsConn) deadline() time.Time        { return w.under.deadline() }
func (w *wsConn) expired(s *Server, c *conn) { w.under.expired(s, c) }
func (w *wsConn) dropped() closeReason       { return w.under.dropped() }
func (w *wsConn) release(c *conn) {
	if w.part != nil && w.part.xfer != nil {
		c.loop.srv.xferAbort(w.part.xfer)
	}
	w.part = nil
	w.under.release(c)
	c.loop.srv.stats.webOpen.Add(-1)
}
func (w *wsConn) control(c *conn, op websocket.Opcode, p []byte) {
	w.under.write(c, websocket.AppendFrame(c.loop.wsOut[:0], op, p))
}

// shut sends the closing handshake's close frame (RFC 6455 section 5.5.1)
// once the WebSocket is open, then shuts the layer below (TLS
// close_notify).
func (w *wsConn) shut(c *conn) {
	if w.stage == wsOpen && w.under.ready() {
		w.under.write(c, websocket.AppendClose(c.loop.wsOut[:0], w.code, ""))
		c.loop.srv.stats.wsClose(w.code)
	}
	w.stage = wsClosing
	w.under.shut(c)
}

// webInput takes the plaintext of a web connection: the HTTP request
// head, then WebSocket frames. It returns how many bytes it consumed; the
// rest (a partial head or frame) stays with the layer below.
func (s *Server) webInput(c *conn, buf []byte) int {
	w := c.tr.(*wsConn)
	off := 0
	if w.stage == wsHTTP {
		off = s.webRequest(c, w, buf)
		if off == 0 || c.has(flagClosed) {
			return off
		}
	}
	switch w.stage {
	case wsOpen, wsClosing:
		return off + s.wsFrames(c, w, buf[off:])
	case wsBody:
		return off + s.webBody(c, w, buf[off:])
	case wsSend:
		return len(buf) // nothing more is read during a download
	case wsDrain:
		s.webDrain(c, w, buf[off:])
		return len(buf)
	}
	if w.stage == wsWait && int64(len(buf)-off) > w.drainLeft()+maxRequestHead {
		s.shut(c, reasonPolicy) // input beyond the announced body while a route's job runs
		return len(buf)
	}
	return off // wsHTTP after an answer, wsWait: held below
}

// maxMessage is the largest WebSocket message c may send: the stanza size
// limit in force (pre-auth until bound, then c2s.max_stanza_size).
func (s *Server) maxMessage(c *conn) int {
	if c.phase == phaseSession {
		return s.conf().C2S.MaxStanzaSize
	}
	return s.conf().Preauth.MaxStanzaSize
}

// wsFrames handles the complete frames at the start of buf. A frame is
// handled only once it is whole (bounded by maxMessage), so that input
// paused for a worker stops at a frame boundary.
func (s *Server) wsFrames(c *conn, w *wsConn, buf []byte) int {
	off := 0
	for off < len(buf) && !c.has(flagClosed) {
		if w.stage != wsOpen {
			return len(buf) // after a close frame: nothing more is read
		}
		if c.has(flagWorkPending) {
			if len(buf)-off > s.maxPending(c)+websocket.MaxHeader {
				s.fail(c, stream.PolicyViolation.Err, "too much input while a request is processed")
			}
			return off
		}
		h, ok, err := websocket.ParseHeader(buf[off:])
		if err == nil && ok {
			err = websocket.CheckClient(h)
		}
		if err != nil {
			s.wsFail(c, w, websocket.CloseProtocolError, stream.BadFormat.Err, err.Error())
			return off
		}
		if !ok {
			return off
		}
		switch {
		case h.Op == websocket.OpBinary:
			s.wsFail(c, w, websocket.CloseUnsupportedData, stream.BadFormat.Err, "websocket: binary messages carry no XMPP; RFC 7395 uses text")
			return off
		case h.Op == websocket.OpContinuation && w.fragOp == 0:
			s.wsFail(c, w, websocket.CloseProtocolError, stream.BadFormat.Err, "websocket: continuation frame without a message")
			return off
		case h.Op == websocket.OpText && w.fragOp != 0:
			s.wsFail(c, w, websocket.CloseProtocolError, stream.BadFormat.Err, "websocket: new message inside a fragmented one")
			return off
		case !h.Op.Control() && uint64(w.fragLen())+h.Len > uint64(s.maxMessage(c)):
			// Refused from its header, before its payload is buffered.
			s.wsFail(c, w, websocket.CloseTooBig, stream.PolicyViolation.Err, "message larger than the stanza size limit")
			return off
		}
		end := uint64(h.Size) + h.Len
		if uint64(len(buf)-off) < end {
			return off // the rest of the frame is still to come
		}
		p := buf[off+h.Size : off+int(end)]
		websocket.Unmask(p, h.Mask, 0)
		off += int(end)
		switch h.Op {
		case websocket.OpPing:
			// Answered at every stage: it costs nothing and moves no
			// deadline (the pre-auth one is absolute). The XMPP-level
			// rule stands: no answer to an XMPP ping before
			// authentication.
			w.control(c, websocket.OpPong, p)
		case websocket.OpPong:
			// Unsolicited pongs are allowed and ignored (section 5.5.3).
		case websocket.OpClose:
			s.wsPeerClose(c, w, p)
			return off
		default:
			if h.Fin && w.fragOp == 0 {
				s.wsMessage(c, w, p)
				continue
			}
			w.fragOp = websocket.OpText
			part := w.partial()
			part.frag = append(part.frag, p...)
			if h.Fin {
				msg := part.frag
				part.frag, w.fragOp = nil, 0
				w.tidy()
				s.wsMessage(c, w, msg)
			}
		}
	}
	return off
}

// fragLen is the length of the fragmented message assembled so far.
func (w *wsConn) fragLen() int {
	if w.part == nil {
		return 0
	}
	return len(w.part.frag)
}

// wsFail ends a web connection for a WebSocket-level error: a stream
// error, <close/>, then a close frame with code.
func (s *Server) wsFail(c *conn, w *wsConn, code uint16, cond, text string) {
	w.code = code
	c.setReason(reasonError)
	if cond == stream.PolicyViolation.Err {
		c.setReason(reasonPolicy)
	}
	s.fail(c, cond, text)
}

// wsPeerClose answers the client's close frame with one of ours (echoing
// its status code, RFC 6455 section 5.5.1) and closes the connection.
func (s *Server) wsPeerClose(c *conn, w *wsConn, p []byte) {
	code, _, err := websocket.ParseClose(p)
	switch {
	case err != nil:
		code = websocket.CloseProtocolError
	case code == websocket.CloseNoStatus:
		code = websocket.CloseNormal
	}
	w.code = code
	s.sessionEnded(c, "client closed the websocket", "", nil)
	s.shut(c, reasonClient)
}

// wsMessage handles one complete text message: <open/>, <close/> or one
// top-level element.
func (s *Server) wsMessage(c *conn, w *wsConn, msg []byte) {
	if !utf8.Valid(msg) {
		s.wsFail(c, w, websocket.CloseInvalidPayload, stream.NotWellFormed.Err, "websocket: text message is not UTF-8")
		return
	}
	msg = bytes.TrimSpace(msg)
	if bytes.HasPrefix(msg, []byte("<?xml")) {
		// A document's XML declaration, which a client may put before
		// its <open/>: not part of the element.
		if i := bytes.Index(msg, []byte("?>")); i >= 0 {
			msg = bytes.TrimSpace(msg[i+2:])
		}
	}
	if len(msg) == 0 {
		return // an empty message: nothing to frame (RFC 7395 has no whitespace keepalives)
	}
	switch {
	case isElement(msg, "open"):
		s.wsOpenStream(c, w, msg)
		return
	case isElement(msg, "close"):
		if ns, err := framingNS(msg); err != nil || ns != nsFraming {
			s.fail(c, stream.InvalidNamespace.Err, "<close/> must be in the "+nsFraming+" namespace")
			return
		}
		s.closeStream(c)
		return
	}
	if c.phase == phaseHeader || c.phase == phaseAuthHeader {
		s.fail(c, stream.NotWellFormed.Err, "expected <open/>")
		return
	}
	tok, err := c.framer.Next(msg)
	if err != nil {
		c.setReason(reasonError)
		s.fail(c, stanza.Condition(err), err.Error())
		return
	}
	if tok.Kind != stanza.KindElement || tok.Len != len(msg) {
		s.fail(c, stream.NotWellFormed.Err, "a WebSocket message must hold exactly one complete element")
		return
	}
	s.handleUnit(c, stanza.KindElement, msg)
}

// wsOpenStream turns the client's <open/> into the stream header the
// framer and the core expect, with the same attributes.
func (s *Server) wsOpenStream(c *conn, w *wsConn, msg []byte) {
	tag, err := stanza.ParseStartTag(msg)
	if err != nil || len(tag.Prefix()) != 0 {
		s.fail(c, stream.NotWellFormed.Err, "malformed <open/>")
		return
	}
	if rest := bytes.TrimSpace(msg[tag.Len():]); !tag.SelfClosing() && string(rest) != "</open>" || tag.SelfClosing() && len(rest) > 0 {
		s.fail(c, stream.NotWellFormed.Err, "<open/> must be an empty element alone in its message")
		return
	}
	if ns, _ := tag.AttrString("xmlns"); ns != nsFraming {
		s.fail(c, stream.InvalidNamespace.Err, "<open/> must be in the "+nsFraming+" namespace")
		return
	}
	if c.phase != phaseHeader && c.phase != phaseAuthHeader {
		s.fail(c, stream.NotAuthorized.Err, "stream restart after resource binding")
		return
	}
	if u := s.cfg.Web.SeeOtherURI; u != "" {
		// RFC 7395: a <close/> naming the other endpoint.
		w.write(c, s.web.seeOther)
		s.shut(c, reasonPolicy)
		return
	}
	hdr := make([]byte, 0, 2*len(msg)+len(wsStreamOpen))
	hdr = append(hdr, wsStreamOpen...)
	tag.Attrs(func(name, raw []byte) bool {
		if string(name) == "xmlns" || string(name) == "xmlns:stream" {
			return true
		}
		q := byte('\'')
		if bytes.IndexByte(raw, '\'') >= 0 {
			q = '"'
		}
		hdr = append(hdr, ' ')
		hdr = append(hdr, name...)
		hdr = append(hdr, '=', q)
		hdr = append(hdr, raw...)
		hdr = append(hdr, q)
		return true
	})
	hdr = append(hdr, '>')
	tok, err := c.framer.Next(hdr)
	if err != nil {
		c.setReason(reasonError)
		s.fail(c, stanza.Condition(err), err.Error())
		return
	}
	if tok.Kind != stanza.KindHeader || tok.Len != len(hdr) {
		s.fail(c, stream.NotWellFormed.Err, "malformed <open/>")
		return
	}
	s.handleUnit(c, stanza.KindHeader, hdr)
}

// wsStreamOpen starts the stream header an <open/> stands for.
const wsStreamOpen = `<stream:stream xmlns='` + nsClient + `' xmlns:stream='` + nsStream + `'`

// isElement reports whether msg starts with an element named local
// (unprefixed).
func isElement(msg []byte, local string) bool {
	if len(msg) < len(local)+2 || msg[0] != '<' || string(msg[1:1+len(local)]) != local {
		return false
	}
	switch msg[1+len(local)] {
	case ' ', '\t', '\r', '\n', '/', '>':
		return true
	}
	return false
}

// framingNS returns the default namespace declared on msg's start tag.
func framingNS(msg []byte) (string, error) {
	tag, err := stanza.ParseStartTag(msg)
	if err != nil {
		return "", err
	}
	ns, _ := tag.AttrString("xmlns")
	return ns, nil
}

// outKind is the kind of a top-level unit the core writes.
type outKind uint8

const (
	outSkip    outKind = iota // XML declaration, whitespace: not sent
	outHeader                 // the stream header: sent as <open/>
	outClose                  // the stream close: sent as <close/>
	outElement                // a top-level element: sent as it is, its namespaces declared
)

// outUnit returns the length and kind of the first top-level unit of b,
// the core's well-formed output; 0 when b ends inside it.
func outUnit(b []byte) (int, outKind) {
	if b[0] != '<' {
		if i := bytes.IndexByte(b, '<'); i >= 0 {
			return i, outSkip
		}
		return len(b), outSkip
	}
	switch {
	case bytes.HasPrefix(b, []byte("<?")):
		if i := bytes.Index(b, []byte("?>")); i >= 0 {
			return i + 2, outSkip
		}
		return 0, outSkip
	case len(b) > 1 && b[1] == '/':
		if i := bytes.IndexByte(b, '>'); i >= 0 {
			return i + 1, outClose
		}
		return 0, outSkip
	case bytes.HasPrefix(b, []byte("<stream:stream ")):
		end, _ := tagEnd(b, 0)
		if end < 0 {
			return 0, outSkip
		}
		return end, outHeader
	}
	depth := 0
	for i := 0; i < len(b); {
		if b[i] != '<' {
			j := bytes.IndexByte(b[i:], '<')
			if j < 0 {
				return 0, outSkip
			}
			i += j
			continue
		}
		switch {
		case bytes.HasPrefix(b[i:], []byte("<![CDATA[")):
			j := bytes.Index(b[i:], []byte("]]>"))
			if j < 0 {
				return 0, outSkip
			}
			i += j + 3
		case i+1 < len(b) && b[i+1] == '/':
			j := bytes.IndexByte(b[i:], '>')
			if j < 0 {
				return 0, outSkip
			}
			i += j + 1
			if depth--; depth == 0 {
				return i, outElement
			}
		default:
			end, self := tagEnd(b, i)
			if end < 0 {
				return 0, outSkip
			}
			i = end
			if !self {
				depth++
			} else if depth == 0 {
				return i, outElement
			}
		}
	}
	return 0, outSkip
}

// tagEnd returns the index after the start tag at b[i] and whether it is
// self-closing; -1 when b ends inside it. Quoted values may hold '>'.
func tagEnd(b []byte, i int) (int, bool) {
	var q byte
	for j := i + 1; j < len(b); j++ {
		switch c := b[j]; {
		case q != 0:
			if c == q {
				q = 0
			}
		case c == '\'' || c == '"':
			q = c
		case c == '>':
			return j + 1, b[j-1] == '/'
		}
	}
	return -1, false
}

// appendMessage appends the WebSocket text frame for one top-level unit
// of the core's output.
func appendMessage(dst []byte, kind outKind, u []byte) []byte {
	switch kind {
	case outSkip:
		return dst
	case outClose:
		const closeMsg = `<close xmlns='` + nsFraming + `'/>`
		return websocket.AppendFrame(dst, websocket.OpText, []byte(closeMsg))
	case outHeader:
		// <stream:stream xmlns=... xmlns:stream=... id= from= ...> as
		// <open xmlns=framing id= from= .../>: the attributes after the
		// two declarations are kept.
		rest := u[len("<stream:stream "):]
		rest = rest[:len(rest)-1] // '>'
		for _, decl := range [...]string{`xmlns='` + nsClient + `' `, `xmlns:stream='` + nsStream + `' `} {
			rest = bytes.TrimPrefix(rest, []byte(decl))
		}
		const open = `<open xmlns='` + nsFraming + `' `
		dst = websocket.AppendHeader(dst, true, websocket.OpText, len(open)+len(rest)+2)
		dst = append(dst, open...)
		dst = append(dst, rest...)
		return append(dst, "/>"...)
	}
	// Every message is a document of its own:
	// the stream prefix and jabber:client, inherited from the stream
	// header on TCP, are declared on the element itself.
	tag, err := stanza.ParseStartTag(u)
	var decl string
	if err == nil {
		switch p := string(tag.Prefix()); {
		case p == "stream":
			if _, ok := tag.Attr("xmlns:stream"); !ok {
				decl = ` xmlns:stream='` + nsStream + `'`
			}
		case p == "":
			if _, ok := tag.Attr("xmlns"); !ok {
				decl = ` xmlns='` + nsClient + `'`
			}
		}
	}
	if decl == "" {
		return websocket.AppendFrame(dst, websocket.OpText, u)
	}
	at := 1 + len(tag.Prefix()) + len(tag.Local())
	if len(tag.Prefix()) > 0 {
		at++
	}
	dst = websocket.AppendHeader(dst, true, websocket.OpText, len(u)+len(decl))
	dst = append(dst, u[:at]...)
	dst = append(dst, decl...)
	return append(dst, u[at:]...)
}

// buildWebFeatures returns the pre-authentication features of a plain
// (ws://) web connection: those of plain TCP without STARTTLS, which has
// no place over WebSocket.
func (s *Server) buildWebFeatures() []byte {
	b := []byte(`<stream:features>`)
	if mechs := s.mechanisms(false); len(mechs) > 0 {
		b = append(b, `<mechanisms xmlns='`+nsSASL+`'>`...)
		for _, m := range mechs {
			b = append(b, `<mechanism>`+m+`</mechanism>`...)
		}
		b = append(b, `</mechanisms>`...)
	}
	b = s.hooks.StreamFeatures(b, hook.PhasePreAuth, false)
	return append(b, `</stream:features>`...)
}

// WebAddr returns the web listener's address, or nil when it is disabled.
func (s *Server) WebAddr() net.Addr {
	if !s.webAddr.IsValid() {
		return nil
	}
	return net.TCPAddrFromAddrPort(s.webAddr)
}
