package server_test

import (
	"encoding/base64"
	"slices"
	"strings"
	"testing"
)

// Every per-address limit counts an address prefix (preauth.ipv4_prefix,
// preauth.ipv6_prefix). These tests dial from chosen loopback sources:
// with ipv4_prefix = 24, 127.0.0.1 and 127.0.0.2 are one client and
// 127.0.1.1 another. (IPv6 loopback has only ::1, so IPv6 prefixes are
// tested with constructed addresses in package ratelimit and in
// preauth_internal_test.go.)

// TestPreauthCapByPrefix: preauth.max_per_ip caps a /24 as one address,
// and a connection leaving the pre-auth pool frees the slot of its /24.
func TestPreauthCapByPrefix(t *testing.T) {
	cfg := testConfig(t)
	cfg.Preauth.MaxPerIP = 1
	cfg.Preauth.IPv4Prefix = 24
	srv := startServer(t, cfg)

	a := dialFrom(t, srv, "127.0.0.1")
	a.open()
	same := dialFrom(t, srv, "127.0.0.2")
	if out := same.closed(); !strings.Contains(out, "<policy-violation "+streamsNS+"/>") {
		t.Fatalf("second connection from the /24 got %q, want policy-violation", out)
	}
	other := dialFrom(t, srv, "127.0.1.1")
	other.open()
	// Closing 127.0.0.1 releases the /24's slot for 127.0.0.2.
	_ = a.conn.Close()
	if !waitFor(ioTimeout, func() bool { return srv.Stats().Preauth == 1 }) {
		t.Fatalf("pre-auth count %d after a close, want 1", srv.Stats().Preauth)
	}
	again := dialFrom(t, srv, "127.0.0.2")
	again.open()
}

// TestFailureThrottleByPrefix: preauth.max_failures_per_ip counts failed
// logins of a /24 together; another /24 logs in.
func TestFailureThrottleByPrefix(t *testing.T) {
	cfg := testConfig(t)
	cfg.Preauth.MaxFailuresPerIP = 1
	cfg.Preauth.IPv4Prefix = 24
	srv := startServer(t, cfg, "nina")

	w := dialFrom(t, srv, "127.0.0.1")
	w.open()
	w.scramWrong("nina")
	// 127.0.0.2 is throttled at its <auth/>, before any look-up, even
	// about to give the right password.
	r := dialFrom(t, srv, "127.0.0.2")
	r.open()
	first := base64.StdEncoding.EncodeToString([]byte("n,,n=nina,r=abcdefghijklmnopqrstuvwx"))
	r.send(`<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='SCRAM-SHA-256'>` + first + `</auth>`)
	r.expect(t, `<failure xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><temporary-auth-failure/><text>too many failed logins from your address; try later</text></failure>`)
	if srv.Stats().AuthThrottled != 1 {
		t.Fatalf("stats: %+v", srv.Stats())
	}
	other := dialFrom(t, srv, "127.0.1.1")
	if got := other.scramLogin("nina", testPassword, "n"); got != "nina@localhost/n" {
		t.Fatalf("login from another /24 bound %q", got)
	}
}

// TestRegistrationByPrefix: register.max_per_ip counts a /24 together.
func TestRegistrationByPrefix(t *testing.T) {
	cfg := testConfig(t)
	cfg.Register.Enabled = true
	cfg.Register.MaxPerIP = 1
	cfg.Preauth.IPv4Prefix = 24
	srv := startServer(t, cfg)
	for _, s := range []struct{ from, user, want string }{
		{"127.0.0.1", "first", `<iq type='result' id='r'/>`},
		{"127.0.0.2", "second", `<iq type='error' id='r'><error type='wait'><resource-constraint xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>`},
		{"127.0.1.1", "third", `<iq type='result' id='r'/>`},
	} {
		r := dialFrom(t, srv, s.from)
		r.open()
		r.send(`<iq type='set' id='r'><query xmlns='jabber:iq:register'><username>` + s.user + `</username><password>pw</password></query></iq>`)
		r.expect(t, s.want)
	}
	n := dialFrom(t, srv, "127.0.0.3")
	if got := n.scramLogin("third", "pw", "x"); got != "third@localhost/x" {
		t.Fatalf("bound %q", got)
	}
}

// TestReloadPrefixNeedsRestart: a reload reports the prefix lengths as
// needing a restart and keeps counting by the old ones, while the other
// preauth keys apply at once.
func TestReloadPrefixNeedsRestart(t *testing.T) {
	cfg := testConfig(t)
	srv := startServer(t, cfg)
	next := cfg
	next.Preauth.MaxPerIP = 1
	next.Preauth.IPv4Prefix = 24
	next.Preauth.IPv6Prefix = 48
	changed, restart, err := srv.Reload(next)
	if err != nil {
		t.Fatal(err)
	}
	wantChanged := []string{"preauth.ipv4_prefix", "preauth.ipv6_prefix", "preauth.max_per_ip"}
	wantRestart := []string{"preauth.ipv4_prefix", "preauth.ipv6_prefix"}
	if !slices.Equal(changed, wantChanged) || !slices.Equal(restart, wantRestart) {
		t.Fatalf("changed %v, restart %v; want %v and %v", changed, restart, wantChanged, wantRestart)
	}
	// max_per_ip = 1 applies; the /24 does not: 127.0.0.2 is still its own address.
	a := dialFrom(t, srv, "127.0.0.1")
	a.open()
	if out := dialFrom(t, srv, "127.0.0.1").closed(); !strings.Contains(out, "<policy-violation "+streamsNS+"/>") {
		t.Fatalf("second connection from 127.0.0.1 got %q, want policy-violation", out)
	}
	b := dialFrom(t, srv, "127.0.0.2")
	b.open()
}
