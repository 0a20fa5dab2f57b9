package main

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestMain lets the test binary act as the client processes that idle
// and muc start (it re-executes itself with "client" or "muc-client").
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && (os.Args[1] == "client" || os.Args[1] == "muc-client") {
		if err := run(context.Background(), os.Args[1:], os.Stdin, os.Stdout, os.Stderr); err != nil {
			os.Stderr.WriteString(err.Error() + "\n")
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func TestCheckLoopback(t *testing.T) {
	tests := []struct {
		name string
		addr string
		ok   bool
	}{
		{"ipv4 loopback", "127.0.0.1:5222", true},
		{"other loopback", "127.3.4.5:5222", true},
		{"ipv6 loopback", "[::1]:5222", true},
		{"localhost", "localhost:5222", true},
		{"private", "10.0.0.1:5222", false},
		{"public", "8.8.8.8:5222", false},
		{"name", "example.com:5222", false},
		{"no port", "127.0.0.1", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := checkLoopback(tt.addr)
			if (err == nil) != tt.ok {
				t.Fatalf("checkLoopback(%q) = %v, want ok=%v", tt.addr, err, tt.ok)
			}
		})
	}
}

func TestParseSources(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    []string
		wantErr error
	}{
		{"empty", "", nil, nil},
		{"range", "127.0.0.2-127.0.0.4", []string{"127.0.0.2", "127.0.0.3", "127.0.0.4"}, nil},
		{"list", "127.0.0.2,127.0.0.9", []string{"127.0.0.2", "127.0.0.9"}, nil},
		{"single", "127.0.0.5", []string{"127.0.0.5"}, nil},
		{"not loopback", "192.168.1.1", nil, errNotLoopback},
		{"range leaving loopback", "127.255.255.255-128.0.0.1", nil, errNotLoopback},
		{"garbage", "nope", nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseSources(tt.in)
			if tt.name == "garbage" {
				if err == nil {
					t.Fatal("no error for garbage")
				}
				return
			}
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			var s []string
			for _, a := range got {
				s = append(s, a.String())
			}
			if err == nil && !slices.Equal(s, tt.want) {
				t.Fatalf("got %v, want %v", s, tt.want)
			}
		})
	}
}

func TestUserPattern(t *testing.T) {
	tests := []struct {
		in     string
		prefix string
		ok     bool
	}{
		{"bench%d", "bench", true},
		{"u%d", "u", true},
		{"%d", "", false},
		{"bench", "", false},
		{"bench%d@x", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			p, _, err := (&target{users: tt.in}).userPattern()
			if (err == nil) != tt.ok || p != tt.prefix {
				t.Fatalf("userPattern(%q) = %q, %v", tt.in, p, err)
			}
		})
	}
}

func TestStatFields(t *testing.T) {
	stat := []byte("123 (krill serve) S 1 123 123 0 -1 4194560 100 0 0 0 250 40 0 0 20 0 9 0 100 0 0")
	f := statFields(stat)
	if len(f) < 13 || f[1] != "1" || f[11] != "250" || f[12] != "40" {
		t.Fatalf("statFields = %q", f)
	}
}

func TestMedianSpread(t *testing.T) {
	tests := []struct {
		name   string
		in     []float64
		median float64
		spread string
	}{
		{"one", []float64{5}, 5, "-"},
		{"two", []float64{4, 6}, 5, "4 – 6"},
		{"three", []float64{9, 1, 5}, 5, "1 – 9"},
		{"thousands", []float64{1234, 15678}, 8456, "1,234 – 15,678"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := median(tt.in); got != tt.median {
				t.Errorf("median = %v, want %v", got, tt.median)
			}
			if got := spread(tt.in); got != tt.spread {
				t.Errorf("spread = %q, want %q", got, tt.spread)
			}
		})
	}
}

