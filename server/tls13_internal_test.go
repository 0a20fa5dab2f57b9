package server

import (
	"bytes"
	"crypto/cipher"
	"crypto/tls"
	"encoding/hex"
	"os"
	"strings"
	"testing"

	"github.com/panjf2000/gnet/v2"

	"github.com/krill-xmpp/krill/config"
)

// RFC 8448 section 3: the server handshake traffic secret of the simple
// 1-RTT handshake and the key and IV derived from it (TLS_AES_128_GCM_SHA256).
const (
	rfc8448ServerHSSecret = "b67b7d690cc16c4e75e54213cb2d37b4e9c912bcded9105d42befd59d391ad38"
	rfc8448ServerHSKey    = "3fce516009c21727d0f2e4e86ee403bc"
	rfc8448ServerHSIV     = "5d313eb2671276ee13000b30"
	// The server's Finished message, the last in the record.
	rfc8448ServerFinished = "140000209b9b141d906337fbd2cbdce71df4deda4ab42c309572cb7fffee5454b78f0718"
)

func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// readHexFile reads a testdata file of hex octets, # comments allowed.
func readHexFile(t testing.TB, name string) []byte {
	t.Helper()
	raw, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	var sb strings.Builder
	for line := range strings.Lines(string(raw)) {
		if !strings.HasPrefix(line, "#") {
			sb.WriteString(strings.Join(strings.Fields(line), ""))
		}
	}
	return unhex(t, sb.String())
}

// TestTLS13KeyScheduleRFC8448 derives key and IV from the RFC 8448 traffic
// secret with HKDF-Expand-Label (RFC 8446 7.1, 7.3).
func TestTLS13KeyScheduleRFC8448(t *testing.T) {
	su := suiteByID(tls.TLS_AES_128_GCM_SHA256)
	secret := unhex(t, rfc8448ServerHSSecret)
	key, err := hkdfExpandLabel(su.hash, secret, "key", nil, su.keyLen)
	if err != nil {
		t.Fatal(err)
	}
	if got := hex.EncodeToString(key); got != rfc8448ServerHSKey {
		t.Fatalf("key %s, want %s", got, rfc8448ServerHSKey)
	}
	var d tls13Dir
	if err := d.setSecret(su, secret); err != nil {
		t.Fatal(err)
	}
	if got := hex.EncodeToString(d.iv[:]); got != rfc8448ServerHSIV {
		t.Fatalf("iv %s, want %s", got, rfc8448ServerHSIV)
	}
}

// TestTLS13OpenRFC8448 opens the server's protected handshake record of RFC
// 8448 section 3 with the record layer's open: content type handshake, the
// 657 bytes of EncryptedExtensions to Finished. Flipped, replayed (sequence
// number 1) and truncated copies fail.
func TestTLS13OpenRFC8448(t *testing.T) {
	rec := readHexFile(t, "testdata/rfc8448-server-handshake.hex")
	su := suiteByID(tls.TLS_AES_128_GCM_SHA256)
	fresh := func() *tls13Dir {
		var d tls13Dir
		if err := d.setSecret(su, unhex(t, rfc8448ServerHSSecret)); err != nil {
			t.Fatal(err)
		}
		return &d
	}
	var nonce [12]byte
	d := fresh()
	out, typ, rerr := d.open(nil, rec[:5], rec[5:], &nonce)
	if rerr != nil {
		t.Fatal(rerr.what)
	}
	if typ != recordHandshake || len(out) != 657 || !bytes.HasPrefix(out, unhex(t, "08000024")) ||
		!bytes.HasSuffix(out, unhex(t, rfc8448ServerFinished)) {
		t.Fatalf("type %d, %d bytes: % x...", typ, len(out), out[:min(len(out), 16)])
	}
	if d.seq != 1 {
		t.Fatalf("sequence number %d after one record", d.seq)
	}
	// The same record again under sequence number 1: a replay.
	if _, _, rerr := d.open(nil, rec[:5], rec[5:], &nonce); rerr == nil || rerr.alert != alertBadRecordMAC {
		t.Fatalf("replayed record: %v", rerr)
	}
	for _, tc := range []struct {
		name string
		hdr  []byte
		body []byte
	}{
		{"flipped body byte", rec[:5], flip(rec[5:], 100)},
		{"flipped tag byte", rec[:5], flip(rec[5:], len(rec)-6)},
		{"flipped header", flip(rec[:5], 2), rec[5:]},
		{"truncated", rec[:5], rec[5 : len(rec)-1]},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, _, rerr := fresh().open(nil, tc.hdr, tc.body, &nonce); rerr == nil || rerr.alert != alertBadRecordMAC {
				t.Fatalf("opened: %v", rerr)
			}
		})
	}
}

