package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/krill-xmpp/krill/bench"
)

// idleRecord is one measured point of the idle workload: N connections
// held at a stage, the server's memory before and after.
type idleRecord struct {
	Kind        string    `json:"kind"` // "idle"
	Server      string    `json:"server"`
	Stage       string    `json:"stage"`
	N           int       `json:"n"`
	Repeat      int       `json:"repeat"`
	Time        time.Time `json:"time"`
	Curves      string    `json:"curves,omitempty"`
	ClientProcs int       `json:"client_procs"`
	ServerProcs int       `json:"server_procs"`
	// Server memory summed over its processes, bytes.
	RSSBefore uint64 `json:"rss_before"`
	RSSAfter  uint64 `json:"rss_after"`
	PSSBefore uint64 `json:"pss_before"`
	PSSAfter  uint64 `json:"pss_after"`
	// (after - before) / N.
	RSSPerConn float64 `json:"rss_per_conn"`
	PSSPerConn float64 `json:"pss_per_conn"`
	// Kernel slab growth per connection, machine-wide, both ends.
	KernelSlabPerConn float64 `json:"kernel_slab_per_conn"`
	// Go heap (HeapInuse) plus stacks (StackInuse), and HeapAlloc, per
	// connection, from the server's Prometheus metrics (-metrics); zero
	// without.
	HeapStackPerConn float64 `json:"heap_stack_per_conn,omitempty"`
	HeapAllocPerConn float64 `json:"heapalloc_per_conn,omitempty"`
	// Server-side established connections gained: N when none was lost.
	ConnsHeld      int     `json:"conns_held"`
	ConnectSeconds float64 `json:"connect_s"`
	ServerCPU      float64 `json:"server_cpu_s"`
	ClientCPU      float64 `json:"client_cpu_s"`
}

// idleCmd brings N connections to a stage from child processes and
// reports the server's memory growth per connection.
func idleCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var t target
	fs := flag.NewFlagSet("idle", flag.ContinueOnError)
	fs.SetOutput(stderr)
	t.register(fs)
	stage := fs.String("stage", "tcp", "stage to hold connections at: tcp, stream, tls, auth")
	n := fs.Int("n", 5000, "connections")
	clients := fs.Int("clients", 2, "client processes the connections are spread over")
	settle := fs.Duration("settle", 3*time.Second, "idle time before the after reading")
	warmup := fs.Int("warmup", 16, "connections brought to the stage and closed before the baseline")
	repeat := fs.Int("repeat", 1, "repeat number, written into the result")
	conc := fs.Int("concurrency", 32, "connections being opened at once per client process")
	timeout := fs.Duration("timeout", 15*time.Minute, "bound on the whole run")
	metrics := fs.String("metrics", "", "the server's Prometheus endpoint (loopback), for Go heap and stack figures; Krill: http://127.0.0.1:5280/metrics")
	if err := fs.Parse(args); err != nil {
		return errUsage
	}
	if *metrics != "" {
		u, err := url.Parse(*metrics)
		if err != nil {
			return err
		}
		if err := checkLoopback(u.Host); err != nil {
			return err
		}
	}
	if err := t.check(); err != nil {
		return err
	}
	if *n < 1 || *clients < 1 || *clients > 64 {
		return fmt.Errorf("krill-bench: need -n >= 1 and 1 <= -clients <= 64")
	}
	o, err := t.options(bench.Stage(*stage))
	if err != nil {
		return err
	}
	out, err := openJSON(t.jsonPath)
	if err != nil {
		return err
	}
	defer out.close()
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()

	// Children first: they are not the server, so their start-up does
	// not touch the baseline, and they dial only when told.
	kids, err := startClients(ctx, &t, *stage, *n, *clients, *conc)
	if err != nil {
		return err
	}
	defer kids.stop()

	// Warm-up: code paths and buffers that the first connections touch
	// are not charged to the N.
	wo := o
	wo.Timeout = 30 * time.Second
	for i := range *warmup {
		c, err := bench.Dial(ctx, wo, i)
		if err != nil {
			return fmt.Errorf("krill-bench: warm-up connection: %w", err)
		}
		bench.Abort(c)
	}
	time.Sleep(time.Second)
	conns0, _ := serverConns(t.addr)
	k0, _ := bench.ReadKernelMemory()
	before, err := t.sample()
	if err != nil {
		return err
	}
	var gm0 goMem
	if *metrics != "" {
		if gm0, err = readGoMem(*metrics); err != nil {
			return err
		}
	}
	start := time.Now()
	if err := kids.goAndWait(ctx, stderr, "connect "+*stage); err != nil {
		return err
	}
	connectTime := time.Since(start)
	select {
	case <-time.After(*settle):
	case <-ctx.Done():
		return ctx.Err()
	}
	after, err := t.sample()
	if err != nil {
		return err
	}
	var gm1 goMem
	if *metrics != "" {
		if gm1, err = readGoMem(*metrics); err != nil {
			return err
		}
	}
	k1, _ := bench.ReadKernelMemory()
	conns1, _ := serverConns(t.addr)
	clientCPU := kids.stop()

	per := func(a, b uint64) float64 { return float64(int64(b)-int64(a)) / float64(*n) }
	rec := idleRecord{
		Kind: "idle", Server: t.server, Stage: *stage, N: *n, Repeat: *repeat, Time: time.Now().UTC(),
		Curves: t.curves, ClientProcs: *clients, ServerProcs: after.Procs,
		RSSBefore: before.RSS, RSSAfter: after.RSS, PSSBefore: before.PSS, PSSAfter: after.PSS,
		RSSPerConn: per(before.RSS, after.RSS), PSSPerConn: per(before.PSS, after.PSS),
		KernelSlabPerConn: per(k0.Slab, k1.Slab),
		ConnsHeld:         conns1 - conns0,
		ConnectSeconds:    connectTime.Seconds(),
		ServerCPU:         (after.CPU - before.CPU).Seconds(),
		ClientCPU:         clientCPU.Seconds(),
	}
	if *metrics != "" {
		rec.HeapStackPerConn = (gm1.HeapInuse + gm1.StackInuse - gm0.HeapInuse - gm0.StackInuse) / float64(*n)
		rec.HeapAllocPerConn = (gm1.HeapAlloc - gm0.HeapAlloc) / float64(*n)
	}
	fmt.Fprintf(stdout, "%-9s %-6s n=%-6d rep=%d  rss %8.0f B/conn  pss %8.0f B/conn  slab %6.0f B/conn  held %d  connect %.1fs  cpu server %.2fs client %.2fs\n",
		rec.Server, rec.Stage, rec.N, rec.Repeat, rec.RSSPerConn, rec.PSSPerConn, rec.KernelSlabPerConn,
		rec.ConnsHeld, rec.ConnectSeconds, rec.ServerCPU, rec.ClientCPU)
	if *metrics != "" {
		fmt.Fprintf(stdout, "%-9s %-6s n=%-6d rep=%d  go heap+stack %8.0f B/conn  heapalloc %8.0f B/conn\n",
			rec.Server, rec.Stage, rec.N, rec.Repeat, rec.HeapStackPerConn, rec.HeapAllocPerConn)
	}
	if err := out.write(rec); err != nil {
		return err
	}
	if rec.ConnsHeld < *n {
		return fmt.Errorf("%w: %d of %d held at the after reading", errLost, rec.ConnsHeld, *n)
	}
	return nil
}

