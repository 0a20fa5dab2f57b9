package main

import (
	"bytes"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/krill-xmpp/krill/config"
)

// countingWriter records what reaches "stderr" and in how many writes.
type countingWriter struct {
	mu     sync.Mutex
	buf    bytes.Buffer
	writes int
}

func (w *countingWriter) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.writes++
	return w.buf.Write(b)
}

func (w *countingWriter) Sync() error { return nil }

func (w *countingWriter) state() (string, int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String(), w.writes
}

// TestLoggerSamplingAndBuffer drives newLogger with a burst of one message
// (what an attack repeating one event per connection produces) and one
// other line: sampled, the burst gives the first 100 lines and then one in
// 100, the rest counted as dropped; buffered, nothing reaches the writer
// until close, and then in one write.
func TestLoggerSamplingAndBuffer(t *testing.T) {
	const burst = 1000
	for _, tc := range []struct {
		name     string
		sampling bool
		buffer   int
		want     int // lines of the burst written
	}{
		{"sampled buffered", true, 256 << 10, logSampleInitial + (burst-logSampleInitial)/logSampleThereafter},
		{"sampled unbuffered", true, 0, logSampleInitial + (burst-logSampleInitial)/logSampleThereafter},
		{"unsampled buffered", false, 256 << 10, burst},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := &countingWriter{}
			// An hour: only close (or a full buffer) writes.
			log, err := newLogger(config.Log{Level: "info", Format: "json", Sampling: tc.sampling, Buffer: tc.buffer,
				FlushInterval: time.Hour}, false, w)
			if err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			for range burst {
				log.Info("stream error")
			}
			log.Info("other")
			elapsed := time.Since(start)

			out, writes := w.state()
			if tc.buffer > 0 && writes != 0 {
				t.Fatalf("%d writes before close with a buffer:\n%s", writes, out)
			}
			if lines := strings.Count(out, "\n"); tc.buffer == 0 && writes != lines {
				t.Fatalf("%d writes unbuffered, want one per line written (%d)", writes, lines)
			}
			log.close()
			out, writes = w.state()
			if tc.buffer > 0 && writes != 1 {
				t.Errorf("%d writes at close, want 1", writes)
			}
			got := strings.Count(out, `"msg":"stream error"`)
			if !strings.Contains(out, `"msg":"other"`) {
				t.Errorf("the other message was left out")
			}
			dropped := int(log.dropped.Load())
			if got+dropped != burst {
				t.Errorf("%d lines written + %d dropped, want %d in all", got, dropped, burst)
			}
			// The sampler's second starts at the burst's first line; a
			// burst slower than that (a very loaded machine) starts a new
			// one and may write more.
			if elapsed < time.Second && got != tc.want {
				t.Errorf("%d lines of the burst written, want %d", got, tc.want)
			}
			if got < tc.want {
				t.Errorf("%d lines of the burst written, want at least %d", got, tc.want)
			}
		})
	}
}

