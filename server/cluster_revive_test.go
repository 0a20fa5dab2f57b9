package server_test

import (
	"context"
	"encoding/base64"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/krill-xmpp/krill/storage"
)

// natsProxy stands between one node and the NATS server, so that a test
// cuts that node alone from NATS and lets it back.
type natsProxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	cut    bool
	conns  []net.Conn
}

func startNATSProxy(t *testing.T, target string) *natsProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &natsProxy{ln: ln, target: target}
	go p.serve()
	t.Cleanup(func() {
		_ = ln.Close()
		p.setCut(true)
	})
	return p
}

// url is the proxy's NATS URL.
func (p *natsProxy) url() string { return "nats://" + p.ln.Addr().String() }

func (p *natsProxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		if p.cut {
			p.mu.Unlock()
			_ = c.Close()
			continue
		}
		up, err := net.Dial("tcp", p.target)
		if err != nil {
			p.mu.Unlock()
			_ = c.Close()
			continue
		}
		p.conns = append(p.conns, c, up)
		p.mu.Unlock()
		go func() { _, _ = io.Copy(up, c); _ = up.Close() }()
		go func() { _, _ = io.Copy(c, up); _ = c.Close() }()
	}
}

// setCut cuts (closing what is open, refusing what comes) or restores.
func (p *natsProxy) setCut(cut bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = cut
	if cut {
		for _, c := range p.conns {
			_ = c.Close()
		}
		p.conns = nil
	}
}

// dirKey is the session directory's key of local/resource.
func dirKey(local, resource string) string {
	return "s." + base64.RawURLEncoding.EncodeToString([]byte(local)) + "." + base64.RawURLEncoding.EncodeToString([]byte(resource))
}

