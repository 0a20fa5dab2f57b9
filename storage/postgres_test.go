package storage

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

// postgresEnv names the environment variable holding the DSN of a
// PostgreSQL database the tests may create schemas in. (Not KRILL_*: the
// configuration loader rejects unknown KRILL_ variables.)
const postgresEnv = "TEST_POSTGRES_DSN"

// postgresDSN returns the test database's DSN. Without one the test is
// skipped, except under CI, which must not pass by skipping.
func postgresDSN(t testing.TB) string {
	t.Helper()
	dsn := os.Getenv(postgresEnv)
	if dsn == "" {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s is not set, and CI=true: CI must run the PostgreSQL tests (.ci/run sets the variable up)", postgresEnv)
		}
		t.Skipf("%s is not set: skipping the PostgreSQL tests (make test-postgres runs them against a local server)", postgresEnv)
	}
	return dsn
}

// freshSchema creates a schema of its own for t in the test database and
// returns a DSN whose search_path selects it. The schema is dropped when t
// ends, after the cleanups registered later (closing the store) have run.
func freshSchema(t testing.TB) string {
	t.Helper()
	dsn := postgresDSN(t)
	admin, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatal(err)
	}
	name := fmt.Sprintf("krill_test_%016x", rand.Uint64())
	if _, err := admin.Exec(`CREATE SCHEMA ` + name); err != nil {
		admin.Close()
		t.Fatalf("create schema: %v", err)
	}
	t.Cleanup(func() {
		if _, err := admin.Exec(`DROP SCHEMA ` + name + ` CASCADE`); err != nil {
			t.Errorf("drop schema %s: %v", name, err)
		}
		admin.Close()
	})
	return withSearchPath(t, dsn, name)
}

// withSearchPath adds search_path to a URL or key=value DSN.
func withSearchPath(t testing.TB, dsn, schema string) string {
	if !strings.HasPrefix(dsn, "postgres://") && !strings.HasPrefix(dsn, "postgresql://") {
		return dsn + " search_path=" + schema
	}
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatalf("%s: %v", postgresEnv, err)
	}
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	return u.String()
}

// openTestPostgres opens a store on a fresh schema and closes it when t
// ends.
func openTestPostgres(t testing.TB) *SQL {
	t.Helper()
	s, err := OpenPostgres(context.Background(), freshSchema(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

func TestPostgres(t *testing.T) {
	postgresDSN(t)
	testAccounts(t, func(t *testing.T) Accounts { return openTestPostgres(t) })
}

func TestPostgresIM(t *testing.T) {
	postgresDSN(t)
	testIM(t, func(t *testing.T) imStore { return openTestPostgres(t) })
}

// TestPostgresConcurrentMigrate starts several stores on one empty schema
// at once, as servers started together would: the advisory lock must make
// them queue, so all succeed and each migration is applied once.
func TestPostgresConcurrentMigrate(t *testing.T) {
	dsn := freshSchema(t)
	const n = 6
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			s, err := OpenPostgres(context.Background(), dsn)
			if err != nil {
				t.Errorf("store %d: %v", i, err)
				return
			}
			if err := s.Close(); err != nil {
				t.Errorf("store %d: Close: %v", i, err)
			}
		})
	}
	wg.Wait()
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var count, maxV int
	if err := db.QueryRow(`SELECT COUNT(*), MAX(version) FROM schema_migrations`).Scan(&count, &maxV); err != nil {
		t.Fatal(err)
	}
	if count != SchemaVersion || maxV != SchemaVersion {
		t.Fatalf("schema_migrations has %d rows up to version %d, want %d", count, maxV, SchemaVersion)
	}
}

