package server_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/krill-xmpp/krill/bench"
	"github.com/krill-xmpp/krill/sasl"
	"github.com/krill-xmpp/krill/storage"
)

// TestClusterScale measures a cluster at scale (issue 17, "must show"):
// three krill serve processes on one NATS server (a nats-server process
// built from the module this repository pins), each holding N
// authenticated idle sessions (SCRAM without TLS, resource bound,
// <presence/> sent; N = 10,000 by default) opened by krill-bench client
// processes (at most 5,000 connections each); against the same node
// standalone with the same N. It reports per node RSS per session
// clustered and standalone, the NATS server's RSS per session, and, with
// the 3N sessions in place, cross-node and local message latency (one at
// a time, p50/p99) and CPU per message (pipelined, the two nodes and the
// NATS server together), each with the load average of the moment. Gated:
//
//	KRILL_CLUSTER_SCALE=1 TEST_POSTGRES_DSN=... go test -count=1 -timeout 60m -run TestClusterScale -v ./server/
//
// KRILL_CLUSTER_SCALE_N sets N.
func TestClusterScale(t *testing.T) {
	if os.Getenv("KRILL_CLUSTER_SCALE") == "" {
		t.Skip("KRILL_CLUSTER_SCALE is not set: the cluster scale run takes minutes")
	}
	n := 10000
	if v, err := strconv.Atoi(os.Getenv("KRILL_CLUSTER_SCALE_N")); err == nil && v > 0 {
		n = v
	}
	const perClient = 5000
	dsn := clusterDSN(t)
	bin, err := buildKrill()
	if err != nil {
		t.Fatal(err)
	}
	kb, natsBin := buildTool(t, "krill-bench", "../bench/cmd/krill-bench"), buildTool(t, "nats-server", "github.com/nats-io/nats-server/v2")

	// Accounts: n per node (n<i>u<j>), one credential for all (the
	// hashing is the client's cost, not what is measured), and three for
	// the latency runs.
	t0 := time.Now()
	provision(t, dsn, n)
	t.Logf("provisioned %d accounts in %v", 3*n+3, time.Since(t0).Round(time.Millisecond))

	// Standalone: one node, N sessions.
	solo := startScaleNode(t, bin, "", dsn, "solo")
	warm(t, kb, solo, "n0u%d")
	b0 := rssOf(t, solo.cmd.Process.Pid)
	cl := openSessions(t, kb, solo, "n0u%d", n, perClient)
	settle()
	b1 := rssOf(t, solo.cmd.Process.Pid)
	soloPer := float64(b1-b0) / float64(n)
	t.Logf("standalone: RSS %d -> %d bytes, %.0f B per session (N=%d) [load %s]", b0, b1, soloPer, n, loadAvg())
	cl.close()
	stopScaleNode(t, solo)

	// The cluster: NATS, three nodes, N sessions on each.
	natsURL, natsPid := startNATSProcess(t, natsBin)
	var nodes []*scaleNode
	for i := range 3 {
		nodes = append(nodes, startScaleNode(t, bin, natsURL, dsn, fmt.Sprintf("k%d", i)))
	}
	for _, nd := range nodes {
		waitMetric(t, nd, "krill_cluster_nodes", 3, time.Minute)
	}
	for i, nd := range nodes {
		warm(t, kb, nd, fmt.Sprintf("n%du%%d", i))
	}
	settle()
	nb0 := rssOf(t, natsPid)
	before := make([]uint64, 3)
	for i, nd := range nodes {
		before[i] = rssOf(t, nd.cmd.Process.Pid)
	}
	var clients []*clientSet
	for i, nd := range nodes {
		t1 := time.Now()
		clients = append(clients, openSessions(t, kb, nd, fmt.Sprintf("n%du%%d", i), n, perClient))
		t.Logf("node %s: %d sessions open in %v", nd.name, n, time.Since(t1).Round(time.Millisecond))
	}
	defer func() {
		for _, c := range clients {
			c.close()
		}
	}()
	for _, nd := range nodes {
		waitMetric(t, nd, "krill_cluster_remote_sessions", float64(2*n), 5*time.Minute)
	}
	settle()
	nb1 := rssOf(t, natsPid)
	var clusterPer []float64
	for i, nd := range nodes {
		after := rssOf(t, nd.cmd.Process.Pid)
		per := float64(after-before[i]) / float64(n)
		clusterPer = append(clusterPer, per)
		t.Logf("cluster node %s: RSS %d -> %d bytes, %.0f B per own session with %d remote entries (N=%d) [load %s]",
			nd.name, before[i], after, per, 2*n, n, loadAvg())
	}
	natsPer := float64(nb1-nb0) / float64(3*n)
	t.Logf("nats-server: RSS %d -> %d bytes, %.0f B per session (%d sessions) [load %s]", nb0, nb1, natsPer, 3*n, loadAvg())
	slices.Sort(clusterPer)
	med := clusterPer[1]
	remote := (med - soloPer) / 2 // each node gained N own sessions and 2N remote entries
	t.Logf("per remote entry (median node): (%.0f - %.0f) / 2 = %.0f B", med, soloPer, remote)
	const m = 1_000_000
	for _, k := range []int{3, 10} {
		per := float64(m/k)*soloPer + float64(m-m/k)*(remote)
		t.Logf("extrapolated to %d sessions on %d nodes: %.2f GB per node (%d own x %.0f B + %d remote x %.0f B); NATS %.2f GB per replica",
			m, k, per/1e9, m/k, soloPer, m-m/k, remote, float64(m)*natsPer/1e9)
	}

	// Latency and CPU with the 3N sessions in place.
	a, b, c := scaleLogin(t, nodes[0], "lata", "a"), scaleLogin(t, nodes[1], "latb", "b"), scaleLogin(t, nodes[0], "latc", "c")
	waitMetric(t, nodes[0], "krill_cluster_remote_sessions", float64(2*n+1), time.Minute)
	for _, run := range []struct {
		name string
		to   *rawConn
		jid  string
	}{{"cross-node", b, "latb@localhost/b"}, {"local", c, "latc@localhost/c"}} {
		const one = 2000
		h0 := routeHist(t, nodes[1])
		lat := make([]time.Duration, 0, one)
		for i := range one {
			id := fmt.Sprintf("%s%d", run.name[:1], i)
			start := time.Now()
			a.send(`<message to='` + run.jid + `' type='chat' id='` + id + `'><body>x</body></message>`)
			run.to.skipUntil(`id='` + id + `' from='lata@localhost/a'><body>x</body></message>`)
			lat = append(lat, time.Since(start))
		}
		slices.Sort(lat)
		t.Logf("%s latency, one at a time (%d), send to receipt by the client: p50 %v p99 %v [load %s]", run.name, one, lat[one/2], lat[one*99/100], loadAvg())
		if run.name == "cross-node" {
			h := routeHist(t, nodes[1])
			for i := range h {
				h[i].n -= h0[i].n
			}
			t.Logf("cross-node, node k1's krill_cluster_route_seconds over those %d: p50 <= %gs, p99 <= %gs (bucket bounds)", one, quantile(h, 0.5), quantile(h, 0.99))
		}

		const burst = 20000
		pids := []int{nodes[0].cmd.Process.Pid, nodes[1].cmd.Process.Pid, natsPid}
		c0 := cpuOf(t, pids...)
		go func() {
			var sb strings.Builder
			for i := range burst {
				fmt.Fprintf(&sb, `<message to='%s' type='chat' id='p%d'><body>x</body></message>`, run.jid, i)
				if sb.Len() > 32<<10 || i == burst-1 {
					_, _ = a.conn.Write([]byte(sb.String()))
					sb.Reset()
				}
			}
		}()
		readMessages(t, run.to, burst)
		c1 := cpuOf(t, pids...)
		t.Logf("%s CPU per message, pipelined (%d; nodes k0, k1 and NATS): %.1f µs [load %s]", run.name, burst,
			float64(c1-c0)/float64(burst)/1e3, loadAvg())
	}
}

