package disco_test

import (
	"crypto/sha1"
	"encoding/base64"
	"slices"
	"testing"

	"github.com/krill-xmpp/krill/hook"
	"github.com/krill-xmpp/krill/modules/disco"
	"github.com/krill-xmpp/krill/modules/internal/iqtest"
	"github.com/krill-xmpp/krill/modules/ping"
)

// accountFeature is a module that adds a feature to accounts, as the
// last-activity module does.
type accountFeature struct{}

func (accountFeature) Name() string { return "accountfeature" }
func (accountFeature) Register(r *hook.Registrar) error {
	r.AccountFeature("urn:example:acct")
	return nil
}

const errNS = `xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'`

// TestDisco: info of the domain and of accounts lists every registered
// module's features, sorted; items are empty; nodes are unknown.
func TestDisco(t *testing.T) {
	reg := iqtest.Registry(t, ping.Module{}, disco.Module{}, accountFeature{})
	named := iqtest.Registry(t, disco.Module{IdentityName: "K&K"})
	const (
		info  = `<query xmlns='http://jabber.org/protocol/disco#info'/>`
		items = `<query xmlns='http://jabber.org/protocol/disco#items'/>`
	)
	domainInfo := `<query xmlns='http://jabber.org/protocol/disco#info'><identity category='server' type='im' name='Krill'/>` +
		`<feature var='http://jabber.org/protocol/disco#info'/><feature var='http://jabber.org/protocol/disco#items'/>` +
		`<feature var='urn:xmpp:ping'/></query>`
	accountInfo := `<query xmlns='http://jabber.org/protocol/disco#info'><identity category='account' type='registered'/>` +
		`<feature var='http://jabber.org/protocol/disco#info'/><feature var='urn:example:acct'/></query>`
	cases := []struct {
		name string
		reg  *hook.Registry
		send string
		want string // "": no handler
	}{
		{"domain info, no to", reg, `<iq type='get' id='1'>` + info + `</iq>`, `<iq type='result' id='1'>` + domainInfo + `</iq>`},
		{"domain info", reg, `<iq type='get' id='2' to='localhost'>` + info + `</iq>`, `<iq type='result' id='2' from='localhost'>` + domainInfo + `</iq>`},
		{"identity name escaped", named, `<iq type='get' id='3' to='localhost'>` + info + `</iq>`,
			`<iq type='result' id='3' from='localhost'><query xmlns='http://jabber.org/protocol/disco#info'><identity category='server' type='im' name='K&amp;K'/>` +
				`<feature var='http://jabber.org/protocol/disco#info'/><feature var='http://jabber.org/protocol/disco#items'/></query></iq>`},
		{"account info", reg, `<iq type='get' id='4' to='bob@localhost'>` + info + `</iq>`, `<iq type='result' id='4' from='bob@localhost'>` + accountInfo + `</iq>`},
		{"items", reg, `<iq type='get' id='5' to='localhost'>` + items + `</iq>`, `<iq type='result' id='5' from='localhost'>` + items + `</iq>`},
		{"info node", reg, `<iq type='get' id='6' to='localhost'><query xmlns='http://jabber.org/protocol/disco#info' node='x'/></iq>`,
			`<iq type='error' id='6' from='localhost' to='alice@localhost/a'><error type='cancel'><item-not-found ` + errNS + `/></error></iq>`},
		{"items node", reg, `<iq type='get' id='7' to='localhost'><query xmlns='http://jabber.org/protocol/disco#items' node='x'/></iq>`,
			`<iq type='error' id='7' from='localhost' to='alice@localhost/a'><error type='cancel'><item-not-found ` + errNS + `/></error></iq>`},
		{"set", reg, `<iq type='set' id='8'>` + info + `</iq>`, ""},
		{"full JID", reg, `<iq type='get' id='9' to='bob@localhost/b'>` + info + `</iq>`, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			res := iqtest.Send(t, tc.reg, nil, iqtest.Bound("alice", "a"), tc.send)
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

// pepFeature is a module that makes accounts PEP services.
type pepFeature struct{}

func (pepFeature) Name() string { return "pepfeature" }
func (pepFeature) Register(r *hook.Registrar) error {
	r.AccountFeature("http://jabber.org/protocol/pubsub")
	return nil
}

// TestDiscoPEPAndCaps: an account that is a PEP service has the identity
// pubsub/pep beside account/registered (XEP-0163 section 6); the stream
// features carry the server's caps, the SHA-1 of the domain's
// verification string (XEP-0115 section 5.1: "server/im//Krill<" then
// each feature and "<").
func TestDiscoPEPAndCaps(t *testing.T) {
	reg := iqtest.Registry(t, disco.Module{}, pepFeature{})
	res := iqtest.Send(t, reg, nil, iqtest.Bound("alice", "a"), `<iq type='get' id='1' to='bob@localhost'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>`)
	want := `<iq type='result' id='1' from='bob@localhost'><query xmlns='http://jabber.org/protocol/disco#info'><identity category='account' type='registered'/><identity category='pubsub' type='pep'/>` +
		`<feature var='http://jabber.org/protocol/disco#info'/><feature var='http://jabber.org/protocol/pubsub'/></query></iq>`
	if !slices.Equal(res.Conn.Written, []string{want}) {
		t.Fatalf("wrote %q, want %q", res.Conn.Written, want)
	}
	sum := sha1.Sum([]byte("server/im//Krill<http://jabber.org/protocol/disco#info<http://jabber.org/protocol/disco#items<"))
	caps := `<c xmlns='http://jabber.org/protocol/caps' hash='sha-1' node='https://github.com/krill-xmpp/krill' ver='` +
		base64.StdEncoding.EncodeToString(sum[:]) + `'/>`
	for _, p := range []hook.Phase{hook.PhasePreAuth, hook.PhaseBind} {
		for _, secure := range []bool{false, true} {
			if got := string(reg.StreamFeatures(nil, p, secure)); got != caps {
				t.Fatalf("phase %v features %q, want %q", p, got, caps)
			}
		}
	}
}
