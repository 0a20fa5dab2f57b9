package main

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/krill-xmpp/krill/fast"
	"github.com/krill-xmpp/krill/sasl"
	"github.com/krill-xmpp/krill/storage"
)

// TestUserCommandsRevokeFASTTokens: `krill user passwd` and `krill user
// remove` leave the account no FAST token to log in with.
func TestUserCommandsRevokeFASTTokens(t *testing.T) {
	dataDir := t.TempDir()
	dir := "--data_dir=" + dataDir
	ctx := context.Background()
	if _, errOut, code := krill(t, "", "user", "add", "alice", "--password", "pw", dir); code != 0 {
		t.Fatal(errOut)
	}
	// issue gives alice a token on two devices, as the server would,
	// with the server's default secret file.
	issue := func() {
		t.Helper()
		s, err := storage.OpenSQLite(filepath.Join(dataDir, "krill.db"))
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		secret, err := fast.LoadSecret(filepath.Join(dataDir, fast.SecretFileName))
		if err != nil {
			t.Fatal(err)
		}
		tokens, err := fast.New(s, secret, fast.Options{})
		if err != nil {
			t.Fatal(err)
		}
		for _, client := range []string{"phone", "laptop"} {
			if _, err := tokens.Issue(ctx, "alice", client, sasl.HTSHA256Expr); err != nil {
				t.Fatal(err)
			}
		}
	}
	count := func() int {
		t.Helper()
		s, err := storage.OpenSQLite(filepath.Join(dataDir, "krill.db"))
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		n := 0
		for _, client := range []string{"phone", "laptop"} {
			toks, err := s.FastTokens(ctx, "alice", client)
			if err != nil {
				t.Fatal(err)
			}
			n += len(toks)
		}
		return n
	}
	issue()
	if n := count(); n != 2 {
		t.Fatalf("%d tokens issued, want 2", n)
	}
	if out, errOut, code := krill(t, "", "user", "passwd", "alice", "--password", "new", dir); code != 0 || !strings.Contains(out, "changed") {
		t.Fatal(out, errOut)
	}
	if n := count(); n != 0 {
		t.Fatalf("%d tokens left after krill user passwd, want 0", n)
	}
	issue()
	if out, errOut, code := krill(t, "", "user", "remove", "alice", dir); code != 0 || !strings.Contains(out, "removed") {
		t.Fatal(out, errOut)
	}
	if n := count(); n != 0 {
		t.Fatalf("%d tokens left after krill user remove, want 0", n)
	}
}
