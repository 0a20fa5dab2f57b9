package server

import (
	"net/netip"
	"sync"

	"mellium.im/xmpp/stream"
)

// preauthLimiter caps unauthenticated connections per source address and
// in total. A zero cap means no cap. It is shared by all loops.
type preauthLimiter struct {
	perIP, total int
	mu           sync.Mutex
	n            int
	byIP         map[netip.Addr]int32
}

func (p *preauthLimiter) init(perIP, total int) {
	p.perIP, p.total = perIP, total
	p.byIP = make(map[netip.Addr]int32)
}

// acquire counts a new connection from ip. It returns "" when admitted, or
// the stream-error condition that refuses it.
func (p *preauthLimiter) acquire(ip netip.Addr) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.total > 0 && p.n >= p.total {
		return stream.ResourceConstraint.Err
	}
	if p.perIP > 0 && int(p.byIP[ip]) >= p.perIP {
		return stream.PolicyViolation.Err
	}
	p.n++
	p.byIP[ip]++
	return ""
}

// release uncounts a connection from ip.
func (p *preauthLimiter) release(ip netip.Addr) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.n--
	if v := p.byIP[ip] - 1; v > 0 {
		p.byIP[ip] = v
	} else {
		delete(p.byIP, ip)
	}
}

// count returns the connections currently counted.
func (p *preauthLimiter) count() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.n
}
