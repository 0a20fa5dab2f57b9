// Package storage is Krill's store: accounts and the instant-messaging data
// of RFC 6121 and its XEPs.
//
// An account is a username (an already-normalised JID localpart; the domain
// is implicit, one domain per server) and its SCRAM credentials, one per hash
// (SHA-1, SHA-256, SHA-512), each stored as the RFC 5803 text form
// "SCRAM-SHA-256$4096:<salt>$<StoredKey>:<ServerKey>". Passwords are never
// stored, nor anything from which a password is recovered more cheaply than
// by guessing. Beside the accounts, [IM] stores rosters with their versions
// (XEP-0237), pending subscription requests, offline messages (XEP-0160),
// blocklists (XEP-0191) and vCards (XEP-0054).
//
// [SQL] implements [Accounts] and [IM] on database/sql with versioned
// migrations ([Migrate]). [Open] picks a database by driver name:
// [OpenSQLite] opens the embedded default, SQLite through the pure-Go
// modernc.org/sqlite driver; [OpenPostgres] opens PostgreSQL through pgx.
// The schema and queries are portable SQL; what differs between databases
// lives in [Dialect].
//
// Storage calls block. The server makes them from its bounded worker pool,
// never from an event loop.
package storage

import (
	"context"
	"errors"

	"github.com/krill-xmpp/krill/sasl"
)

// Errors returned by the store. Callers test for them with
// [errors.Is]; most are wrapped with the username or version concerned.
var (
	// ErrNotFound reports that no account has the given username.
	ErrNotFound = errors.New("storage: account not found")
	// ErrExists reports that an account with the given username already
	// exists, or that a batch names the same account twice.
	ErrExists = errors.New("storage: account already exists")
	// ErrEmptyUsername reports an attempt to create an account with an
	// empty username.
	ErrEmptyUsername = errors.New("storage: empty username")
	// ErrNoCredentials reports an attempt to store an account without any
	// credential: such an account could never log in.
	ErrNoCredentials = errors.New("storage: no credentials")
	// ErrCorrupt reports a stored credential that does not parse, or that
	// is stored in the column of another hash.
	ErrCorrupt = errors.New("storage: stored credential is malformed")
	// ErrSchemaTooNew reports a database migrated by a newer Krill than
	// this one: this binary does not know its schema and refuses to touch
	// it.
	ErrSchemaTooNew = errors.New("storage: database schema is newer than this binary")
	// ErrUnknownDialect reports a [Dialect] value that is none of the
	// declared ones.
	ErrUnknownDialect = errors.New("storage: unknown SQL dialect")
	// ErrQuota reports that a user's offline message store is full.
	ErrQuota = errors.New("storage: offline quota exceeded")
	// ErrInvalidText reports text that is not valid UTF-8 or holds a NUL
	// byte: XML never does, and PostgreSQL's TEXT refuses it, so both
	// databases refuse it alike.
	ErrInvalidText = errors.New("storage: text is not valid UTF-8 without NUL")
	// ErrInvalidItem reports a roster item or request that cannot be
	// stored: an empty contact or an undeclared subscription state.
	ErrInvalidItem = errors.New("storage: invalid roster item")

	// errRosterBusy reports that another transaction holds a roster an
	// UpdateRosters transaction needs. It never leaves the package:
	// the transaction is retried.
	errRosterBusy = errors.New("storage: roster locked by another transaction")
)

// NewAccount is one account for bulk creation with [Accounts.AddAccounts].
type NewAccount struct {
	// Username is the normalised localpart.
	Username string
	// Credentials are stored as given; absent (zero) credentials are
	// stored as NULL.
	Credentials sasl.Credentials
}

// Accounts is the account store the server and the CLI use. Usernames are
// already-normalised JID localparts: the store compares them byte for byte.
//
// Implementations are safe for concurrent use. Every method honours its
// context's cancellation and deadline.
type Accounts interface {
	// Credentials returns the stored credentials of username, with the
	// zero Credential for each hash that has none. It returns
	// ErrNotFound if there is no such account.
	Credentials(ctx context.Context, username string) (sasl.Credentials, error)

	// AddAccount creates an account. It returns ErrExists if the username
	// is taken, ErrEmptyUsername or ErrNoCredentials if the input is
	// unusable.
	AddAccount(ctx context.Context, username string, c sasl.Credentials) error

	// AddAccounts creates all accounts in one transaction: all of them or
	// none. A username that exists already or appears twice in the batch
	// fails the whole batch with ErrExists, wrapped with the name.
	AddAccounts(ctx context.Context, accounts []NewAccount) error

	// SetCredentials replaces all credentials of username: hashes whose
	// Credential is zero in c are removed. It returns ErrNotFound if there
	// is no such account.
	SetCredentials(ctx context.Context, username string, c sasl.Credentials) error

	// RemoveAccount deletes an account. It returns ErrNotFound if there is
	// no such account.
	RemoveAccount(ctx context.Context, username string) error

	// ListAccounts returns all usernames sorted byte-wise, as
	// [slices.Sort] orders them, whatever the database's collation.
	ListAccounts(ctx context.Context) ([]string, error)

	// Close releases the store. Calls after Close return errors.
	Close() error
}
