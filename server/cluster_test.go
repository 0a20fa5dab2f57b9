package server_test

import (
	"context"
	"database/sql"
	"fmt"
	"math/rand/v2"
	"net"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/krill-xmpp/krill/config"
	"github.com/krill-xmpp/krill/hook"
	"github.com/krill-xmpp/krill/modules"
	"github.com/krill-xmpp/krill/sasl"
	"github.com/krill-xmpp/krill/server"
	"github.com/krill-xmpp/krill/storage"
)

// The cluster tests run several Krill nodes against a NATS server
// embedded in the test binary (JetStream in a temporary directory) and one
// PostgreSQL schema of their own. They need TEST_POSTGRES_DSN (CI sets it;
// see .ci/run) and skip without it.

// testNATS starts a NATS server with JetStream on 127.0.0.1 and a random
// port and returns its URL; it stops when t ends.
func testNATS(t testing.TB) (*natsserver.Server, string) {
	t.Helper()
	return runNATS(t, &natsserver.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(),
		NoLog: true, NoSigs: true})
}

// runNATS starts a NATS server with opts; it stops when t ends.
func runNATS(t testing.TB, opts *natsserver.Options) (*natsserver.Server, string) {
	t.Helper()
	ns, err := natsserver.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats server not ready")
	}
	t.Cleanup(ns.Shutdown)
	return ns, ns.ClientURL()
}

// clusterDSN returns a DSN of a fresh PostgreSQL schema for t (dropped when
// t ends), or skips t when TEST_POSTGRES_DSN is not set.
func clusterDSN(t testing.TB) string {
	t.Helper()
	dsn := os.Getenv("TEST_POSTGRES_DSN")
	if dsn == "" {
		if os.Getenv("CI") == "true" {
			t.Fatal("TEST_POSTGRES_DSN is not set, and CI=true: CI must run the cluster tests")
		}
		t.Skip("TEST_POSTGRES_DSN is not set: skipping the cluster tests (they need PostgreSQL)")
	}
	admin, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatal(err)
	}
	name := fmt.Sprintf("krill_cluster_%016x", rand.Uint64())
	if _, err := admin.Exec(`CREATE SCHEMA ` + name); err != nil {
		admin.Close()
		t.Fatalf("create schema: %v", err)
	}
	t.Cleanup(func() {
		if _, err := admin.Exec(`DROP SCHEMA ` + name + ` CASCADE`); err != nil {
			t.Errorf("drop schema %s: %v", name, err)
		}
		admin.Close()
	})
	if !strings.HasPrefix(dsn, "postgres://") && !strings.HasPrefix(dsn, "postgresql://") {
		return dsn + " search_path=" + name
	}
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	q.Set("search_path", name)
	u.RawQuery = q.Encode()
	return u.String()
}

// clusterConfig is testConfig for a node of a cluster.
func clusterConfig(t testing.TB, natsURL, dsn, node string) config.Config {
	cfg := testConfig(t)
	cfg.Storage.Driver, cfg.Storage.DSN = "postgres", dsn
	cfg.Cluster.NATSURL = natsURL
	cfg.Cluster.NodeName = node
	cfg.Cluster.Heartbeat = 100 * time.Millisecond
	cfg.Cluster.NodeTimeout = 500 * time.Millisecond
	return cfg
}

// startNode runs one Krill node on the shared schema; users are created
// (once: existing accounts are kept).
func startNode(t testing.TB, cfg config.Config, users ...string) *server.Server {
	t.Helper()
	store, err := storage.OpenPostgres(context.Background(), cfg.Storage.DSN)
	if err != nil {
		t.Fatal(err)
	}
	creds, err := sasl.NewCredentials(testPassword, sasl.DefaultIterations)
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range users {
		if err := store.AddAccount(context.Background(), u, creds); err != nil {
			t.Fatal(err)
		}
	}
	reg, err := hook.New(modules.Standard(store, modules.Options{Config: cfg})...)
	if err != nil {
		t.Fatal(err)
	}
	var log *zap.Logger
	if os.Getenv("KRILL_TEST_LOG") != "" {
		log = zaptest.NewLogger(t)
	}
	srv, err := server.New(cfg, log, store, reg)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := srv.Stop(ctx); err != nil {
			t.Errorf("Stop: %v", err)
		}
		_ = store.Close()
	})
	return srv
}

