package server_test

import (
	"bytes"
	"fmt"
	"io"
	"syscall"
	"testing"
	"time"

	"github.com/krill-xmpp/krill/config"
)

// BenchmarkRouteMessageArchived is BenchmarkRouteMessage with the archive
// off and on: the difference is what archiving costs per message, for
// the sender's and the recipient's archive (two rows), the stanza ID and
// the batched writes on the worker pool. The timer runs until every
// message is written, so ns/op includes the writes; cpu-ns/op is the
// process's user and system CPU per message (server and client alike:
// the client's part is the same in both). With burst 1 each message is
// read before the next is sent, so each is written in a transaction of
// its own (two rows); with burst 64 the sender writes 64 at once and the
// writer batches them, as it does under load.
func BenchmarkRouteMessageArchived(b *testing.B) {
	for _, burst := range []int{1, 64} {
		for _, on := range []bool{false, true} {
			name := fmt.Sprintf("burst=%d/mam=off", burst)
			if on {
				name = fmt.Sprintf("burst=%d/mam=on", burst)
			}
			b.Run(name, func(b *testing.B) {
				cfg := testConfig(b)
				cfg.MAM.Enabled = on
				benchRoute(b, cfg, on, burst)
			})
		}
	}
}

// cpuTime is the process's user and system CPU so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func benchRoute(b *testing.B, cfg config.Config, archived bool, burst int) {
	srv := startServer(b, cfg, "alice", "bob")
	alice := dialRaw(b, srv)
	bob := dialRaw(b, srv)
	alice.scramLogin("alice", testPassword, "a")
	bobJID := bob.scramLogin("bob", testPassword, "b")
	bob.send(`<presence/>`)
	bob.expect(b, "<presence from='"+bobJID+"'/>")
	msg := []byte(`<message type='chat' to='` + bobJID + `'><body>hi</body></message>`)
	end := []byte(`</message>`)
	buf := make([]byte, 64<<10)
	var pending []byte
	base := srv.Stats().Modules["mam.archived"]
	b.ReportAllocs()
	b.ResetTimer()
	cpu := cpuTime()
	out := bytes.Repeat(msg, burst)
	for sent := 0; sent < b.N; sent += burst {
		k := min(burst, b.N-sent)
		if _, err := alice.conn.Write(out[:k*len(msg)]); err != nil {
			b.Fatal(err)
		}
		_ = bob.conn.SetReadDeadline(time.Now().Add(ioTimeout))
		for got := 0; got < k; got++ {
			for !bytes.Contains(pending, end) {
				n, err := bob.conn.Read(buf)
				if err != nil && err != io.EOF {
					b.Fatal(err)
				}
				pending = append(pending, buf[:n]...)
			}
			i := bytes.Index(pending, end) + len(end)
			pending = append(pending[:0], pending[i:]...)
		}
	}
	// Every record is written, or was dropped for a full queue (the
	// writer is slower than the loops can route: then the figure is the
	// writer's rate).
	handled := func() (uint64, uint64) {
		m := srv.Stats().Modules
		return m["mam.archived"] - base, m["mam.dropped_queue_full"] + m["mam.write_failed"]
	}
	if archived && !waitFor(time.Minute, func() bool { w, d := handled(); return w+d == 2*uint64(b.N) }) {
		w, d := handled()
		b.Fatalf("archived %d and dropped %d of %d", w, d, 2*b.N)
	}
	b.StopTimer()
	b.ReportMetric(float64(cpuTime()-cpu)/float64(b.N), "cpu-ns/op")
	if archived {
		w, d := handled()
		b.ReportMetric(float64(d)/float64(2*b.N), "dropped/row")
		b.ReportMetric(float64(w)/b.Elapsed().Seconds(), "rows/s")
	}
}
