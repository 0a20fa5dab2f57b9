package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/krill-xmpp/krill/config"
)

func TestKey(t *testing.T) {
	for _, tc := range []struct{ local, resource string }{
		{"alice", "phone"},
		{"a.b", "x/y z"},
		{"ünï", "資源"},
		{"q", "."},
	} {
		t.Run(tc.local+"/"+tc.resource, func(t *testing.T) {
			k := key(tc.local, tc.resource)
			for _, r := range k {
				ok := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.'
				if !ok {
					t.Fatalf("key %q has %q, outside the KV key alphabet", k, r)
				}
			}
			l, res, ok := parseKey(k)
			if !ok || l != tc.local || res != tc.resource {
				t.Fatalf("parseKey(%q) = %q, %q, %v", k, l, res, ok)
			}
		})
	}
	if _, _, ok := parseKey("x.y"); ok {
		t.Fatal("parseKey accepted a foreign key")
	}
}

// nopHandler counts what the node hands over.
type nopHandler struct{ delivered, conflicts, down, back atomic.Int64 }

func (h *nopHandler) Undeliverable(m []Returned) { h.back.Add(int64(len(m))) }

func (h *nopHandler) Deliver(string, []byte) { h.delivered.Add(1) }
func (h *nopHandler) Close(string, string)   {}
func (h *nopHandler) Conflict(any)           { h.conflicts.Add(1) }
func (h *nopHandler) NodeDown(_ string, gone []*Entry, _ bool) {
	h.down.Add(int64(len(gone)))
}

func runNATS(t testing.TB) string {
	t.Helper()
	ns, err := natsserver.NewServer(&natsserver.Options{Host: "127.0.0.1", Port: -1, JetStream: true,
		StoreDir: t.TempDir(), NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats not ready")
	}
	t.Cleanup(ns.Shutdown)
	return ns.ClientURL()
}

func testCluster(url, name string) config.Cluster {
	return config.Cluster{NATSURL: url, NodeName: name, Heartbeat: 50 * time.Millisecond,
		NodeTimeout: 300 * time.Millisecond, Replicas: 1}
}

// TestBindConflictAndDeath drives two nodes without a server: a bind on
// b of a key a holds closes a's owner (conflict), and b's death removes
// its entries from a's directory within the timeout.
func TestBindConflictAndDeath(t *testing.T) {
	url := runNATS(t)
	ctx := context.Background()
	ha, hb := &nopHandler{}, &nopHandler{}
	a, err := Start(ctx, testCluster(url, "a"), Options{Domain: "example.org", Handler: ha})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := Start(ctx, testCluster(url, "b"), Options{Domain: "example.org", Handler: hb})
	if err != nil {
		t.Fatal(err)
	}
	ownerA := new(int)
	a.Bound("alice", "r", ownerA)
	if !waitFor(func() bool { return b.Find("alice", "r") != nil }) {
		t.Fatal("b never saw alice/r")
	}
	b.Bound("alice", "r", new(int))
	if !waitFor(func() bool { return ha.conflicts.Load() == 1 }) {
		t.Fatal("a's session was not closed with conflict")
	}
	if e := a.Find("alice", "r"); e == nil || e.Node != "b" {
		t.Fatalf("a's directory: %+v", e)
	}
	if !b.Send("a", "alice@example.org/x", []byte("<message/>"), false) || !waitFor(func() bool { return ha.delivered.Load() == 1 }) {
		t.Fatal("a stanza from b did not reach a")
	}
	// A kept message is acknowledged and forgotten.
	if !b.Send("a", "alice@example.org/x", []byte("<message/>"), true) || !waitFor(func() bool { return ha.delivered.Load() == 2 && b.Stats().Pending == 0 }) {
		t.Fatalf("a kept stanza was not acknowledged: %+v", b.Stats())
	}
	b.Bound("bob", "r", new(int))
	if !waitFor(func() bool { return a.Find("bob", "r") != nil }) {
		t.Fatal("a never saw bob/r")
	}
	// b dies without a word: its connection goes (Close would delete its
	// keys; closing only the NATS connection is what a crash looks like).
	b.nc.Close()
	t0 := time.Now()
	// Sent to b after its death and before anyone knows: handed back.
	if !a.Send("b", "bob@example.org/r", []byte("<message/>"), true) {
		t.Fatal("Send failed")
	}
	if !waitFor(func() bool { return a.Find("bob", "r") == nil && a.Find("alice", "r") == nil }) {
		t.Fatal("b's entries outlived it")
	}
	t.Logf("b's death seen after %v (timeout 300ms, heartbeat 50ms)", time.Since(t0))
	if ha.down.Load() != 2 {
		t.Fatalf("NodeDown reported %d sessions, want 2", ha.down.Load())
	}
	if ha.back.Load() != 1 || a.Stats().Pending != 0 {
		t.Fatalf("%d message(s) handed back, %d pending; want 1, 0", ha.back.Load(), a.Stats().Pending)
	}
	b.Close()
}

// TestNameInUse: a second node with a live node's name does not start.
func TestNameInUse(t *testing.T) {
	url := runNATS(t)
	a, err := Start(context.Background(), testCluster(url, "same"), Options{Domain: "example.org", Handler: &nopHandler{}})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	_, err = Start(context.Background(), testCluster(url, "same"), Options{Domain: "example.org", Handler: &nopHandler{}})
	if !errors.Is(err, ErrNameInUse) {
		t.Fatalf("second node with the same name: %v", err)
	}
}

func waitFor(cond func() bool) bool {
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if cond() {
			return true
		}
		time.Sleep(5 * time.Millisecond)
	}
	return cond()
}

