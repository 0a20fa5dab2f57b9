package storage

import (
	"bytes"
	"context"
	"crypto/sha512"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/krill-xmpp/krill/sasl"
)

// fakeCredentials returns well-formed credentials derived cheaply from seed:
// storage neither knows nor checks that they come from a password, and
// running PBKDF2 for thousands of accounts would make these tests about
// hashing speed rather than storage speed.
func fakeCredentials(seed int) sasl.Credentials {
	var in [8]byte
	binary.BigEndian.PutUint64(in[:], uint64(seed))
	sum := sha512.Sum512(in[:])
	key := func(n int, tag byte) []byte {
		b := bytes.Clone(sum[:n])
		b[0] ^= tag
		return b
	}
	cred := func(size int, tag byte) sasl.Credential {
		return sasl.Credential{Salt: key(16, tag), Iterations: 4096 + seed%7, StoredKey: key(size, tag+1), ServerKey: key(size, tag+2)}
	}
	return sasl.Credentials{SHA1: cred(20, 1), SHA256: cred(32, 4), SHA512: cred(64, 7)}
}

// fakeAccounts returns n accounts named prefix0, prefix1 ...
func fakeAccounts(prefix string, n int) []NewAccount {
	accounts := make([]NewAccount, n)
	for i := range accounts {
		accounts[i] = NewAccount{Username: prefix + strconv.Itoa(i), Credentials: fakeCredentials(i)}
	}
	return accounts
}

func equalCredential(a, b sasl.Credential) bool {
	return bytes.Equal(a.Salt, b.Salt) && a.Iterations == b.Iterations &&
		bytes.Equal(a.StoredKey, b.StoredKey) && bytes.Equal(a.ServerKey, b.ServerKey)
}

func equalCredentials(a, b sasl.Credentials) bool {
	return equalCredential(a.SHA1, b.SHA1) && equalCredential(a.SHA256, b.SHA256) && equalCredential(a.SHA512, b.SHA512)
}

// wantCredentials fails t unless username's stored credentials are want.
func wantCredentials(t *testing.T, a Accounts, username string, want sasl.Credentials) {
	t.Helper()
	got, err := a.Credentials(context.Background(), username)
	if err != nil {
		t.Fatalf("Credentials(%q): %v", username, err)
	}
	if !equalCredentials(got, want) {
		t.Fatalf("Credentials(%q) = %+v, want %+v", username, got, want)
	}
}

// wantList fails t unless the store holds exactly want, in that order.
func wantList(t *testing.T, a Accounts, want []string) {
	t.Helper()
	got, err := a.ListAccounts(context.Background())
	if err != nil {
		t.Fatalf("ListAccounts: %v", err)
	}
	if !slices.Equal(got, want) {
		if len(got) > 10 || len(want) > 10 {
			t.Fatalf("ListAccounts returned %d names, want %d", len(got), len(want))
		}
		t.Fatalf("ListAccounts = %q, want %q", got, want)
	}
}

