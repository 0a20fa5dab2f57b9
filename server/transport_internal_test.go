package server

import (
	"net"
	"net/netip"
	"testing"
	"unsafe"
)

// TestConnSize pins the size of conn: every accepted socket has one,
// hostile ones included, and 256 bytes is its size class. The transport
// interface took a word more than the *tlsConn it replaced; peerAddr gave
// it back.
func TestConnSize(t *testing.T) {
	if got := unsafe.Sizeof(conn{}); got > 256 {
		t.Fatalf("unsafe.Sizeof(conn{}) = %d, want <= 256", got)
	}
	if got := unsafe.Sizeof(plainTCP{}); got != 0 {
		t.Fatalf("unsafe.Sizeof(plainTCP{}) = %d, want 0", got)
	}
}

// TestPlainTransportAllocatesNothing: a plain connection's layer is a
// zero-size value, so storing it in conn.tr allocates nothing.
func TestPlainTransportAllocatesNothing(t *testing.T) {
	var c conn
	if n := testing.AllocsPerRun(100, func() { c.tr = plainTCP{} }); n != 0 {
		t.Fatalf("setting the plain transport: %v allocs, want 0", n)
	}
}

// TestPeerAddr checks that a client's address survives peerAddr's 16 bytes
// exactly as addrIP produces it, so that the pre-auth counters are released
// for the address they were taken for.
func TestPeerAddr(t *testing.T) {
	tests := []struct {
		name string
		addr net.Addr
		want string
	}{
		{"ipv4", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1}, "127.0.0.1"},
		{"ipv4 in 4 bytes", &net.TCPAddr{IP: net.IP{192, 0, 2, 7}, Port: 1}, "192.0.2.7"},
		{"ipv6", &net.TCPAddr{IP: net.ParseIP("2001:db8::1"), Port: 1}, "2001:db8::1"},
		{"ipv6 link-local with a zone", &net.TCPAddr{IP: net.ParseIP("fe80::1"), Zone: "eth0", Port: 1}, "fe80::1"},
		{"not tcp", &net.UnixAddr{Name: "/x", Net: "unix"}, "invalid IP"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ip := addrIP(tc.addr)
			p := makePeerAddr(ip)
			if got := p.Addr(); got != ip {
				t.Fatalf("peerAddr round trip: got %v, want %v (addrIP)", got, ip)
			}
			if got := p.String(); got != tc.want {
				t.Fatalf("String() = %q, want %q", got, tc.want)
			}
			if ip.IsValid() && ip != netip.MustParseAddr(tc.want) {
				t.Fatalf("addrIP = %v, want %v", ip, tc.want)
			}
		})
	}
}
