package server_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
	msasl "mellium.im/sasl"

	"github.com/krill-xmpp/krill/config"
	"github.com/krill-xmpp/krill/hook"
	"github.com/krill-xmpp/krill/modules"
	"github.com/krill-xmpp/krill/modules/lastactivity"
	"github.com/krill-xmpp/krill/server"
	"github.com/krill-xmpp/krill/storage"
)

// startFull runs a server with every module (lastactivity started an hour
// ago) and logger log (nil: none); it returns the store too, so that tests
// can look at what was written.
func startFull(t *testing.T, cfg config.Config, log *zap.Logger, users ...string) (*server.Server, *storage.SQL) {
	t.Helper()
	return startServerOpts(t, cfg, serverOpts{log: log, started: time.Now().Add(-time.Hour)}, users...)
}

// bound logs user in over raw XML and consumes the bind result.
func bound(t *testing.T, srv *server.Server, user, password, resource string) *rawConn {
	t.Helper()
	r := dialRaw(t, srv)
	r.scramLogin(user, password, resource)
	return r
}

const (
	stanzasNS           = `xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'`
	notAuthorizedStream = `<stream:error><not-authorized xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>`
)

// TestAccountRegistration: XEP-0077 after authentication, with in-band
// registration of new accounts off (the default): the registration get
// says registered, a password change (as profanity's /changepassword
// sends it) replaces the credentials and closes the other sessions, and
// the removal deletes the account and its data and closes every session.
func TestAccountRegistration(t *testing.T) {
	srv, store := startFull(t, testConfig(t), nil, "alice", "bob")
	a1 := bound(t, srv, "alice", testPassword, "one")
	a2 := bound(t, srv, "alice", testPassword, "two")
	b := bound(t, srv, "bob", testPassword, "b")

	steps := []struct{ name, send, want string }{
		{"registered", `<iq type='get' id='g1'><query xmlns='jabber:iq:register'/></iq>`,
			`<iq type='result' id='g1'><query xmlns='jabber:iq:register'><registered/><username>alice</username><password/></query></iq>`},
		{"registered to domain", `<iq type='get' id='g2' to='localhost'><query xmlns='jabber:iq:register'/></iq>`,
			`<iq type='result' id='g2' from='localhost'><query xmlns='jabber:iq:register'><registered/><username>alice</username><password/></query></iq>`},
		{"another account's", `<iq type='set' id='x1' to='bob@localhost'><query xmlns='jabber:iq:register'><remove/></query></iq>`,
			`<iq type='error' id='x1' from='bob@localhost' to='alice@localhost/one'><error type='auth'><forbidden ` + stanzasNS + `/></error></iq>`},
		{"another username", `<iq type='set' id='x2'><query xmlns='jabber:iq:register'><username>bob</username><password>pw</password></query></iq>`,
			`<iq type='error' id='x2' to='alice@localhost/one'><error type='cancel'><not-allowed ` + stanzasNS + `/></error></iq>`},
		{"no password", `<iq type='set' id='x3'><query xmlns='jabber:iq:register'><username>alice</username></query></iq>`,
			`<iq type='error' id='x3' to='alice@localhost/one'><error type='modify'><bad-request ` + stanzasNS + `/></error></iq>`},
		{"empty password", `<iq type='set' id='x4'><query xmlns='jabber:iq:register'><username>alice</username><password></password></query></iq>`,
			`<iq type='error' id='x4' to='alice@localhost/one'><error type='modify'><bad-request ` + stanzasNS + `/></error></iq>`},
		{"password change", `<iq id="cp1" type="set"><query xmlns="jabber:iq:register"><username>alice</username><password>new secret</password></query></iq>`,
			`<iq type='result' id='cp1'/>`},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) { a1.exchange(t, st.send, st.want) })
	}
	if out := a2.closed(); !strings.Contains(out, notAuthorizedStream+`<text xmlns='urn:ietf:params:xml:ns:xmpp-streams'>the password of the account was changed, or the account removed</text></stream:error></stream:stream>`) {
		t.Fatalf("other session after the password change got %q", out)
	}
	a1.exchange(t, `<iq type='get' id='alive'><ping xmlns='urn:xmpp:ping'/></iq>`, `<iq type='result' id='alive'/>`)
	if _, err := dialSession(srv, "alice", "", testPassword, msasl.ScramSha256); err == nil {
		t.Fatal("login with the old password succeeded")
	}
	a3 := bound(t, srv, "alice", "new secret", "three")

	// Data to be removed with the account.
	a3.exchange(t, `<iq type='set' id='d1'><query xmlns='jabber:iq:roster'><item jid='bob@localhost'/></query></iq>`, `<iq type='result' id='d1'/>`)
	a3.exchange(t, `<iq type='set' id='d2'><vCard xmlns='vcard-temp'><FN>A</FN></vCard></iq>`, `<iq type='result' id='d2'/>`)
	a3.exchange(t, `<iq type='set' id='d3'><block xmlns='urn:xmpp:blocking'><item jid='spam@localhost'/></block></iq>`, `<iq type='result' id='d3'/>`)
	b.send(`<message id='m1' to='alice@localhost' type='chat'><body>for later</body></message>`)
	b.exchange(t, `<iq type='get' id='bp'><ping xmlns='urn:xmpp:ping'/></iq>`, `<iq type='result' id='bp'/>`)
	if !waitFor(ioTimeout, func() bool { return srv.Stats().Modules["offline.stored"] == 1 }) {
		t.Fatal("offline message not stored")
	}

	a1.send(`<iq type='set' id='rm'><query xmlns='jabber:iq:register'><remove/></query></iq>`)
	if out := a1.closed(); !strings.HasPrefix(out, `<iq type='result' id='rm'/>`+notAuthorizedStream+`<text xmlns='urn:ietf:params:xml:ns:xmpp-streams'>the account was removed</text></stream:error></stream:stream>`) {
		t.Fatalf("removing session got %q", out)
	}
	if out := a3.closed(); !strings.Contains(out, notAuthorizedStream) {
		t.Fatalf("other session after the removal got %q", out)
	}
	ctx := context.Background()
	if _, err := store.Credentials(ctx, "alice"); err == nil {
		t.Fatal("account still stored")
	}
	items, _, _ := store.Roster(ctx, "alice")
	card, _ := store.VCard(ctx, "alice")
	list, _ := store.Blocklist(ctx, "alice")
	msgs, _ := store.Offline(ctx, "alice")
	if len(items)+len(card)+len(list)+len(msgs) != 0 {
		t.Fatalf("data left: roster %v vcard %q blocklist %v offline %d", items, card, list, len(msgs))
	}
	if _, err := dialSession(srv, "alice", "", "new secret", msasl.ScramSha256); err == nil {
		t.Fatal("login to a removed account succeeded")
	}
}

