package sasl

import (
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"fmt"
	"hash"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Hash names a hash function used by SCRAM. The zero value is not a valid
// hash.
type Hash uint8

// Hashes supported by this package.
const (
	SHA1 Hash = iota + 1
	SHA256
	SHA512
)

// String returns the hash's name as it appears in mechanism names:
// "SHA-1", "SHA-256" or "SHA-512".
func (h Hash) String() string {
	switch h {
	case SHA1:
		return "SHA-1"
	case SHA256:
		return "SHA-256"
	case SHA512:
		return "SHA-512"
	}
	return "Hash(" + strconv.Itoa(int(h)) + ")"
}

// Size returns the length in bytes of the hash's output, which is also the
// length of StoredKey, ServerKey and the client proof; 0 for an unknown hash.
func (h Hash) Size() int {
	switch h {
	case SHA1:
		return sha1.Size
	case SHA256:
		return sha256.Size
	case SHA512:
		return sha512.Size
	}
	return 0
}

// valid reports whether h is one of the supported hashes.
func (h Hash) valid() bool { return h >= SHA1 && h <= SHA512 }

// new returns a fresh hash.Hash for h; h must be valid.
func (h Hash) new() hash.Hash {
	switch h {
	case SHA1:
		return sha1.New()
	case SHA512:
		return sha512.New()
	}
	return sha256.New()
}

// scramName returns the SCRAM mechanism name for h, without -PLUS.
func (h Hash) scramName() string { return "SCRAM-" + h.String() }

// DefaultIterations is the PBKDF2 iteration count used when none is given:
// the minimum RFC 7677 section 4 recommends for SCRAM-SHA-256.
const DefaultIterations = 4096

// maxIterations bounds the iteration count a stored credential may carry.
// PLAIN runs PBKDF2 with it on a worker, so a corrupt or hostile record must
// not be able to occupy a worker for minutes.
const maxIterations = 1 << 24

// saltLen is the length of the random salt NewCredentials draws per hash.
const saltLen = 16

// Credential is what the server stores for one hash (RFC 5802 section 3):
// the salt, the PBKDF2 iteration count, StoredKey = H(HMAC(SaltedPassword,
// "Client Key")) and ServerKey = HMAC(SaltedPassword, "Server Key"). It never
// holds the password nor SaltedPassword, so a stolen database does not let an
// attacker log in without first guessing passwords.
//
// The zero Credential means "not available for this hash".
type Credential struct {
	Salt       []byte
	Iterations int
	StoredKey  []byte
	ServerKey  []byte
}

// IsZero reports whether c is the zero Credential, meaning the account has no
// credential for that hash.
func (c *Credential) IsZero() bool {
	return len(c.Salt) == 0 && c.Iterations == 0 && len(c.StoredKey) == 0 && len(c.ServerKey) == 0
}

// check reports whether c is usable with h.
func (c *Credential) check(h Hash) error {
	switch {
	case len(c.Salt) == 0:
		return fmt.Errorf("%w: %v: empty salt", ErrInvalidCredential, h)
	case c.Iterations < 1 || c.Iterations > maxIterations:
		return fmt.Errorf("%w: %v: iteration count %d out of range", ErrInvalidCredential, h, c.Iterations)
	case len(c.StoredKey) != h.Size() || len(c.ServerKey) != h.Size():
		return fmt.Errorf("%w: %v: keys must be %d bytes", ErrInvalidCredential, h, h.Size())
	}
	return nil
}

// Credentials is everything stored for one account: one Credential per hash.
// A zero Credential means that hash is not available for the account; SCRAM
// with that hash then fails exactly as for an unknown account.
type Credentials struct {
	SHA1, SHA256, SHA512 Credential
}

// For returns the credential for h, or nil if h is not a supported hash.
func (c *Credentials) For(h Hash) *Credential {
	switch h {
	case SHA1:
		return &c.SHA1
	case SHA256:
		return &c.SHA256
	case SHA512:
		return &c.SHA512
	}
	return nil
}

// NewCredentials derives the credentials to store for password, with a fresh
// random 16-byte salt per hash and the given PBKDF2 iteration count (0 means
// DefaultIterations). It runs PBKDF2 three times: call it on a worker, never
// on an event loop.
//
// The password is used as its UTF-8 bytes, without SASLprep or PRECIS
// OpaqueString preparation, because that is what mellium.im/sasl's client
// (and hence mellium.im/xmpp) sends; a prepared password would not match
// for passwords that preparation changes. Callers that want to restrict
// passwords should do so at registration.
func NewCredentials(password string, iterations int) (Credentials, error) {
	if password == "" || !utf8.ValidString(password) {
		return Credentials{}, ErrInvalidPassword
	}
	if iterations == 0 {
		iterations = DefaultIterations
	}
	if iterations < 1 || iterations > maxIterations {
		return Credentials{}, fmt.Errorf("%w: iteration count %d out of range", ErrInvalidCredential, iterations)
	}
	var c Credentials
	salts := make([]byte, 3*saltLen)
	rand.Read(salts)
	for i, h := range [...]Hash{SHA1, SHA256, SHA512} {
		salt := salts[i*saltLen : (i+1)*saltLen : (i+1)*saltLen]
		cred := Derive(h, password, salt, iterations)
		if cred.IsZero() {
			return Credentials{}, fmt.Errorf("%w: %v: derivation failed", ErrInvalidCredential, h)
		}
		*c.For(h) = cred
	}
	return c, nil
}

// Derive computes the Credential for password with hash h, the given salt
// and iteration count, following RFC 5802 section 3. It returns the zero
// Credential if h is not supported or the parameters are unusable (an
// iteration count below 1 or an empty salt). The returned Credential keeps
// salt (it does not copy it).
func Derive(h Hash, password string, salt []byte, iterations int) Credential {
	if !h.valid() || iterations < 1 || len(salt) == 0 {
		return Credential{}
	}
	salted, err := pbkdf2.Key(h.new, password, salt, iterations, h.Size())
	if err != nil {
		// Only possible in FIPS 140-only mode with parameters it refuses.
		return Credential{}
	}
	stored, server := keysFromSalted(h, salted)
	clear(salted)
	return Credential{Salt: salt, Iterations: iterations, StoredKey: stored, ServerKey: server}
}

// keysFromSalted returns StoredKey and ServerKey for SaltedPassword.
func keysFromSalted(h Hash, salted []byte) (stored, server []byte) {
	mac := hmac.New(h.new, salted)
	mac.Write([]byte("Client Key"))
	clientKey := mac.Sum(nil)
	mac.Reset()
	mac.Write([]byte("Server Key"))
	server = mac.Sum(nil)
	d := h.new()
	d.Write(clientKey)
	stored = d.Sum(clientKey[:0])
	return stored, server
}

// Text returns c in the RFC 5803 form used for storage:
//
//	SCRAM-SHA-256$<iterations>:<base64 salt>$<base64 StoredKey>:<base64 ServerKey>
//
// [ParseCredential] reads it back.
func (c Credential) Text(h Hash) string {
	enc := base64.StdEncoding
	var b strings.Builder
	b.Grow(len("SCRAM-SHA-256$:$:") + 10 + enc.EncodedLen(len(c.Salt)) + 2*enc.EncodedLen(len(c.StoredKey)))
	b.WriteString(h.scramName())
	b.WriteByte('$')
	b.WriteString(strconv.Itoa(c.Iterations))
	b.WriteByte(':')
	b.WriteString(enc.EncodeToString(c.Salt))
	b.WriteByte('$')
	b.WriteString(enc.EncodeToString(c.StoredKey))
	b.WriteByte(':')
	b.WriteString(enc.EncodeToString(c.ServerKey))
	return b.String()
}

// ParseCredential parses the RFC 5803 form written by [Credential.Text]. It
// checks that the iteration count is a positive decimal without leading zero
// and that the key lengths match the hash. Errors wrap ErrInvalidCredential.
func ParseCredential(s string) (Hash, Credential, error) {
	mech, rest, ok := strings.Cut(s, "$")
	if !ok {
		return 0, Credential{}, fmt.Errorf("%w: missing '$'", ErrInvalidCredential)
	}
	var h Hash
	for _, c := range [...]Hash{SHA1, SHA256, SHA512} {
		if mech == c.scramName() {
			h = c
		}
	}
	if h == 0 {
		return 0, Credential{}, fmt.Errorf("%w: unknown scheme %q", ErrInvalidCredential, mech)
	}
	info, value, ok := strings.Cut(rest, "$")
	if !ok {
		return 0, Credential{}, fmt.Errorf("%w: missing second '$'", ErrInvalidCredential)
	}
	iter, salt, ok1 := strings.Cut(info, ":")
	stored, server, ok2 := strings.Cut(value, ":")
	if !ok1 || !ok2 {
		return 0, Credential{}, fmt.Errorf("%w: missing ':'", ErrInvalidCredential)
	}
	// RFC 5803: iter-count = %x31-39 *DIGIT.
	if iter == "" || iter[0] < '1' || iter[0] > '9' || len(iter) > 9 {
		return 0, Credential{}, fmt.Errorf("%w: bad iteration count %q", ErrInvalidCredential, iter)
	}
	n, err := strconv.Atoi(iter)
	if err != nil {
		return 0, Credential{}, fmt.Errorf("%w: bad iteration count %q", ErrInvalidCredential, iter)
	}
	var c Credential
	c.Iterations = n
	enc := base64.StdEncoding.Strict()
	for _, f := range [...]struct {
		dst *[]byte
		src string
	}{{&c.Salt, salt}, {&c.StoredKey, stored}, {&c.ServerKey, server}} {
		if *f.dst, err = enc.DecodeString(f.src); err != nil {
			return 0, Credential{}, fmt.Errorf("%w: %w", ErrInvalidCredential, err)
		}
	}
	if err := c.check(h); err != nil {
		return 0, Credential{}, err
	}
	return h, c, nil
}
