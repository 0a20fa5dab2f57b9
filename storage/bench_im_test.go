package storage

import (
	"context"
	"math"
	"os"
	"strconv"
	"testing"
)

// benchBackends runs bench against SQLite and, when TEST_POSTGRES_DSN is
// set, PostgreSQL.
func benchBackends(b *testing.B, bench func(b *testing.B, s *SQL)) {
	b.Run("sqlite", func(b *testing.B) { bench(b, openTestSQLite(b)) })
	b.Run("postgres", func(b *testing.B) {
		if os.Getenv(postgresEnv) == "" {
			b.Skipf("%s is not set", postgresEnv)
		}
		bench(b, openTestPostgres(b))
	})
}

// BenchmarkRoster reads a roster of 50 items, 10 of them in two groups:
// the login path of a client without a cached roster version.
func BenchmarkRoster(b *testing.B) {
	benchBackends(b, func(b *testing.B, s *SQL) {
		ctx := context.Background()
		err := s.UpdateRosters(ctx, func(tx RosterTx) error {
			for i := range 50 {
				it := RosterItem{Contact: "contact" + strconv.Itoa(i) + "@example.org", Name: "Contact " + strconv.Itoa(i), Subscription: SubBoth}
				if i%5 == 0 {
					it.Groups = []string{"Friends", "Work"}
				}
				if err := tx.PutItem("alice", it); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		for b.Loop() {
			items, _, err := s.Roster(ctx, "alice")
			if err != nil {
				b.Fatal(err)
			}
			if len(items) != 50 {
				b.Fatalf("%d items", len(items))
			}
		}
	})
}

// BenchmarkStoreOffline stores a 200-byte message under a quota of 100,
// for 100 users in turn, emptying each user's store when it is full.
func BenchmarkStoreOffline(b *testing.B) {
	benchBackends(b, func(b *testing.B, s *SQL) {
		ctx := context.Background()
		stanza := []byte(`<message from='bob@localhost/phone' to='alice@localhost' type='chat' id='a1b2c3d4'><body>Are you there? I have news about the thing we talked about.</body><active xmlns='http://jabber.org/protocol/chatstates'/></message>`)
		const users, quota = 100, 100
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			user := "user" + strconv.Itoa(i%users)
			if i > 0 && i%(users*quota) == 0 {
				b.StopTimer()
				for u := range users {
					if err := s.DeleteOffline(ctx, "user"+strconv.Itoa(u), math.MaxInt64); err != nil {
						b.Fatal(err)
					}
				}
				b.StartTimer()
			}
			if err := s.StoreOffline(ctx, user, stanza, quota); err != nil {
				b.Fatal(err)
			}
			i++
		}
	})
}

// BenchmarkUpdateRosters commits a two-sided subscription change: read
// both items, write both, as a subscription approval does.
func BenchmarkUpdateRosters(b *testing.B) {
	benchBackends(b, func(b *testing.B, s *SQL) {
		ctx := context.Background()
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			user, contact := "u"+strconv.Itoa(i%1000), "c"+strconv.Itoa(i%1000)
			err := s.UpdateRosters(ctx, func(tx RosterTx) error {
				a, _, err := tx.Item(user, contact+"@localhost")
				if err != nil {
					return err
				}
				if _, _, err := tx.Item(contact, user+"@localhost"); err != nil {
					return err
				}
				a.Contact, a.Subscription = contact+"@localhost", SubTo
				if err := tx.PutItem(user, a); err != nil {
					return err
				}
				return tx.PutItem(contact, RosterItem{Contact: user + "@localhost", Subscription: SubFrom, Groups: []string{"Friends"}})
			})
			if err != nil {
				b.Fatal(err)
			}
			i++
		}
	})
}
