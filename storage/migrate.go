package storage

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// A migration moves the schema from version-1 to version. Its statements
// run in one transaction together with the row that records it, so a
// migration is applied entirely or not at all (both SQLite and PostgreSQL
// have transactional DDL).
type migration struct {
	version int
	name    string
	stmts   []string
}

// migrations is the schema's history, in order, versions 1, 2, 3 ... Never
// edit or reorder an entry once released: databases in the field have
// applied it. Append a new one instead.
var migrations = []migration{
	{
		version: 1,
		name:    "create accounts",
		stmts: []string{
			// Each scram_* column holds one RFC 5803 credential or
			// NULL when the account has none for that hash. Times are
			// Unix seconds: one integer type both databases share.
			`CREATE TABLE accounts (
				username     TEXT   NOT NULL PRIMARY KEY,
				scram_sha1   TEXT,
				scram_sha256 TEXT,
				scram_sha512 TEXT,
				created_at   BIGINT NOT NULL,
				updated_at   BIGINT NOT NULL
			)`,
		},
	},
	{
		version: 2,
		name:    "create im tables",
		stmts: []string{
			// One row per user whose roster has ever changed: the
			// XEP-0237 version, bumped by every change in the same
			// transaction.
			`CREATE TABLE roster_versions (
				username TEXT   NOT NULL PRIMARY KEY,
				version  BIGINT NOT NULL
			)`,
			// Booleans are BIGINT 0 or 1 and the subscription is
			// 0 none, 1 to, 2 from, 3 both: SQLite has no BOOLEAN and
			// PostgreSQL's does not take integers.
			`CREATE TABLE roster_items (
				username     TEXT   NOT NULL,
				contact      TEXT   NOT NULL,
				name         TEXT   NOT NULL,
				subscription BIGINT NOT NULL,
				ask_out      BIGINT NOT NULL,
				pre_approved BIGINT NOT NULL,
				PRIMARY KEY (username, contact)
			)`,
			// Groups in their own table rather than encoded in a
			// column: a group name may hold any character.
			`CREATE TABLE roster_groups (
				username   TEXT NOT NULL,
				contact    TEXT NOT NULL,
				group_name TEXT NOT NULL,
				PRIMARY KEY (username, contact, group_name)
			)`,
			`CREATE TABLE subscription_requests (
				username  TEXT   NOT NULL,
				contact   TEXT   NOT NULL,
				stanza    TEXT   NOT NULL,
				stored_at BIGINT NOT NULL,
				PRIMARY KEY (username, contact)
			)`,
			// id comes from a database sequence that never reuses a
			// value (AUTOINCREMENT in SQLite), so that DeleteOffline
			// up to an ID a session has read cannot delete a message
			// stored later.
			`CREATE TABLE offline_messages (
				id        {{serial}},
				username  TEXT   NOT NULL,
				stanza    TEXT   NOT NULL,
				stored_at BIGINT NOT NULL
			)`,
			`CREATE INDEX offline_messages_username_id ON offline_messages (username, id)`,
			`CREATE TABLE blocklist (
				username TEXT NOT NULL,
				jid      TEXT NOT NULL,
				PRIMARY KEY (username, jid)
			)`,
			`CREATE TABLE vcards (
				username   TEXT   NOT NULL PRIMARY KEY,
				vcard      TEXT   NOT NULL,
				updated_at BIGINT NOT NULL
			)`,
		},
	},
	{
		version: 3,
		name:    "create last_activity",
		stmts: []string{
			// XEP-0012: when the account's last resource went
			// unavailable (Unix seconds) and the status it gave.
			`CREATE TABLE last_activity (
				username TEXT   NOT NULL PRIMARY KEY,
				at       BIGINT NOT NULL,
				status   TEXT   NOT NULL
			)`,
		},
	},
	{
		version: 4,
		name:    "create fast_tokens",
		stmts: []string{
			// XEP-0484 FAST tokens, without the tokens: they are
			// derived from these columns and a secret outside the
			// database (package fast). last_count is -1 until a login
			// sends a count; used_at is 0 until the first login.
			// The primary key serves the look-ups, all by username.
			`CREATE TABLE fast_tokens (
				username   TEXT   NOT NULL,
				id         TEXT   NOT NULL,
				client     TEXT   NOT NULL,
				mechanism  TEXT   NOT NULL,
				created_at BIGINT NOT NULL,
				expires_at BIGINT NOT NULL,
				last_count BIGINT NOT NULL,
				used_at    BIGINT NOT NULL,
				PRIMARY KEY (username, id)
			)`,
			`CREATE INDEX fast_tokens_expires_at ON fast_tokens (expires_at)`,
		},
	},
	{
		version: 5,
		name:    "create pep and private xml",
		stmts: []string{
			// XEP-0163 nodes with the configuration PEP clients set;
			// max_items -1 is "max"; roster_groups are the groups the
			// roster access model admits, one per line.
			`CREATE TABLE pep_nodes (
				username       TEXT   NOT NULL,
				node           TEXT   NOT NULL,
				access_model   TEXT   NOT NULL,
				persist_items  BIGINT NOT NULL,
				max_items      BIGINT NOT NULL,
				send_last      TEXT   NOT NULL,
				notify_retract BIGINT NOT NULL,
				roster_groups  TEXT   NOT NULL,
				PRIMARY KEY (username, node)
			)`,
			// seq orders a node's items by publication (a republished
			// id becomes the newest).
			`CREATE TABLE pep_items (
				username TEXT   NOT NULL,
				node     TEXT   NOT NULL,
				item_id  TEXT   NOT NULL,
				seq      BIGINT NOT NULL,
				payload  TEXT   NOT NULL,
				PRIMARY KEY (username, node, item_id)
			)`,
			`CREATE INDEX pep_items_seq ON pep_items (username, node, seq)`,
			// Explicit subscriptions (XEP-0060 6.1), beside the
			// implicit ones presence and caps make; jid as subscribed
			// (bare or full).
			`CREATE TABLE pep_subscriptions (
				username TEXT NOT NULL,
				node     TEXT NOT NULL,
				jid      TEXT NOT NULL,
				PRIMARY KEY (username, node, jid)
			)`,
			// XEP-0049 fragments keyed by their root's {namespace}name.
			`CREATE TABLE private_xml (
				username TEXT NOT NULL,
				name     TEXT NOT NULL,
				xml      TEXT NOT NULL,
				PRIMARY KEY (username, name)
			)`,
		},
	},
	{
		version: 6,
		name:    "create message archive",
		stmts: []string{
			// XEP-0313: one row per message in one user's archive.
			// id is the archive ID the server chose (time-ordered,
			// see package mam), unique within the archive; with_jid
			// and with_res are the other party's bare JID and
			// resource ("" for none), so that a 'with' filter walks
			// the (username, with_jid, id) index. The primary key
			// is the (username, id) index a page query walks.
			`CREATE TABLE mam_messages (
				username TEXT   NOT NULL,
				id       BIGINT NOT NULL,
				with_jid TEXT   NOT NULL,
				with_res TEXT   NOT NULL,
				stanza   TEXT   NOT NULL,
				PRIMARY KEY (username, id)
			)`,
			`CREATE INDEX mam_messages_with ON mam_messages (username, with_jid, id)`,
			// The retention job deletes by id (time) across users.
			`CREATE INDEX mam_messages_id ON mam_messages (id)`,
			// Archiving preferences of the users who set them: the
			// default (0 always, 1 roster, 2 never) and the always
			// and never lists, bare JIDs one per line.
			`CREATE TABLE mam_prefs (
				username     TEXT   NOT NULL PRIMARY KEY,
				default_mode BIGINT NOT NULL,
				always_jids  TEXT   NOT NULL,
				never_jids   TEXT   NOT NULL
			)`,
		},
	},
	{
		version: 7,
		name:    "create muc tables",
		stmts: []string{
			// XEP-0045 persistent rooms: the configuration as the
			// module encodes it (JSON), with public and creator
			// beside it for listing and the per-creator limit.
			`CREATE TABLE muc_rooms (
				room       TEXT   NOT NULL PRIMARY KEY,
				config     TEXT   NOT NULL,
				public     BIGINT NOT NULL,
				creator    TEXT   NOT NULL,
				updated_at BIGINT NOT NULL
			)`,
			`CREATE INDEX muc_rooms_creator ON muc_rooms (creator)`,
			// Affiliations other than none, by bare JID.
			`CREATE TABLE muc_affiliations (
				room        TEXT NOT NULL,
				jid         TEXT NOT NULL,
				affiliation TEXT NOT NULL,
				reason      TEXT NOT NULL,
				PRIMARY KEY (room, jid)
			)`,
			// Service-wide values: the secret occupant ids
			// (XEP-0421) are derived with.
			`CREATE TABLE muc_service (
				name  TEXT NOT NULL PRIMARY KEY,
				value TEXT NOT NULL
			)`,
		},
	},
	{
		version: 8,
		name:    "muc reserved nicknames",
		stmts: []string{
			// The nickname a bare JID reserved by registering with
			// a room (XEP-0045 7.10), kept with its affiliation;
			// '' for none.
			`ALTER TABLE muc_affiliations ADD COLUMN nick TEXT NOT NULL DEFAULT ''`,
		},
	},
	{
		version: 9,
		name:    "push registrations",
		stmts: []string{
			// XEP-0357: an account's app servers, kept so that
			// asleep devices are woken after a restart too.
			// options is the publish-options form, XML text.
			`CREATE TABLE push_registrations (
				username   TEXT   NOT NULL,
				jid        TEXT   NOT NULL,
				node       TEXT   NOT NULL,
				options    TEXT   NOT NULL,
				created_at BIGINT NOT NULL,
				PRIMARY KEY (username, jid, node)
			)`,
		},
	},
	{
		version: 10,
		name:    "muc archive retention",
		stmts: []string{
			// Days a room's archive keeps a message (its owner's
			// choice); 0 follows mam.retention.
			`ALTER TABLE muc_rooms ADD COLUMN archive_days BIGINT NOT NULL DEFAULT 0`,
		},
	},
}

