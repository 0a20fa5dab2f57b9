package server

import (
	"context"
	"crypto/x509"
	"net"
	"slices"
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
		if err != nil || len(got) != 1 || got[0].addr != tc.want || got[0].direct {
			t.Errorf("resolve(%s) = %v, %v; want [%s]", tc.domain, got, err, tc.want)
		}
	}
}

// TestResolveSRV merges _xmpps-server._tcp (direct TLS) and
// _xmpp-server._tcp by priority, direct TLS first on a tie (XEP-0368).
func TestResolveSRV(t *testing.T) {
	cfg := config.Default()
	cfg.DataDir = t.TempDir()
	s, err := New(cfg, zap.NewNop(), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	s.fed.lookupSRV = func(_ context.Context, service, _, name string) (string, []*net.SRV, error) {
		switch service {
		case "xmpps-server":
			return "", []*net.SRV{{Target: "tls.b.test.", Port: 5270, Priority: 5}, {Target: "tls2.b.test.", Port: 443, Priority: 20}}, nil
		case "xmpp-server":
			return "", []*net.SRV{{Target: "plain.b.test.", Port: 5269, Priority: 5}, {Target: "backup.b.test.", Port: 5269, Priority: 10}}, nil
		}
		return "", nil, &net.DNSError{Err: "no such host", Name: name, IsNotFound: true}
	}
	got, err := s.resolve(context.Background(), "b.test")
	want := []s2sTarget{{"tls.b.test:5270", true}, {"plain.b.test:5269", false}, {"backup.b.test:5269", false}, {"tls2.b.test:443", true}}
	if err != nil || !slices.Equal(got, want) {
		t.Fatalf("resolve = %v, %v; want %v", got, err, want)
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

// TestS2SDevCertHosted: the development certificate names the hosted
// domains (MUC, upload, components) as SANs, so that a peer's SASL
// EXTERNAL check of a stream from conference.<domain> passes; one made
// before a component was configured is made again.
func TestS2SDevCertHosted(t *testing.T) {
	cfg := config.Default()
	cfg.Domain = "a.test"
	cfg.DataDir = t.TempDir()
	leaf := func(hosted []string) *x509.Certificate {
		t.Helper()
		cs, err := newCertSource("", "", cfg.Domain, cfg.DataDir, hosted...)
		if err != nil {
			t.Fatal(err)
		}
		return cs.cert.Load().Leaf
	}
	first := leaf(hostedDomains(&cfg))
	if want := []string{"a.test", "conference.a.test", "upload.a.test"}; !slices.Equal(first.DNSNames, want) {
		t.Fatalf("SANs %v, want %v", first.DNSNames, want)
	}
	if again := leaf(hostedDomains(&cfg)); again.SerialNumber.Cmp(first.SerialNumber) != 0 {
		t.Fatal("a certificate that covers the domains was not reused")
	}
	cfg.Component.Secrets = map[string]string{"push.a.test": "x"}
	second := leaf(hostedDomains(&cfg))
	if err := second.VerifyHostname("push.a.test"); err != nil {
		t.Fatalf("after a component was configured: %v", err)
	}
}
