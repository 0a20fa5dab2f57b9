package server

import (
	"bytes"
	"crypto/tls"
	"slices"
	"strconv"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/krill-xmpp/krill/stanza"
	"github.com/krill-xmpp/krill/websocket"
	"github.com/krill-xmpp/krill/workpool"
)

// The web listener (web.listen): HTTP/1.1 on the event loops, one request
// per connection. A request head is read from the plaintext below the web
// layer, whole, up to maxRequestHead bytes and within the pre-auth
// deadline that runs from accept; it is then given to the route for its
// path. Routes run on the loop and must not block: the WebSocket route
// upgrades the connection, host-meta answers from memory. Every other
// answer closes the connection after it is written (Connection: close):
// no keep-alive, so an HTTP client costs a connection for one request.
//
// Adding a route: append a webRoute in initWeb. A route that needs a
// request body or slow work (XEP-0363 upload) takes the request, answers
// the head at once or later, and hands bulk transfer to bounded workers;
// see webRoute.

// maxRequestHead caps an HTTP request head (request line and headers).
const maxRequestHead = 8 << 10

// webRoute serves the requests for one path (or, with prefix, every path
// under it) on the web listener. serve runs on the connection's event
// loop with the parsed head; it must answer with webRespond (which closes
// the connection once the answer is written), or take the connection
// over as the WebSocket route does by moving w.stage on. It must not
// block: storage or file I/O goes to the worker pool (s.async) and the
// answer is written from the callback, on the loop.
type webRoute struct {
	path   string
	prefix bool // match every path that starts with path
	serve  func(s *Server, c *conn, w *wsConn, req *httpRequest)
}

// webState is the web listener's configuration-derived state, built once
// in New.
type webState struct {
	routes   []webRoute
	features []byte // pre-auth stream features over ws:// (no STARTTLS)
	seeOther []byte // <close see-other-uri=.../>, when configured
	anyOrig  bool   // web.allowed_origins is empty or holds "*"
	// modRoutes: modules added routes (webroute.go), which use xfer, the
	// transfer pool, for at most upload.max_transfers transfers (xfers).
	modRoutes bool
	xfer      *workpool.Pool
	xfers     atomic.Int32
	// handshakeHold is what a web connection may have in gnet's buffer
	// beyond maxHandshakeInput while its TLS handshake runs: with module
	// routes, a request head and the largest upload (which a client sends
	// right after its Finished, and which a transfer may buffer anyway);
	// else nothing more.
	handshakeHold int
	// tls is the c2s TLS configuration with ALPN http/1.1, which
	// browsers and WebSocket clients offer (and Go refuses a handshake
	// whose ALPN offer it shares nothing with).
	tls *tls.Config
}

// initWeb builds the routes and prebuilt answers of the web listener.
func (s *Server) initWeb() {
	w := &s.web
	w.features = s.buildWebFeatures()
	w.tls = s.tlsStartTLS.Clone()
	w.tls.GetConfigForClient = nil
	w.tls.NextProtos = []string{"http/1.1"}
	switch {
	case leanConfig(s.tlsStartTLS):
		withKeyLogTickets(w.tls, s.tickets) // the lean record layer's per-connection key log
	case s.tickets != nil:
		withPipeTickets(w.tls, s.tickets)
	}
	w.anyOrig = len(s.cfg.Web.AllowedOrigins) == 0 || slices.Contains(s.cfg.Web.AllowedOrigins, "*")
	if u := s.cfg.Web.SeeOtherURI; u != "" {
		b := append([]byte(`<close xmlns='`+nsFraming+`' see-other-uri='`), stanza.AppendEscaped(nil, u)...)
		w.seeOther = append(b, `'/>`...)
	}
	w.routes = []webRoute{
		{path: s.cfg.Web.Path, serve: (*Server).webUpgrade},
		{path: "/.well-known/host-meta", serve: hostMeta(false)},
		{path: "/.well-known/host-meta.json", serve: hostMeta(true)},
	}
	s.initWebRoutes()
}

