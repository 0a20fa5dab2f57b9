package storage

import (
	"context"
	"errors"
	"maps"
	"slices"
	"testing"
)

func TestSQLiteMUC(t *testing.T) {
	testMUC(t, func(t *testing.T) MUC { return openTestSQLite(t) })
}

func TestPostgresMUC(t *testing.T) {
	postgresDSN(t)
	testMUC(t, func(t *testing.T) MUC { return openTestPostgres(t) })
}

// testMUC runs the persistent-room cases against a fresh store from open.
func testMUC(t *testing.T, open func(t *testing.T) MUC) {
	ctx := context.Background()
	t.Run("rooms", func(t *testing.T) {
		s := open(t)
		if _, err := s.MUCRoom(ctx, "lobby"); !errors.Is(err, ErrRoomNotFound) {
			t.Fatalf("missing room: %v, want ErrRoomNotFound", err)
		}
		r := MUCRoom{Room: "lobby", Config: []byte(`{"name":"Lobby"}`), Public: true, Creator: "alice@localhost"}
		if err := s.SaveMUCRoom(ctx, r); err != nil {
			t.Fatal(err)
		}
		if err := s.SaveMUCRoom(ctx, MUCRoom{Room: "hidden", Config: []byte(`{}`), Creator: "alice@localhost"}); err != nil {
			t.Fatal(err)
		}
		for _, a := range []struct{ jid, aff string }{{"alice@localhost", "owner"}, {"bob@localhost", "member"}, {"eve@localhost", "outcast"}, {"bob@localhost", "admin"}, {"eve@localhost", "none"}} {
			if err := s.SetMUCAffiliation(ctx, "lobby", a.jid, a.aff, ""); err != nil {
				t.Fatal(err)
			}
		}
		got, err := s.MUCRoom(ctx, "lobby")
		if err != nil {
			t.Fatal(err)
		}
		want := map[string]string{"alice@localhost": "owner", "bob@localhost": "admin"}
		if string(got.Config) != string(r.Config) || !got.Public || got.Creator != r.Creator || !maps.Equal(got.Affiliations, want) {
			t.Fatalf("room = %+v, want %+v with %v", got, r, want)
		}
		r.Public = false
		r.Config = []byte(`{"name":"Lobby 2"}`)
		if err := s.SaveMUCRoom(ctx, r); err != nil {
			t.Fatal(err)
		}
		if got, _ := s.MUCRoom(ctx, "lobby"); got.Public || string(got.Config) != `{"name":"Lobby 2"}` || len(got.Affiliations) != 2 {
			t.Fatalf("after update: %+v", got)
		}
		if n, err := s.MUCRoomsCreatedBy(ctx, "alice@localhost"); err != nil || n != 2 {
			t.Fatalf("rooms created = %d, %v; want 2", n, err)
		}
		if err := s.SaveMUCRoom(ctx, MUCRoom{Room: "b", Config: []byte(`{}`), Public: true, Creator: "x@localhost"}); err != nil {
			t.Fatal(err)
		}
		if err := s.SaveMUCRoom(ctx, MUCRoom{Room: "a", Config: []byte(`{}`), Public: true, Creator: "x@localhost"}); err != nil {
			t.Fatal(err)
		}
		if pub, err := s.PublicMUCRooms(ctx, 10); err != nil || !slices.Equal(pub, []string{"a", "b"}) {
			t.Fatalf("public rooms = %q, %v", pub, err)
		}
		if err := s.DeleteMUCRoom(ctx, "lobby"); err != nil {
			t.Fatal(err)
		}
		if _, err := s.MUCRoom(ctx, "lobby"); !errors.Is(err, ErrRoomNotFound) {
			t.Fatalf("deleted room: %v", err)
		}
		if err := s.DeleteMUCRoom(ctx, "lobby"); err != nil {
			t.Fatalf("deleting again: %v", err)
		}
		if err := s.SaveMUCRoom(ctx, MUCRoom{Room: "bad\x00", Config: []byte(`{}`)}); !errors.Is(err, ErrInvalidText) {
			t.Fatalf("NUL in name: %v", err)
		}
	})
	t.Run("reserved nicknames", func(t *testing.T) {
		s := open(t)
		if err := s.SaveMUCRoom(ctx, MUCRoom{Room: "lobby", Config: []byte(`{}`), Creator: "alice@localhost"}); err != nil {
			t.Fatal(err)
		}
		steps := []struct {
			name           string
			do             func() error
			wantAff, wantN map[string]string
		}{
			{"register", func() error { return s.ReserveMUCNick(ctx, "lobby", "bob@localhost", "member", "Bob") },
				map[string]string{"bob@localhost": "member"}, map[string]string{"bob@localhost": "Bob"}},
			{"promotion keeps the nick", func() error { return s.SetMUCAffiliation(ctx, "lobby", "bob@localhost", "admin", "") },
				map[string]string{"bob@localhost": "admin"}, map[string]string{"bob@localhost": "Bob"}},
			{"another nick", func() error { return s.ReserveMUCNick(ctx, "lobby", "bob@localhost", "admin", "Robert") },
				map[string]string{"bob@localhost": "admin"}, map[string]string{"bob@localhost": "Robert"}},
			{"ban drops it", func() error { return s.SetMUCAffiliation(ctx, "lobby", "bob@localhost", "outcast", "") },
				map[string]string{"bob@localhost": "outcast"}, map[string]string{}},
			{"again", func() error { return s.ReserveMUCNick(ctx, "lobby", "bob@localhost", "member", "Bob") },
				map[string]string{"bob@localhost": "member"}, map[string]string{"bob@localhost": "Bob"}},
			{"none drops both", func() error { return s.SetMUCAffiliation(ctx, "lobby", "bob@localhost", "none", "") },
				map[string]string{}, map[string]string{}},
		}
		for _, st := range steps {
			if err := st.do(); err != nil {
				t.Fatalf("%s: %v", st.name, err)
			}
			got, err := s.MUCRoom(ctx, "lobby")
			if err != nil {
				t.Fatal(err)
			}
			if !maps.Equal(got.Affiliations, st.wantAff) || !maps.Equal(got.Nicks, st.wantN) {
				t.Fatalf("%s: affiliations %v nicks %v; want %v %v", st.name, got.Affiliations, got.Nicks, st.wantAff, st.wantN)
			}
		}
		for _, bad := range [][2]string{{"none", "x"}, {"outcast", "x"}, {"member", "a\x00"}} {
			if err := s.ReserveMUCNick(ctx, "lobby", "bob@localhost", bad[0], bad[1]); !errors.Is(err, ErrInvalidText) {
				t.Fatalf("ReserveMUCNick(%q, %q) = %v, want ErrInvalidText", bad[0], bad[1], err)
			}
		}
	})
	t.Run("secret", func(t *testing.T) {
		s := open(t)
		a, err := s.MUCSecret(ctx)
		if err != nil || len(a) != 64 {
			t.Fatalf("secret %q, %v", a, err)
		}
		if b, err := s.MUCSecret(ctx); err != nil || b != a {
			t.Fatalf("second secret %q, %v; want %q", b, err, a)
		}
	})
}
