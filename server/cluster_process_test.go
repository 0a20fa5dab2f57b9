package server_test

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/krill-xmpp/krill/sasl"
	"github.com/krill-xmpp/krill/storage"
)

// krillNode is a krill serve child process of a cluster test.
type krillNode struct {
	name string
	addr string
	cmd  *exec.Cmd
	log  *lockedBuffer
}

// lockedBuffer collects a child's stderr for the failure message.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// buildKrill builds the krill binary once per test binary run.
var buildKrill = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "krill-cluster-bin")
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "krill")
	out, err := exec.Command("go", "build", "-o", bin, "../cmd/krill").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go build: %v\n%s", err, out)
	}
	return bin, nil
})

// clusterEnv is the environment of a node (or of krill cluster status).
func clusterEnv(t testing.TB, natsURL, dsn, name, addr string) []string {
	env := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}
	return append(env,
		"KRILL_DOMAIN=localhost",
		"KRILL_DATA_DIR="+t.TempDir(),
		"KRILL_C2S_LISTEN="+addr,
		"KRILL_S2S_LISTEN=", // federation is not under test; several nodes share the host
		"KRILL_C2S_DIRECT_TLS_LISTEN=",
		"KRILL_C2S_ALLOW_PLAINTEXT=true",
		"KRILL_ADMIN_LISTEN=",
		"KRILL_MAM_ENABLED=false",
		"KRILL_LOG_LEVEL=info",
		"KRILL_LOG_BUFFER=0",
		"KRILL_STORAGE_DRIVER=postgres",
		"KRILL_STORAGE_DSN="+dsn,
		"KRILL_CLUSTER_NATS_URL="+natsURL,
		"KRILL_CLUSTER_NODE_NAME="+name,
		"KRILL_CLUSTER_HEARTBEAT=100ms",
		"KRILL_CLUSTER_NODE_TIMEOUT=500ms",
	)
}

// startProcessNode runs krill serve as a child process and waits until
// its c2s listener accepts.
func startProcessNode(t testing.TB, bin, natsURL, dsn, name string) *krillNode {
	t.Helper()
	n := &krillNode{name: name, addr: freePort(t, "127.0.0.1"), log: &lockedBuffer{}}
	n.cmd = exec.Command(bin, "serve")
	n.cmd.Env = clusterEnv(t, natsURL, dsn, name, n.addr)
	n.cmd.Stderr = n.log
	if err := n.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = n.cmd.Process.Kill()
		_ = n.cmd.Wait()
		if t.Failed() {
			t.Logf("node %s log:\n%s", n.name, n.log.String())
		}
	})
	if !waitFor(20*time.Second, func() bool {
		c, err := net.DialTimeout("tcp", n.addr, time.Second)
		if err == nil {
			c.Close()
		}
		return err == nil
	}) {
		t.Fatalf("node %s did not listen on %s:\n%s", name, n.addr, n.log.String())
	}
	return n
}

// dialNode connects a raw test client to a node.
func dialNode(t testing.TB, n *krillNode) *rawConn {
	t.Helper()
	conn, err := net.DialTimeout("tcp", n.addr, ioTimeout)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return &rawConn{t: t, conn: conn}
}

