package register

import (
	"context"
	"net/netip"
	"strings"
	"testing"

	"github.com/krill-xmpp/krill/hook"
	"github.com/krill-xmpp/krill/hook/hooktest"
	"github.com/krill-xmpp/krill/sasl"
	"github.com/krill-xmpp/krill/storage"
)

// accounts is an Accounts in memory.
type accounts map[string]bool

func (a accounts) AddAccount(_ context.Context, user string, _ sasl.Credentials) error {
	if a[user] {
		return storage.ErrExists
	}
	a[user] = true
	return nil
}

func TestParseQuery(t *testing.T) {
	str := func(s string) *string { return &s }
	cases := []struct {
		name, payload string
		user, pass    *string
		ok            bool
	}{
		{"both", `<query xmlns='jabber:iq:register'><username>Bob</username><password>p&amp;w</password></query>`, str("Bob"), str("p&w"), true},
		{"empty elements", `<query xmlns='jabber:iq:register'><username/><password></password></query>`, str(""), str(""), true},
		{"none", `<query xmlns='jabber:iq:register'/>`, nil, nil, true},
		{"other namespace ignored", `<query xmlns='jabber:iq:register'><username xmlns='x'>a</username></query>`, nil, nil, true},
		{"markup in a field", `<query xmlns='jabber:iq:register'><username><b/></username></query>`, nil, nil, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			u, p, ok := parseQuery([]byte(tc.payload))
			eq := func(a, b *string) bool { return a == nil && b == nil || a != nil && b != nil && *a == *b }
			if ok != tc.ok || tc.ok && (!eq(u, tc.user) || !eq(p, tc.pass)) {
				t.Fatalf("parseQuery = %v %v %v", u, p, ok)
			}
		})
	}
}

func TestRegistration(t *testing.T) {
	accts := accounts{"taken": true}
	m := &Module{Accounts: accts, Enabled: true}
	reg, err := hook.New(m)
	if err != nil {
		t.Fatal(err)
	}
	if got := string(reg.StreamFeatures(nil, hook.PhasePreAuth, true)); got != `<register xmlns='http://jabber.org/features/iq-register'/>` {
		t.Fatalf("features over TLS: %q", got)
	}
	if got := reg.StreamFeatures(nil, hook.PhasePreAuth, false); len(got) != 0 {
		t.Fatalf("offered on a plaintext stream: %q", got)
	}
	h := &hooktest.Host{}
	h.Config().Register.MaxPerIP = 2
	conn := &hooktest.Conn{Encrypted: true}
	send := func(typ, payload string) string {
		t.Helper()
		st := &hook.Stanza{Kind: hook.IQ, Type: typ, ID: "r", Addr: hook.ToNone, NS: NS, Name: "query", Payload: []byte(payload)}
		it := hook.IQGet
		if typ == "set" {
			it = hook.IQSet
		}
		hd := reg.IQ(hook.PhasePreAuth, it, hook.ToNone, NS, "query")
		if hd == nil {
			t.Fatal("no handler")
		}
		n := len(conn.Written)
		if err := hd(hooktest.Ctx(reg, h, nil, conn, st), st); err != nil {
			t.Fatal(err)
		}
		return strings.Join(conn.Written[n:], "")
	}
	q := func(user, pass string) string {
		return `<query xmlns='jabber:iq:register'><username>` + user + `</username><password>` + pass + `</password></query>`
	}
	steps := []struct {
		typ, payload, want string
		failures           int
	}{
		{"get", `<query xmlns='jabber:iq:register'/>`, `<iq type='result' id='r'>` + form + `</iq>`, 0},
		{"set", q("Newbie", "pw1"), `<iq type='result' id='r'/>`, 0},
		{"set", q("taken", "pw"), `<conflict xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>`, 1},
		{"set", q("bad@name", "pw"), `<not-acceptable`, 2},
		{"set", `<query xmlns='jabber:iq:register'><username>x</username></query>`, `<not-acceptable`, 3},
		{"set", q("long", strings.Repeat("p", MaxPasswordLen+1)), `<not-acceptable`, 4},
		{"set", q("third", "pw"), `<resource-constraint`, 5}, // two per address: "newbie" and "taken"
	}
	for i, s := range steps {
		if got := send(s.typ, s.payload); !strings.Contains(got, s.want) || conn.Failures != s.failures {
			t.Fatalf("step %d: %q with %d failures, want %q and %d", i, got, conn.Failures, s.want, s.failures)
		}
	}
	if !accts["newbie"] || m.Stats().Registered != 1 || m.Stats().RateLimited != 1 {
		t.Fatalf("accounts %v, stats %+v", accts, m.Stats())
	}

	// A plaintext stream may not register unless plaintext is allowed.
	conn = &hooktest.Conn{}
	send("get", `<query xmlns='jabber:iq:register'/>`)
	if conn.Failed != "not-authorized" {
		t.Fatalf("plaintext: failed %q", conn.Failed)
	}
	plain, err := hook.New(&Module{Accounts: accts, Enabled: true, AllowPlaintext: true})
	if err != nil {
		t.Fatal(err)
	}
	if got := plain.StreamFeatures(nil, hook.PhasePreAuth, false); len(got) == 0 {
		t.Fatal("not offered on plaintext with c2s.allow_plaintext")
	}

	// Disabled: nothing is registered.
	off, err := hook.New(&Module{Accounts: accts})
	if err != nil {
		t.Fatal(err)
	}
	if off.IQ(hook.PhasePreAuth, hook.IQGet, hook.ToNone, NS, "query") != nil || len(off.StreamFeatures(nil, hook.PhasePreAuth, true)) != 0 {
		t.Fatal("registration registered while disabled")
	}
}

