package server_test

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/krill-xmpp/krill/storage"
)

// The MUC archive tests (XEP-0313 on room JIDs: modules/mam as the muc
// module's Archiver) run a server with both on and check the exact bytes.

// roomQuery is mamQuery addressed to the room rj.
func roomQuery(rj, id, queryID, rsm string, fields ...string) string {
	return strings.Replace(mamQuery(id, queryID, rsm, fields...), `<iq `, `<iq to='`+rj+`' `, 1)
}

// roomFin is the iq result from room rj ending a query.
func roomFin(rj, id string, complete bool, first, last string, count int) string {
	return strings.Replace(fin(id, complete, first, last, count), `<iq type='result' id='`+id+`'>`, `<iq type='result' id='`+id+`' from='`+rj+`'>`, 1)
}

// roomResult is one result message from room rj's archive to `to`.
func roomResult(rj, to, queryID, id, stamp, fwd string) string {
	return `<message from='` + rj + `' to='` + to + `'><result xmlns='urn:xmpp:mam:2' queryid='` + queryID + `' id='` + id + `'><forwarded xmlns='urn:xmpp:forward:0'>` +
		`<delay xmlns='urn:xmpp:delay' stamp='` + stamp + `'/>` + fwd + `</forwarded></result></message>`
}

// roomArchived counts what storage holds of room rj's archive.
func roomArchived(t *testing.T, store *storage.SQL, rj string) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	items, err := store.ArchivePage(ctx, storage.ArchiveQuery{User: rj, Max: 100})
	if err != nil {
		t.Fatal(err)
	}
	return len(items)
}

