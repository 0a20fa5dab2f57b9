package config

import (
	"flag"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestDefaultIsValid(t *testing.T) {
	c := Default()
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	loaded, err := Load("", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(loaded, c) {
		t.Fatalf("Load with nothing set = %+v, want the defaults %+v", loaded, c)
	}
}

func TestLoad(t *testing.T) {
	cases := []struct {
		name  string
		file  string
		env   []string
		flags []string
		check func(t *testing.T, c Config)
	}{
		{
			name: "file",
			file: "testdata/full.toml",
			check: func(t *testing.T, c Config) {
				if c.Domain != "example.net" || c.C2S.IdlePing != 2*time.Minute || c.Preauth.MaxPerIP != 10 ||
					c.C2S.AllowPlaintext || c.Log.Format != "json" || c.TLS.Key != "/etc/krill/key.pem" {
					t.Fatalf("file not applied: %+v", c)
				}
			},
		},
		{
			name: "env over file",
			file: "testdata/full.toml",
			env:  []string{"KRILL_PREAUTH_TIMEOUT=5s", "KRILL_PREAUTH_MAX_PER_IP=3", "KRILL_DATA_DIR=/tmp/k", "KRILL_C2S_ALLOW_PLAINTEXT=true", "HOME=/root"},
			check: func(t *testing.T, c Config) {
				if c.Preauth.Timeout != 5*time.Second || c.Preauth.MaxPerIP != 3 || c.DataDir != "/tmp/k" || !c.C2S.AllowPlaintext {
					t.Fatalf("env not applied: %+v", c)
				}
			},
		},
		{
			name:  "flags over env",
			env:   []string{"KRILL_PREAUTH_TIMEOUT=5s"},
			flags: []string{"--preauth.timeout=7s", "--domain=chat.example"},
			check: func(t *testing.T, c Config) {
				if c.Preauth.Timeout != 7*time.Second || c.Domain != "chat.example" {
					t.Fatalf("flags not applied: %+v", c)
				}
			},
		},
		{
			name: "web listener from env, origins as a comma-separated list",
			env:  []string{"KRILL_WEB_LISTEN=127.0.0.1:5443", "KRILL_WEB_TLS=true", "KRILL_WEB_ALLOWED_ORIGINS=https://a.example,https://b.example:8443"},
			check: func(t *testing.T, c Config) {
				if c.Web.Listen != "127.0.0.1:5443" || !c.Web.TLS || c.Web.Path != "/xmpp-websocket" ||
					!reflect.DeepEqual(c.Web.AllowedOrigins, []string{"https://a.example", "https://b.example:8443"}) {
					t.Fatalf("web: %+v", c.Web)
				}
			},
		},
		{
			name:  "address prefixes from env and flags",
			env:   []string{"KRILL_PREAUTH_IPV4_PREFIX=24", "KRILL_PREAUTH_IPV6_PREFIX=56"},
			flags: []string{"--preauth.ipv6_prefix=48"},
			check: func(t *testing.T, c Config) {
				if c.Preauth.IPv4Prefix != 24 || c.Preauth.IPv6Prefix != 48 {
					t.Fatalf("prefixes %d %d, want 24 48", c.Preauth.IPv4Prefix, c.Preauth.IPv6Prefix)
				}
			},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			fs := flag.NewFlagSet("test", flag.ContinueOnError)
			RegisterFlags(fs)
			if err := fs.Parse(tc.flags); err != nil {
				t.Fatal(err)
			}
			c, err := Load(tc.file, tc.env, fs)
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, c)
		})
	}
}

