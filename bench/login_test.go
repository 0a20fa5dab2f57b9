package bench_test

import (
	"bufio"
	"context"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/mlkem"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"io"
	"math/big"
	"net"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/krill-xmpp/krill/bench"
)

// Knobs and environment of BenchmarkTLSLogin. Its clients run in a child
// process (the test binary re-executed with envLogin=1), so that the
// server process's CPU time is the server's alone.
const (
	envLogin    = "BENCH_LOGIN"
	envLoginPar = "BENCH_LOGIN_PAR" // logins in flight at once; default loginPar
	// envLoginResume=1 makes the login client resume sessions instead
	// (BenchmarkTLSResume).
	envLoginResume = "BENCH_LOGIN_RESUME"
	loginPar       = 8
	loginAccts     = 256 // accounts the logins cycle through
	loginTimeout   = 10 * time.Minute
)

// BenchmarkTLSLogin measures full logins against the in-process server,
// each on a fresh connection: STARTTLS, a TLS 1.3 handshake (key exchange
// chosen by $BENCH_CURVES), SCRAM-SHA-256 with the client's keys cached,
// resource binding and initial presence. The clients run in a child
// process, $BENCH_LOGIN_PAR logins at a time. Reported: logins/s, the
// latency of one login (dial to presence sent) at p50 and p99, and the CPU
// time per login of the server process and of the client process
// (getrusage deltas); the server's figure bounds what one core can do:
// 1e6 / server-cpu-us/login logins per second.
//
//	go test -run '^$' -bench BenchmarkTLSLogin -benchtime 3000x ./bench/
func BenchmarkTLSLogin(b *testing.B) {
	srv := startBenchServer(b, loginAccts)
	p, err := startLoginClient(b, srv)
	if err != nil {
		b.Fatal(err)
	}
	// Warm-up: first handshakes, first sessions, SQLite's page cache.
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
	if got := st.AuthSucceeded - before.AuthSucceeded; got != uint64(b.N) {
		b.Fatalf("server counted %d successful logins, want %d (%+v)", got, b.N, st)
	}
	perLogin := func(d time.Duration) float64 { return float64(d.Microseconds()) / float64(b.N) }
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(float64(b.N)/r.elapsed.Seconds(), "logins/s")
	b.ReportMetric(float64(r.p50.Microseconds()), "p50-us")
	b.ReportMetric(float64(r.p99.Microseconds()), "p99-us")
	b.ReportMetric(perLogin(serverCPU), "server-cpu-us/login")
	b.ReportMetric(perLogin(r.cpu), "client-cpu-us/login")
	b.Logf("%d logins, %d at a time, curves %s: %.0f logins/s, p50 %v, p99 %v; CPU per login: server %.0f us, client %.0f us",
		b.N, r.par, curvesLabel(), float64(b.N)/r.elapsed.Seconds(), r.p50, r.p99, perLogin(serverCPU), perLogin(r.cpu))
}

// BenchmarkTLSResume measures XEP-0198 resumptions as BenchmarkTLSLogin
// measures logins: each on a fresh connection, STARTTLS, a TLS 1.3
// handshake, SCRAM-SHA-256, then <resume/> of the session the previous
// connection held (that connection reset just before), instead of binding
// and sending presence. Each of $BENCH_LOGIN_PAR clients logs in once and
// enables stream management (in the warm-up), then resumes its session
// over and over. Reported as BenchmarkTLSLogin, per resumption.
//
//	go test -run '^$' -bench 'BenchmarkTLS(Login|Resume)' -benchtime 3000x ./bench/
func BenchmarkTLSResume(b *testing.B) {
	srv := startBenchServer(b, loginAccts)
	p, err := startLoginClient(b, srv, envLoginResume+"=1")
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
	if got := st.Modules["sm.resumed"] - before.Modules["sm.resumed"]; got != uint64(b.N) {
		b.Fatalf("server counted %d resumptions, want %d (%+v)", got, b.N, st)
	}
	per := func(d time.Duration) float64 { return float64(d.Microseconds()) / float64(b.N) }
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(float64(b.N)/r.elapsed.Seconds(), "resumes/s")
	b.ReportMetric(float64(r.p50.Microseconds()), "p50-us")
	b.ReportMetric(float64(r.p99.Microseconds()), "p99-us")
	b.ReportMetric(per(serverCPU), "server-cpu-us/resume")
	b.ReportMetric(per(r.cpu), "client-cpu-us/resume")
	b.Logf("%d resumptions, %d at a time, curves %s: %.0f/s, p50 %v, p99 %v; CPU per resumption: server %.0f us, client %.0f us",
		b.N, r.par, curvesLabel(), float64(b.N)/r.elapsed.Seconds(), r.p50, r.p99, per(serverCPU), per(r.cpu))
}

