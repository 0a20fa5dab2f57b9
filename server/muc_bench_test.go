package server_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/krill-xmpp/krill/sasl"
	"github.com/krill-xmpp/krill/storage"
)

// counter reads everything a connection receives on its own goroutine and
// counts occurrences of marker, with a fixed buffer (no allocation per
// read, so that allocs/op stays the server's).
type counter struct {
	marker []byte
	hits   atomic.Int64
	total  *atomic.Int64
	want   *atomic.Int64
	done   chan struct{}
}

// mucBenchWorld is a room with n occupants on real sockets, each connection
// drained by a counter of the benchmark's messages.
type mucBenchWorld struct {
	sender   *rawConn
	counters []*counter
	total    atomic.Int64
	want     atomic.Int64
	done     chan struct{}
	heapPer  float64 // heap bytes per occupant, measured around the joins
}

func heapNow() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

func newMUCBench(b *testing.B, n int) *mucBenchWorld {
	cfg := testConfig(b)
	cfg.MUC.MaxOccupants = n + 1
	cfg.MUC.MaxRoomsPerUser = 0
	cfg.MUC.MessageRate = 0
	cfg.MUC.MaxHistory = 0
	cfg.Log.Level = "error"
	users := make([]string, n+1)
	for i := range users {
		users[i] = fmt.Sprintf("u%d", i)
	}
	srv := startServer(b, cfg, users...)
	w := &mucBenchWorld{done: make(chan struct{}, 1)}
	w.sender = dialRaw(b, srv)
	w.sender.scramLogin("u0", testPassword, "r")
	w.sender.send(`<presence to='big@` + mucSvc + `/u0'><x xmlns='` + nsMUC + `'><history maxstanzas='0'/></x></presence>`)
	w.sender.skipUntil(`<subject/></message>`)
	w.sender.exchange(b, `<iq type='set' id='inst' to='big@`+mucSvc+`'><query xmlns='`+nsOwner+`'><x xmlns='jabber:x:data' type='submit'/></query></iq>`,
		`<iq type='result' id='inst' from='big@`+mucSvc+`'/>`)
	conns := make([]*rawConn, n+1)
	conns[0] = w.sender
	for i := 1; i <= n; i++ {
		conns[i] = dialRaw(b, srv)
		conns[i].scramLogin(users[i], testPassword, "r")
	}
	joined := make([]*counter, n+1)
	for i, c := range conns {
		joined[i] = &counter{marker: []byte(`<status code='110'/>`)}
		w.counters = append(w.counters, &counter{marker: []byte(`type='groupchat' id='f`), total: &w.total, want: &w.want, done: w.done})
		go func(i int, c *rawConn) {
			// One reader per connection counts both markers.
			jm, fm := joined[i], w.counters[i]
			buf := make([]byte, 64<<10)
			carry := 0
			keep := max(len(jm.marker), len(fm.marker)) - 1
			for {
				n, err := c.conn.Read(buf[carry:])
				if err != nil {
					return
				}
				data := buf[:carry+n]
				for _, m := range []*counter{jm, fm} {
					d := data
					for {
						k := bytes.Index(d, m.marker)
						if k < 0 {
							break
						}
						d = d[k+len(m.marker):]
						m.hits.Add(1)
						if m.total != nil && m.total.Add(1) == m.want.Load() {
							m.done <- struct{}{}
						}
					}
				}
				carry = min(keep, len(data))
				copy(buf, data[len(data)-carry:])
			}
		}(i, c)
		_ = c.conn.SetReadDeadline(time.Time{})
	}
	before := heapNow()
	for i := 1; i <= n; i++ {
		conns[i].send(`<presence to='big@` + mucSvc + `/u` + fmt.Sprint(i) + `'><x xmlns='` + nsMUC + `'/></presence>`)
	}
	deadline := time.Now().Add(5 * time.Minute)
	for i := 1; i <= n; i++ {
		for joined[i].hits.Load() == 0 {
			if time.Now().After(deadline) {
				b.Fatalf("occupant %d did not join", i)
			}
			time.Sleep(10 * time.Millisecond) // a setup wait, not a synchronisation under test
		}
	}
	w.heapPer = float64(int64(heapNow())-int64(before)) / float64(n)
	return w
}