// TestScramKeys checks the keys written for Prosody against the RFC 7677
// section 3 example: the client proof and server signature of that
// exchange must verify with them.
func TestScramKeys(t *testing.T) {
	salt, _ := base64.StdEncoding.DecodeString("W22ZaJ0SNY7soEsUEjb6gQ==")
	stored, server, err := scramKeys("pencil", salt, 4096)
	if err != nil {
		t.Fatal(err)
	}
	nonce := "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
	authMessage := "n=user,r=rOprNGfwEbeRWgbNEkqO," +
		"r=" + nonce + ",s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096," +
		"c=biws,r=" + nonce
	mac := func(key []byte) []byte {
		h := hmac.New(sha256.New, key)
		h.Write([]byte(authMessage))
		return h.Sum(nil)
	}
	proof, _ := base64.StdEncoding.DecodeString("dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
	sig := mac(stored)
	clientKey := make([]byte, len(proof))
	for i := range proof {
		clientKey[i] = proof[i] ^ sig[i]
	}
	if h := sha256.Sum256(clientKey); !bytes.Equal(h[:], stored) {
		t.Errorf("RFC 7677 proof does not verify against StoredKey %x", stored)
	}
	wantV, _ := base64.StdEncoding.DecodeString("6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")
	if got := mac(server); !bytes.Equal(got, wantV) {
		t.Errorf("server signature = %x, want %x", got, wantV)
	}
}

func TestProvisionProsody(t *testing.T) {
	dir := t.TempDir()
	var stderr bytes.Buffer
	err := run(context.Background(), []string{"provision-prosody", "-dir", dir, "-n", "3", "-users", "u%d", "-iterations", "16"},
		nil, &stderr, &stderr)
	if err != nil {
		t.Fatalf("%v: %s", err, stderr.String())
	}
	for i := range 3 {
		b, err := os.ReadFile(filepath.Join(dir, "u"+strconv.Itoa(i)+".dat"))
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{`["iteration_count"] = 16;`, `["salt"] = "`, `["stored_key"] = "`, `["server_key"] = "`} {
			if !strings.Contains(string(b), want) {
				t.Errorf("u%d.dat lacks %s:\n%s", i, want, b)
			}
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "u3.dat")); err == nil {
		t.Error("wrote a fourth account")
	}
}

func TestRefusesNonLoopback(t *testing.T) {
	tests := []struct {
		name string
		args []string
	}{
		{"idle target", []string{"idle", "-addr", "10.1.2.3:5222", "-pids", "1"}},
		{"idle source", []string{"idle", "-addr", "127.0.0.1:5222", "-sources", "10.0.0.1", "-pids", "1"}},
		{"login-rate", []string{"login-rate", "-addr", "192.0.2.1:5222", "-pids", "1"}},
		{"throughput", []string{"throughput", "-addr", "192.0.2.1:5222", "-pids", "1"}},
		{"attack", []string{"attack", "-addr", "192.0.2.1:5222", "-pids", "1"}},
		{"ejabberd api", []string{"provision-ejabberd", "-api", "http://192.0.2.1:5480/api"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			err := run(context.Background(), tt.args, nil, &out, &out)
			if !errors.Is(err, errNotLoopback) {
				t.Fatalf("err = %v, want errNotLoopback", err)
			}
		})
	}
}

// TestIdleTCP runs the idle workload for real against a TCP listener in
// this process, which plays the server: two client processes (this test
// binary re-executed), the progress protocol, the memory readings of
// this process and the count of held connections.
func TestIdleTCP(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu    sync.Mutex
		conns []net.Conn
	)
	t.Cleanup(func() {
		_ = ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			_ = c.Close()
		}
	})
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	jsonPath := filepath.Join(t.TempDir(), "out.jsonl")
	var stdout, stderr bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	err = run(ctx, []string{"idle", "-server", "fake", "-addr", ln.Addr().String(), "-pids", strconv.Itoa(os.Getpid()),
		"-stage", "tcp", "-n", "40", "-clients", "2", "-settle", "100ms", "-warmup", "2",
		"-sources", "127.0.0.2-127.0.0.3", "-json", jsonPath}, nil, &stdout, &stderr)
	if err != nil {
		t.Fatalf("idle: %v\nstderr: %s", err, stderr.String())
	}
	if !strings.Contains(stdout.String(), "held 40") {
		t.Errorf("stdout = %q, want held 40", stdout.String())
	}
	if !strings.Contains(stderr.String(), "40/40") {
		t.Errorf("no finished progress bar in %q", stderr.String())
	}
	res, err := readResults(filepath.Dir(jsonPath))
	if err != nil {
		t.Fatal(err)
	}
	if len(res.idle) != 1 || res.idle[0].N != 40 || res.idle[0].ConnsHeld != 40 || res.idle[0].RSSAfter == 0 {
		t.Fatalf("records = %+v", res.idle)
	}
	// Every client connection came from one of the two sources.
	mu.Lock()
	defer mu.Unlock()
	for _, c := range conns {
		ap := netip.MustParseAddrPort(c.RemoteAddr().String())
		if a := ap.Addr().String(); a != "127.0.0.2" && a != "127.0.0.3" && a != "127.0.0.1" {
			t.Errorf("connection from %s", a)
		}
	}
}