// TestServeLogSampledAndFlushed runs the binary with a flush interval of an
// hour, so that only an explicit flush writes: the start-up lines are
// flushed once it listens, a burst of per-connection stream errors (debug)
// is sampled and counted in krill_log_dropped_total, and the lines written
// before and after SIGTERM are all in the output once it has exited.
func TestServeLogSampledAndFlushed(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	const conns = 300
	bin := buildKrill(t)
	addr, admin := freePort(t), freePort(t)
	p := startKrill(t, bin, []string{"KRILL_C2S_LISTEN=" + addr, "KRILL_C2S_DIRECT_TLS_LISTEN=", "KRILL_S2S_LISTEN=", "KRILL_ADMIN_LISTEN=" + admin,
		"KRILL_DATA_DIR=" + t.TempDir(), "KRILL_LOG_FORMAT=json", "KRILL_LOG_LEVEL=debug", "KRILL_LOG_FLUSH_INTERVAL=1h"}, 2)

	start := time.Now()
	buf := make([]byte, 4096)
	for i := range conns {
		c, err := net.DialTimeout("tcp", addr, 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		_, _ = c.Write([]byte(`<message/>`)) // an element before the stream header: not-well-formed
		var got []byte
		for {
			n, err := c.Read(buf)
			got = append(got, buf[:n]...)
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatalf("connection %d: %v after %q", i, err, got)
			}
		}
		c.Close()
		if !bytes.Contains(got, []byte("<not-well-formed xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>")) {
			t.Fatalf("connection %d got %q", i, got)
		}
	}
	elapsed := time.Since(start)
	// The server logs before it closes, so every line is logged (or
	// dropped) by now.
	dropped := scrapeCounter(t, admin, "krill_log_dropped_total")

	// Unlike p.stop, keep every line up to the end of the output.
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	p.waitLog(t, `"msg":"stopping"`, 1) // fails if the output ends without it
	deadline := time.After(30 * time.Second)
	for open := true; open; {
		select {
		case l, ok := <-p.lines: // closed at the end of the output: at exit
			if open = ok; ok {
				p.log.WriteString(l + "\n")
			}
		case <-deadline:
			t.Fatalf("krill serve did not exit after SIGTERM:\n%s", p.log.String())
		}
	}
	if err := p.cmd.Wait(); err != nil {
		t.Fatalf("exit after SIGTERM: %v", err)
	}
	log := p.log.String()
	for _, want := range []string{`"msg":"stopping"`, `"msg":"shutting down"`} {
		if !strings.Contains(log, want) {
			t.Errorf("no %s after exit: the buffer was not flushed:\n%s", want, log)
		}
	}
	lines := strings.Count(log, `"msg":"stream error"`)
	want := logSampleInitial + (conns-logSampleInitial)/logSampleThereafter
	t.Logf("%d connections in %v: %d stream error lines, %d dropped", conns, elapsed, lines, dropped)
	if lines+dropped != conns {
		t.Errorf("%d stream error lines + %d dropped, want %d", lines, dropped, conns)
	}
	if elapsed < time.Second && lines != want {
		t.Errorf("%d stream error lines, want %d", lines, want)
	}
	if lines < want || lines == conns {
		t.Errorf("%d stream error lines, want sampled to at least %d and fewer than %d", lines, want, conns)
	}
}

// scrapeCounter reads one unlabelled counter from the admin listener.
func scrapeCounter(t *testing.T, admin, name string) int {
	t.Helper()
	client := http.Client{Timeout: 10 * time.Second}
	resp, err := client.Get("http://" + admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^` + name + ` (\d+)$`).FindSubmatch(b)
	if m == nil {
		t.Fatalf("no %s in /metrics:\n%s", name, b)
	}
	n, _ := strconv.Atoi(string(m[1]))
	return n
}

// TestServeStartupErrorKeepsLog: a start-up failure (the port is taken)
// still prints the lines logged before it, then the error, although the
// flush interval is an hour.
func TestServeStartupErrorKeepsLog(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	bin := buildKrill(t)
	cmd := exec.Command(bin, "serve")
	cmd.Env = append(os.Environ(), "KRILL_C2S_LISTEN="+busy.Addr().String(), "KRILL_C2S_DIRECT_TLS_LISTEN=",
		"KRILL_ADMIN_LISTEN=", "KRILL_DATA_DIR="+t.TempDir(), "KRILL_LOG_FORMAT=json", "KRILL_LOG_FLUSH_INTERVAL=1h")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { done <- cmd.Wait() }()
	select {
	case err = <-done:
	case <-time.After(30 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatalf("krill serve did not exit with its port taken:\n%s", stderr.String())
	}
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
		t.Fatalf("exit %v, want status 1:\n%s", err, stderr.String())
	}
	out := stderr.String()
	logged, failed := strings.Index(out, `"msg":"starting krill"`), strings.Index(out, "krill: ")
	if logged < 0 || failed < 0 || logged > failed {
		t.Fatalf("want the start-up line, then the error:\n%s", out)
	}
}