// logWeb logs the web listener once it is up.
func (s *Server) logWeb() {
	if !s.webAddr.IsValid() {
		return
	}
	s.log.Info("listening", zap.String("listener", "web"), zap.Stringer("addr", s.webAddr),
		zap.String("path", s.cfg.Web.Path), zap.Bool("tls", s.cfg.Web.TLS))
	if !s.cfg.Web.TLS && !s.cfg.C2S.AllowPlaintext {
		s.log.Warn("web listener without TLS and c2s.allow_plaintext off: no SASL mechanism is offered over ws://; set web.tls, or allow_plaintext behind a TLS proxy")
	}
}

// httpRequest is a parsed request head; its slices point into the input.
type httpRequest struct {
	head                 []byte // the whole head, for headerValue
	query                []byte
	clen                 int64 // Content-Length; -1 none, -2 malformed, conflicting or chunked
	expect100            bool  // Expect: 100-continue
	method, path         []byte
	host, origin         []byte
	key, version         []byte
	keys                 int
	http11               bool
	upgradeWS, connUpgr  bool // Upgrade: websocket, Connection: upgrade
	protoXMPP, hasBody   bool // Sec-WebSocket-Protocol offers xmpp; a body is announced
	protocols, hostCount int
}

// webRequest reads the request head at the start of buf and answers it.
// It returns the bytes consumed: 0 while the head is incomplete (it stays
// in the buffer below, bounded by maxRequestHead).
func (s *Server) webRequest(c *conn, w *wsConn, buf []byte) int {
	end := bytes.Index(buf, []byte("\r\n\r\n"))
	if end < 0 || end+4 > maxRequestHead {
		if len(buf) >= maxRequestHead || end >= 0 {
			s.webRespond(c, w, 431, "request head larger than 8 KiB", "")
			return len(buf)
		}
		return 0
	}
	var req httpRequest
	if why := parseRequest(buf[:end+2], &req); why != "" {
		s.webRespond(c, w, 400, why, "")
		return end + 4
	}
	for _, r := range s.web.routes {
		if string(req.path) == r.path || r.prefix && bytes.HasPrefix(req.path, []byte(r.path)) {
			r.serve(s, c, w, &req)
			return end + 4
		}
	}
	s.webRespond(c, w, 404, "no such resource", "")
	return end + 4
}

// parseRequest parses a request head (each line ending in CRLF) into req.
// It returns why the head is malformed, or "".
func parseRequest(head []byte, req *httpRequest) string {
	line, rest, _ := bytes.Cut(head, []byte("\r\n"))
	method, line, ok1 := bytes.Cut(line, []byte(" "))
	target, proto, ok2 := bytes.Cut(line, []byte(" "))
	if !ok1 || !ok2 || len(method) == 0 || len(target) == 0 || target[0] != '/' {
		return "malformed request line"
	}
	switch string(proto) {
	case "HTTP/1.1":
		req.http11 = true
	case "HTTP/1.0":
	default:
		return "HTTP/1.1 only"
	}
	req.method = method
	req.head = head
	req.clen = -1
	req.path, req.query, _ = bytes.Cut(target, []byte("?"))
	for len(rest) > 0 {
		line, rest, _ = bytes.Cut(rest, []byte("\r\n"))
		if len(line) == 0 {
			continue
		}
		if line[0] == ' ' || line[0] == '\t' {
			return "obsolete header line folding"
		}
		name, value, ok := bytes.Cut(line, []byte(":"))
		if !ok || len(name) == 0 || bytes.ContainsAny(name, " \t") {
			return "malformed header field"
		}
		value = bytes.Trim(value, " \t")
		switch {
		case bytes.EqualFold(name, []byte("Host")):
			req.host = value
			req.hostCount++
		case bytes.EqualFold(name, []byte("Origin")):
			req.origin = value
		case bytes.EqualFold(name, []byte("Upgrade")):
			req.upgradeWS = req.upgradeWS || hasToken(value, "websocket")
		case bytes.EqualFold(name, []byte("Connection")):
			req.connUpgr = req.connUpgr || hasToken(value, "upgrade")
		case bytes.EqualFold(name, []byte("Sec-WebSocket-Key")):
			req.key = value
			req.keys++
		case bytes.EqualFold(name, []byte("Sec-WebSocket-Version")):
			req.version = value
		case bytes.EqualFold(name, []byte("Sec-WebSocket-Protocol")):
			req.protocols++
			req.protoXMPP = req.protoXMPP || hasToken(value, "xmpp")
		case bytes.EqualFold(name, []byte("Content-Length")):
			req.hasBody = req.hasBody || string(value) != "0"
			req.clen = contentLength(value, req.clen)
		case bytes.EqualFold(name, []byte("Transfer-Encoding")):
			req.hasBody = true
			req.clen = -2
		case bytes.EqualFold(name, []byte("Expect")):
			req.expect100 = bytes.EqualFold(value, []byte("100-continue"))
		}
	}
	if req.hostCount > 1 || req.http11 && req.hostCount == 0 {
		return "exactly one Host header is required"
	}
	return ""
}

