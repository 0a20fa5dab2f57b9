// Package config defines Krill's configuration: one struct with documented
// defaults, loaded from a TOML file, KRILL_* environment variables and
// command-line flags, in that order of precedence (flags win).
//
// Every key has exactly one name, used in all three places:
//
//	TOML:  [preauth] timeout = "5s"
//	env:   KRILL_PREAUTH_TIMEOUT=5s
//	flag:  --preauth.timeout=5s
package config

import (
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"time"
)

// Config is the whole server configuration. The zero value is not useful;
// start from Default. A Config must not be modified once a server uses it.
type Config struct {
	// Domain is the XMPP domain this server hosts (one domain per server).
	Domain string `koanf:"domain"`
	// DataDir holds the embedded database and generated certificates.
	DataDir string `koanf:"data_dir"`

	C2S       C2S       `koanf:"c2s"`
	Preauth   Preauth   `koanf:"preauth"`
	TLS       TLS       `koanf:"tls"`
	Log       Log       `koanf:"log"`
	Server    Server    `koanf:"server"`
	Storage   Storage   `koanf:"storage"`
	IM        IM        `koanf:"im"`
	Register  Register  `koanf:"register"`
	Admin     Admin     `koanf:"admin"`
	CSI       CSI       `koanf:"csi"`
	SM        SM        `koanf:"sm"`
	FAST      FAST      `koanf:"fast"`
	PEP       PEP       `koanf:"pep"`
	MAM       MAM       `koanf:"mam"`
	MUC       MUC       `koanf:"muc"`
	Web       Web       `koanf:"web"`
	Upload    Upload    `koanf:"upload"`
	S2S       S2S       `koanf:"s2s"`
	Component Component `koanf:"component"`
	Cluster   Cluster   `koanf:"cluster"`
}

// Cluster makes this server one node of a cluster serving one domain: the
// nodes route stanzas to each other through NATS and keep their session
// directory in a JetStream key-value bucket (README, Cluster). An empty
// NATSURL (the default) means a standalone server: no NATS is needed and
// nothing below is used. Cluster mode requires storage.driver "postgres",
// the state every node shares.
type Cluster struct {
	// NATSURL is one or more NATS server URLs, comma-separated
	// ("nats://n1:4222,nats://n2:4222"); the client fails over between
	// them. Empty: no cluster.
	NATSURL string `koanf:"nats_url"`
	// NodeName names this node, unique in the cluster: its inbox subject
	// and its sessions' directory entries carry it. Letters, digits, '-'
	// and '_' only. Empty means the host name.
	NodeName string `koanf:"node_name"`
	// Credentials is a NATS credentials file (JWT and NKey seed); empty
	// for none.
	Credentials string `koanf:"credentials"`
	// TLSCA is a PEM file of the CAs that sign the NATS servers'
	// certificates; empty means the system roots (TLS is used when a URL
	// is tls:// or the server requires it).
	TLSCA string `koanf:"tls_ca"`
	// TLSCert and TLSKey are a client certificate and key for NATS
	// servers that verify clients; set both or neither.
	TLSCert string `koanf:"tls_cert"`
	TLSKey  string `koanf:"tls_key"`
	// Heartbeat is how often this node announces itself to the others.
	Heartbeat time.Duration `koanf:"heartbeat"`
	// NodeTimeout is how long a node may stay silent before the others
	// take it as dead: they announce its sessions unavailable and route
	// to it no more. Must be more than twice Heartbeat.
	NodeTimeout time.Duration `koanf:"node_timeout"`
	// Replicas is the number of JetStream replicas of the session
	// directory bucket: 3 on a three-server NATS cluster, 1 for a single
	// NATS server.
	Replicas int `koanf:"replicas"`
	// HandoverTimeout bounds a stream management resumption of a session
	// another node holds: past it the client gets item-not-found and the
	// holder ends the session as if it had expired.
	HandoverTimeout time.Duration `koanf:"handover_timeout"`
	// DrainTimeout bounds krill cluster drain: how long a draining node
	// waits for its parked sessions to be resumed elsewhere (or to
	// expire) before it stops.
	DrainTimeout time.Duration `koanf:"drain_timeout"`
	// SeeOtherHost is the address (host or host:port) a draining node
	// sends clients without stream management to, with a see-other-host
	// stream error (RFC 6120 4.9.3.19); empty: system-shutdown.
	SeeOtherHost string `koanf:"see_other_host"`
}

// Enabled reports whether cluster mode is on.
func (c Cluster) Enabled() bool { return c.NATSURL != "" }

// FAST configures XEP-0484 Fast Authentication Streamlining Tokens: tokens
// a client gets after a SASL2 login and logs in with later in one round
// trip (HT-SHA-256-* mechanisms). The database stores no token, only what
// a token is derived from with a secret kept in SecretFile.
type FAST struct {
	// Enabled offers FAST in SASL2 over TLS.
	Enabled bool `koanf:"enabled"`
	// TokenTTL is how long a token is valid from its issue; a token in use
	// is replaced daily, so this is how long a device may stay offline
	// and still log in without its password. Prosody's default, 21 days.
	TokenTTL time.Duration `koanf:"token_ttl"`
	// MaxTokens caps the live tokens of one account, all its devices
	// together; issuing beyond it drops the tokens expiring first. A
	// device holds two while a rotation is in flight, so the default 6
	// serves three devices.
	MaxTokens int `koanf:"max_tokens"`
	// SecretFile holds the 32-byte secret tokens are derived from
	// (hex, mode 0600, generated on first start). Empty means
	// DataDir/fast.secret, with SQLite and PostgreSQL alike: keep it out
	// of the database and its backups. Replacing it revokes every token.
	SecretFile string `koanf:"secret_file"`
}

// FASTSecretFile returns the path of the FAST secret: FAST.SecretFile, or
// fast.secret in DataDir when that is empty.
func (c *Config) FASTSecretFile() string {
	if c.FAST.SecretFile != "" {
		return c.FAST.SecretFile
	}
	return filepath.Join(c.DataDir, "fast.secret")
}

