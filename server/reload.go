package server

import (
	"fmt"
	"reflect"
	"slices"
	"sort"
	"strings"

	"go.uber.org/zap"

	"github.com/krill-xmpp/krill/config"
)

// Live reload. The configuration the server started with (s.cfg) never
// changes; the keys listed in liveKeys are read through s.conf(), an atomic
// pointer that Reload swaps, and the limiters that keep their own copy are
// updated under their locks. Everything else needs a restart, and Reload
// says so.

// liveKeys are the configuration keys (and key prefixes, ending in ".")
// that apply without a restart. log.level is applied by the caller, who
// owns the logger.
var liveKeys = []string{
	"preauth.", "c2s.idle_ping", "c2s.max_outbound", "c2s.ping_timeout", "c2s.max_stanza_size", "c2s.max_depth",
	"tls.max_handshakes", "tls.max_handshake_queue", "tls.handshake_timeout", "tls.idle_release", "im.offline_quota", "im.max_roster_items", "im.max_blocklist_items", "im.offline_quota_bytes",
	"register.max_per_ip", "register.window", "log.level",
}

// restartOnly are keys under a live prefix that still need a restart: the
// address prefix lengths. The pre-auth limiter releases a connection under
// the key it was counted under, recomputed from the address, and the
// windows hold counts by key; counts taken under one length cannot be
// moved to another (a /24's count cannot be split into its /32s), and
// starting them afresh would let a reload reset the throttles.
var restartOnly = []string{"preauth.ipv4_prefix", "preauth.ipv6_prefix"}

func isLive(key string) bool {
	if slices.Contains(restartOnly, key) {
		return false
	}
	for _, k := range liveKeys {
		if key == k || (strings.HasSuffix(k, ".") && strings.HasPrefix(key, k)) {
			return true
		}
	}
	return false
}

// conf returns the configuration in force for live keys.
func (s *Server) conf() *config.Config { return s.live.Load() }

// Reload applies next: the live keys at once, for new connections and new
// deadlines (existing deadlines keep theirs), and the certificates, read
// again. It returns the keys that changed and, of those, the ones that
// need a restart to apply; they are also logged. next is validated first;
// an invalid configuration changes nothing.
func (s *Server) Reload(next config.Config) (changed, restart []string, err error) {
	if err := next.Validate(); err != nil {
		return nil, nil, fmt.Errorf("server: reload: invalid configuration:\n%w", err)
	}
	cur := s.conf()
	was, now := flat(*cur), flat(next)
	merged := *cur
	for key, v := range now {
		if reflect.DeepEqual(was[key], v) {
			continue
		}
		changed = append(changed, key)
		if !isLive(key) {
			restart = append(restart, key)
		}
	}
	sort.Strings(changed)
	sort.Strings(restart)
	merged.Preauth = next.Preauth
	merged.Preauth.IPv4Prefix, merged.Preauth.IPv6Prefix = cur.Preauth.IPv4Prefix, cur.Preauth.IPv6Prefix
	merged.C2S.IdlePing, merged.C2S.PingTimeout = next.C2S.IdlePing, next.C2S.PingTimeout
	merged.C2S.MaxStanzaSize, merged.C2S.MaxDepth = next.C2S.MaxStanzaSize, next.C2S.MaxDepth
	merged.C2S.MaxOutbound = next.C2S.MaxOutbound
	merged.TLS.MaxHandshakes, merged.TLS.HandshakeTimeout = next.TLS.MaxHandshakes, next.TLS.HandshakeTimeout
	merged.TLS.MaxHandshakeQueue, merged.TLS.IdleRelease = next.TLS.MaxHandshakeQueue, next.TLS.IdleRelease
	merged.TLS.KeyUpdateRecords = next.TLS.KeyUpdateRecords
	merged.IM.OfflineQuota, merged.IM.MaxRosterItems = next.IM.OfflineQuota, next.IM.MaxRosterItems
	merged.Register.MaxPerIP, merged.Register.Window = next.Register.MaxPerIP, next.Register.Window
	merged.Log.Level = next.Log.Level
	s.live.Store(&merged)
	s.preauth.setCaps(next.Preauth.MaxPerIP, next.Preauth.MaxTotal)
	s.handshakes.setLimits(next.TLS.MaxHandshakes, next.TLS.MaxHandshakeQueue)
	if err := s.ReloadCertificates(); err != nil {
		return changed, restart, err
	}
	s.log.Info("configuration reloaded", zap.Strings("changed", changed), zap.Strings("needs_restart", restart))
	return changed, restart, nil
}

// flat returns c's keys and values, as config.Keys does for the defaults.
func flat(c config.Config) map[string]any { return config.Flatten(c) }

// setCaps changes the pre-auth caps; connections already counted stay.
func (p *preauthLimiter) setCaps(perIP, total int) {
	p.mu.Lock()
	p.perIP, p.total = perIP, total
	p.mu.Unlock()
}

// setLimits changes the handshake cap and the queue's; waiting handshakes
// start as slots free. Connections already queued stay when the queue
// shrinks.
func (h *handshakeLimiter) setLimits(max, maxQueue int) {
	h.mu.Lock()
	h.max, h.maxQueue = max, maxQueue
	var start []*tlsConn
	for h.active < h.max && len(h.wait) > 0 {
		h.active++
		start = append(start, h.wait[0])
		h.wait[0] = nil
		h.wait = h.wait[1:]
	}
	h.mu.Unlock()
	for _, next := range start {
		h.handOver(next)
	}
}