// TestDirectoryMemory measures what the directory costs per session, at
// N = 10,000 sessions: on the NATS side (the embedded server's heap after
// the bucket holds N entries) and on a Krill node (its heap after loading
// them). Both live in this process; each is a heap delta after a GC.
// Set KRILL_CLUSTER_MEMORY=1 to run it:
//
//	KRILL_CLUSTER_MEMORY=1 go test -run DirectoryMemory -v ./cluster/
func TestDirectoryMemory(t *testing.T) {
	if os.Getenv("KRILL_CLUSTER_MEMORY") == "" {
		t.Skip("KRILL_CLUSTER_MEMORY not set: a measurement, not a test")
	}
	const N = 10000
	url := runNATS(t)
	ctx := context.Background()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: bucketPrefix + "example_org", History: 1, Storage: jetstream.FileStorage})
	if err != nil {
		t.Fatal(err)
	}
	h0 := heap()
	presence := []byte(`<presence from='user00000@example.org/phone-abcdef'><priority>0</priority><c xmlns='http://jabber.org/protocol/caps' hash='sha-1' node='https://conversations.im' ver='abcdefghijabcdefghijabcdefgh='/></presence>`)
	v, _ := json.Marshal(value{Node: "writer", Inc: "0123456789abcdef", Avail: true, Presence: presence, Flags: 3})
	for i := range N {
		if _, err := kv.Put(ctx, key(fmt.Sprintf("user%05d", i), "phone-abcdef"), v); err != nil {
			t.Fatal(err)
		}
	}
	h1 := heap()
	n, err := Start(ctx, testCluster(url, "reader"), Options{Domain: "example.org", Handler: &nopHandler{}})
	if err != nil {
		t.Fatal(err)
	}
	if !waitFor(func() bool { return n.Stats().Remote == N }) {
		t.Fatalf("directory holds %d of %d", n.Stats().Remote, N)
	}
	h2 := heap()
	n.Close()
	// Reading the bucket may also warm the NATS server's block cache:
	// the node's figure is an upper bound.
	t.Logf("value %d B (presence %d B); NATS side after the writes %.0f B/session; a node's directory %.0f B/remote session",
		len(v), len(presence), float64(h1-h0)/N, float64(h2-h1)/N)

	// A node's own sessions: what it keeps to write them (key, revision,
	// last value for a reassert), sessions bound and available.
	w, err := Start(ctx, testCluster(url, "local"), Options{Domain: "example.org", Handler: &nopHandler{}, WriteQueue: 2 * N})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	owners := make([]*int, N) // the sessions, kept alive outside the measure
	for i := range owners {
		owners[i] = new(int)
	}
	h4 := heap()
	for i := range N {
		l := fmt.Sprintf("own%05d", i)
		w.Bound(l, "phone-abcdef", owners[i])
		w.Presence(l, "phone-abcdef", owners[i], presence, 0, 3)
	}
	written := func() bool {
		w.local.mu.Lock()
		defer w.local.mu.Unlock()
		for _, r := range w.local.m {
			if r.rev == 0 || r.val == nil {
				return false
			}
		}
		return len(w.local.m) == N
	}
	deadline := time.Now().Add(time.Minute)
	for !written() && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	h5 := heap()
	t.Logf("node's own sessions: %.0f B/session (including the NATS server's growth for the writes)", float64(h5-h4)/N)
}

func heap() int64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapAlloc)
}