// processCPU is this process's user plus system CPU time so far.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// loginResult is one batch of logins as the client process reports it.
type loginResult struct {
	par      int
	elapsed  time.Duration
	p50, p99 time.Duration
	cpu      time.Duration // the client process's CPU time for the batch
}

// loginProc is a client process running batches of logins.
type loginProc struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	lines chan string // stdout, line by line; closed at EOF
	errb  *capped
}

func startLoginClient(b *testing.B, srv *benchServer, env ...string) (*loginProc, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), envLogin+"=1", envClientAddr+"="+srv.Addr().String(), envClientCA+"="+srv.caFile)
	cmd.Env = append(cmd.Env, env...)
	p := &loginProc{cmd: cmd, lines: make(chan string, 1), errb: &capped{max: 16 << 10}}
	cmd.Stderr = p.errb
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
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer close(p.lines)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			p.lines <- sc.Text()
		}
	}()
	b.Cleanup(func() {
		_ = p.stdin.Close()
		t := time.AfterFunc(stopTimeout, func() { _ = cmd.Process.Kill() })
		<-done
		_ = cmd.Wait()
		t.Stop()
	})
	return p, nil
}

// run asks for n logins and waits for the batch's result line.
func (p *loginProc) run(n int) (loginResult, error) {
	if _, err := fmt.Fprintf(p.stdin, "%d\n", n); err != nil {
		return loginResult{}, err
	}
	t := time.NewTimer(loginTimeout)
	defer t.Stop()
	select {
	case line, ok := <-p.lines:
		if !ok {
			return loginResult{}, fmt.Errorf("login client exited; stderr: %s", p.errb)
		}
		var r loginResult
		var got int
		var el, p50, p99, cpu int64
		if _, err := fmt.Sscanf(line, "done %d %d %d %d %d %d", &got, &r.par, &el, &p50, &p99, &cpu); err != nil || got != n {
			return loginResult{}, fmt.Errorf("login client said %q (%v); stderr: %s", line, err, p.errb)
		}
		r.elapsed, r.p50, r.p99, r.cpu = time.Duration(el), time.Duration(p50), time.Duration(p99), time.Duration(cpu)
		return r, nil
	case <-t.C:
		return loginResult{}, fmt.Errorf("no login result after %v; stderr: %s", loginTimeout, p.errb)
	}
}