// seen waits until srv's directory shows local/resource on another node,
// available or not as wanted (a directory write travels through
// JetStream: this is the one asynchronous step a test must wait for).
func seen(t testing.TB, srv *server.Server, local, resource string, available bool) {
	t.Helper()
	if !waitFor(ioTimeout, func() bool {
		e := srv.ClusterNode().Find(local, resource)
		return e != nil && e.Available == available
	}) {
		t.Fatalf("node %s never saw %s/%s (available %v)", srv.ClusterNode().Name(), local, resource, available)
	}
}

// gone waits until srv's directory no longer shows local/resource.
func gone(t testing.TB, srv *server.Server, local, resource string) {
	t.Helper()
	if !waitFor(ioTimeout, func() bool { return srv.ClusterNode().Find(local, resource) == nil }) {
		t.Fatalf("node %s still sees %s/%s", srv.ClusterNode().Name(), local, resource)
	}
}

// TestClusterRefusesSQLite: cluster mode without PostgreSQL does not start,
// and says why.
func TestClusterRefusesSQLite(t *testing.T) {
	cfg := testConfig(t)
	cfg.Cluster.NATSURL = "nats://127.0.0.1:4222"
	_, err := server.New(cfg, nil, nil, nil)
	if err == nil || !strings.Contains(err.Error(), `cluster mode needs storage.driver "postgres"`) {
		t.Fatalf("New with a cluster on SQLite: %v", err)
	}
}

// TestClusterStandaloneNeedsNoNATS: without [cluster] the server has no
// cluster membership and starts with no NATS anywhere.
func TestClusterStandaloneNeedsNoNATS(t *testing.T) {
	srv := startServer(t, testConfig(t), "alice")
	if srv.ClusterNode() != nil {
		t.Fatal("a standalone server joined a cluster")
	}
}

