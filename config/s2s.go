package config

import (
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"
)

// S2S configures federation (RFC 6120 server-to-server streams): the
// listeners other servers connect to, how this server reaches them, and
// how it authenticates them.
type S2S struct {
	// Listen is the host:port other servers connect to (STARTTLS);
	// empty disables inbound federation. The embedded default is
	// loopback: a server federates publicly only when told to.
	Listen string `koanf:"listen"`
	// DirectTLSListen is the XEP-0368 direct TLS listener (ALPN
	// xmpp-server); empty disables it.
	DirectTLSListen string `koanf:"direct_tls_listen"`
	// Routes maps a remote domain to the host:port to connect to, instead
	// of DNS SRV (_xmpps-server._tcp, _xmpp-server._tcp) and A/AAAA: for
	// private networks and tests. Set in a [s2s.routes] table.
	Routes map[string]string `koanf:"routes"`
	// IdleTimeout closes an s2s stream, either direction, after this long
	// without a stanza; the next stanza opens a new one. 0 keeps streams.
	IdleTimeout time.Duration `koanf:"idle_timeout"`
	// ConnectTimeout bounds an outbound stream from the first stanza
	// queued to authentication (DNS, TCP, TLS, SASL or dialback); then
	// what waits is bounced with remote-server-timeout.
	ConnectTimeout time.Duration `koanf:"connect_timeout"`
	// RequireValidCerts refuses a peer whose certificate does not
	// validate for its domain (no dialback fallback), in both directions.
	RequireValidCerts bool `koanf:"require_valid_certs"`
	// RequireValidCertsFor overrides RequireValidCerts per remote domain,
	// in a [s2s.require_valid_certs_for] table (domain = true/false).
	RequireValidCertsFor map[string]bool `koanf:"require_valid_certs_for"`
	// CAFile is a PEM bundle of the authorities peer certificates are
	// validated against; empty means the system's.
	CAFile string `koanf:"ca_file"`
	// MaxQueueBytes caps the stanzas waiting for one outbound stream to
	// authenticate; beyond it a stanza is bounced with
	// resource-constraint.
	MaxQueueBytes int `koanf:"max_queue_bytes"`
	// MaxStanzaSize is the largest stanza an authenticated peer may send.
	MaxStanzaSize int `koanf:"max_stanza_size"`
	// MaxStreamsPerDomain caps the authenticated inbound streams of one
	// peer domain, over all the domains this server hosts; one more is
	// refused with policy-violation when it authenticates. A peer needs
	// one stream per hosted domain it talks to (the main domain, the MUC
	// service, upload, a component) and briefly one more while it
	// replaces a stream. 0 is no cap.
	MaxStreamsPerDomain int `koanf:"max_streams_per_domain"`
	// MaxDials caps the outbound connections being set up at once (DNS
	// and TCP connect, on goroutines of their own rather than the worker
	// pool); further links wait their turn. Stop cancels them.
	MaxDials int `koanf:"max_dials"`
	// MaxPendingLinks caps the outbound streams being set up at once
	// (queued for a dial, connecting, negotiating); a stanza for one more
	// new domain is bounced with resource-constraint (type wait) until
	// some are up or given up. With MaxPendingBytes it bounds what a
	// client naming many unreachable domains can make the server hold.
	MaxPendingLinks int `koanf:"max_pending_links"`
	// MaxPendingBytes caps the stanzas queued, over all the outbound
	// streams being set up, for their authentication; beyond it a stanza
	// is bounced with resource-constraint.
	MaxPendingBytes int `koanf:"max_pending_bytes"`
}

// Federation defaults.
const (
	DefaultS2SListen         = "127.0.0.1:5269"
	DefaultS2SIdleTimeout    = 10 * time.Minute
	DefaultS2SConnectTimeout = 30 * time.Second
	DefaultS2SMaxQueueBytes  = 256 << 10
	// DefaultS2SMaxStreamsPerDomain is 8: a peer's stream to each of a
	// typical server's hosted domains (main, MUC, upload, a component or
	// two) with room for one being replaced, and still a small fraction
	// of preauth.max_per_ip for a peer that opens streams in a loop.
	DefaultS2SMaxStreamsPerDomain = 8
	// DefaultS2SMaxDials is 16 connects in flight: each is a goroutine
	// and a socket for at most connect_timeout, and a server rarely
	// starts talking to more than a few new domains at once.
	DefaultS2SMaxDials = 16
	// DefaultS2SMaxPendingLinks is 4,096 streams being set up: a server
	// restarting with contacts on a few thousand domains reaches them all
	// at once, and each costs a few hundred bytes besides its queue.
	DefaultS2SMaxPendingLinks = 4096
	// DefaultS2SMaxPendingBytes is 64 MiB of stanzas waiting for those
	// streams, a few KB each for thousands of domains at once.
	DefaultS2SMaxPendingBytes = 64 << 20
)

// RequireValidCertsFrom reports whether domain must present a valid
// certificate (s2s.require_valid_certs and its per-domain override).
func (s *S2S) RequireValidCertsFrom(domain string) bool {
	if v, ok := s.RequireValidCertsFor[domain]; ok {
		return v
	}
	return s.RequireValidCerts
}

