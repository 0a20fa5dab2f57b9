package version_test

import (
	"runtime"
	"slices"
	"testing"

	"github.com/krill-xmpp/krill/modules/internal/iqtest"
	"github.com/krill-xmpp/krill/modules/version"
)

// TestVersion: the reply's exact bytes for each setting, and no handler
// for a query to an account (the core answers it service-unavailable).
func TestVersion(t *testing.T) {
	cases := []struct {
		name string
		mod  version.Module
		send string
		want string // "": no handler
	}{
		{"defaults", version.Module{}, `<iq type='get' id='v'><query xmlns='jabber:iq:version'/></iq>`,
			`<iq type='result' id='v'><query xmlns='jabber:iq:version'><name>Krill</name><version>dev</version></query></iq>`},
		{"named", version.Module{Software: "K&K", Version: "1.0"}, `<iq type='get' id='v' to='localhost'><query xmlns='jabber:iq:version'/></iq>`,
			`<iq type='result' id='v' from='localhost'><query xmlns='jabber:iq:version'><name>K&amp;K</name><version>1.0</version></query></iq>`},
		{"os", version.Module{ShowOS: true}, `<iq type='get' id='v'><query xmlns='jabber:iq:version'/></iq>`,
			`<iq type='result' id='v'><query xmlns='jabber:iq:version'><name>Krill</name><version>dev</version><os>` + runtime.GOOS + `</os></query></iq>`},
		{"to an account", version.Module{}, `<iq type='get' id='v' to='alice@localhost'><query xmlns='jabber:iq:version'/></iq>`, ""},
		{"set", version.Module{}, `<iq type='set' id='v'><query xmlns='jabber:iq:version'/></iq>`, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			res := iqtest.Send(t, iqtest.Registry(t, tc.mod), nil, iqtest.Bound("alice", "a"), tc.send)
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
}