// loginMain is the client process of BenchmarkTLSLogin: for each line
// "N" on stdin it runs N logins and prints
// "done N parallelism elapsed-ns p50-ns p99-ns cpu-ns".
func loginMain() int {
	fail := func(err error) int {
		fmt.Fprintf(os.Stderr, "login client %d: %v\n", os.Getpid(), err)
		return 1
	}
	tc, err := clientTLS(os.Getenv(envClientCA))
	if err != nil {
		return fail(err)
	}
	par := loginPar
	if s := os.Getenv(envLoginPar); s != "" {
		if par, err = strconv.Atoi(s); err != nil || par < 1 {
			return fail(fmt.Errorf("%s: want an integer >= 1, got %q", envLoginPar, s))
		}
	}
	o := bench.Options{Addr: os.Getenv(envClientAddr), Stage: bench.StageAuth, TLSConfig: tc}
	var seq atomic.Int64 // makes every login's resource unique
	var held []resumable // BenchmarkTLSResume's sessions, one per client
	if os.Getenv(envLoginResume) == "1" {
		held = make([]resumable, par)
	}
	var devs []*bench.Reconnector // BenchmarkReconnect's devices
	var devTLS []*tls.Config
	if m := os.Getenv(envReconnect); m != "" {
		devs, devTLS = reconnectDevices(m, os.Getenv(envReconnectTLS), par, tc)
	}
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		n, err := strconv.Atoi(strings.TrimSpace(sc.Text()))
		if err != nil || n < 1 {
			return fail(fmt.Errorf("bad batch size %q", sc.Text()))
		}
		cpu0 := processCPU()
		start := time.Now()
		var lat []time.Duration
		switch {
		case devs != nil:
			lat, err = runReconnects(o, n, devs, devTLS)
		case held != nil:
			lat, err = runResumes(o, n, held)
		default:
			lat, err = runLogins(o, n, par, &seq)
		}
		if err != nil {
			return fail(err)
		}
		elapsed := time.Since(start)
		cpu := processCPU() - cpu0
		slices.Sort(lat)
		fmt.Printf("done %d %d %d %d %d %d\n", n, par, elapsed, lat[len(lat)/2], lat[min(len(lat)-1, len(lat)*99/100)], cpu)
	}
	return 0
}

// resumable is a session one client of BenchmarkTLSResume resumes.
type resumable struct {
	c  net.Conn
	id string
}

// runResumes runs n resumptions, one client per element of held at a
// time, and returns each one's latency. A client without a session
// first logs in (account = its index) and enables resumption.
func runResumes(o bench.Options, n int, held []resumable) ([]time.Duration, error) {
	lat := make([]time.Duration, n)
	var (
		next     atomic.Int64
		wg       sync.WaitGroup
		errOnce  sync.Once
		firstErr error
	)
	for w := range held {
		wg.Go(func() {
			h := &held[w]
			fail := func(err error) { errOnce.Do(func() { firstErr = err }) }
			if h.c == nil {
				lo := o
				lo.Resource = "resume" + strconv.Itoa(w)
				c, err := bench.Dial(context.Background(), lo, w)
				if err != nil {
					fail(err)
					return
				}
				if h.id, err = bench.EnableResume(c); err != nil {
					bench.Abort(c)
					fail(err)
					return
				}
				h.c = c
			}
			for i := int(next.Add(1) - 1); i < n; i = int(next.Add(1) - 1) {
				bench.Abort(h.c) // the session parks (or is taken over)
				start := time.Now()
				c, err := bench.Resume(context.Background(), o, w, h.id)
				lat[i] = time.Since(start)
				if err != nil {
					h.c = nil
					fail(err)
					return
				}
				h.c = c
			}
		})
	}
	wg.Wait()
	return lat, firstErr
}

// runLogins runs n logins, par at a time, and returns each one's latency.
func runLogins(o bench.Options, n, par int, seq *atomic.Int64) ([]time.Duration, error) {
	lat := make([]time.Duration, n)
	var (
		next     atomic.Int64
		wg       sync.WaitGroup
		errOnce  sync.Once
		firstErr error
	)
	for range min(par, n) {
		wg.Go(func() {
			for i := int(next.Add(1) - 1); i < n; i = int(next.Add(1) - 1) {
				k := seq.Add(1)
				lo := o
				lo.Resource = "r" + strconv.FormatInt(k, 10)
				start := time.Now()
				c, err := bench.Dial(context.Background(), lo, int(k%loginAccts))
				lat[i] = time.Since(start)
				if err != nil {
					errOnce.Do(func() { firstErr = err })
					return
				}
				bench.Abort(c)
			}
		})
	}
	wg.Wait()
	return lat, firstErr
}

