package sasl

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"unicode/utf8"
)

// Hashed Token mechanisms (draft-schmaus-kitten-sasl-ht-09, the version
// XEP-0484 FAST refers to), as advertised inside XEP-0484's <fast/> and sent
// in a SASL2 <authenticate/>.
//
// HT-SHA-256-UNIQ (tls-unique) is deliberately absent: tls-unique is not
// defined for TLS 1.3 (RFC 9266 section 1; crypto/tls leaves
// ConnectionState.TLSUnique empty there), and on TLS 1.2 without Extended
// Master Secret it is open to the triple-handshake attack. tls-exporter
// (-EXPR) replaces it.
const (
	// HTSHA256None binds to nothing: cb-data is empty.
	HTSHA256None = "HT-SHA-256-NONE"
	// HTSHA256Endp binds to tls-server-end-point (RFC 5929).
	HTSHA256Endp = "HT-SHA-256-ENDP"
	// HTSHA256Expr binds to tls-exporter (RFC 9266).
	HTSHA256Expr = "HT-SHA-256-EXPR"
)

// htMinCandidates is the fewest HMACs Verify computes, padding with a dummy
// key: an account with no token (or no such account) then costs what an
// account with one or two costs, so timing does not tell them apart.
const htMinCandidates = 2

// htDummyKey pads Verify's candidates. It is no token anyone holds: tokens
// are never empty.
var htDummyKey = []byte{}

// HTMechanisms returns the HT mechanisms, channel-bound first, for the
// <mechanism/> children of XEP-0484's <fast/>. They are all offered only
// over TLS (the draft forbids HT without it); -ENDP fails at Verify with
// ErrBindingType when the certificate's signature has no hash (Ed25519).
// The caller owns the returned slice.
func HTMechanisms() []string {
	return []string{HTSHA256Expr, HTSHA256Endp, HTSHA256None}
}

// IsHT reports whether mech is one of the HT mechanisms [NewHT] accepts.
func IsHT(mech string) bool {
	return mech == HTSHA256Expr || mech == HTSHA256Endp || mech == HTSHA256None
}

// HT is the server side of one Hashed Token exchange: one message from the
// client, one answer, no challenge. It is not a [Server]: the client proves
// possession of a token, not a password, and the server checks it against
// the few tokens the account holds, so the look-up returns a set of tokens,
// not [Credentials]. Package fast supplies the tokens.
//
// The exchange, in the event-loop model of this package:
//
//	ht, err := sasl.NewHT(opts)        // loop
//	user, err := ht.Start(initial)     // loop: parse, channel-binding data
//	i, extra, err := ht.Verify(tokens) // worker, after the token look-up
//
// extra is the responder message for SASL2's <additional-data/>; i says
// which token matched. The initiator message is
//
//	authcid NUL HMAC-SHA-256(token, "Initiator" || cb-data)
//
// and the responder message HMAC-SHA-256(token, "Responder" || cb-data),
// where token is the UTF-8 octets of the token string the server issued and
// cb-data is empty for -NONE. An HT carries no authorization identity.
//
// An HT is not safe for concurrent use, but may move between goroutines
// between calls. Calls must come in order, each once; after an error or
// Verify every call returns ErrState.
type HT struct {
	mech    string
	cbType  string // "" for -NONE
	binding func(cbType string) ([]byte, error)
	stage   uint8

	cb    []byte   // channel-binding data, taken in Start
	proof [32]byte // the client's HMAC
}

// NewHT returns the server side of one HT exchange with opts.Mechanism,
// which must be one of [HTMechanisms]. opts.Binding must be set (the
// connection has TLS) for every HT mechanism, -NONE included, since the
// draft allows HT only over TLS; otherwise, and for any other name, the
// error wraps ErrInvalidMechanism. opts.PlusAdvertised and the
// downgrade-protection fields are not used. Binding is called once, from
// Start.
func NewHT(opts Options) (*HT, error) {
	var cbType string
	switch opts.Mechanism {
	case HTSHA256None:
	case HTSHA256Endp:
		cbType = BindingTLSServerEndPoint
	case HTSHA256Expr:
		cbType = BindingTLSExporter
	default:
		return nil, fmt.Errorf("%w: %q", ErrInvalidMechanism, opts.Mechanism)
	}
	if opts.Binding == nil {
		return nil, fmt.Errorf("%w: %s needs a TLS connection", ErrInvalidMechanism, opts.Mechanism)
	}
	return &HT{mech: opts.Mechanism, cbType: cbType, binding: opts.Binding}, nil
}

