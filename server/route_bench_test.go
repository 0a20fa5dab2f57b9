package server_test

import (
	"bytes"
	"io"
	"testing"
	"time"
)

// BenchmarkRouteMessage measures routing one chat message between two
// local sessions over real sockets: parse, address check, stamp, deliver,
// write. allocs/op counts the whole process, server and clients; the
// clients here reuse their buffers, so what remains is the server's.
func BenchmarkRouteMessage(b *testing.B) {
	srv := startServer(b, testConfig(b), "alice", "bob")
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
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
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
}