// TestLastActivity: XEP-0012 for the server (uptime) and for accounts
// (since the last unavailable presence, with its status, to subscribers
// only), as profanity's /lastactivity asks.
func TestLastActivity(t *testing.T) {
	srv, store := startFull(t, testConfig(t), nil, "amy", "ben", "cat")
	ctx := context.Background()
	// ben's presence goes to amy (from in ben's roster), not to cat.
	err := store.UpdateRosters(ctx, func(tx storage.RosterTx) error {
		if err := tx.PutItem("ben", storage.RosterItem{Contact: "amy@localhost", Subscription: storage.SubFrom}); err != nil {
			return err
		}
		return tx.PutItem("amy", storage.RosterItem{Contact: "ben@localhost", Subscription: storage.SubTo})
	})
	if err != nil {
		t.Fatal(err)
	}
	amy := bound(t, srv, "amy", testPassword, "a")
	cat := bound(t, srv, "cat", testPassword, "c")
	ben := bound(t, srv, "ben", testPassword, "b")
	ben.exchange(t, `<presence/>`, `<presence from='ben@localhost/b'/>`)

	query := func(id, to string) string {
		attr := ""
		if to != "" {
			attr = ` to="` + to + `"`
		}
		return `<iq id="` + id + `" type="get"` + attr + `><query xmlns="jabber:iq:last"/></iq>`
	}
	amy.exchange(t, query("l1", "ben@localhost"), `<iq type='result' id='l1' from='ben@localhost'><query xmlns='jabber:iq:last' seconds='0'/></iq>`)
	cat.exchange(t, query("l2", "ben@localhost"), `<iq type='error' id='l2' from='ben@localhost' to='cat@localhost/c'><error type='auth'><forbidden `+stanzasNS+`/></error></iq>`)
	amy.exchange(t, query("l3", "nobody@localhost"), `<iq type='error' id='l3' from='nobody@localhost' to='amy@localhost/a'><error type='cancel'><service-unavailable `+stanzasNS+`/></error></iq>`)
	amy.exchange(t, query("l4", ""), `<iq type='error' id='l4' to='amy@localhost/a'><error type='cancel'><item-not-found `+stanzasNS+`/></error></iq>`)
	// seconds reads the seconds of a jabber:iq:last result.
	seconds := func(got string) string { return between(got, "seconds='", "'") }
	if got := amy.exchange(t, query("l5", "localhost"), `<iq type='result' id='l5' from='localhost'><query xmlns='jabber:iq:last' seconds='{*}'/></iq>`); seconds(got) != "3600" && seconds(got) != "3601" {
		t.Fatalf("uptime: %q", got)
	}

	ben.send(`<presence type='unavailable'><status>gone &amp; fishing</status></presence>`)
	if !waitFor(ioTimeout, func() bool { a, ok, _ := store.LastActivity(ctx, "ben"); return ok && a.Status == "gone & fishing" }) {
		t.Fatal("last activity not stored")
	}
	got := amy.exchange(t, query("l6", "ben@localhost"), `<iq type='result' id='l6' from='ben@localhost'><query xmlns='jabber:iq:last' seconds='{*}'>gone &amp; fishing</query></iq>`)
	if seconds(got) != "0" && seconds(got) != "1" {
		t.Fatalf("last activity: %q", got)
	}
	// A stored time long ago.
	if err := store.SetLastActivity(ctx, "ben", storage.Activity{At: time.Now().Add(-1000 * time.Second)}); err != nil {
		t.Fatal(err)
	}
	got = amy.exchange(t, query("l7", "ben@localhost"), `<iq type='result' id='l7' from='ben@localhost'><query xmlns='jabber:iq:last' seconds='{*}'/></iq>`)
	if seconds(got) != "1000" && seconds(got) != "1001" {
		t.Fatalf("last activity: %q", got)
	}
	// ben's own query, without to.
	ben.expect(t, `<presence type='unavailable' from='ben@localhost/b'><status>gone &amp; fishing</status></presence>`)
	ben.exchange(t, query("l8", ""), `<iq type='result' id='l8'><query xmlns='jabber:iq:last' seconds='{*}'/></iq>`)

	// A connection that drops while available records the time too.
	ben.exchange(t, `<presence><status>back</status></presence>`, `<presence from='ben@localhost/b'><status>back</status></presence>`)
	_ = ben.conn.Close()
	if !waitFor(ioTimeout, func() bool {
		a, ok, _ := store.LastActivity(ctx, "ben")
		return ok && a.Status == "" && time.Since(a.At) < time.Minute
	}) {
		t.Fatal("last activity not stored when the connection dropped")
	}

	// amy is not available, so none of ben's presence came to her.
	feats := amy.exchange(t, `<iq type='get' id='f' to='localhost'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>`,
		`<iq type='result' id='f' from='localhost'><query xmlns='http://jabber.org/protocol/disco#info'><identity category='server' type='im' name='Krill'/>{**}</query></iq>`)
	for _, f := range []string{"jabber:iq:last", "jabber:iq:register"} {
		if !strings.Contains(feats, `<feature var='`+f+`'/>`) {
			t.Errorf("disco features lack %s: %q", f, feats)
		}
	}
}

