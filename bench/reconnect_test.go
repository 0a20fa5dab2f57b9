package bench_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/krill-xmpp/krill/bench"
)

// envReconnect makes the login client (loginMain) run reconnects of the
// named mode (bench.Reconnect*) instead of BenchmarkTLSLogin's logins.
const envReconnect = "BENCH_RECONNECT"

// BenchmarkReconnect measures what a mobile client's reconnect costs the
// server, each on a fresh connection with STARTTLS and a TLS 1.3
// handshake ($BENCH_CURVES), then:
//
//   - legacy: RFC 6120 SCRAM-SHA-256, stream restart, bind, stream
//     management enabled with resumption, carbons enabled;
//   - sasl2: SASL2 SCRAM-SHA-256 with Bind 2 enabling stream management
//     and carbons inline;
//   - fast: SASL2 HT-SHA-256-EXPR with a XEP-0484 token (obtained by
//     each device's first, uncounted, password login), <fast count/>, and
//     the same Bind 2;
//   - fast-nocount: the same without count (as xmpp.js logs in), which
//     spares the server the write of the replay counter.
//
// each of them twice: tls-full, a full TLS handshake each time, and
// tls-resumed, each device resuming its previous TLS session with the
// server's ticket (tls.session_tickets; its own session cache, as
// Android's SSLSocket and Go's ClientSessionCache keep one), which spares
// the server its certificate and signature but not the key exchange.
//
// Each of $BENCH_LOGIN_PAR devices (an account and a user-agent id) logs
// in over and over under one resource, which replaces its previous
// session (parked for resumption: the connection was reset). The clients
// run in a child process; server-cpu-us/login is the server process's CPU
// time (getrusage) per reconnect, which the goal compares: fast
// at most half of a full login.
//
//	go test -run '^$' -bench BenchmarkReconnect -benchtime 3000x ./bench/
func BenchmarkReconnect(b *testing.B) {
	for _, mode := range []string{bench.ReconnectLegacy, bench.ReconnectSASL2, bench.ReconnectFAST, bench.ReconnectFASTNoCount} {
		for _, tlsMode := range []string{tlsFull, tlsResumed} {
			b.Run(mode+"/"+tlsMode, func(b *testing.B) { benchReconnect(b, mode, tlsMode) })
		}
	}
}

// The TLS side of BenchmarkReconnect: each device (its own session cache)
// resumes its TLS session with the ticket of its previous connection
// (tls.session_tickets), or makes a full handshake each time.
const (
	tlsFull    = "tls-full"
	tlsResumed = "tls-resumed"
)

// envReconnectTLS is tlsFull or tlsResumed for loginMain's reconnects.
const envReconnectTLS = "BENCH_RECONNECT_TLS"

// benchReconnect is one of BenchmarkReconnect's modes.
func benchReconnect(b *testing.B, mode, tlsMode string) {
	srv := startBenchServer(b, loginAccts)
	p, err := startLoginClient(b, srv, envReconnect+"="+mode, envReconnectTLS+"="+tlsMode)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := p.run(2 * loginPar); err != nil {
		b.Fatal(err)
	}
	before := srv.Stats()
	cpu0 := processCPU()
	b.ResetTimer()
	r, err := p.run(b.N)
	b.StopTimer()
	if err != nil {
		b.Fatal(err)
	}
	serverCPU := processCPU() - cpu0
	st := srv.Stats()
	if got, want := st.TLSResumed-before.TLSResumed, map[bool]uint64{true: uint64(b.N)}[tlsMode == tlsResumed]; got != want {
		b.Fatalf("server counted %d resumed TLS handshakes, want %d", got, want)
	}
	if got := st.AuthSucceeded - before.AuthSucceeded; got != uint64(b.N) {
		b.Fatalf("server counted %d successful logins, want %d", got, b.N)
	}
	if got, want := st.AuthFAST-before.AuthFAST, map[bool]uint64{true: uint64(b.N)}[mode == bench.ReconnectFAST || mode == bench.ReconnectFASTNoCount]; got != want {
		b.Fatalf("server counted %d token logins, want %d", got, want)
	}
	per := func(d time.Duration) float64 { return float64(d.Microseconds()) / float64(b.N) }
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(float64(b.N)/r.elapsed.Seconds(), "logins/s")
	b.ReportMetric(float64(r.p50.Microseconds()), "p50-us")
	b.ReportMetric(float64(r.p99.Microseconds()), "p99-us")
	b.ReportMetric(per(serverCPU), "server-cpu-us/login")
	b.ReportMetric(per(r.cpu), "client-cpu-us/login")
	b.Logf("%s, %s: %d reconnects, %d at a time, curves %s: %.0f/s, p50 %v, p99 %v; CPU per reconnect: server %.0f us, client %.0f us",
		mode, tlsMode, b.N, r.par, curvesLabel(), float64(b.N)/r.elapsed.Seconds(), r.p50, r.p99, per(serverCPU), per(r.cpu))
}

// runReconnects runs n reconnects, one device per element of devs at a
// time, and returns each one's latency (dial to bound). A device without
// a token (fast) first logs in with its password, uncounted.
func runReconnects(o bench.Options, n int, devs []*bench.Reconnector, confs []*tls.Config) ([]time.Duration, error) {
	lat := make([]time.Duration, n)
	var (
		next     atomic.Int64
		wg       sync.WaitGroup
		errOnce  sync.Once
		firstErr error
	)
	o.Stage = bench.StageTLS
	reconnect := func(w int) error {
		o := o
		o.TLSConfig = confs[w]
		c, err := bench.Dial(context.Background(), o, w)
		if err != nil {
			return err
		}
		defer bench.Abort(c)
		if err := devs[w].Login(c, &o); err != nil {
			return fmt.Errorf("device %d: %w", w, err)
		}
		return nil
	}
	for w := range devs {
		wg.Go(func() {
			fail := func(err error) { errOnce.Do(func() { firstErr = err }) }
			if !devs[w].Ready() {
				if err := reconnect(w); err != nil {
					fail(err)
					return
				}
			}
			for i := int(next.Add(1) - 1); i < n; i = int(next.Add(1) - 1) {
				start := time.Now()
				err := reconnect(w)
				lat[i] = time.Since(start)
				if err != nil {
					fail(err)
					return
				}
			}
		})
	}
	wg.Wait()
	return lat, firstErr
}

// reconnectDevices are the devices of loginMain's reconnect mode: device
// w is account w with its own user-agent id, and its TLS configuration,
// tc with a session cache of its own under tlsResumed.
func reconnectDevices(mode, tlsMode string, par int, tc *tls.Config) ([]*bench.Reconnector, []*tls.Config) {
	devs := make([]*bench.Reconnector, par)
	confs := make([]*tls.Config, par)
	for w := range devs {
		confs[w] = tc
		if tlsMode == tlsResumed {
			confs[w] = tc.Clone()
			confs[w].ClientSessionCache = tls.NewLRUClientSessionCache(1)
		}
		devs[w] = &bench.Reconnector{
			Mode: mode, User: bench.DefaultUserPrefix + strconv.Itoa(w), Password: bench.DefaultPassword,
			UserAgent: fmt.Sprintf("00000000-0000-4000-8000-%012d", w), Resource: "phone",
		}
	}
	return devs, confs
}
