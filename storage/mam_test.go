package storage

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"testing"

	"github.com/krill-xmpp/krill/sasl"
)

// archiveStore is what the archive suite needs.
type archiveStore interface {
	Accounts
	IM
	Archive
}

func TestSQLiteArchive(t *testing.T) {
	testArchive(t, func(t *testing.T) archiveStore { return openTestSQLite(t) })
}

func TestPostgresArchive(t *testing.T) {
	postgresDSN(t)
	testArchive(t, func(t *testing.T) archiveStore { return openTestPostgres(t) })
}

func addUsers(t testing.TB, s Accounts, users ...string) {
	t.Helper()
	creds, err := sasl.NewCredentials("pw", 4096)
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range users {
		if err := s.AddAccount(context.Background(), u, creds); err != nil {
			t.Fatal(err)
		}
	}
}

func ids(items []ArchiveItem) []int64 {
	out := make([]int64, len(items))
	for i, it := range items {
		out[i] = it.ID
	}
	return out
}

func seq(from, to int64) []int64 {
	var out []int64
	for i := from; i <= to; i++ {
		out = append(out, i)
	}
	return out
}

// testArchive runs the archive suite on stores made by open.
func testArchive(t *testing.T, open func(t *testing.T) archiveStore) {
	ctx := context.Background()
	// fill gives alice 1..20: odd IDs with bob (resource "a" for 1..9,
	// "b" above), even IDs with carol.
	fill := func(t *testing.T, s archiveStore) {
		addUsers(t, s, "alice", "bob")
		var recs []ArchiveRecord
		for i := int64(1); i <= 20; i++ {
			with, res := "carol@localhost", ""
			if i%2 == 1 {
				with, res = "bob@localhost", "a"
				if i > 9 {
					res = "b"
				}
			}
			recs = append(recs, ArchiveRecord{User: "alice", ID: i, With: with, WithResource: res,
				Stanza: []byte("<message><body>" + strconv.FormatInt(i, 10) + "</body></message>")})
		}
		// A record for a user with no account is skipped.
		recs = append(recs, ArchiveRecord{User: "ghost", ID: 1, With: "bob@localhost", Stanza: []byte("<message/>")})
		if err := s.AppendArchive(ctx, recs); err != nil {
			t.Fatal(err)
		}
	}
	pages := []struct {
		name string
		q    ArchiveQuery
		want []int64
	}{
		{"first page", ArchiveQuery{Max: 5}, seq(1, 5)},
		{"after", ArchiveQuery{After: 5, Max: 5}, seq(6, 10)},
		{"last page", ArchiveQuery{Max: 5, Backward: true}, seq(16, 20)},
		{"before", ArchiveQuery{Before: 16, Max: 5, Backward: true}, seq(11, 15)},
		{"before near start", ArchiveQuery{Before: 3, Max: 5, Backward: true}, seq(1, 2)},
		{"between", ArchiveQuery{After: 3, Before: 8, Max: 50}, seq(4, 7)},
		{"with bare", ArchiveQuery{With: "bob@localhost", Max: 4}, []int64{1, 3, 5, 7}},
		{"with bare after", ArchiveQuery{With: "bob@localhost", After: 7, Max: 4}, []int64{9, 11, 13, 15}},
		{"with full", ArchiveQuery{With: "bob@localhost", WithResource: "b", Max: 50}, []int64{11, 13, 15, 17, 19}},
		{"with other", ArchiveQuery{With: "carol@localhost", Max: 3, Backward: true}, []int64{16, 18, 20}},
		{"with nobody", ArchiveQuery{With: "dave@localhost", Max: 3}, nil},
		{"past the end", ArchiveQuery{After: 20, Max: 3}, nil},
	}
	t.Run("pages", func(t *testing.T) {
		s := open(t)
		fill(t, s)
		for _, tc := range pages {
			tc.q.User = "alice"
			got, err := s.ArchivePage(ctx, tc.q)
			if err != nil {
				t.Fatalf("%s: %v", tc.name, err)
			}
			if !slices.Equal(ids(got), tc.want) {
				t.Errorf("%s: ids %v, want %v", tc.name, ids(got), tc.want)
			}
			for _, it := range got {
				if want := "<message><body>" + strconv.FormatInt(it.ID, 10) + "</body></message>"; string(it.Stanza) != want {
					t.Errorf("%s: item %d = %q", tc.name, it.ID, it.Stanza)
				}
			}
		}
		if got, err := s.ArchivePage(ctx, ArchiveQuery{User: "ghost", Max: 5}); err != nil || len(got) != 0 {
			t.Errorf("ghost's archive = %v, %v; want empty", got, err)
		}
	})
	t.Run("count", func(t *testing.T) {
		s := open(t)
		fill(t, s)
		for _, tc := range []struct {
			q     ArchiveQuery
			limit int
			n     int
			exact bool
		}{
			{ArchiveQuery{User: "alice"}, 100, 20, true},
			{ArchiveQuery{User: "alice"}, 20, 20, true},
			{ArchiveQuery{User: "alice"}, 19, 19, false},
			{ArchiveQuery{User: "alice", With: "bob@localhost"}, 100, 10, true},
			{ArchiveQuery{User: "alice", With: "bob@localhost", WithResource: "a"}, 100, 5, true},
			{ArchiveQuery{User: "alice", After: 15}, 100, 5, true},
			{ArchiveQuery{User: "bob"}, 100, 0, true},
		} {
			n, exact, err := s.ArchiveCount(ctx, tc.q, tc.limit)
			if err != nil || n != tc.n || exact != tc.exact {
				t.Errorf("count %+v limit %d = %d, %v, %v; want %d, %v", tc.q, tc.limit, n, exact, err, tc.n, tc.exact)
			}
		}
	})
	t.Run("item and bounds", func(t *testing.T) {
		s := open(t)
		if _, _, ok, err := s.ArchiveBounds(ctx, "alice"); ok || err != nil {
			t.Fatalf("bounds of nothing = %v, %v", ok, err)
		}
		fill(t, s)
		it, ok, err := s.ArchiveItem(ctx, "alice", 7)
		if err != nil || !ok || string(it.Stanza) != "<message><body>7</body></message>" {
			t.Errorf("item 7 = %q, %v, %v", it.Stanza, ok, err)
		}
		if _, ok, err := s.ArchiveItem(ctx, "bob", 7); ok || err != nil {
			t.Errorf("bob's item 7 = %v, %v; want none", ok, err)
		}
		first, last, ok, err := s.ArchiveBounds(ctx, "alice")
		if err != nil || !ok || first != 1 || last != 20 {
			t.Errorf("bounds = %d, %d, %v, %v; want 1, 20", first, last, ok, err)
		}
		// The same ID twice is skipped, not an error.
		if err := s.AppendArchive(ctx, []ArchiveRecord{{User: "alice", ID: 7, With: "x@y", Stanza: []byte("<x/>")}}); err != nil {
			t.Fatal(err)
		}
		if it, _, _ := s.ArchiveItem(ctx, "alice", 7); string(it.Stanza) != "<message><body>7</body></message>" {
			t.Errorf("item 7 replaced by %q", it.Stanza)
		}
	})
	t.Run("expire", func(t *testing.T) {
		s := open(t)
		fill(t, s)
		if err := s.AppendArchive(ctx, []ArchiveRecord{{User: "bob", ID: 3, With: "alice@localhost", Stanza: []byte("<m/>")}}); err != nil {
			t.Fatal(err)
		}
		// Bounded batches: IDs below 11 are alice's 1..10 and bob's 3.
		total := 0
		for range 10 {
			n, err := s.ExpireArchive(ctx, 11, 4)
			if err != nil {
				t.Fatal(err)
			}
			if n > 4 {
				t.Fatalf("expired %d in a batch of 4", n)
			}
			total += n
			if n == 0 {
				break
			}
		}
		if total != 11 {
			t.Errorf("expired %d, want 11", total)
		}
		got, _ := s.ArchivePage(ctx, ArchiveQuery{User: "alice", Max: 50})
		if !slices.Equal(ids(got), seq(11, 20)) {
			t.Errorf("left %v", ids(got))
		}
		if got, _ := s.ArchivePage(ctx, ArchiveQuery{User: "bob", Max: 50}); len(got) != 0 {
			t.Errorf("bob left %v", ids(got))
		}
	})
	t.Run("room archive", func(t *testing.T) {
		// A MUC room's archive is keyed by the room's bare JID, has no
		// account, and is deleted in bounded batches below an ID when
		// the room is destroyed; the accounts' archives are untouched.
		s := open(t)
		fill(t, s)
		const room = "alice@conference.localhost"
		var recs []ArchiveRecord
		for i := int64(1); i <= 7; i++ {
			recs = append(recs, ArchiveRecord{User: room, Room: true, ID: i, With: room, WithResource: "nick", Stanza: []byte("<message/>")})
		}
		recs = append(recs, ArchiveRecord{User: "ghost@conference.localhost", ID: 1, With: "x@y", Stanza: []byte("<m/>")})
		if err := s.AppendArchive(ctx, recs); err != nil {
			t.Fatal(err)
		}
		if got, _ := s.ArchivePage(ctx, ArchiveQuery{User: room, After: 2, Max: 3}); !slices.Equal(ids(got), seq(3, 5)) {
			t.Errorf("room page = %v", ids(got))
		}
		if got, _ := s.ArchivePage(ctx, ArchiveQuery{User: "ghost@conference.localhost", Max: 3}); len(got) != 0 {
			t.Errorf("a record not marked Room was stored without an account: %v", ids(got))
		}
		total := 0
		for range 10 {
			n, err := s.DeleteArchive(ctx, room, 7, 3)
			if err != nil {
				t.Fatal(err)
			}
			if n > 3 {
				t.Fatalf("deleted %d in a batch of 3", n)
			}
			total += n
			if n == 0 {
				break
			}
		}
		if total != 6 {
			t.Errorf("deleted %d, want 6 (below ID 7)", total)
		}
		if got, _ := s.ArchivePage(ctx, ArchiveQuery{User: room, Max: 50}); !slices.Equal(ids(got), []int64{7}) {
			t.Errorf("room archive left %v, want [7]", ids(got))
		}
		if got, _ := s.ArchivePage(ctx, ArchiveQuery{User: "alice", Max: 50}); len(got) != 20 {
			t.Errorf("alice's archive has %d after the room's deletion, want 20", len(got))
		}
	})
	t.Run("prefs", func(t *testing.T) {
		s := open(t)
		addUsers(t, s, "alice", "bob")
		if _, ok, err := s.ArchivePrefs(ctx, "alice"); ok || err != nil {
			t.Fatalf("prefs before any = %v, %v", ok, err)
		}
		p := ArchivePrefs{Default: ArchiveRoster, Always: []string{"bob@localhost", "x@y"}, Never: []string{"spam@z"}}
		if err := s.SetArchivePrefs(ctx, "alice", p); err != nil {
			t.Fatal(err)
		}
		if err := s.SetArchivePrefs(ctx, "bob", ArchivePrefs{Default: ArchiveNever}); err != nil {
			t.Fatal(err)
		}
		if err := s.SetArchivePrefs(ctx, "ghost", p); !errors.Is(err, ErrNotFound) {
			t.Errorf("prefs of no account = %v, want ErrNotFound", err)
		}
		if err := s.SetArchivePrefs(ctx, "alice", ArchivePrefs{Always: []string{"a\nb"}}); err == nil {
			t.Error("a JID with a newline was stored")
		}
		got, ok, err := s.ArchivePrefs(ctx, "alice")
		if err != nil || !ok || got.Default != ArchiveRoster || !slices.Equal(got.Always, p.Always) || !slices.Equal(got.Never, p.Never) {
			t.Errorf("prefs = %+v, %v, %v; want %+v", got, ok, err, p)
		}
		all := map[string]ArchiveMode{}
		if err := s.AllArchivePrefs(ctx, func(u string, p ArchivePrefs) { all[u] = p.Default }); err != nil {
			t.Fatal(err)
		}
		if len(all) != 2 || all["alice"] != ArchiveRoster || all["bob"] != ArchiveNever {
			t.Errorf("all prefs = %v", all)
		}
	})
	t.Run("roster", func(t *testing.T) {
		s := open(t)
		addUsers(t, s, "alice")
		put(t, s, "alice", RosterItem{Contact: "bob@localhost"})
		for contact, want := range map[string]bool{"bob@localhost": true, "carol@localhost": false} {
			if got, err := s.InRoster(ctx, "alice", contact); err != nil || got != want {
				t.Errorf("InRoster(%s) = %v, %v; want %v", contact, got, err, want)
			}
		}
	})
	t.Run("removed with the account", func(t *testing.T) {
		s := open(t)
		fill(t, s)
		if err := s.SetArchivePrefs(ctx, "alice", ArchivePrefs{Default: ArchiveNever}); err != nil {
			t.Fatal(err)
		}
		if err := s.RemoveAccount(ctx, "alice"); err != nil {
			t.Fatal(err)
		}
		addUsers(t, s, "alice")
		if got, _ := s.ArchivePage(ctx, ArchiveQuery{User: "alice", Max: 50}); len(got) != 0 {
			t.Errorf("archive after removal: %v", ids(got))
		}
		if _, ok, _ := s.ArchivePrefs(ctx, "alice"); ok {
			t.Error("prefs kept after removal")
		}
	})
}

