package vcard_test

import (
	"context"
	"testing"

	"mellium.im/xmpp/jid"
	"mellium.im/xmpp/stanza"

	"github.com/krill-xmpp/krill/modules/vcard"
	"github.com/krill-xmpp/krill/router"
)

// memStore is a vcard.Store in memory.
type memStore map[string][]byte

func (m memStore) VCard(_ context.Context, user string) ([]byte, error) { return m[user], nil }
func (m memStore) SetVCard(_ context.Context, user string, v []byte) error {
	m[user] = v
	return nil
}

type recorder struct{ result, errCond string }

func (r *recorder) ReplyResult(_ router.IQ, payload []byte) { r.result = string(payload) }
func (r *recorder) ReplyError(_ router.IQ, _ stanza.ErrorType, c stanza.Condition) {
	r.errCond = string(c)
}

func TestVCard(t *testing.T) {
	store := memStore{}
	m := vcard.Module{Store: store}
	card := `<vCard xmlns='vcard-temp'><FN>Alice</FN></vCard>`
	cases := []struct {
		name, from, to, typ, payload string
		want, errCond                string
	}{
		{"empty", "alice@localhost/a", "", "get", `<vCard xmlns='vcard-temp'/>`, `<vCard xmlns='vcard-temp'/>`, ""},
		{"set own", "alice@localhost/a", "", "set", card, "", ""},
		{"get own", "alice@localhost/a", "", "get", `<vCard xmlns='vcard-temp'/>`, card, ""},
		{"get other", "bob@localhost/b", "alice@localhost", "get", `<vCard xmlns='vcard-temp'/>`, card, ""},
		{"set other", "bob@localhost/b", "alice@localhost", "set", card, "", "forbidden"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rec := &recorder{}
			iq := router.IQ{ID: "1", Type: stanza.IQType(tc.typ), From: jid.MustParse(tc.from), Payload: []byte(tc.payload)}
			if tc.to != "" {
				iq.To = jid.MustParse(tc.to)
			}
			// Async runs the job inline: the module's contract, not its timing.
			c := &router.Ctx{Replier: rec, Async: func(job func(context.Context) func()) {
				if then := job(context.Background()); then != nil {
					then()
				}
			}}
			if err := m.HandleIQ(c, iq); err != nil {
				t.Fatal(err)
			}
			if rec.result != tc.want || rec.errCond != tc.errCond {
				t.Fatalf("got %q / %q, want %q / %q", rec.result, rec.errCond, tc.want, tc.errCond)
			}
		})
	}
}