// createMigrationsTable is the bootstrap that precedes every version: it
// cannot be a migration since it records them.
const createMigrationsTable = `CREATE TABLE IF NOT EXISTS schema_migrations (
	version    BIGINT NOT NULL PRIMARY KEY,
	name       TEXT   NOT NULL,
	applied_at BIGINT NOT NULL
)`

// SchemaVersion is the schema version this binary migrates databases to:
// the version of the last entry of migrations (a test holds them equal).
const SchemaVersion = 10

// Migrate brings the schema of db up to [SchemaVersion]: it applies, in
// order, each migration the database has not recorded yet, each in its own
// transaction, and records it in the schema_migrations table. A database
// that is up to date is left untouched, so Migrate is idempotent. A
// database at a version newer than this binary knows is refused with
// [ErrSchemaTooNew] and left untouched.
//
// With SQLite, open db with _txlock=immediate (as [OpenSQLite] does) so
// that two processes migrating at once serialise instead of failing. With
// PostgreSQL, every transaction of Migrate first takes a transaction-level
// advisory lock ([migrationLock]), so that servers starting at once
// serialise too.
func Migrate(ctx context.Context, db *sql.DB, d Dialect) error {
	return migrate(ctx, db, d, migrations)
}

func migrate(ctx context.Context, db *sql.DB, d Dialect, list []migration) error {
	if !d.valid() {
		return fmt.Errorf("%w: %v", ErrUnknownDialect, d)
	}
	if err := bootstrap(ctx, db, d); err != nil {
		return fmt.Errorf("storage: create schema_migrations: %w", err)
	}
	latest := list[len(list)-1].version
	// Check before the loop too, so that a too-new database is refused
	// even when every migration this binary knows is applied.
	current, err := schemaVersion(ctx, db)
	if err != nil {
		return err
	}
	if current > latest {
		return tooNew(current, latest)
	}
	for _, m := range list {
		if m.version <= current {
			continue
		}
		if current, err = apply(ctx, db, d, m, latest); err != nil {
			return err
		}
	}
	return nil
}

