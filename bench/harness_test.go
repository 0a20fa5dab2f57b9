package bench_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/krill-xmpp/krill/bench"
	"github.com/krill-xmpp/krill/config"
	"github.com/krill-xmpp/krill/fast"
	"github.com/krill-xmpp/krill/modules"
	"github.com/krill-xmpp/krill/sasl"
	"github.com/krill-xmpp/krill/server"
	"github.com/krill-xmpp/krill/storage"
)

// stopTimeout bounds stopping a server or a client process.
const stopTimeout = 30 * time.Second

// startServer runs a Krill server on 127.0.0.1 with the modules of a
// default build and a pre-auth deadline that outlives any benchmark, and
// stops it when tb ends.
func startServer(tb testing.TB) *server.Server { return startBenchServer(tb, 0).Server }

// benchServer is a server under test with what its clients need.
type benchServer struct {
	*server.Server
	store *storage.SQL
	// caFile is the server's development certificate (PEM), which its
	// clients trust.
	caFile string
}

// startBenchServer runs a Krill server as startServer does, with accounts
// bench0 .. bench<accounts-1>, all with bench.DefaultPassword. The
// configuration is the TLS tests' one: STARTTLS required, no direct TLS
// listener, no idle pings, so that nothing but the clients moves during a
// measurement.
func startBenchServer(tb testing.TB, accounts int) *benchServer {
	tb.Helper()
	return startBenchServerFor(tb, accounts, bench.StageTCP)
}

// startBenchServerFor is startBenchServer for the clients of stage: a
// WebSocket stage gets the web listener, over TLS for wss and wss-auth,
// and ws-auth and auth-plain SASL without TLS (as behind a TLS proxy).
// The other stages get the configuration startBenchServer describes.
func startBenchServerFor(tb testing.TB, accounts int, stage bench.Stage) *benchServer {
	tb.Helper()
	cfg := config.Default()
	cfg.DataDir = tb.TempDir()
	cfg.C2S.Listen = "127.0.0.1:0"
	cfg.C2S.DirectTLSListen = ""
	cfg.S2S.Listen = ""
	// No admin listener: its fixed default port would collide with a
	// server running on the machine (a bench run) or another test.
	cfg.Admin.Listen = ""
	cfg.C2S.AllowPlaintext = false
	cfg.C2S.IdlePing = 0
	cfg.Preauth.Timeout = 30 * time.Minute
	// The clients come from a handful of addresses: no per-address or
	// total pre-auth cap may refuse them.
	cfg.Preauth.MaxPerIP = 0
	cfg.Preauth.MaxTotal = 0
	if bench.WebStage(stage) {
		cfg.Web.Listen = "127.0.0.1:0"
		cfg.Web.TLS = stage == bench.StageWSS || stage == bench.StageWSSAuth
		cfg.C2S.AllowPlaintext = stage == bench.StageWSAuth
	}
	if stage == bench.StageAuthPlain {
		cfg.C2S.AllowPlaintext = true
	}
	store, err := storage.OpenSQLite(filepath.Join(cfg.DataDir, "krill.db"))
	if err != nil {
		tb.Fatal(err)
	}
	if err := addAccounts(store, accounts); err != nil {
		tb.Fatal(err)
	}
	// The standard modules, as krill serve runs them: presence, rosters
	// and offline storage are modules now.
	// FAST (XEP-0484) as krill serve runs it (fast.enabled is on by
	// default), for BenchmarkReconnect's token logins.
	secret, err := fast.LoadSecret(cfg.FASTSecretFile())
	if err != nil {
		tb.Fatal(err)
	}
	tokens, err := fast.New(store, secret, fast.Options{TTL: cfg.FAST.TokenTTL, MaxTokens: cfg.FAST.MaxTokens})
	if err != nil {
		tb.Fatal(err)
	}
	r, err := modules.Registry(store, modules.Options{Config: cfg, FAST: tokens})
	if err != nil {
		tb.Fatal(err)
	}
	srv, err := server.New(cfg, nil, store, r)
	if err != nil {
		tb.Fatal(err)
	}
	// The runtime settings krill serve applies (the GC target): the bench
	// measures what an operator runs.
	server.TuneRuntime(cfg)
	if err := srv.Start(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), stopTimeout)
		defer cancel()
		if err := srv.Stop(ctx); err != nil {
			tb.Errorf("server Stop: %v", err)
		}
		_ = store.Close()
	})
	return &benchServer{Server: srv, store: store, caFile: filepath.Join(cfg.DataDir, "dev-cert.pem")}
}

