package server

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"math"
	"time"

	"go.uber.org/zap"
	"golang.org/x/crypto/chacha20poly1305"

	"github.com/krill-xmpp/krill/sasl"
)

// The lean TLS 1.3 record layer (tls.lean). The handshake stays on stock
// crypto/tls; when it ends, the connection's transport becomes a leanTLS
// that keeps only what RFC 8446 section 5 needs to protect records: the
// suite, per direction the traffic secret, the IV and the sequence number,
// and the expanded AEAD while the connection lives. An idle stock tls.Conn
// keeps its ClientHello-sized input buffer, handshake buffer, both AEADs
// and a 900-byte struct (design brief, "Lean TLS after the handshake").
//
// The traffic secrets come from tls.Config.KeyLogWriter on a configuration
// made for this one connection (GetConfigForClient, see withKeyLog): the
// writer parses the two application traffic secrets into the connection's
// own memory, and writes nothing anywhere.

// TLS record content types (RFC 8446 5.1).
const (
	recordChangeCipherSpec = 20
	recordAlert            = 21
	recordHandshake        = 22
	recordApplicationData  = 23
)

// Alert descriptions we send (RFC 8446 6).
const (
	alertCloseNotify       = 0
	alertUnexpectedMessage = 10
	alertBadRecordMAC      = 20
	alertRecordOverflow    = 22
	alertDecodeError       = 50
	alertUserCanceled      = 90
)

const (
	// maxPlaintext is the largest record plaintext (RFC 8446 5.1).
	maxPlaintext = 1 << 14
	// maxCiphertext is the largest TLSCiphertext.length (RFC 8446 5.2).
	maxCiphertext = maxPlaintext + 256
	// aeadOverhead is the tag length of all three suites.
	aeadOverhead = 16
	// handshakeKeyUpdate is the KeyUpdate handshake message type.
	handshakeKeyUpdate = 24
)

// tls13Suite is one TLS 1.3 cipher suite the lean layer implements.
type tls13Suite struct {
	id     uint16
	keyLen int
	hash   func() hash.Hash
	size   int // hash length: the length of a traffic secret
	aead   func(key []byte) (cipher.AEAD, error)
}

func newGCM(key []byte) (cipher.AEAD, error) {
	b, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(b)
}

var tls13Suites = [...]tls13Suite{
	{tls.TLS_AES_128_GCM_SHA256, 16, sha256.New, sha256.Size, newGCM},
	{tls.TLS_AES_256_GCM_SHA384, 32, sha512.New384, sha512.Size384, newGCM},
	{tls.TLS_CHACHA20_POLY1305_SHA256, chacha20poly1305.KeySize, sha256.New, sha256.Size, chacha20poly1305.New},
}

// suiteByID returns the suite with TLS identifier id, or nil.
func suiteByID(id uint16) *tls13Suite {
	for i := range tls13Suites {
		if tls13Suites[i].id == id {
			return &tls13Suites[i]
		}
	}
	return nil
}

// hkdfExpandLabel is HKDF-Expand-Label (RFC 8446 7.1).
func hkdfExpandLabel(h func() hash.Hash, secret []byte, label string, context []byte, length int) ([]byte, error) {
	info := make([]byte, 0, 2+1+6+len(label)+1+len(context))
	info = binary.BigEndian.AppendUint16(info, uint16(length))
	info = append(info, byte(6+len(label)))
	info = append(info, "tls13 "...)
	info = append(info, label...)
	info = append(info, byte(len(context)))
	info = append(info, context...)
	return hkdf.Expand(h, secret, string(info), length)
}

// tls13Dir is the protection state of one direction.
type tls13Dir struct {
	aead   cipher.AEAD // expanded from key
	seq    uint64      // of the next record
	iv     [12]byte
	secret [48]byte // application traffic secret N; the suite's size bytes are used
	// key is the write key derived from secret (the suite's keyLen bytes),
	// kept so that expanding a dropped AEAD again costs no HKDF: 32 bytes
	// here against about 650 ns and 670 B of garbage per cold record.
	key [32]byte
}

