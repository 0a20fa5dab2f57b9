package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/krill-xmpp/krill/bench"
)

// loginRecord is one login-rate run: full logins on fresh connections.
type loginRecord struct {
	Kind      string    `json:"kind"` // "login-rate"
	Server    string    `json:"server"`
	Time      time.Time `json:"time"`
	Curves    string    `json:"curves,omitempty"`
	Logins    int       `json:"logins"`
	Failed    int       `json:"failed"`
	Parallel  int       `json:"parallel"`
	Seconds   float64   `json:"seconds"`
	PerSecond float64   `json:"logins_per_s"`
	P50ms     float64   `json:"p50_ms"`
	P99ms     float64   `json:"p99_ms"`
	// CPU per login, microseconds: the server's processes and this one.
	ServerCPUus float64 `json:"server_cpu_us_per_login"`
	ClientCPUus float64 `json:"client_cpu_us_per_login"`
	FirstError  string  `json:"first_error,omitempty"`
}

// loginRateCmd runs full TLS logins (dial, STARTTLS, SCRAM, bind,
// presence, reset) on fresh connections, -parallel at a time.
func loginRateCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var t target
	fs := flag.NewFlagSet("login-rate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	t.register(fs)
	logins := fs.Int("logins", 3000, "logins to run")
	accounts := fs.Int("accounts", 1000, "accounts the logins cycle through (bench0..)")
	par := fs.Int("parallel", 8, "logins in flight at once")
	limit := fs.Duration("duration", 2*time.Minute, "bound on the run")
	if err := fs.Parse(args); err != nil {
		return errUsage
	}
	if err := t.check(); err != nil {
		return err
	}
	if *logins < 1 || *accounts < *par || *par < 1 {
		return fmt.Errorf("krill-bench: need -logins >= 1 and -accounts >= -parallel >= 1")
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
	// Warm-up: first handshakes and the client's PBKDF2 cache.
	if _, err := runLogins(ctx, o, 2**par, *accounts, *par, time.Minute, nil); err != nil {
		return err
	}
	before, err := t.sample()
	if err != nil {
		return err
	}
	cpu0 := selfCPU()
	start := time.Now()
	ctx2, cancel := context.WithTimeout(ctx, *limit)
	defer cancel()
	lr, err := runLogins(ctx2, o, *logins, *accounts, *par, *limit, stderr)
	if err != nil && len(lr.lat) == 0 {
		return err
	}
	elapsed := time.Since(start)
	clientCPU := selfCPU() - cpu0
	after, serr := t.sample()
	if serr != nil {
		return serr
	}
	slices.Sort(lr.lat)
	n := len(lr.lat)
	rec := loginRecord{
		Kind: "login-rate", Server: t.server, Time: time.Now().UTC(), Curves: t.curves,
		Logins: n, Failed: lr.failed, Parallel: *par, Seconds: elapsed.Seconds(),
		PerSecond: float64(n) / elapsed.Seconds(),
		P50ms:     ms(percentile(lr.lat, 50)), P99ms: ms(percentile(lr.lat, 99)),
	}
	if n > 0 {
		rec.ServerCPUus = float64((after.CPU - before.CPU).Microseconds()) / float64(n)
		rec.ClientCPUus = float64(clientCPU.Microseconds()) / float64(n)
	}
	if lr.firstErr != nil {
		rec.FirstError = lr.firstErr.Error()
	}
	fmt.Fprintf(stdout, "%-9s login-rate %d logins (%d failed) in %.1fs: %.0f/s  p50 %.1f ms  p99 %.1f ms  cpu/login server %.0f us client %.0f us\n",
		rec.Server, rec.Logins, rec.Failed, rec.Seconds, rec.PerSecond, rec.P50ms, rec.P99ms, rec.ServerCPUus, rec.ClientCPUus)
	return out.write(rec)
}

type loginResult struct {
	lat      []time.Duration
	failed   int
	firstErr error
}

// runLogins runs total logins, par at a time, cycling through accounts,
// until done or ctx ends; a progress bar goes to w when it is not nil.
func runLogins(ctx context.Context, o bench.Options, total, accounts, par int, limit time.Duration, w io.Writer) (loginResult, error) {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	var (
		next atomic.Int64
		mu   sync.Mutex
		res  loginResult
		wg   sync.WaitGroup
		done atomic.Int64
	)
	start := time.Now()
	for range par {
		wg.Go(func() {
			for i := int(next.Add(1) - 1); i < total && ctx.Err() == nil; i = int(next.Add(1) - 1) {
				t0 := time.Now()
				c, err := bench.Dial(ctx, o, i%accounts)
				d := time.Since(t0)
				mu.Lock()
				if err != nil {
					res.failed++
					if res.firstErr == nil {
						res.firstErr = err
					}
				} else {
					res.lat = append(res.lat, d)
				}
				mu.Unlock()
				if c != nil {
					bench.Abort(c)
				}
				done.Add(1)
			}
		})
	}
	if w != nil {
		stop := make(chan struct{})
		var pw sync.WaitGroup
		pw.Go(func() {
			tick := time.NewTicker(200 * time.Millisecond)
			defer tick.Stop()
			for {
				select {
				case <-tick.C:
					progress(w, "logins", int(done.Load()), total, start)
				case <-stop:
					progress(w, "logins", int(done.Load()), total, start)
					fmt.Fprintln(w)
					return
				}
			}
		})
		wg.Wait()
		close(stop)
		pw.Wait()
	} else {
		wg.Wait()
	}
	if len(res.lat) == 0 && res.firstErr != nil {
		return res, fmt.Errorf("krill-bench: every login failed: %w", res.firstErr)
	}
	return res, nil
}
