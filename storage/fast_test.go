package storage

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/krill-xmpp/krill/sasl"
)

// fastStore is what the FAST tests need of a store.
type fastStore interface {
	Accounts
	FastTokens
	AddCredential(ctx context.Context, username string, h sasl.Hash, c sasl.Credential) error
}

func TestSQLiteFastTokens(t *testing.T) {
	testFastTokens(t, func(t *testing.T) fastStore { return openTestSQLite(t) })
}

func TestPostgresFastTokens(t *testing.T) {
	postgresDSN(t)
	testFastTokens(t, func(t *testing.T) fastStore { return openTestPostgres(t) })
}

// fastIDs returns the ids of username's tokens for client, oldest first.
func fastIDs(t *testing.T, s FastTokens, username, client string) []string {
	t.Helper()
	toks, err := s.FastTokens(context.Background(), username, client)
	if err != nil {
		t.Fatal(err)
	}
	ids := make([]string, len(toks))
	for i, tok := range toks {
		ids[i] = tok.ID
	}
	return ids
}

func wantFastIDs(t *testing.T, s FastTokens, username, client string, want ...string) {
	t.Helper()
	if got := fastIDs(t, s, username, client); !slices.Equal(got, want) {
		t.Fatalf("tokens of %s/%s = %q, want %q", username, client, got, want)
	}
}

