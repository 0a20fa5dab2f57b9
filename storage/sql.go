package storage

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/krill-xmpp/krill/sasl"
)

// Queries, written once with '?' parameters and rebound per [Dialect].
const (
	queryCredentials = `SELECT scram_sha1, scram_sha256, scram_sha512 FROM accounts WHERE username = ?`
	// ON CONFLICT DO NOTHING rather than a failed INSERT: "exists" is then
	// RowsAffected() == 0 in every database, not a driver-specific error
	// code, and in PostgreSQL a conflict does not abort the transaction.
	queryInsert = `INSERT INTO accounts (username, scram_sha1, scram_sha256, scram_sha512, created_at, updated_at)
		VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (username) DO NOTHING`
	queryUpdate = `UPDATE accounts SET scram_sha1 = ?, scram_sha256 = ?, scram_sha512 = ?, updated_at = ? WHERE username = ?`
	queryDelete = `DELETE FROM accounts WHERE username = ?`
	queryList   = `SELECT username FROM accounts`
)

// SQL implements [Accounts] and [IM] on database/sql, with prepared
// statements for every frequent query. It is safe for concurrent use.
//
// Create one with [Open], [OpenSQLite], [OpenPostgres] or [NewSQL]; the
// zero SQL is not usable.
type SQL struct {
	dialect Dialect
	// write runs every statement that changes data; read runs lookups.
	// They are the same pool except with SQLite, where writes go through
	// a single connection (SQLite has one writer at a time anyway, and
	// queueing in Go beats spinning on SQLITE_BUSY) and reads through
	// several read-only ones (WAL lets them run beside the writer).
	write, read *sql.DB

	credentials, insert, update, remove, list *sql.Stmt
	im                                        imStmts
	pep                                       pepStmts
	mam                                       mamStmts
	fast                                      fastStmts
}

// stmtSpec is one statement to prepare: where it is stored, on which pool,
// and its query with '?' parameters.
type stmtSpec struct {
	stmt  **sql.Stmt
	write bool
	query string
}

// statements lists every prepared statement of s.
func (s *SQL) statements() []stmtSpec {
	return append([]stmtSpec{
		{&s.credentials, false, queryCredentials},
		{&s.list, false, queryList},
		{&s.insert, true, queryInsert},
		{&s.update, true, queryUpdate},
		{&s.remove, true, queryDelete},
	}, append(s.im.statements(), append(s.pep.statements(), append(s.mam.statements(s.dialect), s.fast.statements()...)...)...)...)
}

// NewSQL returns a store on db, a database of dialect d, after migrating
// it with [Migrate]. The store owns db: its Close closes db.
func NewSQL(ctx context.Context, db *sql.DB, d Dialect) (*SQL, error) {
	return newSQL(ctx, db, db, d)
}

// newSQL migrates through write and prepares the statements. On error it
// closes both pools.
func newSQL(ctx context.Context, write, read *sql.DB, d Dialect) (*SQL, error) {
	s := &SQL{dialect: d, write: write, read: read}
	if err := Migrate(ctx, write, d); err != nil {
		return nil, errors.Join(err, s.Close())
	}
	for _, p := range s.statements() {
		db := read
		if p.write {
			db = write
		}
		stmt, err := db.PrepareContext(ctx, d.rebind(p.query))
		if err != nil {
			return nil, errors.Join(fmt.Errorf("storage: prepare %q: %w", p.query, err), s.Close())
		}
		*p.stmt = stmt
	}
	return s, nil
}

// Credentials implements [Accounts.Credentials].
func (s *SQL) Credentials(ctx context.Context, username string) (sasl.Credentials, error) {
	var cols [3]sql.NullString
	err := s.credentials.QueryRowContext(ctx, username).Scan(&cols[0], &cols[1], &cols[2])
	if errors.Is(err, sql.ErrNoRows) {
		return sasl.Credentials{}, fmt.Errorf("%w: %q", ErrNotFound, username)
	}
	if err != nil {
		return sasl.Credentials{}, fmt.Errorf("storage: look up %q: %w", username, err)
	}
	var c sasl.Credentials
	for i, dst := range []*sasl.Credential{&c.SHA1, &c.SHA256, &c.SHA512} {
		if !cols[i].Valid {
			continue
		}
		h, cred, err := sasl.ParseCredential(cols[i].String)
		if err != nil {
			return sasl.Credentials{}, fmt.Errorf("%w: account %q, column %s: %w", ErrCorrupt, username, columns[i].name, err)
		}
		if h != columns[i].hash {
			return sasl.Credentials{}, fmt.Errorf("%w: account %q, column %s holds another hash", ErrCorrupt, username, columns[i].name)
		}
		*dst = cred
	}
	return c, nil
}

// AddAccount implements [Accounts.AddAccount].
func (s *SQL) AddAccount(ctx context.Context, username string, c sasl.Credentials) error {
	args, err := insertArgs(username, c, time.Now().Unix())
	if err != nil {
		return err
	}
	res, err := s.insert.ExecContext(ctx, args[:]...)
	if err != nil {
		return fmt.Errorf("storage: add %q: %w", username, err)
	}
	return wantOneRow(res, ErrExists, username)
}

