package server_test

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
	msasl "mellium.im/sasl"

	"github.com/krill-xmpp/krill/config"
	"github.com/krill-xmpp/krill/server"
)

// The framing namespace and the messages of RFC 7395 the tests send and
// expect.
const (
	nsFraming   = "urn:ietf:params:xml:ns:xmpp-framing"
	wsOpen      = `<open xmlns='` + nsFraming + `' to='localhost' version='1.0'/>`
	wsOpenReply = `<open xmlns='` + nsFraming + `' id='{*}' from='localhost' version='1.0' xml:lang='en'/>`
	wsClose     = `<close xmlns='` + nsFraming + `'/>`
	streamNS    = `xmlns:stream='http://etherx.jabber.org/streams'`
)

// webConfig is testConfig with the web listener on an ephemeral port.
func webConfig(t *testing.T) config.Config {
	cfg := testConfig(t)
	cfg.Web.Listen = "127.0.0.1:0"
	return cfg
}

// matchMsg reports whether got is want, where {*} in want stands for a
// run of characters other than ' < >, and {**} for anything.
func matchMsg(want, got string) bool {
	parts := wildcard.Split(want, -1)
	var re strings.Builder
	re.WriteString(`(?s)^`)
	for i, w := range wildcard.FindAllString(want, -1) {
		re.WriteString(regexp.QuoteMeta(parts[i]))
		if w == "{**}" {
			re.WriteString(`.*`)
		} else {
			re.WriteString(`[^'<>]*`)
		}
	}
	re.WriteString(regexp.QuoteMeta(parts[len(parts)-1]) + `$`)
	return regexp.MustCompile(re.String()).MatchString(got)
}

// wsClient is an XMPP client over github.com/coder/websocket, an
// independent WebSocket implementation.
type wsClient struct {
	t *testing.T
	c *websocket.Conn
}

// dialWS opens a WebSocket with the xmpp subprotocol to srv's web
// listener; tc non-nil means wss://.
func dialWS(t *testing.T, srv *server.Server, tc *tls.Config) *wsClient {
	t.Helper()
	ctx, cancel := contextTimeout()
	defer cancel()
	url := "ws://" + srv.WebAddr().String() + "/xmpp-websocket"
	opts := &websocket.DialOptions{Subprotocols: []string{"xmpp"}}
	if tc != nil {
		url = "wss://" + srv.WebAddr().String() + "/xmpp-websocket"
		opts.HTTPClient = &http.Client{Transport: &http.Transport{TLSClientConfig: tc}}
	}
	c, resp, err := websocket.Dial(ctx, url, opts)
	if err != nil {
		t.Fatalf("dial %s: %v", url, err)
	}
	if got := resp.Header.Get("Sec-WebSocket-Protocol"); got != "xmpp" {
		t.Fatalf("Sec-WebSocket-Protocol = %q, want xmpp", got)
	}
	c.SetReadLimit(1 << 20)
	t.Cleanup(func() { _ = c.CloseNow() })
	return &wsClient{t: t, c: c}
}

func (w *wsClient) send(s string) {
	w.t.Helper()
	ctx, cancel := contextTimeout()
	defer cancel()
	if err := w.c.Write(ctx, websocket.MessageText, []byte(s)); err != nil {
		w.t.Fatalf("write %q: %v", s, err)
	}
}

// expect reads the next message and fails unless it is want (with
// matchMsg's wildcards); it returns the message.
func (w *wsClient) expect(want string) string {
	w.t.Helper()
	ctx, cancel := contextTimeout()
	defer cancel()
	typ, b, err := w.c.Read(ctx)
	if err != nil {
		w.t.Fatalf("read, want %q: %v", want, err)
	}
	if typ != websocket.MessageText || !matchMsg(want, string(b)) {
		w.t.Fatalf("got %v message %q\nwant exactly %q", typ, b, want)
	}
	return string(b)
}

// closedWith reads until the server's close frame and checks its code.
func (w *wsClient) closedWith(code websocket.StatusCode) {
	w.t.Helper()
	ctx, cancel := contextTimeout()
	defer cancel()
	_, b, err := w.c.Read(ctx)
	if got := websocket.CloseStatus(err); got != code {
		w.t.Fatalf("got message %q, error %v; want a close frame with code %d", b, err, code)
	}
}