func testFastTokens(t *testing.T, open func(t *testing.T) fastStore) {
	ctx := context.Background()
	base := time.Unix(1_800_000_000, 0)
	tok := func(user, id, client string, created time.Duration) FastToken {
		return FastToken{Username: user, ID: id, Client: client, Mechanism: "HT-SHA-256-EXPR",
			Created: base.Add(created), Expires: base.Add(created + 24*time.Hour)}
	}
	add := func(t *testing.T, s FastTokens, ft FastToken, max int, keep string) {
		t.Helper()
		if err := s.AddFastToken(ctx, ft, max, keep); err != nil {
			t.Fatal(err)
		}
	}
	newStore := func(t *testing.T, users ...string) fastStore {
		s := open(t)
		for i, u := range users {
			if err := s.AddAccount(ctx, u, fakeCredentials(i)); err != nil {
				t.Fatal(err)
			}
		}
		return s
	}

	t.Run("round trip", func(t *testing.T) {
		s := newStore(t, "alice")
		want := tok("alice", "id1", "phone", 0)
		add(t, s, want, 3, "")
		got, err := s.FastTokens(ctx, "alice", "phone")
		if err != nil {
			t.Fatal(err)
		}
		want.LastCount = -1
		if len(got) != 1 || !got[0].Created.Equal(want.Created) || !got[0].Expires.Equal(want.Expires) ||
			got[0].ID != want.ID || got[0].Mechanism != want.Mechanism || got[0].LastCount != -1 || !got[0].Used.IsZero() {
			t.Fatalf("got %+v, want %+v", got, want)
		}
		wantFastIDs(t, s, "alice", "laptop")
		wantFastIDs(t, s, "bob", "phone")
		// Another client (the same client's unused token would be
		// replaced) with the same id.
		dup := want
		dup.Client = "laptop"
		if err := s.AddFastToken(ctx, dup, 3, ""); !errors.Is(err, ErrExists) {
			t.Fatalf("same id again: %v, want ErrExists", err)
		}
	})

	t.Run("invalid input", func(t *testing.T) {
		s := newStore(t)
		for name, ft := range map[string]FastToken{
			"empty username":    tok("", "id", "c", 0),
			"empty id":          tok("alice", "", "c", 0),
			"client not UTF-8":  tok("alice", "id", "\xff", 0),
			"NUL in client":     tok("alice", "id", "a\x00b", 0),
			"mechanism invalid": {Username: "alice", ID: "id", Mechanism: "\xc0"},
		} {
			if err := s.AddFastToken(ctx, ft, 3, ""); err == nil {
				t.Errorf("%s: stored", name)
			}
		}
	})

	t.Run("counter", func(t *testing.T) {
		s := newStore(t, "alice")
		add(t, s, tok("alice", "id1", "phone", 0), 3, "")
		now := base.Add(time.Hour)
		steps := []struct {
			count int64
			want  error
		}{
			{1, nil},
			{1, ErrReplayed}, // the same count again: a replay
			{0, ErrReplayed},
			{5, nil},
			{-1, nil}, // no count attribute: accepted, counter kept
			{5, ErrReplayed},
			{6, nil},
		}
		for i, st := range steps {
			err := s.UseFastToken(ctx, "alice", "id1", st.count, now, false)
			if !errors.Is(err, st.want) || (st.want == nil && err != nil) {
				t.Fatalf("step %d, count %d: %v, want %v", i, st.count, err, st.want)
			}
		}
		got, _ := s.FastTokens(ctx, "alice", "phone")
		if got[0].LastCount != 6 || !got[0].Used.Equal(now) {
			t.Fatalf("after use: %+v", got[0])
		}
		if err := s.UseFastToken(ctx, "alice", "nope", 1, now, false); !errors.Is(err, ErrNotFound) {
			t.Fatalf("unknown id: %v, want ErrNotFound", err)
		}
	})

	t.Run("concurrent replay", func(t *testing.T) {
		// Eight logins race with one count: exactly one wins.
		s := newStore(t, "alice")
		add(t, s, tok("alice", "id1", "phone", 0), 3, "")
		var wg sync.WaitGroup
		errs := make([]error, 8)
		for i := range errs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs[i] = s.UseFastToken(ctx, "alice", "id1", 7, base, false)
			}()
		}
		wg.Wait()
		ok := 0
		for _, err := range errs {
			switch {
			case err == nil:
				ok++
			case !errors.Is(err, ErrReplayed):
				t.Fatal(err)
			}
		}
		if ok != 1 {
			t.Fatalf("%d of 8 logins with one count succeeded, want 1", ok)
		}
	})

	t.Run("rotation", func(t *testing.T) {
		// XEP-0484 section 3.5: the new token is issued while the
		// current one stays; using the new one drops the current one.
		s := newStore(t, "alice")
		add(t, s, tok("alice", "cur", "phone", 0), 3, "")
		if err := s.UseFastToken(ctx, "alice", "cur", 1, base.Add(time.Hour), false); err != nil {
			t.Fatal(err)
		}
		add(t, s, tok("alice", "new", "phone", time.Hour), 3, "cur")
		wantFastIDs(t, s, "alice", "phone", "cur", "new")
		// The client never got "new" and logs in with "cur" again; a
		// second rotation replaces the unused "new".
		if err := s.UseFastToken(ctx, "alice", "cur", 2, base.Add(2*time.Hour), false); err != nil {
			t.Fatal(err)
		}
		add(t, s, tok("alice", "new2", "phone", 2*time.Hour), 3, "cur")
		wantFastIDs(t, s, "alice", "phone", "cur", "new2")
		if err := s.UseFastToken(ctx, "alice", "new2", 0, base.Add(3*time.Hour), false); err != nil {
			t.Fatal(err)
		}
		wantFastIDs(t, s, "alice", "phone", "new2")
	})

	t.Run("invalidate", func(t *testing.T) {
		s := newStore(t, "alice")
		add(t, s, tok("alice", "id1", "phone", 0), 3, "")
		add(t, s, tok("alice", "id2", "laptop", 0), 3, "")
		if err := s.UseFastToken(ctx, "alice", "id1", -1, base, true); err != nil {
			t.Fatal(err)
		}
		wantFastIDs(t, s, "alice", "phone")
		wantFastIDs(t, s, "alice", "laptop", "id2")
	})

	t.Run("cap per account", func(t *testing.T) {
		s := newStore(t, "alice", "bob")
		for i, c := range []string{"a", "b", "c"} {
			add(t, s, tok("alice", "id-"+c, c, time.Duration(i)*time.Minute), 3, "")
		}
		add(t, s, tok("bob", "bob1", "a", 0), 3, "")
		// A fourth device: the token expiring first goes.
		add(t, s, tok("alice", "id-d", "d", time.Hour), 3, "")
		wantFastIDs(t, s, "alice", "a")
		wantFastIDs(t, s, "alice", "d", "id-d")
		wantFastIDs(t, s, "bob", "a", "bob1")
		// keep is never evicted, even when it expires first.
		if err := s.UseFastToken(ctx, "alice", "id-b", -1, base, false); err != nil {
			t.Fatal(err)
		}
		add(t, s, tok("alice", "id-b2", "b", 2*time.Hour), 3, "id-b")
		wantFastIDs(t, s, "alice", "b", "id-b", "id-b2")
		wantFastIDs(t, s, "alice", "c")
		// max <= 0: no cap.
		for i := range 5 {
			add(t, s, tok("bob", "x"+string(rune('0'+i)), "x"+string(rune('0'+i)), 0), 0, "")
		}
		toks := 0
		for _, c := range []string{"a", "x0", "x1", "x2", "x3", "x4"} {
			toks += len(fastIDs(t, s, "bob", c))
		}
		if toks != 6 {
			t.Fatalf("bob has %d tokens without a cap, want 6", toks)
		}
	})

	t.Run("expiry", func(t *testing.T) {
		s := newStore(t, "alice", "bob")
		add(t, s, tok("alice", "old", "a", 0), 3, "")
		add(t, s, tok("bob", "young", "b", 48*time.Hour), 3, "")
		add(t, s, tok("bob", "old", "a", 0), 3, "")
		n, err := s.DeleteExpiredFastTokens(ctx, base.Add(25*time.Hour))
		if err != nil || n != 2 {
			t.Fatalf("DeleteExpiredFastTokens = %d, %v; want 2", n, err)
		}
		wantFastIDs(t, s, "bob", "b", "young")
		// Adding a token prunes the account's expired ones too.
		add(t, s, tok("alice", "a1", "a", 0), 3, "")
		add(t, s, tok("alice", "a2", "b", 30*time.Hour), 3, "")
		wantFastIDs(t, s, "alice", "a")
	})

	t.Run("password change and removal", func(t *testing.T) {
		s := newStore(t, "alice", "bob")
		add(t, s, tok("alice", "id1", "phone", 0), 3, "")
		add(t, s, tok("alice", "id2", "laptop", 0), 3, "")
		add(t, s, tok("bob", "id1", "phone", 0), 3, "")
		if err := s.SetCredentials(ctx, "alice", fakeCredentials(9)); err != nil {
			t.Fatal(err)
		}
		wantFastIDs(t, s, "alice", "phone")
		wantFastIDs(t, s, "alice", "laptop")
		wantFastIDs(t, s, "bob", "phone", "id1")
		if err := s.SetCredentials(ctx, "nobody", fakeCredentials(9)); !errors.Is(err, ErrNotFound) {
			t.Fatalf("SetCredentials of nobody: %v, want ErrNotFound", err)
		}
		if err := s.RemoveAccount(ctx, "bob"); err != nil {
			t.Fatal(err)
		}
		wantFastIDs(t, s, "bob", "phone")
		add(t, s, tok("alice", "id3", "phone", 0), 3, "")
		if n, err := s.DeleteFastTokens(ctx, "alice"); err != nil || n != 1 {
			t.Fatalf("DeleteFastTokens = %d, %v; want 1", n, err)
		}
	})
}

