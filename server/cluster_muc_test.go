package server_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/krill-xmpp/krill/config"
	"github.com/krill-xmpp/krill/sasl"
	"github.com/krill-xmpp/krill/server"
	"github.com/krill-xmpp/krill/storage"
)

// The multi-user chat service in a cluster: each room held by one node at
// a time (a lease in JetStream KV), the other nodes forwarding their
// sessions' stanzas to it (modules/muc/cluster.go, server/cluster_shared.go).

// clusterMUC is mucWorld for a cluster: the occupant ids come from the
// secret every node reads from the shared database.
func clusterMUC(t *testing.T, dsn string, srv *server.Server) *mucWorld {
	t.Helper()
	store, err := storage.OpenPostgres(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	return &mucWorld{t: t, srv: srv, secret: mucSecret(t, store)}
}

// nodeLogin logs user in on srv with resource.
func nodeLogin(t *testing.T, srv *server.Server, user, resource string) *rawConn {
	t.Helper()
	c := dialRaw(t, srv)
	c.scramLogin(user, testPassword, resource)
	return c
}

// mucCounter reads a counter of the muc module on srv.
func mucCounter(srv *server.Server, name string) uint64 { return srv.Stats().Modules["muc."+name] }

// TestClusterMUCOneRoom: alice on node a creates a room, bob on node b and
// carol on node c join it: one room (created once, on a), the same
// occupants and the same messages in the same order for all three, the
// history a latecomer on another node gets, private messages and a leave
// across the nodes, and a session ending on its node takes it out of the
// room held by another.
func TestClusterMUCOneRoom(t *testing.T) {
	dsn := clusterDSN(t)
	_, url := testNATS(t)
	a := startNode(t, clusterConfig(t, url, dsn, "a"), "alice", "bob", "carol", "dave")
	b := startNode(t, clusterConfig(t, url, dsn, "b"))
	c := startNode(t, clusterConfig(t, url, dsn, "c"))
	w := clusterMUC(t, dsn, a)

	alice, bob, carol := nodeLogin(t, a, "alice", "a"), nodeLogin(t, b, "bob", "b"), nodeLogin(t, c, "carol", "c")
	seen(t, a, "bob", "b", false)
	seen(t, a, "carol", "c", false)
	seen(t, b, "alice", "a", false)
	seen(t, c, "bob", "b", false)
	ao := occ{"room", "Alice", "alice@localhost/a", "owner", "moderator"}
	bo := occ{"room", "Bob", "bob@localhost/b", "none", "participant"}
	co := occ{"room", "Carol", "carol@localhost/c", "none", "participant"}
	w.create(alice, ao)

	bob.send(`<presence to='room@` + mucSvc + `/Bob'><x xmlns='` + nsMUC + `'/></presence>`)
	bob.expect(t, w.pres(ao, bo.full, "", false, nil, ""))
	bob.expect(t, w.pres(bo, bo.full, "", true, []int{110}, ""))
	bob.expect(t, subject("room", bo.full))
	alice.expect(t, w.pres(bo, ao.full, "", true, nil, ""))

	// Messages from both sides, in the order the room took them; each
	// sender waits for its echo, so the order is fixed.
	var want []string
	for i := range 4 {
		from, fo := alice, ao
		if i%2 == 1 {
			from, fo = bob, bo
		}
		from.send(fmt.Sprintf(`<message to='room@%s' type='groupchat' id='m%d'><body>hi %d</body></message>`, mucSvc, i, i))
		for _, x := range []struct {
			c *rawConn
			o occ
		}{{alice, ao}, {bob, bo}} {
			x.c.expect(t, w.groupchat(fo, x.o.full, fmt.Sprintf("m%d", i), fmt.Sprintf("hi %d", i)))
		}
		want = append(want, fmt.Sprintf("m%d", i))
	}

	// carol, on a third node, joins: the same occupants, the same history
	// in the same order.
	carol.send(`<presence to='room@` + mucSvc + `/Carol'><x xmlns='` + nsMUC + `'/></presence>`)
	carol.expect(t, w.pres(ao, co.full, "", false, nil, ""))
	carol.expect(t, w.pres(bo, co.full, "", false, nil, ""))
	carol.expect(t, w.pres(co, co.full, "", true, []int{110}, ""))
	got := carol.skipUntil(subject("room", co.full))
	for i, id := range want {
		j := strings.Index(got, "id='"+id+"'")
		if j < 0 {
			t.Fatalf("history lacks %s: %q", id, got)
		}
		if i > 0 && j < strings.Index(got, "id='"+want[i-1]+"'") {
			t.Fatalf("history out of order: %q", got)
		}
	}
	alice.expect(t, w.pres(co, ao.full, "", true, nil, ""))
	bob.expect(t, w.pres(co, bo.full, "", false, nil, ""))

	// A private message from carol (node c) to Bob (node b) through the
	// room on node a.
	carol.send(`<message to='room@` + mucSvc + `/Bob' type='chat' id='pm1'><body>psst</body></message>`)
	bob.expect(t, `<message from='room@`+mucSvc+`/Carol' to='`+bo.full+`' type='chat' id='pm1'><body>psst</body><occupant-id xmlns='urn:xmpp:occupant-id:0' id='`+w.id("room", "carol@localhost")+`'/><x xmlns='`+nsUser+`'/></message>`)
	// An iq answered by the room goes back to its sender on its node.
	carol.exchange(t, `<iq type='get' id='d1' to='room@`+mucSvc+`'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>`,
		`<iq type='result' id='d1' from='room@`+mucSvc+`'><query xmlns='http://jabber.org/protocol/disco#info'>{**}</query></iq>`)

	// bob leaves by presence; carol's connection drops and node c takes
	// her out of the room held by a.
	bob.send(`<presence to='room@` + mucSvc + `/Bob' type='unavailable'/>`)
	gone := occ{"room", "Bob", bo.full, "none", "none"}
	bob.expect(t, w.pres(gone, bo.full, "unavailable", true, []int{110}, ""))
	alice.expect(t, w.pres(gone, ao.full, "unavailable", true, nil, ""))
	carol.expect(t, w.pres(gone, co.full, "unavailable", false, nil, ""))
	_ = carol.conn.Close()
	alice.expect(t, w.pres(occ{"room", "Carol", co.full, "none", "none"}, ao.full, "unavailable", true, nil, ""))

	// One room in the cluster: created once, on a; b and c forwarded.
	if n := mucCounter(a, "rooms_created") + mucCounter(b, "rooms_created") + mucCounter(c, "rooms_created"); n != 1 {
		t.Fatalf("%d rooms created in the cluster, want 1", n)
	}
	if n := mucCounter(b, "joins") + mucCounter(c, "joins"); n != 0 {
		t.Fatalf("%d joins handled off the room's node", n)
	}
	_, metrics := get(t, "http://"+b.AdminAddr().String()+"/metrics")
	for _, want := range []string{`krill_cluster_forwarded_total{direction="out"}`, "krill_cluster_route_seconds_bucket", `krill_cluster_leases{state="known"} 1` + "\n"} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %q:\n%s", want, grepLines(metrics, "krill_cluster"))
		}
	}
	if strings.Contains(metrics, "krill_cluster_route_seconds_count 0\n") {
		t.Errorf("no routing latency observed:\n%s", grepLines(metrics, "krill_cluster_route"))
	}
}

