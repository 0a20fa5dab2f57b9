package ratelimit

import (
	"net/netip"
	"testing"
	"time"
)

func TestWindow(t *testing.T) {
	a := netip.MustParseAddr("127.0.0.1")
	b := netip.MustParseAddr("::1")
	t0 := time.Unix(1_000_000, 0)
	l := Limit{Max: 2, Window: time.Minute}
	type step struct {
		name  string
		op    string // "allow", "add", "over"
		addr  netip.Addr
		at    time.Duration
		limit Limit
		want  bool
	}
	var w Window
	for _, s := range []step{
		{"first", "allow", a, 0, l, true},
		{"second", "allow", a, time.Second, l, true},
		{"third refused", "allow", a, 2 * time.Second, l, false},
		{"over", "over", a, 3 * time.Second, l, true},
		{"per address", "allow", b, 3 * time.Second, l, true},
		{"b not over", "over", b, 3 * time.Second, l, false},
		{"raised limit applies at once", "allow", a, 4 * time.Second, Limit{Max: 3, Window: time.Minute}, true},
		{"no limit", "allow", a, 5 * time.Second, Limit{}, true},
		{"no limit is never over", "over", a, 5 * time.Second, Limit{}, false},
		{"new window", "allow", a, time.Minute, l, true},
		{"add counts", "add", a, time.Minute + time.Second, l, false},
		{"now over", "over", a, time.Minute + time.Second, l, true},
		{"clock back starts afresh", "allow", a, -time.Hour, l, true},
	} {
		var got bool
		switch s.op {
		case "allow":
			got = w.Allow(s.addr, t0.Add(s.at), s.limit)
		case "add":
			w.Add(s.addr, t0.Add(s.at), s.limit)
		case "over":
			got = w.Over(s.addr, t0.Add(s.at), s.limit)
		}
		if got != s.want {
			t.Fatalf("%s: %s = %v, want %v", s.name, s.op, got, s.want)
		}
	}
}

func TestKey(t *testing.T) {
	def := Prefixes{V4: 32, V6: 64}
	cases := []struct {
		name string
		p    Prefixes
		addr string
		want string
	}{
		{"IPv4 whole by default", def, "192.0.2.7", "192.0.2.7/32"},
		{"IPv4 /24", Prefixes{V4: 24, V6: 64}, "192.0.2.7", "192.0.2.0/24"},
		{"IPv4 /1", Prefixes{V4: 1, V6: 64}, "192.0.2.7", "128.0.0.0/1"},
		{"IPv6 /64 by default", def, "2001:db8:1:2:aaaa:bbbb:cccc:dddd", "2001:db8:1:2::/64"},
		{"IPv6 /48", Prefixes{V4: 32, V6: 48}, "2001:db8:1:2::1", "2001:db8:1::/48"},
		{"IPv6 /128", Prefixes{V4: 32, V6: 128}, "2001:db8::1", "2001:db8::1/128"},
		{"IPv6 /1", Prefixes{V4: 32, V6: 1}, "2001:db8::1", "::/1"},
		{"IPv6 loopback", def, "::1", "::/64"},
		{"IPv6 zone dropped", def, "fe80::1%eth0", "fe80::/64"},
		{"IPv4-mapped is IPv4", Prefixes{V4: 24, V6: 64}, "::ffff:192.0.2.7", "192.0.2.0/24"},
		{"IPv4-mapped whole is IPv4", def, "::ffff:192.0.2.7", "192.0.2.7/32"},
		{"zero value: whole IPv4", Prefixes{}, "192.0.2.7", "192.0.2.7/32"},
		{"zero value: whole IPv6", Prefixes{}, "2001:db8::1", "2001:db8::1/128"},
		{"IPv4 length out of range: whole", Prefixes{V4: 33, V6: 64}, "192.0.2.7", "192.0.2.7/32"},
		{"IPv6 length out of range: whole", Prefixes{V4: 32, V6: 129}, "2001:db8::1", "2001:db8::1/128"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := tc.p.Key(netip.MustParseAddr(tc.addr))
			if got != netip.MustParsePrefix(tc.want) {
				t.Fatalf("Key(%s) = %s, want %s", tc.addr, got, tc.want)
			}
		})
	}
	t.Run("zero Addr", func(t *testing.T) {
		if got := def.Key(netip.Addr{}); got != (netip.Prefix{}) {
			t.Fatalf("Key(zero) = %s, want the zero Prefix", got)
		}
	})
}

func TestKeyDoesNotAllocate(t *testing.T) {
	p := Prefixes{V4: 24, V6: 64}
	addrs := []netip.Addr{
		netip.MustParseAddr("192.0.2.7"),
		netip.MustParseAddr("2001:db8::1"),
		netip.MustParseAddr("fe80::1%eth0"),
		netip.MustParseAddr("::ffff:192.0.2.7"),
	}
	var sink netip.Prefix
	if n := testing.AllocsPerRun(100, func() {
		for _, a := range addrs {
			sink = p.Key(a)
		}
	}); n != 0 {
		t.Fatalf("Key allocates %v times per run", n)
	}
	_ = sink
}

// TestWindowPrefixes: addresses in one prefix share a count; the next
// prefix, and IPv4-mapped IPv6, count as they should.
func TestWindowPrefixes(t *testing.T) {
	t0 := time.Unix(1_000_000, 0)
	l := Limit{Max: 1, Window: time.Minute, Prefixes: Prefixes{V4: 24, V6: 64}}
	var w Window
	for _, s := range []struct {
		name, addr string
		want       bool
	}{
		{"first in the /64", "2001:db8:0:1::1", true},
		{"another in the same /64", "2001:db8:0:1:ffff:ffff:ffff:ffff", false},
		{"the next /64", "2001:db8:0:2::1", true},
		{"first in the /24", "192.0.2.1", true},
		{"another in the same /24", "192.0.2.200", false},
		{"the same /24, IPv4-mapped", "::ffff:192.0.2.9", false},
		{"the next /24, IPv4-mapped", "::ffff:192.0.3.9", true},
		{"the next /24", "192.0.3.1", false},
	} {
		if got := w.Allow(netip.MustParseAddr(s.addr), t0, l); got != s.want {
			t.Fatalf("%s: Allow(%s) = %v, want %v", s.name, s.addr, got, s.want)
		}
	}
}
