package storage

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"runtime"

	// The pure-Go SQLite driver, registered as "sqlite".
	_ "modernc.org/sqlite"
)

// sqliteBusyTimeout is how long, in milliseconds, a SQLite connection
// waits for another process's write lock (the CLI beside the server, say)
// before it gives up with SQLITE_BUSY.
const sqliteBusyTimeout = 5000

// OpenSQLite opens the SQLite database at path, creating it (mode
// 0600) and its directory (mode 0700) if needed, and migrates it.
//
// The database runs in WAL mode, so lookups proceed while a write is in
// progress. Writes go through one connection and begin their transactions
// IMMEDIATE, and every connection waits up to 5 s for a lock held by
// another process, so concurrent writers queue rather than fail with
// SQLITE_BUSY. Lookups use a pool of read-only connections.
func OpenSQLite(path string) (*SQL, error) {
	if path == "" {
		return nil, errors.New("storage: open sqlite: empty path")
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("storage: open sqlite %s: %w", path, err)
	}
	if err := os.MkdirAll(filepath.Dir(abs), 0o700); err != nil {
		return nil, fmt.Errorf("storage: open sqlite %s: %w", path, err)
	}
	// Create the file ourselves: SQLite would create it world-readable
	// (0644 under the usual umask), and it holds the keys that let a
	// reader impersonate the server to clients. SQLite gives its -wal and
	// -shm files the database file's mode.
	f, err := os.OpenFile(abs, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("storage: open sqlite %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return nil, fmt.Errorf("storage: open sqlite %s: %w", path, err)
	}

	write, err := sql.Open("sqlite", sqliteDSN(abs, false))
	if err != nil {
		return nil, fmt.Errorf("storage: open sqlite %s: %w", path, err)
	}
	write.SetMaxOpenConns(1)
	write.SetMaxIdleConns(1)
	// Readers open after the writer has switched the file to WAL, which
	// needs a write: a query-only connection could not.
	if err := write.Ping(); err != nil {
		return nil, errors.Join(fmt.Errorf("storage: open sqlite %s: %w", path, err), write.Close())
	}
	read, err := sql.Open("sqlite", sqliteDSN(abs, true))
	if err != nil {
		return nil, errors.Join(fmt.Errorf("storage: open sqlite %s: %w", path, err), write.Close())
	}
	// Keep every reader open: a new connection costs a file open and a
	// round of PRAGMAs, and database/sql keeps only 2 idle by default.
	readers := max(4, runtime.GOMAXPROCS(0))
	read.SetMaxOpenConns(readers)
	read.SetMaxIdleConns(readers)

	s, err := newSQL(context.Background(), write, read, SQLite)
	if err != nil {
		return nil, fmt.Errorf("storage: open sqlite %s: %w", path, err)
	}
	return s, nil
}

// sqliteDSN returns the modernc.org/sqlite data source name for the file at
// abs. busy_timeout must come first among the PRAGMAs (the driver runs it
// first whatever the order) so that the others wait for locks too.
// sqliteCacheKiB is each connection's page cache, in KiB.
const sqliteCacheKiB = 256

func sqliteDSN(abs string, readOnly bool) string {
	q := url.Values{}
	q.Add("_pragma", fmt.Sprintf("busy_timeout(%d)", sqliteBusyTimeout))
	q.Add("_pragma", "foreign_keys(1)")
	// A small page cache per connection (SQLite's default is 2 MiB): the
	// server reads accounts and rosters by key, and five connections'
	// default caches are ~10 MiB of RSS an operator pays however many
	// clients there are.
	q.Add("_pragma", fmt.Sprintf("cache_size(-%d)", sqliteCacheKiB))
	if readOnly {
		q.Add("_pragma", "query_only(1)")
	} else {
		// journal_mode is stored in the file; setting it once, on the
		// writer, is enough.
		q.Add("_pragma", "journal_mode(WAL)")
		q.Set("_txlock", "immediate")
	}
	// Reject "double-quoted strings" used as literals: a portable-SQL
	// mistake that PostgreSQL would reject.
	q.Set("_dqs", "0")
	// A file: URI, so that a path holding '?' or '#' is escaped rather
	// than cut.
	u := url.URL{Scheme: "file", Path: abs, RawQuery: q.Encode()}
	return u.String()
}