// TestClusterMUCLeaseContention: users on two nodes join the same new
// room at the same moment: one node takes the lease and creates the room
// (status 201 for exactly one of them), the other's join is forwarded to
// it, and both end up in that one room.
func TestClusterMUCLeaseContention(t *testing.T) {
	dsn := clusterDSN(t)
	_, url := testNATS(t)
	a := startNode(t, clusterConfig(t, url, dsn, "a"), "alice", "bob")
	b := startNode(t, clusterConfig(t, url, dsn, "b"))
	alice, bob := nodeLogin(t, a, "alice", "a"), nodeLogin(t, b, "bob", "b")
	seen(t, a, "bob", "b", false)
	seen(t, b, "alice", "a", false)
	const rooms = 5
	for i := range rooms {
		room := fmt.Sprintf("race%d", i)
		// No MUC element: an instant room (GC 1.0), open at once, so the
		// second joiner enters whichever node created it.
		var wg sync.WaitGroup
		outs := make([]string, 2)
		for j, x := range []struct {
			c    *rawConn
			nick string
		}{{alice, "Alice"}, {bob, "Bob"}} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				x.c.send(`<presence to='` + room + `@` + mucSvc + `/` + x.nick + `'/>`)
				outs[j] = x.c.skipUntil(`<subject/></message>`)
			}()
		}
		wg.Wait()
		created := 0
		for _, o := range outs {
			if strings.Contains(o, "<status code='201'/>") {
				created++
			}
		}
		if created != 1 {
			t.Fatalf("room %s: %d creations seen:\nalice: %q\nbob: %q", room, created, outs[0], outs[1])
		}
	}
	if n := mucCounter(a, "rooms_created") + mucCounter(b, "rooms_created"); n != rooms {
		t.Fatalf("%d rooms created for %d names", n, rooms)
	}
	if n := mucCounter(a, "joins") + mucCounter(b, "joins"); n != 2*rooms {
		t.Fatalf("%d joins, want %d", n, 2*rooms)
	}
}