func flip(b []byte, i int) []byte {
	c := bytes.Clone(b)
	c[i] ^= 1
	return c
}

// TestTLS13SealOpen seals and opens records of every suite, including the
// largest plaintext, a key update on both sides, and inner padding.
func TestTLS13SealOpen(t *testing.T) {
	for _, su := range tls13Suites {
		t.Run(tls.CipherSuiteName(su.id), func(t *testing.T) {
			secret := bytes.Repeat([]byte{7}, su.size)
			var w, r tls13Dir
			if err := w.setSecret(&su, secret); err != nil {
				t.Fatal(err)
			}
			if err := r.setSecret(&su, secret); err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, maxRecord)
			var nonce [12]byte
			for i, p := range [][]byte{[]byte("<presence/>"), {}, bytes.Repeat([]byte{'x'}, maxPlaintext)} {
				rec := w.seal(buf, recordApplicationData, p, &nonce)
				if len(rec) != 5+len(p)+1+aeadOverhead || rec[0] != recordApplicationData {
					t.Fatalf("record %d: %d bytes", i, len(rec))
				}
				out, typ, rerr := r.open(nil, rec[:5], rec[5:], &nonce)
				if rerr != nil || typ != recordApplicationData || !bytes.Equal(out, p) {
					t.Fatalf("record %d: %v type %d", i, rerr, typ)
				}
				if i == 1 {
					if w.update(&su) != nil || r.update(&su) != nil {
						t.Fatal("update failed")
					}
				}
			}
			// Padding: zeros after the type are stripped (RFC 8446 5.4). A
			// zero "type" from seal is one more byte of padding.
			rec := w.seal(buf, 0, []byte{'h', 'i', recordApplicationData, 0, 0}, &nonce)
			out, typ, rerr := r.open(nil, rec[:5], rec[5:], &nonce)
			if rerr != nil || typ != recordApplicationData || string(out) != "hi" {
				t.Fatalf("padded: %v type %d % x", rerr, typ, out)
			}
		})
	}
}

// TestTLS13RecordErrors feeds malformed records to the record parser: each
// stops it with the alert RFC 8446 names.
func TestTLS13RecordErrors(t *testing.T) {
	su := suiteByID(tls.TLS_CHACHA20_POLY1305_SHA256)
	secret := bytes.Repeat([]byte{9}, su.size)
	sealed := func(typ byte, p []byte) []byte {
		var w tls13Dir
		if err := w.setSecret(su, secret); err != nil {
			t.Fatal(err)
		}
		var nonce [12]byte
		return bytes.Clone(w.seal(make([]byte, maxRecord), typ, p, &nonce))
	}
	big := make([]byte, 5+maxCiphertext+1)
	copy(big, []byte{23, 3, 3, (maxCiphertext + 1) >> 8, (maxCiphertext + 1) & 0xff})
	for _, tc := range []struct {
		name  string
		in    []byte
		alert byte
		eof   bool
	}{
		{"change_cipher_spec after the handshake", []byte{20, 3, 3, 0, 1, 1}, alertUnexpectedMessage, false},
		{"plaintext alert", []byte{21, 3, 3, 0, 2, 2, 40}, alertUnexpectedMessage, false},
		{"oversized record", big, alertRecordOverflow, false},
		{"too short for a tag", []byte{23, 3, 3, 0, 4, 1, 2, 3, 4}, alertBadRecordMAC, false},
		{"only padding", sealed(0, nil), alertUnexpectedMessage, false},
		{"oversized plaintext", sealed(recordApplicationData, make([]byte, maxPlaintext+1)), alertRecordOverflow, false},
		{"close_notify", sealed(recordAlert, []byte{1, 0}), 0, true},
		{"fatal alert", sealed(recordAlert, []byte{2, 40}), 40, false},
		{"malformed alert", sealed(recordAlert, []byte{2}), alertDecodeError, false},
		{"finished after the handshake", sealed(recordHandshake, []byte{20, 0, 0, 1, 0}), alertUnexpectedMessage, false},
		{"key update too long", sealed(recordHandshake, []byte{24, 0, 0, 2, 0, 0}), alertDecodeError, false},
		{"key update bad value", sealed(recordHandshake, []byte{24, 0, 0, 1, 2}), alertDecodeError, false},
		{"empty handshake record", sealed(recordHandshake, nil), alertUnexpectedMessage, false},
		{"unknown content type", sealed(99, []byte{1}), alertUnexpectedMessage, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := &leanTLS{suite: su, closed: true} // closed: nothing to write to
			if err := l.rd.setSecret(su, secret); err != nil {
				t.Fatal(err)
			}
			_, rerr, eof := l.open(nil, tc.in)
			if eof != tc.eof {
				t.Fatalf("eof %v", eof)
			}
			if tc.eof {
				return
			}
			if rerr == nil || rerr.alert != tc.alert {
				t.Fatalf("got %+v, want alert %d", rerr, tc.alert)
			}
		})
	}
	t.Run("key update", func(t *testing.T) {
		l := &leanTLS{suite: su, closed: true}
		if err := l.rd.setSecret(su, secret); err != nil {
			t.Fatal(err)
		}
		in := sealed(recordHandshake, []byte{24, 0, 0, 1, 0})
		// The next record is under the updated key, sequence number 0.
		var w tls13Dir
		_ = w.setSecret(su, secret)
		_ = w.update(su)
		var nonce [12]byte
		in = append(in, w.seal(make([]byte, maxRecord), recordApplicationData, []byte("<a/>"), &nonce)...)
		off, rerr, _ := l.open(nil, in)
		if rerr != nil || off != len(in) || string(l.plain) != "<a/>" {
			t.Fatalf("off %d of %d, %+v, plain %q", off, len(in), rerr, l.plain)
		}
	})
	t.Run("partial record waits", func(t *testing.T) {
		l := &leanTLS{suite: su, closed: true}
		_ = l.rd.setSecret(su, secret)
		in := sealed(recordApplicationData, []byte("<a/>"))
		off, rerr, _ := l.open(nil, in[:len(in)-1])
		if off != 0 || rerr != nil || l.rd.seq != 0 {
			t.Fatalf("off %d, %+v", off, rerr)
		}
	})
}

