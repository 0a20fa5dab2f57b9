// Package fast implements the server side of XEP-0484 Fast Authentication
// Streamlining Tokens: it issues, verifies, rotates, expires and revokes the
// tokens a client logs in with through the HT-* SASL mechanisms of package
// sasl, in one round trip and for the cost of a few HMACs.
//
// # Tokens are derived, not stored
//
// HT proves possession of the token itself: the client sends
// HMAC(token, "Initiator" || cb-data), so the server needs the token, and a
// hash of it in the database could not check a login. Instead the database
// ([storage.FastTokens]) holds per token only its account, a random id, the
// client (user-agent id) and mechanism it was issued for, when it was
// created and expires, the last count and last use. The token the client
// receives is
//
//	base64url(HMAC-SHA-256(secret, "krill-fast-token-v1" NUL
//	                        len|username len|id len|client len|mechanism
//	                        created expires))
//
// with a 32-byte secret kept outside the database (fast.secret_file, see
// [LoadSecret]). Whoever reads the database alone learns which accounts
// hold tokens and until when, and cannot log in; whoever holds the secret
// alone lacks the ids. Both together derive every live token: deleting or
// replacing the secret file revokes all tokens at once (clients fall back
// to their password). Changing a row's expiry, client or mechanism changes
// the derived token, so a database writer cannot extend or move one either.
//
// # Lifecycle
//
// A client that logs in any way with <request-token mechanism='HT-...'/>
// gets a token ([Tokens.Issue]) valid for Options.TTL. A login with a token
// ([Tokens.Authenticate]) derives the live tokens of that account and
// client issued for the mechanism used (at most two: XEP-0484's current
// and new), compares in constant time, and then: refuses a count not above
// the last one accepted for the token (a replay; checked in memory and
// written behind on a standalone server, counts.go, and by a
// compare-and-set in storage in a cluster), deletes the client's tokens older than the one used,
// deletes the token on invalidate='true', and hands out a fresh token when
// the client asks or the used one is older than Options.RotateAfter; the
// used token stays valid until the fresh one is used, so a client cut off
// before it read <success/> still gets in. Issuing also deletes the
// client's tokens that were never used and the account's expired ones,
// and keeps the account at Options.MaxTokens. A password change or the
// removal of the account deletes the account's tokens in the same
// transaction (package storage).
package fast

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/krill-xmpp/krill/sasl"
	"github.com/krill-xmpp/krill/stanza"
	"github.com/krill-xmpp/krill/storage"
)

// NS is the XEP-0484 namespace of <fast/>, <request-token/> and <token/>.
const NS = "urn:xmpp:fast:0"

// Defaults of [Options].
const (
	// DefaultTTL is Prosody's (mod_sasl2_fast sasl2_fast_token_ttl, 21
	// days): a device may stay offline three weeks and still log in with
	// its token.
	DefaultTTL = 21 * 24 * time.Hour
	// DefaultMaxTokens allows three devices one rotation in flight each
	// (a current and a new token per device, XEP-0484 section 5).
	DefaultMaxTokens = 6
	// DefaultRotateAfter is Prosody's sasl2_fast_token_min_ttl: a token
	// older than a day is replaced at its next use, so a stolen token
	// stops working a day after its owner's next login.
	DefaultRotateAfter = 24 * time.Hour
)

// MaxClientLen bounds the user-agent id, in bytes, that tokens are issued
// to and looked up by: it is stored per token.
const MaxClientLen = 256

// SecretLen is the length in bytes of the secret tokens are derived from.
const SecretLen = 32

// idLen is the random token id's length in bytes (hex in the database).
const idLen = 16

// Errors of this package. Failures a client causes wrap a sasl sentinel as
// well, so that sasl.Condition maps them to the <failure/> condition.
var (
	// ErrNoClient reports a FAST login or token request without a
	// user-agent id, which XEP-0484 requires (malformed-request).
	ErrNoClient = errors.New("fast: no user-agent id")
	// ErrMechanism reports a token requested for a mechanism that is not
	// an HT mechanism (malformed-request).
	ErrMechanism = errors.New("fast: not an HT mechanism")
	// ErrSecret reports an unusable secret.
	ErrSecret = errors.New("fast: bad secret")
)