// setSecret installs traffic secret sec (RFC 8446 7.3): key and IV, and
// sequence number 0. sec is copied; the caller zeroes its own copy.
func (d *tls13Dir) setSecret(su *tls13Suite, sec []byte) error {
	clear(d.secret[:])
	copy(d.secret[:], sec)
	key, err := hkdfExpandLabel(su.hash, sec, "key", nil, su.keyLen)
	if err != nil {
		return fmt.Errorf("server: tls 1.3 key: %w", err)
	}
	iv, err := hkdfExpandLabel(su.hash, sec, "iv", nil, len(d.iv))
	if err != nil {
		clear(key)
		return fmt.Errorf("server: tls 1.3 iv: %w", err)
	}
	copy(d.iv[:], iv)
	clear(iv)
	copy(d.key[:], key)
	clear(key)
	d.aead, err = su.aead(d.key[:su.keyLen])
	if err != nil {
		return fmt.Errorf("server: tls 1.3 aead: %w", err)
	}
	d.seq = 0
	return nil
}

// expand makes the AEAD from the key again if it was dropped (leanHot);
// the IV and sequence number were kept. The garbage it makes is the
// AEAD's own (crypto/aes and crypto/cipher cannot be re-keyed in place).
func (d *tls13Dir) expand(su *tls13Suite) error {
	if d.aead != nil {
		return nil
	}
	var err error
	d.aead, err = su.aead(d.key[:su.keyLen])
	if err != nil {
		return fmt.Errorf("server: tls 1.3 aead: %w", err)
	}
	return nil
}

// update moves to the next traffic secret (RFC 8446 7.2, KeyUpdate).
func (d *tls13Dir) update(su *tls13Suite) error {
	next, err := hkdfExpandLabel(su.hash, d.secret[:su.size], "traffic upd", nil, su.size)
	if err != nil {
		return fmt.Errorf("server: tls 1.3 key update: %w", err)
	}
	err = d.setSecret(su, next)
	clear(next)
	return err
}

// nonce writes the per-record nonce into n: the IV XOR the sequence
// number, left-padded (RFC 8446 5.3).
func (d *tls13Dir) nonce(n *[12]byte) {
	*n = d.iv
	var s [8]byte
	binary.BigEndian.PutUint64(s[:], d.seq)
	for i := range s {
		n[4+i] ^= s[i]
	}
}

// open decrypts the record with header hdr and protected body body (RFC
// 8446 5.2), appending its content to dst without the content type and
// padding, which it returns as typ. nonce is scratch. On error dst is
// returned unchanged.
func (d *tls13Dir) open(dst, hdr, body []byte, nonce *[12]byte) ([]byte, byte, *recordError) {
	start := len(dst)
	d.nonce(nonce)
	out, err := d.aead.Open(dst, nonce[:], body, hdr)
	if err != nil {
		return dst, 0, &recordError{alert: alertBadRecordMAC, what: "record failed authentication"}
	}
	d.seq++
	// Strip the zero padding; the last non-zero byte is the type.
	i := len(out) - 1
	for i >= start && out[i] == 0 {
		i--
	}
	if i < start {
		return dst, 0, &recordError{alert: alertUnexpectedMessage, what: "record without a content type"}
	}
	if i-start > maxPlaintext {
		return dst, 0, &recordError{alert: alertRecordOverflow, what: "plaintext too long"}
	}
	return out[:i], out[i], nil
}

// seal protects p (at most maxPlaintext bytes) of content type typ into
// one record, without padding, built in buf, which must hold
// 5+len(p)+1+aeadOverhead bytes; it returns the record. nonce is scratch.
func (d *tls13Dir) seal(buf []byte, typ byte, p []byte, nonce *[12]byte) []byte {
	rec := buf[:5]
	rec[0], rec[1], rec[2] = recordApplicationData, 3, 3
	binary.BigEndian.PutUint16(rec[3:], uint16(len(p)+1+aeadOverhead))
	rec = append(rec, p...)
	rec = append(rec, typ)
	d.nonce(nonce)
	out := d.aead.Seal(rec[:5], nonce[:], rec[5:], buf[:5])
	d.seq++
	return out
}

