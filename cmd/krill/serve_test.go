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

	"go.uber.org/zap/zapcore"

	"github.com/krill-xmpp/krill/config"
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
	cmd.Env = append(os.Environ(), "KRILL_C2S_LISTEN="+addr, "KRILL_C2S_DIRECT_TLS_LISTEN="+direct, "KRILL_S2S_LISTEN=", "KRILL_DATA_DIR="+data,
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

// TestConsoleLogNotATerminal: with stderr a pipe (as with a file or a
// journal) the console log has no ANSI colour codes, and at debug level
// gnet's "default logging level is INFO" line (its own default, not Krill's
// level) is not printed.
func TestConsoleLogNotATerminal(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := buildKrill(t)
	p := &krillProcess{cmd: exec.Command(bin, "serve"), lines: make(chan string, 256)}
	p.cmd.Env = append(os.Environ(), "KRILL_C2S_LISTEN="+freePort(t), "KRILL_C2S_DIRECT_TLS_LISTEN="+freePort(t), "KRILL_S2S_LISTEN=",
		"KRILL_ADMIN_LISTEN="+freePort(t), "KRILL_DATA_DIR="+t.TempDir(), "KRILL_LOG_FORMAT=console", "KRILL_LOG_LEVEL=debug")
	stderr, err := p.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.cmd.Process.Kill(); _ = p.cmd.Wait() })
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			p.lines <- sc.Text()
		}
		close(p.lines)
	}()
	p.waitLog(t, "\tlistening\t", 3)
	p.stop(t, syscall.SIGTERM)
	log := p.log.String()
	if strings.Contains(log, "\x1b[") {
		t.Errorf("console log to a pipe has ANSI escapes:\n%q", log)
	}
	if strings.Contains(log, "default logging level") {
		t.Errorf("gnet's default-level line is printed:\n%s", log)
	}
	if !strings.Contains(log, "INFO\t") {
		t.Errorf("no plain INFO level in:\n%s", log)
	}
}

// TestLoggerColour: colour only when asked for (stderr is a terminal), and
// never in JSON.
func TestLoggerColour(t *testing.T) {
	for _, tc := range []struct {
		name   string
		format string
		colour bool
		want   bool
	}{
		{"console terminal", "console", true, true},
		{"console file", "console", false, false},
		{"json terminal", "json", true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			zc, err := loggerConfig(config.Log{Level: "info", Format: tc.format}, tc.colour)
			if err != nil {
				t.Fatal(err)
			}
			var enc zapcore.Encoder
			if tc.format == "json" {
				enc = zapcore.NewJSONEncoder(zc.EncoderConfig)
			} else {
				enc = zapcore.NewConsoleEncoder(zc.EncoderConfig)
			}
			buf, err := enc.EncodeEntry(zapcore.Entry{Level: zapcore.InfoLevel, Message: "m"}, nil)
			if err != nil {
				t.Fatal(err)
			}
			if got := strings.Contains(buf.String(), "\x1b["); got != tc.want {
				t.Fatalf("escape codes %v, want %v: %q", got, tc.want, buf.String())
			}
		})
	}
}
