package config

import (
	"flag"
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
	if loaded != c {
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
		{"every invalid value at once", "testdata/invalid.toml", nil, []string{
			"domain: must not be empty", "preauth.timeout: must be > 0, got 0s",
			"preauth.max_failed_auth: must be >= 1, got 0",
			"preauth.max_failed_exchanges: must be between 1 and 255, got 256", "log.level: must be debug, info, warn or error, got loud",
			"log.buffer: must be >= 0, got -1",
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
