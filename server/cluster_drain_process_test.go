package server_test

import (
	"context"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/krill-xmpp/krill/sasl"
	"github.com/krill-xmpp/krill/storage"
)

// startDrainableNode is startProcessNode with an admin listener (krill
// cluster drain asks it); it returns the node, its environment (for the
// krill commands that address it) and its admin address.
func startDrainableNode(t *testing.T, bin, natsURL, dsn, name string) (*krillNode, []string, string) {
	t.Helper()
	n := &krillNode{name: name, addr: freePort(t, "127.0.0.1"), log: &lockedBuffer{}}
	admin := freePort(t, "127.0.0.1")
	env := append(clusterEnv(t, natsURL, dsn, name, n.addr),
		"KRILL_ADMIN_LISTEN="+admin,
		"KRILL_CLUSTER_HANDOVER_TIMEOUT=300ms",
		"KRILL_CLUSTER_DRAIN_TIMEOUT=20s",
	)
	n.cmd = exec.Command(bin, "serve")
	n.cmd.Env = env
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
	return n, env, admin
}

// drainCmd runs krill cluster drain against the node of env in the
// background; wait returns its output once it and the node have exited,
// failing t unless both exit 0.
func drainCmd(t *testing.T, bin string, env []string, n *krillNode) (wait func() string) {
	t.Helper()
	cmd := exec.Command(bin, "cluster", "drain")
	cmd.Env = env
	var out lockedBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	return func() string {
		t.Helper()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("krill cluster drain: %v\n%s", err, out.String())
			}
		case <-time.After(40 * time.Second):
			_ = cmd.Process.Kill()
			t.Fatalf("krill cluster drain did not return:\n%s", out.String())
		}
		exited := make(chan error, 1)
		go func() { exited <- n.cmd.Wait() }()
		select {
		case err := <-exited:
			if err != nil {
				t.Fatalf("node %s exited with %v", n.name, err)
			}
		case <-time.After(20 * time.Second):
			t.Fatalf("node %s did not exit after its drain", n.name)
		}
		return out.String()
	}
}

// TestClusterRollingRestartDrain: three krill serve processes; alice on
// n1 sends messages to bob between and during the steps of a rolling
// restart of the two other nodes. bob's client has stream management:
// krill cluster drain of n2 (where he is) closes his connection and he
// resumes on n3 with the count of what he received; n2 exits 0 and starts
// again; krill cluster drain of n3 sends him back to n2. Every message
// arrives exactly once, and bob never logs in again.
func TestClusterRollingRestartDrain(t *testing.T) {
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
	for _, u := range []string{"alice", "bob"} {
		if err := store.AddAccount(context.Background(), u, creds); err != nil {
			t.Fatal(err)
		}
	}
	_ = store.Close()
	n1, _, admin1 := startDrainableNode(t, bin, natsURL, dsn, "n1")
	n2, env2, _ := startDrainableNode(t, bin, natsURL, dsn, "n2")
	n3, env3, _ := startDrainableNode(t, bin, natsURL, dsn, "n3")
	const bobFull = "bob@localhost/phone"

	alice := dialNode(t, n1)
	alice.scramLogin("alice", testPassword, "a")
	bob := dialNode(t, n2)
	bob.scramLogin("bob", testPassword, "phone")
	id := enableResume(t, bob)
	// n1 routes to bob once its directory holds him.
	if !waitFor(ioTimeout, func() bool {
		_, m := get(t, "http://"+admin1+"/metrics")
		return strings.Contains(m, "krill_cluster_remote_sessions 1\n")
	}) {
		t.Fatal("n1 never saw bob")
	}

	total := 0
	send := func(n int) {
		for range n {
			sendChat(alice, bobFull, "m"+strconv.Itoa(total), strconv.Itoa(total))
			total++
		}
		alice.sync(t, "s"+strconv.Itoa(total))
	}
	got := make(map[string]int)
	// resume moves bob to node n with h, and returns the new connection
	// and what it received up to the <resumed/>.
	resume := func(n *krillNode, h int) *rawConn {
		t.Helper()
		c := dialNode(t, n)
		c.scramAuth("bob", testPassword)
		c.send(`<resume xmlns='` + nsSM + `' previd='` + id + `' h='` + strconv.Itoa(h) + `'/>`)
		c.expect(t, `<resumed xmlns='`+nsSM+`' previd='`+id+`' h='0'/>`)
		return c
	}

	send(20)
	text := bob.skipUntil(`id='m19' from='alice@localhost/a'><body>19</body></message>`)
	wait := drainCmd(t, bin, env2, n2)
	send(20)
	text += bob.closed()
	if strings.Contains(text, "<stream:error>") {
		t.Fatalf("bob's connection to the draining node got a stream error: %q", text)
	}
	h := countMessages(text, got)
	send(20)
	bob = resume(n3, h)
	send(20)
	t.Logf("drain of n2: %s", strings.TrimSpace(wait()))

	// n2 again, a new incarnation under the same name.
	n2, _, _ = startDrainableNode(t, bin, natsURL, dsn, "n2")
	send(20)
	wait = drainCmd(t, bin, env3, n3)
	send(20)
	text = bob.closed()
	h += countMessages(text, got)
	bob = resume(n2, h)
	send(20)
	var after string
	if !waitFor(ioTimeout, func() bool {
		bob.send(`<iq type='get' id='p' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>`)
		after += bob.skipUntil(`<iq type='result' id='p' from='localhost'/>`)
		seen := make(map[string]int)
		countMessages(after, seen)
		return len(seen)+len(got) >= total
	}) {
		t.Logf("after the second resumption: %q", after)
	}
	countMessages(after, got)
	t.Logf("drain of n3: %s", strings.TrimSpace(wait()))
	for i := range total {
		if n := got["m"+strconv.Itoa(i)]; n != 1 {
			t.Errorf("message m%d arrived %d times", i, n)
		}
	}
}