func TestSQLiteAddCredential(t *testing.T) {
	testAddCredential(t, func(t *testing.T) fastStore { return openTestSQLite(t) })
}

func TestPostgresAddCredential(t *testing.T) {
	postgresDSN(t)
	testAddCredential(t, func(t *testing.T) fastStore { return openTestPostgres(t) })
}

// testAddCredential: a XEP-0480 upgrade adds a missing hash and nothing
// else; it never replaces one and keeps FAST tokens.
func testAddCredential(t *testing.T, open func(t *testing.T) fastStore) {
	ctx := context.Background()
	s := open(t)
	full := fakeCredentials(1)
	sha1Only := sasl.Credentials{SHA1: full.SHA1}
	if err := s.AddAccount(ctx, "old", sha1Only); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	if err := s.AddFastToken(ctx, FastToken{Username: "old", ID: "t", Client: "c", Mechanism: "HT-SHA-256-NONE", Created: now, Expires: now.Add(time.Hour)}, 3, ""); err != nil {
		t.Fatal(err)
	}
	if err := s.AddCredential(ctx, "old", sasl.SHA256, full.SHA256); err != nil {
		t.Fatal(err)
	}
	wantCredentials(t, s, "old", sasl.Credentials{SHA1: full.SHA1, SHA256: full.SHA256})
	other := fakeCredentials(2)
	if err := s.AddCredential(ctx, "old", sasl.SHA256, other.SHA256); !errors.Is(err, ErrExists) {
		t.Fatalf("second SHA-256 credential: %v, want ErrExists", err)
	}
	wantCredentials(t, s, "old", sasl.Credentials{SHA1: full.SHA1, SHA256: full.SHA256})
	if err := s.AddCredential(ctx, "nobody", sasl.SHA256, full.SHA256); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown account: %v, want ErrNotFound", err)
	}
	if err := s.AddCredential(ctx, "old", sasl.SHA512, sasl.Credential{}); err == nil {
		t.Fatal("empty credential stored")
	}
	wantFastIDs(t, s, "old", "c", "t")
}
