package server_test

import (
	"encoding/base64"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// prosodyRoutes is a Prosody plugin written for the test: Prosody has no
// static s2s routes, so it swaps the SRV resolver of the domains named in
// krill_routes for fixed addresses (and no direct TLS), as Krill's
// [s2s.routes] does.
const prosodyRoutes = `local service = require "net.resolvers.service";
local basic = require "net.resolvers.basic";
local manual = require "net.resolvers.manual";
local routes = module:get_option("krill_routes", {});
local orig = service.new;
service.new = function(hostname, srv, proto, extra)
	local r = routes[hostname];
	if r and srv == "xmpp-server" then return basic.new(r[1], r[2], proto, extra); end
	if r then return manual.new({}, proto, extra); end
	return orig(hostname, srv, proto, extra);
end
`

// startProsody runs Debian's prosody as p.test on 127.0.0.4 with its own
// configuration and data directory, with a MUC component at
// conference.p.test, routed to a.test and conference.a.test at krill
// (host:port), trusting caFile for s2s certificates. It returns its c2s
// and s2s addresses.
func startProsody(t *testing.T, krill, caFile string, ca devCA) (c2s, s2s string) {
	t.Helper()
	bin, err := exec.LookPath("prosody")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("prosody is not installed (.ci/run installs it)")
		}
		t.Skip("prosody is not installed")
	}
	dir := t.TempDir()
	c2s, s2s = freePort(t, "127.0.0.4"), freePort(t, "127.0.0.4")
	_, c2sPort, _ := net.SplitHostPort(c2s)
	_, s2sPort, _ := net.SplitHostPort(s2s)
	kh, kp, _ := net.SplitHostPort(krill)
	if err := os.WriteFile(filepath.Join(dir, "mod_krill_routes.lua"), []byte(prosodyRoutes), 0o644); err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(dir, "data")
	accounts := filepath.Join(data, "p%2etest", "accounts")
	if err := os.MkdirAll(accounts, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(accounts, "bob.dat"), []byte(`return { ["password"] = "`+testPassword+`"; };`), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := fmt.Sprintf(`run_as_root = true
daemonize = false
pidfile = %q
data_path = %q
plugin_paths = { %q }
log = { debug = %q }
interfaces = { "127.0.0.4" }
c2s_ports = { %s }
s2s_ports = { %s }
c2s_direct_tls_ports = { }
s2s_direct_tls_ports = { }
c2s_require_encryption = false
allow_unencrypted_plain_auth = true
s2s_require_encryption = true
s2s_secure_auth = false
authentication = "internal_plain"
storage = "internal"
modules_enabled = { "roster", "saslauth", "tls", "dialback", "s2s_auth_certs", "disco", "ping", "presence", "message", "iq", "krill_routes" }
modules_disabled = { "s2s_bidi" }
krill_routes = { ["a.test"] = { %[7]q, %[8]s }, ["conference.a.test"] = { %[7]q, %[8]s } }
ssl = { certificate = %[9]q, key = %[10]q, cafile = %[11]q }
VirtualHost "p.test"
Component "conference.p.test" "muc"
	modules_enabled = { "s2s_auth_certs" }
	muc_room_locking = false
`, filepath.Join(dir, "prosody.pid"), data, dir, filepath.Join(dir, "prosody.log"), c2sPort, s2sPort, kh, kp,
		ca.certFile, ca.keyFile, caFile)
	cfgFile := filepath.Join(dir, "prosody.cfg.lua")
	if err := os.WriteFile(cfgFile, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "--config", cfgFile, "-F")
	cmd.Stdout, cmd.Stderr = nil, nil
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(dir, "prosody.log"))
			t.Logf("prosody log:\n%s", b)
		}
	})
	if !waitFor(ioTimeout, func() bool {
		c, err := net.DialTimeout("tcp", c2s, time.Second)
		if err != nil {
			return false
		}
		c.Close()
		return true
	}) {
		t.Fatal("prosody did not start")
	}
	return c2s, s2s
}