// wipe forgets the direction's keys.
func (d *tls13Dir) wipe() {
	clear(d.secret[:])
	clear(d.key[:])
	clear(d.iv[:])
	d.aead = nil
}

// trafficSecrets are the application traffic secrets the key-log writer
// took from a handshake, until the switch to the lean layer takes them.
type trafficSecrets struct {
	client, server [48]byte
	nc, ns         uint8 // lengths; 0 while not logged
}

func (k *trafficSecrets) wipe() {
	clear(k.client[:])
	clear(k.server[:])
	k.nc, k.ns = 0, 0
}

// keyLog is the KeyLogWriter of one connection's handshake. It is called
// on the handshake goroutine, before the loop switches layers.
type keyLog struct{ p *tlsPipe }

// Write parses one NSS key-log line, "LABEL <client random> <secret>\n",
// and keeps the client's and the server's first application traffic
// secrets; other lines (handshake secrets, the exporter secret) are
// ignored. The line is zeroed after parsing: crypto/tls builds it for this
// call only and drops it, and the hex would otherwise wait in freed memory
// for the garbage collector. That bends io.Writer's rule that Write does
// not modify its argument, on purpose and only here.
func (w keyLog) Write(line []byte) (int, error) {
	n := len(line)
	defer clear(line)
	if w.p == nil {
		return n, nil // the base configuration's marker (withKeyLog)
	}
	var dst *[48]byte
	var ln *uint8
	if w.p.secrets == nil {
		w.p.secrets = new(trafficSecrets)
	}
	k := w.p.secrets
	switch {
	case hasPrefixSpace(line, "CLIENT_TRAFFIC_SECRET_0"):
		dst, ln = &k.client, &k.nc
	case hasPrefixSpace(line, "SERVER_TRAFFIC_SECRET_0"):
		dst, ln = &k.server, &k.ns
	default:
		return n, nil
	}
	// The secret is the last field.
	end := len(line)
	for end > 0 && (line[end-1] == '\n' || line[end-1] == '\r') {
		end--
	}
	start := end
	for start > 0 && line[start-1] != ' ' {
		start--
	}
	hexSecret := line[start:end]
	if len(hexSecret)%2 != 0 || len(hexSecret)/2 > len(dst) {
		return n, nil // not a secret we can use: the switch will not happen
	}
	m, err := hex.Decode(dst[:], hexSecret)
	if err != nil {
		clear(dst[:])
		return n, nil
	}
	*ln = uint8(m)
	return n, nil
}

func hasPrefixSpace(b []byte, label string) bool {
	return len(b) > len(label) && string(b[:len(label)]) == label && b[len(label)] == ' '
}

// leanBinding is what SASL channel binding needs once the tls.Conn is
// gone: the tls-exporter value (RFC 9266), computed at the switch, and the
// certificate sent, for tls-server-end-point (RFC 5929).
type leanBinding struct {
	exporter [32]byte
	leaf     *x509.Certificate
}

// leanTLS is the transport of a TLS 1.3 connection after the handshake.
// Its AEADs are expanded while it is in use ("hot") and dropped after
// tls.idle_release of silence (leanHot), to be expanded again from the
// traffic secrets by the next record.
type leanTLS struct {
	rd, wr     tls13Dir
	prev, next *leanTLS     // in the loop's hot list
	used       int64        // loop time of the last record, Unix ns
	plain      []byte       // decrypted input the framer has not consumed
	pending    []byte       // ciphertext read by the handshake pipe but not by crypto/tls
	cb         *leanBinding // nil once released
	suite      *tls13Suite
	nonce      [12]byte // scratch: a stack array would escape through cipher.AEAD
	closed     bool     // we sent close_notify or a fatal alert: seal nothing more
}

var _ transport = (*leanTLS)(nil)

func (l *leanTLS) ready() bool            { return true }
func (l *leanTLS) secure() bool           { return true }
func (l *leanTLS) deadline() time.Time    { return time.Time{} }
func (l *leanTLS) expired(*Server, *conn) {}
func (l *leanTLS) dropped() closeReason   { return reasonDropped }