// TestRegistrationPerPrefix: register.max_per_ip counts an address prefix
// (preauth.ipv4_prefix, preauth.ipv6_prefix), so a client holding an IPv6
// /64 cannot register from each of its addresses in turn.
func TestRegistrationPerPrefix(t *testing.T) {
	accts := accounts{}
	reg, err := hook.New(&Module{Accounts: accts, Enabled: true})
	if err != nil {
		t.Fatal(err)
	}
	h := &hooktest.Host{}
	h.Config().Register.MaxPerIP = 1
	h.Config().Preauth.IPv4Prefix = 24 // IPv6 stays at the default /64
	hd := reg.IQ(hook.PhasePreAuth, hook.IQSet, hook.ToNone, NS, "query")
	steps := []struct {
		addr, user, want string
	}{
		{"2001:db8:0:1::1", "a1", `<iq type='result' id='r'/>`},
		{"2001:db8:0:1:ffff:ffff:ffff:ffff", "a2", `<resource-constraint`},
		{"2001:db8:0:2::1", "a3", `<iq type='result' id='r'/>`},
		{"192.0.2.1", "a4", `<iq type='result' id='r'/>`},
		{"192.0.2.200", "a5", `<resource-constraint`},
		{"::ffff:192.0.2.9", "a6", `<resource-constraint`}, // IPv4-mapped: the same /24
		{"192.0.3.1", "a7", `<iq type='result' id='r'/>`},
	}
	for _, s := range steps {
		t.Run(s.addr, func(t *testing.T) {
			conn := &hooktest.Conn{Encrypted: true, Addr: netip.MustParseAddr(s.addr)}
			st := &hook.Stanza{Kind: hook.IQ, Type: "set", ID: "r", Addr: hook.ToNone, NS: NS, Name: "query",
				Payload: []byte(`<query xmlns='jabber:iq:register'><username>` + s.user + `</username><password>pw</password></query>`)}
			if err := hd(hooktest.Ctx(reg, h, nil, conn, st), st); err != nil {
				t.Fatal(err)
			}
			if got := strings.Join(conn.Written, ""); !strings.Contains(got, s.want) {
				t.Fatalf("got %q, want %q", got, s.want)
			}
			if created := accts[s.user]; created != strings.HasPrefix(s.want, "<iq type='result'") {
				t.Fatalf("account %s created: %v", s.user, created)
			}
		})
	}
}
