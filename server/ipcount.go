package server

import (
	"net/netip"
	"sync"
	"time"
)

// ipCounter counts events per source address over fixed windows: accounts
// registered, failed logins. A zero max means no limit. It is shared by all
// loops; the map is replaced, not trimmed, at each window, so it never
// holds more than one window's addresses.
type ipCounter struct {
	max    int
	window time.Duration
	mu     sync.Mutex
	start  time.Time
	byIP   map[netip.Addr]int
}

// roll starts a new window when the current one is over. Called locked.
func (r *ipCounter) roll(now time.Time) {
	if r.byIP == nil || now.Sub(r.start) >= r.window {
		r.byIP, r.start = make(map[netip.Addr]int), now
	}
}

// over reports whether ip has reached the limit in this window.
func (r *ipCounter) over(ip netip.Addr, now time.Time) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.max <= 0 {
		return false
	}
	r.roll(now)
	return r.byIP[ip] >= r.max
}

// add counts one event from ip.
func (r *ipCounter) add(ip netip.Addr, now time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.max <= 0 {
		return
	}
	r.roll(now)
	r.byIP[ip]++
}
