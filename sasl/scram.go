package sasl

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"
)

// serverNonceLen is the number of random bytes in the server's part of the
// nonce. 18 bytes encode to 24 base64 characters without padding, all
// printable and none a ','.
const serverNonceLen = 18

// serverNonce returns the server's part of the SCRAM nonce. Tests replace it
// to replay the RFC examples.
var serverNonce = func() string {
	var b [serverNonceLen]byte
	rand.Read(b[:])
	return base64.StdEncoding.EncodeToString(b[:])
}

// scramServer is the server side of SCRAM (RFC 5802) with one hash.
//
// To stay small between messages it keeps one buffer, laid out as
//
//	gs2-header | client-first-message-bare | ',' | server-first-message | StoredKey | ServerKey
//
// plus offsets into it: everything the final check needs and nothing else.
type scramServer struct {
	hash           Hash
	plus           bool // mechanism is -PLUS: the client must bind
	plusAdvertised bool // the stream offered -PLUS: flag 'y' is a downgrade
	fake           bool // unknown account: never succeed
	stage          uint8

	binding func(cbType string) ([]byte, error)

	// offeredMechs and offeredCB are what the stream advertised, for
	// XEP-0474's h= attribute; nil offeredMechs omits it.
	offeredMechs, offeredCB []string

	buf       []byte
	bareAt    uint16 // end of the gs2 header, start of client-first-message-bare
	userAt    uint16 // escaped username inside the bare message
	userEnd   uint16
	cnonceAt  uint16 // client nonce inside the bare message
	cnonceEnd uint16
	firstAt   uint16 // start of server-first-message
	nonceEnd  uint16 // end of the combined nonce inside server-first-message
	keysAt    uint16 // end of server-first-message, start of StoredKey
}

func (s *scramServer) Mechanism() string {
	if s.plus {
		return s.hash.scramName() + "-PLUS"
	}
	return s.hash.scramName()
}

// fail ends the exchange and drops its state.
func (s *scramServer) fail(err error) error {
	s.stage = stageOver
	s.buf = nil
	return err
}

// checkMessage applies the checks common to both client messages: size,
// UTF-8 and no NUL (RFC 5802 value-char excludes it).
func checkMessage(msg []byte) error {
	switch {
	case len(msg) == 0:
		return fmt.Errorf("%w: empty SCRAM message", ErrMalformed)
	case len(msg) > maxMessage:
		return fmt.Errorf("%w: SCRAM message longer than %d bytes", ErrMalformed, maxMessage)
	case !utf8.Valid(msg):
		return fmt.Errorf("%w: SCRAM message is not UTF-8", ErrMalformed)
	case bytes.IndexByte(msg, 0) >= 0:
		return fmt.Errorf("%w: NUL in SCRAM message", ErrMalformed)
	}
	return nil
}