// Options configures [Tokens]. The zero value takes every default.
type Options struct {
	// TTL is how long a token is valid from its issue; 0 means
	// DefaultTTL.
	TTL time.Duration
	// MaxTokens caps the live tokens of one account, all its clients
	// together; issuing beyond it deletes the tokens expiring first. 0
	// means DefaultMaxTokens; negative means no cap.
	MaxTokens int
	// RotateAfter is the age at which a token used to log in is replaced
	// by a fresh one in <success/>; 0 means DefaultRotateAfter or TTL/2,
	// whichever is shorter.
	RotateAfter time.Duration
	// Now returns the current time; nil means time.Now.
	Now func() time.Time
	// CountFlush is how long a replay count accepted in memory may wait
	// before it is written (counts.go); 0 means DefaultCountFlush.
	// Negative writes every count before the login succeeds, a
	// compare-and-set in the database: what a cluster needs, whose nodes
	// share the database and not their memory.
	CountFlush time.Duration
}

// Tokens issues and checks FAST tokens of one server. It is safe for
// concurrent use. Its methods block on storage: call them from a worker,
// never from an event loop.
type Tokens struct {
	store  storage.FastTokens
	secret [SecretLen]byte
	opts   Options
	counts *counts // nil: counts written at once (Options.CountFlush < 0)
}

