package server

import (
	"crypto/tls"
	"errors"
	"net"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"
)

// dryConn returns errWouldBlock from Read while dry is set, as tlsPipe does
// on the loop when its input is drained.
type dryConn struct {
	net.Conn
	dry atomic.Bool
}

func (d *dryConn) Read(b []byte) (int, error) {
	if d.dry.Load() {
		return 0, errWouldBlock
	}
	return d.Conn.Read(b)
}

// TestTLSTemporaryErrorNotSticky pins the crypto/tls behaviour the
// loop-driven design relies on: after the handshake, a temporary net.Error
// from the underlying Read is returned but not kept, so the next Read works.
// If a Go upgrade makes it sticky, every TLS session would die at its first
// drained read; this test fails first.
func TestTLSTemporaryErrorNotSticky(t *testing.T) {
	dir := t.TempDir()
	certs, err := newCertSource("", "", "localhost", dir)
	if err != nil {
		t.Fatal(err)
	}
	cfg, _ := tlsConfigs(certs, false, nil)
	for _, version := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		t.Run(tls.VersionName(version), func(t *testing.T) {
			a, b := net.Pipe()
			defer a.Close()
			defer b.Close()
			_ = a.SetDeadline(time.Now().Add(10 * time.Second))
			_ = b.SetDeadline(time.Now().Add(10 * time.Second))
			sc := &dryConn{Conn: a}
			server := tls.Server(sc, cfg)
			client := tls.Client(b, &tls.Config{InsecureSkipVerify: true, MinVersion: version, MaxVersion: version})
			errc := make(chan error, 1)
			go func() { errc <- client.Handshake() }()
			if err := server.Handshake(); err != nil {
				t.Fatal(err)
			}
			if err := <-errc; err != nil {
				t.Fatal(err)
			}
			sc.dry.Store(true)
			buf := make([]byte, 64)
			if _, err := server.Read(buf); !errors.Is(err, errWouldBlock) {
				t.Fatalf("drained Read = %v, want errWouldBlock", err)
			}
			sc.dry.Store(false)
			go func() { _, _ = client.Write([]byte("hello")) }()
			n, err := server.Read(buf)
			if err != nil || string(buf[:n]) != "hello" {
				t.Fatalf("Read after a temporary error = %q, %v; crypto/tls kept the error", buf[:n], err)
			}
		})
	}
}

// TestDevCertReused: the generated certificate is written once and reused.
func TestDevCertReused(t *testing.T) {
	dir := t.TempDir()
	a, err := newCertSource("", "", "localhost", dir)
	if err != nil {
		t.Fatal(err)
	}
	b, err := newCertSource("", "", "localhost", dir)
	if err != nil {
		t.Fatal(err)
	}
	if string(a.cert.Load().Certificate[0]) != string(b.cert.Load().Certificate[0]) {
		t.Fatal("a second start generated a new certificate")
	}
	if _, err := newCertSource(filepath.Join(dir, "missing.pem"), filepath.Join(dir, "missing.key"), "localhost", dir); err == nil {
		t.Fatal("a missing configured certificate was accepted")
	}
	c, err := newCertSource("", "", "other.example", dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.cert.Load().Leaf.VerifyHostname("other.example"); err != nil {
		t.Fatalf("certificate for a changed domain: %v", err)
	}
}
