package server_test

import (
	"context"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/krill-xmpp/krill/storage"
)

// fieldArchiveDays is the room configuration field of a room's own
// archive retention.
const fieldArchiveDays = "{https://krill-xmpp.github.io/protocol/muc}archive_days"

// TestMUCArchiveRetention: an owner gives a room's archive a retention of
// its own, in days; it is stored with the room and the archive's
// retention job deletes what is older, leaving other rooms' archives (on
// the service's policy, here none) alone. A value out of range is
// refused.
func TestMUCArchiveRetention(t *testing.T) {
	srv, store, clock := mamServer(t, nil, "alice")
	w := &mucWorld{t: t, srv: srv, secret: mucSecret(t, store)}
	alice := w.user("alice", "a")
	a := func(room string) occ { return occ{room, "Alice", "alice@localhost/a", "owner", "moderator"} }
	days := func(room, v string) string {
		return `<iq type='set' id='d-` + room + `' to='` + room + `@` + mucSvc + `'><query xmlns='` + nsOwner + `'><x xmlns='jabber:x:data' type='submit'>` +
			`<field var='FORM_TYPE'><value>http://jabber.org/protocol/muc#roomconfig</value></field>` +
			`<field var='` + fieldArchiveDays + `'><value>` + v + `</value></field></x></query></iq>`
	}
	for _, room := range []string{"short", "long"} {
		w.create(alice, a(room))
		configure(t, alice, room, map[string]string{"enablearchiving": "1", "persistentroom": "1"}, 170)
	}
	alice.exchange(t, days("short", "-1"),
		`<iq type='error' id='d-short' from='short@`+mucSvc+`' to='alice@localhost/a'><error type='modify'><not-acceptable `+stanzasNS+`/><text `+stanzasNS+`>a field has a value the room does not take</text></error></iq>`)
	alice.exchange(t, days("short", "1"), `<iq type='result' id='d-short' from='short@`+mucSvc+`'/>`)
	alice.expect(t, configChanged("short", "{*}"))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// The room's writes run on the worker pool.
	if !waitFor(ioTimeout, func() bool { rec, err := store.MUCRoom(ctx, "short"); return err == nil && rec.ArchiveDays == 1 }) {
		t.Fatal("the room's retention was not stored")
	}

	bodies := func(room string) string {
		t.Helper()
		items, err := store.ArchivePage(ctx, storage.ArchiveQuery{User: room + "@" + mucSvc, Max: 10})
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, it := range items {
			if m := regexp.MustCompile(`<body>([^<]*)</body>`).FindSubmatch(it.Stanza); m != nil {
				out = append(out, string(m[1]))
			}
		}
		return strings.Join(out, ",")
	}
	say := func(body string) {
		t.Helper()
		for _, room := range []string{"short", "long"} {
			alice.send(`<message to='` + room + `@` + mucSvc + `' type='groupchat' id='` + body + `'><body>` + body + `</body></message>`)
			alice.skipUntil(`</message>`)
		}
	}
	say("old")
	if !waitFor(ioTimeout, func() bool { return bodies("short") == "old" && bodies("long") == "old" }) {
		t.Fatalf("archives before: short %q, long %q", bodies("short"), bodies("long"))
	}
	clock.add(25 * time.Hour)
	say("new")
	if !waitFor(ioTimeout, func() bool { return bodies("short") == "new" && bodies("long") == "old,new" }) {
		t.Fatalf("archives a day later: short %q, long %q", bodies("short"), bodies("long"))
	}
	if n := srv.Stats().Modules["mam.expired"]; n != 1 {
		t.Errorf("mam.expired = %d, want 1", n)
	}
}