// login runs RFC 7395's stream opening, SCRAM-SHA-256 and resource binding
// and returns the bound JID.
func (w *wsClient) login(user, resource string) string {
	w.t.Helper()
	w.send(wsOpen)
	w.expect(wsOpenReply)
	w.expect(`<stream:features ` + streamNS + `>{**}</stream:features>`)
	c := msasl.NewClient(msasl.ScramSha256, msasl.Credentials(func() ([]byte, []byte, []byte) {
		return []byte(user), []byte(testPassword), nil
	}))
	_, first, err := c.Step(nil)
	if err != nil {
		w.t.Fatal(err)
	}
	w.send(`<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='SCRAM-SHA-256'>` + base64.StdEncoding.EncodeToString(first) + `</auth>`)
	chal := between(w.expect(`<challenge xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>{*}</challenge>`), "'>", "</challenge>")
	raw, _ := base64.StdEncoding.DecodeString(chal)
	_, final, err := c.Step(raw)
	if err != nil {
		w.t.Fatal(err)
	}
	w.send(`<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>` + base64.StdEncoding.EncodeToString(final) + `</response>`)
	w.expect(`<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>{*}</success>`)
	// RFC 7395: a restart is a new <open/>, no <close/>.
	w.send(wsOpen)
	w.expect(wsOpenReply)
	w.expect(`<stream:features ` + streamNS + `><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/>{**}</stream:features>`)
	w.send(`<iq type='set' id='b1' xmlns='jabber:client'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>` + resource + `</resource></bind></iq>`)
	return between(w.expect(`<iq xmlns='jabber:client' type='result' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><jid>{*}</jid></bind></iq>`), "<jid>", "</jid>")
}

// TestWebSocketLogin logs in over ws:// and wss:// with an independent
// WebSocket client, exchanges messages with a TCP session both ways and
// closes the stream with <close/>.
func TestWebSocketLogin(t *testing.T) {
	for _, tc := range []struct {
		name string
		tls  bool
	}{{"ws", false}, {"wss", true}} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := webConfig(t)
			cfg.Web.TLS = tc.tls
			srv := startServer(t, cfg, "alice", "bob")
			var ctls *tls.Config
			if tc.tls {
				ctls = clientTLS(t, cfg)
			}
			w := dialWS(t, srv, ctls)
			if got := w.login("alice", "web"); got != "alice@localhost/web" {
				t.Fatalf("bound %q", got)
			}
			bob := dialRaw(t, srv)
			bob.scramLogin("bob", testPassword, "tcp")

			bob.send(`<message id='m1' to='alice@localhost/web' type='chat'><body>to the browser</body></message>`)
			w.expect(`<message xmlns='jabber:client' id='m1' to='alice@localhost/web' type='chat' from='bob@localhost/tcp'><body>to the browser</body></message>`)
			w.send(`<message xmlns='jabber:client' id='m2' to='bob@localhost/tcp' type='chat'><body>from the browser</body></message>`)
			bob.expect(t, `<message xmlns='jabber:client' id='m2' to='bob@localhost/tcp' type='chat' from='alice@localhost/web'><body>from the browser</body></message>`)
			// A stanza without xmlns is in jabber:client too.
			w.send(`<iq type='get' id='p1' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>`)
			w.expect(`<iq xmlns='jabber:client' type='result' id='p1' from='localhost'/>`)

			w.send(wsClose)
			w.expect(wsClose)
			w.closedWith(websocket.StatusNormalClosure)
			if !waitFor(ioTimeout, func() bool { return srv.Stats().WebOpen == 0 }) {
				t.Fatalf("web connections still open: %d", srv.Stats().WebOpen)
			}
			st := srv.Stats()
			if st.WebRequests["101"] != 1 || st.WSCloses["1000"] != 1 || st.PreauthWeb != 0 {
				t.Fatalf("upgrades %d, closes 1000 %d, preauth_web %d; want 1, 1, 0", st.WebRequests["101"], st.WSCloses["1000"], st.PreauthWeb)
			}
		})
	}
}

// rawWS is a WebSocket client that writes frames byte by byte, for the
// edge cases an ordinary client library will not produce.
type rawWS struct {
	t    *testing.T
	conn net.Conn
	br   *bufio.Reader
}

// dialRawWS connects to the web listener (over TLS when tc is set).
func dialRawWS(t *testing.T, srv *server.Server, tc *tls.Config) *rawWS {
	t.Helper()
	conn, err := net.DialTimeout("tcp", srv.WebAddr().String(), ioTimeout)
	if err != nil {
		t.Fatal(err)
	}
	if tc != nil {
		conn = tls.Client(conn, tc)
	}
	t.Cleanup(func() { _ = conn.Close() })
	_ = conn.SetDeadline(time.Now().Add(ioTimeout))
	return &rawWS{t: t, conn: conn, br: bufio.NewReader(conn)}
}

// upgradeRequest is a valid opening handshake.
const upgradeRequest = "GET /xmpp-websocket HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
	"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: xmpp\r\n\r\n"

// upgradeResponse is the server's exact answer to upgradeRequest: the
// accept value is RFC 6455 section 1.3's example.
const upgradeResponse = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Protocol: xmpp\r\n" +
	"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"

// request sends a raw request and returns the response head.
func (r *rawWS) request(req string) string {
	r.t.Helper()
	if _, err := io.WriteString(r.conn, req); err != nil {
		r.t.Fatal(err)
	}
	var head strings.Builder
	for {
		line, err := r.br.ReadString('\n')
		head.WriteString(line)
		if err != nil {
			r.t.Fatalf("reading the response: %v; got %q", err, head.String())
		}
		if line == "\r\n" {
			return head.String()
		}
	}
}

