package server

import (
	"net/netip"
	"testing"

	"mellium.im/xmpp/stream"

	"github.com/krill-xmpp/krill/ratelimit"
)

// TestPreauthLimiterPrefixes: the pre-auth cap counts an IPv6 /64 (and an
// IPv4 /24 here) as one address, IPv4-mapped IPv6 as IPv4, and releases a
// connection under the key it was counted under, leaving no entry behind.
// IPv6 is tested here with constructed addresses: the loopback has only ::1.
func TestPreauthLimiterPrefixes(t *testing.T) {
	var p preauthLimiter
	p.init(1, 0, ratelimit.Prefixes{V4: 24, V6: 64})
	policy := stream.PolicyViolation.Err
	for _, s := range []struct {
		op, addr, want string // op: acquire or release
	}{
		{"acquire", "2001:db8:0:1::1", ""},
		{"acquire", "2001:db8:0:1:ffff:ffff:ffff:ffff", policy},
		{"acquire", "2001:db8:0:2::1", ""},
		{"release", "2001:db8:0:1::1", ""},
		{"acquire", "2001:db8:0:1::2", ""},
		{"acquire", "192.0.2.1", ""},
		{"acquire", "192.0.2.254", policy},
		{"acquire", "::ffff:192.0.2.9", policy},
		{"acquire", "::ffff:192.0.3.9", ""},
		{"acquire", "192.0.3.1", policy},
		{"release", "192.0.3.1", ""}, // the mapped address's slot, by key
		{"acquire", "192.0.3.1", ""},
		{"release", "2001:db8:0:1::2", ""},
		{"release", "2001:db8:0:2::1", ""},
		{"release", "192.0.2.1", ""},
		{"release", "::ffff:192.0.3.1", ""},
	} {
		a := netip.MustParseAddr(s.addr)
		if s.op == "release" {
			p.release(a)
			continue
		}
		if got := p.acquire(a); got != s.want {
			t.Fatalf("acquire(%s) = %q, want %q", s.addr, got, s.want)
		}
	}
	if p.count() != 0 || len(p.byIP) != 0 {
		t.Fatalf("after releasing everything: count %d, entries %v", p.count(), p.byIP)
	}
}
