package websocket

import (
	"bytes"
	"errors"
	"testing"
)

// TestAcceptKey uses the example of RFC 6455 section 1.3.
func TestAcceptKey(t *testing.T) {
	if got := string(AcceptKey([]byte("dGhlIHNhbXBsZSBub25jZQ=="))); got != "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" {
		t.Fatalf("AcceptKey = %q", got)
	}
	for key, ok := range map[string]bool{"dGhlIHNhbXBsZSBub25jZQ==": true, "c2hvcnQ=": false, "!!!!!!!!!!!!!!!!!!!!!!==": false, "": false} {
		if ValidKey([]byte(key)) != ok {
			t.Errorf("ValidKey(%q) = %v", key, !ok)
		}
	}
}

func TestParseHeader(t *testing.T) {
	cases := []struct {
		name  string
		in    []byte
		ok    bool
		err   error
		check error
		want  Header
	}{
		{"short", []byte{0x81}, false, nil, nil, Header{}},
		{"masked text", []byte{0x81, 0x85, 1, 2, 3, 4}, true, nil, nil, Header{Fin: true, Op: OpText, Masked: true, Mask: [4]byte{1, 2, 3, 4}, Len: 5, Size: 6}},
		{"16-bit length incomplete", []byte{0x81, 0xFE, 0x01}, false, nil, nil, Header{}},
		{"16-bit length", []byte{0x01, 0xFE, 0x01, 0x00, 9, 9, 9, 9}, true, nil, nil, Header{Op: OpText, Masked: true, Mask: [4]byte{9, 9, 9, 9}, Len: 256, Size: 8}},
		{"64-bit length", []byte{0x82, 0xFF, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0}, true, nil, nil, Header{Fin: true, Op: OpBinary, Masked: true, Len: 65536, Size: 14}},
		{"64-bit top bit", []byte{0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 0}, false, ErrLength, nil, Header{}},
		{"unmasked", []byte{0x81, 0x05}, true, nil, ErrUnmasked, Header{Fin: true, Op: OpText, Len: 5, Size: 2}},
		{"rsv1", []byte{0xC1, 0x80, 0, 0, 0, 0}, true, nil, ErrReserved, Header{Fin: true, RSV: 4, Op: OpText, Masked: true, Size: 6}},
		{"opcode 0xB", []byte{0x8B, 0x80, 0, 0, 0, 0}, true, nil, ErrOpcode, Header{Fin: true, Op: 0xB, Masked: true, Size: 6}},
		{"fragmented ping", []byte{0x09, 0x80, 0, 0, 0, 0}, true, nil, ErrControlFragmented, Header{Op: OpPing, Masked: true, Size: 6}},
		{"long close", []byte{0x88, 0xFE, 0, 126, 0, 0, 0, 0}, true, nil, ErrControlTooLong, Header{Fin: true, Op: OpClose, Masked: true, Len: 126, Size: 8}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h, ok, err := ParseHeader(tc.in)
			if ok != tc.ok || !errors.Is(err, tc.err) || ok && h != tc.want {
				t.Fatalf("got %+v %v %v, want %+v %v %v", h, ok, err, tc.want, tc.ok, tc.err)
			}
			if ok {
				if err := CheckClient(h); !errors.Is(err, tc.check) {
					t.Fatalf("CheckClient = %v, want %v", err, tc.check)
				}
			}
		})
	}
}

// TestUnmask unmasks in pieces at every split and compares with the
// byte-by-byte definition (RFC 6455 section 5.3).
func TestUnmask(t *testing.T) {
	key := [4]byte{0x37, 0xfa, 0x21, 0x3d}
	plain := []byte("Hello, WebSocket framing: a payload longer than one word.")
	masked := make([]byte, len(plain))
	for i := range plain {
		masked[i] = plain[i] ^ key[i%4]
	}
	for split := 0; split <= len(masked); split++ {
		b := bytes.Clone(masked)
		Unmask(b[:split], key, 0)
		Unmask(b[split:], key, split)
		if !bytes.Equal(b, plain) {
			t.Fatalf("split %d: %q", split, b)
		}
	}
}

func TestFrames(t *testing.T) {
	for _, n := range []int{0, 125, 126, 65535, 65536} {
		f := AppendFrame(nil, OpText, bytes.Repeat([]byte("a"), n))
		h, ok, err := ParseHeader(f)
		if !ok || err != nil || h.Len != uint64(n) || h.Size+n != len(f) || h.Masked || !h.Fin {
			t.Fatalf("n=%d: %+v %v %v", n, h, ok, err)
		}
	}
	c := AppendClose(nil, CloseProtocolError, "bad")
	code, reason, err := ParseClose(c[2:])
	if err != nil || code != CloseProtocolError || string(reason) != "bad" {
		t.Fatalf("ParseClose = %d %q %v", code, reason, err)
	}
	for _, p := range [][]byte{{0x03}, {0x03, 0xED}, {0x03, 0xE8, 0xFF}} {
		if _, _, err := ParseClose(p); err == nil {
			t.Errorf("ParseClose(%x) accepted", p)
		}
	}
}