// BenchmarkMUCFanout sends one groupchat message at a time to a room of
// 1,000 occupants, each on its own socket, and waits until every copy has
// been read: ns/op is the fan-out's completion time; cpu-ns/copy is the
// process's CPU (server and the client readers) per delivered copy;
// allocs/op counts the process (the readers allocate nothing); p99-ms is
// the 99th percentile completion latency; heap-B/occupant is the heap an
// occupant adds (its record, its partition slot, its maps' share).
//
//	go test -run '^$' -bench BenchmarkMUCFanout -benchtime 200x ./server/
func BenchmarkMUCFanout(b *testing.B) {
	for _, n := range []int{1000} {
		b.Run(fmt.Sprintf("occupants=%d", n), func(b *testing.B) {
			w := newMUCBench(b, n)
			copies := int64(n + 1)
			lat := make([]time.Duration, 0, b.N)
			var ms0, ms1 runtime.MemStats
			runtime.ReadMemStats(&ms0)
			cpu0 := cpuTime()
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				w.want.Store(int64(i+1) * copies)
				start := time.Now()
				w.sender.send(fmt.Sprintf(`<message to='big@%s' type='groupchat' id='f%d'><body>hello everyone, message %d</body></message>`, mucSvc, i, i))
				select {
				case <-w.done:
				case <-time.After(time.Minute):
					b.Fatalf("message %d: %d of %d copies arrived", i, w.total.Load(), w.want.Load())
				}
				lat = append(lat, time.Since(start))
			}
			b.StopTimer()
			cpu := cpuTime() - cpu0
			runtime.ReadMemStats(&ms1)
			slices.Sort(lat)
			b.ReportMetric(float64(cpu.Nanoseconds())/float64(int64(b.N)*copies), "cpu-ns/copy")
			b.ReportMetric(float64(ms1.Mallocs-ms0.Mallocs)/float64(int64(b.N)*copies), "allocs/copy")
			b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
			b.ReportMetric(w.heapPer, "heap-B/occupant")
		})
	}
}

// BenchmarkMUCRoomMemory has one session create 1,000 rooms (each a
// loaded room with its one occupant) and reports the heap per room.
//
//	go test -run '^$' -bench BenchmarkMUCRoomMemory -benchtime 1x ./server/
func BenchmarkMUCRoomMemory(b *testing.B) {
	const rooms = 1000
	cfg := testConfig(b)
	cfg.MUC.MaxRoomsPerUser = 0
	cfg.Log.Level = "error"
	srv := startServer(b, cfg, "u")
	c := dialRaw(b, srv)
	c.scramLogin("u", testPassword, "r")
	var per float64
	for range b.N {
		before := heapNow()
		for i := range rooms {
			c.send(fmt.Sprintf(`<presence to='m%d@%s/u'><x xmlns='%s'/></presence>`, i, mucSvc, nsMUC))
			c.skipUntil(`<subject/></message>`)
		}
		per = float64(int64(heapNow())-int64(before)) / rooms
		for i := range rooms {
			c.send(fmt.Sprintf(`<presence to='m%d@%s/u' type='unavailable'/>`, i, mucSvc))
			c.skipUntil(`<status code='110'/></x>`)
			c.skipUntil(`</presence>`)
		}
		c.sync(b, "s")
	}
	b.ReportMetric(per, "heap-B/room")
}

// Environment of a client child process of BenchmarkMUCFanoutProcs.
const (
	envMUCChildAddr  = "KRILL_TEST_MUC_ADDR"
	envMUCChildFirst = "KRILL_TEST_MUC_FIRST"
	envMUCChildCount = "KRILL_TEST_MUC_COUNT"
)

