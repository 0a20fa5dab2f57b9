package storage

import (
	"context"
	"database/sql"
	"errors"
	"path/filepath"
	"slices"
	"testing"
)

// openRawSQLite opens a database/sql handle on a new SQLite file the way
// OpenSQLite opens its writer, without migrating it.
func openRawSQLite(t *testing.T) (*sql.DB, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "accounts.db")
	db, err := sql.Open("sqlite", sqliteDSN(path, false))
	if err != nil {
		t.Fatal(err)
	}
	db.SetMaxOpenConns(1)
	t.Cleanup(func() { db.Close() })
	return db, path
}

// applied returns the recorded migrations, in order.
func applied(t *testing.T, db *sql.DB) []int {
	t.Helper()
	rows, err := db.Query(`SELECT version FROM schema_migrations ORDER BY version`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var vs []int
	for rows.Next() {
		var v int
		if err := rows.Scan(&v); err != nil {
			t.Fatal(err)
		}
		vs = append(vs, v)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return vs
}

func tableExists(t *testing.T, db *sql.DB, name string) bool {
	t.Helper()
	var n int
	if err := db.QueryRow(`SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?`, name).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n == 1
}

func TestSchemaVersion(t *testing.T) {
	for i, m := range migrations {
		if m.version != i+1 {
			t.Errorf("migrations[%d] has version %d, want %d", i, m.version, i+1)
		}
	}
	if last := migrations[len(migrations)-1].version; SchemaVersion != last {
		t.Errorf("SchemaVersion = %d, last migration is %d", SchemaVersion, last)
	}
}

func TestMigrate(t *testing.T) {
	ctx := context.Background()
	next := len(migrations) + 1
	extra := migration{version: next, name: "add t2", stmts: []string{`CREATE TABLE t2 (x BIGINT)`}}
	broken := migration{version: next, name: "broken", stmts: []string{`CREATE TABLE t2 (x BIGINT)`, `NOT SQL AT ALL`}}
	withExtra := append(slices.Clone(migrations), extra)
	withBroken := append(slices.Clone(migrations), broken)
	all := make([]int, len(migrations))
	for i := range all {
		all[i] = i + 1
	}
	allAndNext := append(slices.Clone(all), next)
	tests := []struct {
		name string
		// runs are the migration lists passed to successive migrate calls.
		runs    [][]migration
		wantErr error // of the last run; nil for success
		// anyErr expects the last run to fail with an error other than a
		// sentinel of this package.
		anyErr      bool
		wantApplied []int
		wantTables  []string
		noTables    []string
	}{
		{
			name:        "fresh database",
			runs:        [][]migration{migrations},
			wantApplied: all,
			wantTables: []string{"schema_migrations", "accounts", "roster_versions", "roster_items", "roster_groups",
				"subscription_requests", "offline_messages", "blocklist", "vcards"},
		},
		{
			name:        "idempotent",
			runs:        [][]migration{migrations, migrations, migrations},
			wantApplied: all,
			wantTables:  []string{"accounts"},
		},
		{
			name:        "applies only what is new",
			runs:        [][]migration{migrations[:1], migrations, withExtra},
			wantApplied: allAndNext,
			wantTables:  []string{"accounts", "vcards", "t2"},
		},
		{
			name:        "newer database refused",
			runs:        [][]migration{withExtra, migrations},
			wantErr:     ErrSchemaTooNew,
			wantApplied: allAndNext,
		},
		{
			name:        "failed migration rolls back",
			runs:        [][]migration{withBroken},
			anyErr:      true,
			wantApplied: all,
			wantTables:  []string{"accounts", "vcards"},
			noTables:    []string{"t2"},
		},
		{
			name:        "retry after failure",
			runs:        [][]migration{withBroken, withExtra},
			wantApplied: allAndNext,
			wantTables:  []string{"t2"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			db, _ := openRawSQLite(t)
			var err error
			for _, list := range tt.runs {
				err = migrate(ctx, db, SQLite, list)
			}
			switch {
			case tt.wantErr != nil && !errors.Is(err, tt.wantErr):
				t.Fatalf("last migrate = %v, want %v", err, tt.wantErr)
			case tt.anyErr && err == nil:
				t.Fatal("last migrate succeeded, want an error")
			case tt.wantErr == nil && !tt.anyErr && err != nil:
				t.Fatalf("last migrate: %v", err)
			}
			if got := applied(t, db); !equalInts(got, tt.wantApplied) {
				t.Errorf("applied = %v, want %v", got, tt.wantApplied)
			}
			for _, name := range tt.wantTables {
				if !tableExists(t, db, name) {
					t.Errorf("table %s missing", name)
				}
			}
			for _, name := range tt.noTables {
				if tableExists(t, db, name) {
					t.Errorf("table %s exists", name)
				}
			}
		})
	}
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestOpenSQLiteRefusesNewerSchema is what an operator meets after a
// downgrade: a clear error, and the database untouched.
func TestOpenSQLiteRefusesNewerSchema(t *testing.T) {
	ctx := context.Background()
	db, path := openRawSQLite(t)
	if err := Migrate(ctx, db, SQLite); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, 'from the future', 0)`, SchemaVersion+1); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	s, err := OpenSQLite(path)
	if err == nil {
		s.Close()
		t.Fatal("OpenSQLite accepted a newer schema")
	}
	if !errors.Is(err, ErrSchemaTooNew) {
		t.Fatalf("OpenSQLite = %v, want ErrSchemaTooNew", err)
	}
	t.Log(err)
}

func TestMigrateUnknownDialect(t *testing.T) {
	db, _ := openRawSQLite(t)
	if err := Migrate(context.Background(), db, Dialect(0)); !errors.Is(err, ErrUnknownDialect) {
		t.Fatalf("Migrate = %v, want ErrUnknownDialect", err)
	}
}

func TestRebind(t *testing.T) {
	for _, tt := range []struct {
		name  string
		d     Dialect
		query string
		want  string
	}{
		{"sqlite unchanged", SQLite, queryUpdate, queryUpdate},
		{"postgresql numbered", PostgreSQL, "UPDATE t SET a = ?, b = ? WHERE c = ?", "UPDATE t SET a = $1, b = $2 WHERE c = $3"},
		{"postgresql ten or more", PostgreSQL, "VALUES (?,?,?,?,?,?,?,?,?,?,?)", "VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11)"},
		{"no parameters", PostgreSQL, queryList, queryList},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.d.rebind(tt.query); got != tt.want {
				t.Errorf("rebind = %q, want %q", got, tt.want)
			}
		})
	}
}
