package storage

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"
)

// imStore is what the shared IM suite needs: the IM data and the accounts
// whose removal cascades into it.
type imStore interface {
	Accounts
	IM
}

// errAbort is what test transactions return to roll back.
var errAbort = errors.New("test: abort")

// put runs one UpdateRosters that puts items into user's roster.
func put(t *testing.T, s IM, user string, items ...RosterItem) {
	t.Helper()
	err := s.UpdateRosters(context.Background(), func(tx RosterTx) error {
		for _, it := range items {
			if err := tx.PutItem(user, it); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("PutItem(%q): %v", user, err)
	}
}

// roster returns user's roster and version, failing t on error.
func roster(t *testing.T, s IM, user string) ([]RosterItem, uint64) {
	t.Helper()
	items, ver, err := s.Roster(context.Background(), user)
	if err != nil {
		t.Fatalf("Roster(%q): %v", user, err)
	}
	return items, ver
}

func equalItems(a, b []RosterItem) bool {
	return slices.EqualFunc(a, b, func(x, y RosterItem) bool {
		return x.Contact == y.Contact && x.Name == y.Name && x.Subscription == y.Subscription &&
			x.AskOut == y.AskOut && x.PreApproved == y.PreApproved && slices.Equal(x.Groups, y.Groups)
	})
}

// wantRoster fails t unless user's roster holds exactly want.
func wantRoster(t *testing.T, s IM, user string, want ...RosterItem) uint64 {
	t.Helper()
	got, ver := roster(t, s, user)
	if !equalItems(got, want) {
		t.Fatalf("Roster(%q) = %+v, want %+v", user, got, want)
	}
	return ver
}

// wantEmpty fails t unless user has no IM data at all.
func wantEmpty(t *testing.T, s IM, user string) {
	t.Helper()
	ctx := context.Background()
	if ver := wantRoster(t, s, user); ver != 0 {
		t.Errorf("roster version of %q = %d, want 0", user, ver)
	}
	if reqs, err := s.Requests(ctx, user); err != nil || len(reqs) != 0 {
		t.Errorf("Requests(%q) = %v, %v; want none", user, reqs, err)
	}
	if msgs, err := s.Offline(ctx, user); err != nil || len(msgs) != 0 {
		t.Errorf("Offline(%q) = %d messages, %v; want none", user, len(msgs), err)
	}
	if jids, err := s.Blocklist(ctx, user); err != nil || len(jids) != 0 {
		t.Errorf("Blocklist(%q) = %q, %v; want none", user, jids, err)
	}
	if v, err := s.VCard(ctx, user); err != nil || v != nil {
		t.Errorf("VCard(%q) = %q, %v; want nil", user, v, err)
	}
}

// wantOffline fails t unless user's stored stanzas are want, in order, and
// returns their IDs.
func wantOffline(t *testing.T, s IM, user string, want ...string) []int64 {
	t.Helper()
	msgs, err := s.Offline(context.Background(), user)
	if err != nil {
		t.Fatalf("Offline(%q): %v", user, err)
	}
	var got []string
	var ids []int64
	for i, m := range msgs {
		got = append(got, string(m.Stanza))
		ids = append(ids, m.ID)
		if i > 0 && m.ID <= msgs[i-1].ID {
			t.Errorf("Offline(%q): IDs not increasing: %d after %d", user, m.ID, msgs[i-1].ID)
		}
	}
	if !slices.Equal(got, want) {
		t.Fatalf("Offline(%q) = %q, want %q", user, got, want)
	}
	return ids
}

func wantBlocklist(t *testing.T, s IM, user string, want ...string) {
	t.Helper()
	got, err := s.Blocklist(context.Background(), user)
	if err != nil {
		t.Fatalf("Blocklist(%q): %v", user, err)
	}
	if !slices.Equal(got, want) {
		t.Fatalf("Blocklist(%q) = %q, want %q", user, got, want)
	}
}

func wantVCard(t *testing.T, s IM, user string, want []byte) {
	t.Helper()
	got, err := s.VCard(context.Background(), user)
	if err != nil {
		t.Fatalf("VCard(%q): %v", user, err)
	}
	if (got == nil) != (want == nil) || string(got) != string(want) {
		t.Fatalf("VCard(%q) = %q, want %q", user, got, want)
	}
}

func wantRequests(t *testing.T, s IM, user string, want ...SubscriptionRequest) {
	t.Helper()
	got, err := s.Requests(context.Background(), user)
	if err != nil {
		t.Fatalf("Requests(%q): %v", user, err)
	}
	if !slices.EqualFunc(got, want, func(a, b SubscriptionRequest) bool {
		return a.From == b.From && string(a.Stanza) == string(b.Stanza)
	}) {
		t.Fatalf("Requests(%q) = %q, want %q", user, got, want)
	}
}

// subscribe is the two-sided change of a subscription approval: contact
// gets a "from" subscription to user's presence and user a "to".
func subscribe(tx RosterTx, user, contact string) error {
	if err := tx.PutItem(user, RosterItem{Contact: contact + "@localhost", Subscription: SubTo}); err != nil {
		return err
	}
	return tx.PutItem(contact, RosterItem{Contact: user + "@localhost", Subscription: SubFrom})
}

// testIM is the contract of [IM], run against every implementation. open
// returns a new, empty store and closes it when t ends.
func testIM(t *testing.T, open func(t *testing.T) imStore) {
	ctx := context.Background()
	bob := RosterItem{Contact: "bob@localhost", Name: "Bob", Subscription: SubBoth, Groups: []string{"Friends"}}
	carol := RosterItem{Contact: "carol@example.org", Subscription: SubTo, AskOut: true}
	server := RosterItem{Contact: "example.org", Subscription: SubFrom, PreApproved: true}
	tests := []struct {
		name string
		run  func(t *testing.T, s imStore)
	}{
		{"empty", func(t *testing.T, s imStore) {
			wantEmpty(t, s, "alice")
			err := s.UpdateRosters(ctx, func(tx RosterTx) error {
				if v, err := tx.Version("alice"); err != nil || v != 0 {
					return fmt.Errorf("Version = %d, %v; want 0", v, err)
				}
				if _, ok, err := tx.Item("alice", "bob@localhost"); err != nil || ok {
					return fmt.Errorf("Item = %v, %v; want none", ok, err)
				}
				if _, ok, err := tx.Request("alice", "bob@localhost"); err != nil || ok {
					return fmt.Errorf("Request = %v, %v; want none", ok, err)
				}
				if ok, err := tx.DeleteItem("alice", "bob@localhost"); err != nil || ok {
					return fmt.Errorf("DeleteItem = %v, %v; want false", ok, err)
				}
				if ok, err := tx.DeleteRequest("alice", "bob@localhost"); err != nil || ok {
					return fmt.Errorf("DeleteRequest = %v, %v; want false", ok, err)
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			wantEmpty(t, s, "alice")
		}},
		{"put and read items", func(t *testing.T, s imStore) {
			put(t, s, "alice", server, bob, carol)
			ver := wantRoster(t, s, "alice", bob, carol, server)
			if ver == 0 {
				t.Fatal("roster version still 0 after a change")
			}
			err := s.UpdateRosters(ctx, func(tx RosterTx) error {
				got, ok, err := tx.Item("alice", "bob@localhost")
				if err != nil || !ok || !equalItems([]RosterItem{got}, []RosterItem{bob}) {
					return fmt.Errorf("Item = %+v, %v, %v; want %+v", got, ok, err, bob)
				}
				if v, err := tx.Version("alice"); err != nil || v != ver {
					return fmt.Errorf("Version = %d, %v; want %d", v, err, ver)
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
		}},
		{"groups are sorted and deduplicated", func(t *testing.T, s imStore) {
			groups := []string{"Work", "Friends", "Work", "Ärzte", "", "Friends"}
			it := RosterItem{Contact: "bob@localhost", Groups: groups}
			put(t, s, "alice", it)
			want := it
			want.Groups = []string{"", "Friends", "Work", "Ärzte"}
			wantRoster(t, s, "alice", want)
			if groups[0] != "Work" {
				t.Error("PutItem reordered the caller's slice")
			}
			// Replacing the item replaces its groups.
			it.Groups = []string{"Family"}
			put(t, s, "alice", it)
			wantRoster(t, s, "alice", it)
			it.Groups = nil
			put(t, s, "alice", it)
			wantRoster(t, s, "alice", it)
		}},
		{"versions count changes", func(t *testing.T, s imStore) {
			put(t, s, "alice", bob)
			v1 := wantRoster(t, s, "alice", bob)
			put(t, s, "alice", carol)
			v2 := wantRoster(t, s, "alice", bob, carol)
			changed := bob
			changed.Subscription = SubNone
			put(t, s, "alice", changed) // a replacement is a change
			v3 := wantRoster(t, s, "alice", changed, carol)
			err := s.UpdateRosters(ctx, func(tx RosterTx) error {
				if ok, err := tx.DeleteItem("alice", "nobody@localhost"); err != nil || ok {
					return fmt.Errorf("DeleteItem(missing) = %v, %v", ok, err)
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			v4 := wantRoster(t, s, "alice", changed, carol)
			err = s.UpdateRosters(ctx, func(tx RosterTx) error {
				if ok, err := tx.DeleteItem("alice", "bob@localhost"); err != nil || !ok {
					return fmt.Errorf("DeleteItem = %v, %v", ok, err)
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			v5 := wantRoster(t, s, "alice", carol)
			if got, want := []uint64{v2 - v1, v3 - v2, v4 - v3, v5 - v4}, []uint64{1, 1, 0, 1}; !slices.Equal(got, want) {
				t.Fatalf("version steps = %v (versions %d %d %d %d %d), want %v", got, v1, v2, v3, v4, v5, want)
			}
			// Versions are per user.
			if _, ver := roster(t, s, "bob"); ver != 0 {
				t.Fatalf("bob's version = %d after changes to alice's roster", ver)
			}
			// An emptied roster keeps its version: clients may have
			// cached the older ones.
			err = s.UpdateRosters(ctx, func(tx RosterTx) error {
				_, err := tx.DeleteItem("alice", carol.Contact)
				return err
			})
			if err != nil {
				t.Fatal(err)
			}
			if v6 := wantRoster(t, s, "alice"); v6 != v5+1 {
				t.Fatalf("version after emptying = %d, want %d", v6, v5+1)
			}
		}},
		{"contacts are sorted byte-wise", func(t *testing.T, s imStore) {
			var items []RosterItem
			for _, c := range []string{"zoë@x", "Bob@x", "bob@x", "a.example", "ålice@x", "b10@x", "b2@x"} {
				items = append(items, RosterItem{Contact: c})
			}
			put(t, s, "alice", items...)
			got, _ := roster(t, s, "alice")
			var contacts []string
			for _, it := range got {
				contacts = append(contacts, it.Contact)
			}
			want := []string{"Bob@x", "a.example", "b10@x", "b2@x", "bob@x", "zoë@x", "ålice@x"}
			if !slices.Equal(contacts, want) {
				t.Fatalf("contacts = %q, want %q", contacts, want)
			}
		}},
		{"invalid items are refused", func(t *testing.T, s imStore) {
			for _, tt := range []struct {
				name string
				user string
				item RosterItem
				want error
			}{
				{"empty user", "", bob, ErrEmptyUsername},
				{"empty contact", "alice", RosterItem{Name: "x"}, ErrInvalidItem},
				{"unknown subscription", "alice", RosterItem{Contact: "bob@localhost", Subscription: SubBoth + 1}, ErrInvalidItem},
				{"name not UTF-8", "alice", RosterItem{Contact: "bob@localhost", Name: "\xff"}, ErrInvalidText},
				{"NUL in group", "alice", RosterItem{Contact: "bob@localhost", Groups: []string{"a\x00b"}}, ErrInvalidText},
				{"contact not UTF-8", "alice", RosterItem{Contact: "b\xc0b@localhost"}, ErrInvalidText},
			} {
				t.Run(tt.name, func(t *testing.T) {
					err := s.UpdateRosters(ctx, func(tx RosterTx) error { return tx.PutItem(tt.user, tt.item) })
					if !errors.Is(err, tt.want) {
						t.Fatalf("PutItem = %v, want %v", err, tt.want)
					}
				})
			}
			wantEmpty(t, s, "alice")
		}},
		{"an error from fn writes nothing", func(t *testing.T, s imStore) {
			put(t, s, "carol", bob)
			before := wantRoster(t, s, "carol", bob)
			err := s.UpdateRosters(ctx, func(tx RosterTx) error {
				if err := subscribe(tx, "alice", "bob"); err != nil {
					return err
				}
				if _, err := tx.DeleteItem("carol", "bob@localhost"); err != nil {
					return err
				}
				if err := tx.PutRequest("alice", SubscriptionRequest{From: "dave@localhost", Stanza: []byte("<presence/>")}); err != nil {
					return err
				}
				return fmt.Errorf("late failure: %w", errAbort)
			})
			if !errors.Is(err, errAbort) || err.Error() != "late failure: test: abort" {
				t.Fatalf("UpdateRosters = %v, want fn's error as is", err)
			}
			wantEmpty(t, s, "alice")
			wantEmpty(t, s, "bob")
			if after := wantRoster(t, s, "carol", bob); after != before {
				t.Fatalf("carol's version moved from %d to %d", before, after)
			}
		}},
		{"a two-user change commits both", func(t *testing.T, s imStore) {
			err := s.UpdateRosters(ctx, func(tx RosterTx) error { return subscribe(tx, "alice", "bob") })
			if err != nil {
				t.Fatal(err)
			}
			wantRoster(t, s, "alice", RosterItem{Contact: "bob@localhost", Subscription: SubTo})
			wantRoster(t, s, "bob", RosterItem{Contact: "alice@localhost", Subscription: SubFrom})
		}},
		{"a failing second side writes neither", func(t *testing.T, s imStore) {
			err := s.UpdateRosters(ctx, func(tx RosterTx) error {
				if err := tx.PutItem("alice", RosterItem{Contact: "bob@localhost", Subscription: SubTo}); err != nil {
					return err
				}
				return tx.PutItem("bob", RosterItem{Contact: "alice@localhost", Subscription: SubBoth + 1})
			})
			if !errors.Is(err, ErrInvalidItem) {
				t.Fatalf("UpdateRosters = %v, want ErrInvalidItem", err)
			}
			wantEmpty(t, s, "alice")
			wantEmpty(t, s, "bob")
		}},
		{"cancelled context", func(t *testing.T, s imStore) {
			cctx, cancel := context.WithCancel(ctx)
			cancel()
			err := s.UpdateRosters(cctx, func(tx RosterTx) error { return subscribe(tx, "alice", "bob") })
			if !errors.Is(err, context.Canceled) {
				t.Errorf("UpdateRosters = %v, want context.Canceled", err)
			}
			if err := s.StoreOffline(cctx, "alice", []byte("<message/>"), 0); !errors.Is(err, context.Canceled) {
				t.Errorf("StoreOffline = %v, want context.Canceled", err)
			}
			if _, _, err := s.Roster(cctx, "alice"); !errors.Is(err, context.Canceled) {
				t.Errorf("Roster = %v, want context.Canceled", err)
			}
			wantEmpty(t, s, "alice")
			wantEmpty(t, s, "bob")
		}},
		{"concurrent two-sided updates lose nothing", func(t *testing.T, s imStore) {
			testConcurrentRosters(t, s)
		}},
		{"subscription requests", func(t *testing.T, s imStore) {
			first := SubscriptionRequest{From: "bob@localhost", Stanza: []byte(`<presence from='bob@localhost' type='subscribe'/>`)}
			again := SubscriptionRequest{From: "bob@localhost", Stanza: []byte(`<presence from='bob@localhost/phone' type='subscribe'><status>hi, it's me — Bob</status></presence>`)}
			other := SubscriptionRequest{From: "example.org", Stanza: []byte(`<presence from='example.org' type='subscribe'/>`)}
			update := func(fn func(tx RosterTx) error) {
				t.Helper()
				if err := s.UpdateRosters(ctx, fn); err != nil {
					t.Fatal(err)
				}
			}
			update(func(tx RosterTx) error { return tx.PutRequest("alice", first) })
			update(func(tx RosterTx) error { return tx.PutRequest("alice", other) })
			update(func(tx RosterTx) error { return tx.PutRequest("alice", again) })
			wantRequests(t, s, "alice", again, other)
			wantRequests(t, s, "bob")
			update(func(tx RosterTx) error {
				r, ok, err := tx.Request("alice", "bob@localhost")
				if err != nil || !ok || string(r.Stanza) != string(again.Stanza) || r.From != again.From {
					return fmt.Errorf("Request = %q, %v, %v; want %q", r, ok, err, again)
				}
				if ok, err := tx.DeleteRequest("alice", "bob@localhost"); err != nil || !ok {
					return fmt.Errorf("DeleteRequest = %v, %v; want true", ok, err)
				}
				if ok, err := tx.DeleteRequest("alice", "bob@localhost"); err != nil || ok {
					return fmt.Errorf("second DeleteRequest = %v, %v; want false", ok, err)
				}
				return nil
			})
			wantRequests(t, s, "alice", other)
			if _, ver := roster(t, s, "alice"); ver != 0 {
				t.Fatalf("requests moved the roster version to %d", ver)
			}
			for _, tt := range []struct {
				name string
				user string
				r    SubscriptionRequest
				want error
			}{
				{"empty user", "", first, ErrEmptyUsername},
				{"empty from", "alice", SubscriptionRequest{Stanza: first.Stanza}, ErrInvalidItem},
				{"stanza not UTF-8", "alice", SubscriptionRequest{From: "x@y", Stanza: []byte("<presence>\xfe</presence>")}, ErrInvalidText},
			} {
				t.Run(tt.name, func(t *testing.T) {
					err := s.UpdateRosters(ctx, func(tx RosterTx) error { return tx.PutRequest(tt.user, tt.r) })
					if !errors.Is(err, tt.want) {
						t.Fatalf("PutRequest = %v, want %v", err, tt.want)
					}
				})
			}
			wantRequests(t, s, "alice", other)
		}},
		{"offline messages in order", func(t *testing.T, s imStore) {
			before := time.Now().Add(-time.Second)
			stanzas := []string{"<message id='1'/>", "<message id='2'><body>é — ü &amp; 💬</body></message>", "<message id='3'/>", "<message id='4'/>"}
			for _, st := range stanzas {
				if err := s.StoreOffline(ctx, "alice", []byte(st), 0); err != nil {
					t.Fatal(err)
				}
			}
			if err := s.StoreOffline(ctx, "bob", []byte("<message to='bob'/>"), 0); err != nil {
				t.Fatal(err)
			}
			msgs, err := s.Offline(ctx, "alice")
			if err != nil {
				t.Fatal(err)
			}
			after := time.Now().Add(time.Second)
			for _, m := range msgs {
				if m.Stored.Before(before) || m.Stored.After(after) {
					t.Errorf("message %d stored at %v, not between %v and %v", m.ID, m.Stored, before, after)
				}
			}
			ids := wantOffline(t, s, "alice", stanzas...)
			if err := s.DeleteOffline(ctx, "alice", ids[1]); err != nil {
				t.Fatal(err)
			}
			wantOffline(t, s, "alice", stanzas[2:]...)
			wantOffline(t, s, "bob", "<message to='bob'/>")
			// Delete everything, then store again: the new ID must
			// exceed every ID handed out, or a session that read the
			// old messages would delete the new one.
			if err := s.DeleteOffline(ctx, "alice", ids[3]); err != nil {
				t.Fatal(err)
			}
			wantOffline(t, s, "alice")
			if err := s.StoreOffline(ctx, "alice", []byte("<message id='5'/>"), 0); err != nil {
				t.Fatal(err)
			}
			newIDs := wantOffline(t, s, "alice", "<message id='5'/>")
			if newIDs[0] <= ids[3] {
				t.Fatalf("ID %d reused after deleting up to %d", newIDs[0], ids[3])
			}
			if err := s.DeleteOffline(ctx, "alice", ids[3]); err != nil {
				t.Fatal(err)
			}
			wantOffline(t, s, "alice", "<message id='5'/>")
		}},
		{"offline quota", func(t *testing.T, s imStore) {
			const quota = 3
			for i := range quota {
				if err := s.StoreOffline(ctx, "alice", []byte("<message id='"+strconv.Itoa(i)+"'/>"), quota); err != nil {
					t.Fatalf("store %d: %v", i, err)
				}
			}
			err := s.StoreOffline(ctx, "alice", []byte("<message id='over'/>"), quota)
			if !errors.Is(err, ErrQuota) {
				t.Fatalf("store over quota = %v, want ErrQuota", err)
			}
			ids := wantOffline(t, s, "alice", "<message id='0'/>", "<message id='1'/>", "<message id='2'/>")
			// The quota is per user.
			if err := s.StoreOffline(ctx, "bob", []byte("<message/>"), quota); err != nil {
				t.Fatal(err)
			}
			// Room again once one is delivered.
			if err := s.DeleteOffline(ctx, "alice", ids[0]); err != nil {
				t.Fatal(err)
			}
			if err := s.StoreOffline(ctx, "alice", []byte("<message id='3'/>"), quota); err != nil {
				t.Fatal(err)
			}
			// No limit.
			for i := range 5 {
				if err := s.StoreOffline(ctx, "alice", []byte("<message/>"), 0); err != nil {
					t.Fatalf("unlimited store %d: %v", i, err)
				}
			}
			if err := s.StoreOffline(ctx, "alice", []byte("<message/>"), -1); err != nil {
				t.Fatalf("negative quota: %v", err)
			}
			if msgs, err := s.Offline(ctx, "alice"); err != nil || len(msgs) != 9 {
				t.Fatalf("Offline = %d messages, %v; want 9", len(msgs), err)
			}
		}},
		{"offline quota in bytes", func(t *testing.T, s imStore) {
			// Multi-byte text counts in bytes: "é" is two.
			msg := []byte("<message><body>é</body></message>") // 33 bytes
			size := int64(len(msg))
			for i := range 3 {
				if err := s.StoreOfflineWithin(ctx, "alice", msg, 0, 3*size); err != nil {
					t.Fatalf("store %d: %v", i, err)
				}
			}
			if err := s.StoreOfflineWithin(ctx, "alice", msg, 0, 3*size); !errors.Is(err, ErrQuota) {
				t.Fatalf("store over the byte quota = %v, want ErrQuota", err)
			}
			// A smaller message that fits exactly is taken.
			if err := s.StoreOfflineWithin(ctx, "alice", []byte("<m/>"), 0, 3*size+4); err != nil {
				t.Fatalf("exact fit: %v", err)
			}
			// The message count applies as well.
			if err := s.StoreOfflineWithin(ctx, "alice", []byte("<m/>"), 4, 1<<20); !errors.Is(err, ErrQuota) {
				t.Fatalf("store over the count quota = %v, want ErrQuota", err)
			}
			// Per user, and no limit when both are <= 0.
			if err := s.StoreOfflineWithin(ctx, "bob", msg, 1, size); err != nil {
				t.Fatal(err)
			}
			if err := s.StoreOfflineWithin(ctx, "alice", msg, 0, 0); err != nil {
				t.Fatalf("no limit: %v", err)
			}
			if err := s.StoreOfflineWithin(ctx, "", msg, 0, 1); !errors.Is(err, ErrEmptyUsername) {
				t.Fatalf("empty user = %v", err)
			}
		}},
		{"offline in batches", func(t *testing.T, s imStore) {
			var want []string
			for i := range 7 {
				st := "<message id='" + strconv.Itoa(i) + "'/>"
				want = append(want, st)
				if err := s.StoreOffline(ctx, "alice", []byte(st), 0); err != nil {
					t.Fatal(err)
				}
			}
			if err := s.StoreOffline(ctx, "bob", []byte("<message/>"), 0); err != nil {
				t.Fatal(err)
			}
			var (
				got   []string
				after int64
				reads int
			)
			for reads = 0; reads < 10; reads++ {
				batch, err := s.OfflineBatch(ctx, "alice", after, 3)
				if err != nil {
					t.Fatal(err)
				}
				if len(batch) > 3 {
					t.Fatalf("batch of %d, limit 3", len(batch))
				}
				if len(batch) == 0 {
					break
				}
				for _, m := range batch {
					if m.ID <= after {
						t.Fatalf("ID %d not after %d", m.ID, after)
					}
					got = append(got, string(m.Stanza))
					after = m.ID
				}
			}
			if !slices.Equal(got, want) || reads != 3 {
				t.Fatalf("batches gave %q in %d reads, want %q in 3", got, reads, want)
			}
			if batch, err := s.OfflineBatch(ctx, "alice", 0, 0); err != nil || len(batch) != 0 {
				t.Fatalf("limit 0 = %d, %v", len(batch), err)
			}
			if batch, err := s.OfflineBatch(ctx, "nobody", 0, 5); err != nil || len(batch) != 0 {
				t.Fatalf("unknown user = %d, %v", len(batch), err)
			}
		}},
		{"offline invalid input", func(t *testing.T, s imStore) {
			for _, tt := range []struct {
				name   string
				user   string
				stanza string
				want   error
			}{
				{"empty user", "", "<message/>", ErrEmptyUsername},
				{"not UTF-8", "alice", "<message>\xff</message>", ErrInvalidText},
				{"NUL", "alice", "<message>\x00</message>", ErrInvalidText},
			} {
				t.Run(tt.name, func(t *testing.T) {
					if err := s.StoreOffline(ctx, tt.user, []byte(tt.stanza), 0); !errors.Is(err, tt.want) {
						t.Fatalf("StoreOffline = %v, want %v", err, tt.want)
					}
				})
			}
			wantOffline(t, s, "alice")
		}},
		{"blocklist", func(t *testing.T, s imStore) {
			if err := s.Block(ctx, "alice", []string{"carol@x", "a.example", "bob@x"}); err != nil {
				t.Fatal(err)
			}
			if err := s.Block(ctx, "alice", []string{"a.example", "dave@x", "dave@x"}); err != nil {
				t.Fatalf("blocking again: %v", err)
			}
			if err := s.Block(ctx, "bob", []string{"alice@x"}); err != nil {
				t.Fatal(err)
			}
			wantBlocklist(t, s, "alice", "a.example", "bob@x", "carol@x", "dave@x")
			if err := s.Unblock(ctx, "alice", []string{"bob@x", "nobody@x"}); err != nil {
				t.Fatal(err)
			}
			wantBlocklist(t, s, "alice", "a.example", "carol@x", "dave@x")
			if err := s.Block(ctx, "alice", nil); err != nil {
				t.Fatalf("Block(nil): %v", err)
			}
			if err := s.Unblock(ctx, "alice", nil); err != nil {
				t.Fatal(err)
			}
			wantBlocklist(t, s, "alice")
			wantBlocklist(t, s, "bob", "alice@x")
			for _, tt := range []struct {
				name string
				user string
				jids []string
				want error
			}{
				{"empty user", "", []string{"x@y"}, ErrEmptyUsername},
				{"empty JID", "alice", []string{"x@y", ""}, ErrInvalidText},
				{"JID not UTF-8", "alice", []string{"\xffx@y"}, ErrInvalidText},
			} {
				t.Run(tt.name, func(t *testing.T) {
					if err := s.Block(ctx, tt.user, tt.jids); !errors.Is(err, tt.want) {
						t.Fatalf("Block = %v, want %v", err, tt.want)
					}
				})
			}
			wantBlocklist(t, s, "alice")
		}},
		{"vcard", func(t *testing.T, s imStore) {
			v1 := []byte(`<vCard xmlns='vcard-temp'><FN>Alice</FN></vCard>`)
			v2 := []byte(`<vCard xmlns='vcard-temp'><FN>Alice Ærø</FN><NICKNAME>al</NICKNAME></vCard>`)
			for _, tt := range []struct {
				name string
				set  []byte
				want []byte
			}{
				{"set", v1, v1},
				{"replace", v2, v2},
				{"nil deletes", nil, nil},
				{"set again", v1, v1},
				{"empty deletes", []byte{}, nil},
				{"delete absent", nil, nil},
			} {
				t.Run(tt.name, func(t *testing.T) {
					if err := s.SetVCard(ctx, "alice", tt.set); err != nil {
						t.Fatal(err)
					}
					wantVCard(t, s, "alice", tt.want)
				})
			}
			if err := s.SetVCard(ctx, "bob", v2); err != nil {
				t.Fatal(err)
			}
			wantVCard(t, s, "alice", nil)
			wantVCard(t, s, "bob", v2)
			if err := s.SetVCard(ctx, "bob", []byte("\xff")); !errors.Is(err, ErrInvalidText) {
				t.Fatalf("SetVCard(not UTF-8) = %v, want ErrInvalidText", err)
			}
			if err := s.SetVCard(ctx, "", v1); !errors.Is(err, ErrEmptyUsername) {
				t.Fatalf("SetVCard(\"\") = %v, want ErrEmptyUsername", err)
			}
			wantVCard(t, s, "bob", v2)
		}},
		{"last activity", func(t *testing.T, s imStore) {
			if _, ok, err := s.LastActivity(ctx, "user0"); err != nil || ok {
				t.Fatalf("LastActivity before any = %v, %v; want none", ok, err)
			}
			if err := s.SetLastActivity(ctx, "user0", Activity{At: time.Unix(100, 0)}); !errors.Is(err, ErrNotFound) {
				t.Fatalf("SetLastActivity(no account) = %v, want ErrNotFound", err)
			}
			if _, ok, _ := s.LastActivity(ctx, "user0"); ok {
				t.Fatal("last activity stored for a missing account")
			}
			if err := s.AddAccounts(ctx, fakeAccounts("user", 2)); err != nil {
				t.Fatal(err)
			}
			steps := []Activity{
				{At: time.Unix(1_700_000_000, 0), Status: "gone <home> & 'out'"},
				{At: time.Unix(1_700_000_100, 0)}, // replaced, status cleared
			}
			for _, a := range steps {
				if err := s.SetLastActivity(ctx, "user0", a); err != nil {
					t.Fatal(err)
				}
				got, ok, err := s.LastActivity(ctx, "user0")
				if err != nil || !ok || !got.At.Equal(a.At) || got.Status != a.Status {
					t.Fatalf("LastActivity = %+v, %v, %v; want %+v", got, ok, err, a)
				}
			}
			if _, ok, _ := s.LastActivity(ctx, "user1"); ok {
				t.Fatal("user1 has user0's last activity")
			}
			if err := s.SetLastActivity(ctx, "user0", Activity{Status: "\xff"}); !errors.Is(err, ErrInvalidText) {
				t.Fatalf("SetLastActivity(not UTF-8) = %v, want ErrInvalidText", err)
			}
			if err := s.SetLastActivity(ctx, "", Activity{}); !errors.Is(err, ErrEmptyUsername) {
				t.Fatalf("SetLastActivity(\"\") = %v, want ErrEmptyUsername", err)
			}
			if err := s.RemoveAccount(ctx, "user0"); err != nil {
				t.Fatal(err)
			}
			if _, ok, err := s.LastActivity(ctx, "user0"); err != nil || ok {
				t.Fatalf("LastActivity after RemoveAccount = %v, %v; want none", ok, err)
			}
		}},
		{"last activities in one transaction", func(t *testing.T, s imStore) {
			if err := s.AddAccounts(ctx, fakeAccounts("user", 2)); err != nil {
				t.Fatal(err)
			}
			acts := map[string]Activity{
				"user0":   {At: time.Unix(1_700_000_000, 0), Status: "zero"},
				"user1":   {At: time.Unix(1_700_000_001, 0)},
				"nobody":  {At: time.Unix(1_700_000_002, 0)}, // no account: skipped
				"\xffbad": {At: time.Unix(1_700_000_003, 0)}, // reported, the others written
			}
			if err := s.SetLastActivities(ctx, acts); !errors.Is(err, ErrInvalidText) {
				t.Fatalf("SetLastActivities = %v, want ErrInvalidText for the bad name only", err)
			}
			for _, user := range []string{"user0", "user1"} {
				got, ok, err := s.LastActivity(ctx, user)
				if err != nil || !ok || !got.At.Equal(acts[user].At) || got.Status != acts[user].Status {
					t.Fatalf("LastActivity(%s) = %+v, %v, %v; want %+v", user, got, ok, err, acts[user])
				}
			}
			if _, ok, _ := s.LastActivity(ctx, "nobody"); ok {
				t.Fatal("last activity stored for a missing account")
			}
		}},
		{"RemoveAccount removes the account's IM data", func(t *testing.T, s imStore) {
			if err := s.AddAccounts(ctx, fakeAccounts("user", 2)); err != nil {
				t.Fatal(err)
			}
			fill := func(user, other string) {
				t.Helper()
				err := s.UpdateRosters(ctx, func(tx RosterTx) error {
					if err := subscribe(tx, user, other); err != nil {
						return err
					}
					if err := tx.PutItem(user, RosterItem{Contact: "x@y", Groups: []string{"g1", "g2"}}); err != nil {
						return err
					}
					return tx.PutRequest(user, SubscriptionRequest{From: "z@y", Stanza: []byte("<presence/>")})
				})
				if err != nil {
					t.Fatal(err)
				}
				if err := s.StoreOffline(ctx, user, []byte("<message/>"), 0); err != nil {
					t.Fatal(err)
				}
				if err := s.Block(ctx, user, []string{"spam@y"}); err != nil {
					t.Fatal(err)
				}
				if err := s.SetVCard(ctx, user, []byte("<vCard/>")); err != nil {
					t.Fatal(err)
				}
			}
			fill("user0", "user1")
			fill("user1", "user0")
			if err := s.RemoveAccount(ctx, "user0"); err != nil {
				t.Fatal(err)
			}
			wantEmpty(t, s, "user0")
			// user1 keeps everything, its item for user0 included.
			wantRoster(t, s, "user1",
				RosterItem{Contact: "user0@localhost", Subscription: SubTo}, // fill("user1", ...) ran last
				RosterItem{Contact: "x@y", Groups: []string{"g1", "g2"}})
			wantRequests(t, s, "user1", SubscriptionRequest{From: "z@y", Stanza: []byte("<presence/>")})
			wantOffline(t, s, "user1", "<message/>")
			wantBlocklist(t, s, "user1", "spam@y")
			wantVCard(t, s, "user1", []byte("<vCard/>"))
			if err := s.RemoveAccount(ctx, "user0"); !errors.Is(err, ErrNotFound) {
				t.Fatalf("second RemoveAccount = %v, want ErrNotFound", err)
			}
			// Data of a user without an account is not removed by a
			// failing RemoveAccount.
			if err := s.RemoveAccount(ctx, "nobody"); !errors.Is(err, ErrNotFound) {
				t.Fatalf("RemoveAccount(nobody) = %v, want ErrNotFound", err)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.run(t, open(t))
		})
	}
}

// testConcurrentRosters has workers × rounds transactions read and update
// both sides of one pair of rosters at once, each incrementing a counter
// kept in the items' names. A lost update (two transactions reading the
// same count) leaves the count short; a half-applied one leaves the two
// sides different.
func testConcurrentRosters(t *testing.T, s IM) {
	const (
		workers = 8
		rounds  = 10
	)
	ctx := context.Background()
	put(t, s, "alice", RosterItem{Contact: "bob@localhost", Name: "0"})
	put(t, s, "bob", RosterItem{Contact: "alice@localhost", Name: "0"})
	_, aliceV := roster(t, s, "alice")
	_, bobV := roster(t, s, "bob")
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for range rounds {
				err := s.UpdateRosters(ctx, func(tx RosterTx) error {
					a, okA, err := tx.Item("alice", "bob@localhost")
					if err != nil {
						return err
					}
					b, okB, err := tx.Item("bob", "alice@localhost")
					if err != nil {
						return err
					}
					if !okA || !okB || a.Name != b.Name {
						return fmt.Errorf("sides differ: %+v (%v) and %+v (%v)", a, okA, b, okB)
					}
					n, err := strconv.Atoi(a.Name)
					if err != nil {
						return err
					}
					a.Name, b.Name = strconv.Itoa(n+1), strconv.Itoa(n+1)
					// Alternate the order in which the sides are
					// written, as the two users' own sessions would.
					if w%2 == 0 {
						a, b = b, a
					}
					first, second := "alice", "bob"
					if w%2 == 0 {
						first, second = second, first
					}
					if err := tx.PutItem(first, a); err != nil {
						return err
					}
					return tx.PutItem(second, b)
				})
				if err != nil {
					t.Errorf("worker %d: %v", w, err)
					return
				}
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	want := strconv.Itoa(workers * rounds)
	wantRoster(t, s, "alice", RosterItem{Contact: "bob@localhost", Name: want})
	wantRoster(t, s, "bob", RosterItem{Contact: "alice@localhost", Name: want})
	_, aliceV2 := roster(t, s, "alice")
	_, bobV2 := roster(t, s, "bob")
	if aliceV2-aliceV != workers*rounds || bobV2-bobV != workers*rounds {
		t.Fatalf("versions moved by %d and %d, want %d each", aliceV2-aliceV, bobV2-bobV, workers*rounds)
	}
}