// TestDebugLogsWhyAClientFailed: at debug level each stanza error sent is
// logged with its condition (and, for an unknown payload, its namespace),
// and a session's end with its reason; at info level neither is.
func TestDebugLogsWhyAClientFailed(t *testing.T) {
	for _, level := range []zapcore.Level{zapcore.DebugLevel, zapcore.InfoLevel} {
		t.Run(level.String(), func(t *testing.T) {
			core, logs := observer.New(level)
			srv, _ := startFull(t, testConfig(t), zap.New(core), "dan")
			r := bound(t, srv, "dan", testPassword, "d")
			r.exchange(t, `<iq type='get' id='u1'><query xmlns='urn:example:nothing'/></iq>`,
				`<iq type='error' id='u1' to='dan@localhost/d'><error type='cancel'><service-unavailable `+stanzasNS+`/></error></iq>`)
			r.send(`</stream:stream>`)
			r.closed()
			// The session end is logged before the session leaves the table.
			if !waitFor(ioTimeout, func() bool { return srv.Stats().Sessions == 0 }) {
				t.Fatal("session still counted")
			}
			ok := logs.FilterMessage("session ended").Len() > 0
			errs := logs.FilterMessage("stanza error sent").AllUntimed()
			if level == zapcore.InfoLevel {
				if ok || len(errs) != 0 {
					t.Fatalf("debug entries at info level: %v", logs.AllUntimed())
				}
				return
			}
			if !ok || len(errs) != 1 {
				t.Fatalf("entries: %v", logs.AllUntimed())
			}
			f := errs[0].ContextMap()
			if f["condition"] != "service-unavailable" || f["namespace"] != "urn:example:nothing" || f["jid"] != "dan@localhost/d" {
				t.Fatalf("stanza error fields %v", f)
			}
			end := logs.FilterMessage("session ended").AllUntimed()[0].ContextMap()
			if end["reason"] != "client closed the stream" || end["jid"] != "dan@localhost/d" {
				t.Fatalf("session end fields %v", end)
			}
		})
	}
}