// Start parses client-first-message (RFC 5802 section 7):
//
//	gs2-header = gs2-cbind-flag "," [ authzid ] ","
//	client-first-message-bare = [reserved-mext ","] username "," nonce ["," extensions]
func (s *scramServer) Start(initial []byte) (username, authzid string, err error) {
	if s.stage != stageNew {
		return "", "", ErrState
	}
	if err := checkMessage(initial); err != nil {
		return "", "", s.fail(err)
	}
	msg := initial

	// gs2-cbind-flag.
	var flag byte
	var cbName []byte
	switch {
	case len(msg) >= 2 && (msg[0] == 'n' || msg[0] == 'y') && msg[1] == ',':
		flag, msg = msg[0], msg[2:]
	case bytes.HasPrefix(msg, []byte("p=")):
		name, rest, ok := bytes.Cut(msg[2:], []byte{','})
		if !ok || !validCBName(name) {
			return "", "", s.fail(fmt.Errorf("%w: bad channel-binding name", ErrMalformed))
		}
		flag, cbName, msg = 'p', name, rest
	default:
		return "", "", s.fail(fmt.Errorf("%w: bad gs2 channel-binding flag", ErrMalformed))
	}

	// [authzid] ",".
	if bytes.HasPrefix(msg, []byte("a=")) {
		name, rest, ok := bytes.Cut(msg[2:], []byte{','})
		if !ok {
			return "", "", s.fail(fmt.Errorf("%w: gs2 header not terminated", ErrMalformed))
		}
		if authzid, err = unescapeSaslname(name); err != nil {
			return "", "", s.fail(fmt.Errorf("%w: authzid: %w", ErrMalformed, err))
		}
		msg = rest
	} else if len(msg) > 0 && msg[0] == ',' {
		msg = msg[1:]
	} else {
		return "", "", s.fail(fmt.Errorf("%w: bad gs2 header", ErrMalformed))
	}
	bareAt := len(initial) - len(msg)

	// client-first-message-bare.
	f, rest := nextAttr(msg)
	if f == 'm' {
		return "", "", s.fail(ErrMandatoryExtension)
	}
	if f != 'n' {
		return "", "", s.fail(fmt.Errorf("%w: client-first must start with n=", ErrMalformed))
	}
	user, rest, more := bytes.Cut(rest, []byte{','})
	if username, err = unescapeSaslname(user); err != nil {
		return "", "", s.fail(fmt.Errorf("%w: username: %w", ErrMalformed, err))
	}
	if f, rest = nextAttr(rest); !more || f != 'r' {
		return "", "", s.fail(fmt.Errorf("%w: r= must follow n=", ErrMalformed))
	}
	cnonce, rest, more := bytes.Cut(rest, []byte{','})
	if !validNonce(cnonce) {
		return "", "", s.fail(fmt.Errorf("%w: client nonce must be printable and not empty", ErrMalformed))
	}
	if err := checkExtensions(rest, more, "nrm"); err != nil {
		return "", "", s.fail(err)
	}
	userAt := bareAt + len("n=")
	cnonceAt := userAt + len(user) + len(",r=")

	// Semantic checks, after the syntax is known to be sound.
	switch {
	case s.plus && flag != 'p':
		return "", "", s.fail(fmt.Errorf("%w: %s requires flag 'p'", ErrBindingFlag, s.Mechanism()))
	case !s.plus && flag == 'p':
		return "", "", s.fail(fmt.Errorf("%w: flag 'p' with %s", ErrBindingFlag, s.Mechanism()))
	case flag == 'y' && s.plusAdvertised:
		return "", "", s.fail(ErrDowngrade)
	case flag == 'p' && string(cbName) != BindingTLSExporter && string(cbName) != BindingTLSServerEndPoint:
		return "", "", s.fail(fmt.Errorf("%w: %q", ErrBindingType, cbName))
	}

	// Room for the server-first message and both keys, so Respond does not
	// reallocate in the usual case.
	s.buf = make([]byte, len(initial), len(initial)+160+2*s.hash.Size())
	copy(s.buf, initial)
	s.bareAt = uint16(bareAt)
	s.userAt, s.userEnd = uint16(userAt), uint16(userAt+len(user))
	s.cnonceAt, s.cnonceEnd = uint16(cnonceAt), uint16(cnonceAt+len(cnonce))
	s.stage = stageStarted
	return username, authzid, nil
}

// Respond sends server-first-message:
//
//	server-first-message = nonce "," salt "," iteration-count
func (s *scramServer) Respond(creds *Credentials) (challenge []byte, done bool, err error) {
	if s.stage != stageStarted {
		return nil, false, s.fail(ErrState)
	}
	var cred *Credential
	if creds != nil {
		cred = creds.For(s.hash)
	}
	if cred == nil || cred.IsZero() {
		fc := fakeCredential(s.hash, string(s.buf[s.userAt:s.userEnd]))
		cred, s.fake = &fc, true
	}
	if err := cred.check(s.hash); err != nil {
		return nil, false, s.fail(err)
	}

	b := s.buf
	b = append(b, ',')
	firstAt := len(b)
	b = append(b, "r="...)
	b = append(b, s.buf[s.cnonceAt:s.cnonceEnd]...)
	b = append(b, serverNonce()...)
	nonceEnd := len(b)
	b = append(b, ",s="...)
	b = base64.StdEncoding.AppendEncode(b, cred.Salt)
	b = append(b, ",i="...)
	b = strconv.AppendInt(b, int64(cred.Iterations), 10)
	if s.offeredMechs != nil {
		b = append(b, ",h="...)
		b = base64.StdEncoding.AppendEncode(b, DowngradeHash(s.hash, s.offeredMechs, s.offeredCB))
	}
	keysAt := len(b)
	b = append(b, cred.StoredKey...)
	b = append(b, cred.ServerKey...)
	if len(b) > 1<<16-1 {
		return nil, false, s.fail(fmt.Errorf("%w: salt too long", ErrInvalidCredential))
	}
	s.buf = b
	s.firstAt, s.nonceEnd, s.keysAt = uint16(firstAt), uint16(nonceEnd), uint16(keysAt)
	s.stage = stageFinal
	return b[firstAt:keysAt:keysAt], false, nil
}

