package bench_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/krill-xmpp/krill/bench"
	"github.com/krill-xmpp/krill/server"
)

// Knobs of BenchmarkIdle. The connection count comes from -idle.conns,
// else from $BENCH_CONNS, else defaultConns; the settle period from
// $BENCH_SETTLE (a Go duration).
var connsFlag = flag.Int("idle.conns", 0, "connections BenchmarkIdle holds idle (default $BENCH_CONNS or 10000)")

const (
	defaultConns  = 10000
	defaultSettle = 3 * time.Second
	// clientProcs is how many client processes share the connections.
	clientProcs = 2
	// connsPerSource bounds the connections dialled from one source
	// address, well inside one address's ephemeral port range.
	connsPerSource = 10000
	// warmConns are opened and closed before the baseline, so that code
	// and per-loop buffers first touched by the first connections are in
	// the baseline rather than charged to the N connections.
	warmConns = 16
	// clientStartup bounds the wait for the client processes to start
	// (and map what they share with this one) before the baseline.
	clientStartup = time.Minute
	// readyTimeout bounds bringing every connection to its stage.
	readyTimeout = 10 * time.Minute
	// goroutineSlack is how many more goroutines the benchmark process
	// may have at the stage than before it: a few the runtime or the
	// server starts on demand, never one per connection.
	goroutineSlack = 4
	// fdReserve is what the server process needs besides the connections'
	// sockets: listener, epoll, database, pipes.
	fdReserve = 64
)

// BenchmarkIdle measures user-space bytes per idle connection in the
// server process, one sub-benchmark per stage. Run it once per stage:
//
//	go test -run '^$' -bench BenchmarkIdle -benchtime 1x -timeout 30m ./bench/
func BenchmarkIdle(b *testing.B) {
	n, err := idleConns()
	if err != nil {
		b.Fatal(err)
	}
	for _, st := range bench.Stages() {
		b.Run(string(st), func(b *testing.B) { benchIdle(b, st, n) })
	}
}

func idleConns() (int, error) {
	if *connsFlag > 0 {
		return *connsFlag, nil
	}
	if s := os.Getenv("BENCH_CONNS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < clientProcs {
			return 0, fmt.Errorf("BENCH_CONNS: want an integer >= %d, got %q", clientProcs, s)
		}
		return n, nil
	}
	return defaultConns, nil
}

// parkWaves is $BENCH_PARK_WAVES for the parked stage (1 otherwise):
// the parked sessions are made in that many waves, one after the other.
func parkWaves(stage bench.Stage) (int, error) {
	s := os.Getenv(envParkWaves)
	if s == "" || stage != bench.StageParked {
		return 1, nil
	}
	w, err := strconv.Atoi(s)
	if err != nil || w < 1 {
		return 0, fmt.Errorf("%s: want an integer >= 1, got %q", envParkWaves, s)
	}
	return w, nil
}

func settlePeriod() (time.Duration, error) {
	s := os.Getenv("BENCH_SETTLE")
	if s == "" {
		return defaultSettle, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return 0, fmt.Errorf("BENCH_SETTLE: want a duration >= 0, got %q", s)
	}
	return d, nil
}