// upgrade performs the opening handshake.
func (r *rawWS) upgrade() {
	r.t.Helper()
	if got := r.request(upgradeRequest); got != upgradeResponse {
		r.t.Fatalf("upgrade response %q, want %q", got, upgradeResponse)
	}
}

// frame builds a client frame: fin, rsv bits (as the high nibble's low
// three bits), opcode, masked or not; length in the minimal form unless
// long is set (then the 64-bit form).
func frame(fin bool, rsv byte, op byte, payload []byte, masked, long bool) []byte {
	b0 := op | rsv<<4
	if fin {
		b0 |= 0x80
	}
	b := []byte{b0}
	var m byte
	if masked {
		m = 0x80
	}
	switch n := len(payload); {
	case long:
		b = append(b, m|127)
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	case n <= 125:
		b = append(b, m|byte(n))
	case n <= 0xFFFF:
		b = append(b, m|126, byte(n>>8), byte(n))
	default:
		b = append(b, m|127)
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	}
	if !masked {
		return append(b, payload...)
	}
	var key [4]byte
	_, _ = rand.Read(key[:])
	b = append(b, key[:]...)
	for i, c := range payload {
		b = append(b, c^key[i&3])
	}
	return b
}

// text is one masked text frame holding s.
func text(s string) []byte { return frame(true, 0, 0x1, []byte(s), true, false) }

func (r *rawWS) write(frames ...[]byte) {
	r.t.Helper()
	if _, err := r.conn.Write(bytes.Join(frames, nil)); err != nil {
		r.t.Fatal(err)
	}
}

// srvFrame is a frame the server sent.
type srvFrame struct {
	op      byte
	payload string
}

func (f srvFrame) String() string {
	if f.op == 0x8 && len(f.payload) >= 2 {
		return fmt.Sprintf("close(%d %q)", binary.BigEndian.Uint16([]byte(f.payload)), f.payload[2:])
	}
	return fmt.Sprintf("op%d(%q)", f.op, f.payload)
}

// read reads one server frame, checking that it is unmasked and final.
func (r *rawWS) read() (srvFrame, error) {
	var h [2]byte
	if _, err := io.ReadFull(r.br, h[:]); err != nil {
		return srvFrame{}, err
	}
	if h[0]&0x80 == 0 || h[0]&0x70 != 0 || h[1]&0x80 != 0 {
		return srvFrame{}, fmt.Errorf("server frame header %x: want FIN, no RSV, unmasked", h)
	}
	n := uint64(h[1] & 0x7F)
	switch n {
	case 126:
		var l [2]byte
		if _, err := io.ReadFull(r.br, l[:]); err != nil {
			return srvFrame{}, err
		}
		n = uint64(binary.BigEndian.Uint16(l[:]))
	case 127:
		var l [8]byte
		if _, err := io.ReadFull(r.br, l[:]); err != nil {
			return srvFrame{}, err
		}
		n = binary.BigEndian.Uint64(l[:])
	}
	p := make([]byte, n)
	if _, err := io.ReadFull(r.br, p); err != nil {
		return srvFrame{}, err
	}
	return srvFrame{op: h[0] & 0xF, payload: string(p)}, nil
}

// expectText reads one text message and matches it against want.
func (r *rawWS) expectText(want string) {
	r.t.Helper()
	f, err := r.read()
	if err != nil || f.op != 0x1 || !matchMsg(want, f.payload) {
		r.t.Fatalf("got %v (%v), want text %q", f, err, want)
	}
}

// expectClose reads a close frame with code and then the end of the
// connection.
func (r *rawWS) expectClose(code uint16) {
	r.t.Helper()
	r.expectCloseFrame(code)
	if f, err := r.read(); !errors.Is(err, io.EOF) {
		r.t.Fatalf("after the close frame: %v (%v), want the connection closed", f, err)
	}
}

// expectCloseFrame reads a close frame with code.
func (r *rawWS) expectCloseFrame(code uint16) {
	r.t.Helper()
	f, err := r.read()
	if err != nil || f.op != 0x8 || len(f.payload) < 2 || binary.BigEndian.Uint16([]byte(f.payload)) != code {
		r.t.Fatalf("got %v (%v), want a close frame with code %d", f, err, code)
	}
}

// expectEOF checks that the server closed the connection with nothing
// more.
func (r *rawWS) expectEOF() {
	r.t.Helper()
	if f, err := r.read(); !errors.Is(err, io.EOF) {
		r.t.Fatalf("got %v (%v), want the connection closed", f, err)
	}
}

