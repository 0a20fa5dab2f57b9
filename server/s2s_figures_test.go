package server_test

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strconv"
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

// TestS2SFiguresAuthenticated measures an idle inbound s2s stream after
// STARTTLS and SASL EXTERNAL: the peers run in a child process (this test
// binary again, TestS2SFiguresClient), so that the server's RSS holds no
// client state. KRILL_S2S_FIGURES=1.
func TestS2SFiguresAuthenticated(t *testing.T) {
	if os.Getenv("KRILL_S2S_FIGURES") == "" || os.Getenv("KRILL_S2S_CLIENT") != "" {
		t.Skip("set KRILL_S2S_FIGURES=1")
	}
	const warm, n = 100, 1000
	aCA, bCA := newDevCA(t, "a.test"), newDevCA(t, "b.test")
	cfg := testConfig(t)
	cfg.Domain = "b.test"
	cfg.TLS.Cert, cfg.TLS.Key = bCA.certFile, bCA.keyFile
	cfg.S2S.Listen = "127.0.0.1:0"
	cfg.S2S.CAFile = aCA.caFile
	cfg.S2S.IdleTimeout = 0
	cfg.S2S.MaxStreamsPerDomain = 0 // every peer is a.test: no cap
	cfg.Preauth.Timeout = 10 * time.Minute
	srv := startServer(t, cfg)
	peers := func(k int) {
		cmd := exec.Command(os.Args[0], "-test.run=^TestS2SFiguresClient$")
		cmd.Env = append(os.Environ(), "KRILL_S2S_CLIENT=1", "KRILL_S2S_ADDR="+srv.S2SAddr().String(),
			"KRILL_S2S_N="+strconv.Itoa(k), "KRILL_S2S_CERT="+aCA.certFile, "KRILL_S2S_KEY="+aCA.keyFile)
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		stdin, _ := cmd.StdinPipe()
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = stdin.Close(); _ = cmd.Process.Kill(); _ = cmd.Wait() })
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if strings.Contains(sc.Text(), "KRILL_READY") {
				return
			}
			if strings.Contains(sc.Text(), "FAIL") {
				t.Fatalf("peers: %s", sc.Text())
			}
		}
		t.Fatal("peers exited before ready")
	}
	snap := func() (uint64, uint64) {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		pm, err := bench.ReadProcMemory(os.Getpid())
		if err != nil {
			t.Fatal(err)
		}
		return pm.RSS, ms.HeapAlloc
	}
	peers(warm)
	r0, h0 := snap()
	peers(n)
	if !waitFor(ioTimeout, func() bool { return srv.S2SStats().Authenticated == warm+n }) {
		t.Fatalf("authenticated streams: %d", srv.S2SStats().Authenticated)
	}
	r1, h1 := snap()
	st := srv.Stats()
	t.Logf("inbound s2s authenticated (STARTTLS, SASL EXTERNAL, idle), %d streams: rss %.0f B/stream, go heap %.0f B/stream (lean TLS sessions %d, stock %d)",
		n, float64(int64(r1)-int64(r0))/n, float64(int64(h1)-int64(h0))/n, st.TLSLean, st.TLSStock)
}

// TestS2SFiguresClient is the child of TestS2SFiguresAuthenticated: it
// opens KRILL_S2S_N authenticated streams as a.test and holds them.
func TestS2SFiguresClient(t *testing.T) {
	if os.Getenv("KRILL_S2S_CLIENT") == "" {
		t.Skip("run by TestS2SFiguresAuthenticated")
	}
	k, _ := strconv.Atoi(os.Getenv("KRILL_S2S_N"))
	cert, err := tls.LoadX509KeyPair(os.Getenv("KRILL_S2S_CERT"), os.Getenv("KRILL_S2S_KEY"))
	if err != nil {
		t.Fatal(err)
	}
	addr := os.Getenv("KRILL_S2S_ADDR")
	header := `<?xml version='1.0'?><stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams' from='a.test' to='b.test' version='1.0'>`
	var keep []net.Conn
	for range k {
		nc, err := net.DialTimeout("tcp", addr, ioTimeout)
		if err != nil {
			t.Fatal(err)
		}
		r := &rawConn{t: t, conn: nc}
		r.send(header)
		r.skipUntil("</stream:features>")
		r.send(`<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>`)
		r.skipUntil("<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
		tc := tls.Client(nc, &tls.Config{ServerName: "b.test", InsecureSkipVerify: true, Certificates: []tls.Certificate{cert}})
		r.conn = tc
		r.send(header)
		r.skipUntil("</stream:features>")
		r.send(`<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='EXTERNAL'>=</auth>`)
		r.skipUntil("<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>")
		r.send(header)
		r.skipUntil("<stream:features/>")
		_ = tc.SetDeadline(time.Time{})
		keep = append(keep, tc)
	}
	fmt.Println("KRILL_READY")
	_, _ = io.Copy(io.Discard, os.Stdin) // hold the streams until the parent is done
	for _, c := range keep {
		_ = c.Close()
	}
}