// PEP configures XEP-0163 personal eventing (the pubsub service of each
// account) and XEP-0049 private XML storage, per account. All are read
// live: a reload applies to the next request.
type PEP struct {
	// MaxNodes caps the nodes of one account; creating one more gets
	// policy-violation with pubsub's max-nodes-exceeded. 0 means no cap.
	MaxNodes int `koanf:"max_nodes"`
	// MaxItems caps the items kept per node, and is what a node's
	// pubsub#max_items "max" means; configuring more gets
	// not-acceptable. 0 means no cap.
	MaxItems int `koanf:"max_items"`
	// MaxItemBytes caps one published item's payload, and one XEP-0049
	// fragment, in bytes; a larger one gets not-acceptable with
	// pubsub's payload-too-big.
	MaxItemBytes int `koanf:"max_item_bytes"`
	// MaxBytes caps the bytes of all of an account's stored items (and,
	// apart, of its XEP-0049 fragments); a publish beyond it gets
	// resource-constraint. 0 means no cap.
	MaxBytes int64 `koanf:"max_bytes"`
}

// MAM configures the XEP-0313 message archive.
type MAM struct {
	// Enabled archives messages and answers archive queries; without it
	// the server neither archives nor advertises urn:xmpp:mam:2.
	Enabled bool `koanf:"enabled"`
	// Default is the archiving rule of accounts that set no preferences:
	// "always", "roster" (messages with roster contacts) or "never".
	Default string `koanf:"default"`
	// Retention is how long archived messages are kept; 0 keeps them
	// until the account is deleted.
	Retention time.Duration `koanf:"retention"`
	// MaxPage caps the messages of one query page (RSM max), and is the
	// page size of a query that gives none.
	MaxPage int `koanf:"max_page"`
}

// MUC configures the multi-user chat service (XEP-0045, modules/muc).
type MUC struct {
	// Domain is the service's domain. "" means conference.<domain>, the
	// usual name; "off" disables the service. It must differ from Domain.
	Domain string `koanf:"domain"`
	// MaxRoomsPerUser caps the rooms one account may create (temporary
	// rooms in memory plus persistent rooms in storage); 0 = no limit.
	MaxRoomsPerUser int `koanf:"max_rooms_per_user"`
	// MaxOccupants is the default and the highest maximum of occupants of
	// a room (its owner may set a lower muc#roomconfig_maxusers).
	MaxOccupants int `koanf:"max_occupants"`
	// MaxHistory is the most groupchat messages a room keeps in memory for
	// the history sent on join (its owner may set fewer); 0 keeps none.
	MaxHistory int `koanf:"max_history"`
	// MessageRate is the sustained groupchat and private messages per
	// second one occupant may send, with a burst of five seconds' worth
	// (at least 1); 0 = no limit.
	MessageRate float64 `koanf:"message_rate"`
	// IdleUnload is how long a persistent room nobody is in stays in
	// memory before it is evicted (reloaded from storage on demand);
	// 0 evicts at once.
	IdleUnload time.Duration `koanf:"idle_unload"`
}

// MUCDomain returns the multi-user chat service's domain, "" when the
// service is off.
func (c *Config) MUCDomain() string {
	switch c.MUC.Domain {
	case "off":
		return ""
	case "":
		return "conference." + c.Domain
	}
	return c.MUC.Domain
}

// Web configures the web listener: XMPP over WebSocket (RFC 7395) and
// XEP-0156 host-meta, served by the same event loops as c2s.
type Web struct {
	// Listen is host:port of the HTTP/1.1 listener; empty (the default)
	// disables it. Off by default because a WebSocket endpoint is reachable
	// from every page a local browser opens: turn it on deliberately,
	// with web.allowed_origins set.
	Listen string `koanf:"listen"`
	// TLS serves the listener over TLS (wss://, https://) with the c2s
	// certificate; false serves plain ws:// (behind a TLS proxy, or on
	// loopback for development).
	TLS bool `koanf:"tls"`
	// Path is the WebSocket endpoint's path.
	Path string `koanf:"path"`
	// AllowedOrigins lists the exact origins ("https://chat.example")
	// whose pages may open the WebSocket; "*" allows any. Empty allows
	// any, as does a request without an Origin header (not a browser).
	AllowedOrigins []string `koanf:"allowed_origins"`
	// SeeOtherURI, when set, answers every <open/> with a <close/> whose
	// see-other-uri sends the client there (RFC 7395, see-other-uri): for
	// moving clients to another endpoint.
	SeeOtherURI string `koanf:"see_other_uri"`
}

// Upload configures XEP-0363 HTTP file upload (modules/upload): a slot
// service on its own domain, PUT and GET on the web listener.
type Upload struct {
	// Domain is the slot service's domain: "" means upload.<domain>, "off"
	// turns the service off. It needs web.listen: files move over HTTP.
	Domain string `koanf:"domain"`
	// MaxFileSize is the largest file in bytes, announced in disco
	// (max-file-size).
	MaxFileSize int64 `koanf:"max_file_size"`
	// SlotTTL is how long a slot's PUT URL is valid after it is issued.
	SlotTTL time.Duration `koanf:"slot_ttl"`
	// UserQuota caps the bytes of stored files one account has uploaded;
	// 0 means no cap.
	UserQuota int64 `koanf:"user_quota"`
	// TotalQuota caps the bytes of all stored files; 0 means no cap.
	TotalQuota int64 `koanf:"total_quota"`
	// ExpireAfter is how long a file is kept after its upload; 0 keeps
	// files for ever.
	ExpireAfter time.Duration `koanf:"expire_after"`
	// Path is the directory files are stored in; "" means DataDir/upload.
	Path string `koanf:"path"`
	// MaxTransfers caps the PUTs and GETs in progress at once; one more is
	// answered 503 with Retry-After.
	MaxTransfers int `koanf:"max_transfers"`
}

// UploadDomain returns the upload slot service's domain, "" when the
// service is off.
func (c *Config) UploadDomain() string {
	switch c.Upload.Domain {
	case "off":
		return ""
	case "":
		return "upload." + c.Domain
	}
	return c.Upload.Domain
}

// UploadPath returns the directory uploaded files are kept in.
func (c *Config) UploadPath() string {
	if c.Upload.Path != "" {
		return c.Upload.Path
	}
	return filepath.Join(c.DataDir, "upload")
}

// CSI configures XEP-0352 client state indication: what a session that
// said it is inactive is spared until something urgent comes.
type CSI struct {
	// MaxBufferBytes caps the bytes of stanzas held per inactive session;
	// holding one more flushes what is held first. 0 holds nothing.
	MaxBufferBytes int `koanf:"max_buffer_bytes"`
}