// TestMUCFanoutChild is not a test: it is the client side of
// BenchmarkMUCFanoutProcs in a child process (it skips unless the
// benchmark started it). It logs users FIRST .. FIRST+COUNT-1 in, joins
// them to big@, prints "ready", then "got K" each time all its
// connections have read message fK, until its stdin closes.
func TestMUCFanoutChild(t *testing.T) {
	addr := os.Getenv(envMUCChildAddr)
	if addr == "" {
		t.Skip("the client side of BenchmarkMUCFanoutProcs")
	}
	first, _ := strconv.Atoi(os.Getenv(envMUCChildFirst))
	count, _ := strconv.Atoi(os.Getenv(envMUCChildCount))
	conns := make([]*rawConn, count)
	for i := range conns {
		c, err := net.DialTimeout("tcp", addr, ioTimeout)
		if err != nil {
			t.Fatal(err)
		}
		conns[i] = &rawConn{t: t, conn: c}
		conns[i].scramLogin(fmt.Sprintf("u%d", first+i), testPassword, "r")
		conns[i].send(`<presence to='big@` + mucSvc + `/u` + strconv.Itoa(first+i) + `'><x xmlns='` + nsMUC + `'><history maxstanzas='0'/></x></presence>`)
	}
	for _, c := range conns {
		c.skipUntil(`<subject/></message>`)
	}
	const maxMsgs = 1 << 16
	counts := make([]atomic.Int32, maxMsgs)
	var out sync.Mutex
	marker := []byte(`type='groupchat' id='f`)
	for _, c := range conns {
		go func(c *rawConn) {
			buf := make([]byte, 64<<10)
			carry := copy(buf, c.buf.Bytes())
			for {
				_ = c.conn.SetReadDeadline(time.Time{})
				n, err := c.conn.Read(buf[carry:])
				if err != nil {
					return
				}
				data := buf[:carry+n]
				for {
					k := bytes.Index(data, marker)
					if k < 0 {
						break
					}
					rest := data[k+len(marker):]
					end := bytes.IndexByte(rest, '\'')
					if end < 0 {
						break // the id continues in the next read
					}
					id, err := strconv.Atoi(string(rest[:end]))
					data = rest[end:]
					if err != nil || id >= maxMsgs {
						continue
					}
					if int(counts[id].Add(1)) == len(conns) {
						out.Lock()
						fmt.Printf("got %d\n", id)
						out.Unlock()
					}
				}
				carry = min(len(data), 256)
				copy(buf, data[len(data)-carry:])
			}
		}(c)
	}
	fmt.Println("ready")
	_, _ = io.Copy(io.Discard, os.Stdin)
}

// BenchmarkMUCFanoutProcs is BenchmarkMUCFanout with the occupants in
// child processes (2,500 connections each), so that the benchmark process
// is the server and the sender only: cpu-ns/copy is the server's CPU per
// delivered copy. The room broadcasts moderators' presence only
// (muc#roomconfig_presencebroadcast), so that 10,000 joins cost O(n).
//
//	go test -run '^$' -bench BenchmarkMUCFanoutProcs -benchtime 100x -timeout 30m ./server/
func BenchmarkMUCFanoutProcs(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		b.Run(fmt.Sprintf("occupants=%d", n), func(b *testing.B) { benchFanoutProcs(b, n) })
	}
}