// New returns the token service over store with secret (at least
// SecretLen bytes; see [LoadSecret]).
func New(store storage.FastTokens, secret []byte, opts Options) (*Tokens, error) {
	if len(secret) < SecretLen {
		return nil, fmt.Errorf("%w: %d bytes, want at least %d", ErrSecret, len(secret), SecretLen)
	}
	if opts.TTL <= 0 {
		opts.TTL = DefaultTTL
	}
	if opts.MaxTokens == 0 {
		opts.MaxTokens = DefaultMaxTokens
	}
	if opts.RotateAfter <= 0 {
		opts.RotateAfter = min(DefaultRotateAfter, opts.TTL/2)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.CountFlush == 0 {
		opts.CountFlush = DefaultCountFlush
	}
	t := &Tokens{store: store, opts: opts}
	if opts.CountFlush > 0 {
		t.counts = &counts{store: store, delay: opts.CountFlush}
	}
	// A longer secret is folded to SecretLen bytes.
	sum := sha256.Sum256(secret)
	if len(secret) == SecretLen {
		copy(t.secret[:], secret)
	} else {
		t.secret = sum
	}
	return t, nil
}

// Token is a token as the client receives it in <token/>.
type Token struct {
	// Secret is the token string; the client's HMAC key is its UTF-8
	// octets.
	Secret string
	// Expiry is when it stops working.
	Expiry time.Time
}

// AppendXML appends XEP-0484's <token/> element for SASL2's <success/>:
// <token xmlns='urn:xmpp:fast:0' expiry='2026-12-21T06:00:00Z' token='...'/>.
func (t Token) AppendXML(b []byte) []byte {
	b = append(b, `<token xmlns='`+NS+`' expiry='`...)
	b = t.Expiry.UTC().AppendFormat(b, "2006-01-02T15:04:05Z")
	b = append(b, `' token='`...)
	b = stanza.AppendEscaped(b, t.Secret)
	return append(b, `'/>`...)
}

// AppendFeature appends XEP-0484's SASL2 inline feature,
// <fast xmlns='urn:xmpp:fast:0'><mechanism>...</mechanism>...</fast>, for
// mechanisms (normally sasl.HTMechanisms(), offered only over TLS). It
// does not claim tls-0rtt: Krill's TLS takes no early data.
func AppendFeature(b []byte, mechanisms []string) []byte {
	b = append(b, `<fast xmlns='`+NS+`'>`...)
	for _, m := range mechanisms {
		b = append(b, `<mechanism>`...)
		b = stanza.AppendEscaped(b, m)
		b = append(b, `</mechanism>`...)
	}
	return append(b, `</fast>`...)
}

// ParseCount parses the count attribute of a client's <fast/>: a decimal
// integer from 0 to 2^63-1 (XEP-0484 says positive and that clients reset
// it to zero, so zero is accepted). An invalid value wraps
// sasl.ErrMalformed. A <fast/> without count is Login.Count -1.
func ParseCount(s string) (int64, error) {
	n, err := strconv.ParseUint(s, 10, 63)
	if err != nil {
		return 0, fmt.Errorf("%w: FAST count %q", sasl.ErrMalformed, s)
	}
	return int64(n), nil
}

// Login is what a client's SASL2 <authenticate/> says about FAST beside
// its HT initial response.
type Login struct {
	// Username is the authcid sasl.HT.Start returned.
	Username string
	// Client is <user-agent id='...'/>; required.
	Client string
	// Count is <fast count='...'/> ([ParseCount]), or -1 without one.
	Count int64
	// Invalidate is <fast invalidate='true'/> (or '1').
	Invalidate bool
	// RequestToken is the mechanism of <request-token/>, "" without one.
	RequestToken string
}

// Result is what a successful token login adds to SASL2's <success/>.
type Result struct {
	// Additional is the HT responder message for <additional-data/>
	// (base64-encoded by the caller).
	Additional []byte
	// Token is a fresh token to append with Token.AppendXML, or nil.
	Token *Token
}

// Authenticate checks a token login: ht has been started (sasl.NewHT,
// Start on the event loop) and l carries the rest of the <authenticate/>.
// It returns the additional data and, if the client asked for one or the
// token was due for rotation, a fresh token. Errors wrap sasl sentinels:
// ErrNotAuthorized for a wrong, unknown, revoked or replayed token (the
// three are indistinguishable to the client), ErrCredentialsExpired for an
// expired one (XEP-0484 section 6.2), ErrMalformed for a missing or
// oversized user-agent id; storage errors wrap none
// (temporary-auth-failure). Blocks: call from a worker.
func (t *Tokens) Authenticate(ctx context.Context, ht *sasl.HT, l Login) (Result, error) {
	if err := checkClient(l.Client); err != nil {
		return Result{}, err
	}
	if l.RequestToken != "" && !sasl.IsHT(l.RequestToken) {
		return Result{}, fmt.Errorf("%w: %w: %q", sasl.ErrMalformed, ErrMechanism, l.RequestToken)
	}
	var gen uint64
	if t.counts != nil && l.Count >= 0 {
		gen = t.counts.generation() // before the row is read (counts)
	}
	rows, err := t.store.FastTokens(ctx, l.Username, l.Client)
	if err != nil {
		return Result{}, fmt.Errorf("fast: look up tokens: %w", err)
	}
	mech := ht.Mechanism()
	// At most two rows match (current and new); the slices stay small.
	cands := make([][]byte, 0, 2)
	idx := make([]int, 0, 2)
	mac := hmac.New(sha256.New, t.secret[:]) // one keyed HMAC for every row
	for i := range rows {
		if rows[i].Mechanism != mech {
			continue // XEP-0484: a token works only with its mechanism
		}
		cands = append(cands, []byte(deriveWith(mac, &rows[i])))
		idx = append(idx, i)
	}
	// An account (or client) with fewer tokens, or none, pays the same
	// derivations: the time taken does not tell whether it has any.
	for range max(0, 2-len(cands)) {
		deriveWith(mac, &storage.FastToken{})
	}
	i, extra, err := ht.Verify(cands)
	if err != nil {
		return Result{}, err
	}
	row := &rows[idx[i]]
	now := t.opts.Now()
	if !now.Before(row.Expires) {
		return Result{}, fmt.Errorf("%w: FAST token expired at %s", sasl.ErrCredentialsExpired, row.Expires.UTC().Format(time.RFC3339))
	}
	// The use is written (a transaction whose commit syncs the
	// database: most of a token login's cost) only when it changes
	// something a later login depends on: a count to compare with (unless
	// counts are written behind, counts.go), an invalidation, or the
	// first use, which drops the client's older tokens. A token used
	// before, without count, is simply good.
	write := l.Invalidate || row.Used.IsZero() || l.Count >= 0 && t.counts == nil
	if l.Count >= 0 && t.counts != nil {
		// Checked (and kept) in memory first, even when written below,
		// so that every count of this process passes one check.
		err := t.checkCount(ctx, l, row, gen, now)
		switch {
		case errors.Is(err, storage.ErrReplayed) || errors.Is(err, storage.ErrNotFound):
			return Result{}, fmt.Errorf("%w: %w", sasl.ErrNotAuthorized, err)
		case err != nil:
			return Result{}, err
		}
	}
	if write {
		if err := t.store.UseFastToken(ctx, l.Username, row.ID, l.Count, now, l.Invalidate); err != nil {
			if errors.Is(err, storage.ErrReplayed) || errors.Is(err, storage.ErrNotFound) {
				// Replayed, or revoked (a password change) since the look-up.
				return Result{}, fmt.Errorf("%w: %w", sasl.ErrNotAuthorized, err)
			}
			return Result{}, fmt.Errorf("fast: record login: %w", err)
		}
		if l.Count >= 0 && t.counts != nil {
			t.counts.persisted(row.ID, l.Count)
		}
	}
	res := Result{Additional: extra}
	rotate := !l.Invalidate && now.Sub(row.Created) >= t.opts.RotateAfter
	if l.RequestToken != "" || rotate {
		newMech, keep := l.RequestToken, row.ID
		if newMech == "" {
			newMech = row.Mechanism
		}
		if l.Invalidate {
			keep = ""
		}
		tok, err := t.issue(ctx, l.Username, l.Client, newMech, keep, now)
		if err != nil {
			return Result{}, err
		}
		res.Token = &tok
	}
	return res, nil
}

// Issue issues a token to client of username for mechanism (one of
// sasl.HTMechanisms), for a <request-token/> in a login that did not use a
// token. Call it only once the client has fully authenticated. It deletes
// the client's unused tokens and the account's expired ones, and evicts
// the tokens expiring first beyond Options.MaxTokens. Blocks: call from a
// worker.
func (t *Tokens) Issue(ctx context.Context, username, client, mechanism string) (Token, error) {
	if err := checkClient(client); err != nil {
		return Token{}, err
	}
	if !sasl.IsHT(mechanism) {
		return Token{}, fmt.Errorf("%w: %w: %q", sasl.ErrMalformed, ErrMechanism, mechanism)
	}
	return t.issue(ctx, username, client, mechanism, "", t.opts.Now())
}

func (t *Tokens) issue(ctx context.Context, username, client, mechanism, keep string, now time.Time) (Token, error) {
	var raw [idLen]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return Token{}, fmt.Errorf("fast: token id: %w", err)
	}
	// Whole seconds: the database keeps seconds, and the derivation must
	// see the same values at issue and at login.
	created := time.Unix(now.Unix(), 0)
	row := storage.FastToken{
		Username:  username,
		ID:        hex.EncodeToString(raw[:]),
		Client:    client,
		Mechanism: mechanism,
		Created:   created,
		Expires:   created.Add(t.opts.TTL.Truncate(time.Second)),
		LastCount: -1,
	}
	if err := t.store.AddFastToken(ctx, row, max(t.opts.MaxTokens, 0), keep); err != nil {
		return Token{}, fmt.Errorf("fast: issue token: %w", err)
	}
	return Token{Secret: t.derive(&row), Expiry: row.Expires}, nil
}

