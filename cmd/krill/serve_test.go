package main

import (
	"bufio"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestServeProcess runs the real binary configured only through KRILL_*
// variables, checks the start-up log lines and a stream opening, and stops
// it with SIGTERM.
func TestServeProcess(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "krill")
	build := exec.Command("go", "build", "-o", bin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	addr, direct := freePort(t), freePort(t)

	data := filepath.Join(dir, "data")
	cmd := exec.Command(bin, "serve")
	cmd.Env = append(os.Environ(), "KRILL_C2S_LISTEN="+addr, "KRILL_C2S_DIRECT_TLS_LISTEN="+direct, "KRILL_DATA_DIR="+data,
		"KRILL_ADMIN_LISTEN="+freePort(t),
		"KRILL_LOG_FORMAT=json", "KRILL_DOMAIN=example.test")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })

	lines := make(chan string, 64)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	var log strings.Builder
	deadline := time.After(30 * time.Second)
	for strings.Count(log.String(), `"listening"`) < 3 {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("krill serve exited:\n%s", log.String())
			}
			log.WriteString(l + "\n")
		case <-deadline:
			t.Fatalf("no listening line:\n%s", log.String())
		}
	}
	for _, want := range []string{`"domain":"example.test"`, `"addr":"` + addr + `"`, `"addr":"` + direct + `"`,
		`"data_dir":"` + data + `"`, `self-signed development certificate`} {
		if !strings.Contains(log.String(), want) {
			t.Errorf("start-up log lacks %s:\n%s", want, log.String())
		}
	}

	conn, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	_, _ = conn.Write([]byte(`<?xml version='1.0'?><stream:stream to='example.test' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>`))
	var got strings.Builder
	buf := make([]byte, 4096)
	for !strings.Contains(got.String(), "</stream:features>") {
		n, err := conn.Read(buf)
		got.Write(buf[:n])
		if err != nil {
			t.Fatalf("reading features: %v; got %q", err, got.String())
		}
	}
	if !strings.Contains(got.String(), "from='example.test'") || !strings.Contains(got.String(), "<required/></starttls>") {
		t.Fatalf("unexpected stream opening %q", got.String())
	}

	// SIGHUP reloads the certificates and keeps serving.
	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	for !strings.Contains(log.String(), `"certificates reloaded"`) {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("krill serve exited after SIGHUP:\n%s", log.String())
			}
			log.WriteString(l + "\n")
		case <-time.After(20 * time.Second):
			t.Fatalf("no reload line after SIGHUP:\n%s", log.String())
		}
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("krill serve did not stop on SIGTERM")
	}
}

func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}