// TestClusterMessagesAndPresence: alice on node A and bob on node B
// subscribe to each other (roster pushes and subscription presence cross
// the nodes), see each other's presence, exchange messages in order, and
// alice's departure reaches bob.
func TestClusterMessagesAndPresence(t *testing.T) {
	dsn := clusterDSN(t)
	_, url := testNATS(t)
	a := startNode(t, clusterConfig(t, url, dsn, "a"), "alice", "bob")
	b := startNode(t, clusterConfig(t, url, dsn, "b"))

	alice := dialRaw(t, a)
	alice.scramLogin("alice", testPassword, "a")
	// The roster request makes each session interested in roster pushes
	// (RFC 6121 2.1.6).
	alice.exchange(t, `<iq type='get' id='r'><query xmlns='jabber:iq:roster'/></iq>`, `<iq type='result' id='r'><query xmlns='jabber:iq:roster' ver='0'></query></iq>`)
	alice.exchange(t, `<presence/>`, `<presence from='alice@localhost/a'/>`)
	bob := dialRaw(t, b)
	bob.scramLogin("bob", testPassword, "b")
	bob.exchange(t, `<iq type='get' id='r'><query xmlns='jabber:iq:roster'/></iq>`, `<iq type='result' id='r'><query xmlns='jabber:iq:roster' ver='0'></query></iq>`)
	bob.exchange(t, `<presence><priority>1</priority></presence>`, `<presence from='bob@localhost/b'><priority>1</priority></presence>`)
	seen(t, a, "bob", "b", true)
	seen(t, b, "alice", "a", true)

	// Subscription both ways, as TestSubscriptionAndPresence on one
	// server, with each party on its own node.
	alice.send(`<presence to='bob@localhost' type='subscribe'/>`)
	alice.expect(t, rosterPush("alice@localhost/a", "{*}", `<item jid='bob@localhost' subscription='none' ask='subscribe'/>`))
	bob.expect(t, `<presence type='subscribe' from='alice@localhost' to='bob@localhost'/>`)
	bob.send(`<presence to='alice@localhost' type='subscribed'/>`)
	bob.expect(t, rosterPush("bob@localhost/b", "{*}", `<item jid='alice@localhost' subscription='from'/>`))
	alice.expect(t, rosterPush("alice@localhost/a", "{*}", `<item jid='bob@localhost' subscription='to'/>`))
	alice.expect(t, `<presence type='subscribed' from='bob@localhost' to='alice@localhost'/>`)
	alice.expect(t, `<presence from='bob@localhost/b' to='alice@localhost'><priority>1</priority></presence>`)
	bob.send(`<presence to='alice@localhost' type='subscribe'/>`)
	bob.expect(t, rosterPush("bob@localhost/b", "{*}", `<item jid='alice@localhost' subscription='from' ask='subscribe'/>`))
	alice.expect(t, `<presence type='subscribe' from='bob@localhost' to='alice@localhost'/>`)
	alice.send(`<presence to='bob@localhost' type='subscribed'/>`)
	alice.expect(t, rosterPush("alice@localhost/a", "{*}", `<item jid='bob@localhost' subscription='both'/>`))
	bob.expect(t, rosterPush("bob@localhost/b", "{*}", `<item jid='alice@localhost' subscription='both'/>`))
	bob.expect(t, `<presence type='subscribed' from='alice@localhost' to='bob@localhost'/>`)
	bob.expect(t, `<presence from='alice@localhost/a' to='bob@localhost'/>`)

	// A presence broadcast crosses to the contact's node.
	bob.send(`<presence><show>away</show></presence>`)
	bob.expect(t, `<presence from='bob@localhost/b'><show>away</show></presence>`)
	alice.expect(t, `<presence from='bob@localhost/b' to='alice@localhost'><show>away</show></presence>`)

	// Messages both ways, to the full and to the bare JID, in order.
	var want strings.Builder
	for i := range 50 {
		to := "bob@localhost"
		if i%2 == 0 {
			to += "/b"
		}
		m := fmt.Sprintf(`<message to='%s' type='chat' id='m%d'><body>%d</body></message>`, to, i, i)
		alice.send(m)
		fmt.Fprintf(&want, `<message to='%s' type='chat' id='m%d' from='alice@localhost/a'><body>%d</body></message>`, to, i, i)
	}
	bob.expect(t, want.String())
	bob.send(`<message to='alice@localhost/a' type='chat' id='r'><body>back</body></message>`)
	alice.expect(t, `<message to='alice@localhost/a' type='chat' id='r' from='bob@localhost/b'><body>back</body></message>`)

	// An iq to a full JID on the other node, and its answer.
	alice.send(`<iq type='get' id='v' to='bob@localhost/b'><query xmlns='jabber:iq:version'/></iq>`)
	bob.expect(t, `<iq type='get' id='v' to='bob@localhost/b' from='alice@localhost/a'><query xmlns='jabber:iq:version'/></iq>`)
	bob.send(`<iq type='result' id='v' to='alice@localhost/a'><query xmlns='jabber:iq:version'><name>t</name></query></iq>`)
	alice.expect(t, `<iq type='result' id='v' to='alice@localhost/a' from='bob@localhost/b'><query xmlns='jabber:iq:version'><name>t</name></query></iq>`)

	// The cluster's metrics on node a: two nodes, bob remote, stanzas
	// both ways.
	_, metrics := get(t, "http://"+a.AdminAddr().String()+"/metrics")
	for _, want := range []string{"krill_cluster_nodes 2\n", "krill_cluster_remote_sessions 1\n", "krill_cluster_nodes_down_total 0\n",
		`krill_cluster_dropped_total{reason="publish"} 0` + "\n"} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %q:\n%s", want, grepLines(metrics, "krill_cluster"))
		}
	}
	for _, dir := range []string{"in", "out"} {
		if strings.Contains(metrics, `krill_cluster_stanzas_total{direction="`+dir+`"} 0`+"\n") {
			t.Errorf("no stanza %s:\n%s", dir, grepLines(metrics, "krill_cluster"))
		}
	}

	// alice's connection drops: bob, on the other node, learns it.
	_ = alice.conn.Close()
	bob.expect(t, `<presence type='unavailable' from='alice@localhost/a' to='bob@localhost'/>`)
	gone(t, b, "alice", "a")
	// With alice gone everywhere, a message to her is stored offline.
	bob.send(`<message to='alice@localhost' type='chat' id='off'><body>later</body></message>`)
	bob.sync(t, "s1")
	if !waitFor(ioTimeout, func() bool { return b.Stats().Modules["offline.stored"] == 1 }) {
		t.Fatalf("offline message not stored: %v", b.Stats().Modules)
	}
}

