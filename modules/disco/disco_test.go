package disco_test

import (
	"strings"
	"testing"

	"mellium.im/xmpp/jid"
	"mellium.im/xmpp/stanza"

	"github.com/krill-xmpp/krill/modules/disco"
	"github.com/krill-xmpp/krill/modules/ping"
	"github.com/krill-xmpp/krill/router"
)

// recorder is a router.Replier that keeps what the module answered.
type recorder struct{ result, errCond string }

func (r *recorder) ReplyResult(_ router.IQ, payload []byte) { r.result = string(payload) }
func (r *recorder) ReplyError(_ router.IQ, _ stanza.ErrorType, c stanza.Condition) {
	r.errCond = string(c)
}

func TestDisco(t *testing.T) {
	var r router.Router
	if err := r.Register(ping.Module{}, disco.Module{}); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, to, payload, want, errCond string
	}{
		{"domain info", "", `<query xmlns='http://jabber.org/protocol/disco#info'/>`,
			`<query xmlns='http://jabber.org/protocol/disco#info'><identity category='server' type='im' name='Krill'/>` +
				`<feature var='http://jabber.org/protocol/disco#info'/><feature var='http://jabber.org/protocol/disco#items'/>` +
				`<feature var='urn:xmpp:ping'/></query>`, ""},
		{"account info", "alice@localhost", `<query xmlns='http://jabber.org/protocol/disco#info'/>`,
			`<identity category='account' type='registered'/>`, ""},
		{"items", "", `<query xmlns='http://jabber.org/protocol/disco#items'/>`,
			`<query xmlns='http://jabber.org/protocol/disco#items'/>`, ""},
		{"node", "", `<query xmlns='http://jabber.org/protocol/disco#info' node='x'/>`, "", "item-not-found"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rec := &recorder{}
			iq := router.IQ{ID: "1", Type: stanza.GetIQ, Payload: []byte(tc.payload)}
			if tc.to != "" {
				iq.To = jid.MustParse(tc.to)
			}
			err := disco.Module{}.HandleIQ(&router.Ctx{Domain: "localhost", Router: &r, Replier: rec}, iq)
			if err != nil {
				t.Fatal(err)
			}
			if rec.errCond != tc.errCond || !strings.Contains(rec.result, tc.want) {
				t.Fatalf("result %q error %q; want %q error %q", rec.result, rec.errCond, tc.want, tc.errCond)
			}
		})
	}
}