// subscribeBoth makes a (alice) and b (bob), both logged in with
// interest in roster pushes and available, subscribed to each other.
func subscribeBoth(t *testing.T, alice, bob *rawConn, bobPresence string) {
	t.Helper()
	alice.send(`<presence to='bob@localhost' type='subscribe'/>`)
	alice.expect(t, rosterPush("alice@localhost/a", "{*}", `<item jid='bob@localhost' subscription='none' ask='subscribe'/>`))
	bob.expect(t, `<presence type='subscribe' from='alice@localhost' to='bob@localhost'/>`)
	bob.send(`<presence to='alice@localhost' type='subscribed'/>`)
	bob.expect(t, rosterPush("bob@localhost/b", "{*}", `<item jid='alice@localhost' subscription='from'/>`))
	alice.expect(t, rosterPush("alice@localhost/a", "{*}", `<item jid='bob@localhost' subscription='to'/>`))
	alice.expect(t, `<presence type='subscribed' from='bob@localhost' to='alice@localhost'/>`)
	alice.expect(t, `<presence from='bob@localhost/b' to='alice@localhost'>`+bobPresence+`</presence>`)
	bob.send(`<presence to='alice@localhost' type='subscribe'/>`)
	bob.expect(t, rosterPush("bob@localhost/b", "{*}", `<item jid='alice@localhost' subscription='from' ask='subscribe'/>`))
	alice.expect(t, `<presence type='subscribe' from='bob@localhost' to='alice@localhost'/>`)
	alice.send(`<presence to='bob@localhost' type='subscribed'/>`)
	alice.expect(t, rosterPush("alice@localhost/a", "{*}", `<item jid='bob@localhost' subscription='both'/>`))
	bob.expect(t, rosterPush("bob@localhost/b", "{*}", `<item jid='alice@localhost' subscription='both'/>`))
	bob.expect(t, `<presence type='subscribed' from='alice@localhost' to='bob@localhost'/>`)
	bob.expect(t, `<presence from='alice@localhost/a' to='bob@localhost'/>`)
}

// loginAvailable logs user in on n with resource, asks for the roster and
// sends initial presence (empty: <presence/>).
func loginAvailable(t *testing.T, n *krillNode, user, resource, presence string) *rawConn {
	t.Helper()
	c := dialNode(t, n)
	c.scramLogin(user, testPassword, resource)
	c.exchange(t, `<iq type='get' id='r'><query xmlns='jabber:iq:roster'/></iq>`, `<iq type='result' id='r'><query xmlns='jabber:iq:roster' ver='{*}'>{**}</query></iq>`)
	full := user + "@localhost/" + resource
	if presence == "" {
		c.exchange(t, `<presence/>`, `<presence from='`+full+`'/>`)
	} else {
		c.exchange(t, `<presence>`+presence+`</presence>`, `<presence from='`+full+`'>`+presence+`</presence>`)
	}
	return c
}

