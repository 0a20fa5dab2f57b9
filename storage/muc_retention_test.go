package storage

import (
	"context"
	"testing"
)

func TestSQLiteRoomRetention(t *testing.T) { testRoomRetention(t, openTestSQLite(t)) }

func TestPostgresRoomRetention(t *testing.T) {
	postgresDSN(t)
	testRoomRetention(t, openTestPostgres(t))
}

// testRoomRetention: ExpireRoomArchives deletes, in one statement over
// every room, what rooms with a retention of their own no longer keep,
// and nothing of rooms without one or of users.
func testRoomRetention(t *testing.T, s *SQL) {
	ctx := context.Background()
	addTestAccount(t, s, "alice")
	const perDay, now = 1000, 10_000
	for _, r := range []MUCRoom{{Room: "short", Config: []byte("{}"), ArchiveDays: 2}, {Room: "keep", Config: []byte("{}")}} {
		if err := s.SaveMUCRoom(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	var recs []ArchiveRecord
	for _, owner := range []string{"short@muc.example", "keep@muc.example"} {
		for _, id := range []int64{7_000, 8_500} { // three and one and a half days old
			recs = append(recs, ArchiveRecord{User: owner, Room: true, ID: id, With: owner, Stanza: []byte("<message/>")})
		}
	}
	recs = append(recs, ArchiveRecord{User: "alice", ID: 7_000, With: "bob@example", Stanza: []byte("<message/>")})
	if err := s.AppendArchive(ctx, recs); err != nil {
		t.Fatal(err)
	}
	if n, err := s.ExpireRoomArchives(ctx, "@muc.example", now, perDay, 10); err != nil || n != 1 {
		t.Fatalf("expired %d, %v; want 1", n, err)
	}
	for owner, want := range map[string]int{"short@muc.example": 1, "keep@muc.example": 2, "alice": 1} {
		items, err := s.ArchivePage(ctx, ArchiveQuery{User: owner, Max: 10})
		if err != nil || len(items) != want {
			t.Errorf("%s keeps %d items (%v), want %d", owner, len(items), err, want)
		}
	}
	if rec, err := s.MUCRoom(ctx, "short"); err != nil || rec.ArchiveDays != 2 {
		t.Errorf("stored room: %d days, %v", rec.ArchiveDays, err)
	}
}
