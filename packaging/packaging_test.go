package packaging

import (
	"bufio"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/krill-xmpp/krill/config"
)

// TestExampleConfig loads krill.toml with the server's own loader and
// checks the choices that make it a production configuration.
func TestExampleConfig(t *testing.T) {
	cfg, err := config.Load("krill.toml", nil, nil)
	if err != nil {
		t.Fatalf("krill.toml does not load: %v", err)
	}
	tests := []struct {
		name string
		ok   bool
	}{
		{"log.format is json", cfg.Log.Format == "json"},
		{"plaintext authentication is off", !cfg.C2S.AllowPlaintext},
		{"preauth.max_total caps pre-auth connections", cfg.Preauth.MaxTotal > 0},
		{"preauth.max_per_ip caps them per address", cfg.Preauth.MaxPerIP > 0},
		{"preauth.timeout is at most the default", cfg.Preauth.Timeout > 0 && cfg.Preauth.Timeout <= config.DefaultPreauthTimeout},
		{"login failures are throttled per address", cfg.Preauth.MaxFailuresPerIP > 0},
		{"a real certificate is configured", cfg.TLS.Cert != "" && cfg.TLS.Key != ""},
		{"in-band registration is off", !cfg.Register.Enabled},
		{"data_dir is systemd's StateDirectory", cfg.DataDir == "/var/lib/krill"},
		{"the domain is not localhost", cfg.Domain != config.DefaultDomain},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if !tt.ok {
				t.Errorf("krill.toml: want %s", tt.name)
			}
		})
	}
}

// tomlKey matches a key assignment, set or commented out: "listen = ...",
// "# dsn = ...".
var tomlKey = regexp.MustCompile(`^#?\s*([a-z0-9_]+)\s*=`)

// tomlSection matches a section header, set or commented out.
var tomlSection = regexp.MustCompile(`^#?\s*\[([a-z0-9_]+)\]\s*$`)

// TestExampleConfigComplete checks that krill.toml mentions every
// configuration key, set or in a comment, so that a key added to the
// server is documented in the example too.
func TestExampleConfigComplete(t *testing.T) {
	f, err := os.Open("krill.toml")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	seen := make(map[string]bool)
	section := ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if m := tomlSection.FindStringSubmatch(line); m != nil {
			section = m[1]
			continue
		}
		if m := tomlKey.FindStringSubmatch(line); m != nil {
			key := m[1]
			if section != "" {
				key = section + "." + key
			}
			seen[key] = true
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	var missing []string
	for key := range config.Keys() {
		if !seen[key] {
			missing = append(missing, key)
		}
	}
	slices.Sort(missing)
	if len(missing) > 0 {
		t.Errorf("krill.toml does not document %v: add each, commented out if it has no production value", missing)
	}
}

// TestUnitHardening checks that krill.service keeps its sandbox.
func TestUnitHardening(t *testing.T) {
	b, err := os.ReadFile("krill.service")
	if err != nil {
		t.Fatal(err)
	}
	unit := make(map[string][]string) // "Section.Key" -> values in order
	section := ""
	for _, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]") {
			section = strings.Trim(line, "[]")
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Fatalf("krill.service: not key=value: %q", line)
		}
		unit[section+"."+k] = append(unit[section+"."+k], v)
	}
	tests := []struct {
		key, want string
	}{
		{"Service.User", "krill"},
		{"Service.ExecStart", "/usr/local/bin/krill serve --config /etc/krill/krill.toml"},
		{"Service.ExecStartPre", "/usr/local/bin/krill config check --config /etc/krill/krill.toml"},
		{"Service.ExecReload", "/bin/kill -HUP $MAINPID"},
		{"Service.Restart", "on-failure"},
		{"Service.StateDirectory", "krill"},
		{"Service.LimitNOFILE", "1048576"},
		{"Service.NoNewPrivileges", "yes"},
		{"Service.CapabilityBoundingSet", ""},
		{"Service.AmbientCapabilities", ""},
		{"Service.ProtectSystem", "strict"},
		{"Service.ProtectHome", "yes"},
		{"Service.PrivateTmp", "yes"},
		{"Service.PrivateDevices", "yes"},
		{"Service.ProtectKernelTunables", "yes"},
		{"Service.ProtectKernelModules", "yes"},
		{"Service.ProtectKernelLogs", "yes"},
		{"Service.ProtectControlGroups", "yes"},
		{"Service.RestrictAddressFamilies", "AF_INET AF_INET6 AF_UNIX"},
		{"Service.RestrictNamespaces", "yes"},
		{"Service.RestrictSUIDSGID", "yes"},
		{"Service.MemoryDenyWriteExecute", "yes"},
		{"Service.SystemCallArchitectures", "native"},
		{"Install.WantedBy", "multi-user.target"},
	}
	for _, tt := range tests {
		t.Run(tt.key, func(t *testing.T) {
			vs := unit[tt.key]
			if len(vs) != 1 || vs[0] != tt.want {
				t.Errorf("%s = %q, want exactly %q", tt.key, vs, tt.want)
			}
		})
	}
	// The stop timeout must leave the server its graceful shutdown.
	t.Run("TimeoutStopSec", func(t *testing.T) {
		cfg, err := config.Load("krill.toml", nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		vs := unit["Service.TimeoutStopSec"]
		if len(vs) != 1 {
			t.Fatalf("TimeoutStopSec = %q, want one value", vs)
		}
		d, err := time.ParseDuration(vs[0])
		if err != nil {
			t.Fatalf("TimeoutStopSec %q: %v", vs[0], err)
		}
		if d <= cfg.Server.ShutdownTimeout {
			t.Errorf("TimeoutStopSec %v is not above server.shutdown_timeout %v", d, cfg.Server.ShutdownTimeout)
		}
	})
}

// envName matches a Krill environment variable in prose or examples.
var envName = regexp.MustCompile(`\bKRILL_[A-Z0-9_]+`)

// TestReadmeEnv checks that every KRILL_* variable the guide names is one
// the server reads: an unknown one would stop the server at start.
func TestReadmeEnv(t *testing.T) {
	b, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	// The cluster example's variables too.
	compose, err := os.ReadFile("cluster/compose.yaml")
	if err != nil {
		t.Fatal(err)
	}
	b = append(b, compose...)
	keys := config.Keys()
	names := envName.FindAllString(string(b), -1)
	if len(names) == 0 {
		t.Fatal("README.md names no KRILL_ variable; the pattern is wrong")
	}
	for _, name := range names {
		if strings.HasSuffix(name, "_") { // "KRILL_<SECTION>_<KEY>" style placeholders
			continue
		}
		if _, ok := keys[config.EnvKey(name)]; !ok {
			t.Errorf("README.md names %s, which sets no configuration key", name)
		}
	}
}