// TestClusterNodeKilled runs three krill serve processes on one NATS
// server and one PostgreSQL schema. krill cluster status lists them; then
// the node of bob is killed with SIGKILL while carol's messages flow to
// alice across the two live nodes: every one of carol's messages arrives,
// in order, alice learns that bob is unavailable within the bound
// (node_timeout + 2 heartbeats, plus a second of slack for the roster
// read), and a message to bob sent after that is stored offline and
// delivered when bob logs in again on another node, as are the messages
// sent to him between the kill and its detection.
func TestClusterNodeKilled(t *testing.T) {
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
	_ = store.Close()
	n1 := startProcessNode(t, bin, natsURL, dsn, "n1")
	n2 := startProcessNode(t, bin, natsURL, dsn, "n2")
	n3 := startProcessNode(t, bin, natsURL, dsn, "n3")

	// krill cluster status hears all three.
	status := exec.Command(bin, "cluster", "status")
	status.Env = clusterEnv(t, natsURL, dsn, "status", "127.0.0.1:0")
	out, err := status.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "3 node(s) alive") {
		t.Fatalf("krill cluster status: %v\n%s", err, out)
	}
	for _, n := range []string{"n1", "n2", "n3"} {
		if !strings.Contains(string(out), "  "+n+" ") {
			t.Fatalf("krill cluster status does not list %s:\n%s", n, out)
		}
	}
	t.Logf("krill cluster status:\n%s", out)

	alice := loginAvailable(t, n1, "alice", "a", "")
	bob := loginAvailable(t, n2, "bob", "b", "<priority>1</priority>")
	subscribeBoth(t, alice, bob, "<priority>1</priority>")
	// A second resource of alice's on n1 gets bob's presence from n1's
	// directory (the probe answer): n1 knows bob is available on n2.
	a2 := dialNode(t, n1)
	a2.scramLogin("alice", testPassword, "a2")
	a2.send(`<presence/>`)
	a2.skipUntil(`<presence from='bob@localhost/b' to='alice@localhost/a2'><priority>1</priority></presence>`)
	alice.expect(t, `<presence from='alice@localhost/a2'/>`)
	_ = a2.conn.Close()
	alice.expect(t, `<presence type='unavailable' from='alice@localhost/a2'/>`)
	carol := dialNode(t, n3)
	carol.scramLogin("carol", testPassword, "c")

	// Messages flow from n3 to n1 while n2 dies.
	const before, after = 20, 20
	msg := func(i int) string {
		return fmt.Sprintf(`<message to='alice@localhost/a' type='chat' id='c%d'><body>%d</body></message>`, i, i)
	}
	for i := range before {
		carol.send(msg(i))
	}
	if err := n2.cmd.Process.Kill(); err != nil { // SIGKILL
		t.Fatal(err)
	}
	killed := time.Now()
	for i := before; i < before+after; i++ {
		carol.send(msg(i))
	}
	// Sent to bob once n2 is gone (its exit reaped) and before n1 knows:
	// routed to n2's inbox, unacknowledged, handed back at the detection
	// and stored offline.
	_ = n2.cmd.Wait()
	for i := range 5 {
		alice.send(fmt.Sprintf(`<message to='bob@localhost/b' type='chat' id='w%d'><body>window %d</body></message>`, i, i))
	}
	unavailable := `<presence type='unavailable' from='bob@localhost/b' to='alice@localhost'/>`
	last := fmt.Sprintf(`id='c%d'`, before+after-1)
	var got string
	deadline := time.Now().Add(ioTimeout)
	var seenAt time.Duration
	for !(strings.Contains(got, unavailable) && strings.Contains(got, last)) {
		var chunk [4096]byte
		_ = alice.conn.SetReadDeadline(deadline)
		n, err := alice.conn.Read(chunk[:])
		if err != nil {
			t.Fatalf("alice: %v; received %q", err, got)
		}
		got += string(chunk[:n])
		if seenAt == 0 && strings.Contains(got, unavailable) {
			seenAt = time.Since(killed)
		}
	}
	bound := 500*time.Millisecond + 2*100*time.Millisecond + time.Second
	t.Logf("bob unavailable at alice %v after SIGKILL of n2 (bound %v)", seenAt, bound)
	if seenAt > bound {
		t.Errorf("unavailable presence after %v, more than %v", seenAt, bound)
	}
	// Every message from carol, in order.
	pos := 0
	for i := range before + after {
		want := fmt.Sprintf(`<message to='alice@localhost/a' type='chat' id='c%d' from='carol@localhost/c'><body>%d</body></message>`, i, i)
		j := strings.Index(got[pos:], want)
		if j < 0 {
			t.Fatalf("message c%d missing or out of order in %q", i, got)
		}
		pos += j + len(want)
	}

	// Later messages to bob go to offline storage, and reach him on n3.
	alice.send(`<message to='bob@localhost' type='chat' id='later'><body>while you were out</body></message>`)
	alice.sync(t, "s1")
	// The window's messages are stored by n1 when it finds n2 dead, the
	// later one when alice sends it: both after the detection, in no
	// fixed order, and a login takes what is stored when its presence
	// arrives. bob logs in on n3 until he has all six (at most five
	// logins), each login taking what was stored since.
	got = ""
	for login := 0; login < 5 && strings.Count(got, "<message ") < 6; login++ {
		b2 := dialNode(t, n3)
		b2.scramLogin("bob", testPassword, fmt.Sprintf("back%d", login))
		b2.send(`<presence/>`)
		b2.send(`<iq type='get' id='p' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>`)
		got += b2.skipUntil(`<iq type='result' id='p' from='localhost'/>`)
		b2.send(`</stream:stream>`)
		b2.closed()
	}
	if !strings.Contains(got, `<message to='bob@localhost' type='chat' id='later' from='alice@localhost/a'><body>while you were out</body><delay xmlns='urn:xmpp:delay' from='localhost' stamp=`) {
		t.Fatalf("bob back on n3 lacks the later message: %q", got)
	}
	pos = 0
	for i := range 5 {
		want := fmt.Sprintf(`<message to='bob@localhost/b' type='chat' id='w%d' from='alice@localhost/a'><body>window %d</body><delay xmlns='urn:xmpp:delay' from='localhost' stamp=`, i, i)
		j := strings.Index(got[pos:], want)
		if j < 0 {
			t.Fatalf("bob back on n3: w%d missing or out of order in %q", i, got)
		}
		pos += j + len(want)
	}
}
