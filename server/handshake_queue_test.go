package server_test

import (
	"crypto/tls"
	"net"
	"testing"
	"time"

	"github.com/krill-xmpp/krill/server"
)

// startTLSQueued runs STARTTLS and a real client handshake on a goroutine,
// for a handshake that waits for a slot; the channel yields the upgraded
// connection, or nil after reporting an error.
func startTLSQueued(t *testing.T, srv *server.Server, tc *tls.Config) <-chan *rawConn {
	done := make(chan *rawConn, 1)
	conn, err := net.DialTimeout("tcp", srv.Addr().String(), ioTimeout)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	go func() {
		r := &rawConn{t: t, conn: conn}
		_, _ = conn.Write([]byte(clientHeader))
		if _, err := r.readUntil("</stream:features>", time.Now().Add(ioTimeout)); err != nil {
			t.Errorf("features: %v", err)
			done <- nil
			return
		}
		_, _ = conn.Write([]byte(`<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>`))
		if _, err := r.readUntil("<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>", time.Now().Add(ioTimeout)); err != nil {
			t.Errorf("proceed: %v", err)
			done <- nil
			return
		}
		c := tls.Client(conn, tc)
		_ = c.SetDeadline(time.Now().Add(ioTimeout))
		if err := c.Handshake(); err != nil {
			t.Errorf("queued handshake: %v", err)
			done <- nil
			return
		}
		r.conn = c
		done <- r
	}()
	return done
}

// TestHandshakeQueueFull (issue 10): with tls.max_handshakes = 1 held by a
// stalled handshake and tls.max_handshake_queue = 2 connections waiting,
// the next complete ClientHello is refused at once, counted as a policy
// close and a queue_full TLS failure; a waiting connection that leaves
// frees its place in the queue; and the queued handshakes still complete,
// in order, once the slot frees.
func TestHandshakeQueueFull(t *testing.T) {
	cfg := tlsConfig(t)
	cfg.TLS.MaxHandshakes = 1
	cfg.TLS.MaxHandshakeQueue = 2
	cfg.TLS.HandshakeTimeout = 30 * time.Second
	srv := startServer(t, cfg)
	tc := clientTLS(t, cfg)
	hello := clientHello(t)

	raw := func() *rawConn { // a ClientHello, then silence
		r := dialRaw(t, srv)
		r.proceed()
		r.send(string(hello))
		return r
	}
	waiting := func(n int) {
		t.Helper()
		if !waitFor(ioTimeout, func() bool { st := srv.Stats(); return st.TLSActive == 1 && st.TLSWaiting == n }) {
			t.Fatalf("want 1 handshake running and %d waiting: %+v", n, srv.Stats())
		}
	}

	stalled := raw()
	waiting(0)
	leaver := raw()
	waiting(1)
	first := startTLSQueued(t, srv, tc)
	waiting(2)

	before := srv.Stats()
	refused := raw()
	if got := refused.closed(); got != "" {
		t.Fatalf("refused connection received %q after <proceed/>", got)
	}
	if !waitFor(ioTimeout, func() bool { return srv.Stats().ClosedPolicy == before.ClosedPolicy+1 }) {
		t.Fatalf("refusal not counted as a policy close: %+v", srv.Stats())
	}
	st := srv.Stats()
	if st.TLSQueueFull != before.TLSQueueFull+1 || st.TLSFailed != before.TLSFailed+1 || st.ClosedTLSFailed != before.ClosedTLSFailed {
		t.Fatalf("refusal counted as: queue_full %d->%d, tls failed %d->%d, closed tls_failed %d->%d",
			before.TLSQueueFull, st.TLSQueueFull, before.TLSFailed, st.TLSFailed, before.ClosedTLSFailed, st.ClosedTLSFailed)
	}
	waiting(2) // the refused one never joined

	// A waiting connection that leaves makes room.
	_ = leaver.conn.Close()
	waiting(1)
	second := startTLSQueued(t, srv, tc)
	waiting(2)

	// The slot frees: the queued handshakes complete.
	_ = stalled.conn.Close()
	for i, ch := range []<-chan *rawConn{first, second} {
		var r *rawConn
		select {
		case r = <-ch:
		case <-time.After(ioTimeout):
			t.Fatalf("queued handshake %d did not complete", i+1)
		}
		if r == nil {
			t.FailNow()
		}
		r.open()
	}
	if !waitFor(ioTimeout, func() bool { st := srv.Stats(); return st.TLSActive == 0 && st.TLSWaiting == 0 }) {
		t.Fatalf("handshakes left over: %+v", srv.Stats())
	}
}
