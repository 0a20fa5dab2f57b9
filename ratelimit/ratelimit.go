// Package ratelimit counts events per source address over fixed windows:
// accounts registered from an address, failed logins from it. It is the
// one counter the server and its modules share, so that every per-address
// limit behaves alike.
//
// An address is counted under its network prefix, not in full (Prefixes):
// whoever holds an IPv6 /64 holds 2^64 addresses, so a limit per full
// IPv6 address limits nothing.
package ratelimit

import (
	"net/netip"
	"sync"
	"time"
)

// Prefixes are how many leading bits of a source address identify one
// client for per-address limits: preauth.ipv4_prefix and
// preauth.ipv6_prefix. A length <= 0, or longer than the address, means
// the whole address (so the zero value counts full addresses).
type Prefixes struct {
	V4, V6 int
}

// Key returns the prefix a is counted under: its first V4 bits if it is
// IPv4 or IPv4-mapped IPv6 (::ffff:192.0.2.1 is the IPv4 client 192.0.2.1,
// as a dual-stack listener reports it), its first V6 bits otherwise. An
// IPv6 zone is dropped. The zero Addr gives the zero Prefix. It does not
// allocate.
func (p Prefixes) Key(a netip.Addr) netip.Prefix {
	a = a.Unmap()
	bits := p.V6
	if a.Is4() {
		bits = p.V4
	}
	if bits <= 0 || bits > a.BitLen() {
		bits = a.BitLen()
	}
	k, _ := a.Prefix(bits) // bits is in range; the zero Addr gives Prefix{}
	return k
}

// Limit is how many events an address may cause per Window, counted per
// Prefixes. A Max <= 0 means no limit.
type Limit struct {
	Max      int
	Window   time.Duration
	Prefixes Prefixes
}

// Window counts events per address prefix over fixed windows. Its zero
// value is ready to use; it is safe for concurrent use. The map is
// replaced, not trimmed, when a window ends, so it never holds more than
// one window's prefixes.
//
// The limit is passed to each call rather than kept, so that a caller
// reading a live configuration applies a reload at once; a changed window
// length takes effect when the current window ends. The prefix lengths
// must not change while a window runs (the server reads them once, at
// start): counts taken under one length would not be found under another.
type Window struct {
	mu     sync.Mutex
	start  time.Time
	byAddr map[netip.Prefix]int
}

// roll starts a new window when the current one is over. Called locked.
func (w *Window) roll(now time.Time, l Limit) {
	if w.byAddr == nil || now.Sub(w.start) >= l.Window || now.Before(w.start) {
		w.byAddr, w.start = make(map[netip.Prefix]int), now
	}
}

// Over reports whether a's prefix has reached l in the current window.
func (w *Window) Over(a netip.Addr, now time.Time, l Limit) bool {
	if l.Max <= 0 {
		return false
	}
	k := l.Prefixes.Key(a)
	w.mu.Lock()
	defer w.mu.Unlock()
	w.roll(now, l)
	return w.byAddr[k] >= l.Max
}

// Add counts one event from a's prefix.
func (w *Window) Add(a netip.Addr, now time.Time, l Limit) {
	if l.Max <= 0 {
		return
	}
	k := l.Prefixes.Key(a)
	w.mu.Lock()
	defer w.mu.Unlock()
	w.roll(now, l)
	w.byAddr[k]++
}

// Allow counts one event from a's prefix unless it has reached l, and
// reports whether it was counted.
func (w *Window) Allow(a netip.Addr, now time.Time, l Limit) bool {
	if l.Max <= 0 {
		return true
	}
	k := l.Prefixes.Key(a)
	w.mu.Lock()
	defer w.mu.Unlock()
	w.roll(now, l)
	if w.byAddr[k] >= l.Max {
		return false
	}
	w.byAddr[k]++
	return true
}