// SM configures XEP-0198 stream management: the queue of stanzas a client
// has not acknowledged, and sessions kept after their connection is lost
// (parked) until the client resumes them.
type SM struct {
	// MaxQueueBytes caps the bytes of unacknowledged stanzas per
	// session; beyond it the stream ends with resource-constraint and the
	// queue is handled as on expiry (messages stored offline).
	MaxQueueBytes int `koanf:"max_queue_bytes"`
	// MaxQueueStanzas caps the unacknowledged stanzas per session, as
	// MaxQueueBytes does their bytes.
	MaxQueueStanzas int `koanf:"max_queue_stanzas"`
	// ResumeTimeout is how long a parked session waits for resumption;
	// 0 disables resumption (enable's resume is refused).
	ResumeTimeout time.Duration `koanf:"resume_timeout"`
	// MaxParkedPerAccount caps the parked sessions of one account; the
	// oldest is expired first. 0 means no cap.
	MaxParkedPerAccount int `koanf:"max_parked_per_account"`
	// MaxParkedTotal caps the parked sessions of the server; the oldest
	// is expired first. 0 means no cap.
	MaxParkedTotal int `koanf:"max_parked_total"`
	// RequestEvery is after how many unacknowledged stanzas the server
	// asks for an acknowledgement (<r/>); 0 never asks.
	RequestEvery int `koanf:"request_every"`
}

// Admin configures the operators' HTTP listener: Prometheus metrics at
// /metrics, /healthz and /readyz.
type Admin struct {
	// Listen is host:port; empty disables the listener. Keep it off the
	// public interface: it is not authenticated.
	Listen string `koanf:"listen"`
	// Pprof serves net/http/pprof under /debug/pprof/ on the admin
	// listener, for profiling a running server (CPU per login, garbage).
	// Off by default: a profile costs CPU and shows internals.
	Pprof bool `koanf:"pprof"`
}

// Register configures XEP-0077 in-band registration.
type Register struct {
	// Enabled lets clients create accounts before authenticating. It is
	// part of the pre-auth negotiation: the deadline and limits apply.
	Enabled bool `koanf:"enabled"`
	// MaxPerIP is how many accounts one source address may create per
	// Window; 0 means no limit.
	MaxPerIP int `koanf:"max_per_ip"`
	// Window is the period MaxPerIP counts over.
	Window time.Duration `koanf:"window"`
}

// Storage selects the database.
type Storage struct {
	// Driver is "sqlite" (embedded, the default) or "postgres".
	Driver string `koanf:"driver"`
	// DSN locates the database: for sqlite a file path (empty means
	// DataDir/krill.db), for postgres a connection string (required).
	DSN string `koanf:"dsn"`
}

// IM configures instant-messaging behaviour (RFC 6121).
type IM struct {
	// OfflineQuota is how many messages are stored per account while it
	// has no available resource; 0 disables offline storage.
	OfflineQuota int `koanf:"offline_quota"`
	// MaxRosterItems caps one account's roster; adding beyond it gets
	// policy-violation (a roster set) or resource-constraint (a
	// subscription request). 0 means no cap.
	MaxRosterItems int `koanf:"max_roster_items"`
	// MaxBlocklistItems caps one account's XEP-0191 blocklist; a block
	// beyond it gets policy-violation. 0 means no cap.
	MaxBlocklistItems int `koanf:"max_blocklist_items"`
	// OfflineQuotaBytes caps the bytes of offline messages stored per
	// account, beside OfflineQuota's count; 0 means no byte cap.
	OfflineQuotaBytes int `koanf:"offline_quota_bytes"`
}

// C2S configures client-to-server listeners and authenticated sessions.
type C2S struct {
	// Listen is the STARTTLS/plain c2s listener address (host:port).
	Listen string `koanf:"listen"`
	// DirectTLSListen is the XEP-0368 direct TLS listener; empty disables it.
	DirectTLSListen string `koanf:"direct_tls_listen"`
	// AllowPlaintext permits authentication on connections without TLS
	// (SCRAM only; PLAIN always needs TLS). Off, STARTTLS is required.
	AllowPlaintext bool `koanf:"allow_plaintext"`
	// IdlePing is how long an authenticated session may stay silent before
	// the server sends it an XEP-0199 ping. Zero disables pinging.
	IdlePing time.Duration `koanf:"idle_ping"`
	// PingTimeout is how long the server waits for any traffic after a
	// ping before it closes the session with connection-timeout.
	PingTimeout time.Duration `koanf:"ping_timeout"`
	// MaxStanzaSize is the largest stanza an authenticated session may
	// send, in bytes.
	MaxStanzaSize int `koanf:"max_stanza_size"`
	// MaxDepth is the deepest element nesting allowed in one stanza.
	MaxDepth int `koanf:"max_depth"`
	// MaxOutbound is how many bytes may wait in user space for a client
	// that does not read (beyond what its socket buffer holds) before the
	// connection is closed: a slow reader must not make the server hold
	// everything sent to it. 0 means no limit.
	MaxOutbound int `koanf:"max_outbound"`
}