// clients are the child processes holding the connections.
type clients struct {
	procs []*exec.Cmd
	ins   []io.WriteCloser
	outs  []*bufio.Reader
	errs  []*strings.Builder
	want  int
	once  sync.Once
	cpu   time.Duration
}

// startClients starts k copies of this program as "client", each with its
// share of the n connections, of the accounts and of the source addresses.
func startClients(ctx context.Context, t *target, stage string, n, k, conc int) (*clients, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	src, err := t.sourceAddrs()
	if err != nil {
		return nil, err
	}
	cs := &clients{want: n}
	first := 0
	for i := range k {
		share := shareOf(n, k, i)
		if share == 0 {
			continue
		}
		mine := sourcesOf(src, k, i)
		cmd := exec.CommandContext(ctx, exe, "client",
			"-addr", t.addr, "-domain", t.domain, "-users", t.users, "-password", t.password,
			"-curves", t.curves, "-verify="+strconv.FormatBool(t.verify), "-web-path", t.webPath,
			"-sources", mine, "-stage", stage,
			"-n", strconv.Itoa(share), "-first", strconv.Itoa(first), "-concurrency", strconv.Itoa(conc))
		first += share
		in, err := cmd.StdinPipe()
		if err != nil {
			cs.stop()
			return nil, err
		}
		outPipe, err := cmd.StdoutPipe()
		if err != nil {
			cs.stop()
			return nil, err
		}
		var eb strings.Builder
		cmd.Stderr = &limitedWriter{w: &eb, n: 4096}
		if err := cmd.Start(); err != nil {
			cs.stop()
			return nil, err
		}
		cs.procs = append(cs.procs, cmd)
		cs.ins = append(cs.ins, in)
		cs.outs = append(cs.outs, bufio.NewReader(outPipe))
		cs.errs = append(cs.errs, &eb)
	}
	return cs, nil
}