// contentLength parses a Content-Length value given the one before (-1
// for none): digits only (RFC 9110 section 8.6), and a second header must
// agree with the first; -2 otherwise. A Transfer-Encoding wins (-2).
func contentLength(v []byte, prev int64) int64 {
	if prev == -2 || len(v) == 0 || len(v) > 18 {
		return -2
	}
	var n int64
	for _, b := range v {
		if b < '0' || b > '9' {
			return -2
		}
		n = n*10 + int64(b-'0')
	}
	if prev >= 0 && prev != n {
		return -2
	}
	return n
}

// hasToken reports whether the comma-separated list v holds tok, compared
// without regard to case.
func hasToken(v []byte, tok string) bool {
	for len(v) > 0 {
		var t []byte
		t, v, _ = bytes.Cut(v, []byte(","))
		if bytes.EqualFold(bytes.Trim(t, " \t"), []byte(tok)) {
			return true
		}
	}
	return false
}

// webUpgrade is the WebSocket endpoint (web.path): the opening handshake
// of RFC 6455 section 4.2 with the xmpp subprotocol (RFC 7395). On
// success the connection carries the XML stream; the client
// speaks first, with <open/>.
func (s *Server) webUpgrade(c *conn, w *wsConn, req *httpRequest) {
	switch {
	case string(req.method) != "GET":
		s.webRespond(c, w, 405, "the WebSocket endpoint takes GET", "Allow: GET\r\n")
	case !req.http11 || req.hasBody:
		s.webRespond(c, w, 400, "a WebSocket upgrade is an HTTP/1.1 GET without a body", "")
	case !req.upgradeWS:
		s.webRespond(c, w, 426, "this is a WebSocket endpoint", "Upgrade: websocket\r\nConnection: Upgrade\r\n")
	case !req.connUpgr:
		s.webRespond(c, w, 400, "the Connection header must hold Upgrade", "")
	case string(req.version) != "13":
		s.webRespond(c, w, 426, "WebSocket version 13 only", "Sec-WebSocket-Version: 13\r\n")
	case req.keys != 1 || !websocket.ValidKey(req.key):
		s.webRespond(c, w, 400, "one Sec-WebSocket-Key of 16 bytes in base64 is required", "")
	case !req.protoXMPP:
		s.webRespond(c, w, 400, "Sec-WebSocket-Protocol must offer xmpp (RFC 7395)", "")
	case !s.originAllowed(req.origin):
		s.webRespond(c, w, 403, "origin not allowed", "")
	default:
		b := append(c.loop.wsOut[:0], "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Protocol: xmpp\r\nSec-WebSocket-Accept: "...)
		b = append(b, websocket.AcceptKey(req.key)...)
		b = append(b, "\r\n\r\n"...)
		w.under.write(c, b)
		c.loop.wsOut = b[:0]
		w.stage = wsOpen
		s.stats.webRequest(101)
	}
}

// originAllowed applies web.allowed_origins to a request's Origin. A
// request without one does not come from a browser page, which is what
// the check protects (RFC 6455 section 10.2).
func (s *Server) originAllowed(origin []byte) bool {
	if s.web.anyOrig || origin == nil {
		return true
	}
	for _, o := range s.cfg.Web.AllowedOrigins {
		if string(origin) == o {
			return true
		}
	}
	return false
}