// prosodyLogin logs user in to Prosody with PLAIN over the plain c2s port
// (allowed in its test configuration) and binds resource.
func prosodyLogin(t *testing.T, addr, user, resource string) *rawConn {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, ioTimeout)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = nc.Close() })
	r := &rawConn{t: t, conn: nc}
	header := `<?xml version='1.0'?><stream:stream to='p.test' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>`
	r.send(header)
	r.skipUntil("</stream:features>")
	r.send(`<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>` + base64.StdEncoding.EncodeToString([]byte("\x00"+user+"\x00"+testPassword)) + `</auth>`)
	r.skipUntil("<success")
	r.skipUntil("/>")
	r.send(header)
	r.skipUntil("</stream:features>")
	r.send(`<iq type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>` + resource + `</resource></bind></iq>`)
	r.skipUntil("</iq>")
	r.send(`<presence/>`)
	return r
}

// TestProsodyInterop exchanges messages both ways between alice@a.test on
// Krill and bob@p.test on Debian's Prosody, with each trusting the other's
// CA (SASL EXTERNAL) and with neither (dialback); then bob joins a room of
// Krill's MUC service and alice one of Prosody's (mod_muc at
// conference.p.test), each room carrying one groupchat message each way.
// KRILL_INTEROP=1.
func TestProsodyInterop(t *testing.T) {
	if os.Getenv("KRILL_INTEROP") != "1" {
		t.Skip("runs with KRILL_INTEROP=1 (make interop)")
	}
	for _, tc := range []struct {
		name  string
		trust bool
	}{{"external", true}, {"dialback", false}} {
		t.Run(tc.name, func(t *testing.T) {
			aCA, pCA := newDevCA(t, "a.test", "conference.a.test"), newDevCA(t, "p.test", "conference.p.test")
			krillS2S := freePort(t, "127.0.0.2")
			cfg := testConfig(t)
			cfg.Domain = "a.test"
			cfg.C2S.Listen = "127.0.0.2:0"
			cfg.TLS.Cert, cfg.TLS.Key = aCA.certFile, aCA.keyFile
			cfg.S2S.Listen = krillS2S
			pTrust, aTrust := aCA.caFile, pCA.caFile
			if !tc.trust {
				pTrust, aTrust = pCA.caFile, aCA.caFile
			}
			cfg.S2S.CAFile = aTrust
			pc2s, ps2s := startProsody(t, krillS2S, pTrust, pCA)
			cfg.S2S.Routes = map[string]string{"p.test": ps2s, "conference.p.test": ps2s}
			a := &fedNode{domain: "a.test", cfg: cfg}
			a.srv, a.store = startServerOpts(t, cfg, serverOpts{}, "alice")
			alice := fedLogin(t, a, "alice", "a")
			alice.exchange(t, `<presence/>`, `<presence from='alice@a.test/a'/>`)
			bob := prosodyLogin(t, pc2s, "bob", "b")

			alice.send(`<message type='chat' id='k1' to='bob@p.test/b'><body>from krill</body></message>`)
			got := bob.skipUntil(`</message>`)
			if !strings.Contains(got, `from krill`) || !strings.Contains(got, `from='alice@a.test/a'`) {
				t.Fatalf("bob got %q", got)
			}
			bob.send(`<message type='chat' id='p1' to='alice@a.test/a'><body>from prosody</body></message>`)
			got = alice.skipUntil(`</message>`)
			if !strings.Contains(got, `from prosody`) || !strings.Contains(got, `from='bob@p.test/b'`) {
				t.Fatalf("alice got %q", got)
			}
			st := a.srv.S2SStats()
			t.Logf("krill: %+v", st)
			if tc.trust && st.AuthExternal != 1 {
				t.Errorf("want Prosody authenticated with SASL EXTERNAL: %+v", st)
			}
			if !tc.trust && st.AuthDialback != 1 {
				t.Errorf("want Prosody authenticated with dialback: %+v", st)
			}

			// bob@p.test in a room of Krill's MUC service.
			m := fedMUC{svc: "conference.a.test", secret: mucSecret(t, a.store)}
			al := occ{"room", "Alice", "alice@a.test/a", "owner", "moderator"}
			m.create(t, alice, al)
			bob.send(`<presence to='room@conference.a.test/Bob'><x xmlns='http://jabber.org/protocol/muc'/></presence>`)
			if got := bob.skipUntil(`<subject/></message>`); !strings.Contains(got, `<status code='110'/>`) || !strings.Contains(got, `from='room@conference.a.test/Alice'`) {
				t.Fatalf("bob joining a Krill room got %q", got)
			}
			alice.expect(t, m.pres(occ{"room", "Bob", "bob@p.test/b", "none", "participant"}, al.full, "", true, nil, ""))
			bob.send(`<message to='room@conference.a.test' type='groupchat' id='pg1'><body>prosody in krill</body></message>`)
			// Prosody stamps xml:lang on what it sends, the room keeps
			// it, and Prosody's attribute order varies from run to run:
			// the message is checked piece by piece.
			got = alice.skipUntil(`</message>`)
			for _, want := range []string{`<message from='room@conference.a.test/Bob' to='alice@a.test/a' `, `id='pg1'`, `xml:lang='en'`,
				`><body>prosody in krill</body><occupant-id xmlns='urn:xmpp:occupant-id:0' id='` + m.id("room", "bob@p.test") + `'/></message>`} {
				if !strings.Contains(got, want) {
					t.Fatalf("alice got %q, without %q", got, want)
				}
			}
			alice.send(`<message to='room@conference.a.test' type='groupchat' id='kg1'><body>krill in krill</body></message>`)
			alice.expect(t, m.groupchat(al, al.full, "kg1", "krill in krill"))
			if got := bob.skipUntil(`krill in krill</body>`); !strings.Contains(got, `from='room@conference.a.test/Alice'`) {
				t.Fatalf("bob got %q", got)
			}

			// alice@a.test in a room of Prosody's.
			alice.send(`<presence to='lobby@conference.p.test/Alice'><x xmlns='http://jabber.org/protocol/muc'/></presence>`)
			if got := alice.skipUntil(`</presence>`); !strings.Contains(got, `from='lobby@conference.p.test/Alice'`) || !strings.Contains(got, `code='110'`) {
				t.Fatalf("alice joining a Prosody room got %q", got)
			}
			alice.skipUntil(`<subject`)
			alice.skipUntil(`</message>`)
			bob.send(`<presence to='lobby@conference.p.test/Bob'><x xmlns='http://jabber.org/protocol/muc'/></presence>`)
			bob.skipUntil(`<subject`)
			bob.skipUntil(`</message>`)
			if got := alice.skipUntil(`</presence>`); !strings.Contains(got, `from='lobby@conference.p.test/Bob'`) {
				t.Fatalf("alice got %q", got)
			}
			alice.send(`<message to='lobby@conference.p.test' type='groupchat' id='kg2'><body>krill in prosody</body></message>`)
			if got := bob.skipUntil(`krill in prosody</body>`); !strings.Contains(got, `from='lobby@conference.p.test/Alice'`) {
				t.Fatalf("bob got %q", got)
			}
			bob.send(`<message to='lobby@conference.p.test' type='groupchat' id='pg2'><body>prosody in prosody</body></message>`)
			if got := alice.skipUntil(`prosody in prosody</body>`); !strings.Contains(got, `from='lobby@conference.p.test/Bob'`) {
				t.Fatalf("alice got %q", got)
			}
			// Inbound streams from p.test to a.test and to
			// conference.a.test, from conference.p.test to a.test;
			// outbound the other ways round.
			st = a.srv.S2SStats()
			t.Logf("krill after the rooms: %+v", st)
			if n := st.AuthExternal + st.AuthDialback; n != 3 || (tc.trust && st.AuthExternal != 3) {
				t.Errorf("want three inbound streams authenticated, with SASL EXTERNAL when trusted: %+v", st)
			}
			if st.Outbound != 3 {
				t.Errorf("want three outbound streams (a.test and conference.a.test to p.test, a.test to conference.p.test): %+v", st)
			}
		})
	}
}