// open sends <open/> and reads the answer and the features.
func (r *rawWS) open() {
	r.t.Helper()
	r.write(text(wsOpen))
	r.expectText(wsOpenReply)
	r.expectText(`<stream:features ` + streamNS + `>{**}</stream:features>`)
}

// streamError is the stream error message a web client gets.
func streamError(cond, text string) string {
	return `<stream:error ` + streamNS + `><` + cond + ` ` + streamsNS + `/><text ` + streamsNS + `>` + text + `</text></stream:error>`
}

// TestWebSocketFrames drives RFC 6455 and RFC 7395 edge cases with raw
// frames on an upgraded, opened stream, and checks the exact frames the
// server answers: messages, stream error, <close/> and the close code.
func TestWebSocketFrames(t *testing.T) {
	big := strings.Repeat("x", 9000) // above preauth.max_stanza_size (8 KiB)
	cases := []struct {
		name  string
		open  bool     // send <open/> first
		send  [][]byte // then these frames
		texts []string // then expect these text messages
		code  uint16   // then a close frame with this code (0: none) and EOF
	}{
		{
			name: "fragmented open with a ping between the fragments",
			send: [][]byte{
				frame(false, 0, 0x1, []byte(`<open xmlns='`+nsFraming+`' `), true, false),
				frame(true, 0, 0x9, []byte("hello"), true, false),
				frame(false, 0, 0x0, []byte(`to='localhost' `), true, false),
				frame(true, 0, 0xA, []byte("unsolicited"), true, false),
				frame(true, 0, 0x0, []byte(`version='1.0'/>`), true, false),
				text(wsClose),
			},
			texts: []string{"pong:hello", wsOpenReply, `<stream:features ` + streamNS + `>{**}</stream:features>`, wsClose},
			code:  1000,
		},
		{
			name:  "<open/> after an XML declaration",
			send:  [][]byte{text(`<?xml version='1.0'?>` + "\n" + wsOpen), text(wsClose)},
			texts: []string{wsOpenReply, `<stream:features ` + streamNS + `>{**}</stream:features>`, wsClose},
			code:  1000,
		},
		{
			name:  "64-bit length form",
			send:  [][]byte{frame(true, 0, 0x1, []byte(wsOpen), true, true), text(wsClose)},
			texts: []string{wsOpenReply, `<stream:features ` + streamNS + `>{**}</stream:features>`, wsClose},
			code:  1000,
		},
		{
			name:  "unmasked client frame",
			open:  true,
			send:  [][]byte{frame(true, 0, 0x1, []byte(wsClose), false, false)},
			texts: []string{streamError("bad-format", "websocket: client frame is not masked"), wsClose},
			code:  1002,
		},
		{
			name:  "reserved bit",
			open:  true,
			send:  [][]byte{frame(true, 4, 0x1, []byte(wsClose), true, false)},
			texts: []string{streamError("bad-format", "websocket: reserved bits set, and no extension was negotiated"), wsClose},
			code:  1002,
		},
		{
			name:  "reserved opcode",
			open:  true,
			send:  [][]byte{frame(true, 0, 0x3, nil, true, false)},
			texts: []string{streamError("bad-format", "websocket: reserved opcode"), wsClose},
			code:  1002,
		},
		{
			name:  "binary message",
			open:  true,
			send:  [][]byte{frame(true, 0, 0x2, []byte(wsClose), true, false)},
			texts: []string{streamError("bad-format", "websocket: binary messages carry no XMPP; RFC 7395 uses text"), wsClose},
			code:  1003,
		},
		{
			name:  "continuation without a message",
			open:  true,
			send:  [][]byte{frame(true, 0, 0x0, []byte(wsClose), true, false)},
			texts: []string{streamError("bad-format", "websocket: continuation frame without a message"), wsClose},
			code:  1002,
		},
		{
			name:  "text frame inside a fragmented message",
			open:  true,
			send:  [][]byte{frame(false, 0, 0x1, []byte("<a"), true, false), text(wsClose)},
			texts: []string{streamError("bad-format", "websocket: new message inside a fragmented one"), wsClose},
			code:  1002,
		},
		{
			name:  "fragmented ping",
			open:  true,
			send:  [][]byte{frame(false, 0, 0x9, []byte("x"), true, false)},
			texts: []string{streamError("bad-format", "websocket: fragmented control frame"), wsClose},
			code:  1002,
		},
		{
			name:  "ping longer than 125 bytes",
			open:  true,
			send:  [][]byte{frame(true, 0, 0x9, []byte(strings.Repeat("p", 126)), true, false)},
			texts: []string{streamError("bad-format", "websocket: control frame payload longer than 125 bytes"), wsClose},
			code:  1002,
		},
		{
			name:  "64-bit length with the top bit set",
			open:  true,
			send:  [][]byte{{0x81, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 0}},
			texts: []string{streamError("bad-format", "websocket: 64-bit payload length with its most significant bit set"), wsClose},
			code:  1002,
		},
		{
			name:  "oversized frame refused from its header",
			open:  true,
			send:  [][]byte{frame(true, 0, 0x1, []byte(big), true, false)[:8]},
			texts: []string{streamError("policy-violation", "message larger than the stanza size limit"), wsClose},
			code:  1009,
		},
		{
			name: "oversized fragmented message",
			open: true,
			send: [][]byte{
				frame(false, 0, 0x1, []byte(big[:5000]), true, false),
				frame(true, 0, 0x0, []byte(big[:5000]), true, false),
			},
			texts: []string{streamError("policy-violation", "message larger than the stanza size limit"), wsClose},
			code:  1009,
		},
		{
			name:  "text that is not UTF-8",
			open:  true,
			send:  [][]byte{text("<presence>\xff</presence>")},
			texts: []string{streamError("not-well-formed", "websocket: text message is not UTF-8"), wsClose},
			code:  1007,
		},
		{
			name:  "two elements in one message",
			open:  true,
			send:  [][]byte{text(`<abort xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/><abort xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>`)},
			texts: []string{streamError("not-well-formed", "a WebSocket message must hold exactly one complete element"), wsClose},
			code:  1000,
		},
		{
			name:  "incomplete element",
			open:  true,
			send:  [][]byte{text(`<abort xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>`)},
			texts: []string{streamError("not-well-formed", "a WebSocket message must hold exactly one complete element"), wsClose},
			code:  1000,
		},
		{
			name:  "a stanza instead of <open/>",
			send:  [][]byte{text(`<message to='a@localhost'><body>x</body></message>`)},
			texts: []string{wsOpenReply, streamError("not-well-formed", "expected &lt;open/&gt;"), wsClose},
			code:  1000,
		},
		{
			name:  "<open/> in the wrong namespace",
			send:  [][]byte{text(`<open xmlns='jabber:client' to='localhost' version='1.0'/>`)},
			texts: []string{wsOpenReply, streamError("invalid-namespace", "&lt;open/&gt; must be in the "+nsFraming+" namespace"), wsClose},
			code:  1000,
		},
		{
			name:  "<open/> for another domain",
			send:  [][]byte{text(`<open xmlns='` + nsFraming + `' to='example.org' version='1.0'/>`)},
			texts: []string{wsOpenReply, streamError("host-unknown", "this server does not serve that domain"), wsClose},
			code:  1000,
		},
		{
			name:  "a stanza before authentication",
			open:  true,
			send:  [][]byte{text(`<iq type='get' id='p' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>`)},
			texts: []string{streamError("not-authorized", "authenticate first"), wsClose},
			code:  1000,
		},
		{
			name:  "starttls over WebSocket",
			open:  true,
			send:  [][]byte{text(`<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>`)},
			texts: []string{`<failure xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>`, wsClose},
			code:  1000,
		},
		{
			name:  "client <close/>",
			open:  true,
			send:  [][]byte{text(wsClose)},
			texts: []string{wsClose},
			code:  1000,
		},
		{
			name: "client close frame is echoed",
			open: true,
			send: [][]byte{frame(true, 0, 0x8, binary.BigEndian.AppendUint16(nil, 1001), true, false)},
			code: 1001,
		},
		{
			name: "client close frame without a code",
			open: true,
			send: [][]byte{frame(true, 0, 0x8, nil, true, false)},
			code: 1000,
		},
		{
			name: "client close frame with an invalid code",
			open: true,
			send: [][]byte{frame(true, 0, 0x8, binary.BigEndian.AppendUint16(nil, 1005), true, false)},
			code: 1002,
		},
	}
	cfg := webConfig(t)
	srv := startServer(t, cfg)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := dialRawWS(t, srv, nil)
			r.upgrade()
			if tc.open {
				r.open()
			}
			r.write(tc.send...)
			for _, want := range tc.texts {
				if p, ok := strings.CutPrefix(want, "pong:"); ok {
					f, err := r.read()
					if err != nil || f.op != 0xA || f.payload != p {
						t.Fatalf("got %v (%v), want pong %q", f, err, p)
					}
					continue
				}
				r.expectText(want)
			}
			r.expectClose(tc.code)
		})
	}
}

