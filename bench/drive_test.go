package bench_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/krill-xmpp/krill/bench"
)

// testTimeout bounds every wait in these tests.
const testTimeout = 30 * time.Second

// TestDrive brings connections to each stage against a real server and
// checks that the server holds them while Drive does, and not after.
func TestDrive(t *testing.T) {
	tests := []struct {
		name  string
		stage bench.Stage
		n     int
		src   []netip.Addr
	}{
		{name: "tcp", stage: bench.StageTCP, n: 40},
		{name: "stream", stage: bench.StageStream, n: 40},
		{name: "default stage is tcp", n: 3},
		{name: "stream from two source addresses", stage: bench.StageStream, n: 25,
			src: []netip.Addr{netip.MustParseAddr("127.0.0.2"), netip.MustParseAddr("127.0.0.3")}},
		{name: "one connection", stage: bench.StageStream, n: 1},
	}
	srv := startServer(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
			defer cancel()
			ready := make(chan int, 1)
			done := make(chan error, 1)
			var progress atomic.Int64
			go func() {
				done <- bench.Drive(ctx, bench.Options{
					Addr: srv.Addr().String(), N: tt.n, Stage: tt.stage, LocalAddrs: tt.src,
					Concurrency: 8, Ready: func(n int) { ready <- n },
					Progress: func() { progress.Add(1) },
				})
			}()
			select {
			case n := <-ready:
				if n != tt.n {
					t.Errorf("Ready(%d), want Ready(%d)", n, tt.n)
				}
				if p := progress.Load(); p != int64(tt.n) {
					t.Errorf("Progress called %d times before Ready, want %d", p, tt.n)
				}
			case err := <-done:
				t.Fatalf("Drive returned before ready: %v", err)
			}
			if !waitFor(testTimeout, func() bool { return srv.Stats().Preauth == tt.n }) {
				t.Errorf("server holds %d pre-auth connections, want %d", srv.Stats().Preauth, tt.n)
			}
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Drive after ready and cancel = %v, want nil", err)
			}
			if !waitFor(testTimeout, func() bool { return srv.Stats().Preauth == 0 }) {
				t.Errorf("server still holds %d connections after Drive returned", srv.Stats().Preauth)
			}
		})
	}
}

// fakeServer answers every connection with a fixed reply, chunk bytes at
// a time, once the client has sent something (or at once when the reply
// is for a client that sends nothing), then closes or holds it.
type fakeServer struct {
	reply []byte
	chunk int  // bytes per write; 0 means all at once
	close bool // close after replying, else hold until the test ends
	mute  bool // never reply, hold
	got   chan struct{}

	ln    net.Listener
	mu    sync.Mutex
	conns []net.Conn
	wg    sync.WaitGroup
}

// maxFakeAccepts bounds a fake server's accept loop.
const maxFakeAccepts = 256

func (f *fakeServer) start(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f.ln = ln
	f.got = make(chan struct{}, maxFakeAccepts)
	f.wg.Go(func() {
		for range maxFakeAccepts {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			f.mu.Lock()
			f.conns = append(f.conns, c)
			f.mu.Unlock()
			f.wg.Go(func() { f.serve(c) })
		}
	})
	t.Cleanup(func() {
		_ = ln.Close()
		f.mu.Lock()
		for _, c := range f.conns {
			_ = c.Close()
		}
		f.mu.Unlock()
		f.wg.Wait()
	})
	return ln.Addr().String()
}

func (f *fakeServer) serve(c net.Conn) {
	_ = c.SetDeadline(time.Now().Add(testTimeout))
	var buf [1024]byte
	if _, err := c.Read(buf[:]); err != nil {
		return
	}
	f.got <- struct{}{}
	if f.mute {
		return
	}
	chunk := f.chunk
	if chunk <= 0 {
		chunk = len(f.reply)
	}
	for rest := f.reply; len(rest) > 0; {
		n := min(chunk, len(rest))
		if _, err := c.Write(rest[:n]); err != nil {
			return
		}
		rest = rest[n:]
	}
	if f.close {
		_ = c.Close()
	}
}

