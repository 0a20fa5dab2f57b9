package storage

import (
	"context"
	"slices"
	"testing"
)

func TestSQLitePush(t *testing.T) { testPush(t, openTestSQLite(t)) }

func TestPostgresPush(t *testing.T) {
	postgresDSN(t)
	testPush(t, openTestPostgres(t))
}

// testPush runs replacement, the per-account cap, deletion by node and by
// app server, the full scan and account removal against one store.
func testPush(t *testing.T, s *SQL) {
	ctx := context.Background()
	addTestAccount(t, s, "alice")
	addTestAccount(t, s, "bob")
	list := func(account string) []string {
		t.Helper()
		regs, err := s.PushRegistrations(ctx, account)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, r := range regs {
			out = append(out, r.JID+"/"+r.Node+"="+string(r.Options))
		}
		return out
	}
	put := func(account, jid, node, options string, created int64) {
		t.Helper()
		r := PushRegistration{Account: account, JID: jid, Node: node, Options: []byte(options), Created: created}
		if err := s.PutPushRegistration(ctx, r, 3); err != nil {
			t.Fatal(err)
		}
	}
	put("alice", "push.example", "n1", "<x/>", 1)
	put("alice", "push.example", "n2", "", 2)
	put("alice", "push.example", "n1", "<y/>", 3) // replaces, now the newest
	put("bob", "push.example", "b1", "", 4)
	if got, want := list("alice"), []string{"push.example/n2=", "push.example/n1=<y/>"}; !slices.Equal(got, want) {
		t.Fatalf("after replacing: %q, want %q", got, want)
	}
	put("alice", "other.example", "n3", "", 5)
	put("alice", "other.example", "n4", "", 6) // a fourth: the oldest (n2) goes
	if got, want := list("alice"), []string{"push.example/n1=<y/>", "other.example/n3=", "other.example/n4="}; !slices.Equal(got, want) {
		t.Fatalf("over the cap of 3: %q, want %q", got, want)
	}
	if n, err := s.DeletePushRegistrations(ctx, "alice", "other.example", "n3", false); err != nil || n != 1 {
		t.Fatalf("delete one node: %d, %v", n, err)
	}
	if n, err := s.DeletePushRegistrations(ctx, "alice", "nobody.example", "", true); err != nil || n != 0 {
		t.Fatalf("delete an unknown app server: %d, %v", n, err)
	}
	var all []string
	if err := s.EachPushRegistration(ctx, func(r PushRegistration) error {
		all = append(all, r.Account+":"+r.Node)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if want := []string{"alice:n1", "alice:n4", "bob:b1"}; !slices.Equal(all, want) {
		t.Fatalf("every registration: %q, want %q", all, want)
	}
	if n, err := s.DeletePushRegistrations(ctx, "alice", "push.example", "", true); err != nil || n != 1 {
		t.Fatalf("delete by app server: %d, %v", n, err)
	}
	if err := s.RemoveAccount(ctx, "bob"); err != nil {
		t.Fatal(err)
	}
	if got := list("bob"); len(got) != 0 {
		t.Fatalf("a removed account keeps %q", got)
	}
	if got, want := list("alice"), []string{"other.example/n4="}; !slices.Equal(got, want) {
		t.Fatalf("at the end: %q, want %q", got, want)
	}
}
