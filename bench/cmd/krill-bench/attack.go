package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/krill-xmpp/krill/bench"
)

// attackSample is the server's state at one moment of an attack run.
type attackSample struct {
	Kind        string  `json:"kind"` // "attack-sample"
	Server      string  `json:"server"`
	T           float64 `json:"t_s"` // seconds since the attack began
	RSS         uint64  `json:"rss"`
	PSS         uint64  `json:"pss"`
	HostileOpen int     `json:"hostile_open"`
	Logins      int     `json:"legit_logins"`
}

// attackRecord summarises an attack run.
type attackRecord struct {
	Kind            string    `json:"kind"` // "attack"
	Server          string    `json:"server"`
	Time            time.Time `json:"time"`
	Hostile         int       `json:"hostile"`
	HostileProfile  string    `json:"hostile_profile,omitempty"` // how they fail: sasl, sasl2, fast
	HostileOpened   int       `json:"hostile_opened"`
	Seconds         float64   `json:"seconds"`
	LastClosedS     float64   `json:"last_hostile_closed_s"` // -1: some still open at the end
	OpenAtEnd       int       `json:"hostile_open_at_end"`
	Logins          int       `json:"legit_logins"`
	LoginsFailed    int       `json:"legit_failed"`
	P50ms           float64   `json:"legit_p50_ms"`
	P99ms           float64   `json:"legit_p99_ms"`
	BaselineP50ms   float64   `json:"baseline_p50_ms"`
	RSSBefore       uint64    `json:"rss_before"`
	RSSPeak         uint64    `json:"rss_peak"`
	RSSEnd          uint64    `json:"rss_end"`
	FirstLoginError string    `json:"first_login_error,omitempty"`
}

// Hostile profiles: how a hostile connection fails its one login.
const (
	profileSASL  = "sasl"  // RFC 6120 SASL SCRAM-SHA-256, wrong password
	profileSASL2 = "sasl2" // XEP-0388 SASL2 SCRAM-SHA-256, wrong password
	profileFAST  = "fast"  // SASL2 HT-SHA-256-EXPR with a made-up XEP-0484 token
)

// hostileUA is the user-agent id of the hostile FAST logins: a token login
// needs one, and the token is wrong whatever it is.
const hostileUA = "0badc0de-0000-4000-8000-000000000000"

// failLogin makes one login of profile fail on c as user, as a hostile
// client does; it returns bench.ErrRefused (wrapped) when the server
// refused it, which is the expected outcome.
func failLogin(c net.Conn, profile, user, password string) error {
	switch profile {
	case profileSASL2:
		return bench.Authenticate2(c, user, "wrong "+password)
	case profileFAST:
		return bench.AuthenticateToken(c, user, "not-a-token", hostileUA)
	}
	return bench.Authenticate(c, user, "wrong "+password)
}

