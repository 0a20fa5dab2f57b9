package server

import (
	"net/netip"
	"sync"

	"mellium.im/xmpp/stream"

	"github.com/krill-xmpp/krill/config"
	"github.com/krill-xmpp/krill/ratelimit"
)

// preauthLimiter caps unauthenticated connections per source address
// prefix and in total. A zero cap means no cap. It is shared by all loops.
//
// It counts by prefix (preauth.ipv4_prefix, preauth.ipv6_prefix), fixed at
// init: a connection is released under the key it was acquired under, and
// a connection does not keep its key, so the lengths cannot change while
// connections are counted. They need a restart.
type preauthLimiter struct {
	perIP, total int
	prefixes     ratelimit.Prefixes
	mu           sync.Mutex
	n            int
	byIP         map[netip.Prefix]int32
}

func (p *preauthLimiter) init(perIP, total int, prefixes ratelimit.Prefixes) {
	p.perIP, p.total, p.prefixes = perIP, total, prefixes
	p.byIP = make(map[netip.Prefix]int32)
}

// acquire counts a new connection from ip. It returns "" when admitted, or
// the stream-error condition that refuses it.
func (p *preauthLimiter) acquire(ip netip.Addr) string {
	k := p.prefixes.Key(ip)
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.total > 0 && p.n >= p.total {
		return stream.ResourceConstraint.Err
	}
	if p.perIP > 0 && int(p.byIP[k]) >= p.perIP {
		return stream.PolicyViolation.Err
	}
	p.n++
	p.byIP[k]++
	return ""
}

// release uncounts a connection from ip.
func (p *preauthLimiter) release(ip netip.Addr) {
	k := p.prefixes.Key(ip)
	p.mu.Lock()
	defer p.mu.Unlock()
	p.n--
	if v := p.byIP[k] - 1; v > 0 {
		p.byIP[k] = v
	} else {
		delete(p.byIP, k)
	}
}

// count returns the connections currently counted.
func (p *preauthLimiter) count() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.n
}

// prefixes returns the prefix lengths every per-address limit counts by.
// They are the start-up values: Reload keeps them (see restartOnly).
func prefixes(c *config.Config) ratelimit.Prefixes {
	return ratelimit.Prefixes{V4: c.Preauth.IPv4Prefix, V6: c.Preauth.IPv6Prefix}
}

// failureLimit is the per-address login-failure throttle in force.
func (s *Server) failureLimit() ratelimit.Limit {
	c := s.conf()
	return ratelimit.Limit{Max: c.Preauth.MaxFailuresPerIP, Window: c.Preauth.FailureWindow, Prefixes: prefixes(c)}
}
