package main

import (
	"bytes"
	"crypto/tls"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/krill-xmpp/krill/bench"
)

// target is what every workload needs to know about the server: where it
// listens, how to log in, and which processes are it.
type target struct {
	server   string // label written into the results: krill, prosody, ejabberd
	addr     string
	domain   string
	users    string // account pattern, prefix%d
	password string
	pids     string
	pidfile  string
	pgrep    string
	sources  string
	curves   string
	verify   bool
	jsonPath string
	webPath  string // the WebSocket stages' endpoint
}

// register adds the flags common to every workload.
func (t *target) register(fs *flag.FlagSet) {
	fs.StringVar(&t.server, "server", "server", "label for the results (krill, prosody, ejabberd)")
	fs.StringVar(&t.addr, "addr", "127.0.0.1:5222", "server's c2s address (loopback only)")
	fs.StringVar(&t.domain, "domain", "localhost", "XMPP domain")
	fs.StringVar(&t.users, "users", "bench%d", "account pattern: a prefix followed by %d")
	fs.StringVar(&t.password, "password", bench.DefaultPassword, "every account's password")
	fs.StringVar(&t.pids, "pids", "", "server process ids, comma-separated (their descendants are included)")
	fs.StringVar(&t.pidfile, "pidfile", "", "file holding the server's process id")
	fs.StringVar(&t.pgrep, "pgrep", "", "regular expression matched against process command lines to find the server")
	fs.StringVar(&t.sources, "sources", "127.0.0.2-127.0.0.9", "source addresses to dial from: a range a-b or a list")
	fs.StringVar(&t.curves, "curves", "", "client key exchange groups (x25519, x25519mlkem768, p256, ...); empty: Go's default")
	fs.BoolVar(&t.verify, "verify", false, "verify the server's certificate (off: the bench measures, it does not authenticate the server)")
	fs.StringVar(&t.jsonPath, "json", "", "append results as JSON lines to this file")
	fs.StringVar(&t.webPath, "web-path", bench.DefaultWebPath, "WebSocket endpoint of the ws, ws-auth, wss and wss-auth stages, whose -addr is the server's web listener (Prosody: /xmpp-websocket on 5280; ejabberd: as its listener says)")
}

// check validates the flags that every workload uses.
func (t *target) check() error {
	if err := checkLoopback(t.addr); err != nil {
		return err
	}
	if _, err := t.sourceAddrs(); err != nil {
		return err
	}
	if _, _, err := t.userPattern(); err != nil {
		return err
	}
	_, err := bench.ParseCurves(t.curves)
	return err
}

// checkLoopback refuses a host:port whose host is not a loopback address.
func checkLoopback(hostport string) error {
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		return fmt.Errorf("krill-bench: address %q: %w", hostport, err)
	}
	if host == "localhost" {
		return nil
	}
	a, err := netip.ParseAddr(host)
	if err != nil || !a.IsLoopback() {
		return fmt.Errorf("%w: %q", errNotLoopback, hostport)
	}
	return nil
}

// sourceAddrs parses -sources: "127.0.0.2-127.0.0.9", "127.0.0.2,127.0.0.3"
// or empty (the system chooses).
func (t *target) sourceAddrs() ([]netip.Addr, error) {
	return parseSources(t.sources)
}

func parseSources(s string) ([]netip.Addr, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, nil
	}
	var out []netip.Addr
	for part := range strings.SplitSeq(s, ",") {
		lo, hi, isRange := strings.Cut(strings.TrimSpace(part), "-")
		a, err := netip.ParseAddr(lo)
		if err != nil {
			return nil, fmt.Errorf("krill-bench: source %q: %w", part, err)
		}
		b := a
		if isRange {
			if b, err = netip.ParseAddr(hi); err != nil {
				return nil, fmt.Errorf("krill-bench: source %q: %w", part, err)
			}
		}
		// At most 256 addresses per range keeps the loop bounded.
		for i := 0; i < 256 && a.Compare(b) <= 0; i++ {
			if !a.IsLoopback() {
				return nil, fmt.Errorf("%w: source %s", errNotLoopback, a)
			}
			out = append(out, a)
			a = a.Next()
		}
	}
	return out, nil
}