// bucket is a cumulative histogram bucket as /metrics shows it.
type bucket struct {
	le float64
	n  float64
}

// routeHist reads a node's krill_cluster_route_seconds buckets.
func routeHist(t *testing.T, n *scaleNode) []bucket {
	t.Helper()
	var out []bucket
	for _, line := range strings.Split(metricsOf(t, n), "\n") {
		rest, ok := strings.CutPrefix(line, `krill_cluster_route_seconds_bucket{le="`)
		if !ok {
			continue
		}
		le, v, _ := strings.Cut(rest, `"} `)
		b := bucket{}
		b.le, _ = strconv.ParseFloat(le, 64) // +Inf parses as Inf
		b.n, _ = strconv.ParseFloat(v, 64)
		out = append(out, b)
	}
	return out
}

// quantile returns the upper bound of the bucket holding q.
func quantile(h []bucket, q float64) float64 {
	if len(h) == 0 || h[len(h)-1].n == 0 {
		return 0
	}
	want := q * h[len(h)-1].n
	for _, b := range h {
		if b.n >= want {
			return b.le
		}
	}
	return h[len(h)-1].le
}

// buildTool builds a command into the test's temporary directory.
func buildTool(t *testing.T, name, pkg string) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), name)
	if b, err := exec.Command("go", "build", "-o", out, pkg).CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", pkg, err, b)
	}
	return out
}