// binding serves tls-exporter from the value kept at the switch and
// tls-server-end-point from the certificate.
func (l *leanTLS) binding() func(cbType string) ([]byte, error) {
	cb := l.cb
	if cb == nil {
		return nil
	}
	return func(cbType string) ([]byte, error) {
		if cbType == sasl.BindingTLSExporter {
			return append([]byte(nil), cb.exporter[:]...), nil
		}
		return sasl.TLSBinding(nil, cb.leaf)(cbType)
	}
}

// shut sends close_notify.
func (l *leanTLS) shut(c *conn) {
	if !l.closed {
		l.alert(c, alertCloseNotify)
	}
}

// release forgets keys and buffers.
func (l *leanTLS) release(c *conn) {
	c.loop.hot.remove(l)
	l.closed = true
	l.rd.wipe()
	l.wr.wipe()
	l.plain, l.pending, l.cb = nil, nil, nil
}

// write seals b into records of at most maxPlaintext bytes.
func (l *leanTLS) write(c *conn, b []byte) {
	if l.wr.aead == nil && len(b) > 0 && !l.closed {
		c.loop.srv.stats.tlsRewarmed.Add(1)
	}
	for len(b) > 0 && !l.closed {
		n := min(len(b), maxPlaintext)
		l.seal(c, recordApplicationData, b[:n])
		b = b[n:]
	}
	if !l.closed {
		c.loop.hot.touch(l, c.loop.now.UnixNano())
	}
}

// seal writes one record of content type typ carrying p (at most
// maxPlaintext bytes), without padding, into gnet's outbound buffer.
func (l *leanTLS) seal(c *conn, typ byte, p []byte) {
	if l.wr.expand(l.suite) != nil || l.wr.seq == math.MaxUint64 {
		l.closed = true
		return
	}
	_, _ = c.gc.Write(l.wr.seal(c.loop.tlsScratch(), typ, p, &l.nonce))
	if typ == recordApplicationData && l.wr.seq >= c.loop.srv.conf().TLS.KeyUpdateRecords {
		c.loop.srv.stats.tlsKeyUpdates.Add(1)
		l.sendKeyUpdate(c, false)
	}
}

// sendKeyUpdate sends a KeyUpdate under the current key and moves to the
// next one (RFC 8446 4.6.3).
func (l *leanTLS) sendKeyUpdate(c *conn, request bool) {
	msg := [5]byte{handshakeKeyUpdate, 0, 0, 1, 0}
	if request {
		msg[4] = 1
	}
	l.seal(c, recordHandshake, msg[:])
	if err := l.wr.update(l.suite); err != nil {
		l.wr.wipe()
		l.closed = true
	}
}

// alert sends alert desc: close_notify as a warning, anything else fatal.
// Nothing is sealed after it.
func (l *leanTLS) alert(c *conn, desc byte) {
	level := byte(2)
	if desc == alertCloseNotify {
		level = 1
	}
	msg := [2]byte{level, desc}
	l.seal(c, recordAlert, msg[:])
	l.closed = true
}

// recordError says why the lean layer closes a connection.
type recordError struct {
	alert byte   // to send; 0 with peer: none
	peer  bool   // the peer sent an alert (desc in alert)
	what  string // for the debug log
}