// benchIdle brings n connections to stage against a fresh server and
// reports the server process's growth per connection.
func benchIdle(b *testing.B, stage bench.Stage, n int) {
	settle, err := settlePeriod()
	if err != nil {
		b.Fatal(err)
	}
	waves, err := parkWaves(stage)
	if err != nil {
		b.Fatal(err)
	}
	// A parked session holds no descriptor: in waves, only one wave's
	// connections are open at a time.
	waveN := splitEven(n, waves)
	if err := checkFileLimit(waveN[0] + fdReserve); err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(0, "ns/op") // the time to set up says nothing here

	// A fresh server, warmed up and then idle with nothing connected.
	// Memory the runtime kept from an earlier stage's server would be
	// reused by this one without showing in RSS, so it is returned to
	// the OS before the baseline; the stage itself is measured as an
	// operator sees it, without returning anything.
	accounts := 0
	queued, _ := strconv.Atoi(os.Getenv(envQueued))
	switch {
	case stage == bench.StageParked && queued > 0:
		accounts = n + 1 // bench<n> sends the queued messages
	case authStage(stage) || stage == bench.StageParked:
		accounts = n
	}
	srv := startBenchServerFor(b, accounts, stage)
	if k, _ := strconv.Atoi(os.Getenv(envRoster)); (stage == bench.StageAuth || stage == bench.StageParked) && k > 0 {
		t0 := time.Now()
		if err := provisionRosters(srv.store, n, k); err != nil {
			b.Fatal(err)
		}
		b.Logf("rosters of %d contacts (subscription both) for %d accounts in %v", k, n, time.Since(t0).Round(time.Millisecond))
	}
	tlsConf, err := clientTLS(srv.caFile)
	if err != nil {
		b.Fatal(err)
	}
	warm := stage
	if stage == bench.StageParked {
		// Warmed up logged in, not parked: parked sessions would stay.
		warm = bench.StageAuth
	}
	if err := warmUp(srv, warm, tlsConf); err != nil {
		b.Fatal(err)
	}
	// The client processes, started before the baseline but dialling only
	// after it: they map this same binary, which divides its pages' PSS
	// among more processes, and the parent keeps goroutines for them.
	// startWave starts the client processes of wave w (accounts from
	// first on) and waits until they run.
	var share []int
	startWave := func(w, first int) []*clientProc {
		procs := make([]*clientProc, 0, clientProcs)
		share = splitEven(waveN[w], clientProcs)
		perClient := (share[0] + connsPerSource - 1) / connsPerSource
		for i := range clientProcs {
			p, err := startClient(b, srv.addrFor(stage), srv.caFile, stage, share[i], first, sourceAddrs(w*clientProcs+i, perClient))
			if err != nil {
				b.Fatal(err)
			}
			procs = append(procs, p)
			first += share[i]
		}
		startDeadline := time.Now().Add(clientStartup)
		for _, p := range procs {
			if err := p.waitStarted(time.Until(startDeadline)); err != nil {
				b.Fatal(err)
			}
		}
		return procs
	}
	// runWave tells the processes to dial and waits until each holds its
	// share at the stage.
	deadline := time.Now().Add(readyTimeout * time.Duration(waves))
	runWave := func(procs []*clientProc) {
		for _, p := range procs {
			if err := p.begin(); err != nil {
				b.Fatal(err)
			}
		}
		for i, p := range procs {
			got, err := p.waitReady(time.Until(deadline))
			if err != nil {
				b.Fatal(err)
			}
			if got != share[i] {
				b.Fatalf("client %d ready with %d connections, want %d", i, got, share[i])
			}
		}
	}
	procs := startWave(0, 0)
	runtime.GC()
	debug.FreeOSMemory()
	before, err := takeSnapshot()
	if err != nil {
		b.Fatal(err)
	}
	writeHeapProfile(b, stage, "before")
	statsBefore := srv.Stats()

	start := time.Now()
	runWave(procs)
	for w, first := 1, waveN[0]; w < waves; w++ {
		// The previous wave's connections are reset, its sessions parked
		// and its processes done before the next one dials.
		for _, p := range procs {
			if err := p.stop(); err != nil {
				b.Fatal(err)
			}
		}
		if !waitFor(time.Until(deadline), func() bool {
			st := srv.Stats()
			return st.Preauth == 0 && st.Modules["sm.parked_now"] == uint64(first)
		}) {
			b.Fatalf("wave %d: server holds %+v, want %d parked", w, srv.Stats(), first)
		}
		procs = startWave(w, first)
		runWave(procs)
		first += waveN[w]
		b.Logf("wave %d of %d: %d parked (%v)", w+1, waves, first, time.Since(start).Round(time.Second))
	}
	// An authenticated client's last act, its initial presence, is
	// counted once the server has handled it.
	atStage := func(st server.StatsSnapshot) bool {
		switch stage {
		case bench.StageParked:
			// The sessions, none of their connections.
			// (The sender of the queued messages comes and goes.)
			return st.Preauth == 0 && st.Modules["sm.parked_now"] == uint64(n) && st.Closed-statsBefore.Closed >= uint64(n)
		case bench.StageAuth, bench.StageAuthPlain, bench.StageWSAuth, bench.StageWSSAuth:
			return st.Sessions == n && st.Preauth == 0 && st.StanzasIn-statsBefore.StanzasIn == uint64(n)
		}
		return st.Preauth == n
	}
	if !waitFor(time.Until(deadline), func() bool { return atStage(srv.Stats()) }) {
		b.Fatalf("server holds %+v, want %d connections at stage %s", srv.Stats(), n, stage)
	}
	ramp := time.Since(start)
	if stage == bench.StageParked && queued > 0 {
		if err := queueMessages(srv.Server, tlsConf, n, queued); err != nil {
			b.Fatal(err)
		}
	}

	time.Sleep(settle)
	after, err := takeSnapshot()
	if err != nil {
		b.Fatal(err)
	}
	writeHeapProfile(b, stage, "after")
	st := srv.Stats()
	if !atStage(st) {
		b.Fatalf("after settling the server holds %+v, want %d connections at stage %s", st, n, stage)
	}
	if closed := st.Closed - statsBefore.Closed; closed != 0 && stage != bench.StageParked {
		b.Fatalf("%d connections closed during the stage (%+v)", closed, st)
	}
	if grew := after.goroutines - before.goroutines; grew > goroutineSlack {
		b.Errorf("goroutines grew from %d to %d with %d connections: one per connection?", before.goroutines, after.goroutines, n)
	}

	perConn := func(a, z uint64) float64 { return (float64(a) - float64(z)) / float64(n) }
	rss := perConn(after.proc.RSS, before.proc.RSS)
	pss := perConn(after.proc.PSS, before.proc.PSS)
	heapStack := perConn(after.heapInuse+after.stackInuse, before.heapInuse+before.stackInuse)
	heapAlloc := perConn(after.heapAlloc, before.heapAlloc)
	b.ReportMetric(rss, "rss-B/conn")
	b.ReportMetric(pss, "pss-B/conn")
	b.ReportMetric(heapStack, "heap+stack-B/conn")
	b.ReportMetric(heapAlloc, "heapalloc-B/conn")
	b.ReportMetric(float64(n), "conns")
	// The figures above are read right after a collection, while the free
	// heap left by the ramp's garbage (TLS handshakes in flight, mostly) is
	// still resident. The runtime's background scavenger returns what is
	// over its goal (the heap goal plus 10%) within seconds; rss-scavenged
	// is the process once it has, without forcing it (no FreeOSMemory),
	// which is where an idle server settles.
	scav, err := waitScavenged(scavengeLimit)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(perConn(scav.proc.RSS, before.proc.RSS), "rss-scavenged-B/conn")
	b.Logf("stage %s: free heap not yet returned %.0f B/conn (%.0f B/conn once scavenged), runtime non-heap %.0f B/conn; "+
		"rss once scavenged %.0f B/conn",
		stage, perConn(after.heapRetained, before.heapRetained), perConn(scav.heapRetained, before.heapRetained),
		perConn(after.otherSys, before.otherSys), perConn(scav.proc.RSS, before.proc.RSS))
	if stage == bench.StageParked {
		// What the parked sessions' queues hold (presence they were sent
		// before their connection went), part of rss-B/conn.
		b.ReportMetric(float64(st.Modules["sm.parked_bytes"])/float64(n), "queue-B/conn")
		// rss-B/conn counts the pages the n logins used and freed that the
		// runtime has not returned yet; returned, what stays is what the
		// parked sessions hold.
		debug.FreeOSMemory()
		freed, err := takeSnapshot()
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(perConn(freed.proc.RSS, before.proc.RSS), "rss-returned-B/conn")
		// What stays once the parked sessions are gone is not theirs:
		// pages the logins left behind (fragmentation, runtime and
		// SQLite caches). Shutdown ends every session (the event loops
		// and their buffers go too, a fixed amount, not per session).
		ctx, cancel := context.WithTimeout(context.Background(), stopTimeout)
		if err := srv.Shutdown(ctx); err != nil {
			b.Logf("shutdown: %v", err)
		}
		cancel()
		debug.FreeOSMemory()
		gone, err := takeSnapshot()
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(perConn(gone.proc.RSS, before.proc.RSS), "rss-closed-B/conn")
		b.ReportMetric(perConn(gone.heapInuse+gone.stackInuse, before.heapInuse+before.stackInuse), "heap+stack-closed-B/conn")
	}
	b.ReportMetric(float64(after.goroutines), "goroutines")
	kernel := ""
	if before.kernelErr == nil && after.kernelErr == nil {
		// Both ends of every connection are on this machine, and so is
		// everything else running on it: these are rough.
		sock := perConn(after.kernel.SockBuf, before.kernel.SockBuf)
		slab := perConn(after.kernel.Slab, before.kernel.Slab)
		b.ReportMetric(sock, "kernel-sockbuf-B/conn")
		b.ReportMetric(slab, "kernel-slab-B/conn")
		kernel = fmt.Sprintf("; kernel, both ends, system-wide: slab %.0f B/conn, socket buffers %.0f B/conn", slab, sock)
	}
	if stage == bench.StageTLS || stage == bench.StageAuth || stage == bench.StageWSS || stage == bench.StageWSSAuth {
		b.Logf("client key exchange groups: %s", curvesLabel())
	}
	b.Logf("stage %s, %d idle connections (ready in %v, settled %v): server process rss %.0f B/conn, pss %.0f B/conn, "+
		"heap+stack %.0f B/conn, heapalloc %.0f B/conn; %d goroutines (%d before)%s",
		stage, n, ramp.Round(time.Millisecond), settle, rss, pss, heapStack, heapAlloc,
		after.goroutines, before.goroutines, kernel)

	for _, p := range procs {
		if err := p.stop(); err != nil {
			b.Error(err)
		}
	}
}