// provision adds n accounts per node with the bench password, and the
// three latency accounts.
func provision(t *testing.T, dsn string, n int) {
	t.Helper()
	ctx := context.Background()
	store, err := storage.OpenPostgres(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	creds, err := sasl.NewCredentials(bench.DefaultPassword, sasl.DefaultIterations)
	if err != nil {
		t.Fatal(err)
	}
	tc, err := sasl.NewCredentials(testPassword, sasl.DefaultIterations)
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range []string{"lata", "latb", "latc"} {
		if err := store.AddAccount(ctx, u, tc); err != nil {
			t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	var failed atomic.Value
	for w := range 8 {
		wg.Go(func() {
			for i := w; i < 3*n; i += 8 {
				if err := store.AddAccount(ctx, fmt.Sprintf("n%du%d", i/n, i%n), creds); err != nil {
					failed.Store(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if err, _ := failed.Load().(error); err != nil {
		t.Fatal(err)
	}
}

// scaleNode is a krill serve process of the scale run, with its admin
// listener.
type scaleNode struct {
	*krillNode
	admin string
}

// startScaleNode starts krill serve on PostgreSQL, in the cluster at
// natsURL ("": standalone), with idle pings off and a long pre-auth
// deadline so that nothing moves while sessions idle.
func startScaleNode(t *testing.T, bin, natsURL, dsn, name string) *scaleNode {
	t.Helper()
	n := &scaleNode{krillNode: &krillNode{name: name, addr: freePort(t, "127.0.0.1"), log: &lockedBuffer{}}, admin: freePort(t, "127.0.0.1")}
	env := clusterEnv(t, natsURL, dsn, name, n.addr)
	env = append(env, "KRILL_ADMIN_LISTEN="+n.admin, "KRILL_PREAUTH_TIMEOUT=30m", "KRILL_C2S_IDLE_PING=0s", "KRILL_LOG_LEVEL=warn",
		// Default liveness: the machine is loaded while 30,000 clients
		// log in, and a 500 ms timeout would take busy nodes as dead.
		"KRILL_CLUSTER_HEARTBEAT=1s", "KRILL_CLUSTER_NODE_TIMEOUT=5s")
	if natsURL == "" {
		env = append(env, "KRILL_CLUSTER_NATS_URL=", "KRILL_CLUSTER_NODE_NAME=")
	}
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
			t.Logf("node %s log:\n%s", n.name, clipLog(n.log.String()))
		}
	})
	if !waitFor(60*time.Second, func() bool {
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

// clipLog keeps the end of a long log.
func clipLog(s string) string {
	if len(s) > 8000 {
		return "..." + s[len(s)-8000:]
	}
	return s
}

// stopScaleNode stops a node and waits for it.
func stopScaleNode(t *testing.T, n *scaleNode) {
	t.Helper()
	_ = n.cmd.Process.Signal(os.Interrupt)
	done := make(chan struct{})
	go func() { _ = n.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		_ = n.cmd.Process.Kill()
		<-done
	}
}

// startNATSProcess runs nats-server with JetStream on a free loopback
// port; it is killed when t ends.
func startNATSProcess(t *testing.T, bin string) (string, int) {
	t.Helper()
	addr := freePort(t, "127.0.0.1")
	host, port, _ := net.SplitHostPort(addr)
	cmd := exec.Command(bin, "-a", host, "-p", port, "-js", "-sd", t.TempDir())
	log := &lockedBuffer{}
	cmd.Stderr = log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("nats-server log:\n%s", clipLog(log.String()))
		}
	})
	if !waitFor(30*time.Second, func() bool {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
		}
		return err == nil
	}) {
		t.Fatalf("nats-server did not listen:\n%s", log.String())
	}
	return "nats://" + addr, cmd.Process.Pid
}

// clientSet is the krill-bench client processes holding one node's
// sessions.
type clientSet struct {
	cmds []*exec.Cmd
	ins  []io.WriteCloser
}

// close ends the clients (the end of stdin is their signal) and waits.
func (c *clientSet) close() {
	for _, in := range c.ins {
		_ = in.Close()
	}
	for _, cmd := range c.cmds {
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	}
	c.cmds, c.ins = nil, nil
}

// sourceSeq hands each client process its own loopback source address,
// so that no source runs out of ports.
var sourceSeq atomic.Int32

// openSessions opens n sessions of the accounts pattern on node, at most
// per connections per client process, and returns once all are ready.
func openSessions(t *testing.T, kb string, node *scaleNode, pattern string, n, per int) *clientSet {
	t.Helper()
	cs := &clientSet{}
	type res struct {
		n   int
		err error
	}
	ready := make(chan res, (n+per-1)/per)
	for first := 0; first < n; first += per {
		share := min(per, n-first)
		idx := sourceSeq.Add(1)
		src := fmt.Sprintf("127.0.%d.%d", 1+idx/200, 2+idx%200)
		cmd := exec.Command(kb, "client", "-addr", node.addr, "-users", pattern, "-stage", "auth-plain",
			"-n", strconv.Itoa(share), "-first", strconv.Itoa(first), "-sources", src, "-concurrency", "16")
		in, err := cmd.StdinPipe()
		if err != nil {
			t.Fatal(err)
		}
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		errb := &lockedBuffer{}
		cmd.Stderr = errb
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		cs.cmds, cs.ins = append(cs.cmds, cmd), append(cs.ins, in)
		if _, err := in.Write([]byte("go\n")); err != nil {
			t.Fatal(err)
		}
		go func() {
			sc := bufio.NewScanner(out)
			for sc.Scan() {
				line := sc.Text()
				if strings.HasPrefix(line, "progress ") {
					continue
				}
				k, err := bench.ParseReady(line)
				ready <- res{k, err}
				_, _ = io.Copy(io.Discard, out)
				return
			}
			ready <- res{0, fmt.Errorf("client exited: %s", errb.String())}
		}()
	}
	total := 0
	deadline := time.After(15 * time.Minute)
	for range cs.cmds {
		select {
		case r := <-ready:
			if r.err != nil {
				cs.close()
				t.Fatalf("client for %s: %v", node.name, r.err)
			}
			total += r.n
		case <-deadline:
			cs.close()
			t.Fatalf("clients for %s not ready", node.name)
		}
	}
	if total != n {
		cs.close()
		t.Fatalf("node %s: %d sessions open, want %d", node.name, total, n)
	}
	return cs
}

// warm opens and closes a few sessions so that first-use allocations
// are not charged to the measured N.
func warm(t *testing.T, kb string, node *scaleNode, pattern string) {
	t.Helper()
	openSessions(t, kb, node, pattern, 200, 200).close()
}

// settle lets a process return what it freed and finish background work
// before a memory reading (a measurement pause, not a synchronisation).
func settle() { time.Sleep(3 * time.Second) }

// rssOf returns the RSS of pid.
func rssOf(t *testing.T, pid int) uint64 {
	t.Helper()
	m, err := bench.ReadProcMemory(pid)
	if err != nil {
		t.Fatal(err)
	}
	return m.RSS
}

// cpuOf returns the user+system CPU time of the processes, in
// nanoseconds (clock ticks of 10 ms).
func cpuOf(t *testing.T, pids ...int) int64 {
	t.Helper()
	var total int64
	for _, pid := range pids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			t.Fatal(err)
		}
		s := string(b)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
		u, _ := strconv.ParseInt(f[11], 10, 64)
		st, _ := strconv.ParseInt(f[12], 10, 64)
		total += (u + st) * int64(10*time.Millisecond)
	}
	return total
}

// loadAvg returns the 1, 5 and 15 minute load averages.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	return strings.Join(f[:3], " ")
}

// metricsOf reads a node's /metrics.
func metricsOf(t *testing.T, n *scaleNode) string {
	t.Helper()
	resp, err := http.Get("http://" + n.admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// waitMetric waits until a node's gauge name reaches want.
func waitMetric(t *testing.T, n *scaleNode, name string, want float64, limit time.Duration) {
	t.Helper()
	var last string
	if !waitFor(limit, func() bool {
		for _, line := range strings.Split(metricsOf(t, n), "\n") {
			if v, ok := strings.CutPrefix(line, name+" "); ok {
				last = v
				f, err := strconv.ParseFloat(v, 64)
				return err == nil && f >= want
			}
		}
		return false
	}) {
		t.Fatalf("node %s: %s is %s, want %v", n.name, name, last, want)
	}
}

// scaleLogin logs user in on a process node, available.
func scaleLogin(t *testing.T, n *scaleNode, user, resource string) *rawConn {
	t.Helper()
	c := dialNode(t, n.krillNode)
	c.scramLogin(user, testPassword, resource)
	c.exchange(t, `<presence/>`, `<presence from='`+user+`@localhost/`+resource+`'/>`)
	return c
}

// readMessages reads until n messages have arrived on c.
func readMessages(t *testing.T, c *rawConn, n int) {
	t.Helper()
	var chunk [64 << 10]byte
	got := 0
	tail := ""
	deadline := time.Now().Add(5 * time.Minute)
	for got < n {
		_ = c.conn.SetReadDeadline(deadline)
		k, err := c.conn.Read(chunk[:])
		s := tail + string(chunk[:k])
		got += strings.Count(s, "</message>")
		if i := strings.LastIndex(s, "</message>"); i >= 0 {
			s = s[i+len("</message>"):]
		}
		tail = s[max(0, len(s)-16):]
		if err != nil {
			t.Fatalf("%d of %d messages: %v", got, n, err)
		}
	}
}