// Preauth configures the policy for connections that have not yet
// authenticated and bound a resource.
type Preauth struct {
	// Timeout is the absolute deadline from accept: an unauthenticated
	// connection is closed with connection-timeout when it expires,
	// whatever it sends meanwhile.
	Timeout time.Duration `koanf:"timeout"`
	// MaxPerIP caps concurrent unauthenticated connections from one source
	// address; 0 means no cap.
	MaxPerIP int `koanf:"max_per_ip"`
	// MaxTotal caps all concurrent unauthenticated connections; 0 means no cap.
	MaxTotal int `koanf:"max_total"`
	// MaxFailedAuth is how many failed SASL attempts that checked a
	// credential (wrong password or proof, unknown account) a connection may
	// make before it is closed with policy-violation; refused in-band
	// registrations count here too. At most 255.
	MaxFailedAuth int `koanf:"max_failed_auth"`
	// MaxFailedExchanges is how many SASL exchanges that failed before any
	// credential was checked (unsupported channel-binding type, downgrade
	// flag 'y', malformed message, unknown mechanism, abort, throttled or
	// temporarily failed login) a connection may have before it is closed
	// with policy-violation. They reveal nothing about a password and the
	// pre-auth deadline bounds them anyway, so the limit is looser: a client
	// that tries its mechanisms in turn (slixmpp tries three -PLUS and three
	// SCRAM before PLAIN) reaches one that works. At most 255.
	MaxFailedExchanges int `koanf:"max_failed_exchanges"`
	// MaxStanzaSize is the largest element accepted before authentication,
	// in bytes.
	MaxStanzaSize int `koanf:"max_stanza_size"`
	// MaxElements is the most elements one pre-auth element may contain,
	// itself included.
	MaxElements int `koanf:"max_elements"`
	// MaxFailuresPerIP is how many failed logins one source address may
	// have per FailureWindow before its logins are refused at once with
	// temporary-auth-failure until the window ends; 0 means no throttling
	// (the default: many users may share one address behind NAT).
	MaxFailuresPerIP int `koanf:"max_failures_per_ip"`
	// FailureWindow is the period MaxFailuresPerIP counts over.
	FailureWindow time.Duration `koanf:"failure_window"`
	// IPv4Prefix is how many leading bits of an IPv4 source address
	// (or IPv4-mapped IPv6 one) identify one client for every per-address
	// limit: MaxPerIP, MaxFailuresPerIP and register.max_per_ip. 32 is the
	// whole address; 24 makes a /24 share one count. 1 to 32. Needs a
	// restart: counts taken under one length cannot be re-keyed to another.
	IPv4Prefix int `koanf:"ipv4_prefix"`
	// IPv6Prefix is the same for IPv6 source addresses. 64, because one
	// subscriber or host usually gets a whole /64: whoever has one has 2^64
	// addresses, so a limit per full address would limit nothing. 1 to 128.
	// Needs a restart.
	IPv6Prefix int `koanf:"ipv6_prefix"`
}

// TLS configures certificates and the TLS handshake policy.
type TLS struct {
	// Cert is a PEM certificate chain file. Empty (with Key empty) means a
	// self-signed development certificate for the domain, generated once
	// in DataDir.
	Cert string `koanf:"cert"`
	// Key is the PEM private key file for Cert.
	Key string `koanf:"key"`
	// MaxHandshakes caps TLS handshakes in progress at once; each holds a
	// goroutine (about 8 KB) until it ends. Connections beyond the cap
	// wait, their deadlines running.
	MaxHandshakes int `koanf:"max_handshakes"`
	// MaxHandshakeQueue caps the connections waiting for a handshake slot
	// (each holds its buffered ClientHello). When it is full, the next
	// connection whose ClientHello is complete is closed at once. 0 means
	// no waiting: every slot busy refuses the handshake.
	MaxHandshakeQueue int `koanf:"max_handshake_queue"`
	// HandshakeTimeout bounds one handshake from the complete ClientHello.
	// The pre-auth deadline still applies.
	HandshakeTimeout time.Duration `koanf:"handshake_timeout"`
	// Lean carries TLS 1.3 sessions on Krill's own record layer after the
	// stock crypto/tls handshake, keeping per connection only keys, IVs
	// and sequence numbers instead of an idle tls.Conn (about 7 KB). TLS
	// 1.2 stays on crypto/tls.
	Lean bool `koanf:"lean"`
	// SessionTickets lets clients resume TLS sessions (RFC 8446 2.2):
	// stateless tickets sealed with server-wide keys that rotate daily and
	// are dropped after seven days, tied to the certificate they were
	// issued under. A resumption still runs a fresh (EC)DHE exchange
	// (psk_dhe_ke) and skips the certificate and its signature; 0-RTT
	// stays off. Nothing is kept per connection after the handshake.
	SessionTickets bool `koanf:"session_tickets"`
	// IdleRelease is how long a lean TLS session keeps its expanded
	// AEADs (about 1.3 KB each way for AES-GCM) after its last record; the
	// next record expands them again from the kept keys (about 0.6 us; the
	// only allocation is the AEAD the session then holds). 0 keeps them
	// for the life of the connection.
	IdleRelease time.Duration `koanf:"idle_release"`
	// KeyUpdateRecords is how many records a lean session seals under one
	// key before it sends a KeyUpdate and moves to the next (RFC 8446
	// 4.6.3). The default stays well under AES-GCM's limit of about 2^24.5
	// full records per key (RFC 8446 5.5), the largest value accepted.
	KeyUpdateRecords uint64 `koanf:"key_update_records"`
}

// Log configures logging.
type Log struct {
	// Level is one of debug, info, warn, error.
	Level string `koanf:"level"`
	// Format is "console" (human-readable) or "json".
	Format string `koanf:"format"`
	// Sampling keeps, per message and level, the first 100 lines of each
	// second and then one in 100, so that an attack repeating one event
	// cannot turn into a log write per connection. The lines left out are
	// counted (krill_log_dropped_total).
	Sampling bool `koanf:"sampling"`
	// Buffer is how many bytes of log lines are held in memory before they
	// are written; 0 writes each line as it is logged (a write system call
	// per line, on the event loops).
	Buffer int `koanf:"buffer"`
	// FlushInterval bounds how long a buffered line waits to be written.
	// Ignored when Buffer is 0.
	FlushInterval time.Duration `koanf:"flush_interval"`
}

// Server configures the reactor and the worker pool.
type Server struct {
	// EventLoops is the number of gnet event loops; 0 means one per CPU.
	EventLoops int `koanf:"event_loops"`
	// Workers is the number of goroutines that run blocking work (storage,
	// password hashing) off the event loops.
	Workers int `koanf:"workers"`
	// WorkQueue is how many jobs may wait for a worker; when it is full,
	// new work is refused with resource-constraint rather than queued.
	WorkQueue int `koanf:"work_queue"`
	// Tick is the timer-wheel resolution: deadlines fire at most one tick late.
	Tick time.Duration `koanf:"tick"`
	// ShutdownTimeout bounds a graceful stop: sessions are closed with
	// system-shutdown, queued stanzas flushed and storage writes finished
	// within it, then whatever remains is closed.
	ShutdownTimeout time.Duration `koanf:"shutdown_timeout"`
	// GCPercent is the garbage collector's growth target (GOGC). Idle
	// connections are long-lived heap, so the headroom GOGC allows over
	// them is paid per connection in resident memory: 20 keeps an idle TLS
	// session within its budget at a modest GC cost. -1 disables the GC.
	GCPercent int `koanf:"gc_percent"`
}