// FuzzTLS13Records feeds arbitrary bytes to the record parser after a key
// is set: it must never panic, never consume more than it was given, and
// never hand the framer more than it decrypted.
func FuzzTLS13Records(f *testing.F) {
	su := suiteByID(tls.TLS_AES_128_GCM_SHA256)
	secret := bytes.Repeat([]byte{5}, su.size)
	var w tls13Dir
	if err := w.setSecret(su, secret); err != nil {
		f.Fatal(err)
	}
	var nonce [12]byte
	buf := make([]byte, maxRecord)
	var two []byte
	two = append(two, w.seal(buf, recordApplicationData, []byte("<stream:stream>"), &nonce)...)
	two = append(two, w.seal(buf, recordHandshake, []byte{24, 0, 0, 1, 1}, &nonce)...)
	f.Add(two)
	f.Add(bytes.Clone(w.seal(buf, recordAlert, []byte{1, 0}, &nonce)))
	f.Fuzz(func(t *testing.T, in []byte) {
		l := &leanTLS{suite: su, closed: true}
		if err := l.rd.setSecret(su, secret); err != nil {
			t.Fatal(err)
		}
		off, _, _ := l.open(nil, in)
		if off < 0 || off > len(in) || len(l.plain) > len(in) {
			t.Fatalf("consumed %d of %d, plaintext %d", off, len(in), len(l.plain))
		}
	})
}

// TestLeanHot: touch keeps least recently used first; sweep drops exactly
// the connections silent for the idle period, from the front.
func TestLeanHot(t *testing.T) {
	var h leanHot
	a, b, c := &leanTLS{}, &leanTLS{}, &leanTLS{}
	for _, l := range []*leanTLS{a, b, c} {
		l.rd.aead, l.wr.aead = dummyAEAD(t), dummyAEAD(t)
	}
	h.touch(a, 10)
	h.touch(b, 20)
	h.touch(c, 30)
	h.touch(a, 40) // a moves to the back: b, c, a
	if h.head != b || h.tail != a || b.next != c || c.next != a || a.prev != c {
		t.Fatal("order after touch")
	}
	if n := h.sweep(50, 20); n != 2 || h.head != a || b.rd.aead != nil || c.wr.aead != nil || a.rd.aead == nil {
		t.Fatalf("sweep dropped %d", n)
	}
	h.remove(a)
	h.remove(a) // not in the list: nothing
	if h.head != nil || h.tail != nil {
		t.Fatal("list not empty")
	}
	if n := h.sweep(1000, 0); n != 0 {
		t.Fatal("idle 0 dropped something")
	}
}