// TestReport renders the fixture results and checks the table and the
// charts.
func TestReport(t *testing.T) {
	dir := t.TempDir()
	fixture, err := os.ReadFile(filepath.Join("testdata", "results.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "results.jsonl"), fixture, 0o644); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	if err := run(context.Background(), []string{"report", "-dir", dir}, nil, &stdout, &stderr); err != nil {
		t.Fatalf("%v: %s", err, stderr.String())
	}
	md, _ := os.ReadFile(filepath.Join(dir, "results.md"))
	tests := []struct {
		name, file, want string
	}{
		{"idle row with median and range", "results.md", "| `auth` | prosody | 5,000 | 2 | **40,000** | 30,000 – 50,000 |"},
		{"ratio to krill", "results.md", "40,000 (4.0×)"},
		{"go heap table", "results.md", "| `auth` | krill | 15,000 | **7,000** | - | 6,000 | 9,500 |"},
		{"login table", "results.md", "| krill | 3000 | 0 | 8 | **1000** |"},
		{"throughput table", "results.md", "| ejabberd | 50 | 8 | 10 | **30000** |"},
		{"attack still open", "results.md", "| prosody | 100 | 90 | not all | 100 |"},
		{"idle chart legend", "idle.svg", "krill N=15,000"},
		{"idle chart bar", "idle.svg", "prosody auth N=5000: 40,000 B/conn"},
		{"attack chart", "attack.svg", "<path d=\"M"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := os.ReadFile(filepath.Join(dir, tt.file))
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(string(b), tt.want) {
				t.Errorf("%s lacks %q:\n%s", tt.file, tt.want, b)
			}
		})
	}
	if stdout.String() != string(md) {
		t.Error("printed report differs from results.md")
	}
}

func TestReadGoMem(t *testing.T) {
	tests := []struct {
		name string
		body string
		want goMem
		ok   bool
	}{
		{"all three", "# HELP x\ngo_memstats_heap_inuse_bytes 1.5e+06\ngo_memstats_stack_inuse_bytes 65536\ngo_memstats_heap_alloc_bytes 1e+06\ngo_goroutines 20\n",
			goMem{HeapInuse: 1.5e6, StackInuse: 65536, HeapAlloc: 1e6}, true},
		{"stack missing", "go_memstats_heap_inuse_bytes 1\ngo_memstats_heap_alloc_bytes 1\n", goMem{}, false},
		{"bad value", "go_memstats_heap_inuse_bytes x\ngo_memstats_stack_inuse_bytes 1\ngo_memstats_heap_alloc_bytes 1\n", goMem{}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
				_, _ = io.WriteString(w, tt.body)
			}))
			defer srv.Close()
			got, err := readGoMem(srv.URL + "/metrics")
			if (err == nil) != tt.ok || got != tt.want {
				t.Fatalf("readGoMem = %+v, %v; want %+v, ok=%v", got, err, tt.want, tt.ok)
			}
		})
	}
	if _, err := readGoMem("http://192.0.2.1:5280/metrics"); !errors.Is(err, errNotLoopback) {
		t.Fatalf("non-loopback endpoint: %v", err)
	}
}

// TestAttackProfileUsage: an unknown -hostile-profile is a usage error,
// found before any connection is made.
func TestAttackProfileUsage(t *testing.T) {
	var out bytes.Buffer
	err := run(context.Background(), []string{"attack", "-addr", "127.0.0.1:1", "-pids", "1", "-hostile-profile", "sasl3"}, nil, &out, &out)
	if !errors.Is(err, errUsage) || !strings.Contains(out.String(), `-hostile-profile "sasl3": want sasl, sasl2 or fast`) {
		t.Fatalf("err = %v, output %q; want errUsage naming the profiles", err, out.String())
	}
}
