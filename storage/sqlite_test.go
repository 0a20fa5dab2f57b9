package storage

import (
	"bufio"
	"context"
	"database/sql"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/krill-xmpp/krill/sasl"
)

// openTestSQLite opens a new SQLite store in t's temporary directory and
// closes it when t ends.
func openTestSQLite(t testing.TB) *SQL {
	t.Helper()
	s, err := OpenSQLite(filepath.Join(t.TempDir(), "accounts.db"))
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

func TestSQLite(t *testing.T) {
	testAccounts(t, func(t *testing.T) Accounts { return openTestSQLite(t) })
}

func TestSQLiteIM(t *testing.T) {
	testIM(t, func(t *testing.T) imStore { return openTestSQLite(t) })
}

func TestOpenSQLiteCreatesFiles(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "new", "dir")
	path := filepath.Join(dir, "accounts.db")
	s, err := OpenSQLite(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, tt := range []struct {
		path string
		mode os.FileMode
	}{
		{dir, 0o700 | os.ModeDir},
		{path, 0o600},
	} {
		fi, err := os.Stat(tt.path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode() != tt.mode {
			t.Errorf("mode of %s = %v, want %v", tt.path, fi.Mode(), tt.mode)
		}
	}
	for _, tt := range []struct {
		pragma string
		db     *sql.DB
		want   string
	}{
		{"journal_mode", s.write, "wal"},
		{"busy_timeout", s.write, "5000"},
		{"busy_timeout", s.read, "5000"},
		{"foreign_keys", s.write, "1"},
		{"query_only", s.write, "0"},
		{"query_only", s.read, "1"},
	} {
		var got string
		if err := tt.db.QueryRow("PRAGMA " + tt.pragma).Scan(&got); err != nil {
			t.Fatal(err)
		}
		if got != tt.want {
			t.Errorf("PRAGMA %s = %q, want %q", tt.pragma, got, tt.want)
		}
	}
}

func TestOpenSQLiteErrors(t *testing.T) {
	dir := t.TempDir()
	notDB := filepath.Join(dir, "garbage.db")
	if err := os.WriteFile(notDB, []byte(strings.Repeat("not a database ", 100)), 0o600); err != nil {
		t.Fatal(err)
	}
	fileAsDir := filepath.Join(dir, "file")
	if err := os.WriteFile(fileAsDir, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name, path string
	}{
		{"empty path", ""},
		{"not a database", notDB},
		{"parent is a file", filepath.Join(fileAsDir, "accounts.db")},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s, err := OpenSQLite(tt.path)
			if err == nil {
				s.Close()
				t.Fatal("OpenSQLite succeeded")
			}
		})
	}
}

func TestSQLitePathWithURIChars(t *testing.T) {
	path := filepath.Join(t.TempDir(), "a?b#c%20d", "accounts.db")
	s, err := OpenSQLite(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.AddAccount(context.Background(), "alice", fakeCredentials(1)); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("database not at the given path: %v", err)
	}
}

