// Package sasl implements the server side of SASL (RFC 4422) for XMPP
// (RFC 6120 section 6): PLAIN (RFC 4616) and SCRAM (RFC 5802, RFC 7677)
// with SHA-1, SHA-256 and SHA-512, each with and without channel binding
// (-PLUS, with tls-exporter from RFC 9266 and tls-server-end-point from
// RFC 5929).
//
// The package is written for an event loop that must never block. The loop
// creates a [Server] with [NewServer] and parses the client's initial
// response with Start, which is cheap. A worker then looks the account up
// and calls Respond, which for PLAIN runs PBKDF2. Later client responses go
// to Next on the loop: SCRAM's final check is a handful of HMACs.
//
// For XEP-0484 FAST, [HT] is the server side of the HT-SHA-256 token
// mechanisms (draft-schmaus-kitten-sasl-ht): one message each way, checked
// against the account's tokens instead of [Credentials]. SCRAM can carry
// XEP-0474's downgrade-protection attribute ([Options.OfferedMechanisms]),
// and [ScramUpgrade] is XEP-0480's SCRAM upgrade task.
//
// Accounts are stored as [Credentials] (salt, iteration count, StoredKey and
// ServerKey per hash, RFC 5802 section 3), never as passwords. Unknown
// accounts run the same exchange with a fake salt and fail where a wrong
// password fails, so the exchange does not reveal which accounts exist.
//
// Base64 framing of XMPP's <auth/>, <response/>, <challenge/> and
// <success/> belongs to the caller, as do authorization decisions (whether
// the authzid may be used) and policy (PLAIN only over TLS).
package sasl

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
)

// Mechanism names, as advertised in <mechanisms/> and sent in <auth/>.
const (
	Plain           = "PLAIN"
	ScramSHA1       = "SCRAM-SHA-1"
	ScramSHA1Plus   = "SCRAM-SHA-1-PLUS"
	ScramSHA256     = "SCRAM-SHA-256"
	ScramSHA256Plus = "SCRAM-SHA-256-PLUS"
	ScramSHA512     = "SCRAM-SHA-512"
	ScramSHA512Plus = "SCRAM-SHA-512-PLUS"
)

// Channel-binding types a [Options.Binding] callback is asked for.
const (
	// BindingTLSExporter is RFC 9266's tls-exporter: 32 bytes of TLS
	// keying material exported with the label "EXPORTER-Channel-Binding"
	// and an empty context.
	BindingTLSExporter = "tls-exporter"
	// BindingTLSServerEndPoint is RFC 5929's tls-server-end-point: a hash of
	// the server's certificate.
	BindingTLSServerEndPoint = "tls-server-end-point"
)

// Options configures one SASL exchange. The zero value is not usable:
// Mechanism must name a supported mechanism.
type Options struct {
	// Mechanism is the mechanism the client chose, one of the names above.
	Mechanism string

	// Binding returns the channel-binding data of this connection for a
	// channel-binding type (BindingTLSExporter or
	// BindingTLSServerEndPoint). It is nil when the connection has no TLS;
	// -PLUS mechanisms are then refused with ErrInvalidMechanism. It is
	// called at most once per exchange, from Next, and must not block.
	// [TLSBinding] builds one from a crypto/tls connection state.
	Binding func(cbType string) ([]byte, error)

	// PlusAdvertised reports that the server offered -PLUS mechanisms on
	// this stream, so a client gs2 flag 'y' ("I support channel binding but
	// think the server does not") is a downgrade and fails with
	// ErrDowngrade.
	PlusAdvertised bool

	// OfferedMechanisms is the SASL mechanism list the server advertised
	// on this stream, in the profile the client authenticates with
	// (<mechanisms/> for RFC 6120 SASL, <authentication/> for XEP-0388
	// SASL2; never both), and OfferedBindings the channel-binding types it
	// advertised with XEP-0440 <sasl-channel-binding/> (nil if it sent
	// none). When OfferedMechanisms is set, SCRAM adds XEP-0474's
	// downgrade-protection attribute to server-first-message:
	//
	//	h=base64(H(sorted mechanisms joined by %x1E [%x1F sorted types joined by %x1E]))
	//
	// with H the SCRAM mechanism's hash, sorted byte-wise ("i;octet"). A
	// client that saw a list stripped in transit computes another hash and
	// aborts; one that ignores h= is unaffected (RFC 5802 section 5.1: an
	// unknown optional attribute is ignored). nil (the zero value) omits
	// the attribute. The slices are read in Respond, not copied: do not
	// modify them while the exchange runs. Other mechanisms ignore them.
	OfferedMechanisms []string
	// OfferedBindings is the list of channel-binding types advertised with
	// XEP-0440, for the h= attribute; see OfferedMechanisms.
	OfferedBindings []string
}