// Defaults, in one place. They are also the embedded configuration that
// `krill serve` runs with when given no file.
const (
	DefaultDomain            = "localhost"
	DefaultDataDir           = "./krill-data"
	DefaultListen            = "127.0.0.1:5222"
	DefaultDirectTLSListen   = "127.0.0.1:5223"
	DefaultIdlePing          = 5 * time.Minute
	DefaultPingTimeout       = 30 * time.Second
	DefaultMaxStanzaSize     = 256 << 10
	DefaultMaxDepth          = 64
	DefaultPreauthTimeout    = 60 * time.Second
	DefaultMaxPerIP          = 0
	DefaultMaxTotal          = 0
	DefaultMaxFailedAuth     = 3
	DefaultMaxFailedExchange = 10
	DefaultPreauthStanzaSize = 8 << 10
	DefaultPreauthElements   = 32
	DefaultIPv4Prefix        = 32
	DefaultIPv6Prefix        = 64
	DefaultMaxHandshakes     = 256
	DefaultMaxHandshakeQueue = 4096
	DefaultHandshakeTimeout  = 10 * time.Second
	DefaultTLSIdleRelease    = 500 * time.Millisecond
	DefaultTLSKeyUpdate      = 1 << 23
	MaxTLSKeyUpdate          = 1 << 24
	DefaultOfflineQuota      = 1000
	DefaultWorkers           = 8
	DefaultWorkQueue         = 4096
	DefaultTick              = 10 * time.Millisecond
	DefaultGCPercent         = 20
	DefaultAdminListen       = "127.0.0.1:5280"
	DefaultLogBuffer         = 256 << 10
	DefaultLogFlushInterval  = time.Second
	DefaultResumeTimeout     = 300 * time.Second
	DefaultFASTTokenTTL      = 21 * 24 * time.Hour
	DefaultFASTMaxTokens     = 6
	DefaultWebPath           = "/xmpp-websocket"
)

// Client state indication: 64 KiB holds a few hundred presence updates
// and chat states, more than an idle phone gets in minutes; the limit keeps
// the per-entry offsets of the buffer well inside 32 bits.
const (
	DefaultCSIBufferBytes = 64 << 10
	MaxCSIBufferBytes     = 16 << 20
)

// Message archive defaults: every message archived, as Prosody does
// (default_archive_policy), and Prosody's page cap (50); kept forever.
const (
	DefaultMAMDefault = "always"
	DefaultMAMMaxPage = 50
	// MaxMAMMaxPage bounds mam.max_page: one page is written to the
	// client at once.
	MaxMAMMaxPage = 1000
)

// Multi-user chat: a room's history is capped in bytes as well
// (MaxMUCHistoryBytes, whatever MaxHistory says), so that a loaded room
// costs a bounded amount of memory.
const (
	DefaultMUCMaxOccupants = 1000
	DefaultMUCMaxHistory   = 50
	MaxMUCHistory          = 1000
	MaxMUCHistoryBytes     = 256 << 10
	DefaultMUCMessageRate  = 5
	DefaultMUCIdleUnload   = 10 * time.Minute
	DefaultMUCMaxRooms     = 50
	// XEP-0363 HTTP upload defaults: 10 MiB files (what Prosody's
	// mod_http_file_share allows), slots valid 5 minutes, 1 GiB per
	// account, files kept 7 days, 64 transfers at once.
	DefaultUploadMaxFileSize  = 10 << 20
	DefaultUploadSlotTTL      = 5 * time.Minute
	DefaultUploadUserQuota    = 1 << 30
	DefaultUploadExpireAfter  = 7 * 24 * time.Hour
	DefaultUploadMaxTransfers = 64
)

// Default returns the configuration used when nothing is set.
func Default() Config {
	return Config{
		Domain:  DefaultDomain,
		DataDir: DefaultDataDir,
		C2S: C2S{
			Listen:          DefaultListen,
			DirectTLSListen: DefaultDirectTLSListen,
			AllowPlaintext:  false,
			IdlePing:        DefaultIdlePing,
			PingTimeout:     DefaultPingTimeout,
			MaxStanzaSize:   DefaultMaxStanzaSize,
			MaxDepth:        DefaultMaxDepth,
			MaxOutbound:     1 << 20,
		},
		Preauth: Preauth{
			Timeout:            DefaultPreauthTimeout,
			MaxPerIP:           DefaultMaxPerIP,
			MaxTotal:           DefaultMaxTotal,
			MaxFailedAuth:      DefaultMaxFailedAuth,
			MaxFailedExchanges: DefaultMaxFailedExchange,
			MaxStanzaSize:      DefaultPreauthStanzaSize,
			MaxElements:        DefaultPreauthElements,
			FailureWindow:      time.Minute,
			IPv4Prefix:         DefaultIPv4Prefix,
			IPv6Prefix:         DefaultIPv6Prefix,
		},
		TLS: TLS{MaxHandshakes: DefaultMaxHandshakes, MaxHandshakeQueue: DefaultMaxHandshakeQueue,
			HandshakeTimeout: DefaultHandshakeTimeout, Lean: true, SessionTickets: true,
			IdleRelease: DefaultTLSIdleRelease, KeyUpdateRecords: DefaultTLSKeyUpdate},
		Log: Log{Level: "info", Format: "console", Sampling: true, Buffer: DefaultLogBuffer,
			FlushInterval: DefaultLogFlushInterval},
		Server: Server{Workers: DefaultWorkers, WorkQueue: DefaultWorkQueue, Tick: DefaultTick,
			GCPercent: DefaultGCPercent, ShutdownTimeout: 10 * time.Second},
		Admin:    Admin{Listen: DefaultAdminListen},
		Storage:  Storage{Driver: "sqlite"},
		IM:       IM{OfflineQuota: DefaultOfflineQuota, MaxRosterItems: 1000, MaxBlocklistItems: 1000, OfflineQuotaBytes: 1 << 20},
		Register: Register{MaxPerIP: 5, Window: time.Hour},
		CSI:      CSI{MaxBufferBytes: DefaultCSIBufferBytes},
		MAM:      MAM{Enabled: true, Default: DefaultMAMDefault, MaxPage: DefaultMAMMaxPage},
		SM: SM{MaxQueueBytes: 256 << 10, MaxQueueStanzas: 500, ResumeTimeout: DefaultResumeTimeout,
			MaxParkedPerAccount: 5, MaxParkedTotal: 0, RequestEvery: 5},
		FAST: FAST{Enabled: true, TokenTTL: DefaultFASTTokenTTL, MaxTokens: DefaultFASTMaxTokens},
		PEP:  PEP{MaxNodes: 64, MaxItems: 256, MaxItemBytes: 128 << 10, MaxBytes: 4 << 20},
		MUC: MUC{MaxRoomsPerUser: DefaultMUCMaxRooms, MaxOccupants: DefaultMUCMaxOccupants,
			MaxHistory: DefaultMUCMaxHistory, MessageRate: DefaultMUCMessageRate, IdleUnload: DefaultMUCIdleUnload},
		Upload: Upload{MaxFileSize: DefaultUploadMaxFileSize, SlotTTL: DefaultUploadSlotTTL,
			UserQuota: DefaultUploadUserQuota, ExpireAfter: DefaultUploadExpireAfter, MaxTransfers: DefaultUploadMaxTransfers},
		S2S:       defaultS2S(),
		Component: Component{Listen: DefaultComponentListen},
		Web:       Web{Path: DefaultWebPath, AllowedOrigins: []string{}},
		Cluster: Cluster{Heartbeat: DefaultClusterHeartbeat, NodeTimeout: DefaultClusterNodeTimeout,
			Replicas: 1, HandoverTimeout: DefaultClusterHandoverTimeout, DrainTimeout: DefaultClusterDrainTimeout},
	}
}