func TestSQLiteReopenPersists(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "accounts.db")
	s, err := OpenSQLite(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.AddAccounts(ctx, fakeAccounts("user", 100)); err != nil {
		t.Fatal(err)
	}
	if err := s.SetCredentials(ctx, "user7", fakeCredentials(1000)); err != nil {
		t.Fatal(err)
	}
	if err := s.RemoveAccount(ctx, "user8"); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s, err = OpenSQLite(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	names, err := s.ListAccounts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(names) != 99 {
		t.Fatalf("after reopen: %d accounts, want 99", len(names))
	}
	wantCredentials(t, s, "user7", fakeCredentials(1000))
	wantCredentials(t, s, "user9", fakeCredentials(9))
	if _, err := s.Credentials(ctx, "user8"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("removed account after reopen: %v, want ErrNotFound", err)
	}
}

// TestSQLiteTwoHandles has two stores on one file, as the server and the
// CLI would be, write at once: busy_timeout and IMMEDIATE transactions must
// make them queue, not fail with SQLITE_BUSY.
func TestSQLiteTwoHandles(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "accounts.db")
	var stores [2]*SQL
	for i := range stores {
		s, err := OpenSQLite(path)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		stores[i] = s
	}
	var wg sync.WaitGroup
	for i, s := range stores {
		prefix := string(rune('a' + i))
		wg.Go(func() {
			for j := range 20 {
				batch := fakeAccounts(prefix+strings.Repeat("x", j)+"-", 50)
				if err := s.AddAccounts(ctx, batch); err != nil {
					t.Errorf("store %d: AddAccounts: %v", i, err)
					return
				}
				if err := s.AddAccount(ctx, prefix+"single"+strings.Repeat("x", j), fakeCredentials(j)); err != nil {
					t.Errorf("store %d: AddAccount: %v", i, err)
					return
				}
			}
		})
	}
	wg.Wait()
	for i, s := range stores {
		names, err := s.ListAccounts(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if want := 2 * 20 * 51; len(names) != want {
			t.Errorf("store %d sees %d accounts, want %d", i, len(names), want)
		}
	}
}

// TestSQLiteStoredForm checks the columns hold exactly the RFC 5803 text of
// each credential, here the "pencil" credentials of testdata/pencil.txt.
func TestSQLiteStoredForm(t *testing.T) {
	ctx := context.Background()
	f, err := os.Open(filepath.Join("testdata", "pencil.txt"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var c sasl.Credentials
	want := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		h, cred, err := sasl.ParseCredential(line)
		if err != nil {
			t.Fatalf("fixture %q: %v", line, err)
		}
		*c.For(h) = cred
		want[columnOf(t, h)] = line
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if len(want) != 3 {
		t.Fatalf("fixture has %d hashes, want 3", len(want))
	}

	s := openTestSQLite(t)
	if err := s.AddAccount(ctx, "juliet", c); err != nil {
		t.Fatal(err)
	}
	for col, text := range want {
		var got string
		if err := s.read.QueryRow("SELECT "+col+" FROM accounts WHERE username = ?", "juliet").Scan(&got); err != nil {
			t.Fatal(err)
		}
		if got != text {
			t.Errorf("%s = %q, want %q", col, got, text)
		}
	}
	wantCredentials(t, s, "juliet", c)
}

func columnOf(t *testing.T, h sasl.Hash) string {
	for _, c := range columns {
		if c.hash == h {
			return c.name
		}
	}
	t.Fatalf("no column for %v", h)
	return ""
}

// TestSQLiteCorruptCredential writes bad values behind the store's back.
func TestSQLiteCorruptCredential(t *testing.T) {
	ctx := context.Background()
	pencil := fakeCredentials(1)
	for _, tt := range []struct {
		name, column, value string
	}{
		{"garbage", "scram_sha256", "not a credential"},
		{"bad base64", "scram_sha1", "SCRAM-SHA-1$4096:!!!$x:y"},
		{"wrong column", "scram_sha512", pencil.SHA256.Text(sasl.SHA256)},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s := openTestSQLite(t)
			if err := s.AddAccount(ctx, "alice", pencil); err != nil {
				t.Fatal(err)
			}
			if _, err := s.write.Exec("UPDATE accounts SET "+tt.column+" = ? WHERE username = ?", tt.value, "alice"); err != nil {
				t.Fatal(err)
			}
			_, err := s.Credentials(ctx, "alice")
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("Credentials = %v, want ErrCorrupt", err)
			}
			if strings.Contains(err.Error(), tt.value) {
				t.Errorf("error %q repeats the stored value", err)
			}
		})
	}
}

func TestSQLiteClosed(t *testing.T) {
	s, err := OpenSQLite(filepath.Join(t.TempDir(), "accounts.db"))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Credentials(context.Background(), "alice"); err == nil {
		t.Error("Credentials after Close succeeded")
	}
	if err := s.AddAccount(context.Background(), "alice", fakeCredentials(1)); err == nil {
		t.Error("AddAccount after Close succeeded")
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close = %v, want nil", err)
	}
}

func TestPing(t *testing.T) {
	s, err := OpenSQLite(filepath.Join(t.TempDir(), "k.db"))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Ping(context.Background()); err != nil {
		t.Fatalf("Ping of an open database: %v", err)
	}
	_ = s.Close()
	if err := s.Ping(context.Background()); err == nil {
		t.Fatal("Ping of a closed database succeeded")
	}
}