// apply runs one migration in its own transaction unless, by the time the
// transaction holds the lock, another process has applied it. It returns
// the version the database is at afterwards.
func apply(ctx context.Context, db *sql.DB, d Dialect, m migration, latest int) (version int, err error) {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return 0, fmt.Errorf("storage: migration %d (%s): %w", m.version, m.name, err)
	}
	defer func() {
		if err != nil {
			err = errors.Join(err, ignoreDone(tx.Rollback()))
		}
	}()
	if err := d.lockMigrations(ctx, tx); err != nil {
		return 0, fmt.Errorf("storage: migration %d (%s): lock: %w", m.version, m.name, err)
	}
	current, err := schemaVersion(ctx, tx)
	if err != nil {
		return 0, err
	}
	switch {
	case current > latest:
		return 0, tooNew(current, latest)
	case current >= m.version:
		return current, tx.Commit()
	case current != m.version-1:
		return 0, fmt.Errorf("storage: migration %d (%s): database at version %d", m.version, m.name, current)
	}
	for _, stmt := range m.stmts {
		if _, err := tx.ExecContext(ctx, d.ddl(stmt)); err != nil {
			return 0, fmt.Errorf("storage: migration %d (%s): %w", m.version, m.name, err)
		}
	}
	record := d.rebind(`INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)`)
	if _, err := tx.ExecContext(ctx, record, m.version, m.name, time.Now().Unix()); err != nil {
		return 0, fmt.Errorf("storage: migration %d (%s): record: %w", m.version, m.name, err)
	}
	if err := tx.Commit(); err != nil {
		return 0, fmt.Errorf("storage: migration %d (%s): commit: %w", m.version, m.name, err)
	}
	return m.version, nil
}