// Validate reports every problem in c at once, each naming its key and value.
func (c *Config) Validate() error {
	var errs []error
	bad := func(key string, v any, why string) {
		errs = append(errs, fmt.Errorf("%s: %s, got %v", key, why, v))
	}
	if c.Domain == "" {
		bad("domain", `""`, "must not be empty")
	} else if strings.ContainsAny(c.Domain, "@/ ") {
		bad("domain", c.Domain, "must be a bare domain")
	}
	if c.DataDir == "" {
		bad("data_dir", `""`, "must not be empty")
	}
	if _, _, err := net.SplitHostPort(c.C2S.Listen); err != nil {
		bad("c2s.listen", c.C2S.Listen, "must be host:port")
	}
	if c.C2S.DirectTLSListen != "" {
		if _, _, err := net.SplitHostPort(c.C2S.DirectTLSListen); err != nil {
			bad("c2s.direct_tls_listen", c.C2S.DirectTLSListen, "must be host:port or empty")
		}
	}
	if c.C2S.IdlePing < 0 {
		bad("c2s.idle_ping", c.C2S.IdlePing, "must be >= 0")
	}
	if c.C2S.IdlePing > 0 && c.C2S.PingTimeout <= 0 {
		bad("c2s.ping_timeout", c.C2S.PingTimeout, "must be > 0 while c2s.idle_ping is set")
	}
	if c.C2S.MaxStanzaSize < 1024 {
		bad("c2s.max_stanza_size", c.C2S.MaxStanzaSize, "must be >= 1024")
	}
	if c.C2S.MaxOutbound < 0 {
		bad("c2s.max_outbound", c.C2S.MaxOutbound, "must be >= 0")
	}
	if c.C2S.MaxDepth < 2 {
		bad("c2s.max_depth", c.C2S.MaxDepth, "must be >= 2")
	}
	if c.Preauth.Timeout <= 0 {
		bad("preauth.timeout", c.Preauth.Timeout, "must be > 0")
	}
	if c.Preauth.MaxPerIP < 0 {
		bad("preauth.max_per_ip", c.Preauth.MaxPerIP, "must be >= 0")
	}
	if c.Preauth.MaxTotal < 0 {
		bad("preauth.max_total", c.Preauth.MaxTotal, "must be >= 0")
	}
	// Both are counted per connection in a byte.
	if c.Preauth.MaxFailedAuth < 1 {
		bad("preauth.max_failed_auth", c.Preauth.MaxFailedAuth, "must be >= 1")
	} else if c.Preauth.MaxFailedAuth > 255 {
		bad("preauth.max_failed_auth", c.Preauth.MaxFailedAuth, "must be <= 255")
	}
	if c.Preauth.MaxFailedExchanges < 1 || c.Preauth.MaxFailedExchanges > 255 {
		bad("preauth.max_failed_exchanges", c.Preauth.MaxFailedExchanges, "must be between 1 and 255")
	}
	if c.Preauth.MaxStanzaSize < 512 {
		bad("preauth.max_stanza_size", c.Preauth.MaxStanzaSize, "must be >= 512")
	}
	if c.Preauth.MaxFailuresPerIP < 0 {
		bad("preauth.max_failures_per_ip", c.Preauth.MaxFailuresPerIP, "must be >= 0")
	}
	if c.Preauth.FailureWindow <= 0 {
		bad("preauth.failure_window", c.Preauth.FailureWindow, "must be > 0")
	}
	if c.Preauth.MaxElements < 4 {
		bad("preauth.max_elements", c.Preauth.MaxElements, "must be >= 4")
	}
	if c.Preauth.IPv4Prefix < 1 || c.Preauth.IPv4Prefix > 32 {
		bad("preauth.ipv4_prefix", c.Preauth.IPv4Prefix, "must be between 1 and 32")
	}
	if c.Preauth.IPv6Prefix < 1 || c.Preauth.IPv6Prefix > 128 {
		bad("preauth.ipv6_prefix", c.Preauth.IPv6Prefix, "must be between 1 and 128")
	}
	if (c.TLS.Cert == "") != (c.TLS.Key == "") {
		bad("tls.cert", c.TLS.Cert, "tls.cert and tls.key must be set together")
	}
	if c.TLS.MaxHandshakes < 1 {
		bad("tls.max_handshakes", c.TLS.MaxHandshakes, "must be >= 1")
	}
	if c.TLS.MaxHandshakeQueue < 0 {
		bad("tls.max_handshake_queue", c.TLS.MaxHandshakeQueue, "must be >= 0")
	}
	if c.TLS.IdleRelease < 0 {
		bad("tls.idle_release", c.TLS.IdleRelease, "must be >= 0")
	}
	if c.TLS.KeyUpdateRecords < 1 || c.TLS.KeyUpdateRecords > MaxTLSKeyUpdate {
		bad("tls.key_update_records", c.TLS.KeyUpdateRecords, "must be 1 to 16777216 (2^24)")
	}
	if c.TLS.HandshakeTimeout <= 0 {
		bad("tls.handshake_timeout", c.TLS.HandshakeTimeout, "must be > 0")
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		bad("log.level", c.Log.Level, "must be debug, info, warn or error")
	}
	switch c.Log.Format {
	case "console", "json":
	default:
		bad("log.format", c.Log.Format, "must be console or json")
	}
	if c.Log.Buffer < 0 {
		bad("log.buffer", c.Log.Buffer, "must be >= 0")
	}
	if c.Log.Buffer > 0 && c.Log.FlushInterval <= 0 {
		bad("log.flush_interval", c.Log.FlushInterval, "must be > 0 while log.buffer is set")
	}
	switch c.Storage.Driver {
	case "sqlite":
	case "postgres":
		if c.Storage.DSN == "" {
			bad("storage.dsn", `""`, "must be set for the postgres driver")
		}
	default:
		bad("storage.driver", c.Storage.Driver, "must be sqlite or postgres")
	}
	if c.Register.MaxPerIP < 0 {
		bad("register.max_per_ip", c.Register.MaxPerIP, "must be >= 0")
	}
	if c.Register.Window <= 0 {
		bad("register.window", c.Register.Window, "must be > 0")
	}
	if c.PEP.MaxNodes < 0 {
		bad("pep.max_nodes", c.PEP.MaxNodes, "must be >= 0")
	}
	if c.PEP.MaxItems < 0 {
		bad("pep.max_items", c.PEP.MaxItems, "must be >= 0")
	}
	if c.PEP.MaxItemBytes < 1 {
		bad("pep.max_item_bytes", c.PEP.MaxItemBytes, "must be >= 1")
	}
	if c.PEP.MaxBytes < 0 {
		bad("pep.max_bytes", c.PEP.MaxBytes, "must be >= 0")
	}
	if c.CSI.MaxBufferBytes < 0 || c.CSI.MaxBufferBytes > MaxCSIBufferBytes {
		bad("csi.max_buffer_bytes", c.CSI.MaxBufferBytes, fmt.Sprintf("must be between 0 and %d", MaxCSIBufferBytes))
	}
	switch c.MAM.Default {
	case "always", "roster", "never":
	default:
		bad("mam.default", c.MAM.Default, `must be "always", "roster" or "never"`)
	}
	if c.MAM.Retention < 0 {
		bad("mam.retention", c.MAM.Retention, "must be >= 0")
	}
	if c.MAM.MaxPage < 1 || c.MAM.MaxPage > MaxMAMMaxPage {
		bad("mam.max_page", c.MAM.MaxPage, fmt.Sprintf("must be between 1 and %d", MaxMAMMaxPage))
	}
	if c.IM.MaxRosterItems < 0 {
		bad("im.max_roster_items", c.IM.MaxRosterItems, "must be >= 0")
	}
	if c.IM.MaxBlocklistItems < 0 {
		bad("im.max_blocklist_items", c.IM.MaxBlocklistItems, "must be >= 0")
	}
	if c.IM.OfflineQuotaBytes < 0 {
		bad("im.offline_quota_bytes", c.IM.OfflineQuotaBytes, "must be >= 0")
	}
	if c.IM.OfflineQuota < 0 {
		bad("im.offline_quota", c.IM.OfflineQuota, "must be >= 0")
	}
	if c.SM.MaxQueueBytes < 1 {
		bad("sm.max_queue_bytes", c.SM.MaxQueueBytes, "must be >= 1")
	}
	if c.SM.MaxQueueStanzas < 1 {
		bad("sm.max_queue_stanzas", c.SM.MaxQueueStanzas, "must be >= 1")
	}
	if c.SM.ResumeTimeout < 0 {
		bad("sm.resume_timeout", c.SM.ResumeTimeout, "must be >= 0")
	}
	if c.SM.MaxParkedPerAccount < 0 {
		bad("sm.max_parked_per_account", c.SM.MaxParkedPerAccount, "must be >= 0")
	}
	if c.SM.MaxParkedTotal < 0 {
		bad("sm.max_parked_total", c.SM.MaxParkedTotal, "must be >= 0")
	}
	if c.SM.RequestEvery < 0 {
		bad("sm.request_every", c.SM.RequestEvery, "must be >= 0")
	}
	if c.FAST.TokenTTL < time.Minute {
		bad("fast.token_ttl", c.FAST.TokenTTL, "must be >= 1m")
	}
	if c.FAST.MaxTokens < 1 {
		bad("fast.max_tokens", c.FAST.MaxTokens, "must be >= 1")
	}
	if c.Server.EventLoops < 0 {
		bad("server.event_loops", c.Server.EventLoops, "must be >= 0")
	}
	if c.Server.Workers < 1 {
		bad("server.workers", c.Server.Workers, "must be >= 1")
	}
	if c.Server.WorkQueue < 1 {
		bad("server.work_queue", c.Server.WorkQueue, "must be >= 1")
	}
	if c.Admin.Listen != "" {
		if _, _, err := net.SplitHostPort(c.Admin.Listen); err != nil {
			bad("admin.listen", c.Admin.Listen, "must be host:port or empty")
		}
	}
	if c.Web.Listen != "" {
		if _, _, err := net.SplitHostPort(c.Web.Listen); err != nil {
			bad("web.listen", c.Web.Listen, "must be host:port or empty")
		}
		for _, other := range []string{c.C2S.Listen, c.C2S.DirectTLSListen, c.Admin.Listen} {
			if c.Web.Listen == other && !strings.HasSuffix(other, ":0") {
				bad("web.listen", c.Web.Listen, "must differ from c2s.listen, c2s.direct_tls_listen and admin.listen")
			}
		}
	}
	if !strings.HasPrefix(c.Web.Path, "/") || strings.ContainsAny(c.Web.Path, "?# \t") || strings.HasPrefix(c.Web.Path, "/.well-known/") {
		bad("web.path", c.Web.Path, "must be an absolute path without query, fragment or space, outside /.well-known/")
	}
	for _, o := range c.Web.AllowedOrigins {
		if o != "*" && (!strings.Contains(o, "://") || strings.HasSuffix(o, "/") || strings.ContainsAny(o, " \t,")) {
			bad("web.allowed_origins", o, `each must be "*" or an origin such as https://chat.example (scheme://host[:port], no path)`)
		}
	}
	if u := c.Web.SeeOtherURI; u != "" && !strings.HasPrefix(u, "ws://") && !strings.HasPrefix(u, "wss://") {
		bad("web.see_other_uri", u, "must be a ws:// or wss:// URI or empty")
	}
	if c.Server.ShutdownTimeout <= 0 {
		bad("server.shutdown_timeout", c.Server.ShutdownTimeout, "must be > 0")
	}
	if c.Server.GCPercent < -1 || c.Server.GCPercent == 0 {
		bad("server.gc_percent", c.Server.GCPercent, "must be -1 (off) or > 0")
	}
	if d := c.MUCDomain(); d != "" {
		if d == c.Domain || strings.ContainsAny(d, "@/ ") || strings.HasPrefix(d, ".") || strings.HasSuffix(d, ".") {
			bad("muc.domain", c.MUC.Domain, `must be a domain other than domain, "" (conference.<domain>) or "off"`)
		}
	}
	if d := c.UploadDomain(); d != "" {
		if d == c.Domain || d == c.MUCDomain() || strings.ContainsAny(d, "@/ ") || strings.HasPrefix(d, ".") || strings.HasSuffix(d, ".") {
			bad("upload.domain", c.Upload.Domain, `must be a domain other than domain and muc.domain, "" (upload.<domain>) or "off"`)
		}
	}
	if c.Upload.MaxFileSize < 1 {
		bad("upload.max_file_size", c.Upload.MaxFileSize, "must be >= 1")
	}
	if c.Upload.SlotTTL <= 0 {
		bad("upload.slot_ttl", c.Upload.SlotTTL, "must be > 0")
	}
	if c.Upload.UserQuota < 0 {
		bad("upload.user_quota", c.Upload.UserQuota, "must be >= 0")
	}
	if c.Upload.TotalQuota < 0 {
		bad("upload.total_quota", c.Upload.TotalQuota, "must be >= 0")
	}
	if c.Upload.ExpireAfter < 0 {
		bad("upload.expire_after", c.Upload.ExpireAfter, "must be >= 0")
	}
	if c.Upload.MaxTransfers < 1 {
		bad("upload.max_transfers", c.Upload.MaxTransfers, "must be >= 1")
	}
	if c.MUC.MaxRoomsPerUser < 0 {
		bad("muc.max_rooms_per_user", c.MUC.MaxRoomsPerUser, "must be >= 0")
	}
	if c.MUC.MaxOccupants < 1 {
		bad("muc.max_occupants", c.MUC.MaxOccupants, "must be >= 1")
	}
	if c.MUC.MaxHistory < 0 || c.MUC.MaxHistory > MaxMUCHistory {
		bad("muc.max_history", c.MUC.MaxHistory, fmt.Sprintf("must be between 0 and %d", MaxMUCHistory))
	}
	if c.MUC.MessageRate < 0 {
		bad("muc.message_rate", c.MUC.MessageRate, "must be >= 0")
	}
	if c.MUC.IdleUnload < 0 {
		bad("muc.idle_unload", c.MUC.IdleUnload, "must be >= 0")
	}
	if c.Server.Tick < time.Millisecond || c.Server.Tick > time.Second {
		bad("server.tick", c.Server.Tick, "must be between 1ms and 1s")
	}
	c.validateS2S(bad)
	c.validateCluster(bad)
	return errors.Join(errs...)
}