// TestMUCArchive: a room with enablearchiving archives its groupchat
// messages; every copy carries <stanza-id by=room/> with the archive ID
// (a forged one by the room is removed); an occupant pages through the
// archive (max, after, before, with a nick) and gets the messages as the
// room sent them, from the room; the room advertises urn:xmpp:mam:2;
// destroying it deletes its archive.
func TestMUCArchive(t *testing.T) {
	srv, store, clock := mamServer(t, nil, "alice", "bob")
	w := &mucWorld{t: t, srv: srv, secret: mucSecret(t, store)}
	alice, bob := w.user("alice", "a"), w.user("bob", "b")
	a := occ{"hist", "Alice", "alice@localhost/a", "owner", "moderator"}
	b := occ{"hist", "Bob", "bob@localhost/b", "none", "participant"}
	rj := "hist@" + mucSvc
	w.create(alice, a)
	configure(t, alice, "hist", map[string]string{"enablearchiving": "1", "persistentroom": "1"}, 170)
	bob.send(`<presence to='` + rj + `/Bob'><x xmlns='` + nsMUC + `'/></presence>`)
	bob.expect(t, w.pres(a, b.full, "", false, nil, ""))
	bob.expect(t, w.pres(b, b.full, "", true, []int{110, 170}, ""))
	bob.expect(t, subject("hist", b.full))
	alice.expect(t, w.pres(b, a.full, "", true, nil, ""))

	got := bob.exchange(t, `<iq type='get' id='d1' to='`+rj+`'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>`,
		`<iq type='result' id='d1' from='`+rj+`'><query xmlns='http://jabber.org/protocol/disco#info'>{**}</query></iq>`)
	if !strings.Contains(got, `<feature var='urn:xmpp:mam:2'/>`) {
		t.Errorf("disco#info of an archiving room lacks urn:xmpp:mam:2: %s", got)
	}

	// Five messages a minute apart; the fifth carries a stanza-id forged
	// in the room's name.
	type sent struct {
		from     occ
		id, body string
		extra    string
	}
	msgs := []sent{
		{from: a, id: "g1", body: "one"},
		{from: b, id: "g2", body: "two"},
		{from: a, id: "g3", body: "three"},
		{from: b, id: "g4", body: "four"},
		{from: a, id: "g5", body: "five", extra: `<stanza-id xmlns='urn:xmpp:sid:0' by='` + rj + `' id='forged'/>`},
	}
	var ids, fwds, stamps []string
	for i, m := range msgs {
		clock.add(time.Minute)
		stamps = append(stamps, stamp(clock.now()))
		sender := alice
		if m.from == b {
			sender = bob
		}
		sender.send(`<message to='` + rj + `' type='groupchat' id='` + m.id + `'><body>` + m.body + `</body>` + m.extra + `</message>`)
		rest := `' type='groupchat' id='` + m.id + `'><body>` + m.body + `</body><occupant-id xmlns='urn:xmpp:occupant-id:0' id='` + w.id("hist", m.from.bare()) + `'/>`
		head := `<message from='` + rj + `/` + m.from.nick + `' to='`
		got := alice.expect(t, head+a.full+rest+`<stanza-id xmlns='urn:xmpp:sid:0' by='`+rj+`' id='{*}'/></message>`)
		id := stanzaID(t, got, rj)
		if id == "forged" {
			t.Fatalf("message %d kept the forged stanza-id", i+1)
		}
		// Every copy carries the same archive ID.
		bob.expect(t, head+b.full+rest+`<stanza-id xmlns='urn:xmpp:sid:0' by='`+rj+`' id='`+id+`'/></message>`)
		ids = append(ids, id)
		fwds = append(fwds, `<message xmlns='jabber:client' from='`+rj+`/`+m.from.nick+rest+`</message>`)
	}

	pick := func(is ...int) []int { return is }
	cases := []struct {
		name     string
		rsm      string
		fields   []string
		want     []int
		complete bool
		count    int
	}{
		{"first page", `<max>2</max>`, nil, pick(0, 1), false, 5},
		{"next page", `<max>2</max><after>` + ids[1] + `</after>`, nil, pick(2, 3), false, 5},
		{"last forward page", `<max>2</max><after>` + ids[3] + `</after>`, nil, pick(4), true, 5},
		{"last page", `<max>2</max><before/>`, nil, pick(3, 4), false, 5},
		{"page before", `<max>5</max><before>` + ids[2] + `</before>`, nil, pick(0, 1), true, 5},
		{"one occupant's", ``, []string{"with", rj + "/Bob"}, pick(1, 3), true, 2},
		{"the room's", `<max>1</max>`, []string{"with", rj}, pick(0), false, 5},
		{"another JID", ``, []string{"with", "bob@localhost"}, nil, true, 0},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			id, qid := "q"+strconv.Itoa(i), "r"+strconv.Itoa(i)
			bob.send(roomQuery(rj, id, qid, tc.rsm, tc.fields...))
			for _, k := range tc.want {
				bob.expect(t, roomResult(rj, b.full, qid, ids[k], stamps[k], fwds[k]))
			}
			first, last := "", ""
			if len(tc.want) > 0 {
				first, last = ids[tc.want[0]], ids[tc.want[len(tc.want)-1]]
			}
			bob.expect(t, roomFin(rj, id, tc.complete, first, last, tc.count))
		})
	}
	bob.exchange(t, `<iq type='get' id='m1' to='`+rj+`'><metadata xmlns='urn:xmpp:mam:2'/></iq>`,
		`<iq type='result' id='m1' from='`+rj+`'><metadata xmlns='urn:xmpp:mam:2'><start id='`+ids[0]+`' timestamp='`+stamps[0]+`'/><end id='`+ids[4]+`' timestamp='`+stamps[4]+`'/></metadata></iq>`)

	// A joiner's history carries the archive IDs too.
	bob.send(`<presence to='` + rj + `/Bob' type='unavailable'/>`)
	bob.skipUntil(`<status code='110'/>`)
	bob.skipUntil(`</presence>`)
	alice.skipUntil(`</presence>`)
	bob.send(`<presence to='` + rj + `/Bob'><x xmlns='` + nsMUC + `'><history maxstanzas='1'/></x></presence>`)
	bob.skipUntil(`<status code='110'/><status code='170'/>`)
	bob.skipUntil(`</presence>`)
	bob.expect(t, `<message from='`+rj+`/Alice' to='`+b.full+`' type='groupchat' id='g5'><body>five</body><occupant-id xmlns='urn:xmpp:occupant-id:0' id='`+w.id("hist", "alice@localhost")+`'/>`+
		`<stanza-id xmlns='urn:xmpp:sid:0' by='`+rj+`' id='`+ids[4]+`'/><delay xmlns='urn:xmpp:delay' from='`+rj+`' stamp='{*}'/></message>`)
	bob.skipUntil(`<subject/></message>`)
	alice.skipUntil(`</presence>`)

	// Destroying the room deletes its archive (on the worker pool).
	if n := roomArchived(t, store, rj); n != 5 {
		t.Fatalf("archive of %s holds %d messages, want 5", rj, n)
	}
	alice.exchange(t, `<iq type='set' id='x1' to='`+rj+`'><query xmlns='`+nsOwner+`'><destroy/></query></iq>`,
		`<iq type='result' id='x1' from='`+rj+`'/>`)
	if !waitFor(10*time.Second, func() bool { return roomArchived(t, store, rj) == 0 }) {
		t.Fatalf("archive of the destroyed room %s not deleted", rj)
	}
}