// input opens the records gnet holds and frames the plaintext.
func (l *leanTLS) input(s *Server, c *conn) {
	buf, _ := c.gc.Peek(-1)
	fromPending := false
	if l.pending != nil {
		l.pending = append(l.pending, buf...)
		_, _ = c.gc.Discard(len(buf))
		buf, fromPending = l.pending, true
	}
	cold := l.rd.aead == nil
	off, rerr, eof := l.open(c, buf)
	if off > 0 {
		c.loop.hot.touch(l, c.loop.now.UnixNano())
	}
	if cold && l.rd.aead != nil {
		s.stats.tlsRewarmed.Add(1)
	}
	if fromPending {
		if rest := l.pending[off:]; len(rest) > 0 {
			l.pending = append([]byte(nil), rest...)
		} else {
			l.pending = nil
		}
	} else if off > 0 {
		_, _ = c.gc.Discard(off)
	}
	if l.cb != nil && c.phase >= phaseAuthHeader {
		l.cb = nil // SASL is over: channel binding is needed no more
	}
	if len(l.plain) > 0 {
		n := s.frame(c, l.plain)
		if c.has(flagClosed) {
			return
		}
		switch rest := l.plain[n:]; {
		case len(rest) == 0:
			l.plain = nil // an idle connection keeps no buffer
		case cap(l.plain) > 2*len(rest)+4096:
			l.plain = append([]byte(nil), rest...)
		default:
			l.plain = append(l.plain[:0], rest...)
		}
	}
	switch {
	case eof:
		s.shut(c, reasonDropped) // close_notify: answered with ours in shut
	case rerr != nil:
		s.stats.tlsRecordErrors.Add(1)
		if ce := s.log.Check(zap.DebugLevel, "tls record layer closed the connection"); ce != nil {
			f := []zap.Field{zap.String("detail", rerr.what), zap.Stringer("ip", c.ip)}
			if rerr.peer {
				f = append(f, zap.String("alert", tls.AlertError(rerr.alert).Error()))
			}
			ce.Write(f...)
		}
		if !rerr.peer {
			l.alert(c, rerr.alert)
		}
		l.closed = true // a peer's fatal alert is not answered
		s.shut(c, reasonError)
	}
}

// open decrypts the complete records at the start of buf into l.plain. It
// returns how many bytes it consumed, and stops at the first error or at
// the peer's close_notify (eof).
func (l *leanTLS) open(c *conn, buf []byte) (off int, rerr *recordError, eof bool) {
	for len(buf)-off >= 5 {
		hdr := buf[off : off+5]
		n := int(binary.BigEndian.Uint16(hdr[3:5]))
		switch {
		case hdr[0] != recordApplicationData:
			return off, &recordError{alert: alertUnexpectedMessage, what: "unprotected record after the handshake"}, false
		case n > maxCiphertext:
			return off, &recordError{alert: alertRecordOverflow, what: "record too long"}, false
		case n < 1+aeadOverhead:
			return off, &recordError{alert: alertBadRecordMAC, what: "record too short"}, false
		}
		if len(buf)-off < 5+n {
			break
		}
		if err := l.rd.expand(l.suite); err != nil {
			return off, &recordError{alert: alertCloseNotify, what: err.Error()}, false
		}
		if l.rd.seq == math.MaxUint64 {
			return off, &recordError{alert: alertCloseNotify, what: "sequence numbers exhausted"}, false
		}
		start := len(l.plain)
		out, typ, rerr := l.rd.open(l.plain, hdr, buf[off+5:off+5+n], &l.nonce)
		if rerr != nil {
			return off, rerr, false
		}
		off += 5 + n
		if typ == recordApplicationData {
			l.plain = out
			continue
		}
		body := out[start:]
		l.plain = out[:start]
		switch typ {
		case recordAlert:
			if len(body) != 2 {
				return off, &recordError{alert: alertDecodeError, what: "malformed alert"}, false
			}
			switch body[1] {
			case alertCloseNotify:
				return off, nil, true
			case alertUserCanceled:
				continue // a close_notify follows (RFC 8446 6.1)
			}
			return off, &recordError{alert: body[1], peer: true, what: "alert from the client"}, false
		case recordHandshake:
			if rerr := l.handshake(c, body); rerr != nil {
				return off, rerr, false
			}
		default:
			return off, &recordError{alert: alertUnexpectedMessage, what: "unexpected record type"}, false
		}
	}
	return off, nil, false
}

