package bench_test

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/krill-xmpp/krill/bench"
)

// The environment of a client process: the test binary re-executed with
// envClient=1 runs clientMain instead of the tests. None has a KRILL_
// prefix, which the server's configuration loader would reject.
const (
	envClient      = "BENCH_CLIENT"
	envClientAddr  = "BENCH_CLIENT_ADDR"
	envClientN     = "BENCH_CLIENT_N"
	envClientStage = "BENCH_CLIENT_STAGE"
	envClientSrc   = "BENCH_CLIENT_SRC" // comma-separated source addresses
	envClientCA    = "BENCH_CLIENT_CA"  // the server's certificate file
	envClientFirst = "BENCH_CLIENT_FIRST"
	// envCurves chooses the clients' TLS key exchange groups for the tls
	// and auth stages and BenchmarkTLSLogin (see bench.ParseCurves);
	// unset means Go's default, an X25519MLKEM768 key share.
	envCurves = "BENCH_CURVES"
	// envRoster gives every account of the auth stage a roster of that
	// many contacts, subscribed both ways (issue: 50-contact rosters).
	envRoster = "BENCH_ROSTER"
	// envHeapProfile names a directory: BenchmarkIdle then writes heap
	// profiles of the server process before and after each stage there,
	// with every allocation sampled (which itself costs memory: figures
	// from a profiled run are not the headline figures).
	envHeapProfile = "BENCH_HEAPPROFILE"
	// envQueued gives every session of the parked stage that many
	// messages (about 200 bytes each, stamped) sent to it once it is
	// parked, which its stream management queue holds.
	envQueued = "BENCH_QUEUED"
	// envParkWaves makes the parked stage's sessions in that many waves
	// of connections, each reset before the next dials: N can then pass
	// the open-files limit (a parked session holds no descriptor).
	envParkWaves = "BENCH_PARK_WAVES"
)

// clientMaxLife bounds a client process that nobody stops: it normally
// ends when its parent closes (or, dying, drops) its stdin.
const clientMaxLife = 2 * time.Hour

func TestMain(m *testing.M) {
	if os.Getenv(envClient) == "1" {
		os.Exit(clientMain())
	}
	if os.Getenv(envLogin) == "1" {
		os.Exit(loginMain())
	}
	if os.Getenv(envHeapProfile) != "" {
		runtime.MemProfileRate = 1
	}
	os.Exit(m.Run())
}

// startedLine is the line a client process prints on stdout once it runs
// and waits for the go line, before its ready line.
const startedLine = "started"

// clientMain is a client process: it opens its connections, prints the
// ready line and holds them until stdin closes. It reports a failure on
// stderr and exits non-zero.
func clientMain() int {
	o, err := clientOptions()
	if err == nil {
		// Tell the parent this process is up, so that it takes its
		// baseline after the start rather than after a guessed pause.
		_, err = fmt.Fprintln(os.Stdout, startedLine)
	}
	if err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), clientMaxLife)
		err = bench.ServeClient(ctx, o, os.Stdin, os.Stdout)
		cancel()
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench client %d: %v\n", os.Getpid(), err)
		return 1
	}
	return 0
}

func clientOptions() (bench.Options, error) {
	n, err := strconv.Atoi(os.Getenv(envClientN))
	if err != nil {
		return bench.Options{}, fmt.Errorf("%s: %w", envClientN, err)
	}
	o := bench.Options{
		Addr:  os.Getenv(envClientAddr),
		N:     n,
		Stage: bench.Stage(os.Getenv(envClientStage)),
	}
	if s := os.Getenv(envClientFirst); s != "" {
		if o.FirstUser, err = strconv.Atoi(s); err != nil {
			return bench.Options{}, fmt.Errorf("%s: %w", envClientFirst, err)
		}
	}
	if ca := os.Getenv(envClientCA); ca != "" {
		if o.TLSConfig, err = clientTLS(ca); err != nil {
			return bench.Options{}, err
		}
	}
	if src := os.Getenv(envClientSrc); src != "" {
		for s := range strings.SplitSeq(src, ",") {
			a, err := netip.ParseAddr(s)
			if err != nil {
				return bench.Options{}, fmt.Errorf("%s: %w", envClientSrc, err)
			}
			o.LocalAddrs = append(o.LocalAddrs, a)
		}
	}
	return o, nil
}