// userPattern splits -users into the prefix before %d; anything after %d
// is refused, since accounts are named prefix + number.
func (t *target) userPattern() (string, int, error) {
	prefix, rest, ok := strings.Cut(t.users, "%d")
	if !ok || rest != "" || prefix == "" {
		return "", 0, fmt.Errorf("krill-bench: -users %q: want a prefix followed by %%d, as bench%%d", t.users)
	}
	return prefix, 0, nil
}

// options returns the bench.Options for a stage, without N.
func (t *target) options(stage bench.Stage) (bench.Options, error) {
	src, err := t.sourceAddrs()
	if err != nil {
		return bench.Options{}, err
	}
	prefix, first, err := t.userPattern()
	if err != nil {
		return bench.Options{}, err
	}
	curves, err := bench.ParseCurves(t.curves)
	if err != nil {
		return bench.Options{}, err
	}
	return bench.Options{
		Addr:       t.addr,
		Stage:      stage,
		Domain:     t.domain,
		LocalAddrs: src,
		UserPrefix: prefix,
		FirstUser:  first,
		Password:   t.password,
		WebPath:    t.webPath,
		TLSConfig: &tls.Config{
			// The bench measures the server; it does not authenticate it.
			InsecureSkipVerify: !t.verify, //nolint:gosec
			ServerName:         t.domain,
			CurvePreferences:   curves,
			MinVersion:         tls.VersionTLS12,
		},
	}, nil
}

// serverPids resolves -pids, -pidfile and -pgrep to the server's processes
// and all their descendants, now: servers that start helper processes
// (ejabberd's epmd and erl_child_setup) are counted whole.
func (t *target) serverPids() ([]int, error) {
	var roots []int
	for f := range strings.SplitSeq(t.pids, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		p, err := strconv.Atoi(f)
		if err != nil {
			return nil, fmt.Errorf("krill-bench: -pids %q: %w", t.pids, err)
		}
		roots = append(roots, p)
	}
	if t.pidfile != "" {
		b, err := os.ReadFile(t.pidfile)
		if err != nil {
			return nil, fmt.Errorf("krill-bench: -pidfile: %w", err)
		}
		p, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil {
			return nil, fmt.Errorf("krill-bench: -pidfile %s: %w", t.pidfile, err)
		}
		roots = append(roots, p)
	}
	procs, err := listProcs()
	if err != nil {
		return nil, err
	}
	if t.pgrep != "" {
		re, err := regexp.Compile(t.pgrep)
		if err != nil {
			return nil, fmt.Errorf("krill-bench: -pgrep: %w", err)
		}
		self := os.Getpid()
		for _, p := range procs {
			if p.pid != self && p.ppid != self && re.MatchString(p.cmdline) {
				roots = append(roots, p.pid)
			}
		}
	}
	if len(roots) == 0 {
		return nil, errNoPids
	}
	// Add descendants; a process appears once.
	set := map[int]bool{}
	for _, r := range roots {
		set[r] = true
	}
	for range 16 { // depth bound
		grew := false
		for _, p := range procs {
			if set[p.ppid] && !set[p.pid] {
				set[p.pid] = true
				grew = true
			}
		}
		if !grew {
			break
		}
	}
	out := make([]int, 0, len(set))
	for p := range set {
		out = append(out, p)
	}
	slices.Sort(out)
	return out, nil
}

type procInfo struct {
	pid, ppid int
	cmdline   string
}

// listProcs reads every process's parent and command line from /proc.
func listProcs() ([]procInfo, error) {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	var out []procInfo
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue // gone meanwhile
		}
		f := statFields(stat)
		if len(f) < 2 {
			continue
		}
		ppid, _ := strconv.Atoi(f[1])
		cl, _ := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		out = append(out, procInfo{pid: pid, ppid: ppid, cmdline: strings.TrimSpace(string(bytes.ReplaceAll(cl, []byte{0}, []byte{' '})))})
	}
	return out, nil
}

