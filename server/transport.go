package server

import (
	"net/netip"
	"time"
)

// transport is the layer between gnet's buffers and the framer: it turns
// what the client sent into plaintext for the framer and the core's
// plaintext into bytes on the wire. Plain TCP passes bytes through; TLS
// decrypts and encrypts, after a handshake; WebSocket (wsConn, ws.go)
// reads an HTTP upgrade and then unwraps frames, over either of them.
// A connection starts with plainTCP, or tlsConn on the direct TLS listener,
// or wsConn on the web listener, and STARTTLS swaps the layer (startTLS).
// Every method runs on the connection's loop.
type transport interface {
	// input takes what gnet holds for c and hands the plaintext to
	// s.frame. What the framer does not consume stays buffered, in gnet's
	// buffer or the layer's own.
	input(s *Server, c *conn)
	// write sends plaintext b to the client. It drops b while the layer
	// cannot carry the stream yet (see ready).
	write(c *conn, b []byte)
	// ready reports whether the layer carries the XML stream now: false
	// while a TLS handshake is set up, when there is no stream to send a
	// stream error on.
	ready() bool
	// secure reports whether the stream is encrypted, or will be once the
	// layer is ready: it decides the stream features and SASL mechanisms.
	secure() bool
	// binding returns the source of SASL channel-binding data (RFC 5056)
	// for -PLUS mechanisms, or nil.
	binding() func(cbType string) ([]byte, error)
	// deadline returns the end of the layer's set-up allowance (the TLS
	// handshake deadline), zero when no set-up is running. The
	// connection's one timer fires at the earliest of it and the pre-auth
	// deadline (armDeadline).
	deadline() time.Time
	// expired runs when deadline has passed: it counts the failure and
	// closes c.
	expired(s *Server, c *conn)
	// shut ends the layer in an orderly way before the socket closes
	// (TLS close_notify).
	shut(c *conn)
	// release frees the layer's state once c is closed, by the server or
	// the peer; c.reason says why. It runs exactly once.
	release(c *conn)
	// dropped returns the close reason to record when the peer closes the
	// socket unasked.
	dropped() closeReason
}

// plainTCP is the transport of a connection without TLS: bytes pass
// through, the framer working on gnet's own buffer. It has no state, so a
// plain connection pays nothing for its layer beyond the interface word in
// conn.
type plainTCP struct{}

var _ transport = plainTCP{}

// input frames gnet's buffer in place and discards what was consumed;
// partial input stays there for the framer to resume on.
func (plainTCP) input(s *Server, c *conn) {
	buf, _ := c.gc.Peek(-1)
	off := s.frame(c, buf)
	if c.has(flagClosed) {
		return
	}
	if off > 0 {
		_, _ = c.gc.Discard(off)
	}
}

func (plainTCP) write(c *conn, b []byte)                      { _, _ = c.gc.Write(b) }
func (plainTCP) ready() bool                                  { return true }
func (plainTCP) secure() bool                                 { return false }
func (plainTCP) binding() func(cbType string) ([]byte, error) { return nil }
func (plainTCP) deadline() time.Time                          { return time.Time{} }
func (plainTCP) expired(*Server, *conn)                       {}
func (plainTCP) shut(*conn)                                   {}
func (plainTCP) release(*conn)                                {}
func (plainTCP) dropped() closeReason                         { return reasonDropped }

// peerAddr is a client's address in 16 bytes. A netip.Addr takes 24: the
// extra word tells the family and zone apart, which is derivable here
// because addresses are stored unmapped and without a zone (addrIP), so an
// IPv4 address is its IPv4-mapped form. The zero peerAddr is the invalid
// address (the unspecified address :: is never a peer's).
type peerAddr [16]byte

func makePeerAddr(a netip.Addr) peerAddr {
	if !a.IsValid() {
		return peerAddr{}
	}
	return a.As16()
}

// Addr returns the address as netip.Addr: IPv4 for an IPv4 peer.
func (p peerAddr) Addr() netip.Addr {
	if p == (peerAddr{}) {
		return netip.Addr{}
	}
	return netip.AddrFrom16(p).Unmap()
}

// String returns the address in its usual text form, for logs.
func (p peerAddr) String() string { return p.Addr().String() }