// TestWebSocketUpgradeRefused sends bad opening handshakes and checks the
// HTTP status of each answer; the connection closes after it.
func TestWebSocketUpgradeRefused(t *testing.T) {
	valid := func(drop string, add ...string) string {
		var b strings.Builder
		for _, l := range strings.SplitAfter(upgradeRequest, "\r\n") {
			if drop != "" && strings.HasPrefix(l, drop) || l == "\r\n" || l == "" {
				continue
			}
			b.WriteString(l)
		}
		for _, a := range add {
			b.WriteString(a + "\r\n")
		}
		return b.String() + "\r\n"
	}
	cases := []struct {
		name, req, status string
	}{
		{"POST", strings.Replace(upgradeRequest, "GET", "POST", 1), "HTTP/1.1 405 Method Not Allowed"},
		{"no Upgrade header", valid("Upgrade:"), "HTTP/1.1 426 Upgrade Required"},
		{"no Connection: Upgrade", valid("Connection:", "Connection: keep-alive"), "HTTP/1.1 400 Bad Request"},
		{"version 8", valid("Sec-WebSocket-Version:", "Sec-WebSocket-Version: 8"), "HTTP/1.1 426 Upgrade Required"},
		{"no key", valid("Sec-WebSocket-Key:"), "HTTP/1.1 400 Bad Request"},
		{"short key", valid("Sec-WebSocket-Key:", "Sec-WebSocket-Key: c2hvcnQ="), "HTTP/1.1 400 Bad Request"},
		{"two keys", valid("", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=="), "HTTP/1.1 400 Bad Request"},
		{"no xmpp subprotocol", valid("Sec-WebSocket-Protocol:", "Sec-WebSocket-Protocol: chat, superchat"), "HTTP/1.1 400 Bad Request"},
		{"no Host", valid("Host:"), "HTTP/1.1 400 Bad Request"},
		{"HTTP/1.0", strings.Replace(upgradeRequest, "HTTP/1.1", "HTTP/1.0", 1), "HTTP/1.1 400 Bad Request"},
		{"HTTP/2 preface", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "HTTP/1.1 400 Bad Request"},
		{"a body", valid("", "Content-Length: 5"), "HTTP/1.1 400 Bad Request"},
		{"folded header", valid("", " folded"), "HTTP/1.1 400 Bad Request"},
		{"unknown path", strings.Replace(upgradeRequest, "/xmpp-websocket", "/ws", 1), "HTTP/1.1 404 Not Found"},
		{"head over 8 KiB", valid("", "X-Filler: "+strings.Repeat("f", 8200)), "HTTP/1.1 431 Request Header Fields Too Large"},
		{"origin not allowed", valid("", "Origin: https://evil.example"), "HTTP/1.1 403 Forbidden"},
	}
	cfg := webConfig(t)
	cfg.Web.AllowedOrigins = []string{"https://chat.example"}
	srv := startServer(t, cfg)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := dialRawWS(t, srv, nil)
			head := r.request(tc.req)
			if line, _, _ := strings.Cut(head, "\r\n"); line != tc.status {
				t.Fatalf("status line %q, want %q (head %q)", line, tc.status, head)
			}
			if !strings.Contains(head, "\r\nConnection: close\r\n") {
				t.Fatalf("no Connection: close in %q", head)
			}
			if tc.status == "HTTP/1.1 426 Upgrade Required" && tc.name == "version 8" && !strings.Contains(head, "\r\nSec-WebSocket-Version: 13\r\n") {
				t.Fatalf("426 without Sec-WebSocket-Version: 13: %q", head)
			}
			body, err := io.ReadAll(r.br)
			if err != nil || len(body) == 0 {
				t.Fatalf("body %q (%v); want a reason, then EOF", body, err)
			}
		})
	}
	t.Run("allowed origin", func(t *testing.T) {
		r := dialRawWS(t, srv, nil)
		if got := r.request(valid("", "Origin: https://chat.example")); got != upgradeResponse {
			t.Fatalf("got %q", got)
		}
		r.open()
	})
}