// queueMessages logs in as bench<n> and sends k messages to each of the
// n parked sessions, then waits until their queues hold them all.
func queueMessages(srv *server.Server, tc *tls.Config, n, k int) error {
	ctx, cancel := context.WithTimeout(context.Background(), readyTimeout)
	defer cancel()
	c, err := bench.Dial(ctx, bench.Options{Addr: srv.Addr().String(), Stage: bench.StageAuth, TLSConfig: tc, FirstUser: n}, 0)
	if err != nil {
		return fmt.Errorf("queued messages: %w", err)
	}
	defer bench.Abort(c)
	base := srv.Stats().Modules["sm.parked_bytes"]
	// 200 bytes once the server has stamped from='bench<n>@localhost/bench'.
	from := " from='bench" + strconv.Itoa(n) + "@localhost/bench'"
	var want uint64
	w := bufio.NewWriterSize(c, 64<<10)
	for i := range n {
		head := "<message type='chat' to='bench" + strconv.Itoa(i) + "@localhost/bench' id='q'><body>"
		tail := "</body></message>"
		body := strings.Repeat("x", max(200-len(head)-len(tail)-len(from), 1))
		for range k {
			msg := head + body + tail
			want += uint64(len(msg) + len(from))
			if _, err := w.WriteString(msg); err != nil {
				return fmt.Errorf("queued messages: %w", err)
			}
		}
	}
	if err := w.Flush(); err != nil {
		return fmt.Errorf("queued messages: %w", err)
	}
	if !waitFor(readyTimeout, func() bool { return srv.Stats().Modules["sm.parked_bytes"]-base >= want }) {
		return fmt.Errorf("queued messages: the queues hold %d more bytes, want %d", srv.Stats().Modules["sm.parked_bytes"]-base, want)
	}
	return nil
}

