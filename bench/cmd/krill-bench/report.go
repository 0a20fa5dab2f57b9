package main

import (
	"bufio"
	"cmp"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// results is everything read from a directory of JSON lines.
type results struct {
	idle       []idleRecord
	login      []loginRecord
	throughput []throughputRecord
	attack     []attackRecord
	samples    []attackSample
	muc        []mucRecord
}

// reportCmd turns the JSON lines of a results directory into results.md,
// idle.svg and attack.svg in the same directory, and prints the Markdown.
func reportCmd(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("report", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("dir", "", "results directory holding *.jsonl")
	if err := fs.Parse(args); err != nil {
		return errUsage
	}
	if *dir == "" {
		return fmt.Errorf("krill-bench: report needs -dir")
	}
	res, err := readResults(*dir)
	if err != nil {
		return err
	}
	var md strings.Builder
	writeMarkdown(&md, res)
	if err := os.WriteFile(filepath.Join(*dir, "results.md"), []byte(md.String()), 0o644); err != nil {
		return err
	}
	if len(res.idle) > 0 {
		if err := os.WriteFile(filepath.Join(*dir, "idle.svg"), []byte(idleSVG(res.idle)), 0o644); err != nil {
			return err
		}
	}
	if len(res.samples) > 0 {
		if err := os.WriteFile(filepath.Join(*dir, "attack.svg"), []byte(attackSVG(res.samples)), 0o644); err != nil {
			return err
		}
	}
	_, err = io.WriteString(stdout, md.String())
	return err
}

// readResults reads every *.jsonl file in dir; lines of unknown kinds are
// skipped.
func readResults(dir string) (*results, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*.jsonl"))
	if err != nil {
		return nil, err
	}
	res := &results{}
	for _, name := range files {
		f, err := os.Open(name)
		if err != nil {
			return nil, err
		}
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Bytes()
			var kind struct {
				Kind string `json:"kind"`
			}
			if json.Unmarshal(line, &kind) != nil {
				continue
			}
			switch kind.Kind {
			case "idle":
				var r idleRecord
				if json.Unmarshal(line, &r) == nil {
					res.idle = append(res.idle, r)
				}
			case "login-rate":
				var r loginRecord
				if json.Unmarshal(line, &r) == nil {
					res.login = append(res.login, r)
				}
			case "throughput":
				var r throughputRecord
				if json.Unmarshal(line, &r) == nil {
					res.throughput = append(res.throughput, r)
				}
			case "attack":
				var r attackRecord
				if json.Unmarshal(line, &r) == nil {
					res.attack = append(res.attack, r)
				}
			case "muc":
				var r mucRecord
				if json.Unmarshal(line, &r) == nil {
					res.muc = append(res.muc, r)
				}
			case "attack-sample":
				var r attackSample
				if json.Unmarshal(line, &r) == nil {
					res.samples = append(res.samples, r)
				}
			}
		}
		_ = f.Close()
		if err := sc.Err(); err != nil {
			return nil, fmt.Errorf("krill-bench: %s: %w", name, err)
		}
	}
	return res, nil
}

// point is the idle results of one server, stage and N over its repeats.
type point struct {
	server, stage string
	n             int
	rss, pss      []float64
	slab          []float64
	heapStack     []float64 // from -metrics; empty without
	heapAlloc     []float64
	held          int // fewest connections held in a repeat
	connect       []float64
	serverCPU     []float64
	clientCPU     []float64
}

var stageOrder = map[string]int{"tcp": 0, "stream": 1, "tls": 2, "auth": 3}
var serverOrder = map[string]int{"krill": 0, "prosody": 1, "ejabberd": 2}

func orderOf(m map[string]int, k string) int {
	if v, ok := m[k]; ok {
		return v
	}
	return len(m)
}

// points groups idle records by server, stage and N, in a stable order:
// stage, then N, then server.
func points(recs []idleRecord) []*point {
	byKey := map[string]*point{}
	var out []*point
	for _, r := range recs {
		k := fmt.Sprintf("%s/%s/%d", r.Server, r.Stage, r.N)
		p := byKey[k]
		if p == nil {
			p = &point{server: r.Server, stage: r.Stage, n: r.N, held: r.ConnsHeld}
			byKey[k] = p
			out = append(out, p)
		}
		p.rss = append(p.rss, r.RSSPerConn)
		p.pss = append(p.pss, r.PSSPerConn)
		p.slab = append(p.slab, r.KernelSlabPerConn)
		if r.HeapStackPerConn != 0 {
			p.heapStack = append(p.heapStack, r.HeapStackPerConn)
			p.heapAlloc = append(p.heapAlloc, r.HeapAllocPerConn)
		}
		p.connect = append(p.connect, r.ConnectSeconds)
		p.serverCPU = append(p.serverCPU, r.ServerCPU)
		p.clientCPU = append(p.clientCPU, r.ClientCPU)
		p.held = min(p.held, r.ConnsHeld)
	}
	slices.SortFunc(out, func(a, b *point) int {
		return cmp.Or(cmp.Compare(orderOf(stageOrder, a.stage), orderOf(stageOrder, b.stage)),
			cmp.Compare(a.n, b.n),
			cmp.Compare(orderOf(serverOrder, a.server), orderOf(serverOrder, b.server)),
			cmp.Compare(a.server, b.server))
	})
	return out
}

// median of v (the mean of the middle two for an even count).
func median(v []float64) float64 {
	if len(v) == 0 {
		return math.NaN()
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// spread formats the range of v, or the single value.
func spread(v []float64) string {
	if len(v) < 2 {
		return "-"
	}
	return fmt.Sprintf("%s – %s", num(slices.Min(v)), num(slices.Max(v)))
}

func num(f float64) string {
	neg := f < 0
	s := fmt.Sprintf("%.0f", math.Abs(f))
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "−" + b.String()
	}
	return b.String()
}

func writeMarkdown(w io.Writer, res *results) {
	pts := points(res.idle)
	if len(pts) > 0 {
		fmt.Fprintln(w, "## Idle connections: server memory per connection")
		fmt.Fprintln(w)
		fmt.Fprintln(w, "Bytes per connection, (after − before) / N, RSS and PSS summed over the server's processes; median of the repeats, with the range.")
		fmt.Fprintln(w)
		fmt.Fprintln(w, "| stage | server | N | repeats | RSS B/conn | RSS range | PSS B/conn | kernel slab B/conn (both ends) | held | connect s | server CPU s | client CPU s |")
		fmt.Fprintln(w, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
		for _, p := range pts {
			fmt.Fprintf(w, "| `%s` | %s | %s | %d | **%s** | %s | %s | %s | %s | %.1f | %.1f | %.1f |\n",
				p.stage, p.server, num(float64(p.n)), len(p.rss), num(median(p.rss)), spread(p.rss), num(median(p.pss)),
				num(median(p.slab)), num(float64(p.held)), median(p.connect), median(p.serverCPU), median(p.clientCPU))
		}
		fmt.Fprintln(w)
		writeRatios(w, pts)
		writeGoHeap(w, pts)
	}
	if len(res.login) > 0 {
		fmt.Fprintln(w, "## Login rate")
		fmt.Fprintln(w)
		fmt.Fprintln(w, "Full logins on fresh connections: TCP, STARTTLS, TLS 1.3, SCRAM-SHA-256, bind, presence, reset.")
		fmt.Fprintln(w)
		fmt.Fprintln(w, "| server | logins | failed | in flight | logins/s | p50 ms | p99 ms | server CPU µs/login | client CPU µs/login |")
		fmt.Fprintln(w, "|---|---:|---:|---:|---:|---:|---:|---:|---:|")
		for _, r := range res.login {
			fmt.Fprintf(w, "| %s | %d | %d | %d | **%.0f** | %.1f | %.1f | %.0f | %.0f |\n",
				r.Server, r.Logins, r.Failed, r.Parallel, r.PerSecond, r.P50ms, r.P99ms, r.ServerCPUus, r.ClientCPUus)
		}
		fmt.Fprintln(w)
	}
	if len(res.throughput) > 0 {
		fmt.Fprintln(w, "## Message throughput")
		fmt.Fprintln(w)
		fmt.Fprintln(w, "Chat messages from one session to another's full JID, pairs of sessions, a window of messages in flight per pair.")
		fmt.Fprintln(w)
		fmt.Fprintln(w, "| server | pairs | window | seconds | stanzas/s | p50 ms | p99 ms | stalled pairs | server CPU s | client CPU s | bytes/msg |")
		fmt.Fprintln(w, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
		for _, r := range res.throughput {
			fmt.Fprintf(w, "| %s | %d | %d | %.0f | **%.0f** | %.2f | %.2f | %d | %.1f | %.1f | %d |\n",
				r.Server, r.Pairs, r.Window, r.Seconds, r.PerSecond, r.P50ms, r.P99ms, r.Stalled, r.ServerCPU, r.ClientCPU, r.MessageSize)
		}
		fmt.Fprintln(w)
	}
	if len(res.attack) > 0 {
		fmt.Fprintln(w, "## Pre-auth attack")
		fmt.Fprintln(w)
		fmt.Fprintln(w, "Hostile connections complete TLS, fail one SCRAM login (RFC 6120 SASL unless the server column names another profile: sasl2, fast) and then send a whitespace ping every 5 s; legitimate clients log in meanwhile. Servers on their default pre-auth timeouts.")
		fmt.Fprintln(w)
		fmt.Fprintln(w, "| server | hostile | seconds | last hostile closed at s | still open at end | legit logins | failed | p50 ms | p99 ms | quiet p50 ms | RSS before MB | RSS peak MB | RSS end MB |")
		fmt.Fprintln(w, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
		for _, r := range res.attack {
			last := fmt.Sprintf("%.1f", r.LastClosedS)
			if r.LastClosedS < 0 {
				last = "not all"
			}
			server := r.Server
			if r.HostileProfile != "" && r.HostileProfile != profileSASL {
				server += " (" + r.HostileProfile + ")"
			}
			fmt.Fprintf(w, "| %s | %d | %.0f | %s | %d | %d | %d | %.1f | %.1f | %.1f | %.1f | %.1f | %.1f |\n",
				server, r.HostileOpened, r.Seconds, last, r.OpenAtEnd, r.Logins, r.LoginsFailed, r.P50ms, r.P99ms,
				r.BaselineP50ms, mb(r.RSSBefore), mb(r.RSSPeak), mb(r.RSSEnd))
		}
		fmt.Fprintln(w)
	}
	if len(res.muc) > 0 {
		writeMUC(w, res.muc)
	}
}

func mb(b uint64) float64 { return float64(b) / (1 << 20) }

// netOfIdle is a run's server CPU per copy less what the server spends
// idle over as long as the send phase took (some servers tick while idle).
func netOfIdle(r mucRecord) float64 {
	if r.Delivered == 0 {
		return 0
	}
	return (r.ServerCPU - r.IdleCPUPerSec/1000*r.SendSeconds) * 1e6 / float64(r.Delivered)
}

// writeMUC prints the muc runs, one row per server and room size: the
// median over the runs and, below each, the range.
func writeMUC(w io.Writer, recs []mucRecord) {
	type key struct {
		server string
		n      int
	}
	groups := map[key][]mucRecord{}
	var keys []key
	for _, r := range recs {
		k := key{r.Server, r.Occupants}
		if _, ok := groups[k]; !ok {
			keys = append(keys, k)
		}
		groups[k] = append(groups[k], r)
	}
	slices.SortFunc(keys, func(a, b key) int {
		return cmp.Or(cmp.Compare(a.n, b.n), cmp.Compare(orderOf(serverOrder, a.server), orderOf(serverOrder, b.server)), strings.Compare(a.server, b.server))
	})
	fmt.Fprintln(w, "## MUC fan-out")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "One sender posts groupchat messages at a bounded rate to a room of N occupants; each occupant timestamps each copy. Median of the runs, range in brackets. Last copy: from the sender's write to the last occupant's read, per message. Server CPU: utime+stime of the server's processes over the send phase / copies read; net of idle: less the server's idle CPU rate (read over a quiet period just before) times the send phase's length.")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| server | occupants | runs | messages × rate | last copy p50 ms | last copy p99 ms | per copy p50 ms | per copy p99 ms | server CPU µs/copy | net of idle µs/copy | idle CPU ms/s | copies read | out of order | presences/occupant | join s | load (1 min) |")
	fmt.Fprintln(w, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
	for _, k := range keys {
		g := groups[k]
		col := func(f func(mucRecord) float64, prec int) string {
			v := make([]float64, len(g))
			for i, r := range g {
				v[i] = f(r)
			}
			s := strconv.FormatFloat(median(v), 'f', prec, 64)
			if len(v) > 1 {
				s += " (" + strconv.FormatFloat(slices.Min(v), 'f', prec, 64) + " – " + strconv.FormatFloat(slices.Max(v), 'f', prec, 64) + ")"
			}
			return s
		}
		var got, want, ooo int64
		lo, hi := math.Inf(1), math.Inf(-1)
		for _, r := range g {
			got += r.Delivered
			want += r.Expected
			ooo += r.OutOfOrder
			lo = min(lo, r.LoadBefore, r.LoadAfter)
			hi = max(hi, r.LoadBefore, r.LoadAfter)
		}
		fmt.Fprintf(w, "| %s | %s | %d | %d × %g/s | %s | %s | %s | %s | **%s** | %s | %s | %s / %s | %d | %s | %s | %.1f – %.1f |\n",
			k.server, num(float64(k.n)), len(g), g[0].Messages, g[0].Rate,
			col(func(r mucRecord) float64 { return r.LastP50ms }, 1), col(func(r mucRecord) float64 { return r.LastP99ms }, 1),
			col(func(r mucRecord) float64 { return r.CopyP50ms }, 1), col(func(r mucRecord) float64 { return r.CopyP99ms }, 1),
			col(func(r mucRecord) float64 { return r.CPUPerCopyUs }, 1), col(netOfIdle, 1), col(func(r mucRecord) float64 { return r.IdleCPUPerSec }, 0),
			num(float64(got)), num(float64(want)), ooo, col(func(r mucRecord) float64 { return r.PresencesPerOccupant }, 1),
			col(func(r mucRecord) float64 { return r.JoinSeconds }, 1), lo, hi)
	}
	fmt.Fprintln(w)
}

// writeRatios prints, per stage, each server's median RSS per connection
// relative to Krill's at the same N.
func writeRatios(w io.Writer, pts []*point) {
	krill := map[string]float64{}
	var servers []string
	seen := map[string]bool{}
	for _, p := range pts {
		if p.server == "krill" {
			krill[fmt.Sprintf("%s/%d", p.stage, p.n)] = median(p.rss)
		}
		if !seen[p.server] {
			seen[p.server] = true
			servers = append(servers, p.server)
		}
	}
	slices.SortFunc(servers, func(a, b string) int { return cmp.Compare(orderOf(serverOrder, a), orderOf(serverOrder, b)) })
	if len(servers) < 2 {
		return
	}
	fmt.Fprintln(w, "Median RSS per connection by stage (N as given), and the ratio to Krill's at the same N:")
	fmt.Fprintln(w)
	fmt.Fprint(w, "| stage | N |")
	for _, s := range servers {
		fmt.Fprintf(w, " %s |", s)
	}
	fmt.Fprintln(w)
	fmt.Fprint(w, "|---|---:|")
	for range servers {
		fmt.Fprint(w, "---:|")
	}
	fmt.Fprintln(w)
	type key struct {
		stage string
		n     int
	}
	var rows []key
	cell := map[string]float64{}
	for _, p := range pts {
		k := key{p.stage, p.n}
		if !slices.Contains(rows, k) {
			rows = append(rows, k)
		}
		cell[fmt.Sprintf("%s/%d/%s", p.stage, p.n, p.server)] = median(p.rss)
	}
	for _, k := range rows {
		fmt.Fprintf(w, "| `%s` | %s |", k.stage, num(float64(k.n)))
		for _, s := range servers {
			v, ok := cell[fmt.Sprintf("%s/%d/%s", k.stage, k.n, s)]
			switch {
			case !ok:
				fmt.Fprint(w, " |")
			case s == "krill":
				fmt.Fprintf(w, " %s |", num(v))
			default:
				if kv := krill[fmt.Sprintf("%s/%d", k.stage, k.n)]; kv > 0 {
					fmt.Fprintf(w, " %s (%.1f×) |", num(v), v/kv)
				} else {
					fmt.Fprintf(w, " %s |", num(v))
				}
			}
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintln(w)
}

// writeGoHeap prints the Go heap and stack figures of the points that
// have them (a Go server scraped with -metrics).
func writeGoHeap(w io.Writer, pts []*point) {
	var have []*point
	for _, p := range pts {
		if len(p.heapStack) > 0 {
			have = append(have, p)
		}
	}
	if len(have) == 0 {
		return
	}
	fmt.Fprintln(w, "Go heap and stacks per connection, from the server's Prometheus metrics (HeapInuse + StackInuse, and HeapAlloc; no GC forced):")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| stage | server | N | heap+stack B/conn | range | heapalloc B/conn | RSS B/conn |")
	fmt.Fprintln(w, "|---|---|---:|---:|---:|---:|---:|")
	for _, p := range have {
		fmt.Fprintf(w, "| `%s` | %s | %s | **%s** | %s | %s | %s |\n", p.stage, p.server, num(float64(p.n)),
			num(median(p.heapStack)), spread(p.heapStack), num(median(p.heapAlloc)), num(median(p.rss)))
	}
	fmt.Fprintln(w)
}
