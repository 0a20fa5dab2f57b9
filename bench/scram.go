package bench

import (
	"bytes"
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
)

// ErrSCRAM means the server's SCRAM messages were malformed, did not
// extend the client's nonce, or carried a wrong server signature.
var ErrSCRAM = errors.New("bench: bad SCRAM exchange")

// maxSCRAMIterations bounds the iteration count the client accepts, so
// that a hostile server cannot make a bench client spin in PBKDF2.
const maxSCRAMIterations = 1 << 20

// scramKeys are what SCRAM-SHA-256 derives from a password, a salt and an
// iteration count (RFC 5802 section 3): the costly part of a client login.
type scramKeys struct {
	clientKey, serverKey [sha256.Size]byte
}

// keyCache remembers scramKeys per (password, salt, iterations). Bench
// accounts share one password and one stored credential, so a run of
// 10,000 logins computes PBKDF2 once; the number of entries is capped so
// that a server that salts each attempt differently costs memory only up
// to the cap.
var keyCache = struct {
	sync.Mutex
	m map[string]*scramKeys
}{m: make(map[string]*scramKeys)}

const keyCacheMax = 64

func derivedKeys(password string, salt []byte, iters int) (*scramKeys, error) {
	id := strconv.Itoa(iters) + "\x00" + string(salt) + "\x00" + password
	keyCache.Lock()
	k := keyCache.m[id]
	keyCache.Unlock()
	if k != nil {
		return k, nil
	}
	salted, err := pbkdf2.Key(sha256.New, password, salt, iters, sha256.Size)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrSCRAM, err)
	}
	k = new(scramKeys)
	copy(k.clientKey[:], hmacSHA256(salted, []byte("Client Key")))
	copy(k.serverKey[:], hmacSHA256(salted, []byte("Server Key")))
	keyCache.Lock()
	if len(keyCache.m) < keyCacheMax {
		keyCache.m[id] = k
	}
	keyCache.Unlock()
	return k, nil
}

func hmacSHA256(key, msg []byte) []byte {
	h := hmac.New(sha256.New, key)
	h.Write(msg)
	return h.Sum(nil)
}

// scramClient is one SCRAM-SHA-256 exchange without channel binding
// (gs2 header "n,,"), as RFC 5802 and RFC 7677 describe it.
type scramClient struct {
	password    string
	clientFirst string // client-first-message-bare
	nonce       string
	authMessage string
	keys        *scramKeys
}

// newSCRAM returns the exchange for user and its client-first-message.
func newSCRAM(user, password string) (*scramClient, []byte) {
	var raw [18]byte
	_, _ = rand.Read(raw[:])
	nonce := base64.RawStdEncoding.EncodeToString(raw[:])
	bare := "n=" + saslName(user) + ",r=" + nonce
	return &scramClient{password: password, clientFirst: bare, nonce: nonce}, []byte("n,," + bare)
}

// final takes the server-first-message and returns the
// client-final-message.
func (s *scramClient) final(serverFirst []byte) ([]byte, error) {
	attrs := strings.Split(string(serverFirst), ",")
	if len(attrs) < 3 || !strings.HasPrefix(attrs[0], "r=") || !strings.HasPrefix(attrs[1], "s=") || !strings.HasPrefix(attrs[2], "i=") {
		return nil, fmt.Errorf("%w: server-first-message %q", ErrSCRAM, clip(serverFirst, 100))
	}
	nonce := attrs[0][2:]
	if len(nonce) <= len(s.nonce) || !strings.HasPrefix(nonce, s.nonce) {
		return nil, fmt.Errorf("%w: server nonce does not extend the client's", ErrSCRAM)
	}
	salt, err := base64.StdEncoding.DecodeString(attrs[1][2:])
	if err != nil || len(salt) == 0 {
		return nil, fmt.Errorf("%w: salt %q", ErrSCRAM, attrs[1])
	}
	iters, err := strconv.Atoi(attrs[2][2:])
	if err != nil || iters < 1 || iters > maxSCRAMIterations {
		return nil, fmt.Errorf("%w: iteration count %q", ErrSCRAM, attrs[2])
	}
	if s.keys, err = derivedKeys(s.password, salt, iters); err != nil {
		return nil, err
	}
	// "biws" is base64("n,,"): no channel binding.
	withoutProof := "c=biws,r=" + nonce
	s.authMessage = s.clientFirst + "," + string(serverFirst) + "," + withoutProof
	storedKey := sha256.Sum256(s.keys.clientKey[:])
	proof := hmacSHA256(storedKey[:], []byte(s.authMessage))
	subtle.XORBytes(proof, proof, s.keys.clientKey[:])
	return []byte(withoutProof + ",p=" + base64.StdEncoding.EncodeToString(proof)), nil
}

// verify checks the server-final-message's signature.
func (s *scramClient) verify(serverFinal []byte) error {
	v, ok := bytes.CutPrefix(serverFinal, []byte("v="))
	if !ok || s.keys == nil {
		return fmt.Errorf("%w: server-final-message %q", ErrSCRAM, clip(serverFinal, 100))
	}
	got, err := base64.StdEncoding.DecodeString(string(v))
	want := hmacSHA256(s.keys.serverKey[:], []byte(s.authMessage))
	if err != nil || !hmac.Equal(got, want) {
		return fmt.Errorf("%w: wrong server signature", ErrSCRAM)
	}
	return nil
}

// saslName escapes a username for SCRAM's n= attribute (RFC 5802
// section 5.1).
func saslName(user string) string {
	return strings.NewReplacer("=", "=3D", ",", "=2C").Replace(user)
}