// AddAccounts implements [Accounts.AddAccounts]. It checks the batch for
// duplicates before it touches the database, then inserts every account
// through one prepared statement in one transaction.
func (s *SQL) AddAccounts(ctx context.Context, accounts []NewAccount) (err error) {
	if len(accounts) == 0 {
		return nil
	}
	now := time.Now().Unix()
	args := make([][6]any, len(accounts))
	seen := make(map[string]struct{}, len(accounts))
	for i, a := range accounts {
		if _, dup := seen[a.Username]; dup {
			return fmt.Errorf("%w: %q appears twice in the batch", ErrExists, a.Username)
		}
		seen[a.Username] = struct{}{}
		if args[i], err = insertArgs(a.Username, a.Credentials, now); err != nil {
			return err
		}
	}
	tx, err := s.write.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("storage: add %d accounts: %w", len(accounts), err)
	}
	defer func() {
		if err != nil {
			err = errors.Join(err, ignoreDone(tx.Rollback()))
		}
	}()
	// The transaction closes its copy of the statement when it ends.
	insert := tx.StmtContext(ctx, s.insert)
	for i := range args {
		res, err := insert.ExecContext(ctx, args[i][:]...)
		if err != nil {
			return fmt.Errorf("storage: add %q: %w", accounts[i].Username, err)
		}
		if err := wantOneRow(res, ErrExists, accounts[i].Username); err != nil {
			return err
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("storage: add %d accounts: commit: %w", len(accounts), err)
	}
	return nil
}

// SetCredentials implements [Accounts.SetCredentials]. Setting credentials
// is changing the password: in the same transaction it deletes the
// account's XEP-0484 FAST tokens, so that no device logs in on the strength
// of the old password after it changed.
func (s *SQL) SetCredentials(ctx context.Context, username string, c sasl.Credentials) error {
	cols, err := credentialColumns(username, c)
	if err != nil {
		return err
	}
	err = s.inTx(ctx, s.write, nil, func(tx *sql.Tx) error {
		res, err := tx.StmtContext(ctx, s.update).ExecContext(ctx, cols[0], cols[1], cols[2], time.Now().Unix(), username)
		if err != nil {
			return err
		}
		if err := wantOneRow(res, ErrNotFound, username); err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, s.dialect.rebind(queryFastDeleteAll), username)
		return err
	})
	if err != nil && !errors.Is(err, ErrNotFound) {
		return fmt.Errorf("storage: set credentials of %q: %w", username, err)
	}
	return err
}

// ownedTables are the tables of per-user data, keyed by a username column,
// that RemoveAccount empties of the account's rows. Other users' roster
// items for the removed account stay: RFC 6121 leaves them to the contacts.
var ownedTables = []string{
	"roster_items", "roster_groups", "roster_versions", "subscription_requests",
	"offline_messages", "blocklist", "vcards", "last_activity", "fast_tokens",
	"pep_nodes", "pep_items", "pep_subscriptions", "private_xml",
	"mam_messages", "mam_prefs", "push_registrations",
}