// Next checks client-final-message and returns server-final-message:
//
//	client-final-message = channel-binding "," nonce ["," extensions] "," proof
func (s *scramServer) Next(response []byte) (challenge []byte, done bool, err error) {
	if s.stage != stageFinal {
		return nil, false, s.fail(ErrState)
	}
	if err := checkMessage(response); err != nil {
		return nil, false, s.fail(err)
	}
	size := s.hash.Size()

	f, rest := nextAttr(response)
	if f != 'c' {
		return nil, false, s.fail(fmt.Errorf("%w: client-final must start with c=", ErrMalformed))
	}
	cb64, rest, more := bytes.Cut(rest, []byte{','})
	if f, rest = nextAttr(rest); !more || f != 'r' {
		return nil, false, s.fail(fmt.Errorf("%w: r= must follow c=", ErrMalformed))
	}
	nonce, rest, more := bytes.Cut(rest, []byte{','})
	if !more {
		return nil, false, s.fail(fmt.Errorf("%w: missing p=", ErrMalformed))
	}
	// The proof is the last attribute; extensions sit between r= and p=.
	ext, last := []byte(nil), rest
	i := bytes.LastIndexByte(rest, ',')
	if i >= 0 {
		ext, last = rest[:i], rest[i+1:]
	}
	if !bytes.HasPrefix(last, []byte("p=")) {
		return nil, false, s.fail(fmt.Errorf("%w: client-final must end with p=", ErrMalformed))
	}
	if err := checkExtensions(ext, i >= 0, "crpm"); err != nil {
		return nil, false, s.fail(err)
	}
	withoutProof := response[:len(response)-len(last)-1]

	if !bytes.Equal(nonce, s.buf[s.firstAt+2:s.nonceEnd]) {
		return nil, false, s.fail(fmt.Errorf("%w: nonce does not match", ErrMalformed))
	}
	cb, err := decode64(cb64, 0)
	if err != nil {
		return nil, false, s.fail(err)
	}
	proof, err := decode64(last[2:], size)
	if err != nil {
		return nil, false, s.fail(err)
	}
	if len(proof) != size {
		return nil, false, s.fail(fmt.Errorf("%w: proof must be %d bytes", ErrMalformed, size))
	}

	if err := s.checkBinding(cb); err != nil {
		return nil, false, s.fail(err)
	}

	storedKey := s.buf[s.keysAt : int(s.keysAt)+size]
	serverKey := s.buf[int(s.keysAt)+size : int(s.keysAt)+2*size]
	bare := s.buf[s.bareAt : s.firstAt-1]
	serverFirst := s.buf[s.firstAt:s.keysAt]

	// AuthMessage = client-first-message-bare "," server-first-message ","
	//               client-final-message-without-proof
	mac := hmac.New(s.hash.new, storedKey)
	writeAuthMessage(mac, bare, serverFirst, withoutProof)
	var sum [64]byte
	sig := mac.Sum(sum[:0])
	// ClientKey = ClientProof XOR ClientSignature; StoredKey must be H(ClientKey).
	clientKey := proof
	subtle.XORBytes(clientKey, clientKey, sig)
	d := s.hash.new()
	d.Write(clientKey)
	got := d.Sum(sum[:0])
	ok := subtle.ConstantTimeCompare(got, storedKey) == 1
	if !ok || s.fake {
		return nil, false, s.fail(ErrNotAuthorized)
	}

	mac = hmac.New(s.hash.new, serverKey)
	writeAuthMessage(mac, bare, serverFirst, withoutProof)
	sig = mac.Sum(sum[:0])
	final := make([]byte, 0, 2+base64.StdEncoding.EncodedLen(size))
	final = append(final, "v="...)
	final = base64.StdEncoding.AppendEncode(final, sig)
	s.stage = stageOver
	s.buf = nil
	return final, true, nil
}

// XEP-0474 delimiters: ASCII record and unit separators, which XML (and so
// no advertised name) can hold.
const (
	ssdpItemSep = 0x1e
	ssdpListSep = 0x1f
)

// DowngradeHash returns XEP-0474's downgrade-protection hash (SSDP) of an
// offer with hash h: the mechanisms sorted byte-wise and joined by %x1E,
// then, if cbTypes is not empty (XEP-0440 was advertised), %x1F and the
// channel-binding types sorted and joined the same way. SCRAM sends it
// base64-encoded as h= in server-first-message when
// [Options.OfferedMechanisms] is set; a client computes it over what it
// received and compares. The inputs are not modified.
func DowngradeHash(h Hash, mechanisms, cbTypes []string) []byte {
	d := h.new()
	writeSorted := func(list []string) {
		sorted := slices.Clone(list)
		slices.Sort(sorted)
		for i, v := range sorted {
			if i > 0 {
				d.Write([]byte{ssdpItemSep})
			}
			d.Write([]byte(v))
		}
	}
	writeSorted(mechanisms)
	if len(cbTypes) > 0 {
		d.Write([]byte{ssdpListSep})
		writeSorted(cbTypes)
	}
	return d.Sum(nil)
}