func dummyAEAD(t *testing.T) cipher.AEAD {
	t.Helper()
	a, err := newGCM(make([]byte, 16))
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// BenchmarkTLS13Seal seals a 1 KB record per suite with the AEAD kept
// (hot) and expanded again from the secret first (cold: a session's first
// record after tls.idle_release).
func BenchmarkTLS13Seal(b *testing.B) {
	p := bytes.Repeat([]byte{'x'}, 1024)
	for _, su := range tls13Suites {
		for _, cold := range []bool{false, true} {
			name := tls.CipherSuiteName(su.id) + "/hot"
			if cold {
				name = tls.CipherSuiteName(su.id) + "/cold"
			}
			b.Run(name, func(b *testing.B) {
				var d tls13Dir
				if err := d.setSecret(&su, bytes.Repeat([]byte{3}, su.size)); err != nil {
					b.Fatal(err)
				}
				buf := make([]byte, maxRecord)
				var nonce [12]byte
				b.SetBytes(int64(len(p)))
				b.ReportAllocs()
				for b.Loop() {
					if cold {
						d.aead = nil
						if err := d.expand(&su); err != nil {
							b.Fatal(err)
						}
					}
					d.seal(buf, recordApplicationData, p, &nonce)
				}
			})
		}
	}
}

// outConn is a gnet.Conn that keeps what is written to it.
type outConn struct {
	gnet.Conn
	out bytes.Buffer
}

func (o *outConn) Write(b []byte) (int, error) { return o.out.Write(b) }

// records splits b into records and opens each with d, moving d to the
// next key after a KeyUpdate, as the peer does.
func records(t *testing.T, d *tls13Dir, su *tls13Suite, b []byte) (types []byte, bodies [][]byte) {
	t.Helper()
	var nonce [12]byte
	for len(b) > 0 {
		n := 5 + (int(b[3])<<8 | int(b[4]))
		out, typ, rerr := d.open(nil, b[:5], b[5:n], &nonce)
		if rerr != nil {
			t.Fatalf("record %d: %s", len(types), rerr.what)
		}
		types, bodies = append(types, typ), append(bodies, out)
		if typ == recordHandshake && len(out) > 0 && out[0] == handshakeKeyUpdate {
			if err := d.update(su); err != nil {
				t.Fatal(err)
			}
		}
		b = b[n:]
	}
	return types, bodies
}

// TestLeanKeyUpdate: our own KeyUpdate after keyUpdateAfter records, and
// the answer to the client's update_requested, each sealed under the old
// key with the records after it under the new one (RFC 8446 4.6.3).
func TestLeanKeyUpdate(t *testing.T) {
	su := suiteByID(tls.TLS_AES_128_GCM_SHA256)
	cs, ss := bytes.Repeat([]byte{1}, su.size), bytes.Repeat([]byte{2}, su.size)
	setup := func() (*leanTLS, *conn, *outConn, *tls13Dir) {
		l := &leanTLS{suite: su}
		if l.rd.setSecret(su, cs) != nil || l.wr.setSecret(su, ss) != nil {
			t.Fatal("keys")
		}
		gc := &outConn{}
		var peer tls13Dir // the client's reading side
		if err := peer.setSecret(su, ss); err != nil {
			t.Fatal(err)
		}
		srv := &Server{}
		cfg := config.Default()
		srv.live.Store(&cfg)
		return l, &conn{gc: gc, loop: &loop{srv: srv}}, gc, &peer
	}
	keyUpdateAfter := config.Default().TLS.KeyUpdateRecords
	keyUpdate := []byte{handshakeKeyUpdate, 0, 0, 1, 0}
	t.Run("ours after tls.key_update_records records", func(t *testing.T) {
		l, c, gc, peer := setup()
		l.wr.seq, peer.seq = keyUpdateAfter-1, keyUpdateAfter-1
		l.write(c, []byte("<a/>"))
		l.write(c, []byte("<b/>"))
		types, bodies := records(t, peer, su, gc.out.Bytes())
		if !bytes.Equal(types, []byte{recordApplicationData, recordHandshake, recordApplicationData}) ||
			!bytes.Equal(bodies[1], keyUpdate) || string(bodies[2]) != "<b/>" || peer.seq != 1 {
			t.Fatalf("types %v bodies %q", types, bodies)
		}
	})
	t.Run("update_requested answered", func(t *testing.T) {
		l, c, gc, peer := setup()
		var client tls13Dir
		if err := client.setSecret(su, cs); err != nil {
			t.Fatal(err)
		}
		var nonce [12]byte
		in := bytes.Clone(client.seal(make([]byte, maxRecord), recordHandshake, []byte{handshakeKeyUpdate, 0, 0, 1, 1}, &nonce))
		if err := client.update(su); err != nil {
			t.Fatal(err)
		}
		in = append(in, client.seal(make([]byte, maxRecord), recordApplicationData, []byte("<in/>"), &nonce)...)
		if _, rerr, _ := l.open(c, in); rerr != nil || string(l.plain) != "<in/>" {
			t.Fatalf("%+v %q", rerr, l.plain)
		}
		l.write(c, []byte("<c/>"))
		types, bodies := records(t, peer, su, gc.out.Bytes())
		if !bytes.Equal(types, []byte{recordHandshake, recordApplicationData}) ||
			!bytes.Equal(bodies[0], keyUpdate) || string(bodies[1]) != "<c/>" {
			t.Fatalf("types %v bodies %q", types, bodies)
		}
	})
}