// statFields returns the fields of /proc/PID/stat after the command name
// (which may hold spaces): state, ppid, ...; utime is index 11, stime 12.
func statFields(stat []byte) []string {
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return nil
	}
	return strings.Fields(string(stat[i+1:]))
}

// clockTick is USER_HZ, the unit of utime and stime in /proc/PID/stat;
// 100 on every Linux architecture Go supports.
const clockTick = 100

// serverSample is the server's memory and CPU time at one moment, summed
// over its processes.
type serverSample struct {
	RSS, PSS uint64
	CPU      time.Duration
	Procs    int
}

// sample reads the server's processes' memory and CPU time.
func (t *target) sample() (serverSample, error) {
	pids, err := t.serverPids()
	if err != nil {
		return serverSample{}, err
	}
	var s serverSample
	for _, p := range pids {
		m, err := bench.ReadProcMemory(p)
		if err != nil {
			continue // exited between listing and reading
		}
		s.RSS += m.RSS
		s.PSS += m.PSS
		s.Procs++
		if stat, err := os.ReadFile("/proc/" + strconv.Itoa(p) + "/stat"); err == nil {
			if f := statFields(stat); len(f) > 12 {
				u, _ := strconv.ParseUint(f[11], 10, 64)
				k, _ := strconv.ParseUint(f[12], 10, 64)
				s.CPU += time.Duration(u+k) * time.Second / clockTick
			}
		}
	}
	if s.Procs == 0 {
		return s, errNoPids
	}
	return s, nil
}

// selfCPU is this process's user+system CPU time, children that have
// been waited for included.
func selfCPU() time.Duration {
	var total time.Duration
	for _, who := range []int{syscall.RUSAGE_SELF, syscall.RUSAGE_CHILDREN} {
		var ru syscall.Rusage
		if syscall.Getrusage(who, &ru) == nil {
			total += rusageCPU(&ru)
		}
	}
	return total
}

// serverConns counts established TCP connections whose local end is the
// server's address: the server's side of the bench's connections (and of
// anything else talking to it).
func serverConns(addr string) (int, error) {
	ap, err := netip.ParseAddrPort(strings.Replace(addr, "localhost", "127.0.0.1", 1))
	if err != nil {
		return 0, err
	}
	want := fmt.Sprintf(":%04X", ap.Port())
	n := 0
	for _, file := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		b, err := os.ReadFile(file)
		if err != nil {
			continue
		}
		for line := range strings.SplitSeq(string(b), "\n") {
			f := strings.Fields(line)
			if len(f) > 3 && f[3] == "01" && strings.HasSuffix(f[1], want) {
				n++
			}
		}
	}
	return n, nil
}

// jsonOut appends records as JSON lines to a file, or does nothing.
type jsonOut struct {
	mu sync.Mutex
	w  io.WriteCloser
}

func openJSON(path string) (*jsonOut, error) {
	if path == "" {
		return &jsonOut{}, nil
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return nil, err
	}
	return &jsonOut{w: f}, nil
}

func (j *jsonOut) write(v any) error {
	if j.w == nil {
		return nil
	}
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	_, err = j.w.Write(append(b, '\n'))
	return err
}

func (j *jsonOut) close() error {
	if j.w == nil {
		return nil
	}
	return j.w.Close()
}

// percentile returns the p-th percentile (0..100) of sorted durations.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(float64(len(sorted)-1) * p / 100)
	return sorted[i]
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// progress draws a one-line progress bar on w with \r; done/total.
func progress(w io.Writer, label string, done, total int, start time.Time) {
	const width = 30
	if total <= 0 {
		return
	}
	filled := min(width, done*width/total)
	fmt.Fprintf(w, "\r%-22s [%s%s] %6d/%-6d %5.1fs", label, strings.Repeat("#", filled),
		strings.Repeat(".", width-filled), done, total, time.Since(start).Seconds())
}