// TestWebSocketDeadline: the pre-auth deadline runs from accept and holds
// whatever the client does after the upgrade, WebSocket pings included
// (answered, but moving nothing); a client that connects and sends nothing
// is closed at the same deadline.
func TestWebSocketDeadline(t *testing.T) {
	cfg := webConfig(t)
	cfg.Preauth.Timeout = 600 * time.Millisecond
	srv := startServer(t, cfg)

	t.Run("upgraded and pinging", func(t *testing.T) {
		start := time.Now()
		r := dialRawWS(t, srv, nil)
		r.upgrade()
		r.open()
		// Ping every 50 ms until the server closes: at most 4 s of pings.
		var closed srvFrame
		for i := 0; i < 80 && closed.op == 0; i++ {
			r.write(frame(true, 0, 0x9, []byte("ka"), true, false))
			for {
				f, err := r.read()
				if err != nil {
					t.Fatalf("read: %v", err)
				}
				if f.op == 0xA {
					break
				}
				if f.op == 0x1 {
					want := streamError("connection-timeout", "authentication took too long")
					if f.payload != want {
						t.Fatalf("got %q, want %q", f.payload, want)
					}
					r.expectText(wsClose)
					closed = srvFrame{op: 0x8}
					break
				}
				t.Fatalf("unexpected %v", f)
			}
			if closed.op == 0 {
				_ = r.conn.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
				if _, err := r.br.Peek(1); err == nil {
					_ = r.conn.SetReadDeadline(time.Now().Add(ioTimeout))
					continue
				}
				_ = r.conn.SetReadDeadline(time.Now().Add(ioTimeout))
			}
		}
		if closed.op == 0 {
			t.Fatal("not closed after 80 pings")
		}
		// Then EOF, or a reset when a ping of ours was still unread.
		r.expectCloseFrame(1000)
		if f, err := r.read(); !errors.Is(err, io.EOF) && !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("after the close frame: %v (%v), want the connection closed", f, err)
		}
		if elapsed := time.Since(start); elapsed < cfg.Preauth.Timeout || elapsed > cfg.Preauth.Timeout+2*time.Second {
			t.Fatalf("closed after %v, want about %v", elapsed, cfg.Preauth.Timeout)
		}
	})
	t.Run("silent before the upgrade", func(t *testing.T) {
		start := time.Now()
		r := dialRawWS(t, srv, nil)
		r.expectEOF()
		if elapsed := time.Since(start); elapsed < cfg.Preauth.Timeout || elapsed > cfg.Preauth.Timeout+2*time.Second {
			t.Fatalf("closed after %v, want about %v", elapsed, cfg.Preauth.Timeout)
		}
	})
	t.Run("half a request head", func(t *testing.T) {
		r := dialRawWS(t, srv, nil)
		_, _ = io.WriteString(r.conn, "GET /xmpp-websocket HTTP/1.1\r\nHost: local")
		r.expectEOF()
	})
}

