package sasl

import (
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"strconv"
	"strings"
)

// XEP-0480 SASL upgrade tasks: a client that logged in with a password
// gives the server SCRAM keys for a hash the account lacks (an account
// created with SCRAM-SHA-1 only gains SCRAM-SHA-256), without sending the
// password: the server sends a salt and iteration count, the client
// answers with the SaltedPassword.
const (
	// NSUpgrade qualifies <upgrade/> in SASL2's <authentication/> and
	// <authenticate/>.
	NSUpgrade = "urn:xmpp:sasl:upgrade:0"
	// NSScramUpgrade qualifies the task's <salt/> and <hash/>.
	NSScramUpgrade = "urn:xmpp:scram-upgrade:0"
)

// upgradePrefix starts every task name; -PLUS never appears in one
// (XEP-0480 section 3: upgrades are independent of channel binding).
const upgradePrefix = "UPGR-"

// UpgradeTask returns the XEP-0480 task name for SCRAM with h:
// "UPGR-SCRAM-SHA-256" for SHA256.
func UpgradeTask(h Hash) string { return upgradePrefix + h.scramName() }

// UpgradeHash returns the hash a task name upgrades to, and false for a
// name that is no SCRAM upgrade task this package knows.
func UpgradeHash(task string) (Hash, bool) {
	mech, ok := strings.CutPrefix(task, upgradePrefix)
	if !ok {
		return 0, false
	}
	for _, h := range [...]Hash{SHA1, SHA256, SHA512} {
		if mech == h.scramName() {
			return h, true
		}
	}
	return 0, false
}

// ScramUpgrade is the server side of one XEP-0480 SCRAM upgrade task.
// Only offer it for a hash the account has no credential for, and only
// after a login that proved the password (not a FAST token): the client
// cannot prove that the SaltedPassword it sends comes from the same
// password, so the new credential must add a hash, never replace one
// (storage's AddCredential refuses to overwrite).
type ScramUpgrade struct {
	hash       Hash
	iterations int
	salt       [saltLen]byte
}

// NewScramUpgrade starts an upgrade to h with a fresh random salt and
// iterations (0 means DefaultIterations).
func NewScramUpgrade(h Hash, iterations int) (*ScramUpgrade, error) {
	if !h.valid() {
		return nil, fmt.Errorf("%w: hash %d", ErrInvalidMechanism, h)
	}
	if iterations == 0 {
		iterations = DefaultIterations
	}
	if iterations < 1 || iterations > maxIterations {
		return nil, fmt.Errorf("%w: iteration count %d out of range", ErrInvalidCredential, iterations)
	}
	u := &ScramUpgrade{hash: h, iterations: iterations}
	rand.Read(u.salt[:])
	return u, nil
}

// AppendSalt appends the task data the server sends in SASL2's
// <continue/>/<task-data/>:
// <salt xmlns='urn:xmpp:scram-upgrade:0' iterations='4096'>base64 salt</salt>.
func (u *ScramUpgrade) AppendSalt(b []byte) []byte {
	b = append(b, `<salt xmlns='`+NSScramUpgrade+`' iterations='`...)
	b = strconv.AppendInt(b, int64(u.iterations), 10)
	b = append(b, `'>`...)
	b = base64.StdEncoding.AppendEncode(b, u.salt[:])
	return append(b, `</salt>`...)
}

// Finish turns the client's SaltedPassword (the base64-decoded content of
// its <hash/>) into the credential to store. A SaltedPassword of the wrong
// length wraps ErrMalformed. It costs two HMACs and a hash; the caller
// stores the result on a worker.
func (u *ScramUpgrade) Finish(salted []byte) (Credential, error) {
	if len(salted) != u.hash.Size() {
		return Credential{}, fmt.Errorf("%w: %v SaltedPassword must be %d bytes, got %d", ErrMalformed, u.hash, u.hash.Size(), len(salted))
	}
	stored, server := keysFromSalted(u.hash, salted)
	return Credential{Salt: u.salt[:], Iterations: u.iterations, StoredKey: stored, ServerKey: server}, nil
}