// attackCmd opens K hostile connections that complete TLS, fail a login
// (RFC 6120 SASL, SASL2 or a FAST token: -hostile-profile) and then keep
// the connection alive with whitespace pings, while legitimate clients log
// in; it samples the server's memory every second and records when each
// hostile connection was closed by the server.
func attackCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var t target
	fs := flag.NewFlagSet("attack", flag.ContinueOnError)
	fs.SetOutput(stderr)
	t.register(fs)
	hostile := fs.Int("hostile", 1000, "hostile connections")
	dur := fs.Duration("duration", 90*time.Second, "length of the run from the first hostile connection")
	ping := fs.Duration("ping", 5*time.Second, "whitespace ping interval of the hostile connections")
	legitPar := fs.Int("legit", 2, "legitimate logins in flight at once")
	accounts := fs.Int("accounts", 1000, "accounts the legitimate logins cycle through (the hostile ones fail as account 0)")
	profile := fs.String("hostile-profile", profileSASL, "how the hostile connections fail their login: sasl (RFC 6120, wrong password), sasl2 (XEP-0388, wrong password) or fast (SASL2 with a wrong XEP-0484 token)")
	if err := fs.Parse(args); err != nil {
		return errUsage
	}
	if err := t.check(); err != nil {
		return err
	}
	if *hostile < 1 || *legitPar < 1 || *accounts < *legitPar+1 {
		return fmt.Errorf("krill-bench: need -hostile >= 1, -legit >= 1, -accounts > -legit")
	}
	switch *profile {
	case profileSASL, profileSASL2, profileFAST:
	default:
		fmt.Fprintf(stderr, "krill-bench: -hostile-profile %q: want sasl, sasl2 or fast\n", *profile)
		return errUsage
	}
	legit, err := t.options(bench.StageAuth)
	if err != nil {
		return err
	}
	legit.Timeout = 30 * time.Second
	bad, _ := t.options(bench.StageTLS)
	bad.Timeout = 30 * time.Second
	out, err := openJSON(t.jsonPath)
	if err != nil {
		return err
	}
	defer out.close()

	// Baseline latency of a legitimate login on the quiet server.
	base, err := runLogins(ctx, legit, 50, *accounts, 1, time.Minute, nil)
	if err != nil {
		return err
	}
	slices.Sort(base.lat)
	before, err := t.sample()
	if err != nil {
		return err
	}

	ctx, cancel := context.WithTimeout(ctx, *dur)
	defer cancel()
	epoch := time.Now()
	var (
		open       atomic.Int64
		opened     atomic.Int64
		lastClosed atomic.Int64 // nanoseconds since epoch
		hw         sync.WaitGroup
		hconns     sync.Map
	)
	// Hostile connections, 32 being opened at a time.
	var next atomic.Int64
	for range 32 {
		hw.Go(func() {
			for i := next.Add(1) - 1; i < int64(*hostile) && ctx.Err() == nil; i = next.Add(1) - 1 {
				c, err := bench.Dial(ctx, bad, 0)
				if err != nil {
					continue
				}
				_ = c.SetDeadline(time.Now().Add(30 * time.Second))
				if err := failLogin(c, *profile, legit.UserPrefix+"0", legit.Password); !errors.Is(err, bench.ErrRefused) {
					bench.Abort(c)
					continue
				}
				_ = c.SetDeadline(time.Time{})
				opened.Add(1)
				open.Add(1)
				hconns.Store(i, c)
				hw.Go(func() { hold(ctx, c, *ping, epoch, &open, &lastClosed) })
			}
		})
	}
	// Legitimate logins for the whole run, accounts 1.. (0 is the one
	// the hostile connections fail against).
	lo := legit
	lo.FirstUser++
	var lr loginResult
	var lw sync.WaitGroup
	var loginCount atomic.Int64
	lw.Go(func() {
		lr, _ = runLoginsCounted(ctx, lo, *accounts-1, *legitPar, &loginCount)
	})
	// Samples every second.
	var peak uint64
	last := before
	tick := time.NewTicker(time.Second)
	for done := false; !done; {
		select {
		case <-tick.C:
			s, err := t.sample()
			if err != nil {
				continue
			}
			last = s
			peak = max(peak, s.RSS)
			_ = out.write(attackSample{Kind: "attack-sample", Server: t.server, T: time.Since(epoch).Seconds(),
				RSS: s.RSS, PSS: s.PSS, HostileOpen: int(open.Load()), Logins: int(loginCount.Load())})
			fmt.Fprintf(stderr, "\r%-9s t=%5.1fs rss %7.1f MB  hostile open %6d  legit logins %6d", t.server,
				time.Since(epoch).Seconds(), float64(s.RSS)/(1<<20), open.Load(), loginCount.Load())
		case <-ctx.Done():
			done = true
		}
	}
	tick.Stop()
	fmt.Fprintln(stderr)
	openAtEnd := int(open.Load())
	hconns.Range(func(_, v any) bool { bench.Abort(v.(net.Conn)); return true })
	hw.Wait()
	lw.Wait()
	slices.Sort(lr.lat)
	rec := attackRecord{
		Kind: "attack", Server: t.server, Time: time.Now().UTC(), Hostile: *hostile, HostileProfile: *profile, HostileOpened: int(opened.Load()),
		Seconds: dur.Seconds(), OpenAtEnd: openAtEnd, LastClosedS: -1,
		Logins: len(lr.lat), LoginsFailed: lr.failed, P50ms: ms(percentile(lr.lat, 50)), P99ms: ms(percentile(lr.lat, 99)),
		BaselineP50ms: ms(percentile(base.lat, 50)),
		RSSBefore:     before.RSS, RSSPeak: peak, RSSEnd: last.RSS,
	}
	if openAtEnd == 0 && rec.HostileOpened > 0 {
		rec.LastClosedS = time.Duration(lastClosed.Load()).Seconds()
	}
	if lr.firstErr != nil {
		rec.FirstLoginError = lr.firstErr.Error()
	}
	fmt.Fprintf(stdout, "%-9s attack %d hostile %s (%d opened), %.0fs: last closed at %.1fs (-1: %d still open)  legit %d logins (%d failed) p50 %.1f ms p99 %.1f ms (quiet p50 %.1f ms)  rss %.1f -> peak %.1f MB\n",
		rec.Server, rec.Hostile, rec.HostileProfile, rec.HostileOpened, rec.Seconds, rec.LastClosedS, rec.OpenAtEnd, rec.Logins, rec.LoginsFailed,
		rec.P50ms, rec.P99ms, rec.BaselineP50ms, float64(rec.RSSBefore)/(1<<20), float64(rec.RSSPeak)/(1<<20))
	return out.write(rec)
}