// TestClusterMUCOwnerGone: a persistent room held by node a; a shuts down
// gracefully: bob, an occupant on node b, is told (332) by the room
// before a goes, the lease is released, and bob's next join makes b take
// the room, loaded from storage with its configuration and affiliations.
// Then b's process dies without a word (Abandon): carol, in the room from
// node c, is told she is out (110, 333), her XEP-0410 self-ping makes c
// take the lease over from the dead holder, reloading the room again,
// and is answered not-acceptable; her rejoin enters the room there.
func TestClusterMUCOwnerGone(t *testing.T) {
	dsn := clusterDSN(t)
	_, url := testNATS(t)
	ca := clusterConfig(t, url, dsn, "a")
	a := startNode(t, ca, "alice", "bob", "carol", "dave")
	b := startNode(t, clusterConfig(t, url, dsn, "b"))
	c := startNode(t, clusterConfig(t, url, dsn, "c"))
	w := clusterMUC(t, dsn, a)
	alice, bob := nodeLogin(t, a, "alice", "a"), nodeLogin(t, b, "bob", "b")
	seen(t, a, "bob", "b", false)
	seen(t, b, "alice", "a", false)

	ao := occ{"keep", "Alice", "alice@localhost/a", "owner", "moderator"}
	w.create(alice, ao)
	configure(t, alice, "keep", map[string]string{"persistentroom": "1", "membersonly": "1", "roomname": "Kept"})
	for _, m := range []string{"bob", "carol"} {
		alice.exchange(t, `<iq type='set' id='m`+m+`' to='keep@`+mucSvc+`'><query xmlns='`+nsAdmin+`'><item affiliation='member' jid='`+m+`@localhost'/></query></iq>`,
			`<iq type='result' id='m`+m+`' from='keep@`+mucSvc+`'/>`)
	}
	bo := occ{"keep", "Bob", "bob@localhost/b", "member", "participant"}
	bob.send(`<presence to='keep@` + mucSvc + `/Bob'><x xmlns='` + nsMUC + `'/></presence>`)
	bob.skipUntil(subject("keep", bo.full))
	alice.expect(t, w.pres(bo, ao.full, "", true, nil, ""))

	// a shuts down: bob is removed with 332 by the room itself.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := a.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	bob.expect(t, w.pres(occ{"keep", "Bob", bo.full, "member", "none"}, bo.full, "unavailable", true, []int{110, 332}, ""))

	// bob rejoins: node b takes the released lease and loads the room
	// from storage, configuration and affiliations intact.
	bob.send(`<presence to='keep@` + mucSvc + `/Bob'><x xmlns='` + nsMUC + `'/></presence>`)
	bob.expect(t, w.pres(bo, bo.full, "", true, []int{110}, ""))
	bob.expect(t, subject("keep", bo.full))
	bob.exchange(t, `<iq type='get' id='d1' to='keep@`+mucSvc+`'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>`,
		`<iq type='result' id='d1' from='keep@`+mucSvc+`'><query xmlns='http://jabber.org/protocol/disco#info'><identity category='conference' type='text' name='Kept'/>{**}<feature var='muc_membersonly'/>{**}<feature var='muc_persistent'/>{**}</query></iq>`)
	dave := nodeLogin(t, c, "dave", "d")
	dave.exchange(t, `<presence to='keep@`+mucSvc+`/Dave' id='j1'><x xmlns='`+nsMUC+`'/></presence>`,
		`<presence from='keep@`+mucSvc+`/Dave' to='dave@localhost/d' type='error' id='j1'><x xmlns='`+nsMUC+`'/><error type='auth'><registration-required `+stanzasNS+`/><text `+stanzasNS+`>the room is members-only</text></error></presence>`)
	carol := nodeLogin(t, c, "carol", "c")
	co := occ{"keep", "Carol", "carol@localhost/c", "member", "participant"}
	carol.send(`<presence to='keep@` + mucSvc + `/Carol'><x xmlns='` + nsMUC + `'/></presence>`)
	carol.expect(t, w.pres(bo, co.full, "", false, nil, ""))
	carol.expect(t, w.pres(co, co.full, "", true, []int{110}, ""))
	carol.expect(t, subject("keep", co.full))
	bob.expect(t, w.pres(co, bo.full, "", false, nil, ""))
	if mucCounter(b, "joins") != 2 || mucCounter(c, "joins") != 0 {
		t.Fatalf("joins: b %d, c %d; want 2, 0", mucCounter(b, "joins"), mucCounter(c, "joins"))
	}

	// b dies: carol, on c, is told she is out; bob's session died with b.
	b.ClusterNode().Abandon()
	carol.expect(t, `<presence from='keep@`+mucSvc+`/Carol' to='carol@localhost/c' type='unavailable'><x xmlns='`+nsUser+`'><item affiliation='none' role='none'/><status code='110'/><status code='333'/></x></presence>`)
	// dave, on the same node, whose join the room refused, is told
	// nothing: he was never in it.
	dave.sync(t, "s0")
	// A client that missed the 333 finds out by XEP-0410 self-ping: the
	// ping takes the lease over (node c), and the room, loaded again,
	// does not know her.
	carol.exchange(t, `<iq type='get' id='sp' to='keep@`+mucSvc+`/Carol'><ping xmlns='urn:xmpp:ping'/></iq>`,
		`<iq type='error' id='sp' from='keep@`+mucSvc+`/Carol' to='carol@localhost/c'><error type='modify'><not-acceptable `+stanzasNS+`/><text `+stanzasNS+`>not an occupant of the room</text></error></iq>`)
	// Her rejoin enters the room on c.
	carol.send(`<presence to='keep@` + mucSvc + `/Carol'><x xmlns='` + nsMUC + `'/></presence>`)
	carol.expect(t, w.pres(co, co.full, "", true, []int{110}, ""))
	carol.expect(t, subject("keep", co.full))
	carol.exchange(t, `<iq type='get' id='d2' to='keep@`+mucSvc+`'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>`,
		`<iq type='result' id='d2' from='keep@`+mucSvc+`'><query xmlns='http://jabber.org/protocol/disco#info'><identity category='conference' type='text' name='Kept'/>{**}<feature var='muc_membersonly'/>{**}</query></iq>`)
	if mucCounter(c, "joins") != 1 {
		t.Fatalf("c handled %d joins, want 1", mucCounter(c, "joins"))
	}
	_, metrics := get(t, "http://"+c.AdminAddr().String()+"/metrics")
	if !strings.Contains(metrics, `krill_cluster_leases_taken_total{how="takeover"} 1`+"\n") {
		t.Errorf("no takeover counted:\n%s", grepLines(metrics, "krill_cluster_leases"))
	}
}

