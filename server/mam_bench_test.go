package server_test

import (
	"bytes"
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
// the client's part is the same in both).
func BenchmarkRouteMessageArchived(b *testing.B) {
	for _, on := range []bool{false, true} {
		name := "mam=off"
		if on {
			name = "mam=on"
		}
		b.Run(name, func(b *testing.B) {
			cfg := testConfig(b)
			cfg.MAM.Enabled = on
			benchRoute(b, cfg, on)
		})
	}
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func benchRoute(b *testing.B, cfg config.Config, archived bool) {
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
	for range b.N {
		if _, err := alice.conn.Write(msg); err != nil {
			b.Fatal(err)
		}
		_ = bob.conn.SetReadDeadline(time.Now().Add(ioTimeout))
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
	if archived && !waitFor(time.Minute, func() bool { return srv.Stats().Modules["mam.archived"]-base == 2*uint64(b.N) }) {
		b.Fatalf("archived %d of %d", srv.Stats().Modules["mam.archived"]-base, 2*b.N)
	}
	b.StopTimer()
	b.ReportMetric(float64(cpuTime()-cpu)/float64(b.N), "cpu-ns/op")
}