// hold keeps a hostile connection alive with a whitespace ping every
// interval until the server closes it or ctx ends, and notes when the
// server closed it.
func hold(ctx context.Context, c net.Conn, interval time.Duration, epoch time.Time, open, lastClosed *atomic.Int64) {
	closed := make(chan struct{})
	go func() {
		// Reads until the server closes; bounded by the connection's
		// life, which ctx ends (the caller aborts every connection).
		buf := make([]byte, 512)
		for {
			if _, err := c.Read(buf); err != nil {
				close(closed)
				return
			}
		}
	}()
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		select {
		case <-tick.C:
			_ = c.SetWriteDeadline(time.Now().Add(5 * time.Second))
			_, _ = io.WriteString(c, " ")
		case <-closed:
			if ctx.Err() == nil {
				open.Add(-1)
				d := int64(time.Since(epoch))
				for v := lastClosed.Load(); d > v && !lastClosed.CompareAndSwap(v, d); v = lastClosed.Load() {
				}
			}
			return
		case <-ctx.Done():
			return
		}
	}
}

// runLoginsCounted runs logins par at a time, cycling through accounts,
// until ctx ends, counting them in count.
func runLoginsCounted(ctx context.Context, o bench.Options, accounts, par int, count *atomic.Int64) (loginResult, error) {
	var (
		mu   sync.Mutex
		res  loginResult
		wg   sync.WaitGroup
		next atomic.Int64
	)
	const bound = 10_000_000 // logins; ctx ends the run long before
	for range par {
		wg.Go(func() {
			for i := next.Add(1) - 1; i < bound && !ended(ctx); i = next.Add(1) - 1 {
				t0 := time.Now()
				c, err := bench.Dial(ctx, o, int(i)%accounts)
				d := time.Since(t0)
				if ended(ctx) {
					if c != nil {
						bench.Abort(c)
					}
					return
				}
				mu.Lock()
				if err != nil {
					res.failed++
					if res.firstErr == nil {
						res.firstErr = err
					}
				} else {
					res.lat = append(res.lat, d)
					count.Add(1)
				}
				mu.Unlock()
				if c != nil {
					bench.Abort(c)
				}
			}
		})
	}
	wg.Wait()
	return res, nil
}

// ended reports whether ctx is done or its deadline has passed. A dial
// fails with "i/o timeout" as soon as the deadline passes, while ctx.Err()
// is set only when ctx's own timer has run, which a loaded machine can
// delay by milliseconds: a loop that checked ctx.Err() alone counted
// hundreds of immediate "failures" in that gap.
func ended(ctx context.Context) bool {
	if ctx.Err() != nil {
		return true
	}
	dl, ok := ctx.Deadline()
	return ok && !time.Now().Before(dl)
}