// checkBinding compares the decoded c= attribute with the gs2 header and,
// for flag 'p', this connection's channel-binding data.
func (s *scramServer) checkBinding(cb []byte) error {
	header := s.buf[:s.bareAt]
	if !bytes.HasPrefix(cb, header) {
		return fmt.Errorf("%w: gs2 header differs from client-first", ErrChannelBinding)
	}
	data := cb[len(header):]
	if header[0] != 'p' {
		if len(data) != 0 {
			return fmt.Errorf("%w: unexpected channel-binding data", ErrChannelBinding)
		}
		return nil
	}
	name, _, _ := bytes.Cut(header[2:], []byte{','})
	want, err := s.binding(string(name))
	if err != nil {
		return fmt.Errorf("%w: %s: %w", ErrBindingType, name, err)
	}
	if len(want) == 0 {
		return fmt.Errorf("%w: %s: no data on this connection", ErrBindingType, name)
	}
	if subtle.ConstantTimeCompare(data, want) != 1 {
		return fmt.Errorf("%w: %s data differs", ErrChannelBinding, name)
	}
	return nil
}

// writeAuthMessage writes AuthMessage to w without building it.
func writeAuthMessage(w interface{ Write([]byte) (int, error) }, bare, serverFirst, withoutProof []byte) {
	w.Write(bare)
	w.Write([]byte{','})
	w.Write(serverFirst)
	w.Write([]byte{','})
	w.Write(withoutProof)
}

// decode64 decodes standard padded base64. A non-zero max bounds the
// decoded length so an oversized proof is refused before decoding.
func decode64(src []byte, max int) ([]byte, error) {
	enc := base64.StdEncoding.Strict()
	if max > 0 && enc.DecodedLen(len(src)) > max+2 {
		return nil, fmt.Errorf("%w: proof must be %d bytes", ErrMalformed, max)
	}
	dst := make([]byte, enc.DecodedLen(len(src)))
	n, err := enc.Decode(dst, src)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrIncorrectEncoding, err)
	}
	return dst[:n], nil
}

// nextAttr returns the attribute letter at the start of msg and the rest
// after its '=', or 0 if msg does not start with ALPHA "=".
func nextAttr(msg []byte) (byte, []byte) {
	if len(msg) < 2 || msg[1] != '=' || !isAlpha(msg[0]) {
		return 0, msg
	}
	return msg[0], msg[2:]
}

// checkExtensions checks optional extensions: each must be ALPHA "="
// 1*value-char and must not reuse a letter in known (a repeated or
// misplaced attribute). present reports that a ',' announced them, so an
// empty ext is a trailing ','. Unknown optional extensions are ignored, as
// RFC 5802 section 5 requires.
func checkExtensions(ext []byte, present bool, known string) error {
	if !present {
		return nil
	}
	for {
		f, rest := nextAttr(ext)
		if f == 0 {
			return fmt.Errorf("%w: bad attribute", ErrMalformed)
		}
		if strings.IndexByte(known, f) >= 0 {
			return fmt.Errorf("%w: attribute %c repeated or out of order", ErrMalformed, f)
		}
		v, next, more := bytes.Cut(rest, []byte{','})
		if len(v) == 0 {
			return fmt.Errorf("%w: empty attribute %c", ErrMalformed, f)
		}
		if !more {
			return nil
		}
		ext = next
	}
}

// unescapeSaslname decodes RFC 5802 saslname: 1*(value-safe-char / "=2C" /
// "=3D"). Any other '=' is an error.
func unescapeSaslname(b []byte) (string, error) {
	if len(b) == 0 {
		return "", fmt.Errorf("empty name")
	}
	if bytes.IndexByte(b, '=') < 0 {
		return string(b), nil
	}
	out := make([]byte, 0, len(b))
	for i := 0; i < len(b); i++ {
		c := b[i]
		if c != '=' {
			out = append(out, c)
			continue
		}
		switch {
		case i+2 < len(b) && b[i+1] == '2' && b[i+2] == 'C':
			out = append(out, ',')
		case i+2 < len(b) && b[i+1] == '3' && b[i+2] == 'D':
			out = append(out, '=')
		default:
			return "", fmt.Errorf("bad escape at byte %d", i)
		}
		i += 2
	}
	return string(out), nil
}

// validNonce reports whether b is a non-empty RFC 5802 c-nonce: printable
// ASCII (%x21-7E) except ','.
func validNonce(b []byte) bool {
	if len(b) == 0 {
		return false
	}
	for _, c := range b {
		if c < 0x21 || c > 0x7e || c == ',' {
			return false
		}
	}
	return true
}

// validCBName reports whether b is an RFC 5802 cb-name: 1*(ALPHA / DIGIT /
// "." / "-").
func validCBName(b []byte) bool {
	if len(b) == 0 {
		return false
	}
	for _, c := range b {
		if !isAlpha(c) && (c < '0' || c > '9') && c != '.' && c != '-' {
			return false
		}
	}
	return true
}

func isAlpha(c byte) bool { return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' }