// TestClusterNodeBackAfterDeath: node a is cut from NATS longer than
// node_timeout; node b takes it as dead, tells bob that alice (on a) has
// gone and deletes her directory entry. When a is back it writes the
// entry again and announces alice's presence to bob again; messages flow
// both ways as before.
func TestClusterNodeBackAfterDeath(t *testing.T) {
	dsn := clusterDSN(t)
	_, url := testNATS(t)
	proxy := startNATSProxy(t, url[len("nats://"):])
	a := startNode(t, clusterConfig(t, proxy.url(), dsn, "a"), "alice", "bob")
	b := startNode(t, clusterConfig(t, url, dsn, "b"))
	store, err := storage.OpenPostgres(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	if err := store.UpdateRosters(context.Background(), func(tx storage.RosterTx) error {
		if err := tx.PutItem("alice", storage.RosterItem{Contact: "bob@localhost", Subscription: storage.SubBoth}); err != nil {
			return err
		}
		return tx.PutItem("bob", storage.RosterItem{Contact: "alice@localhost", Subscription: storage.SubBoth})
	}); err != nil {
		t.Fatal(err)
	}

	alice := dialRaw(t, a)
	alice.scramLogin("alice", testPassword, "a")
	alice.exchange(t, `<presence/>`, `<presence from='alice@localhost/a'/>`)
	seen(t, b, "alice", "a", true)
	bob := dialRaw(t, b)
	bob.scramLogin("bob", testPassword, "b")
	bob.exchange(t, `<presence/>`, `<presence from='bob@localhost/b'/><presence from='alice@localhost/a' to='bob@localhost/b'/>`)
	alice.expect(t, `<presence from='bob@localhost/b' to='alice@localhost'/>`)

	proxy.setCut(true)
	bob.expect(t, `<presence type='unavailable' from='alice@localhost/a' to='bob@localhost'/>`)
	gone(t, b, "alice", "a")
	// b deleted alice's key (it announced her): wait for that in the
	// bucket itself.
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	kv, err := js.KeyValue(context.Background(), "krill_sessions_localhost")
	if err != nil {
		t.Fatal(err)
	}
	if !waitFor(ioTimeout, func() bool {
		_, err := kv.Get(context.Background(), dirKey("alice", "a"))
		return errors.Is(err, jetstream.ErrKeyNotFound)
	}) {
		t.Fatal("b did not delete alice's directory entry")
	}

	proxy.setCut(false)
	bob.expect(t, `<presence from='alice@localhost/a' to='bob@localhost'/>`)
	seen(t, b, "alice", "a", true)
	if n := a.ClusterNode().Revived(); n != 1 {
		t.Fatalf("a announced %d session(s) again", n)
	}
	alice.send(`<message to='bob@localhost/b' type='chat' id='m1'><body>back</body></message>`)
	bob.expect(t, `<message to='bob@localhost/b' type='chat' id='m1' from='alice@localhost/a'><body>back</body></message>`)
	bob.send(`<message to='alice@localhost/a' type='chat' id='m2'><body>welcome</body></message>`)
	alice.expect(t, `<message to='alice@localhost/a' type='chat' id='m2' from='bob@localhost/b'><body>welcome</body></message>`)
	// alice's own node never took bob as gone: she got nothing meanwhile.
	alice.sync(t, "s")
}

// TestClusterNATSRestartWindow: the NATS server restarts; node a is back
// on it while node b is not yet (its connection goes through a proxy kept
// cut), so a message from alice on a to bob on b is published to an inbox
// nobody subscribes to and lost by NATS. Once b is back, a publishes it
// again (it was never acknowledged) and bob gets it exactly once, then
// the next message.
func TestClusterNATSRestartWindow(t *testing.T) {
	dsn := clusterDSN(t)
	ns, url := testNATS(t)
	proxy := startNATSProxy(t, url[len("nats://"):])
	ca, cb := clusterConfig(t, url, dsn, "a"), clusterConfig(t, proxy.url(), dsn, "b")
	// b stays away for a while: not long enough to be taken as dead.
	ca.Cluster.NodeTimeout, cb.Cluster.NodeTimeout = 5*time.Second, 5*time.Second
	a := startNode(t, ca, "alice", "bob")
	b := startNode(t, cb)
	alice := dialRaw(t, a)
	alice.scramLogin("alice", testPassword, "a")
	bob := dialRaw(t, b)
	bob.scramLogin("bob", testPassword, "b")
	seen(t, a, "bob", "b", false)

	proxy.setCut(true)
	port := ns.Addr().(*net.TCPAddr).Port
	store := ns.JetStreamConfig().StoreDir
	ns.Shutdown()
	ns.WaitForShutdown()
	if !waitFor(ioTimeout, func() bool { return !a.ClusterNode().Connected() && !b.ClusterNode().Connected() }) {
		t.Fatal("nodes did not notice the NATS server going")
	}
	ns2, _ := runNATS(t, &natsserver.Options{Host: "127.0.0.1", Port: port, JetStream: true, StoreDir: store, NoLog: true, NoSigs: true})
	acc := ns2.GlobalAccount()
	if !waitFor(ioTimeout, func() bool {
		return a.ClusterNode().Connected() && acc.SubscriptionInterest("krill.localhost.node.a") && acc.SubscriptionInterest("krill.localhost.ack.a")
	}) {
		t.Fatal("a did not reconnect")
	}
	if acc.SubscriptionInterest("krill.localhost.node.b") {
		t.Fatal("b is subscribed through a cut proxy")
	}
	alice.send(`<message to='bob@localhost/b' type='chat' id='m1'><body>in the window</body></message>`)
	alice.sync(t, "s1")
	if st := a.ClusterNode().Stats(); st.Pending != 1 {
		t.Fatalf("a has %d message(s) waiting for an acknowledgement, want 1", st.Pending)
	}

	proxy.setCut(false)
	bob.expect(t, `<message to='bob@localhost/b' type='chat' id='m1' from='alice@localhost/a'><body>in the window</body></message>`)
	alice.send(`<message to='bob@localhost/b' type='chat' id='m2'><body>after</body></message>`)
	bob.expect(t, `<message to='bob@localhost/b' type='chat' id='m2' from='alice@localhost/a'><body>after</body></message>`)
	if !waitFor(ioTimeout, func() bool { return a.ClusterNode().Stats().Pending == 0 }) {
		t.Fatal("a's messages were never acknowledged")
	}
	if resent, _ := a.ClusterNode().Resent(); resent == 0 {
		t.Fatal("a resent nothing")
	}
	bob.sync(t, "s2")
	if st := a.ClusterNode().Stats(); st.NodesDown != 0 || st.AckLost != 0 {
		t.Fatalf("a: %d node(s) down, %d message(s) handed back", st.NodesDown, st.AckLost)
	}
}