// TestWebSocketPreauthCap: the pre-auth caps count web connections with
// the others; one over the per-address cap gets 503 at accept.
func TestWebSocketPreauthCap(t *testing.T) {
	cfg := webConfig(t)
	cfg.Preauth.MaxPerIP = 1
	srv := startServer(t, cfg)
	first := dialRawWS(t, srv, nil)
	first.upgrade()
	first.open()
	if got := srv.Stats().PreauthWeb; got != 1 {
		t.Fatalf("preauth_web = %d, want 1", got)
	}
	second := dialRawWS(t, srv, nil)
	line, err := second.br.ReadString('\n')
	if err != nil || line != "HTTP/1.1 503 Service Unavailable\r\n" {
		t.Fatalf("second connection: %q (%v), want 503", line, err)
	}
	tcp := dialRaw(t, srv)
	if got := tcp.closed(); !strings.Contains(got, "<policy-violation") {
		t.Fatalf("a TCP connection from the same address: %q, want policy-violation", got)
	}
}

// TestHostMeta: XEP-0156 host-meta and host-meta.json list the WebSocket
// endpoint with this listener's scheme and the requested host.
func TestHostMeta(t *testing.T) {
	for _, tc := range []struct {
		name, path, ctype, body string
		tls                     bool
	}{
		{"xml", "/.well-known/host-meta", "application/xrd+xml; charset=utf-8",
			"<?xml version='1.0' encoding='utf-8'?>\n<XRD xmlns='http://docs.oasis-open.org/ns/xri/xrd-1.0'>\n  <Link rel='urn:xmpp:alt-connections:websocket' href='ws://chat.example:5443/xmpp-websocket'/>\n</XRD>\n", false},
		{"json", "/.well-known/host-meta.json", "application/json",
			`{"links":[{"rel":"urn:xmpp:alt-connections:websocket","href":"wss://chat.example:5443/xmpp-websocket"}]}` + "\n", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := webConfig(t)
			cfg.Web.TLS = tc.tls
			srv := startServer(t, cfg)
			client := &http.Client{Timeout: ioTimeout}
			scheme := "http"
			if tc.tls {
				scheme = "https"
				client.Transport = &http.Transport{TLSClientConfig: clientTLS(t, cfg)}
			}
			req, _ := http.NewRequest("GET", scheme+"://"+srv.WebAddr().String()+tc.path, nil)
			req.Host = "chat.example:5443"
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != tc.ctype ||
				resp.Header.Get("Access-Control-Allow-Origin") != "*" || string(body) != tc.body {
				t.Fatalf("%d %v\n%q\nwant 200 %s, CORS *, %q", resp.StatusCode, resp.Header, body, tc.ctype, tc.body)
			}
		})
	}
}

// TestWebSocketSeeOtherURI: with web.see_other_uri, <open/> is answered
// with <close see-other-uri/> (RFC 7395, see-other-uri).
func TestWebSocketSeeOtherURI(t *testing.T) {
	cfg := webConfig(t)
	cfg.Web.SeeOtherURI = "wss://other.example/xmpp-websocket"
	srv := startServer(t, cfg)
	r := dialRawWS(t, srv, nil)
	r.upgrade()
	r.write(text(wsOpen))
	r.expectText(`<close xmlns='` + nsFraming + `' see-other-uri='wss://other.example/xmpp-websocket'/>`)
	r.expectClose(1000)
}