func readFixture(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestDriveStream runs the stream stage against servers that answer well,
// badly or not at all.
func TestDriveStream(t *testing.T) {
	features := readFixture(t, "reply-features.xml")
	tests := []struct {
		name    string
		srv     *fakeServer
		timeout time.Duration
		want    error // nil: ready
	}{
		{name: "features at once", srv: &fakeServer{reply: features}},
		{name: "features a byte at a time", srv: &fakeServer{reply: features, chunk: 1}},
		{name: "features then close", srv: &fakeServer{reply: features, close: true}},
		{name: "stream error", srv: &fakeServer{reply: readFixture(t, "reply-stream-error.xml"), close: true}, want: bench.ErrStreamError},
		{name: "closed before features end", srv: &fakeServer{reply: readFixture(t, "reply-truncated.xml"), close: true}, want: bench.ErrNoFeatures},
		{name: "endless whitespace", srv: &fakeServer{reply: bytes.Repeat([]byte(" "), 100<<10)}, want: bench.ErrNoFeatures},
		{name: "silent server", srv: &fakeServer{mute: true}, timeout: 200 * time.Millisecond, want: os.ErrDeadlineExceeded},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			addr := tt.srv.start(t)
			ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
			defer cancel()
			const n = 5
			readyN := 0
			err := bench.Drive(ctx, bench.Options{
				Addr: addr, N: n, Stage: bench.StageStream, Timeout: tt.timeout,
				// Ready ends the run at once: holding is TestDrive's job.
				Ready: func(got int) { readyN = got; cancel() },
			})
			if tt.want == nil {
				if err != nil || readyN != n {
					t.Fatalf("Drive = %v with Ready(%d), want nil with Ready(%d)", err, readyN, n)
				}
				return
			}
			if !errors.Is(err, tt.want) {
				t.Fatalf("Drive = %v, want %v", err, tt.want)
			}
			if readyN != 0 {
				t.Errorf("Ready(%d) called on failure", readyN)
			}
		})
	}
}

// TestDriveOptions checks the errors Drive returns before it dials.
func TestDriveOptions(t *testing.T) {
	refused := func() string {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		_ = ln.Close()
		return addr
	}()
	tests := []struct {
		name string
		o    bench.Options
		want error
	}{
		{name: "no address", o: bench.Options{N: 1}, want: bench.ErrBadOptions},
		{name: "no connections", o: bench.Options{Addr: "127.0.0.1:1", N: 0}, want: bench.ErrBadOptions},
		{name: "unknown stage", o: bench.Options{Addr: "127.0.0.1:1", N: 1, Stage: "starttls-someday"}, want: bench.ErrUnknownStage},
		{name: "refused", o: bench.Options{Addr: refused, N: 3, Stage: bench.StageTCP}, want: syscall.ECONNREFUSED},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
			defer cancel()
			tt.o.Ready = func(int) { t.Error("Ready called"); cancel() }
			if err := bench.Drive(ctx, tt.o); !errors.Is(err, tt.want) {
				t.Fatalf("Drive = %v, want %v", err, tt.want)
			}
		})
	}
}

// TestDriveCancelBeforeReady checks that ending ctx while connections are
// still being brought to their stage returns ctx's error, not nil.
func TestDriveCancelBeforeReady(t *testing.T) {
	f := &fakeServer{mute: true}
	addr := f.start(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- bench.Drive(ctx, bench.Options{Addr: addr, N: 4, Stage: bench.StageStream, Timeout: testTimeout,
			Ready: func(int) { t.Error("Ready called") }})
	}()
	<-f.got // one header arrived: Drive is waiting for features
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Drive = %v, want context.Canceled", err)
	}
}

// TestServeClient runs the client line protocol over pipes.
func TestServeClient(t *testing.T) {
	srv := startServer(t)
	tests := []struct {
		name  string
		begin bool // send the go line
		want  error
	}{
		{name: "go, ready, end of stdin", begin: true},
		{name: "end of stdin before go", want: context.Canceled},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			inR, inW := io.Pipe()
			outR, outW := io.Pipe()
			ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
			defer cancel()
			done := make(chan error, 1)
			go func() {
				done <- bench.ServeClient(ctx, bench.Options{Addr: srv.Addr().String(), N: 7, Stage: bench.StageStream}, inR, outW)
				_ = outW.Close()
			}()
			if tt.begin {
				if _, err := io.WriteString(inW, "go\n"); err != nil {
					t.Fatal(err)
				}
				line := make([]byte, 64)
				k, err := outR.Read(line)
				if err != nil {
					t.Fatal(err)
				}
				if n, err := bench.ParseReady(string(line[:k])); err != nil || n != 7 {
					t.Fatalf("ready line %q: %d, %v; want 7", line[:k], n, err)
				}
				if got := srv.Stats().Preauth; got != 7 {
					t.Errorf("server holds %d connections while ready, want 7", got)
				}
			}
			_ = inW.Close()
			go func() { _, _ = io.Copy(io.Discard, outR) }()
			if err := <-done; !errors.Is(err, tt.want) {
				t.Fatalf("ServeClient = %v, want %v", err, tt.want)
			}
		})
	}
}