// hostMeta returns the XEP-0156 route: the WebSocket endpoint as a Link
// of rel urn:xmpp:alt-connections:websocket, in XRD (host-meta) or JSON
// (host-meta.json), with the scheme of this listener and the host the
// client asked for. CORS allows any origin: web clients on other
// origins read it to find the endpoint.
func hostMeta(json bool) func(s *Server, c *conn, w *wsConn, req *httpRequest) {
	return func(s *Server, c *conn, w *wsConn, req *httpRequest) {
		if m := string(req.method); m != "GET" && m != "HEAD" {
			s.webRespond(c, w, 405, "GET or HEAD", "Allow: GET, HEAD\r\n")
			return
		}
		host := req.host
		if host == nil {
			host = []byte(s.webAddr.String())
		}
		if !validHost(host) {
			s.webRespond(c, w, 400, "malformed Host header", "")
			return
		}
		href := []byte("ws://")
		if s.cfg.Web.TLS {
			href = []byte("wss://")
		}
		href = append(href, host...)
		href = append(href, s.cfg.Web.Path...)
		var body []byte
		ctype := "application/xrd+xml; charset=utf-8"
		if json {
			ctype = "application/json"
			body = append(body, `{"links":[{"rel":"urn:xmpp:alt-connections:websocket","href":"`...)
			body = append(body, href...) // validHost and web.path leave nothing to escape
			body = append(body, "\"}]}\n"...)
		} else {
			body = append(body, "<?xml version='1.0' encoding='utf-8'?>\n<XRD xmlns='http://docs.oasis-open.org/ns/xri/xrd-1.0'>\n  <Link rel='urn:xmpp:alt-connections:websocket' href='"...)
			body = stanza.AppendEscaped(body, string(href))
			body = append(body, "'/>\n</XRD>\n"...)
		}
		extra := "Access-Control-Allow-Origin: *\r\n"
		s.webWrite(c, w, 200, ctype, extra, body, string(req.method) == "HEAD")
		s.shut(c, reasonClient)
	}
}

// validHost accepts a Host header's host[:port] (a name, IPv4 or a
// bracketed IPv6 address): nothing that would need escaping in a URL.
func validHost(h []byte) bool {
	if len(h) == 0 || len(h) > 255 {
		return false
	}
	for _, b := range h {
		switch {
		case b >= 'a' && b <= 'z', b >= 'A' && b <= 'Z', b >= '0' && b <= '9':
		case b == '.', b == '-', b == ':', b == '[', b == ']':
		default:
			return false
		}
	}
	return true
}

// statusText is the reason phrase of each status the web listener sends.
var statusText = map[int]string{
	101: "Switching Protocols", 200: "OK", 201: "Created", 204: "No Content", 206: "Partial Content",
	400: "Bad Request", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed", 409: "Conflict",
	411: "Length Required", 413: "Content Too Large", 415: "Unsupported Media Type",
	416: "Range Not Satisfiable", 426: "Upgrade Required", 431: "Request Header Fields Too Large",
	500: "Internal Server Error", 503: "Service Unavailable", 507: "Insufficient Storage",
}

// webRespond answers with status and a plain-text body saying why, then
// closes the connection once it is written. It is logged at debug: a
// client can cause one per connection, and krill_web_requests_total
// counts them.
func (s *Server) webRespond(c *conn, w *wsConn, status int, why, extra string) {
	s.log.Debug("web request refused", zap.Int("status", status), zap.String("why", why), zap.Stringer("ip", c.ip))
	s.webWrite(c, w, status, "text/plain; charset=utf-8", extra, []byte(why+"\n"), false)
	why2 := reasonError
	if status == 403 {
		why2 = reasonPolicy
	}
	s.shut(c, why2)
}

// webWrite writes one complete response with Connection: close.
func (s *Server) webWrite(c *conn, w *wsConn, status int, ctype, extra string, body []byte, head bool) {
	s.stats.webRequest(status)
	w.under.write(c, appendResponse(c.loop.wsOut[:0], status, ctype, extra, body, head))
}