// TestMUCArchiveOffAndAccess: a room without archiving archives nothing,
// adds no stanza-id, advertises no urn:xmpp:mam:2 and refuses queries;
// who may read an archive: an occupant, anyone for a public open room,
// not a non-occupant of a members-only room; a temporary room's archive
// goes when its last occupant leaves; a chat state alone is not archived.
func TestMUCArchiveOffAndAccess(t *testing.T) {
	srv, store, _ := mamServer(t, nil, "alice", "carol")
	w := &mucWorld{t: t, srv: srv, secret: mucSecret(t, store)}
	alice, carol := w.user("alice", "a"), w.user("carol", "c")
	plain := occ{"plain", "Alice", "alice@localhost/a", "owner", "moderator"}
	pj := "plain@" + mucSvc
	w.create(alice, plain)
	alice.exchange(t, `<message to='`+pj+`' type='groupchat' id='p1'><body>unarchived</body></message>`,
		`<message from='`+pj+`/Alice' to='alice@localhost/a' type='groupchat' id='p1'><body>unarchived</body><occupant-id xmlns='urn:xmpp:occupant-id:0' id='`+w.id("plain", "alice@localhost")+`'/></message>`)
	got := alice.exchange(t, `<iq type='get' id='d1' to='`+pj+`'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>`,
		`<iq type='result' id='d1' from='`+pj+`'><query xmlns='http://jabber.org/protocol/disco#info'>{**}</query></iq>`)
	if strings.Contains(got, `urn:xmpp:mam:2`) {
		t.Errorf("disco#info of a room without archiving advertises MAM: %s", got)
	}

	priv := occ{"priv", "Alice", "alice@localhost/a", "owner", "moderator"}
	vj := "priv@" + mucSvc
	w.create(alice, priv)
	configure(t, alice, "priv", map[string]string{"enablearchiving": "1", "membersonly": "1"}, 170)
	open := occ{"open", "Alice", "alice@localhost/a", "owner", "moderator"}
	oj := "open@" + mucSvc
	w.create(alice, open)
	configure(t, alice, "open", map[string]string{"enablearchiving": "1"}, 170)

	cases := []struct {
		name string
		from *rawConn
		to   string
		want string
	}{
		{"archiving off", alice, pj,
			`<iq type='error' id='a0' from='` + pj + `' to='alice@localhost/a'><error type='cancel'><service-unavailable ` + stanzasNS + `/><text ` + stanzasNS + `>this room keeps no archive</text></error></iq>`},
		{"non-occupant of a members-only room", carol, vj,
			`<iq type='error' id='a1' from='` + vj + `' to='carol@localhost/c'><error type='auth'><forbidden ` + stanzasNS + `/><text ` + stanzasNS + `>only occupants read this room&apos;s archive</text></error></iq>`},
		{"occupant of a members-only room", alice, vj, roomFin(vj, "a2", true, "", "", 0)},
		{"non-occupant of a public open room", carol, oj, roomFin(oj, "a3", true, "", "", 0)},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tc.from.exchange(t, roomQuery(tc.to, "a"+strconv.Itoa(i), "", ""), tc.want)
		})
	}

	// Turned on later, the archive has nothing of before; a message
	// now is archived, and goes with the temporary room.
	configure(t, alice, "plain", map[string]string{"enablearchiving": "1"}, 170)
	alice.exchange(t, roomQuery(pj, "p2", "", ""), roomFin(pj, "p2", true, "", "", 0))
	got = alice.exchange(t, `<message to='`+pj+`' type='groupchat' id='p3'><body>kept</body></message>`,
		`<message from='`+pj+`/Alice' to='alice@localhost/a' type='groupchat' id='p3'><body>kept</body><occupant-id xmlns='urn:xmpp:occupant-id:0' id='`+w.id("plain", "alice@localhost")+`'/><stanza-id xmlns='urn:xmpp:sid:0' by='`+pj+`' id='{*}'/></message>`)
	id := stanzaID(t, got, pj)
	// A chat state alone is not conversation: not archived, no stanza-id.
	alice.exchange(t, `<message to='`+pj+`' type='groupchat' id='p5'><active xmlns='http://jabber.org/protocol/chatstates'/></message>`,
		`<message from='`+pj+`/Alice' to='alice@localhost/a' type='groupchat' id='p5'><active xmlns='http://jabber.org/protocol/chatstates'/><occupant-id xmlns='urn:xmpp:occupant-id:0' id='`+w.id("plain", "alice@localhost")+`'/></message>`)
	alice.exchange(t, roomQuery(pj, "p4", "", "<max>0</max>"), roomFin(pj, "p4", false, "", "", 1))
	if n := roomArchived(t, store, pj); n != 1 {
		t.Fatalf("archive of %s holds %d messages (want 1, %s)", pj, n, id)
	}
	alice.send(`<presence to='` + pj + `/Alice' type='unavailable'/>`)
	alice.skipUntil(`<status code='110'/>`)
	alice.skipUntil(`</presence>`)
	if !waitFor(10*time.Second, func() bool { return roomArchived(t, store, pj) == 0 }) {
		t.Fatalf("archive of the temporary room %s not deleted when it ended", pj)
	}
}
