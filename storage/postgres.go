package storage

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"runtime"
	"time"

	// pgx's database/sql driver, registered as "pgx".
	_ "github.com/jackc/pgx/v5/stdlib"
)

// Pool sizes of a PostgreSQL store. Storage calls come from the server's
// bounded worker pool, so a few connections per core are enough; more
// would only queue inside PostgreSQL instead of in database/sql.
const (
	pgConnsPerCore = 4
	pgMinConns     = 8
	pgConnIdleTime = 5 * time.Minute
)

// OpenPostgres opens the PostgreSQL database named by dsn (a pgx
// connection string, URL "postgres://user:pass@host:5432/db?sslmode=..."
// or key=value form), checks that it answers, and migrates it. Pass
// search_path in dsn to keep Krill's tables in a schema of their own.
//
// The store is one pool of up to max(8, 4×GOMAXPROCS) connections, all
// kept open while in use and closed after 5 minutes idle.
func OpenPostgres(ctx context.Context, dsn string) (*SQL, error) {
	if dsn == "" {
		return nil, errors.New("storage: open postgres: empty dsn")
	}
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		// The DSN may hold a password: do not repeat it.
		return nil, fmt.Errorf("storage: open postgres: %w", err)
	}
	n := max(pgMinConns, pgConnsPerCore*runtime.GOMAXPROCS(0))
	db.SetMaxOpenConns(n)
	db.SetMaxIdleConns(n)
	db.SetConnMaxIdleTime(pgConnIdleTime)
	if err := db.PingContext(ctx); err != nil {
		return nil, errors.Join(fmt.Errorf("storage: open postgres: %w", err), db.Close())
	}
	s, err := NewSQL(ctx, db, PostgreSQL)
	if err != nil {
		return nil, fmt.Errorf("storage: open postgres: %w", err)
	}
	return s, nil
}

// Drivers accepted by [Open], the values of the configuration's
// [storage] driver key.
const (
	DriverSQLite   = "sqlite"
	DriverPostgres = "postgres"
)

// SQLiteFile is the name of the SQLite database [Open] uses in the data
// directory when no dsn is given.
const SQLiteFile = "krill.db"

// Open opens the store the configuration names. driver is "sqlite" or
// "postgres". For "sqlite", dsn is the database file's path; when it is
// empty the file is dataDir/krill.db. For "postgres", dsn is required (see
// [OpenPostgres]) and dataDir is unused.
func Open(ctx context.Context, driver, dsn, dataDir string) (*SQL, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("storage: open %s: %w", driver, err)
	}
	switch driver {
	case DriverSQLite:
		path := dsn
		if path == "" {
			if dataDir == "" {
				return nil, errors.New("storage: open sqlite: neither a dsn nor a data directory")
			}
			path = filepath.Join(dataDir, SQLiteFile)
		}
		return OpenSQLite(path)
	case DriverPostgres:
		if dsn == "" {
			return nil, errors.New("storage: open postgres: the postgres driver needs a dsn")
		}
		return OpenPostgres(ctx, dsn)
	}
	return nil, fmt.Errorf("storage: unknown driver %q (want %q or %q)", driver, DriverSQLite, DriverPostgres)
}