// TestLastActivityWrittenAtShutdown: last activity is written in batches
// after a delay (modules/lastactivity), and a server that shuts down first
// writes what is waiting. The delay is made an hour so only the shutdown
// can have written it.
func TestLastActivityWrittenAtShutdown(t *testing.T) {
	cfg := testConfig(t)
	var opts serverOpts
	opts.modsFor = func(st modules.Store) []hook.Module {
		mods := modules.Standard(st, modules.Options{Config: cfg})
		for _, m := range mods {
			if la, ok := m.(*lastactivity.Module); ok {
				la.FlushDelay = time.Hour
			}
		}
		return mods
	}
	srv, store := startServerOpts(t, cfg, opts, "ben")
	ben := bound(t, srv, "ben", testPassword, "b")
	ben.exchange(t, `<presence><status>here</status></presence>`, `<presence from='ben@localhost/b'><status>here</status></presence>`)
	ben.send(`<presence type='unavailable'><status>gone</status></presence>`)
	ben.expect(t, `<presence type='unavailable' from='ben@localhost/b'><status>gone</status></presence>`)
	if _, ok, err := store.LastActivity(context.Background(), "ben"); err != nil || ok {
		t.Fatalf("last activity written before the flush: %v, %v", ok, err)
	}
	ctx, cancel := contextTimeout()
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if a, ok, err := store.LastActivity(context.Background(), "ben"); err != nil || !ok || a.Status != "gone" {
		t.Fatalf("last activity after shutdown: %+v, %v, %v; want status gone", a, ok, err)
	}
}