func benchFanoutProcs(b *testing.B, n int) {
	const perChild = 2500
	cfg := testConfig(b)
	cfg.MUC.MaxOccupants = n + 1
	cfg.MUC.MaxRoomsPerUser = 0
	cfg.MUC.MessageRate = 0
	cfg.MUC.MaxHistory = 0
	cfg.Log.Level = "error"
	cfg.Preauth.MaxPerIP = 0
	cfg.Preauth.MaxTotal = 0
	srv, store := startServerOpts(b, cfg, serverOpts{})
	creds, err := sasl.NewCredentials(testPassword, sasl.DefaultIterations)
	if err != nil {
		b.Fatal(err)
	}
	batch := make([]storage.NewAccount, 0, n+1)
	for i := 0; i <= n; i++ {
		batch = append(batch, storage.NewAccount{Username: fmt.Sprintf("u%d", i), Credentials: creds})
	}
	if err := store.AddAccounts(context.Background(), batch); err != nil {
		b.Fatal(err)
	}
	sender := dialRaw(b, srv)
	sender.scramLogin("u0", testPassword, "r")
	sender.send(`<presence to='big@` + mucSvc + `/u0'><x xmlns='` + nsMUC + `'/></presence>`)
	sender.skipUntil(`<subject/></message>`)
	sender.exchange(b, `<iq type='set' id='cfg' to='big@`+mucSvc+`'><query xmlns='`+nsOwner+`'><x xmlns='jabber:x:data' type='submit'>`+
		`<field var='muc#roomconfig_presencebroadcast'><value>moderator</value></field></x></query></iq>`,
		`<iq type='result' id='cfg' from='big@`+mucSvc+`'/>`)
	var own atomic.Int64
	go func() {
		buf := make([]byte, 64<<10)
		for {
			_ = sender.conn.SetReadDeadline(time.Time{})
			k, err := sender.conn.Read(buf)
			if err != nil {
				return
			}
			own.Add(int64(bytes.Count(buf[:k], []byte(`</message>`))))
		}
	}()
	type child struct {
		cmd   *exec.Cmd
		stdin io.Closer
		lines chan string
	}
	var kids []*child
	for first := 1; first <= n; first += perChild {
		cmd := exec.Command(os.Args[0], "-test.run=^TestMUCFanoutChild$", "-test.timeout=30m")
		cmd.Env = append(os.Environ(), envMUCChildAddr+"="+srv.Addr().String(),
			envMUCChildFirst+"="+strconv.Itoa(first), envMUCChildCount+"="+strconv.Itoa(min(perChild, n-first+1)))
		stdin, err := cmd.StdinPipe()
		if err != nil {
			b.Fatal(err)
		}
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			b.Fatal(err)
		}
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		k := &child{cmd: cmd, stdin: stdin, lines: make(chan string, 1024)}
		go func() {
			sc := bufio.NewScanner(stdout)
			for sc.Scan() {
				k.lines <- sc.Text()
			}
			close(k.lines)
		}()
		b.Cleanup(func() { _ = k.stdin.Close(); _ = k.cmd.Wait() })
		kids = append(kids, k)
	}
	waitLine := func(k *child, want string, timeout time.Duration) {
		deadline := time.After(timeout)
		for {
			select {
			case l, ok := <-k.lines:
				if !ok {
					b.Fatalf("client process ended waiting for %q", want)
				}
				if l == want {
					return
				}
			case <-deadline:
				b.Fatalf("no %q from a client process within %v", want, timeout)
			}
		}
	}
	for _, k := range kids {
		waitLine(k, "ready", 10*time.Minute)
	}
	lat := make([]time.Duration, 0, b.N)
	var ms0, ms1 runtime.MemStats
	runtime.ReadMemStats(&ms0)
	cpu0 := cpuTime()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		start := time.Now()
		sender.send(fmt.Sprintf(`<message to='big@%s' type='groupchat' id='f%d'><body>hello everyone, message %d</body></message>`, mucSvc, i, i))
		for _, k := range kids {
			waitLine(k, fmt.Sprintf("got %d", i), time.Minute)
		}
		lat = append(lat, time.Since(start))
	}
	b.StopTimer()
	cpu := cpuTime() - cpu0
	runtime.ReadMemStats(&ms1)
	slices.Sort(lat)
	copies := int64(b.N) * int64(n)
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(copies), "server-cpu-ns/copy")
	b.ReportMetric(float64(ms1.Mallocs-ms0.Mallocs)/float64(copies), "allocs/copy")
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
}