// addrFor is the address the clients of stage dial: the web listener for
// a WebSocket stage, c2s otherwise.
func (s *benchServer) addrFor(stage bench.Stage) string {
	if bench.WebStage(stage) {
		return s.WebAddr().String()
	}
	return s.Addr().String()
}

// authStage reports whether stage logs in (its clients need accounts, and
// it is reached when their initial presence is in).
func authStage(stage bench.Stage) bool {
	return stage == bench.StageAuth || stage == bench.StageAuthPlain || stage == bench.StageWSAuth || stage == bench.StageWSSAuth
}

// addAccounts creates accounts bench0 .. bench<n-1> in one transaction,
// all with one credential (one PBKDF2 run per hash, not per account), and
// then reads every one back once, so that the database's page cache is
// as warm before a measurement as the logins will make it.
func addAccounts(store *storage.SQL, n int) error {
	if n == 0 {
		return nil
	}
	creds, err := sasl.NewCredentials(bench.DefaultPassword, sasl.DefaultIterations)
	if err != nil {
		return err
	}
	accts := make([]storage.NewAccount, n)
	for i := range accts {
		accts[i] = storage.NewAccount{Username: bench.DefaultUserPrefix + strconv.Itoa(i), Credentials: creds}
	}
	ctx, cancel := context.WithTimeout(context.Background(), readyTimeout)
	defer cancel()
	if err := store.AddAccounts(ctx, accts); err != nil {
		return err
	}
	for _, a := range accts {
		if _, err := store.Credentials(ctx, a.Username); err != nil {
			return err
		}
	}
	return nil
}

// clientTLS returns a client configuration that trusts the certificate in
// caFile and offers the key exchange groups named by $BENCH_CURVES.
func clientTLS(caFile string) (*tls.Config, error) {
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("no certificate in %s", caFile)
	}
	curves, err := bench.ParseCurves(os.Getenv(envCurves))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", envCurves, err)
	}
	return &tls.Config{ServerName: "localhost", RootCAs: pool, CurvePreferences: curves}, nil
}

// curvesLabel names the client's key exchange preference for logs.
func curvesLabel() string {
	if s := os.Getenv(envCurves); s != "" {
		return s
	}
	return "default (X25519MLKEM768)"
}

// waitFor polls cond every 10 ms until it holds or timeout passes, and
// reports whether it held. The bound keeps every loop finite.
func waitFor(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if cond() {
			return true
		}
		time.Sleep(10 * time.Millisecond)
	}
	return cond()
}

// clientProc is a client process: this test binary re-executed to run
// bench.ServeClient.
type clientProc struct {
	cmd     *exec.Cmd
	stdin   io.WriteCloser
	stderr  *capped
	started chan struct{} // closed at the started line or at EOF
	ready   chan string   // the line after it; closed without one at EOF
	done    chan error    // cmd.Wait's result, once stdout is drained
	exited  error         // valid once done has been received from
	waited  bool
}

// startClient starts a client process that will bring n connections to
// stage at addr from the source addresses src once told to begin,
// trusting the certificate in caFile (if any) and logging in (StageAuth)
// as accounts first onwards. It kills the process when tb ends.
func startClient(tb testing.TB, addr, caFile string, stage bench.Stage, n, first int, src []netip.Addr) (*clientProc, error) {
	tb.Helper()
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	srcs := make([]string, len(src))
	for i, a := range src {
		srcs[i] = a.String()
	}
	cmd := exec.Command(exe, "-test.run=^$")
	cmd.Env = append(os.Environ(),
		envClient+"=1",
		envClientAddr+"="+addr,
		envClientCA+"="+caFile,
		envClientFirst+"="+strconv.Itoa(first),
		envClientN+"="+strconv.Itoa(n),
		envClientStage+"="+string(stage),
		envClientSrc+"="+strings.Join(srcs, ","),
	)
	p := &clientProc{cmd: cmd, stderr: &capped{max: 16 << 10}, started: make(chan struct{}), ready: make(chan string, 1), done: make(chan error, 1)}
	cmd.Stderr = p.stderr
	if p.stdin, err = cmd.StdinPipe(); err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	tb.Cleanup(p.kill)
	go func() {
		// Wait must not run before stdout is drained; stdout ends when
		// the process does.
		// The started line, then the ready line; anything else
		// goes to waitReady, which reports it.
		sc := bufio.NewScanner(stdout)
		ok := sc.Scan()
		close(p.started)
		if ok && sc.Text() == startedLine {
			ok = sc.Scan()
		}
		if ok {
			p.ready <- sc.Text()
		}
		close(p.ready)
		_, _ = io.Copy(io.Discard, stdout)
		p.done <- cmd.Wait()
	}()
	return p, nil
}

