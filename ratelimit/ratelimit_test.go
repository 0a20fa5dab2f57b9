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