func TestPostgresRefusesNewerSchema(t *testing.T) {
	ctx := context.Background()
	dsn := freshSchema(t)
	s, err := OpenPostgres(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.write.Exec(`INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, 'from the future', 0)`, SchemaVersion+1); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = OpenPostgres(ctx, dsn)
	if err == nil {
		s.Close()
		t.Fatal("OpenPostgres accepted a newer schema")
	}
	if !errors.Is(err, ErrSchemaTooNew) {
		t.Fatalf("OpenPostgres = %v, want ErrSchemaTooNew", err)
	}
}

func TestOpen(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	for _, tt := range []struct {
		name                 string
		driver, dsn, dataDir string
		wantErr              bool
		wantFile             string // for sqlite: the file that must exist afterwards
		needPostgres         bool
	}{
		{name: "sqlite in the data directory", driver: "sqlite", dataDir: filepath.Join(dir, "data"), wantFile: filepath.Join(dir, "data", "krill.db")},
		{name: "sqlite at the dsn path", driver: "sqlite", dsn: filepath.Join(dir, "other.db"), dataDir: filepath.Join(dir, "unused"), wantFile: filepath.Join(dir, "other.db")},
		{name: "sqlite without a place", driver: "sqlite", wantErr: true},
		{name: "postgres without dsn", driver: "postgres", dataDir: dir, wantErr: true},
		{name: "postgres unreachable", driver: "postgres", dsn: "postgres://nobody:x@127.0.0.1:1/none?sslmode=disable&connect_timeout=5", wantErr: true},
		{name: "unknown driver", driver: "mysql", dsn: "x", wantErr: true},
		{name: "empty driver", driver: "", dataDir: dir, wantErr: true},
		{name: "postgres", driver: "postgres", needPostgres: true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dsn := tt.dsn
			if tt.needPostgres {
				dsn = freshSchema(t)
			}
			s, err := Open(ctx, tt.driver, dsn, tt.dataDir)
			if tt.wantErr {
				if err == nil {
					s.Close()
					t.Fatal("Open succeeded")
				}
				if strings.Contains(err.Error(), "nobody:x") {
					t.Errorf("error %q repeats the DSN's password", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			if err := s.AddAccount(ctx, "alice", fakeCredentials(1)); err != nil {
				t.Fatal(err)
			}
			if tt.wantFile != "" {
				if _, err := os.Stat(tt.wantFile); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}

// TestPostgresRosterLockRetry holds alice's roster lock from another
// connection: an UpdateRosters touching alice must retry (fn runs again)
// rather than fail or wait forever, and succeed once the lock is released;
// with a deadline it fails with the context's error and writes nothing.
func TestPostgresRosterLockRetry(t *testing.T) {
	ctx := context.Background()
	s := openTestPostgres(t)
	holder, err := s.write.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Rollback()
	if _, err := holder.Exec(`SELECT pg_advisory_xact_lock($1, $2)`, rosterLockClass, userLockKey("alice")); err != nil {
		t.Fatal(err)
	}

	cctx, cancel := context.WithCancel(ctx)
	var runs atomic.Int32
	done := make(chan error, 1)
	go func() {
		done <- s.UpdateRosters(cctx, func(tx RosterTx) error {
			if runs.Add(1) == 3 {
				cancel()
			}
			return subscribe(tx, "alice", "bob")
		})
	}()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("UpdateRosters with the lock held = %v, want context.Canceled", err)
	}
	if n := runs.Load(); n < 3 {
		t.Fatalf("fn ran %d times, want at least 3", n)
	}
	wantEmpty(t, s, "alice")
	wantEmpty(t, s, "bob")

	runs.Store(0)
	go func() {
		done <- s.UpdateRosters(ctx, func(tx RosterTx) error {
			if runs.Add(1) == 2 {
				// The first attempt failed on the lock; let the
				// next ones through.
				if err := holder.Rollback(); err != nil {
					return err
				}
			}
			return subscribe(tx, "alice", "bob")
		})
	}()
	if err := <-done; err != nil {
		t.Fatalf("UpdateRosters after release: %v", err)
	}
	if n := runs.Load(); n < 2 {
		t.Fatalf("fn ran %d times, want at least 2", n)
	}
	wantRoster(t, s, "alice", RosterItem{Contact: "bob@localhost", Subscription: SubTo})
	wantRoster(t, s, "bob", RosterItem{Contact: "alice@localhost", Subscription: SubFrom})
}