// handshake handles a post-handshake message: only KeyUpdate, alone in
// its record (a key change must fall on a record boundary, RFC 8446 5.1).
// Post-handshake authentication is never requested, and a client sends no
// other post-handshake message.
func (l *leanTLS) handshake(c *conn, body []byte) *recordError {
	if len(body) == 0 || body[0] != handshakeKeyUpdate {
		return &recordError{alert: alertUnexpectedMessage, what: "unexpected handshake message"}
	}
	if len(body) != 5 || body[1] != 0 || body[2] != 0 || body[3] != 1 || body[4] > 1 {
		return &recordError{alert: alertDecodeError, what: "malformed key update"}
	}
	if err := l.rd.update(l.suite); err != nil {
		return &recordError{alert: alertUnexpectedMessage, what: err.Error()}
	}
	if body[4] == 1 && !l.closed {
		// update_requested: ours goes before any more application data.
		l.sendKeyUpdate(c, false)
	}
	return nil
}

// errNotLean says why a handshake stays on the stock path.
var errNotLean = errors.New("server: connection not eligible for the lean record layer")

// newLeanTLS builds the lean layer from an established handshake on t,
// whose state is cs: TLS 1.3 with a suite we implement and both secrets
// logged. It takes the secrets (zeroing the pipe's copy), the
// channel-binding values, the number of records crypto/tls sealed under
// the server's application key (its session tickets) and the ciphertext
// the pipe holds beyond the client's Finished.
func newLeanTLS(t *tlsConn, cs *tls.ConnectionState) (*leanTLS, error) {
	p := &t.pipe
	k := p.secrets
	if k == nil {
		return nil, errNotLean
	}
	defer func() { k.wipe(); p.secrets = nil }()
	su := suiteByID(cs.CipherSuite)
	if cs.Version != tls.VersionTLS13 || su == nil || int(k.nc) != su.size || int(k.ns) != su.size {
		return nil, errNotLean
	}
	l := &leanTLS{suite: su, cb: &leanBinding{leaf: p.leaf}}
	exp, err := sasl.TLSBinding(cs, p.leaf)(sasl.BindingTLSExporter)
	if err != nil || len(exp) != len(l.cb.exporter) {
		return nil, fmt.Errorf("server: tls-exporter: %w", err)
	}
	copy(l.cb.exporter[:], exp)
	clear(exp)
	if err := l.rd.setSecret(su, k.client[:su.size]); err != nil {
		return nil, err
	}
	if err := l.wr.setSecret(su, k.server[:su.size]); err != nil {
		l.rd.wipe()
		return nil, err
	}
	// crypto/tls sealed its session tickets, one record each, under the
	// server's application key already (tickets.go): our first record
	// follows them.
	l.wr.seq = uint64(p.tickets)
	return l, nil
}

// leanHot is a loop's list of the lean connections that hold expanded
// AEADs (about 1.6 KB a connection for AES-GCM both ways), least recently
// used first. Each tick, sweep drops the AEADs of those silent for
// tls.idle_release: the cost is proportional to the connections that went
// cold, not to the connections that exist. Only the loop touches it.
type leanHot struct{ head, tail *leanTLS }

// touch marks l used at now (Unix ns) and moves it to the back.
func (h *leanHot) touch(l *leanTLS, now int64) {
	l.used = now
	if h.tail == l {
		return
	}
	h.remove(l)
	l.prev = h.tail
	if h.tail != nil {
		h.tail.next = l
	} else {
		h.head = l
	}
	h.tail = l
}

// remove takes l out of the list if it is in it.
func (h *leanHot) remove(l *leanTLS) {
	if l.prev == nil && h.head != l {
		return
	}
	if l.prev != nil {
		l.prev.next = l.next
	} else {
		h.head = l.next
	}
	if l.next != nil {
		l.next.prev = l.prev
	} else {
		h.tail = l.prev
	}
	l.prev, l.next = nil, nil
}

// sweep drops the AEADs of connections unused for idle (none when idle is
// 0) as of now, and returns how many connections went cold.
func (h *leanHot) sweep(now int64, idle time.Duration) (n int) {
	if idle <= 0 {
		return 0
	}
	for l := h.head; l != nil && now-l.used >= int64(idle); l = h.head {
		h.remove(l)
		l.rd.aead, l.wr.aead = nil, nil
		n++
	}
	return n
}