// TestClusterRegistrationLimit: register.max_per_ip holds across the
// nodes (a counter in JetStream KV): two accounts from one address on two
// nodes use the allowance, a third on either node is refused with
// resource-constraint, another address is not; the per-node connection
// caps stay per node.
func TestClusterRegistrationLimit(t *testing.T) {
	dsn := clusterDSN(t)
	_, url := testNATS(t)
	ca, cb := clusterConfig(t, url, dsn, "a"), clusterConfig(t, url, dsn, "b")
	for _, c := range []*config.Config{&ca, &cb} {
		c.Register.Enabled = true
		c.Register.MaxPerIP = 2
	}
	a := startNode(t, ca)
	b := startNode(t, cb)
	refused := `<iq type='error' id='r'><error type='wait'><resource-constraint xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>`
	for _, s := range []struct {
		srv        *server.Server
		from, user string
		want       string
	}{
		{a, "127.0.0.5", "first", `<iq type='result' id='r'/>`},
		{b, "127.0.0.5", "second", `<iq type='result' id='r'/>`},
		{a, "127.0.0.5", "third", refused}, // a's own count is 2: the cluster's is 3
		{b, "127.0.0.5", "fourth", refused},
		{b, "127.0.0.6", "fifth", `<iq type='result' id='r'/>`},
	} {
		r := dialFrom(t, s.srv, s.from)
		r.open()
		r.send(`<iq type='set' id='r'><query xmlns='jabber:iq:register'><username>` + s.user + `</username><password>pw</password></query></iq>`)
		r.expect(t, s.want)
	}
	n := dialFrom(t, a, "127.0.0.7")
	if got := n.scramLogin("second", "pw", "x"); got != "second@localhost/x" {
		t.Fatalf("bound %q", got)
	}
}