// BenchmarkHandshakeCrypto is the server's share of a TLS 1.3 handshake's
// public-key work alone: the key exchange for each group, and the
// CertificateVerify signature with the development certificate's ECDSA
// P-256 key. The client's costs are beside them for comparison.
func BenchmarkHandshakeCrypto(b *testing.B) {
	// A client's key shares, made once.
	dk, err := mlkem.GenerateKey768()
	if err != nil {
		b.Fatal(err)
	}
	ekBytes := dk.EncapsulationKey().Bytes()
	clientX, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	clientPub := clientX.PublicKey().Bytes()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	digest := sha256.Sum256([]byte("TLS 1.3, server CertificateVerify"))
	sig, err := ecdsa.SignASN1(rand.Reader, key, digest[:])
	if err != nil {
		b.Fatal(err)
	}
	x25519Server := func() error {
		sk, err := ecdh.X25519().GenerateKey(rand.Reader)
		if err != nil {
			return err
		}
		peer, err := ecdh.X25519().NewPublicKey(clientPub)
		if err != nil {
			return err
		}
		_ = sk.PublicKey().Bytes()
		_, err = sk.ECDH(peer)
		return err
	}
	tests := []struct {
		name string
		op   func() error
	}{
		{"server/x25519mlkem768", func() error {
			ek, err := mlkem.NewEncapsulationKey768(ekBytes)
			if err != nil {
				return err
			}
			_, _ = ek.Encapsulate()
			return x25519Server()
		}},
		{"server/x25519", x25519Server},
		{"server/ecdsa-p256-sign", func() error {
			_, err := ecdsa.SignASN1(rand.Reader, key, digest[:])
			return err
		}},
		{"client/mlkem768-keygen", func() error {
			_, err := mlkem.GenerateKey768()
			return err
		}},
		{"client/ecdsa-p256-verify", func() error {
			if !ecdsa.VerifyASN1(&key.PublicKey, digest[:], sig) {
				return fmt.Errorf("signature does not verify")
			}
			return nil
		}},
	}
	for _, tt := range tests {
		b.Run(tt.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if err := tt.op(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkTLSHandshakeOnly is a full crypto/tls handshake, client and
// server in this process over loopback TCP, no XMPP: the TLS cost without
// Krill's hand-over. ns/op is the wall time of one handshake, both sides
// and the TCP connection included; with both sides on one machine it is
// about the sum of their CPU time. net.Pipe cannot carry it: the server
// writes its session tickets before it reads the client's Finished, and
// an unbuffered pipe deadlocks there.
func BenchmarkTLSHandshakeOnly(b *testing.B) {
	cert, pool, err := selfSigned()
	if err != nil {
		b.Fatal(err)
	}
	serverConf := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	for _, tt := range []struct {
		name   string
		curves []tls.CurveID
	}{
		{"x25519mlkem768", nil},
		{"x25519", []tls.CurveID{tls.X25519}},
	} {
		b.Run(tt.name, func(b *testing.B) {
			clientConf := &tls.Config{ServerName: "localhost", RootCAs: pool, CurvePreferences: tt.curves}
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			defer ln.Close()
			errs := make(chan error, 1)
			b.ReportAllocs()
			for b.Loop() {
				go func() {
					c, err := ln.Accept()
					if err != nil {
						errs <- err
						return
					}
					_ = c.SetDeadline(time.Now().Add(stopTimeout))
					sc := tls.Server(c, serverConf)
					err = sc.Handshake()
					_ = c.Close()
					errs <- err
				}()
				c, err := net.DialTimeout("tcp", ln.Addr().String(), stopTimeout)
				if err != nil {
					b.Fatal(err)
				}
				_ = c.SetDeadline(time.Now().Add(stopTimeout))
				cc := tls.Client(c, clientConf)
				herr := cc.Handshake()
				if err := <-errs; err != nil || herr != nil {
					b.Fatalf("handshake: server %v, client %v", err, herr)
				}
				bench.Abort(cc)
			}
		})
	}
}

// selfSigned makes a certificate like the server's development one:
// ECDSA P-256, self-signed, for localhost.
func selfSigned() (tls.Certificate, *x509.CertPool, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "localhost"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:              []string{"localhost"},
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, pool, nil
}
