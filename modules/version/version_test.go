package version_test

import (
	"testing"

	"mellium.im/xmpp/jid"
	"mellium.im/xmpp/stanza"

	"github.com/krill-xmpp/krill/modules/version"
	"github.com/krill-xmpp/krill/router"
)

type recorder struct{ result, errCond string }

func (r *recorder) ReplyResult(_ router.IQ, payload []byte) { r.result = string(payload) }
func (r *recorder) ReplyError(_ router.IQ, _ stanza.ErrorType, c stanza.Condition) {
	r.errCond = string(c)
}

func TestVersion(t *testing.T) {
	cases := []struct {
		name    string
		mod     version.Module
		to      string
		want    string
		errCond string
	}{
		{"defaults", version.Module{}, "", `<query xmlns='jabber:iq:version'><name>Krill</name><version>dev</version></query>`, ""},
		{"named", version.Module{Software: "K&K", Version: "1.0"}, "localhost", `<query xmlns='jabber:iq:version'><name>K&amp;K</name><version>1.0</version></query>`, ""},
		{"to an account", version.Module{}, "alice@localhost", "", "service-unavailable"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rec := &recorder{}
			iq := router.IQ{ID: "v", Type: stanza.GetIQ}
			if tc.to != "" {
				iq.To = jid.MustParse(tc.to)
			}
			if err := tc.mod.HandleIQ(&router.Ctx{Replier: rec}, iq); err != nil {
				t.Fatal(err)
			}
			if rec.result != tc.want || rec.errCond != tc.errCond {
				t.Fatalf("got %q / %q, want %q / %q", rec.result, rec.errCond, tc.want, tc.errCond)
			}
		})
	}
}