// TestClusterMUCOwnerKilled: three krill serve processes; a persistent
// room held by n1 has occupants on n2 and n3; n1 is killed with SIGKILL.
// Once it is found dead, bob (n2) and carol (n3) are each told they are
// out (110, 333); bob's rejoin makes n2 take the lease over and load the
// room from storage (its name intact), carol's rejoin is forwarded to n2,
// and a message from one reaches the other through the room.
func TestClusterMUCOwnerKilled(t *testing.T) {
	dsn := clusterDSN(t)
	_, natsURL := testNATS(t)
	bin, err := buildKrill()
	if err != nil {
		t.Fatal(err)
	}
	store, err := storage.OpenPostgres(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	creds, err := sasl.NewCredentials(testPassword, sasl.DefaultIterations)
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range []string{"alice", "bob", "carol"} {
		if err := store.AddAccount(context.Background(), u, creds); err != nil {
			t.Fatal(err)
		}
	}
	n1 := startProcessNode(t, bin, natsURL, dsn, "n1")
	n2 := startProcessNode(t, bin, natsURL, dsn, "n2")
	n3 := startProcessNode(t, bin, natsURL, dsn, "n3")
	w := &mucWorld{t: t, secret: mucSecret(t, store)}
	_ = store.Close()

	alice := dialNode(t, n1)
	alice.scramLogin("alice", testPassword, "a")
	ao := occ{"proc", "Alice", "alice@localhost/a", "owner", "moderator"}
	w.create(alice, ao)
	configure(t, alice, "proc", map[string]string{"persistentroom": "1", "roomname": "Survivor"})
	bob, carol := dialNode(t, n2), dialNode(t, n3)
	bob.scramLogin("bob", testPassword, "b")
	carol.scramLogin("carol", testPassword, "c")
	bo := occ{"proc", "Bob", "bob@localhost/b", "none", "participant"}
	co := occ{"proc", "Carol", "carol@localhost/c", "none", "participant"}
	bob.send(`<presence to='proc@` + mucSvc + `/Bob'><x xmlns='` + nsMUC + `'/></presence>`)
	bob.expect(t, w.pres(ao, bo.full, "", false, nil, ""))
	bob.expect(t, w.pres(bo, bo.full, "", true, []int{110}, ""))
	bob.expect(t, subject("proc", bo.full))
	carol.send(`<presence to='proc@` + mucSvc + `/Carol'><x xmlns='` + nsMUC + `'/></presence>`)
	carol.expect(t, w.pres(ao, co.full, "", false, nil, ""))
	carol.expect(t, w.pres(bo, co.full, "", false, nil, ""))
	carol.expect(t, w.pres(co, co.full, "", true, []int{110}, ""))
	carol.expect(t, subject("proc", co.full))
	bob.expect(t, w.pres(co, bo.full, "", false, nil, ""))

	if err := n1.cmd.Process.Kill(); err != nil { // SIGKILL
		t.Fatal(err)
	}
	killed := time.Now()
	for _, x := range []struct {
		c    *rawConn
		nick string
		full string
	}{{bob, "Bob", bo.full}, {carol, "Carol", co.full}} {
		x.c.expect(t, `<presence from='proc@`+mucSvc+`/`+x.nick+`' to='`+x.full+`' type='unavailable'><x xmlns='`+nsUser+`'><item affiliation='none' role='none'/><status code='110'/><status code='333'/></x></presence>`)
	}
	t.Logf("occupants told after %v (heartbeat 100ms, node timeout 500ms)", time.Since(killed).Round(time.Millisecond))

	bob.send(`<presence to='proc@` + mucSvc + `/Bob'><x xmlns='` + nsMUC + `'/></presence>`)
	bob.expect(t, w.pres(bo, bo.full, "", true, []int{110}, ""))
	bob.expect(t, subject("proc", bo.full))
	bob.exchange(t, `<iq type='get' id='d1' to='proc@`+mucSvc+`'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>`,
		`<iq type='result' id='d1' from='proc@`+mucSvc+`'><query xmlns='http://jabber.org/protocol/disco#info'><identity category='conference' type='text' name='Survivor'/>{**}<feature var='muc_persistent'/>{**}</query></iq>`)
	carol.send(`<presence to='proc@` + mucSvc + `/Carol'><x xmlns='` + nsMUC + `'/></presence>`)
	carol.expect(t, w.pres(bo, co.full, "", false, nil, ""))
	carol.expect(t, w.pres(co, co.full, "", true, []int{110}, ""))
	carol.expect(t, subject("proc", co.full))
	bob.expect(t, w.pres(co, bo.full, "", false, nil, ""))
	carol.send(`<message to='proc@` + mucSvc + `' type='groupchat' id='g1'><body>still here</body></message>`)
	carol.expect(t, w.groupchat(co, co.full, "g1", "still here"))
	bob.expect(t, w.groupchat(co, bo.full, "g1", "still here"))
}