// Cluster defaults.
const (
	// DefaultClusterHeartbeat is how often a node announces itself.
	DefaultClusterHeartbeat = time.Second
	// DefaultClusterNodeTimeout is how long a silent node is taken as
	// alive: a dead node's users go unavailable within this bound plus
	// one heartbeat.
	DefaultClusterNodeTimeout = 5 * time.Second
	// DefaultClusterHandoverTimeout bounds a resumption across nodes.
	DefaultClusterHandoverTimeout = 5 * time.Second
	// DefaultClusterDrainTimeout bounds a drain: a client that lost its
	// connection reconnects within seconds, or not at all.
	DefaultClusterDrainTimeout = time.Minute
)

// ErrClusterSQLite is why a cluster cannot run on SQLite: the nodes share
// their state (accounts, rosters, offline messages) in one database.
var ErrClusterSQLite = errors.New(`cluster mode needs storage.driver "postgres": SQLite is one process's file and the nodes share their state`)

func (c *Config) validateCluster(bad func(key string, v any, why string)) {
	cl := c.Cluster
	if !cl.Enabled() {
		return
	}
	if c.Storage.Driver != "postgres" {
		bad("storage.driver", c.Storage.Driver, ErrClusterSQLite.Error())
	}
	for _, u := range strings.Split(cl.NATSURL, ",") {
		u = strings.TrimSpace(u)
		if !strings.Contains(u, "://") && strings.Count(u, ":") != 1 {
			bad("cluster.nats_url", cl.NATSURL, "must be nats://host:port[,nats://host:port...]")
			break
		}
	}
	for _, r := range cl.NodeName {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
			bad("cluster.node_name", cl.NodeName, "must hold only letters, digits, '-' and '_'")
			break
		}
	}
	if (cl.TLSCert == "") != (cl.TLSKey == "") {
		bad("cluster.tls_cert", cl.TLSCert, "cluster.tls_cert and cluster.tls_key must be set together")
	}
	if cl.Heartbeat < 10*time.Millisecond {
		bad("cluster.heartbeat", cl.Heartbeat, "must be >= 10ms")
	}
	if cl.NodeTimeout <= 2*cl.Heartbeat {
		bad("cluster.node_timeout", cl.NodeTimeout, "must be more than twice cluster.heartbeat")
	}
	if cl.Replicas < 1 || cl.Replicas > 5 {
		bad("cluster.replicas", cl.Replicas, "must be between 1 and 5")
	}
	if cl.HandoverTimeout < 10*time.Millisecond {
		bad("cluster.handover_timeout", cl.HandoverTimeout, "must be >= 10ms")
	}
	if cl.DrainTimeout < 0 {
		bad("cluster.drain_timeout", cl.DrainTimeout, "must be >= 0")
	}
	if h := cl.SeeOtherHost; h != "" && (strings.ContainsAny(h, "<>&'\" /@") || strings.HasPrefix(h, ":")) {
		bad("cluster.see_other_host", h, "must be a host name or host:port")
	}
}
