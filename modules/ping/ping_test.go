package ping_test

import (
	"slices"
	"testing"

	"github.com/krill-xmpp/krill/modules/internal/iqtest"
	"github.com/krill-xmpp/krill/modules/ping"
)

// TestPing: pings to the server, to the own account and to another one
// are answered with an empty result from whom they were sent to; a ping
// of type set is not a ping.
func TestPing(t *testing.T) {
	reg := iqtest.Registry(t, ping.Module{})
	cases := []struct{ name, send, want string }{
		{"no to", `<iq type='get' id='p1'><ping xmlns='urn:xmpp:ping'/></iq>`, `<iq type='result' id='p1'/>`},
		{"domain", `<iq type="get" id="p2" to="localhost"><ping xmlns="urn:xmpp:ping"/></iq>`, `<iq type='result' id='p2' from='localhost'/>`},
		{"own account", `<iq type='get' id='p3' to='alice@localhost'><ping xmlns='urn:xmpp:ping'/></iq>`, `<iq type='result' id='p3' from='alice@localhost'/>`},
		{"another account", `<iq type='get' id='p4' to='bob@localhost'><ping xmlns='urn:xmpp:ping'/></iq>`, `<iq type='result' id='p4' from='bob@localhost'/>`},
		{"set", `<iq type='set' id='p5'><ping xmlns='urn:xmpp:ping'/></iq>`, ""},
		{"full JID", `<iq type='get' id='p6' to='bob@localhost/b'><ping xmlns='urn:xmpp:ping'/></iq>`, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			res := iqtest.Send(t, reg, nil, iqtest.Bound("alice", "a"), tc.send)
			if tc.want == "" {
				if res.Handled {
					t.Fatalf("handled, wrote %q", res.Conn.Written)
				}
				return
			}
			if !res.Handled || !slices.Equal(res.Conn.Written, []string{tc.want}) {
				t.Fatalf("handled %v, wrote %q; want %q", res.Handled, res.Conn.Written, tc.want)
			}
		})
	}
	if f := reg.DiscoFeatures(); !slices.Equal(f, []string{ping.NS}) {
		t.Fatalf("disco features %v", f)
	}
}
