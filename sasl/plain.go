package sasl

import (
	"bytes"
	"crypto/pbkdf2"
	"crypto/subtle"
	"fmt"
	"unicode/utf8"
)

// maxMessage bounds every client message this package parses. XMPP's
// pre-auth stanza limit already bounds it; this keeps the exchange state
// small and the offsets in a uint16 whatever the caller's limits are.
const maxMessage = 4096

// Exchange stages shared by the mechanisms.
const (
	stageNew     uint8 = iota // Start not called yet
	stageStarted              // Start succeeded, waiting for Respond
	stageFinal                // SCRAM: server-first sent, waiting for Next
	stageOver                 // done or failed: every call is ErrState
)

// plainServer is the server side of PLAIN (RFC 4616). Between Start and
// Respond it holds the username and the password; Respond wipes the
// password.
type plainServer struct {
	stage    uint8
	username string
	password []byte
}

func (s *plainServer) Mechanism() string { return Plain }

// Start parses "authzid NUL authcid NUL passwd".
func (s *plainServer) Start(initial []byte) (username, authzid string, err error) {
	if s.stage != stageNew {
		return "", "", ErrState
	}
	s.stage = stageOver
	if len(initial) > maxMessage {
		return "", "", fmt.Errorf("%w: PLAIN message longer than %d bytes", ErrMalformed, maxMessage)
	}
	if !utf8.Valid(initial) {
		return "", "", fmt.Errorf("%w: PLAIN message is not UTF-8", ErrMalformed)
	}
	az, rest, ok1 := bytes.Cut(initial, []byte{0})
	user, pass, ok2 := bytes.Cut(rest, []byte{0})
	switch {
	case !ok1 || !ok2:
		return "", "", fmt.Errorf("%w: PLAIN message needs two NUL separators", ErrMalformed)
	case bytes.IndexByte(pass, 0) >= 0:
		return "", "", fmt.Errorf("%w: NUL in PLAIN password", ErrMalformed)
	case len(user) == 0:
		return "", "", fmt.Errorf("%w: empty PLAIN authcid", ErrMalformed)
	case len(pass) == 0:
		return "", "", fmt.Errorf("%w: empty PLAIN password", ErrMalformed)
	}
	s.username = string(user)
	s.password = bytes.Clone(pass)
	s.stage = stageStarted
	return s.username, string(az), nil
}

// Respond derives StoredKey from the password with the stored salt and
// iteration count (SHA-256 preferred, then SHA-512, then SHA-1) and compares
// it with the stored one in constant time. Unknown accounts pay the same
// derivation against a fake credential.
func (s *plainServer) Respond(creds *Credentials) (challenge []byte, done bool, err error) {
	if s.stage != stageStarted {
		return nil, false, ErrState
	}
	s.stage = stageOver
	defer func() {
		clear(s.password)
		s.password = nil
	}()
	h, cred, fake := SHA256, (*Credential)(nil), true
	if creds != nil {
		for _, c := range [...]Hash{SHA256, SHA512, SHA1} {
			if cr := creds.For(c); !cr.IsZero() {
				h, cred, fake = c, cr, false
				break
			}
		}
	}
	if fake {
		fc := fakeCredential(h, s.username)
		cred = &fc
	}
	if err := cred.check(h); err != nil {
		return nil, false, err
	}
	salted, err := pbkdf2.Key(h.new, string(s.password), cred.Salt, cred.Iterations, h.Size())
	if err != nil {
		return nil, false, fmt.Errorf("%w: %w", ErrInvalidCredential, err)
	}
	stored, _ := keysFromSalted(h, salted)
	clear(salted)
	match := subtle.ConstantTimeCompare(stored, cred.StoredKey)
	if match != 1 || fake {
		return nil, false, ErrNotAuthorized
	}
	return nil, true, nil
}

// Next always fails: PLAIN has a single client message.
func (s *plainServer) Next(response []byte) (challenge []byte, done bool, err error) {
	s.stage = stageOver
	clear(s.password)
	s.password = nil
	return nil, false, ErrState
}
