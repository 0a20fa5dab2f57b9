package lastactivity_test

import (
	"testing"
	"time"

	"mellium.im/xmpp/jid"
	"mellium.im/xmpp/stanza"

	"github.com/krill-xmpp/krill/modules/lastactivity"
	"github.com/krill-xmpp/krill/router"
)

type recorder struct{ result, errCond string }

func (r *recorder) ReplyResult(_ router.IQ, payload []byte) { r.result = string(payload) }
func (r *recorder) ReplyError(_ router.IQ, _ stanza.ErrorType, c stanza.Condition) {
	r.errCond = string(c)
}

func TestUptime(t *testing.T) {
	start := time.Unix(1_700_000_000, 0)
	cases := []struct {
		name, to, want, errCond string
		now                     time.Time
	}{
		{"just started", "localhost", `<query xmlns='jabber:iq:last' seconds='0'/>`, "", start.Add(999 * time.Millisecond)},
		{"one day", "localhost", `<query xmlns='jabber:iq:last' seconds='86400'/>`, "", start.Add(24 * time.Hour)},
		{"clock stepped back", "localhost", `<query xmlns='jabber:iq:last' seconds='0'/>`, "", start.Add(-time.Hour)},
		{"account", "alice@localhost", "", "service-unavailable", start},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rec := &recorder{}
			m := lastactivity.Module{Started: start, Now: func() time.Time { return tc.now }}
			iq := router.IQ{ID: "1", Type: stanza.GetIQ, To: jid.MustParse(tc.to), Payload: []byte(`<query xmlns='jabber:iq:last'/>`)}
			if err := m.HandleIQ(&router.Ctx{Domain: "localhost", Replier: rec}, iq); err != nil {
				t.Fatal(err)
			}
			if rec.result != tc.want || rec.errCond != tc.errCond {
				t.Fatalf("result %q error %q; want %q error %q", rec.result, rec.errCond, tc.want, tc.errCond)
			}
		})
	}
}