// warmUp brings a few connections to stage and closes them again, then
// waits until the server has let go of them.
func warmUp(srv *benchServer, stage bench.Stage, tc *tls.Config) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err := bench.Drive(ctx, bench.Options{Addr: srv.addrFor(stage), N: warmConns, Stage: stage, TLSConfig: tc,
		Ready: func(int) { cancel() }})
	if err != nil {
		return fmt.Errorf("warm-up: %w", err)
	}
	if !waitFor(time.Minute, func() bool { st := srv.Stats(); return st.Preauth == 0 && st.Sessions == 0 }) {
		return fmt.Errorf("warm-up: server still holds %+v", srv.Stats())
	}
	return nil
}

// snapshot is the benchmark process's memory at one instant, after
// garbage collection.
type snapshot struct {
	proc       bench.ProcMemory
	heapInuse  uint64
	stackInuse uint64
	heapAlloc  uint64
	// heapRetained is heap memory the runtime holds free but has not
	// returned to the OS (HeapIdle - HeapReleased): resident until the
	// scavenger gets to it.
	heapRetained uint64
	// otherSys is what the runtime has from the OS beyond the heap:
	// stacks, its own metadata, buffers of the profiler and tracer.
	otherSys   uint64
	goroutines int
	kernel     bench.KernelMemory
	kernelErr  error
}