// TestWebSocketOverTLSRaw: the raw client over wss:// gets the same
// frames, through the TLS layer under the WebSocket one, with ALPN
// http/1.1 (what node's WebSocket, used by @xmpp/client, offers).
func TestWebSocketOverTLSRaw(t *testing.T) {
	cfg := webConfig(t)
	cfg.Web.TLS = true
	srv := startServer(t, cfg)
	// Browsers and node's WebSocket offer ALPN http/1.1: it is chosen (a
	// listener offering only xmpp-client would fail their handshake).
	tc := clientTLS(t, cfg)
	tc.NextProtos = []string{"http/1.1"}
	r := dialRawWS(t, srv, tc)
	r.upgrade()
	if p := r.conn.(*tls.Conn).ConnectionState().NegotiatedProtocol; p != "http/1.1" {
		t.Fatalf("ALPN %q, want http/1.1", p)
	}
	r.write(text(wsOpen))
	r.expectText(wsOpenReply)
	r.expectText(`<stream:features ` + streamNS + `><mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><mechanism>SCRAM-SHA-512-PLUS</mechanism>{**}</stream:features>`)
	r.write(frame(true, 0, 0x1, []byte(wsClose), false, false))
	r.expectText(streamError("bad-format", "websocket: client frame is not masked"))
	r.expectText(wsClose)
	r.expectClose(1002)
}

// TestWebSocketSizes: after binding a message may be as large as
// c2s.max_stanza_size (above the pre-auth limit); a frame announcing more
// is refused from its header with policy-violation and close code 1009.
// The raw client sends that header alone: the server closes on it, and
// payload bytes it did not read would turn its close into a reset.
func TestWebSocketSizes(t *testing.T) {
	cfg := webConfig(t)
	cfg.C2S.MaxStanzaSize = 32 << 10
	srv := startServer(t, cfg, "alice", "bob")
	r := dialRawWS(t, srv, nil)
	r.upgrade()
	r.login("alice", "web")
	bob := dialRaw(t, srv)
	bob.scramLogin("bob", testPassword, "tcp")

	const (
		head = `<message xmlns='jabber:client' id='big' to='bob@localhost/tcp'><body>`
		tail = `</body></message>`
	)
	body := strings.Repeat("b", 20<<10-len(head)-len(tail))
	// Over preauth.max_stanza_size (8 KiB), under c2s.max_stanza_size.
	r.write(text(head + body + tail))
	bob.expect(t, strings.TrimSuffix(head, "><body>")+` from='alice@localhost/web'><body>`+body+tail)
	r.write(frame(true, 0, 0x1, make([]byte, 32<<10+1), true, false)[:8]) // 2 + 2 (16-bit length) + 4 (mask)
	r.expectText(streamError("policy-violation", "message larger than the stanza size limit"))
	r.expectText(wsClose)
	r.expectClose(1009)
}

// login runs SCRAM-SHA-256 and binds resource over raw frames.
func (r *rawWS) login(user, resource string) {
	r.t.Helper()
	r.open()
	c := msasl.NewClient(msasl.ScramSha256, msasl.Credentials(func() ([]byte, []byte, []byte) {
		return []byte(user), []byte(testPassword), nil
	}))
	_, first, err := c.Step(nil)
	if err != nil {
		r.t.Fatal(err)
	}
	r.write(text(`<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='SCRAM-SHA-256'>` + base64.StdEncoding.EncodeToString(first) + `</auth>`))
	f, err := r.read()
	if err != nil {
		r.t.Fatal(err)
	}
	raw, _ := base64.StdEncoding.DecodeString(between(f.payload, "'>", "</challenge>"))
	_, final, err := c.Step(raw)
	if err != nil {
		r.t.Fatal(err)
	}
	r.write(text(`<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>` + base64.StdEncoding.EncodeToString(final) + `</response>`))
	r.expectText(`<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>{*}</success>`)
	r.open()
	r.write(text(`<iq type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>` + resource + `</resource></bind></iq>`))
	r.expectText(`<iq xmlns='jabber:client' type='result' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><jid>` + user + `@localhost/` + resource + `</jid></bind></iq>`)
}

// TestWebSocketGoroutines: idle WebSockets hold no goroutine, over TLS
// either, before authentication or after (the raw clients hold none).
func TestWebSocketGoroutines(t *testing.T) {
	cfg := webConfig(t)
	cfg.Web.TLS = true
	srv := startServer(t, cfg)
	tc := clientTLS(t, cfg)
	baseline := settledGoroutines(t)
	const n = 100
	for range n {
		r := dialRawWS(t, srv, tc)
		r.upgrade()
		r.open()
		_ = r.conn.SetDeadline(time.Time{})
	}
	if got := srv.Stats().PreauthWeb; got != n {
		t.Fatalf("preauth_web = %d, want %d", got, n)
	}
	if !waitFor(ioTimeout, func() bool { return runtime.NumGoroutine() <= baseline }) {
		t.Fatalf("goroutines with %d idle WebSockets: %d, baseline %d", n, runtime.NumGoroutine(), baseline)
	}
}