// TestClusterBareJID: a message to a bare JID reaches every available
// resource with a non-negative priority, on both nodes (RFC 6121 8.5.2.1.1),
// and a new resource learns the presence of the account's resources on
// the other node.
func TestClusterBareJID(t *testing.T) {
	dsn := clusterDSN(t)
	_, url := testNATS(t)
	a := startNode(t, clusterConfig(t, url, dsn, "a"), "alice", "bob")
	b := startNode(t, clusterConfig(t, url, dsn, "b"))

	b1 := dialRaw(t, a)
	b1.scramLogin("bob", testPassword, "one")
	b1.exchange(t, `<presence><priority>1</priority></presence>`, `<presence from='bob@localhost/one'><priority>1</priority></presence>`)
	seen(t, b, "bob", "one", true)
	b2 := dialRaw(t, b)
	b2.scramLogin("bob", testPassword, "two")
	b2.send(`<presence><priority>2</priority></presence>`)
	b2.expect(t, `<presence from='bob@localhost/two'><priority>2</priority></presence>`)
	b2.expect(t, `<presence from='bob@localhost/one' to='bob@localhost/two'><priority>1</priority></presence>`)
	b1.expect(t, `<presence from='bob@localhost/two'><priority>2</priority></presence>`)
	seen(t, a, "bob", "two", true)
	neg := dialRaw(t, b)
	neg.scramLogin("bob", testPassword, "neg")
	neg.send(`<presence><priority>-1</priority></presence>`)
	neg.skipUntil(`<priority>-1</priority></presence>`)
	b1.expect(t, `<presence from='bob@localhost/neg'><priority>-1</priority></presence>`)
	b2.expect(t, `<presence from='bob@localhost/neg'><priority>-1</priority></presence>`)
	seen(t, a, "bob", "neg", true)

	alice := dialRaw(t, a)
	alice.scramLogin("alice", testPassword, "x")
	alice.send(`<message to='bob@localhost' type='chat' id='m1'><body>hi</body></message>`)
	want := `<message to='bob@localhost' type='chat' id='m1' from='alice@localhost/x'><body>hi</body></message>`
	b1.expect(t, want)
	b2.expect(t, want)
	// The resource with a negative priority gets nothing.
	alice.sync(t, "s")
	neg.send(`<iq type='get' id='n' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>`)
	if out := neg.skipUntil(`<iq type='result' id='n' from='localhost'/>`); strings.Contains(out, "m1") {
		t.Fatalf("negative priority resource got the message: %q", out)
	}
}

// TestClusterConflict: binding a full JID on one node closes the session
// holding it on another with conflict (RFC 6120 7.7.2.2), and the new one
// stays.
func TestClusterConflict(t *testing.T) {
	dsn := clusterDSN(t)
	_, url := testNATS(t)
	a := startNode(t, clusterConfig(t, url, dsn, "a"), "alice")
	b := startNode(t, clusterConfig(t, url, dsn, "b"))

	first := dialRaw(t, a)
	first.scramLogin("alice", testPassword, "same")
	seen(t, b, "alice", "same", false)
	second := dialRaw(t, b)
	second.scramLogin("alice", testPassword, "same")
	if out := first.closed(); !strings.Contains(out, `<stream:error><conflict xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>`) {
		t.Fatalf("first session got %q", out)
	}
	second.sync(t, "alive")
	seen(t, a, "alice", "same", false)
	if e := a.ClusterNode().Find("alice", "same"); e.Node != "b" {
		t.Fatalf("directory says %s holds alice/same", e.Node)
	}
}

// TestClusterPasswordChangeClosesEverywhere: a password change on one node
// closes the account's sessions on the other (XEP-0077 3.3).
func TestClusterPasswordChangeClosesEverywhere(t *testing.T) {
	dsn := clusterDSN(t)
	_, url := testNATS(t)
	a := startNode(t, clusterConfig(t, url, dsn, "a"), "alice")
	b := startNode(t, clusterConfig(t, url, dsn, "b"))

	other := dialRaw(t, b)
	other.scramLogin("alice", testPassword, "other")
	seen(t, a, "alice", "other", false)
	me := dialRaw(t, a)
	me.scramLogin("alice", testPassword, "me")
	me.exchange(t, `<iq id="cp1" type="set"><query xmlns="jabber:iq:register"><username>alice</username><password>new secret</password></query></iq>`,
		`<iq type='result' id='cp1'/>`)
	if out := other.closed(); !strings.Contains(out, notAuthorizedStream) {
		t.Fatalf("session on the other node got %q", out)
	}
	me.sync(t, "alive")
}