// takeSnapshot collects garbage twice (the second cycle frees what the
// first one's finalizers released) and reads the figures, without
// returning any memory to the OS.
func takeSnapshot() (snapshot, error) {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	s, err := snapshotOf(&ms)
	if err != nil {
		return snapshot{}, err
	}
	s.kernel, s.kernelErr = bench.ReadKernelMemory()
	return s, nil
}

// scavengeLimit bounds waitScavenged; scavengeQuiet is how long the
// returned memory must stay unchanged to count as done.
const (
	scavengeLimit = 30 * time.Second
	scavengeQuiet = 2 * time.Second
	scavengePoll  = 100 * time.Millisecond
)

// waitScavenged waits, at most limit, until the runtime's background
// scavenger has stopped returning free heap to the OS, and reads the
// figures then. It triggers no collection and forces no return.
func waitScavenged(limit time.Duration) (snapshot, error) {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	released, since := ms.HeapReleased, time.Now()
	for end := time.Now().Add(limit); time.Now().Before(end) && time.Since(since) < scavengeQuiet; {
		time.Sleep(scavengePoll)
		runtime.ReadMemStats(&ms)
		if ms.HeapReleased != released {
			released, since = ms.HeapReleased, time.Now()
		}
	}
	return snapshotOf(&ms)
}

// snapshotOf is the snapshot of ms and of the process's memory now.
func snapshotOf(ms *runtime.MemStats) (snapshot, error) {
	s := snapshot{
		heapInuse:    ms.HeapInuse,
		stackInuse:   ms.StackInuse,
		heapAlloc:    ms.HeapAlloc,
		heapRetained: ms.HeapIdle - ms.HeapReleased,
		otherSys:     ms.Sys - ms.HeapSys,
		goroutines:   runtime.NumGoroutine(),
	}
	var err error
	if s.proc, err = bench.ReadProcMemory(0); err != nil {
		return snapshot{}, err
	}
	return s, nil
}

// writeHeapProfile writes the heap profile to $BENCH_HEAPPROFILE/heap-STAGE-WHEN.pprof
// when that variable is set. Compare with
// go tool pprof -top -sample_index=inuse_space -base heap-stream-before.pprof heap-stream-after.pprof
func writeHeapProfile(b *testing.B, stage bench.Stage, when string) {
	dir := os.Getenv(envHeapProfile)
	if dir == "" {
		return
	}
	name := filepath.Join(dir, "heap-"+string(stage)+"-"+when+".pprof")
	f, err := os.Create(name)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	if err := pprof.Lookup("heap").WriteTo(f, 0); err != nil {
		b.Fatal(err)
	}
	b.Logf("heap profile: %s", name)
}

// splitEven divides n into k shares that differ by at most one, larger
// ones first.
func splitEven(n, k int) []int {
	s := make([]int, k)
	for i := range s {
		s[i] = n / k
		if i < n%k {
			s[i]++
		}
	}
	return s
}

// sourceAddrs returns the per loopback source addresses of client process
// i: 127.0.0.2 onwards, disjoint from every other client's and from
// 127.0.0.1.
func sourceAddrs(i, per int) []netip.Addr {
	per = max(per, 1)
	addrs := make([]netip.Addr, per)
	for j := range addrs {
		k := 2 + i*per + j
		addrs[j] = netip.AddrFrom4([4]byte{127, byte(k >> 16), byte(k >> 8), byte(k)})
	}
	return addrs
}

// checkFileLimit reports whether this process may hold need descriptors.
func checkFileLimit(need int) error {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return err
	}
	if lim.Cur < uint64(need) {
		return fmt.Errorf("open-file limit %d is below the %d the server process needs; lower -idle.conns or raise ulimit -n", lim.Cur, need)
	}
	return nil
}