// Mechanism returns the mechanism name.
func (s *HT) Mechanism() string { return s.mech }

// fail ends the exchange.
func (s *HT) fail(err error) error {
	s.stage = stageOver
	s.cb = nil
	return err
}

// Start parses the initiator message (already base64-decoded) and returns
// the authentication identity. It also takes the connection's
// channel-binding data, so that Verify needs nothing of the connection and
// may run on a worker; an unavailable binding fails here with
// ErrBindingType, before any token is looked up. It does no cryptography.
func (s *HT) Start(initial []byte) (username string, err error) {
	if s.stage != stageNew {
		return "", s.fail(ErrState)
	}
	if len(initial) > maxMessage {
		return "", s.fail(fmt.Errorf("%w: HT message longer than %d bytes", ErrMalformed, maxMessage))
	}
	user, proof, ok := bytes.Cut(initial, []byte{0})
	switch {
	case !ok:
		return "", s.fail(fmt.Errorf("%w: HT message has no NUL", ErrMalformed))
	case len(user) == 0:
		return "", s.fail(fmt.Errorf("%w: empty HT authcid", ErrMalformed))
	case !utf8.Valid(user):
		return "", s.fail(fmt.Errorf("%w: HT authcid is not UTF-8", ErrMalformed))
	case len(proof) != sha256.Size:
		return "", s.fail(fmt.Errorf("%w: HT-SHA-256 hashed token must be %d bytes, got %d", ErrMalformed, sha256.Size, len(proof)))
	}
	if s.cbType != "" {
		cb, err := s.binding(s.cbType)
		if err != nil {
			return "", s.fail(fmt.Errorf("%w: %s: %w", ErrBindingType, s.cbType, err))
		}
		if len(cb) == 0 {
			return "", s.fail(fmt.Errorf("%w: %s: no data on this connection", ErrBindingType, s.cbType))
		}
		s.cb = bytes.Clone(cb)
	}
	copy(s.proof[:], proof)
	s.stage = stageStarted
	return string(user), nil
}

// Verify compares the client's hashed token with each of tokens, the UTF-8
// octets of the token strings the account may use with this mechanism
// (unexpired, issued for this mechanism: the caller filters). It returns
// the index of the matching token and the responder message for
// <additional-data/>, or ErrNotAuthorized when none matches (an unknown
// account passes no tokens and fails the same way). Every candidate is
// compared, in constant time, whatever matched before it. Verify costs one
// HMAC-SHA-256 per candidate (at least two) and one more on success.
func (s *HT) Verify(tokens [][]byte) (index int, additional []byte, err error) {
	if s.stage != stageStarted {
		return -1, nil, s.fail(ErrState)
	}
	index = -1
	var sum [sha256.Size]byte
	for i := 0; i < max(len(tokens), htMinCandidates); i++ {
		key := htDummyKey
		if i < len(tokens) {
			key = tokens[i]
		}
		mac := htMAC(key, "Initiator", s.cb, sum[:0])
		if subtle.ConstantTimeCompare(mac, s.proof[:]) == 1 && i < len(tokens) && len(key) > 0 {
			index = i
		}
	}
	if index < 0 {
		return -1, nil, s.fail(ErrNotAuthorized)
	}
	additional = htMAC(tokens[index], "Responder", s.cb, nil)
	s.stage = stageOver
	s.cb = nil
	return index, additional, nil
}

// htMAC appends HMAC-SHA-256(key, label || cb) to dst.
func htMAC(key []byte, label string, cb, dst []byte) []byte {
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(label))
	mac.Write(cb)
	return mac.Sum(dst)
}