// Revoke deletes every token of username (a "log out everywhere"). The
// storage does this itself on a password change and account removal.
func (t *Tokens) Revoke(ctx context.Context, username string) error {
	_, err := t.store.DeleteFastTokens(ctx, username)
	return err
}

// Sweep deletes the expired tokens of every account and returns how many.
// Expired tokens never log in, so sweeping is only housekeeping: run it
// now and then from a worker.
func (t *Tokens) Sweep(ctx context.Context) (int64, error) {
	return t.store.DeleteExpiredFastTokens(ctx, t.opts.Now())
}

// derivationLabel separates this HMAC's inputs from any other use of the
// secret, and versions the format.
const derivationLabel = "krill-fast-token-v1\x00"

// derive returns the token string of row.
func (t *Tokens) derive(row *storage.FastToken) string {
	return deriveWith(hmac.New(sha256.New, t.secret[:]), row)
}

// deriveWith is derive with mac, an HMAC keyed with the secret, which it
// resets first.
func deriveWith(mac hash.Hash, row *storage.FastToken) string {
	mac.Reset()
	var buf [8]byte
	mac.Write([]byte(derivationLabel))
	for _, f := range [...]string{row.Username, row.ID, row.Client, row.Mechanism} {
		binary.BigEndian.PutUint32(buf[:4], uint32(len(f)))
		mac.Write(buf[:4])
		mac.Write([]byte(f))
	}
	binary.BigEndian.PutUint64(buf[:], uint64(row.Created.Unix()))
	mac.Write(buf[:])
	binary.BigEndian.PutUint64(buf[:], uint64(row.Expires.Unix()))
	mac.Write(buf[:])
	var sum [sha256.Size]byte
	return base64.RawURLEncoding.EncodeToString(mac.Sum(sum[:0]))
}

// checkClient checks a user-agent id.
func checkClient(client string) error {
	switch {
	case client == "":
		return fmt.Errorf("%w: %w", sasl.ErrMalformed, ErrNoClient)
	case len(client) > MaxClientLen:
		return fmt.Errorf("%w: user-agent id longer than %d bytes", sasl.ErrMalformed, MaxClientLen)
	case !utf8.ValidString(client) || strings.IndexByte(client, 0) >= 0:
		return fmt.Errorf("%w: user-agent id is not UTF-8 without NUL", sasl.ErrMalformed)
	}
	return nil
}