// bootstrap creates the schema_migrations table if it does not exist, in a
// transaction holding the migration lock: in PostgreSQL, two concurrent
// CREATE TABLE IF NOT EXISTS of one table can both pass the check, and the
// second then fails on a catalogue unique index.
func bootstrap(ctx context.Context, db *sql.DB, d Dialect) (err error) {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			err = errors.Join(err, ignoreDone(tx.Rollback()))
		}
	}()
	if err := d.lockMigrations(ctx, tx); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, createMigrationsTable); err != nil {
		return err
	}
	return tx.Commit()
}

// queryer is what schemaVersion needs of a *sql.DB or *sql.Tx.
type queryer interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// schemaVersion returns the highest recorded migration, 0 for none.
func schemaVersion(ctx context.Context, q queryer) (int, error) {
	var v sql.NullInt64
	if err := q.QueryRowContext(ctx, `SELECT MAX(version) FROM schema_migrations`).Scan(&v); err != nil {
		return 0, fmt.Errorf("storage: read schema version: %w", err)
	}
	return int(v.Int64), nil
}

func tooNew(current, latest int) error {
	return fmt.Errorf("%w: database is at version %d, this binary knows versions up to %d; upgrade Krill", ErrSchemaTooNew, current, latest)
}

// ignoreDone drops the error Rollback returns after a failed Commit, which
// has already ended the transaction.
func ignoreDone(err error) error {
	if errors.Is(err, sql.ErrTxDone) {
		return nil
	}
	return err
}