// waitStarted waits up to timeout for the process to print its started
// line (or exit, which waitReady then reports).
func (p *clientProc) waitStarted(timeout time.Duration) error {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-p.started:
		return nil
	case <-t.C:
		return fmt.Errorf("client %d not started after %v; stderr: %s", p.cmd.Process.Pid, timeout, p.stderr)
	}
}

// begin tells the process to start dialling.
func (p *clientProc) begin() error {
	if _, err := io.WriteString(p.stdin, "go\n"); err != nil {
		return fmt.Errorf("client %d: %w", p.cmd.Process.Pid, err)
	}
	return nil
}

// waitReady waits up to timeout for the ready line and returns its count.
func (p *clientProc) waitReady(timeout time.Duration) (int, error) {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case line, ok := <-p.ready:
		if ok {
			n, err := bench.ParseReady(line)
			if err != nil {
				return 0, fmt.Errorf("client %d: %w; stderr: %s", p.cmd.Process.Pid, err, p.stderr)
			}
			return n, nil
		}
		err := p.wait(stopTimeout)
		return 0, fmt.Errorf("client %d exited before it was ready (%v); stderr: %s", p.cmd.Process.Pid, err, p.stderr)
	case <-t.C:
		return 0, fmt.Errorf("client %d not ready after %v; stderr: %s", p.cmd.Process.Pid, timeout, p.stderr)
	}
}

// wait waits up to timeout for the process to exit, killing it after.
func (p *clientProc) wait(timeout time.Duration) error {
	if p.waited {
		return p.exited
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case p.exited = <-p.done:
	case <-t.C:
		_ = p.cmd.Process.Kill()
		p.exited = errors.Join(fmt.Errorf("client %d did not exit within %v; killed", p.cmd.Process.Pid, timeout), <-p.done)
	}
	p.waited = true
	return p.exited
}

// stop asks the process to finish by closing its stdin, and returns how it
// exited; a failure includes its stderr.
func (p *clientProc) stop() error {
	_ = p.stdin.Close()
	if err := p.wait(stopTimeout); err != nil {
		return fmt.Errorf("client %d: %w; stderr: %s", p.cmd.Process.Pid, err, p.stderr)
	}
	return nil
}

// kill ends the process at once unless it has been waited for.
func (p *clientProc) kill() {
	if p.waited {
		return
	}
	_ = p.cmd.Process.Kill()
	_ = p.wait(stopTimeout)
}

// capped is an io.Writer that keeps the first max bytes written to it,
// safe for the goroutine exec copies stderr on.
type capped struct {
	mu  sync.Mutex
	max int
	b   []byte
}

func (c *capped) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if room := c.max - len(c.b); room > 0 {
		c.b = append(c.b, p[:min(room, len(p))]...)
	}
	return len(p), nil
}

func (c *capped) String() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return strings.TrimSpace(string(c.b))
}

// provisionRosters gives each of the n accounts k contacts among its
// neighbours (k/2 on each side, wrapping around), all with subscription
// both, so that every login exchanges presence with k contacts. Each batch
// of users is one transaction; every roster is read back once, as the
// accounts are, to warm the database's cache before the baseline.
func provisionRosters(store *storage.SQL, n, k int) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*readyTimeout)
	defer cancel()
	name := func(i int) string { return bench.DefaultUserPrefix + strconv.Itoa((i%n+n)%n) }
	const batch = 100
	for lo := 0; lo < n; lo += batch {
		err := store.UpdateRosters(ctx, func(tx storage.RosterTx) error {
			for u := lo; u < min(lo+batch, n); u++ {
				for d := 1; d <= k/2; d++ {
					for _, c := range []int{u + d, u - d} {
						item := storage.RosterItem{Contact: name(c) + "@" + bench.DefaultDomain, Subscription: storage.SubBoth}
						if err := tx.PutItem(name(u), item); err != nil {
							return err
						}
					}
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	for i := range n {
		if _, _, err := store.Roster(ctx, name(i)); err != nil {
			return err
		}
	}
	return nil
}