// testAccounts is the contract of [Accounts], run against every
// implementation. open returns a new, empty store and closes it when t ends.
func testAccounts(t *testing.T, open func(t *testing.T) Accounts) {
	ctx := context.Background()
	alice, bob := fakeCredentials(1), fakeCredentials(2)
	tests := []struct {
		name string
		run  func(t *testing.T, a Accounts)
	}{
		{"add then get", func(t *testing.T, a Accounts) {
			if err := a.AddAccount(ctx, "alice", alice); err != nil {
				t.Fatal(err)
			}
			wantCredentials(t, a, "alice", alice)
		}},
		{"real derived credentials", func(t *testing.T, a Accounts) {
			c, err := sasl.NewCredentials("pencil", 4096)
			if err != nil {
				t.Fatal(err)
			}
			if err := a.AddAccount(ctx, "alice", c); err != nil {
				t.Fatal(err)
			}
			wantCredentials(t, a, "alice", c)
		}},
		{"absent hashes stay absent", func(t *testing.T, a Accounts) {
			only256 := sasl.Credentials{SHA256: alice.SHA256}
			if err := a.AddAccount(ctx, "alice", only256); err != nil {
				t.Fatal(err)
			}
			wantCredentials(t, a, "alice", only256)
		}},
		{"add existing", func(t *testing.T, a Accounts) {
			if err := a.AddAccount(ctx, "alice", alice); err != nil {
				t.Fatal(err)
			}
			err := a.AddAccount(ctx, "alice", bob)
			if !errors.Is(err, ErrExists) {
				t.Fatalf("second AddAccount = %v, want ErrExists", err)
			}
			wantCredentials(t, a, "alice", alice)
		}},
		{"usernames are compared byte for byte", func(t *testing.T, a Accounts) {
			if err := a.AddAccount(ctx, "alice", alice); err != nil {
				t.Fatal(err)
			}
			if err := a.AddAccount(ctx, "Alice", bob); err != nil {
				t.Fatalf("AddAccount(Alice) = %v; normalising is the caller's job", err)
			}
			wantCredentials(t, a, "alice", alice)
			wantCredentials(t, a, "Alice", bob)
		}},
		{"add empty username", func(t *testing.T, a Accounts) {
			if err := a.AddAccount(ctx, "", alice); !errors.Is(err, ErrEmptyUsername) {
				t.Fatalf("AddAccount(\"\") = %v, want ErrEmptyUsername", err)
			}
			wantList(t, a, nil)
		}},
		{"add without credentials", func(t *testing.T, a Accounts) {
			if err := a.AddAccount(ctx, "alice", sasl.Credentials{}); !errors.Is(err, ErrNoCredentials) {
				t.Fatalf("AddAccount = %v, want ErrNoCredentials", err)
			}
			wantList(t, a, nil)
		}},
		{"add malformed credential", func(t *testing.T, a Accounts) {
			bad := alice
			bad.SHA256.StoredKey = bad.SHA256.StoredKey[:5]
			if err := a.AddAccount(ctx, "alice", bad); !errors.Is(err, sasl.ErrInvalidCredential) {
				t.Fatalf("AddAccount = %v, want sasl.ErrInvalidCredential", err)
			}
			wantList(t, a, nil)
		}},
		{"get missing", func(t *testing.T, a Accounts) {
			if _, err := a.Credentials(ctx, "nobody"); !errors.Is(err, ErrNotFound) {
				t.Fatalf("Credentials = %v, want ErrNotFound", err)
			}
		}},
		{"set credentials", func(t *testing.T, a Accounts) {
			if err := a.AddAccount(ctx, "alice", alice); err != nil {
				t.Fatal(err)
			}
			if err := a.AddAccount(ctx, "bob", bob); err != nil {
				t.Fatal(err)
			}
			if err := a.SetCredentials(ctx, "alice", bob); err != nil {
				t.Fatal(err)
			}
			wantCredentials(t, a, "alice", bob)
			wantCredentials(t, a, "bob", bob)
		}},
		{"set removes absent hashes", func(t *testing.T, a Accounts) {
			if err := a.AddAccount(ctx, "alice", alice); err != nil {
				t.Fatal(err)
			}
			only512 := sasl.Credentials{SHA512: bob.SHA512}
			if err := a.SetCredentials(ctx, "alice", only512); err != nil {
				t.Fatal(err)
			}
			wantCredentials(t, a, "alice", only512)
		}},
		{"set without credentials", func(t *testing.T, a Accounts) {
			if err := a.AddAccount(ctx, "alice", alice); err != nil {
				t.Fatal(err)
			}
			if err := a.SetCredentials(ctx, "alice", sasl.Credentials{}); !errors.Is(err, ErrNoCredentials) {
				t.Fatalf("SetCredentials = %v, want ErrNoCredentials", err)
			}
			wantCredentials(t, a, "alice", alice)
		}},
		{"set missing", func(t *testing.T, a Accounts) {
			if err := a.SetCredentials(ctx, "nobody", alice); !errors.Is(err, ErrNotFound) {
				t.Fatalf("SetCredentials = %v, want ErrNotFound", err)
			}
			wantList(t, a, nil)
		}},
		{"remove", func(t *testing.T, a Accounts) {
			if err := a.AddAccount(ctx, "alice", alice); err != nil {
				t.Fatal(err)
			}
			if err := a.AddAccount(ctx, "bob", bob); err != nil {
				t.Fatal(err)
			}
			if err := a.RemoveAccount(ctx, "alice"); err != nil {
				t.Fatal(err)
			}
			if _, err := a.Credentials(ctx, "alice"); !errors.Is(err, ErrNotFound) {
				t.Fatalf("Credentials after remove = %v, want ErrNotFound", err)
			}
			if err := a.RemoveAccount(ctx, "alice"); !errors.Is(err, ErrNotFound) {
				t.Fatalf("second RemoveAccount = %v, want ErrNotFound", err)
			}
			wantList(t, a, []string{"bob"})
			// The name is free again.
			if err := a.AddAccount(ctx, "alice", bob); err != nil {
				t.Fatal(err)
			}
			wantCredentials(t, a, "alice", bob)
		}},
		{"list empty", func(t *testing.T, a Accounts) {
			wantList(t, a, nil)
		}},
		{"list is sorted byte-wise", func(t *testing.T, a Accounts) {
			names := []string{"zoë", "bob", "Zed", "alice", "ålice", "a", "b1", "b10", "b2"}
			for i, n := range names {
				if err := a.AddAccount(ctx, n, fakeCredentials(i)); err != nil {
					t.Fatal(err)
				}
			}
			wantList(t, a, []string{"Zed", "a", "alice", "b1", "b10", "b2", "bob", "zoë", "ålice"})
		}},
		{"bulk add 10000", func(t *testing.T, a Accounts) {
			accounts := fakeAccounts("user", 10000)
			if err := a.AddAccounts(ctx, accounts); err != nil {
				t.Fatal(err)
			}
			names, err := a.ListAccounts(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if len(names) != len(accounts) {
				t.Fatalf("ListAccounts returned %d names, want %d", len(names), len(accounts))
			}
			for _, i := range []int{0, 1, 4999, 9999} {
				wantCredentials(t, a, accounts[i].Username, accounts[i].Credentials)
			}
		}},
		{"bulk add empty", func(t *testing.T, a Accounts) {
			if err := a.AddAccounts(ctx, nil); err != nil {
				t.Fatal(err)
			}
			wantList(t, a, nil)
		}},
		{"bulk duplicate in batch writes nothing", func(t *testing.T, a Accounts) {
			accounts := fakeAccounts("user", 100)
			accounts[70].Username = "user3"
			err := a.AddAccounts(ctx, accounts)
			if !errors.Is(err, ErrExists) || !strings.Contains(err.Error(), `"user3"`) {
				t.Fatalf("AddAccounts = %v, want ErrExists naming user3", err)
			}
			wantList(t, a, nil)
		}},
		{"bulk existing name writes nothing", func(t *testing.T, a Accounts) {
			if err := a.AddAccount(ctx, "user50", alice); err != nil {
				t.Fatal(err)
			}
			err := a.AddAccounts(ctx, fakeAccounts("user", 100))
			if !errors.Is(err, ErrExists) || !strings.Contains(err.Error(), `"user50"`) {
				t.Fatalf("AddAccounts = %v, want ErrExists naming user50", err)
			}
			wantList(t, a, []string{"user50"})
			wantCredentials(t, a, "user50", alice)
		}},
		{"bulk invalid account writes nothing", func(t *testing.T, a Accounts) {
			accounts := fakeAccounts("user", 10)
			accounts[9].Credentials = sasl.Credentials{}
			if err := a.AddAccounts(ctx, accounts); !errors.Is(err, ErrNoCredentials) {
				t.Fatalf("AddAccounts = %v, want ErrNoCredentials", err)
			}
			wantList(t, a, nil)
		}},
		{"cancelled context", func(t *testing.T, a Accounts) {
			if err := a.AddAccount(ctx, "alice", alice); err != nil {
				t.Fatal(err)
			}
			cctx, cancel := context.WithCancel(ctx)
			cancel()
			if _, err := a.Credentials(cctx, "alice"); !errors.Is(err, context.Canceled) {
				t.Errorf("Credentials = %v, want context.Canceled", err)
			}
			if err := a.AddAccount(cctx, "bob", bob); !errors.Is(err, context.Canceled) {
				t.Errorf("AddAccount = %v, want context.Canceled", err)
			}
			if err := a.AddAccounts(cctx, fakeAccounts("user", 10)); !errors.Is(err, context.Canceled) {
				t.Errorf("AddAccounts = %v, want context.Canceled", err)
			}
			wantList(t, a, []string{"alice"})
		}},
		{"concurrent logins and writes", func(t *testing.T, a Accounts) {
			testConcurrent(t, a)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.run(t, open(t))
		})
	}
}

// testConcurrent runs 8 goroutines that each log in (look up credentials)
// and create, change and delete accounts of their own, a bounded number of
// times, then checks what is left.
func testConcurrent(t *testing.T, a Accounts) {
	const (
		workers = 8
		rounds  = 40
		shared  = 50
	)
	ctx := context.Background()
	if err := a.AddAccounts(ctx, fakeAccounts("shared", shared)); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range rounds {
				// Logins: shared accounts nobody changes.
				n := (w*rounds + i) % shared
				got, err := a.Credentials(ctx, "shared"+strconv.Itoa(n))
				if err != nil {
					t.Errorf("worker %d: Credentials: %v", w, err)
					return
				}
				if !equalCredentials(got, fakeCredentials(n)) {
					t.Errorf("worker %d: Credentials(shared%d) returned another account's credentials", w, n)
					return
				}
				// Writes: each worker owns the names w<w>-<i>.
				name := fmt.Sprintf("w%d-%d", w, i)
				if err := a.AddAccount(ctx, name, fakeCredentials(i)); err != nil {
					t.Errorf("worker %d: AddAccount: %v", w, err)
					return
				}
				if err := a.SetCredentials(ctx, name, fakeCredentials(i+1)); err != nil {
					t.Errorf("worker %d: SetCredentials: %v", w, err)
					return
				}
				if i%2 == 1 {
					if err := a.RemoveAccount(ctx, name); err != nil {
						t.Errorf("worker %d: RemoveAccount: %v", w, err)
						return
					}
				}
				if i%10 == 0 {
					batch := fakeAccounts(fmt.Sprintf("b%d-%d-", w, i), 5)
					if err := a.AddAccounts(ctx, batch); err != nil {
						t.Errorf("worker %d: AddAccounts: %v", w, err)
						return
					}
				}
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	var want []string
	for n := range shared {
		want = append(want, "shared"+strconv.Itoa(n))
	}
	for w := range workers {
		for i := 0; i < rounds; i += 2 {
			want = append(want, fmt.Sprintf("w%d-%d", w, i))
		}
		for i := 0; i < rounds; i += 10 {
			for j := range 5 {
				want = append(want, fmt.Sprintf("b%d-%d-%d", w, i, j))
			}
		}
	}
	slices.Sort(want)
	wantList(t, a, want)
	wantCredentials(t, a, "w3-4", fakeCredentials(5))
}
