package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/krill-xmpp/krill/bench"
)

// throughputRecord is one throughput run: messages between pairs of
// authenticated sessions.
type throughputRecord struct {
	Kind        string    `json:"kind"` // "throughput"
	Server      string    `json:"server"`
	Time        time.Time `json:"time"`
	Pairs       int       `json:"pairs"`
	Window      int       `json:"window"`
	Seconds     float64   `json:"seconds"`
	Delivered   int       `json:"delivered"`
	PerSecond   float64   `json:"stanzas_per_s"`
	P50ms       float64   `json:"p50_ms"`
	P99ms       float64   `json:"p99_ms"`
	Stalled     int       `json:"stalled_pairs"`
	ServerCPU   float64   `json:"server_cpu_s"`
	ClientCPU   float64   `json:"client_cpu_s"`
	MessageSize int       `json:"message_bytes"`
}

// throughputCmd logs in 2*pairs sessions; in each pair one sends chat
// messages to the other's full JID, window messages in flight, for the
// duration. Latency is from just before the write to the receiver reading
// the body, both in this process.
func throughputCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var t target
	fs := flag.NewFlagSet("throughput", flag.ContinueOnError)
	fs.SetOutput(stderr)
	t.register(fs)
	pairs := fs.Int("pairs", 50, "sender/receiver pairs (accounts bench0..bench(2*pairs-1))")
	window := fs.Int("window", 8, "messages in flight per pair")
	dur := fs.Duration("duration", 10*time.Second, "how long senders send")
	maxMsgs := fs.Int("max", 2_000_000, "bound on messages per pair")
	if err := fs.Parse(args); err != nil {
		return errUsage
	}
	if err := t.check(); err != nil {
		return err
	}
	if *pairs < 1 || *window < 1 {
		return fmt.Errorf("krill-bench: need -pairs >= 1 and -window >= 1")
	}
	o, err := t.options(bench.StageAuth)
	if err != nil {
		return err
	}
	o.Timeout = 30 * time.Second
	out, err := openJSON(t.jsonPath)
	if err != nil {
		return err
	}
	defer out.close()

	conns := make([]net.Conn, 2**pairs)
	defer func() {
		for _, c := range conns {
			if c != nil {
				bench.Abort(c)
			}
		}
	}()
	for i := range conns {
		c, err := bench.Dial(ctx, o, i)
		if err != nil {
			return fmt.Errorf("krill-bench: session %d: %w", i, err)
		}
		conns[i] = c
	}
	// Let presence echoes and the like arrive before the clock starts.
	time.Sleep(time.Second)

	epoch := time.Now()
	deadline := epoch.Add(*dur)
	var (
		wg        sync.WaitGroup
		mu        sync.Mutex
		lat       []time.Duration
		delivered atomic.Int64
		stalled   atomic.Int64
	)
	// The size of a typical message, for the record.
	size := len("<message to='"+o.UserPrefix+"1@"+t.domain+"/"+bench.DefaultResource+"' type='chat' id='m1000'><body>1000:") + 10 + len("</body></message>")
	before, err := t.sample()
	if err != nil {
		return err
	}
	cpu0 := selfCPU()
	for p := range *pairs {
		snd, rcv := conns[2*p], conns[2*p+1]
		to := o.UserPrefix + strconv.Itoa(o.FirstUser+2*p+1) + "@" + t.domain + "/" + bench.DefaultResource
		tokens := make(chan struct{}, *window)
		for range *window {
			tokens <- struct{}{}
		}
		var mine []time.Duration
		// Receiver: parse bodies "seq:nanos" until the deadline passes
		// and nothing is in flight, or the read deadline ends it.
		_ = rcv.SetReadDeadline(deadline.Add(10 * time.Second))
		wg.Go(func() {
			var buf []byte
			chunk := make([]byte, 32<<10)
			for {
				n, err := rcv.Read(chunk)
				buf = append(buf, chunk[:n]...)
				for {
					i := bytes.Index(buf, []byte("<body>"))
					if i < 0 {
						break
					}
					j := bytes.Index(buf[i:], []byte("</body>"))
					if j < 0 {
						break
					}
					body := buf[i+6 : i+j]
					buf = buf[i+j+7:]
					if _, ts, ok := bytes.Cut(body, []byte(":")); ok {
						if ns, err := strconv.ParseInt(string(ts), 10, 64); err == nil {
							now := time.Since(epoch)
							if epoch.Add(time.Duration(ns)).Before(deadline) {
								mine = append(mine, now-time.Duration(ns))
								delivered.Add(1)
							}
						}
					}
					select {
					case tokens <- struct{}{}:
					default:
					}
				}
				if len(buf) > 1<<20 {
					buf = buf[len(buf)-4096:]
				}
				if err != nil || (time.Now().After(deadline) && len(tokens) == *window) {
					mu.Lock()
					lat = append(lat, mine...)
					mu.Unlock()
					return
				}
			}
		})
		wg.Go(func() {
			_ = snd.SetWriteDeadline(deadline.Add(10 * time.Second))
			for seq := 0; seq < *maxMsgs && time.Now().Before(deadline); seq++ {
				select {
				case <-tokens:
				case <-time.After(5 * time.Second):
					stalled.Add(1)
					return
				}
				msg := "<message to='" + to + "' type='chat' id='m" + strconv.Itoa(seq) + "'><body>" +
					strconv.Itoa(seq) + ":" + strconv.FormatInt(int64(time.Since(epoch)), 10) + "</body></message>"
				if _, err := io.WriteString(snd, msg); err != nil {
					stalled.Add(1)
					return
				}
			}
			// Wake the receiver so it can see the deadline has passed.
			_ = rcv.SetReadDeadline(time.Now().Add(3 * time.Second))
		})
	}
	wg.Wait()
	clientCPU := selfCPU() - cpu0
	after, err := t.sample()
	if err != nil {
		return err
	}
	slices.Sort(lat)
	rec := throughputRecord{
		Kind: "throughput", Server: t.server, Time: time.Now().UTC(), Pairs: *pairs, Window: *window,
		Seconds: dur.Seconds(), Delivered: int(delivered.Load()),
		PerSecond: float64(delivered.Load()) / dur.Seconds(),
		P50ms:     ms(percentile(lat, 50)), P99ms: ms(percentile(lat, 99)),
		Stalled: int(stalled.Load()), ServerCPU: (after.CPU - before.CPU).Seconds(), ClientCPU: clientCPU.Seconds(),
		MessageSize: size,
	}
	fmt.Fprintf(stdout, "%-9s throughput %d pairs x %d in flight, %.0fs: %.0f stanzas/s  p50 %.2f ms  p99 %.2f ms  stalled %d  cpu server %.1fs client %.1fs\n",
		rec.Server, rec.Pairs, rec.Window, rec.Seconds, rec.PerSecond, rec.P50ms, rec.P99ms, rec.Stalled, rec.ServerCPU, rec.ClientCPU)
	return out.write(rec)
}