func defaultS2S() S2S {
	return S2S{Listen: DefaultS2SListen, IdleTimeout: DefaultS2SIdleTimeout,
		ConnectTimeout: DefaultS2SConnectTimeout, MaxQueueBytes: DefaultS2SMaxQueueBytes,
		MaxStanzaSize: DefaultMaxStanzaSize, MaxStreamsPerDomain: DefaultS2SMaxStreamsPerDomain,
		MaxDials: DefaultS2SMaxDials, MaxPendingLinks: DefaultS2SMaxPendingLinks, MaxPendingBytes: DefaultS2SMaxPendingBytes}
}

func (c *Config) validateS2S(bad func(key string, v any, why string)) {
	s := &c.S2S
	for key, v := range map[string]string{"s2s.listen": s.Listen, "s2s.direct_tls_listen": s.DirectTLSListen} {
		if v == "" {
			continue
		}
		if _, _, err := net.SplitHostPort(v); err != nil {
			bad(key, v, "must be host:port or empty")
		}
	}
	for d, addr := range s.Routes {
		if _, _, err := net.SplitHostPort(addr); err != nil || d == "" {
			bad("s2s.routes."+d, addr, "must be host:port")
		}
	}
	if s.IdleTimeout < 0 {
		bad("s2s.idle_timeout", s.IdleTimeout, "must be >= 0")
	}
	if s.ConnectTimeout <= 0 {
		bad("s2s.connect_timeout", s.ConnectTimeout, "must be > 0")
	}
	if s.MaxQueueBytes < 1024 {
		bad("s2s.max_queue_bytes", s.MaxQueueBytes, "must be >= 1024")
	}
	if s.MaxStanzaSize < 1024 {
		bad("s2s.max_stanza_size", s.MaxStanzaSize, "must be >= 1024")
	}
	if s.MaxStreamsPerDomain < 0 {
		bad("s2s.max_streams_per_domain", s.MaxStreamsPerDomain, "must be >= 0 (0: no cap)")
	}
	if s.MaxDials < 1 {
		bad("s2s.max_dials", s.MaxDials, "must be >= 1")
	}
	if s.MaxPendingLinks < 1 {
		bad("s2s.max_pending_links", s.MaxPendingLinks, "must be >= 1")
	}
	if s.MaxPendingBytes < s.MaxQueueBytes {
		bad("s2s.max_pending_bytes", s.MaxPendingBytes, "must be >= s2s.max_queue_bytes")
	}
	if c.Component.Listen != "" {
		if _, _, err := net.SplitHostPort(c.Component.Listen); err != nil {
			bad("component.listen", c.Component.Listen, "must be host:port or empty")
		}
	}
	for d, secret := range c.Component.Secrets {
		if secret == "" || d == c.Domain || strings.ContainsAny(d, "@/ ") {
			bad("component.secrets."+d, "(secret)", "must be a non-empty secret for a domain other than the server's")
		}
	}
}

// dottedTables are the tables keyed by domain names, whose dots are not
// key separators.
var dottedTables = []string{"s2s.routes", "s2s.require_valid_certs_for", "component.secrets"}

// domainTable returns the flat entries of a table keyed by domain names:
// koanf splits keys at dots, so "b.test" arrives as nested tables, which
// are joined again here.
func domainTable(all map[string]any, prefix string) map[string]string {
	out := make(map[string]string)
	for k, v := range all {
		if d, ok := strings.CutPrefix(k, prefix+"."); ok {
			out[d] = fmt.Sprint(v)
		}
	}
	return out
}

// setDomainTables fills the domain-keyed tables of c from flat keys.
func setDomainTables(c *Config, all map[string]any) error {
	routes := domainTable(all, "s2s.routes")
	if len(routes) > 0 {
		c.S2S.Routes = routes
	}
	if secrets := domainTable(all, "component.secrets"); len(secrets) > 0 {
		c.Component.Secrets = secrets
	}
	req := domainTable(all, "s2s.require_valid_certs_for")
	if len(req) > 0 {
		c.S2S.RequireValidCertsFor = make(map[string]bool, len(req))
		for d, v := range req {
			b, err := strconv.ParseBool(v)
			if err != nil {
				return fmt.Errorf("config: s2s.require_valid_certs_for.%s: %w", d, err)
			}
			c.S2S.RequireValidCertsFor[d] = b
		}
	}
	return nil
}

// Component configures XEP-0114 external components: trusted services
// (gateways, push app servers) that connect over TCP, authenticate with a
// shared secret and serve a subdomain.
type Component struct {
	// Listen is the host:port components connect to; the listener runs
	// only when Secrets names at least one component. Keep it on loopback
	// or a private network: the protocol has no TLS.
	Listen string `koanf:"listen"`
	// Secrets maps each component's domain to its shared secret, in a
	// [component.secrets] table.
	Secrets map[string]string `koanf:"secrets"`
}

// DefaultComponentListen is Prosody's component port, on loopback.
const DefaultComponentListen = "127.0.0.1:5347"