func TestLoadErrors(t *testing.T) {
	cases := []struct {
		name string
		file string
		env  []string
		want []string // every one must appear in the error
	}{
		{"missing file", "testdata/nope.toml", nil, []string{"nope.toml"}},
		{"unknown key", "testdata/unknown_key.toml", nil, []string{"max_per_addr"}},
		{"unknown env", "", []string{"KRILL_PREAUTH_TIMOUT=5s"}, []string{"KRILL_PREAUTH_TIMOUT"}},
		{"bad duration", "", []string{"KRILL_PREAUTH_TIMEOUT=soon"}, []string{"timeout"}},
		{"prefixes too short", "", []string{"KRILL_PREAUTH_IPV4_PREFIX=0", "KRILL_PREAUTH_IPV6_PREFIX=0"}, []string{
			"preauth.ipv4_prefix: must be between 1 and 32, got 0", "preauth.ipv6_prefix: must be between 1 and 128, got 0",
		}},
		{"prefixes too long", "", []string{"KRILL_PREAUTH_IPV4_PREFIX=33", "KRILL_PREAUTH_IPV6_PREFIX=129"}, []string{
			"preauth.ipv4_prefix: must be between 1 and 32, got 33", "preauth.ipv6_prefix: must be between 1 and 128, got 129",
		}},
		{"negative handshake queue", "", []string{"KRILL_TLS_MAX_HANDSHAKE_QUEUE=-1"}, []string{"tls.max_handshake_queue: must be >= 0, got -1"}},
		{"negative csi buffer", "", []string{"KRILL_CSI_MAX_BUFFER_BYTES=-1"}, []string{"csi.max_buffer_bytes: must be between 0 and 16777216, got -1"}},
		{"csi buffer too large", "", []string{"KRILL_CSI_MAX_BUFFER_BYTES=16777217"}, []string{"csi.max_buffer_bytes: must be between 0 and 16777216, got 16777217"}},
		{"fast limits", "", []string{"KRILL_FAST_TOKEN_TTL=30s", "KRILL_FAST_MAX_TOKENS=0"}, []string{
			"fast.token_ttl: must be >= 1m, got 30s", "fast.max_tokens: must be >= 1, got 0"}},
		{"muc domain is the domain", "", []string{"KRILL_DOMAIN=example.org", "KRILL_MUC_DOMAIN=example.org"}, []string{
			`muc.domain: must be a domain other than domain, "" (conference.<domain>) or "off", got example.org`}},
		{"muc limits", "", []string{"KRILL_MUC_MAX_OCCUPANTS=0", "KRILL_MUC_MAX_HISTORY=1001", "KRILL_MUC_MESSAGE_RATE=-1",
			"KRILL_MUC_MAX_ROOMS_PER_USER=-1", "KRILL_MUC_IDLE_UNLOAD=-1s"}, []string{
			"muc.max_occupants: must be >= 1, got 0", "muc.max_history: must be between 0 and 1000, got 1001",
			"muc.message_rate: must be >= 0, got -1", "muc.max_rooms_per_user: must be >= 0, got -1", "muc.idle_unload: must be >= 0, got -1s"}},
		{"upload domain is the muc domain", "", []string{"KRILL_DOMAIN=example.org", "KRILL_UPLOAD_DOMAIN=conference.example.org"}, []string{
			`upload.domain: must be a domain other than domain and muc.domain, "" (upload.<domain>) or "off", got conference.example.org`}},
		{"upload limits", "", []string{"KRILL_UPLOAD_MAX_FILE_SIZE=0", "KRILL_UPLOAD_SLOT_TTL=0s", "KRILL_UPLOAD_USER_QUOTA=-1",
			"KRILL_UPLOAD_TOTAL_QUOTA=-1", "KRILL_UPLOAD_EXPIRE_AFTER=-1s", "KRILL_UPLOAD_MAX_TRANSFERS=0"}, []string{
			"upload.max_file_size: must be >= 1, got 0", "upload.slot_ttl: must be > 0, got 0s", "upload.user_quota: must be >= 0, got -1",
			"upload.total_quota: must be >= 0, got -1", "upload.expire_after: must be >= 0, got -1s", "upload.max_transfers: must be >= 1, got 0"}},
		{"every invalid value at once", "testdata/invalid.toml", nil, []string{
			"domain: must not be empty", "preauth.timeout: must be > 0, got 0s",
			"preauth.max_failed_auth: must be >= 1, got 0",
			"preauth.max_failed_exchanges: must be between 1 and 255, got 256", "log.level: must be debug, info, warn or error, got loud",
			"log.buffer: must be >= 0, got -1",
		}},
		{"web keys", "", []string{"KRILL_WEB_LISTEN=127.0.0.1:5222", "KRILL_WEB_PATH=xmpp", "KRILL_WEB_ALLOWED_ORIGINS=https://ok.example,chat.example/",
			"KRILL_WEB_SEE_OTHER_URI=https://other.example/"}, []string{
			"web.listen: must differ from c2s.listen, c2s.direct_tls_listen and admin.listen, got 127.0.0.1:5222",
			"web.path: must be an absolute path without query, fragment or space, outside /.well-known/, got xmpp",
			"web.allowed_origins: each must be \"*\" or an origin such as https://chat.example (scheme://host[:port], no path), got chat.example/",
			"web.see_other_uri: must be a ws:// or wss:// URI or empty, got https://other.example/",
		}},
		{"buffer without flush interval", "", []string{"KRILL_LOG_FLUSH_INTERVAL=0s"}, []string{
			"log.flush_interval: must be > 0 while log.buffer is set, got 0s"}},
		{"cluster on sqlite", "", []string{"KRILL_CLUSTER_NATS_URL=nats://127.0.0.1:4222"}, []string{
			`storage.driver: cluster mode needs storage.driver "postgres"`}},
		{"cluster keys", "", []string{"KRILL_CLUSTER_NATS_URL=nats://127.0.0.1:4222", "KRILL_STORAGE_DRIVER=postgres",
			"KRILL_STORAGE_DSN=postgres://x", "KRILL_CLUSTER_NODE_NAME=a.b", "KRILL_CLUSTER_HEARTBEAT=2s",
			"KRILL_CLUSTER_NODE_TIMEOUT=3s", "KRILL_CLUSTER_TLS_CERT=c.pem", "KRILL_CLUSTER_REPLICAS=0"}, []string{
			"cluster.node_name: must hold only letters, digits, '-' and '_', got a.b",
			"cluster.node_timeout: must be more than twice cluster.heartbeat, got 3s",
			"cluster.tls_cert: cluster.tls_cert and cluster.tls_key must be set together",
			"cluster.replicas: must be between 1 and 5, got 0"}},
		{"cluster drain keys", "", []string{"KRILL_CLUSTER_NATS_URL=nats://127.0.0.1:4222", "KRILL_STORAGE_DRIVER=postgres",
			"KRILL_STORAGE_DSN=postgres://x", "KRILL_CLUSTER_HANDOVER_TIMEOUT=1ms", "KRILL_CLUSTER_DRAIN_TIMEOUT=-1s",
			"KRILL_CLUSTER_SEE_OTHER_HOST=<x>"}, []string{
			"cluster.handover_timeout: must be >= 10ms, got 1ms",
			"cluster.drain_timeout: must be >= 0, got -1s",
			"cluster.see_other_host: must be a host name or host:port, got <x>"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Load(tc.file, tc.env, nil)
			if err == nil {
				t.Fatal("Load succeeded")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

func TestEnvNames(t *testing.T) {
	for key := range Keys() {
		if got := EnvKey(EnvName(key)); got != key {
			t.Errorf("EnvKey(EnvName(%q)) = %q", key, got)
		}
	}
}

func TestFASTSecretFile(t *testing.T) {
	c, err := Load("", []string{"KRILL_DATA_DIR=/srv/k", "KRILL_FAST_TOKEN_TTL=336h", "KRILL_FAST_ENABLED=false"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := c.FASTSecretFile(); got != "/srv/k/fast.secret" {
		t.Errorf("default secret file = %q, want /srv/k/fast.secret", got)
	}
	if c.FAST.TokenTTL != 336*time.Hour || c.FAST.Enabled || c.FAST.MaxTokens != DefaultFASTMaxTokens {
		t.Errorf("FAST = %+v", c.FAST)
	}
	c.FAST.SecretFile = "/etc/krill/fast.secret"
	if got := c.FASTSecretFile(); got != "/etc/krill/fast.secret" {
		t.Errorf("secret file = %q", got)
	}
}

// TestMUCDomain: "" is conference.<domain>, "off" disables, anything else
// is taken as is.
func TestMUCDomain(t *testing.T) {
	for _, tc := range []struct{ domain, muc, want string }{
		{"example.org", "", "conference.example.org"},
		{"example.org", "off", ""},
		{"example.org", "rooms.example.org", "rooms.example.org"},
	} {
		c := Default()
		c.Domain, c.MUC.Domain = tc.domain, tc.muc
		if got := c.MUCDomain(); got != tc.want {
			t.Errorf("domain %q, muc.domain %q: MUCDomain() = %q, want %q", tc.domain, tc.muc, got, tc.want)
		}
	}
}

// TestUploadDomain: "" is upload.<domain>, "off" disables, anything else
// is taken as is; files go to <data_dir>/upload unless upload.path says.
func TestUploadDomain(t *testing.T) {
	for _, tc := range []struct{ domain, upload, want string }{
		{"example.org", "", "upload.example.org"},
		{"example.org", "off", ""},
		{"example.org", "files.example.org", "files.example.org"},
	} {
		c := Default()
		c.Domain, c.Upload.Domain = tc.domain, tc.upload
		if got := c.UploadDomain(); got != tc.want {
			t.Errorf("domain %q, upload.domain %q: UploadDomain() = %q, want %q", tc.domain, tc.upload, got, tc.want)
		}
	}
	c := Default()
	c.DataDir = "/var/lib/krill"
	if got := c.UploadPath(); got != "/var/lib/krill/upload" {
		t.Errorf("UploadPath() = %q", got)
	}
	c.Upload.Path = "/srv/files"
	if got := c.UploadPath(); got != "/srv/files" {
		t.Errorf("UploadPath() = %q", got)
	}
}
