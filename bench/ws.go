package bench

import (
	"bytes"
	"crypto/tls"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"strconv"
)

// The WebSocket stages (RFC 7395 over RFC 6455): Options.Addr is then the
// server's web listener and Options.WebPath its endpoint. The client is a
// minimal one of its own (masked text frames out, frames in), so that a
// client process holds nothing but its sockets, as for the TCP stages.
const (
	// StageWS is an upgraded WebSocket (ws://) on which the client sent
	// <open/> and received the stream features in full.
	StageWS Stage = "ws"
	// StageWSAuth is StageWS, then SCRAM-SHA-256 as the connection's own
	// account, a new <open/>, a resource bound and initial presence sent,
	// all over ws:// (the server must allow SASL without TLS: a web
	// listener behind a TLS proxy).
	StageWSAuth Stage = "ws-auth"
	// StageWSS is StageWS over TLS (wss://, Options.TLSConfig, ALPN
	// http/1.1).
	StageWSS Stage = "wss"
	// StageWSSAuth is StageWSAuth over TLS.
	StageWSSAuth Stage = "wss-auth"
	// StageAuthPlain is StageAuth without STARTTLS, over plain TCP (the
	// server must allow SASL without TLS): the TCP counterpart of
	// StageWSAuth, for comparing like with like.
	StageAuthPlain Stage = "auth-plain"
)

// DefaultWebPath is Options.WebPath's default: Krill's and Prosody's
// endpoint.
const DefaultWebPath = "/xmpp-websocket"

func init() {
	stageFuncs[StageWS] = wsStage(false, false)
	stageFuncs[StageWSAuth] = wsStage(false, true)
	stageFuncs[StageWSS] = wsStage(true, false)
	stageFuncs[StageWSSAuth] = wsStage(true, true)
	stageFuncs[StageAuthPlain] = loginPlain
}

// loginPlain is StageAuthPlain: login without STARTTLS.
func loginPlain(c net.Conn, o *Options, i int) (net.Conn, error) {
	if _, err := openStream(c, o, i); err != nil {
		return nil, err
	}
	if err := Authenticate(c, o.UserPrefix+strconv.Itoa(o.FirstUser+i), o.Password); err != nil {
		return nil, err
	}
	if _, err := openStream(c, o, i); err != nil {
		return nil, err
	}
	return bindAndPresence(c, o, "")
}

// bindAndPresence binds o.Resource and sends initial presence on c, a
// stream whose post-authentication features were just read; ns is put
// into both start tags (an xmlns declaration over WebSocket).
func bindAndPresence(c net.Conn, o *Options, ns string) (net.Conn, error) {
	if _, err := io.WriteString(c, `<iq`+ns+` type='set' id='bind'><bind xmlns='`+nsBind+`'><resource>`+
		escapeAttr(o.Resource)+`</resource></bind></iq>`); err != nil {
		return nil, err
	}
	got, err := readUntil(c, "</iq>", "/>")
	if err != nil {
		return nil, err
	}
	if !bytes.Contains(got, []byte("<jid>")) {
		return nil, fmt.Errorf("%w: bind answered with %s", ErrRefused, clip(got, 200))
	}
	if _, err := io.WriteString(c, `<presence`+ns+`/>`); err != nil {
		return nil, err
	}
	return c, nil
}

// WebStage reports whether st is a WebSocket stage, dialled at the web
// listener.
func WebStage(st Stage) bool {
	return st == StageWS || st == StageWSAuth || st == StageWSS || st == StageWSSAuth
}

// needsTLS reports whether st needs Options.TLSConfig.
func needsTLS(st Stage) bool {
	return st == StageTLS || st == StageAuth || st == StageWSS || st == StageWSSAuth
}

// ErrUpgrade means the server did not answer the opening handshake with
// 101 and the xmpp subprotocol.
var ErrUpgrade = errors.New("bench: WebSocket upgrade refused")

const nsFraming = "urn:ietf:params:xml:ns:xmpp-framing"

// wsStage returns the stage function of a WebSocket stage.
func wsStage(overTLS, auth bool) stageFunc {
	return func(c net.Conn, o *Options, i int) (net.Conn, error) {
		if overTLS {
			cfg := o.TLSConfig.Clone()
			cfg.NextProtos = []string{"http/1.1"}
			tc := tls.Client(c, cfg)
			if err := tc.Handshake(); err != nil {
				return nil, fmt.Errorf("bench: TLS handshake: %w", err)
			}
			c = tc
		}
		ws, err := wsUpgrade(c, o)
		if err != nil {
			return nil, err
		}
		if err := ws.open(o); err != nil {
			return nil, err
		}
		if !auth {
			return ws, nil
		}
		if err := Authenticate(ws, o.UserPrefix+strconv.Itoa(o.FirstUser+i), o.Password); err != nil {
			return nil, err
		}
		if err := ws.open(o); err != nil {
			return nil, err
		}
		// Each message is a document of its own (RFC 7395): Prosody
		// 0.12 refuses a stanza without its namespace.
		return bindAndPresence(ws, o, ` xmlns='jabber:client'`)
	}
}

