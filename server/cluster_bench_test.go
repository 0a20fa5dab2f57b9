package server_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
)

// BenchmarkClusterMessage measures a chat message between two sessions of
// a two-node cluster (NATS embedded, PostgreSQL from TEST_POSTGRES_DSN):
// "local" with both sessions on node A, "cross" with the receiver on node
// B. Latency: one message at a time, from the sender's write to the
// receiver's read of the whole stanza (p50, p99). CPU: a pipelined burst
// of b.N messages, the process's user+system time per message. Everything
// (both nodes, NATS, the clients) runs in this one process, so the CPU
// figure is the whole system's; the difference between the two cases is
// what crossing nodes costs.
//
//	TEST_POSTGRES_DSN=... go test -run '^$' -bench ClusterMessage -benchtime 5000x ./server/
func BenchmarkClusterMessage(b *testing.B) {
	dsn := clusterDSN(b)
	_, url := testNATS(b)
	// A burst may outrun the receiving client for a moment: no
	// outbound cap, so that the figure is not a close.
	ca, cb := clusterConfig(b, url, dsn, "a"), clusterConfig(b, url, dsn, "b")
	ca.C2S.MaxOutbound, cb.C2S.MaxOutbound = 0, 0
	a := startNode(b, ca, "alice", "bob", "carol")
	n2 := startNode(b, cb)
	alice := dialRaw(b, a)
	alice.scramLogin("alice", testPassword, "a")
	bobLocal := dialRaw(b, a)
	bobLocal.scramLogin("bob", testPassword, "b")
	carol := dialRaw(b, n2)
	carol.scramLogin("carol", testPassword, "c")
	seen(b, a, "carol", "c", false)
	for _, c := range []struct {
		name string
		to   string
		recv *rawConn
	}{{"local", "bob@localhost/b", bobLocal}, {"cross", "carol@localhost/c", carol}} {
		b.Run(c.name, func(b *testing.B) {
			body := strings.Repeat("x", 100)
			msg := func(i int) string {
				return fmt.Sprintf(`<message to='%s' type='chat' id='m%d'><body>%s</body></message>`, c.to, i, body)
			}
			// Latency, one at a time.
			const rounds = 2000
			lat := make([]time.Duration, 0, rounds)
			for i := range rounds {
				t0 := time.Now()
				alice.send(msg(i))
				c.recv.skipUntil(fmt.Sprintf(`id='m%d' from='alice@localhost/a'><body>%s</body></message>`, i, body))
				lat = append(lat, time.Since(t0))
			}
			slices.Sort(lat)
			// CPU, pipelined.
			u0 := cpuTime()
			b.ResetTimer()
			var batch strings.Builder
			for i := range b.N {
				batch.WriteString(msg(rounds + i))
				if batch.Len() > 32<<10 || i == b.N-1 {
					alice.send(batch.String())
					batch.Reset()
				}
			}
			drainMessages(b, c.recv, b.N)
			b.StopTimer()
			cpu := cpuTime() - u0
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
			b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
			b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-µs/msg")
		})
	}
}

// drainMessages reads until n more </message> have arrived (counted
// across reads, without rescanning what was read).
func drainMessages(b *testing.B, r *rawConn, n int) {
	const end = "</message>"
	pending := r.buf.String()
	r.buf.Reset()
	var chunk [64 << 10]byte
	deadline := time.Now().Add(time.Minute)
	for {
		n -= strings.Count(pending, end)
		if n <= 0 {
			return
		}
		if i := strings.LastIndex(pending, end); i >= 0 {
			pending = pending[i+len(end):]
		}
		if len(pending) > len(end) {
			pending = pending[len(pending)-len(end):]
		}
		_ = r.conn.SetReadDeadline(deadline)
		k, err := r.conn.Read(chunk[:])
		if err != nil {
			b.Fatalf("drain: %v with %d messages to come", err, n)
		}
		pending += string(chunk[:k])
	}
}
