package ping_test

import (
	"testing"

	"mellium.im/xmpp/stanza"

	"github.com/krill-xmpp/krill/modules/ping"
	"github.com/krill-xmpp/krill/router"
)

type recorder struct {
	results []string
	errs    []string
}

func (r *recorder) ReplyResult(_ router.IQ, payload []byte) {
	r.results = append(r.results, string(payload))
}
func (r *recorder) ReplyError(_ router.IQ, _ stanza.ErrorType, c stanza.Condition) {
	r.errs = append(r.errs, string(c))
}

func TestPing(t *testing.T) {
	m := ping.Module{}
	if got := m.Routes(); len(got) != 1 || got[0] != (router.Route{Kind: router.IQGet, NS: ping.NS, Local: "ping"}) {
		t.Fatalf("Routes = %v", got)
	}
	rec := &recorder{}
	if err := m.HandleIQ(&router.Ctx{Replier: rec}, router.IQ{ID: "p"}); err != nil {
		t.Fatal(err)
	}
	if len(rec.results) != 1 || rec.results[0] != "" || len(rec.errs) != 0 {
		t.Fatalf("ping answered %q / %q, want one empty result", rec.results, rec.errs)
	}
}