// wsUpgrade runs the opening handshake (RFC 6455 section 4.1) with the
// xmpp subprotocol.
func wsUpgrade(c net.Conn, o *Options) (*wsStream, error) {
	var key [16]byte
	binary.LittleEndian.PutUint64(key[:], rand.Uint64())
	binary.LittleEndian.PutUint64(key[8:], rand.Uint64())
	req := "GET " + o.WebPath + " HTTP/1.1\r\nHost: " + o.Domain + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: " + base64.StdEncoding.EncodeToString(key[:]) + "\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: xmpp\r\n\r\n"
	if _, err := io.WriteString(c, req); err != nil {
		return nil, err
	}
	// The server sends nothing after its 101 until the client's <open/>,
	// so reading in chunks takes no frame bytes.
	var head []byte
	var chunk [512]byte
	for !bytes.Contains(head, []byte("\r\n\r\n")) {
		if len(head) > 8<<10 {
			return nil, fmt.Errorf("%w: response head over 8 KiB", ErrUpgrade)
		}
		n, err := c.Read(chunk[:])
		head = append(head, chunk[:n]...)
		if err != nil {
			return nil, fmt.Errorf("%w: %v after %s", ErrUpgrade, err, clip(head, 200))
		}
	}
	if !bytes.HasPrefix(head, []byte("HTTP/1.1 101 ")) || !xmppProtocol(head) {
		return nil, fmt.Errorf("%w: %s", ErrUpgrade, clip(head, 200))
	}
	return &wsStream{Conn: c}, nil
}

// xmppProtocol reports whether a response head selects the xmpp
// subprotocol. Header names are compared without regard to case and the
// value may follow the colon without a space (ejabberd 23 writes
// "Sec-Websocket-Protocol:xmpp").
func xmppProtocol(head []byte) bool {
	for _, line := range bytes.Split(head, []byte("\r\n")) {
		name, value, ok := bytes.Cut(line, []byte(":"))
		if ok && bytes.EqualFold(bytes.TrimSpace(name), []byte("Sec-WebSocket-Protocol")) &&
			bytes.Equal(bytes.TrimSpace(value), []byte("xmpp")) {
			return true
		}
	}
	return false
}

// wsStream carries XML over a WebSocket as a stream: each Write is one
// masked text message (the stages write one element at a time, as RFC
// 7395 wants), and Read returns the payloads of the server's messages.
// Pings are answered; a close frame reads as io.EOF.
type wsStream struct {
	net.Conn
	pending []byte // the rest of the last message read
}

// NetConn returns the connection under the WebSocket, for abort.
func (w *wsStream) NetConn() net.Conn { return w.Conn }

// open sends <open/> and reads up to the end of the stream features.
func (w *wsStream) open(o *Options) error {
	if _, err := io.WriteString(w, `<open xmlns='`+nsFraming+`' to='`+escapeAttr(o.Domain)+`' version='1.0'/>`); err != nil {
		return err
	}
	_, err := readUntil(w, "</stream:features>")
	return err
}

// Write sends p as one masked text frame.
func (w *wsStream) Write(p []byte) (int, error) {
	if err := w.writeFrame(0x1, p); err != nil {
		return 0, err
	}
	return len(p), nil
}

func (w *wsStream) writeFrame(op byte, p []byte) error {
	b := make([]byte, 0, 14+len(p))
	b = append(b, 0x80|op)
	switch n := len(p); {
	case n <= 125:
		b = append(b, 0x80|byte(n))
	case n <= 0xFFFF:
		b = append(b, 0x80|126, byte(n>>8), byte(n))
	default:
		b = append(b, 0x80|127)
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	}
	var key [4]byte
	binary.LittleEndian.PutUint32(key[:], rand.Uint32())
	b = append(b, key[:]...)
	for i, c := range p {
		b = append(b, c^key[i&3])
	}
	_, err := w.Conn.Write(b)
	return err
}

// Read returns message payloads; it answers pings on the way.
func (w *wsStream) Read(p []byte) (int, error) {
	for len(w.pending) == 0 {
		op, payload, err := w.readFrame()
		if err != nil {
			return 0, err
		}
		switch op {
		case 0x1, 0x0:
			w.pending = payload
		case 0x9:
			if err := w.writeFrame(0xA, payload); err != nil {
				return 0, err
			}
		case 0x8:
			return 0, io.EOF
		}
	}
	n := copy(p, w.pending)
	w.pending = w.pending[n:]
	return n, nil
}

func (w *wsStream) readFrame() (byte, []byte, error) {
	var h [2]byte
	if _, err := io.ReadFull(w.Conn, h[:]); err != nil {
		return 0, nil, err
	}
	n := uint64(h[1] & 0x7F)
	switch n {
	case 126:
		var l [2]byte
		if _, err := io.ReadFull(w.Conn, l[:]); err != nil {
			return 0, nil, err
		}
		n = uint64(binary.BigEndian.Uint16(l[:]))
	case 127:
		var l [8]byte
		if _, err := io.ReadFull(w.Conn, l[:]); err != nil {
			return 0, nil, err
		}
		n = binary.BigEndian.Uint64(l[:])
	}
	if n > maxNegotiation {
		return 0, nil, fmt.Errorf("%w: a %d-byte WebSocket frame", ErrNoFeatures, n)
	}
	p := make([]byte, n)
	if _, err := io.ReadFull(w.Conn, p); err != nil {
		return 0, nil, err
	}
	return h[0] & 0xF, p, nil
}
