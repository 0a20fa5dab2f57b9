package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestS2SDomainTables reads [s2s.routes] and [s2s.require_valid_certs_for],
// whose keys are domain names with dots.
func TestS2SDomainTables(t *testing.T) {
	path := filepath.Join(t.TempDir(), "krill.toml")
	body := "[s2s]\nlisten = \"127.0.0.2:5269\"\n[s2s.routes]\n\"b.test\" = \"127.0.0.3:5269\"\n\"x.example.org\" = \"[::1]:5270\"\n" +
		"[s2s.require_valid_certs_for]\n\"b.test\" = true\n"
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Load(path, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := c.S2S.Routes; len(got) != 2 || got["b.test"] != "127.0.0.3:5269" || got["x.example.org"] != "[::1]:5270" {
		t.Fatalf("routes = %v", got)
	}
	if !c.S2S.RequireValidCertsFrom("b.test") || c.S2S.RequireValidCertsFrom("c.test") {
		t.Fatalf("require_valid_certs_for = %v", c.S2S.RequireValidCertsFor)
	}
	if c.S2S.Listen != "127.0.0.2:5269" {
		t.Fatalf("listen = %q", c.S2S.Listen)
	}
}

// TestS2SBadRoute names the key of a route that is not host:port.
func TestS2SBadRoute(t *testing.T) {
	c := Default()
	c.S2S.Routes = map[string]string{"b.test": "nowhere"}
	if err := c.Validate(); err == nil {
		t.Fatal("a route without a port validated")
	}
}

// TestComponentSecrets reads [component.secrets], keyed by domain names.
func TestComponentSecrets(t *testing.T) {
	path := filepath.Join(t.TempDir(), "krill.toml")
	body := "domain = \"example.org\"\n[component]\nlisten = \"127.0.0.1:5347\"\n[component.secrets]\n\"push.example.org\" = \"s3cret\"\n"
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Load(path, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := c.Component.Secrets; len(got) != 1 || got["push.example.org"] != "s3cret" {
		t.Fatalf("secrets = %v", got)
	}
	c.Component.Secrets["example.org"] = "x"
	if err := c.Validate(); err == nil {
		t.Fatal("a component for the server's own domain validated")
	}
}

// TestS2SLimits checks s2s.max_streams_per_domain and s2s.max_dials:
// their defaults validate, 0 streams means no cap, and each bad value is
// named by its key.
func TestS2SLimits(t *testing.T) {
	for _, tc := range []struct {
		name    string
		streams int
		dials   int
		bad     string
	}{
		{"defaults", DefaultS2SMaxStreamsPerDomain, DefaultS2SMaxDials, ""},
		{"no stream cap", 0, 1, ""},
		{"negative streams", -1, 16, "s2s.max_streams_per_domain"},
		{"no dials", 8, 0, "s2s.max_dials"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := Default()
			c.S2S.MaxStreamsPerDomain, c.S2S.MaxDials = tc.streams, tc.dials
			err := c.Validate()
			switch {
			case tc.bad == "" && err != nil:
				t.Fatalf("Validate: %v", err)
			case tc.bad != "" && (err == nil || !strings.Contains(err.Error(), tc.bad)):
				t.Fatalf("Validate = %v, want an error naming %s", err, tc.bad)
			}
		})
	}
	if d := Default().S2S; d.MaxStreamsPerDomain != 8 || d.MaxDials != 16 {
		t.Fatalf("defaults = %d streams, %d dials", d.MaxStreamsPerDomain, d.MaxDials)
	}
}
