package server_test

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/krill-xmpp/krill/hook"
	"github.com/krill-xmpp/krill/modules/ping"
	"github.com/krill-xmpp/krill/sasl"
	"github.com/krill-xmpp/krill/server"
	"github.com/krill-xmpp/krill/storage"
)

// panicky is a module with a bug: it panics on every request.
type panicky struct{}

func (panicky) Name() string { return "panicky" }
func (panicky) Register(r *hook.Registrar) error {
	r.IQ(hook.PhaseBound, hook.IQGet, hook.ToHost, "urn:example:bug", "query",
		func(*hook.Ctx, *hook.Stanza) error { panic("a bug in a module") })
	return nil
}

// TestPanicContained: a panic while handling one connection closes that
// connection only; the event loop and every other session go on.
func TestPanicContained(t *testing.T) {
	cfg := testConfig(t)
	cfg.Server.EventLoops = 1 // both clients on the loop that panics
	store, err := storage.OpenSQLite(filepath.Join(cfg.DataDir, "krill.db"))
	if err != nil {
		t.Fatal(err)
	}
	creds, _ := sasl.NewCredentials(testPassword, sasl.DefaultIterations)
	for _, u := range []string{"yan", "zoe"} {
		if err := store.AddAccount(context.Background(), u, creds); err != nil {
			t.Fatal(err)
		}
	}
	r, err := hook.New(ping.Module{}, panicky{})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := server.New(cfg, nil, store, r)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = srv.Stop(ctx)
		_ = store.Close()
	})
	bystander := dialRaw(t, srv)
	bystander.scramLogin("zoe", testPassword, "z")
	victim := dialRaw(t, srv)
	victim.scramLogin("yan", testPassword, "y")
	victim.send(`<iq type='get' id='bug' to='localhost'><query xmlns='urn:example:bug'/></iq>`)
	if out := victim.closed(); strings.Contains(out, "id='bug'") {
		t.Fatalf("the panicking request was answered: %q", out)
	}
	if got := srv.Stats().Panics; got != 1 {
		t.Fatalf("%d panics counted, want 1", got)
	}
	bystander.sync(t, "still")
	again := dialRaw(t, srv)
	again.scramLogin("yan", testPassword, "y2")
}