// Server is the server side of one SASL exchange. Calls must come in order:
// Start once, Respond once, then Next until done or an error. After done or
// any error, the exchange is over and every further call returns ErrState.
//
// A Server is not safe for concurrent use, but it may move between
// goroutines between calls (loop, worker, loop).
type Server interface {
	// Start parses the client's initial response (already base64-decoded)
	// and returns the authentication identity (the username, unescaped:
	// SCRAM's =2C and =3D are decoded) and the authorization identity (""
	// if none). It does no cryptography and may run on the event loop.
	Start(initial []byte) (username, authzid string, err error)

	// Respond continues with the account's stored credentials, or nil if
	// there is no such account: the exchange then proceeds with a fake salt
	// derived from the username and a per-process random key, and fails
	// exactly where a wrong password fails, so it does not reveal which
	// accounts exist. It returns the next challenge, or done with the
	// additional data for <success/> (nil for PLAIN). For PLAIN it runs
	// PBKDF2: call it on a worker. The returned slice must not be modified.
	Respond(creds *Credentials) (challenge []byte, done bool, err error)

	// Next handles each later client response (base64-decoded). It returns
	// the next challenge, or done with the additional data for <success/>.
	// The returned slice must not be modified.
	Next(response []byte) (challenge []byte, done bool, err error)

	// Mechanism returns the mechanism name.
	Mechanism() string
}

// NewServer returns the server side of one exchange with opts.Mechanism. It
// returns an error wrapping ErrInvalidMechanism for an unknown name, and for
// a -PLUS name when opts.Binding is nil.
func NewServer(opts Options) (Server, error) {
	if opts.Mechanism == Plain {
		return &plainServer{}, nil
	}
	for _, h := range [...]Hash{SHA1, SHA256, SHA512} {
		switch opts.Mechanism {
		case h.scramName():
			return &scramServer{hash: h, plusAdvertised: opts.PlusAdvertised, offeredMechs: opts.OfferedMechanisms, offeredCB: opts.OfferedBindings}, nil
		case h.scramName() + "-PLUS":
			if opts.Binding == nil {
				return nil, fmt.Errorf("%w: %s needs a TLS connection", ErrInvalidMechanism, opts.Mechanism)
			}
			return &scramServer{hash: h, plus: true, plusAdvertised: opts.PlusAdvertised, binding: opts.Binding,
				offeredMechs: opts.OfferedMechanisms, offeredCB: opts.OfferedBindings}, nil
		}
	}
	return nil, fmt.Errorf("%w: %q", ErrInvalidMechanism, opts.Mechanism)
}

// Mechanisms returns the names of the supported mechanisms, strongest
// first, for <mechanisms/>. The -PLUS mechanisms are included only when plus
// is true (the connection has TLS and a Binding callback). PLAIN is always
// last; whether to offer it without TLS is the caller's policy. The caller
// owns the returned slice.
func Mechanisms(plus bool) []string {
	if plus {
		return []string{ScramSHA512Plus, ScramSHA256Plus, ScramSHA1Plus, ScramSHA512, ScramSHA256, ScramSHA1, Plain}
	}
	return []string{ScramSHA512, ScramSHA256, ScramSHA1, Plain}
}

// fakeKey is the per-process secret behind fake credentials for unknown
// accounts. It changes on restart, so an attacker who sees the fake salt of
// a name on two runs sees it change; a real account's salt does not. Hiding
// that would need a persistent key, which is the caller's choice to add.
var fakeKey = func() [32]byte {
	var k [32]byte
	rand.Read(k[:])
	return k
}()

// fakeCredential returns deterministic credentials for an unknown username:
// the salt is stable for a name within a process, like a real account's, and
// the keys are secret, so no proof can match them.
func fakeCredential(h Hash, username string) Credential {
	mac := hmac.New(sha256.New, fakeKey[:])
	mac.Write([]byte{'s', byte(h)})
	mac.Write([]byte(username))
	sum := mac.Sum(nil)
	mac.Reset()
	mac.Write([]byte{'k', byte(h)})
	mac.Write([]byte(username))
	keys := mac.Sum(nil)
	for len(keys) < 2*h.Size() {
		keys = append(keys, keys...)
	}
	return Credential{
		Salt:       sum[:saltLen],
		Iterations: DefaultIterations,
		StoredKey:  keys[:h.Size()],
		ServerKey:  keys[h.Size() : 2*h.Size()],
	}
}
