package server

import (
	"context"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/krill-xmpp/krill/config"
)

// TestResolve: a [s2s.routes] entry wins; without one and without SRV
// records the domain itself is tried on 5269 (RFC 6120 3.2.1).
func TestResolve(t *testing.T) {
	cfg := config.Default()
	cfg.DataDir = t.TempDir()
	cfg.S2S.Routes = map[string]string{"b.test": "127.0.0.3:5269"}
	s, err := New(cfg, zap.NewNop(), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, tc := range []struct{ domain, want string }{
		{"b.test", "127.0.0.3:5269"},
		{"nowhere.invalid", "nowhere.invalid:5269"},
	} {
		got, err := s.resolve(ctx, tc.domain)
		if err != nil || len(got) != 1 || got[0] != tc.want {
			t.Errorf("resolve(%s) = %v, %v; want [%s]", tc.domain, got, err, tc.want)
		}
	}
}

// TestDialbackKey: XEP-0185 keys depend on both domains and the stream id,
// and verify with the same secret only.
func TestDialbackKey(t *testing.T) {
	f := &federation{}
	f.secret[0] = 1
	k := f.dialbackKey("b.test", "a.test", "id1")
	if len(k) != 64 || k != f.dialbackKey("b.test", "a.test", "id1") {
		t.Fatalf("key %q not stable", k)
	}
	for _, other := range []string{f.dialbackKey("a.test", "b.test", "id1"), f.dialbackKey("b.test", "a.test", "id2")} {
		if other == k {
			t.Fatal("key does not depend on its inputs")
		}
	}
	g := &federation{}
	if g.dialbackKey("b.test", "a.test", "id1") == k {
		t.Fatal("key does not depend on the secret")
	}
}