// benchArchiveEnv sets the archive size of the page-query benchmarks;
// without it they are skipped, so that make test does not fill a
// database of a million rows.
const benchArchiveEnv = "KRILL_BENCH_ARCHIVE"

func BenchmarkArchivePageSQLite(b *testing.B) {
	benchArchivePage(b, func(b *testing.B) archiveStore { return openTestSQLite(b) })
}

func BenchmarkArchivePagePostgres(b *testing.B) {
	postgresDSN(b)
	benchArchivePage(b, func(b *testing.B) archiveStore { return openTestPostgres(b) })
}

// benchArchivePage fills one archive with N messages (N from
// KRILL_BENCH_ARCHIVE), 1 in 10 with one contact and the rest spread over
// 99 others and 1 in 10,000 with a rare one, then times page queries of
// 50 at its start, its middle (by after-id) and end, and with a 'with'
// filter, frequent and rare (the rare one is the test of the index: a
// walk of the archive filtering on with would read all of it).
func benchArchivePage(b *testing.B, open func(b *testing.B) archiveStore) {
	n, _ := strconv.Atoi(os.Getenv(benchArchiveEnv))
	if n <= 0 {
		b.Skipf("%s is not set: the archive benchmarks fill a database of that many messages", benchArchiveEnv)
	}
	ctx := context.Background()
	s := open(b)
	addUsers(b, s, "alice")
	body := []byte(`<message xmlns='jabber:client' from='bob@localhost/phone' to='alice@localhost' type='chat' id='0123456789abcdef'><body>Hello, this is a message of a usual size for a chat.</body></message>`)
	const batch = 10000
	recs := make([]ArchiveRecord, 0, batch)
	for i := 1; i <= n; i++ {
		with := fmt.Sprintf("contact%d@localhost", i%99)
		switch {
		case i%10 == 0:
			with = "bob@localhost"
		case i%10000 == 5:
			with = "rare@localhost" // 100 messages in a million
		}
		recs = append(recs, ArchiveRecord{User: "alice", ID: int64(i), With: with, WithResource: "phone", Stanza: body})
		if len(recs) == batch || i == n {
			if err := s.AppendArchive(ctx, recs); err != nil {
				b.Fatal(err)
			}
			recs = recs[:0]
		}
	}
	for _, bc := range []struct {
		name string
		q    ArchiveQuery
		want int // items in the page; 0 means 50
	}{
		{"first", ArchiveQuery{Max: 50}, 0},
		{"middle-after-id", ArchiveQuery{After: int64(n / 2), Max: 50}, 0},
		{"last", ArchiveQuery{Max: 50, Backward: true}, 0},
		{"with", ArchiveQuery{With: "bob@localhost", After: int64(n / 2), Max: 50}, 0},
		{"with-last", ArchiveQuery{With: "bob@localhost", Max: 50, Backward: true}, 0},
		{"with-rare", ArchiveQuery{With: "rare@localhost", Max: 50}, min(50, (n+9995)/10000)},
	} {
		bc.q.User = "alice"
		b.Run(bc.name, func(b *testing.B) {
			for b.Loop() {
				items, err := s.ArchivePage(ctx, bc.q)
				if want := cmp.Or(bc.want, 50); err != nil || len(items) != want {
					b.Fatalf("%d items, want %d, %v", len(items), want, err)
				}
			}
		})
	}
	b.Run("count-capped-1000", func(b *testing.B) {
		for b.Loop() {
			if _, _, err := s.ArchiveCount(ctx, ArchiveQuery{User: "alice", After: int64(n / 2)}, 1000); err != nil {
				b.Fatal(err)
			}
		}
	})
}