// TestClientProcess runs ServeClient in a child process, as BenchmarkIdle
// does, once to success and once to a reported failure.
func TestClientProcess(t *testing.T) {
	srv := startBenchServer(t, 30)
	t.Run("ready and stop", func(t *testing.T) {
		p, err := startClient(t, srv.Addr().String(), srv.caFile, bench.StageAuth, 30, 0, sourceAddrs(0, 1))
		if err != nil {
			t.Fatal(err)
		}
		if err := p.begin(); err != nil {
			t.Fatal(err)
		}
		n, err := p.waitReady(testTimeout)
		if err != nil || n != 30 {
			t.Fatalf("waitReady = %d, %v; want 30", n, err)
		}
		if !waitFor(testTimeout, func() bool { return srv.Stats().Sessions == 30 }) {
			t.Errorf("server holds %d sessions, want 30", srv.Stats().Sessions)
		}
		if err := p.stop(); err != nil {
			t.Fatal(err)
		}
		if !waitFor(testTimeout, func() bool { st := srv.Stats(); return st.Preauth == 0 && st.Sessions == 0 }) {
			t.Errorf("server still holds %+v after the client exited", srv.Stats())
		}
	})
	t.Run("failure is reported", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		_ = ln.Close()
		p, err := startClient(t, addr, "", bench.StageTCP, 3, 0, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := p.begin(); err != nil {
			t.Fatal(err)
		}
		_, err = p.waitReady(testTimeout)
		if err == nil || !strings.Contains(err.Error(), "connection refused") {
			t.Fatalf("waitReady = %v, want a failure naming the refused connection", err)
		}
	})
}

func TestParseReady(t *testing.T) {
	tests := []struct {
		name, line string
		want       int
		err        error
	}{
		{name: "ready", line: "ready 5000", want: 5000},
		{name: "newline", line: "ready 12\n", want: 12},
		{name: "zero", line: "ready 0", want: 0},
		{name: "other line", line: "panic: oops", err: bench.ErrNotReady},
		{name: "no count", line: "ready ", err: bench.ErrNotReady},
		{name: "negative", line: "ready -3", err: bench.ErrNotReady},
		{name: "not a number", line: "ready ten", err: bench.ErrNotReady},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := bench.ParseReady(tt.line)
			if !errors.Is(err, tt.err) || got != tt.want {
				t.Fatalf("ParseReady(%q) = %d, %v; want %d, %v", tt.line, got, err, tt.want, tt.err)
			}
		})
	}
}

// TestDriveTLS brings connections to the TLS and authenticated stages,
// with Go's default key share and with X25519 alone, and checks what the
// server holds.
func TestDriveTLS(t *testing.T) {
	srv := startBenchServer(t, 20)
	base, err := clientTLS(srv.caFile)
	if err != nil {
		t.Fatal(err)
	}
	x25519 := base.Clone()
	x25519.CurvePreferences = []tls.CurveID{tls.X25519}
	tests := []struct {
		name     string
		stage    bench.Stage
		tc       *tls.Config
		password string
		want     error
	}{
		{name: "tls", stage: bench.StageTLS, tc: base},
		{name: "tls x25519", stage: bench.StageTLS, tc: x25519},
		{name: "auth", stage: bench.StageAuth, tc: base},
		{name: "auth x25519", stage: bench.StageAuth, tc: x25519},
		{name: "auth wrong password", stage: bench.StageAuth, tc: base, password: "wrong", want: bench.ErrRefused},
		{name: "tls without a configuration", stage: bench.StageTLS, want: bench.ErrBadOptions},
	}
	const n = 10
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
			defer cancel()
			before := srv.Stats()
			held := make(chan bool, 1)
			err := bench.Drive(ctx, bench.Options{
				Addr: srv.Addr().String(), N: n, Stage: tt.stage, TLSConfig: tt.tc, Password: tt.password,
				FirstUser: 5, Concurrency: 4,
				Ready: func(int) {
					ok := waitFor(testTimeout, func() bool {
						st := srv.Stats()
						if tt.stage == bench.StageAuth {
							return st.Sessions == n && st.StanzasIn-before.StanzasIn == n
						}
						return st.Preauth == n && st.TLSHandshakes-before.TLSHandshakes == n
					})
					held <- ok
					cancel()
				},
			})
			if tt.want != nil {
				if !errors.Is(err, tt.want) {
					t.Fatalf("Drive = %v, want %v", err, tt.want)
				}
				return
			}
			if err != nil {
				t.Fatalf("Drive = %v", err)
			}
			if !<-held {
				t.Errorf("server holds %+v, want %d connections at stage %s", srv.Stats(), n, tt.stage)
			}
			if !waitFor(testTimeout, func() bool { st := srv.Stats(); return st.Preauth == 0 && st.Sessions == 0 }) {
				t.Errorf("server still holds %+v after Drive returned", srv.Stats())
			}
		})
	}
}
