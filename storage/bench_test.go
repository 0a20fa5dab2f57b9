package storage

import (
	"context"
	"strconv"
	"testing"
)

// BenchmarkCredentials is the login path: one primary-key lookup and the
// parsing of three credentials, in a store of 10,000 accounts.
func BenchmarkCredentials(b *testing.B) {
	ctx := context.Background()
	s := openTestSQLite(b)
	accounts := fakeAccounts("user", 10000)
	if err := s.AddAccounts(ctx, accounts); err != nil {
		b.Fatal(err)
	}
	b.Run("serial", func(b *testing.B) {
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			if _, err := s.Credentials(ctx, accounts[i%len(accounts)].Username); err != nil {
				b.Fatal(err)
			}
			i += 7919
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			i := 0
			for pb.Next() {
				if _, err := s.Credentials(ctx, accounts[i%len(accounts)].Username); err != nil {
					b.Error(err)
					return
				}
				i += 7919
			}
		})
	})
}

// BenchmarkAddAccounts10000 creates 10,000 accounts in one transaction per
// iteration, in one growing store.
func BenchmarkAddAccounts10000(b *testing.B) {
	ctx := context.Background()
	s := openTestSQLite(b)
	accounts := fakeAccounts("", 10000)
	b.ReportAllocs()
	n := 0
	for b.Loop() {
		b.StopTimer()
		prefix := "run" + strconv.Itoa(n) + "-"
		for i := range accounts {
			accounts[i].Username = prefix + strconv.Itoa(i)
		}
		n++
		b.StartTimer()
		if err := s.AddAccounts(ctx, accounts); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(n*len(accounts)), "ns/account")
}
