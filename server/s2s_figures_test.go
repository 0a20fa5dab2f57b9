package server_test

import (
	"fmt"
	"net/netip"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/krill-xmpp/krill/bench"
)

// TestS2SFigures measures federation figures; it runs with
// KRILL_S2S_FIGURES=1 (see README, Federation):
//   - bytes per idle inbound s2s stream before authentication (stream
//     opened, features sent), process RSS and Go heap deltas over N
//     streams whose client ends are raw sockets (no Go state);
//   - messages per second across one authenticated s2s link, from
//     alice@a.test to bob@b.test through both servers.
func TestS2SFigures(t *testing.T) {
	if os.Getenv("KRILL_S2S_FIGURES") == "" {
		t.Skip("set KRILL_S2S_FIGURES=1")
	}
	t.Run("preauth-memory", func(t *testing.T) {
		const n = 2000
		cfg := testConfig(t)
		cfg.Domain = "b.test"
		cfg.Preauth.Timeout = 10 * time.Minute
		cfg.S2S.Listen = "127.0.0.1:0"
		srv := startServer(t, cfg)
		ap, err := netip.ParseAddrPort(srv.S2SAddr().String())
		if err != nil {
			t.Fatal(err)
		}
		header := []byte(`<?xml version='1.0'?><stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams' from='a.test' to='b.test' version='1.0'>`)
		open := func(k int) []int {
			fds := make([]int, 0, k)
			for range k {
				fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM, 0)
				if err != nil {
					t.Fatal(err)
				}
				if err := unix.Connect(fd, &unix.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().As4()}); err != nil {
					t.Fatal(err)
				}
				if _, err := unix.Write(fd, header); err != nil {
					t.Fatal(err)
				}
				fds = append(fds, fd)
			}
			return fds
		}
		warm := open(200)
		if !waitFor(ioTimeout, func() bool { return srv.S2SStats().Preauth == 200 }) {
			t.Fatal("warm-up streams not open")
		}
		snap := func() (rss uint64, heap uint64) {
			runtime.GC()
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			pm, err := bench.ReadProcMemory(os.Getpid())
			if err != nil {
				t.Fatal(err)
			}
			return pm.RSS, ms.HeapAlloc
		}
		r0, h0 := snap()
		fds := open(n)
		if !waitFor(ioTimeout, func() bool { return srv.S2SStats().Preauth == 200+n }) {
			t.Fatalf("streams open: %d", srv.S2SStats().Preauth)
		}
		// Every stream has its features: drain one to be sure they were sent.
		var buf [4096]byte
		got := 0
		for !strings.Contains(string(buf[:got]), "</stream:features>") && got < len(buf) {
			k, err := unix.Read(fds[n-1], buf[got:])
			if err != nil || k <= 0 {
				break
			}
			got += k
		}
		r1, h1 := snap()
		t.Logf("inbound s2s pre-auth (stream opened, features sent), %d streams: rss %.0f B/stream, go heap %.0f B/stream",
			n, float64(int64(r1)-int64(r0))/n, float64(int64(h1)-int64(h0))/n)
		for _, fd := range append(warm, fds...) {
			_ = unix.Close(fd)
		}
	})
	t.Run("messages-per-second", func(t *testing.T) {
		const n = 20000
		a, b := fedPair(t, true, nil)
		alice := fedLogin(t, a, "alice", "a")
		bob := fedLogin(t, b, "bob", "b")
		bob.exchange(t, `<presence/>`, `<presence from='bob@b.test/b'/>`)
		// One message first: the link is up before the clock starts.
		alice.send(`<message to='bob@b.test/b' id='w'><body>w</body></message>`)
		bob.skipUntil(`</message>`)
		var sb strings.Builder
		for i := range n {
			fmt.Fprintf(&sb, `<message to='bob@b.test/b' id='m%d'><body>x</body></message>`, i)
		}
		start := time.Now()
		go alice.conn.Write([]byte(sb.String()))
		bob.skipUntil(fmt.Sprintf(`id='m%d'`, n-1))
		el := time.Since(start)
		t.Logf("one s2s link, alice@a.test -> bob@b.test, %d messages in %v: %.0f messages/s", n, el.Round(time.Millisecond), n/el.Seconds())
	})
}