// TestClusterNATSRestart: the NATS server restarts (same port, same
// JetStream directory); the nodes reconnect, take nobody as dead for the
// outage, and route as before.
func TestClusterNATSRestart(t *testing.T) {
	dsn := clusterDSN(t)
	ns, url := testNATS(t)
	a := startNode(t, clusterConfig(t, url, dsn, "a"), "alice", "bob")
	b := startNode(t, clusterConfig(t, url, dsn, "b"))
	alice := dialRaw(t, a)
	alice.scramLogin("alice", testPassword, "a")
	bob := dialRaw(t, b)
	bob.scramLogin("bob", testPassword, "b")
	seen(t, a, "bob", "b", false)
	seen(t, b, "alice", "a", false)

	port := ns.Addr().(*net.TCPAddr).Port
	store := ns.JetStreamConfig().StoreDir
	ns.Shutdown()
	ns.WaitForShutdown()
	if !waitFor(ioTimeout, func() bool { return !a.ClusterNode().Connected() && !b.ClusterNode().Connected() }) {
		t.Fatal("nodes did not notice the NATS server going")
	}
	// The same port and JetStream directory: the directory survives.
	ns2, _ := runNATS(t, &natsserver.Options{Host: "127.0.0.1", Port: port, JetStream: true, StoreDir: store, NoLog: true, NoSigs: true})
	// Connected is not enough: a stanza published before the peer's inbox
	// subscription reaches the new server is lost by core NATS (a chat
	// message is published again, TestClusterNATSRestartWindow; other
	// stanzas are not). Routing resumes once every node has subscribed
	// again.
	subscribed := func() bool {
		acc := ns2.GlobalAccount()
		for _, subj := range []string{"krill.localhost.node.a", "krill.localhost.node.b", "krill.localhost.ack.a", "krill.localhost.ack.b"} {
			if !acc.SubscriptionInterest(subj) {
				return false
			}
		}
		return true
	}
	if !waitFor(ioTimeout, func() bool { return a.ClusterNode().Connected() && b.ClusterNode().Connected() && subscribed() }) {
		t.Fatal("nodes did not reconnect and subscribe again")
	}
	seen(t, a, "bob", "b", false)
	seen(t, b, "alice", "a", false)
	alice.send(`<message to='bob@localhost/b' type='chat' id='m1'><body>still here</body></message>`)
	bob.expect(t, `<message to='bob@localhost/b' type='chat' id='m1' from='alice@localhost/a'><body>still here</body></message>`)
	bob.send(`<message to='alice@localhost/a' type='chat' id='m2'><body>yes</body></message>`)
	alice.expect(t, `<message to='alice@localhost/a' type='chat' id='m2' from='bob@localhost/b'><body>yes</body></message>`)
	if st := a.ClusterNode().Stats(); st.NodesDown != 0 {
		t.Fatalf("node a took %d node(s) as dead during the outage", st.NodesDown)
	}
}

