// Package websocket implements the server side of RFC 6455 framing for a
// connection driven by an event loop: it parses frame headers from
// whatever bytes have arrived (never blocking, never buffering on its
// own), checks what a server must check of a client's frames, unmasks in
// place and appends server frames to a caller's buffer. It has no
// connection type and starts no goroutine: the caller keeps partial input
// in its own buffer and calls again when more arrives.
//
// The opening handshake is HTTP and belongs to the caller; AcceptKey
// computes its one cryptographic answer.
package websocket

import (
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"unicode/utf8"
)

// Opcode is a frame's opcode (RFC 6455 section 5.2).
type Opcode uint8

// The opcodes RFC 6455 defines; the others are reserved.
const (
	OpContinuation Opcode = 0x0
	OpText         Opcode = 0x1
	OpBinary       Opcode = 0x2
	OpClose        Opcode = 0x8
	OpPing         Opcode = 0x9
	OpPong         Opcode = 0xA
)

// Control reports whether o is a control opcode (close, ping, pong, and
// the reserved 0xB-0xF).
func (o Opcode) Control() bool { return o&0x8 != 0 }

// Close status codes (RFC 6455 section 7.4.1) a server sends or checks.
const (
	CloseNormal          uint16 = 1000 // the purpose of the connection is fulfilled
	CloseGoingAway       uint16 = 1001 // server going down
	CloseProtocolError   uint16 = 1002 // a frame broke RFC 6455
	CloseUnsupportedData uint16 = 1003 // a data type the endpoint cannot take (binary, here)
	CloseNoStatus        uint16 = 1005 // reserved: a close frame without a code; never sent
	CloseInvalidPayload  uint16 = 1007 // text that is not UTF-8
	ClosePolicyViolation uint16 = 1008 // a policy, such as the deadline
	CloseTooBig          uint16 = 1009 // a message larger than the endpoint takes
	CloseInternalError   uint16 = 1011 // the server failed
)

// MaxControlPayload is the largest payload of a control frame (RFC 6455
// section 5.5).
const MaxControlPayload = 125

// MaxHeader is the largest frame header: 2 bytes, an 8-byte extended
// length and a 4-byte masking key.
const MaxHeader = 14

// Errors a client's frame header can cause; each is a protocol error
// (close code 1002).
var (
	ErrReserved          = errors.New("websocket: reserved bits set, and no extension was negotiated")
	ErrUnmasked          = errors.New("websocket: client frame is not masked")
	ErrOpcode            = errors.New("websocket: reserved opcode")
	ErrControlFragmented = errors.New("websocket: fragmented control frame")
	ErrControlTooLong    = errors.New("websocket: control frame payload longer than 125 bytes")
	ErrLength            = errors.New("websocket: 64-bit payload length with its most significant bit set")
	ErrCloseCode         = errors.New("websocket: invalid close status code")
	ErrCloseReason       = errors.New("websocket: close reason is not UTF-8")
	ErrClosePayload      = errors.New("websocket: close payload of one byte")
)

// Header is a parsed frame header.
type Header struct {
	Fin    bool    // last frame of a message
	RSV    uint8   // the three reserved bits, RSV1 as 4
	Op     Opcode  // the opcode
	Masked bool    // the MASK bit
	Mask   [4]byte // the masking key, when Masked
	Len    uint64  // payload length
	Size   int     // header length in bytes: the payload starts there
}

// ParseHeader parses the frame header at the start of b. ok is false while
// b does not hold the whole header yet; err is set when the length field
// is invalid (no other check is made here: see CheckClient).
func ParseHeader(b []byte) (h Header, ok bool, err error) {
	if len(b) < 2 {
		return Header{}, false, nil
	}
	h.Fin = b[0]&0x80 != 0
	h.RSV = (b[0] >> 4) & 0x7
	h.Op = Opcode(b[0] & 0xF)
	h.Masked = b[1]&0x80 != 0
	n := 2
	switch l := b[1] & 0x7F; l {
	case 126:
		if len(b) < n+2 {
			return Header{}, false, nil
		}
		h.Len = uint64(binary.BigEndian.Uint16(b[n:]))
		n += 2
	case 127:
		if len(b) < n+8 {
			return Header{}, false, nil
		}
		h.Len = binary.BigEndian.Uint64(b[n:])
		n += 8
		if h.Len>>63 != 0 {
			return Header{}, false, ErrLength
		}
	default:
		h.Len = uint64(l)
	}
	if h.Masked {
		if len(b) < n+4 {
			return Header{}, false, nil
		}
		copy(h.Mask[:], b[n:n+4])
		n += 4
	}
	h.Size = n
	return h, true, nil
}