// goAndWait tells every client to dial and waits for all of them to be
// ready, drawing a progress bar on w.
func (cs *clients) goAndWait(ctx context.Context, w io.Writer, label string) error {
	for _, in := range cs.ins {
		if _, err := io.WriteString(in, "go\n"); err != nil {
			return err
		}
	}
	done := make([]atomic.Int64, len(cs.procs))
	ready := make([]atomic.Bool, len(cs.procs))
	errc := make(chan error, len(cs.procs))
	for i, r := range cs.outs {
		go func() {
			// Bounded by the child's output, which ends when it exits.
			for {
				line, err := r.ReadString('\n')
				if f, ok := strings.CutPrefix(line, "progress "); ok {
					v, _ := strconv.Atoi(strings.TrimSpace(f))
					done[i].Store(int64(v))
					continue
				}
				if line != "" {
					m, perr := bench.ParseReady(line)
					if perr != nil {
						errc <- perr
						return
					}
					done[i].Store(int64(m))
					ready[i].Store(true)
					errc <- nil
					// Keep draining, so the child never blocks on a write.
					_, _ = io.Copy(io.Discard, r)
					return
				}
				if err != nil {
					errc <- fmt.Errorf("krill-bench: client %d exited before ready: %s", i, strings.TrimSpace(cs.errs[i].String()))
					return
				}
			}
		}()
	}
	start := time.Now()
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	pending := len(cs.procs)
	draw := func() {
		total := 0
		for i := range done {
			total += int(done[i].Load())
		}
		progress(w, label, total, cs.want, start)
	}
	for pending > 0 {
		select {
		case err := <-errc:
			if err != nil {
				fmt.Fprintln(w)
				return err
			}
			pending--
		case <-tick.C:
			draw()
		case <-ctx.Done():
			fmt.Fprintln(w)
			return ctx.Err()
		}
	}
	draw()
	fmt.Fprintln(w)
	return nil
}

// stop closes the clients' stdin, which makes them close their
// connections and exit, waits for them, and returns their CPU time.
func (cs *clients) stop() time.Duration {
	cs.once.Do(func() { cs.cpu = stopChildren(cs.ins, cs.procs) })
	return cs.cpu
}

// shareOf is child i's share of n connections over k children: they
// differ by at most one, the larger first.
func shareOf(n, k, i int) int {
	if i < n%k {
		return n/k + 1
	}
	return n / k
}

// sourcesOf is child i's part of the source addresses, comma-separated:
// every k-th one, or all of them when there are fewer than k.
func sourcesOf(src []netip.Addr, k, i int) string {
	var mine []string
	for j, a := range src {
		if len(src) < k || j%k == i {
			mine = append(mine, a.String())
		}
	}
	return strings.Join(mine, ",")
}

// stopChildren closes the child processes' stdin, which makes them close
// their connections and exit, waits for each (killing one that takes
// over 30 s), and returns the CPU time they used.
func stopChildren(ins []io.WriteCloser, procs []*exec.Cmd) time.Duration {
	for _, in := range ins {
		_ = in.Close()
	}
	var cpu time.Duration
	for _, p := range procs {
		done := make(chan struct{})
		go func() { _ = p.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			_ = p.Process.Kill()
			<-done
		}
		if ps := p.ProcessState; ps != nil {
			if ru, ok := ps.SysUsage().(*syscall.Rusage); ok {
				cpu += rusageCPU(ru)
			}
		}
	}
	return cpu
}

// limitedWriter keeps the first n bytes written to it.
type limitedWriter struct {
	mu sync.Mutex
	w  io.Writer
	n  int
}

func (l *limitedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.n > 0 {
		k := min(len(p), l.n)
		_, _ = l.w.Write(p[:k])
		l.n -= k
	}
	return len(p), nil
}

// lockedWriter serialises writes from the progress ticker and the ready
// line.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// clientCmd is a child process of idle: it holds its share of the
// connections under bench.ServeClient's protocol, and prints
// "progress N" lines while it dials.
func clientCmd(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	var t target
	fs := flag.NewFlagSet("client", flag.ContinueOnError)
	fs.SetOutput(stderr)
	t.register(fs)
	stage := fs.String("stage", "tcp", "stage")
	n := fs.Int("n", 1, "connections")
	first := fs.Int("first", 0, "index of the first connection (its account number)")
	conc := fs.Int("concurrency", 32, "connections being opened at once")
	if err := fs.Parse(args); err != nil {
		return errUsage
	}
	if err := t.check(); err != nil {
		return err
	}
	o, err := t.options(bench.Stage(*stage))
	if err != nil {
		return err
	}
	o.N = *n
	o.FirstUser += *first
	o.Concurrency = *conc
	var count atomic.Int64
	o.Progress = func() { count.Add(1) }
	w := &lockedWriter{w: stdout}
	stopTick := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		tick := time.NewTicker(250 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-tick.C:
				v := count.Load()
				fmt.Fprintf(w, "progress %d\n", v)
				if v >= int64(*n) {
					return
				}
			case <-stopTick:
				return
			}
		}
	})
	err = bench.ServeClient(ctx, o, stdin, w)
	close(stopTick)
	wg.Wait()
	if err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}