// appendResponse appends an HTTP/1.1 response with a body.
func appendResponse(b []byte, status int, ctype, extra string, body []byte, head bool) []byte {
	b = append(b, "HTTP/1.1 "...)
	b = strconv.AppendInt(b, int64(status), 10)
	b = append(b, ' ')
	b = append(b, statusText[status]...)
	if status != 204 { // 204 has neither (RFC 9110 sections 8.6, 15.3.5)
		b = append(b, "\r\nContent-Type: "...)
		b = append(b, ctype...)
		b = append(b, "\r\nContent-Length: "...)
		b = strconv.AppendInt(b, int64(len(body)), 10)
	}
	b = append(b, "\r\nConnection: close\r\nCache-Control: no-store\r\n"...)
	b = append(b, extra...)
	b = append(b, "\r\n"...)
	if !head {
		b = append(b, body...)
	}
	return b
}

// webRefusal is the answer to a connection refused at accept (pre-auth
// cap, shutdown): 503 over plain HTTP; nothing over TLS, which cannot be
// spoken before a handshake.
func (s *Server) webRefusal(status int, why string) []byte {
	s.stats.webRequest(status)
	if s.cfg.Web.TLS {
		return nil
	}
	return appendResponse(nil, status, "text/plain; charset=utf-8", "Retry-After: 10\r\n", []byte(why+"\n"), false)
}

// webStatuses are the statuses counted, in krill_web_requests_total.
var webStatuses = [...]int{101, 200, 201, 204, 206, 400, 403, 404, 405, 409, 411, 413, 415, 416, 426, 431, 500, 503, 507}

// wsCodes are the close codes counted, in krill_websocket_closes_total.
var wsCodes = [...]uint16{websocket.CloseNormal, websocket.CloseProtocolError, websocket.CloseUnsupportedData,
	websocket.CloseInvalidPayload, websocket.ClosePolicyViolation, websocket.CloseTooBig}

// webStats are the web listener's counters, part of Stats.
type webStats struct {
	webOpen     atomic.Int64 // connections on the web listener now
	webRequests [len(webStatuses)]atomic.Uint64
	wsCloses    [len(wsCodes) + 1]atomic.Uint64 // the last: any other code (an echoed one)
}

func (s *webStats) webRequest(status int) {
	if i := slices.Index(webStatuses[:], status); i >= 0 {
		s.webRequests[i].Add(1)
	}
}

func (s *webStats) wsClose(code uint16) {
	i := slices.Index(wsCodes[:], code)
	if i < 0 {
		i = len(wsCodes)
	}
	s.wsCloses[i].Add(1)
}

func (s *webStats) webRequestCounts() map[string]uint64 {
	m := make(map[string]uint64, len(webStatuses))
	for i, st := range webStatuses {
		m[strconv.Itoa(st)] = s.webRequests[i].Load()
	}
	return m
}

func (s *webStats) wsCloseCounts() map[string]uint64 {
	m := make(map[string]uint64, len(wsCodes)+1)
	for i, code := range wsCodes {
		m[strconv.Itoa(int(code))] = s.wsCloses[i].Load()
	}
	m["other"] = s.wsCloses[len(wsCodes)].Load()
	return m
}

var (
	descWebConns = prometheus.NewDesc("krill_web_connections", "Connections on the web listener (HTTP or WebSocket, any stage) now.", nil, nil)
	descWebReqs  = prometheus.NewDesc("krill_web_requests_total", "Answers of the web listener by HTTP status (101: WebSocket upgrade; 503: refused at accept by a pre-auth cap or shutdown).", []string{"status"}, nil)
	descWSCloses = prometheus.NewDesc("krill_websocket_closes_total", "WebSocket close frames sent, by status code (other: an echoed client code).", []string{"code"}, nil)
)

// collectWeb adds the web listener's metrics to a collection.
func (s *Server) collectWeb(st StatsSnapshot, gauge func(*prometheus.Desc, float64, ...string), counter func(*prometheus.Desc, uint64, ...string)) {
	gauge(descWebConns, float64(st.WebOpen))
	for _, code := range webStatuses {
		k := strconv.Itoa(code)
		counter(descWebReqs, st.WebRequests[k], k)
	}
	for _, code := range wsCodes {
		k := strconv.Itoa(int(code))
		counter(descWSCloses, st.WSCloses[k], k)
	}
	counter(descWSCloses, st.WSCloses["other"], "other")
}