// CheckClient makes the checks RFC 6455 requires of every frame a server
// receives: masked (section 5.1), no reserved bit without an extension
// (5.2), a defined opcode, and control frames unfragmented and short
// (5.5). The errors are protocol errors (close code 1002).
func CheckClient(h Header) error {
	switch {
	case h.RSV != 0:
		return ErrReserved
	case !h.Masked:
		return ErrUnmasked
	}
	switch h.Op {
	case OpContinuation, OpText, OpBinary, OpClose, OpPing, OpPong:
	default:
		return ErrOpcode
	}
	if h.Op.Control() {
		if !h.Fin {
			return ErrControlFragmented
		}
		if h.Len > MaxControlPayload {
			return ErrControlTooLong
		}
	}
	return nil
}

// Unmask XORs p with key in place. pos is p's offset in the frame's
// payload, for a payload unmasked in pieces.
func Unmask(p []byte, key [4]byte, pos int) {
	if len(p) == 0 {
		return
	}
	// Rotate the key so that it starts at p[0].
	var k [4]byte
	for i := range k {
		k[i] = key[(pos+i)&3]
	}
	k32 := binary.LittleEndian.Uint32(k[:])
	k64 := uint64(k32) | uint64(k32)<<32
	i := 0
	for ; i+8 <= len(p); i += 8 {
		binary.LittleEndian.PutUint64(p[i:], binary.LittleEndian.Uint64(p[i:])^k64)
	}
	for ; i < len(p); i++ {
		p[i] ^= k[i&3]
	}
}

// AppendHeader appends the header of an unmasked server frame with a
// payload of n bytes.
func AppendHeader(dst []byte, fin bool, op Opcode, n int) []byte {
	b0 := byte(op)
	if fin {
		b0 |= 0x80
	}
	switch {
	case n <= 125:
		return append(dst, b0, byte(n))
	case n <= 0xFFFF:
		return append(dst, b0, 126, byte(n>>8), byte(n))
	}
	dst = append(dst, b0, 127)
	return binary.BigEndian.AppendUint64(dst, uint64(n))
}

// AppendFrame appends a complete unmasked server frame: one unfragmented
// message, or a control frame.
func AppendFrame(dst []byte, op Opcode, payload []byte) []byte {
	dst = AppendHeader(dst, true, op, len(payload))
	return append(dst, payload...)
}

// AppendClose appends a close frame with code and reason (trimmed so that
// the payload fits a control frame).
func AppendClose(dst []byte, code uint16, reason string) []byte {
	if len(reason) > MaxControlPayload-2 {
		reason = reason[:MaxControlPayload-2]
		for len(reason) > 0 && !utf8.ValidString(reason) {
			reason = reason[:len(reason)-1]
		}
	}
	dst = AppendHeader(dst, true, OpClose, 2+len(reason))
	dst = binary.BigEndian.AppendUint16(dst, code)
	return append(dst, reason...)
}

// ParseClose reads the (unmasked) payload of a close frame: code is
// CloseNoStatus when there is none. It checks what RFC 6455 section 7.4
// and 5.5.1 require: a code that may be sent on the wire and a UTF-8
// reason.
func ParseClose(p []byte) (code uint16, reason []byte, err error) {
	switch len(p) {
	case 0:
		return CloseNoStatus, nil, nil
	case 1:
		return 0, nil, ErrClosePayload
	}
	code = binary.BigEndian.Uint16(p)
	if !validCloseCode(code) {
		return 0, nil, ErrCloseCode
	}
	if !utf8.Valid(p[2:]) {
		return 0, nil, ErrCloseReason
	}
	return code, p[2:], nil
}

// validCloseCode reports whether a peer may send code (RFC 6455 section
// 7.4): the defined codes but 1004-1006 and 1015, and 3000-4999.
func validCloseCode(code uint16) bool {
	switch {
	case code >= 1000 && code <= 1003, code >= 1007 && code <= 1011:
		return true
	case code >= 3000 && code <= 4999:
		return true
	}
	return false
}

// keyGUID is the GUID RFC 6455 section 1.3 appends to the client's key.
const keyGUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

// AcceptKey returns the Sec-WebSocket-Accept value for a client's
// Sec-WebSocket-Key: base64(SHA-1(key + GUID)).
func AcceptKey(key []byte) []byte {
	h := sha1.New()
	h.Write(key)
	h.Write([]byte(keyGUID))
	var sum [sha1.Size]byte
	return base64.StdEncoding.AppendEncode(nil, h.Sum(sum[:0]))
}

// ValidKey reports whether a Sec-WebSocket-Key is the base64 encoding of
// 16 bytes (RFC 6455 section 4.1).
func ValidKey(key []byte) bool {
	if len(key) != 24 {
		return false
	}
	var out [18]byte
	n, err := base64.StdEncoding.Decode(out[:], key)
	return err == nil && n == 16
}
