package storage

import (
	"context"
	"database/sql"
	"errors"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
	"modernc.org/sqlite"
)

// Dialect names the SQL database behind a [SQL] store. The schema and the
// queries are written once, in SQL both databases accept (for instance
// INSERT ... ON CONFLICT (username) DO NOTHING, SQLite 3.24 and PostgreSQL
// 9.5 alike); the methods of Dialect are the only place where they differ.
// Credentials and stanzas are TEXT, so no binary column type is needed.
//
// The zero Dialect is not valid.
type Dialect uint8

// Supported dialects.
const (
	// SQLite is SQLite 3 through modernc.org/sqlite (driver name "sqlite").
	SQLite Dialect = iota + 1
	// PostgreSQL is PostgreSQL through pgx's database/sql driver.
	PostgreSQL
)

// String returns the dialect's name, as used in errors and logs.
func (d Dialect) String() string {
	switch d {
	case SQLite:
		return "sqlite"
	case PostgreSQL:
		return "postgresql"
	}
	return "dialect(" + strconv.Itoa(int(d)) + ")"
}

// valid reports whether d is one of the declared dialects.
func (d Dialect) valid() bool { return d == SQLite || d == PostgreSQL }

// rebind rewrites a query written with '?' bind parameters into d's own
// syntax: PostgreSQL numbers them ($1, $2, ...). Queries are constants of
// this package that hold no '?' inside literals, so a plain scan is exact.
// It runs once per statement, when statements are prepared.
func (d Dialect) rebind(query string) string {
	if d != PostgreSQL {
		return query
	}
	var b strings.Builder
	b.Grow(len(query) + 8)
	n := 0
	for i := 0; i < len(query); i++ {
		if query[i] != '?' {
			b.WriteByte(query[i])
			continue
		}
		n++
		b.WriteByte('$')
		b.WriteString(strconv.Itoa(n))
	}
	return b.String()
}

// ddl rewrites a migration statement into d's syntax. The one construct
// that differs is {{serial}}, an auto-incremented BIGINT primary key whose
// values are never reused, even after the greatest is deleted.
func (d Dialect) ddl(stmt string) string {
	serial := "INTEGER PRIMARY KEY AUTOINCREMENT" // a rowid alias; AUTOINCREMENT forbids reuse
	if d == PostgreSQL {
		serial = "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY" // PostgreSQL 10+
	}
	return strings.ReplaceAll(stmt, "{{serial}}", serial)
}

// migrationLock is the PostgreSQL advisory lock key Migrate holds: "krill"
// in ASCII. Advisory locks are per database, so migrations of different
// schemas in one database serialise too, which is harmless.
const migrationLock = 0x6b72696c6c

// lockMigrations makes tx wait until no other transaction of Migrate runs
// on the database. SQLite needs nothing: its IMMEDIATE transactions
// already exclude each other.
func (d Dialect) lockMigrations(ctx context.Context, tx *sql.Tx) error {
	if d != PostgreSQL {
		return nil
	}
	_, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock(`+strconv.Itoa(migrationLock)+`)`)
	return err
}

// SQLite primary result codes (sqlite3.h) that mean "another connection
// holds the lock; try again".
const (
	sqliteBusy   = 5
	sqliteLocked = 6
)

// retryable reports whether err is a conflict with another transaction
// that running the transaction again may not meet: a roster another
// transaction holds (errRosterBusy), a PostgreSQL serialization failure
// (SQLSTATE 40001) or deadlock (40P01), or SQLite's BUSY or LOCKED once
// the busy timeout is spent.
func (d Dialect) retryable(err error) bool {
	if errors.Is(err, errRosterBusy) {
		return true
	}
	switch d {
	case PostgreSQL:
		var pe *pgconn.PgError
		return errors.As(err, &pe) && (pe.Code == "40001" || pe.Code == "40P01")
	case SQLite:
		var se *sqlite.Error
		if !errors.As(err, &se) {
			return false
		}
		code := se.Code() & 0xff // extended codes keep the primary one in the low byte
		return code == sqliteBusy || code == sqliteLocked
	}
	return false
}

// Advisory lock classes (the first key of PostgreSQL's two-key advisory
// locks; the second is a hash of the username). The two-key space does not
// overlap the one-key space of migrationLock.
const (
	rosterLockClass  = 0x726f73 // "ros"
	offlineLockClass = 0x6f6666 // "off"
)

// userLockKey hashes user (FNV-1a) into the second key of an advisory lock.
// Two users with the same hash share a lock: harmless, they only wait for
// each other or retry.
func userLockKey(user string) int32 {
	h := uint32(2166136261)
	for i := 0; i < len(user); i++ {
		h ^= uint32(user[i])
		h *= 16777619
	}
	return int32(h)
}

// tryLockUser takes, in PostgreSQL, the transaction-level advisory lock of
// class on user without waiting, and returns errRosterBusy if another
// transaction holds it. SQLite needs no lock: one write transaction runs at
// a time.
func (d Dialect) tryLockUser(ctx context.Context, tx *sql.Tx, class int32, user string) error {
	if d != PostgreSQL {
		return nil
	}
	var ok bool
	if err := tx.QueryRowContext(ctx, `SELECT pg_try_advisory_xact_lock($1, $2)`, class, userLockKey(user)).Scan(&ok); err != nil {
		return err
	}
	if !ok {
		return errRosterBusy
	}
	return nil
}

// lockUser is tryLockUser that waits for the lock. A transaction may wait
// for one lock only, or two could wait for each other.
func (d Dialect) lockUser(ctx context.Context, tx *sql.Tx, class int32, user string) error {
	if d != PostgreSQL {
		return nil
	}
	_, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock($1, $2)`, class, userLockKey(user))
	return err
}