// TestClusterRollingRestart: a node shuts down gracefully while messages
// to one of its users flow from another node; every message is either
// delivered before the session closes or stored offline, and the user
// gets the rest when he logs in on the remaining node. None is lost.
func TestClusterRollingRestart(t *testing.T) {
	dsn := clusterDSN(t)
	_, url := testNATS(t)
	ca, cb := clusterConfig(t, url, dsn, "a"), clusterConfig(t, url, dsn, "b")
	ca.IM.OfflineQuota, cb.IM.OfflineQuota = 1000, 1000
	a := startNode(t, ca, "alice", "bob")
	b := startNode(t, cb)
	alice := dialRaw(t, a)
	alice.scramLogin("alice", testPassword, "a")
	bob := dialRaw(t, b)
	bob.scramLogin("bob", testPassword, "b")
	bob.exchange(t, `<presence/>`, `<presence from='bob@localhost/b'/>`)
	seen(t, a, "bob", "b", true)

	msg := func(i int) string {
		return fmt.Sprintf(`<message to='bob@localhost' type='chat' id='m%d'><body>%d</body></message>`, i, i)
	}
	total := 0
	for ; total < 100; total++ {
		alice.send(msg(total))
	}
	first := bob.skipUntil(`id='m99' from='alice@localhost/a'><body>99</body></message>`)
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		done <- b.Shutdown(ctx)
	}()
	// Messages keep coming until the node has gone (at most 900 more).
	var shutErr error
	stopped := false
	for ; !stopped && total < 1000; total++ {
		select {
		case shutErr = <-done:
			stopped = true
		default:
		}
		alice.send(msg(total))
		if total%10 == 0 {
			alice.sync(t, "f")
		}
	}
	before := first + bob.closed()
	if !stopped {
		select {
		case shutErr = <-done:
		case <-time.After(30 * time.Second):
			t.Fatal("Shutdown did not return")
		}
	}
	if shutErr != nil {
		t.Fatalf("Shutdown: %v", shutErr)
	}
	alice.sync(t, "s")
	got := make(map[string]int)
	count := func(s string) {
		for _, part := range strings.Split(s, "<message ")[1:] {
			if i := strings.Index(part, "id='m"); i >= 0 {
				id := part[i+4:]
				got[id[:strings.IndexByte(id, '\'')]]++
			}
		}
	}
	count(before)
	delivered := len(got)
	bob2 := dialRaw(t, a)
	bob2.scramLogin("bob", testPassword, "back")
	bob2.send(`<presence/>`)
	// Offline messages come after the presence echo; ping until all
	// have arrived (bounded: waitFor's timeout).
	var after string
	if !waitFor(ioTimeout, func() bool {
		bob2.send(`<iq type='get' id='p' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>`)
		after += bob2.skipUntil(`<iq type='result' id='p' from='localhost'/>`)
		return strings.Count(before, "<message ")+strings.Count(after, "<message ") >= total
	}) {
		t.Logf("before the close: %d, offline: %d", delivered, strings.Count(after, "<message "))
	}
	count(after)
	for i := range total {
		id := fmt.Sprintf("m%d", i)
		if got[id] != 1 {
			t.Errorf("message %s arrived %d times", id, got[id])
		}
	}
	t.Logf("%d delivered before the node closed, %d stored offline and delivered on the other node", delivered, len(got)-delivered)
}

// TestClusterCarbons: message carbons (XEP-0280) reach the enabled
// resources of both parties on the other node: the module flag travels in
// the directory.
func TestClusterCarbons(t *testing.T) {
	dsn := clusterDSN(t)
	_, url := testNATS(t)
	a := startNode(t, clusterConfig(t, url, dsn, "a"), "alice", "bob")
	b := startNode(t, clusterConfig(t, url, dsn, "b"))
	login := func(srv *server.Server, user, res string) *rawConn {
		c := dialRaw(t, srv)
		c.scramLogin(user, testPassword, res)
		c.exchange(t, `<iq type='set' id='e1'><enable xmlns='urn:xmpp:carbons:2'/></iq>`, `<iq type='result' id='e1'/>`)
		c.exchange(t, `<presence/>`, `<presence from='`+user+`@localhost/`+res+`'/>`)
		return c
	}
	aa, ab := login(a, "alice", "a"), login(b, "alice", "b")
	bx, by := login(a, "bob", "x"), login(b, "bob", "y")
	seen(t, a, "alice", "b", true)
	seen(t, a, "bob", "y", true)
	seen(t, b, "alice", "a", true)
	seen(t, b, "bob", "x", true)

	aa.send(`<message to='bob@localhost/x' type='chat' id='m1'><body>hi</body></message>`)
	fwd := `<message xmlns='jabber:client' to='bob@localhost/x' type='chat' id='m1' from='alice@localhost/a'><body>hi</body></message>`
	bx.skipUntil(`<message to='bob@localhost/x' type='chat' id='m1' from='alice@localhost/a'><body>hi</body></message>`)
	for _, c := range []struct {
		r    *rawConn
		want string
	}{
		{ab, carbon("sent", "alice@localhost", "alice@localhost/b", "chat", fwd)},
		{by, carbon("received", "bob@localhost", "bob@localhost/y", "chat", fwd)},
	} {
		if got := c.r.skipUntil(c.want); !strings.HasSuffix(got, c.want) {
			t.Fatalf("got %q", got)
		}
	}
}
