// Package ratelimit counts events per source address over fixed windows:
// accounts registered from an address, failed logins from it. It is the
// one counter the server and its modules share, so that every per-address
// limit behaves alike.
package ratelimit

import (
	"net/netip"
	"sync"
	"time"
)

// Limit is how many events an address may cause per Window. A Max <= 0
// means no limit.
type Limit struct {
	Max    int
	Window time.Duration
}

// Window counts events per address over fixed windows. Its zero value is
// ready to use; it is safe for concurrent use. The map is replaced, not
// trimmed, when a window ends, so it never holds more than one window's
// addresses.
//
// The limit is passed to each call rather than kept, so that a caller
// reading a live configuration applies a reload at once; a changed window
// length takes effect when the current window ends.
type Window struct {
	mu     sync.Mutex
	start  time.Time
	byAddr map[netip.Addr]int
}

// roll starts a new window when the current one is over. Called locked.
func (w *Window) roll(now time.Time, l Limit) {
	if w.byAddr == nil || now.Sub(w.start) >= l.Window || now.Before(w.start) {
		w.byAddr, w.start = make(map[netip.Addr]int), now
	}
}

// Over reports whether a has reached l in the current window.
func (w *Window) Over(a netip.Addr, now time.Time, l Limit) bool {
	if l.Max <= 0 {
		return false
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.roll(now, l)
	return w.byAddr[a] >= l.Max
}

// Add counts one event from a.
func (w *Window) Add(a netip.Addr, now time.Time, l Limit) {
	if l.Max <= 0 {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.roll(now, l)
	w.byAddr[a]++
}

// Allow counts one event from a unless a has reached l, and reports
// whether it was counted.
func (w *Window) Allow(a netip.Addr, now time.Time, l Limit) bool {
	if l.Max <= 0 {
		return true
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.roll(now, l)
	if w.byAddr[a] >= l.Max {
		return false
	}
	w.byAddr[a]++
	return true
}
