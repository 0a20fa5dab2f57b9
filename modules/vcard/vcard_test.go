package vcard_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/krill-xmpp/krill/modules/internal/iqtest"
	"github.com/krill-xmpp/krill/modules/vcard"
)

// memStore is a vcard.Store in memory.
type memStore struct {
	cards map[string][]byte
	fail  error
}

func (m *memStore) VCard(_ context.Context, user string) ([]byte, error) {
	return m.cards[user], m.fail
}

func (m *memStore) SetVCard(_ context.Context, user string, v []byte) error {
	if m.fail != nil {
		return m.fail
	}
	m.cards[user] = v
	return nil
}

const errNS = `xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'`

// TestVCard: a sequence of gets and sets on one store, with the exact
// replies: the owner sets, anyone reads, nobody sets another's card.
func TestVCard(t *testing.T) {
	store := &memStore{cards: map[string][]byte{}}
	reg := iqtest.Registry(t, vcard.Module{Store: store})
	card := `<vCard xmlns='vcard-temp'><FN>Alice</FN></vCard>`
	alice, bob := iqtest.Bound("alice", "a"), iqtest.Bound("bob", "b")
	steps := []struct {
		name string
		from *iqtest.Session
		send string
		fail error
		want string
	}{
		{"empty", alice, `<iq type='get' id='1'><vCard xmlns='vcard-temp'/></iq>`, nil,
			`<iq type='result' id='1'><vCard xmlns='vcard-temp'/></iq>`},
		{"set own", alice, `<iq type='set' id='2'>` + card + `</iq>`, nil, `<iq type='result' id='2'/>`},
		{"get own", alice, `<iq type='get' id='3'><vCard xmlns='vcard-temp'/></iq>`, nil, `<iq type='result' id='3'>` + card + `</iq>`},
		{"get own, to the domain", alice, `<iq type='get' id='4' to='localhost'><vCard xmlns='vcard-temp'/></iq>`, nil,
			`<iq type='result' id='4' from='localhost'>` + card + `</iq>`},
		{"get other", bob, `<iq type='get' id='5' to='alice@localhost'><vCard xmlns='vcard-temp'/></iq>`, nil,
			`<iq type='result' id='5' from='alice@localhost'>` + card + `</iq>`},
		{"set other", bob, `<iq type='set' id='6' to='alice@localhost'><vCard xmlns='vcard-temp'><FN>B</FN></vCard></iq>`, nil,
			`<iq type='error' id='6' from='alice@localhost' to='bob@localhost/b'><error type='auth'><forbidden ` + errNS + `/></error></iq>`},
		{"set own, to own bare", bob, `<iq type='set' id='7' to='bob@localhost'><vCard xmlns='vcard-temp'><FN>B</FN></vCard></iq>`, nil,
			`<iq type='result' id='7' from='bob@localhost'/>`},
		{"too large", alice, `<iq type='set' id='8'><vCard xmlns='vcard-temp'><FN>` + strings.Repeat("x", vcard.MaxSize) + `</FN></vCard></iq>`, nil,
			`<iq type='error' id='8' to='alice@localhost/a'><error type='modify'><not-acceptable ` + errNS + `/></error></iq>`},
		{"set, store down", alice, `<iq type='set' id='9'><vCard xmlns='vcard-temp'/></iq>`, errors.New("disk on fire"),
			`<iq type='error' id='9' to='alice@localhost/a'><error type='wait'><internal-server-error ` + errNS + `/></error></iq>`},
		{"get, store down", alice, `<iq type='get' id='10'><vCard xmlns='vcard-temp'/></iq>`, errors.New("disk on fire"),
			`<iq type='error' id='10' to='alice@localhost/a'><error type='wait'><internal-server-error ` + errNS + `/></error></iq>`},
		{"unchanged after refusals", bob, `<iq type='get' id='11' to='alice@localhost'><vCard xmlns='vcard-temp'/></iq>`, nil,
			`<iq type='result' id='11' from='alice@localhost'>` + card + `</iq>`},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			store.fail = st.fail
			res := iqtest.Send(t, reg, nil, st.from, st.send)
			if !res.Handled || !slices.Equal(res.Conn.Written, []string{st.want}) {
				t.Fatalf("handled %v, wrote %q; want %q", res.Handled, res.Conn.Written, st.want)
			}
		})
	}
}
