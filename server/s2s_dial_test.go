//go:build linux

package server_test

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// blackhole returns the address of a loopback listener that never
// accepts and whose accept queue is full (listen backlog 0, one
// connection queued): Linux drops further SYNs, so a connect to it hangs
// until its caller gives up, as one to a host that does not answer does.
func blackhole(t *testing.T) string {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(sa.(*syscall.SockaddrInet4).Port))
	fill, err := net.DialTimeout("tcp", addr, ioTimeout)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = fill.Close() })
	if c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond); err == nil {
		c.Close()
		t.Skip("the kernel accepted beyond a full backlog: no blackhole here")
	}
	return addr
}

// TestS2SDialNoWorkers: connects to peers that do not answer run on the
// dialer, not the worker pool: with 2 workers, 4 links to 4 unanswering
// domains (s2s.max_dials 3: three connects hang, one link waits its turn)
// leave the workers free, so alice's roster requests (storage, on the
// workers) are answered; then Stop returns at once rather than after
// s2s.connect_timeout (a minute), and what waited is bounced.
func TestS2SDialNoWorkers(t *testing.T) {
	hole := blackhole(t)
	cfg := testConfig(t)
	cfg.Domain = "a.test"
	cfg.Server.Workers = 2
	cfg.S2S.MaxDials = 3
	cfg.S2S.ConnectTimeout = time.Minute
	cfg.S2S.Routes = map[string]string{}
	const n = 4
	for i := range n {
		cfg.S2S.Routes[fmt.Sprintf("h%d.test", i)] = hole
	}
	srv := startServer(t, cfg, "alice")
	node := &fedNode{domain: "a.test", srv: srv}
	alice := fedLogin(t, node, "alice", "a")
	for i := range n {
		alice.send(fmt.Sprintf(`<message type='chat' id='m%d' to='bob@h%d.test'><body>x</body></message>`, i, i))
	}
	if !waitFor(ioTimeout, func() bool { st := srv.S2SStats(); return st.Dialling == 3 && st.DialWaiting == 1 }) {
		t.Fatalf("dials: %+v", srv.S2SStats())
	}
	for i := range 2 * cfg.Server.Workers {
		id := "r" + strconv.Itoa(i)
		alice.exchange(t, `<iq type='get' id='`+id+`'><query xmlns='jabber:iq:roster'/></iq>`, `<iq type='result' id='`+id+`'>{**}</iq>`)
	}
	if st := srv.S2SStats(); st.Dialling != 3 || st.DialWaiting != 1 || st.Dialled != 0 {
		t.Fatalf("the dials did not hang: %+v", st)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	start := time.Now()
	if err := srv.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if el := time.Since(start); el > 5*time.Second {
		t.Fatalf("Stop took %v with connects hanging", el)
	}
	if st := srv.S2SStats(); st.Dialling != 0 || st.DialWaiting != 0 || st.Bounced != n {
		t.Fatalf("after Stop: %+v", st)
	}
}

// TestS2SPendingCaps: the outbound streams being set up are capped in
// number (s2s.max_pending_links) and in what they hold queued
// (s2s.max_pending_bytes): a client naming unanswering domains gets
// resource-constraint bounces beyond them, and the counts go back to
// zero when the links are given up.
func TestS2SPendingCaps(t *testing.T) {
	hole := blackhole(t)
	cfg := testConfig(t)
	cfg.Domain = "a.test"
	cfg.S2S.MaxDials = 1
	cfg.S2S.ConnectTimeout = time.Minute
	cfg.S2S.MaxPendingLinks = 2
	cfg.S2S.MaxQueueBytes = 1024
	cfg.S2S.MaxPendingBytes = 1024
	cfg.S2S.Routes = map[string]string{}
	for i := range 3 {
		cfg.S2S.Routes[fmt.Sprintf("h%d.test", i)] = hole
	}
	srv := startServer(t, cfg, "alice")
	alice := fedLogin(t, &fedNode{domain: "a.test", srv: srv}, "alice", "a")
	body := strings.Repeat("x", 400)
	msg := func(id, to string) string {
		return `<message type='chat' id='` + id + `' to='` + to + `'><body>` + body + `</body></message>`
	}
	bounce := func(id, to string) string {
		return `<message type='error' id='` + id + `' from='` + to + `' to='alice@a.test/a'>` +
			`<error type='wait'><resource-constraint xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></message>`
	}
	alice.send(msg("m0", "bob@h0.test"))
	alice.send(msg("m1", "bob@h1.test"))
	// A third domain: two links are being set up already.
	alice.exchange(t, msg("m2", "bob@h2.test"), bounce("m2", "bob@h2.test"))
	// A second stanza for h1: the two links' queues would pass 1,024 bytes.
	alice.exchange(t, msg("m3", "bob@h1.test"), bounce("m3", "bob@h1.test"))
	st := srv.S2SStats()
	if st.PendingLinks != 2 || st.PendingFull != 2 || st.PendingBytes <= 0 || st.PendingBytes > 1024 {
		t.Fatalf("pending: %+v", st)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := srv.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if st := srv.S2SStats(); st.PendingLinks != 0 || st.PendingBytes != 0 {
		t.Fatalf("after Stop: %+v", st)
	}
}