// RemoveAccount implements [Accounts.RemoveAccount]. It deletes the account
// and all its IM data (roster, requests, offline messages, blocklist,
// vCard, last activity, PEP nodes and private XML, message archive and
// its preferences) and its FAST tokens in one transaction.
func (s *SQL) RemoveAccount(ctx context.Context, username string) error {
	err := s.inTx(ctx, s.write, nil, func(tx *sql.Tx) error {
		// Wait for transactions changing the roster to end, so that
		// none writes it again after it is deleted. This is the
		// transaction's only lock wait, so it cannot deadlock.
		if err := s.dialect.lockUser(ctx, tx, rosterLockClass, username); err != nil {
			return err
		}
		res, err := tx.StmtContext(ctx, s.remove).ExecContext(ctx, username)
		if err != nil {
			return err
		}
		if err := wantOneRow(res, ErrNotFound, username); err != nil {
			return err
		}
		for _, table := range ownedTables {
			if _, err := tx.ExecContext(ctx, s.dialect.rebind(`DELETE FROM `+table+` WHERE username = ?`), username); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil && !errors.Is(err, ErrNotFound) {
		return fmt.Errorf("storage: remove %q: %w", username, err)
	}
	return err
}

// ListAccounts implements [Accounts.ListAccounts]. It sorts in Go: an
// ORDER BY would follow the database's collation, which in PostgreSQL
// depends on the locale.
func (s *SQL) ListAccounts(ctx context.Context) ([]string, error) {
	rows, err := s.list.QueryContext(ctx)
	if err != nil {
		return nil, fmt.Errorf("storage: list accounts: %w", err)
	}
	defer rows.Close()
	var names []string
	for rows.Next() {
		var name string
		if err := rows.Scan(&name); err != nil {
			return nil, fmt.Errorf("storage: list accounts: %w", err)
		}
		names = append(names, name)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("storage: list accounts: %w", err)
	}
	slices.Sort(names)
	return names, nil
}

// Ping reports whether the database answers (the server's /readyz).
func (s *SQL) Ping(ctx context.Context) error {
	if err := s.read.PingContext(ctx); err != nil {
		return fmt.Errorf("storage: ping: %w", err)
	}
	return nil
}

// Close closes the prepared statements and the database. It is safe to
// call more than once.
func (s *SQL) Close() error {
	var errs []error
	for _, p := range s.statements() {
		if *p.stmt != nil {
			errs = append(errs, (*p.stmt).Close())
		}
	}
	if s.read != nil && s.read != s.write {
		errs = append(errs, s.read.Close())
	}
	if s.write != nil {
		errs = append(errs, s.write.Close())
	}
	return errors.Join(errs...)
}

// columns maps the credential columns, in query order, to their hashes.
var columns = [3]struct {
	name string
	hash sasl.Hash
}{
	{"scram_sha1", sasl.SHA1},
	{"scram_sha256", sasl.SHA256},
	{"scram_sha512", sasl.SHA512},
}

// credentialColumns returns the column values for c: the RFC 5803 text of
// each credential, or nil (NULL) for an absent one. Each text is parsed
// back before it is stored, so that a credential [SQL.Credentials] would
// reject as corrupt (keys of the wrong length, say) never reaches the
// database. It fails if all three are absent.
func credentialColumns(username string, c sasl.Credentials) ([3]any, error) {
	var cols [3]any
	some := false
	for i, cred := range [3]*sasl.Credential{&c.SHA1, &c.SHA256, &c.SHA512} {
		if isZero(cred) {
			continue
		}
		text := cred.Text(columns[i].hash)
		if _, _, err := sasl.ParseCredential(text); err != nil {
			return cols, fmt.Errorf("storage: account %q, %v credential: %w", username, columns[i].hash, err)
		}
		cols[i] = text
		some = true
	}
	if !some {
		return cols, fmt.Errorf("%w: account %q", ErrNoCredentials, username)
	}
	return cols, nil
}

// insertArgs returns the arguments of queryInsert.
func insertArgs(username string, c sasl.Credentials, now int64) ([6]any, error) {
	if username == "" {
		return [6]any{}, ErrEmptyUsername
	}
	cols, err := credentialColumns(username, c)
	if err != nil {
		return [6]any{}, err
	}
	return [6]any{username, cols[0], cols[1], cols[2], now, now}, nil
}

// isZero reports whether c is the zero Credential, the "absent" marker of
// [sasl.Credentials]. It is written here, not taken from sasl, so that
// storage depends only on the Credential fields and Text/ParseCredential.
func isZero(c *sasl.Credential) bool {
	return c.Iterations == 0 && len(c.Salt) == 0 && len(c.StoredKey) == 0 && len(c.ServerKey) == 0
}

// wantOneRow turns a statement that touched no row into notOne wrapped
// with the username.
func wantOneRow(res sql.Result, notOne error, username string) error {
	n, err := res.RowsAffected()
	if err != nil {
		return fmt.Errorf("storage: %q: rows affected: %w", username, err)
	}
	if n == 0 {
		return fmt.Errorf("%w: %q", notOne, username)
	}
	return nil
}

// AddCredential stores c as username's credential for hash h if the account
// has none for h: a XEP-0480 upgrade task adding SCRAM-SHA-256 keys to an
// account created with SCRAM-SHA-1 only. It never replaces a credential
// (the client proved a password, but cannot prove that its SaltedPassword
// comes from the same one), so it is not a password change and leaves the
// account's FAST tokens alone. It returns ErrExists if the account already
// has a credential for h, ErrNotFound if there is no such account.
func (s *SQL) AddCredential(ctx context.Context, username string, h sasl.Hash, c sasl.Credential) error {
	col := -1
	for i := range columns {
		if columns[i].hash == h {
			col = i
		}
	}
	if col < 0 || isZero(&c) {
		return fmt.Errorf("storage: add %v credential of %q: no such hash or empty credential", h, username)
	}
	text := c.Text(h)
	if _, _, err := sasl.ParseCredential(text); err != nil {
		return fmt.Errorf("storage: account %q, %v credential: %w", username, h, err)
	}
	name := columns[col].name // a constant of this package, not input
	query := s.dialect.rebind(`UPDATE accounts SET ` + name + ` = ?, updated_at = ? WHERE username = ? AND ` + name + ` IS NULL`)
	res, err := s.write.ExecContext(ctx, query, text, time.Now().Unix(), username)
	if err != nil {
		return fmt.Errorf("storage: add %v credential of %q: %w", h, username, err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return fmt.Errorf("storage: add %v credential of %q: %w", h, username, err)
	} else if n == 1 {
		return nil
	}
	if _, err := s.Credentials(ctx, username); err != nil {
		return err
	}
	return fmt.Errorf("%w: %q already has a %v credential", ErrExists, username, h)
}
