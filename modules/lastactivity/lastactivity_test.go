package lastactivity_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/krill-xmpp/krill/hook"
	"github.com/krill-xmpp/krill/hook/hooktest"
	"github.com/krill-xmpp/krill/modules/internal/iqtest"
	"github.com/krill-xmpp/krill/modules/lastactivity"
	"github.com/krill-xmpp/krill/sasl"
	"github.com/krill-xmpp/krill/storage"
)

const errNS = `xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'`

// memStore is a lastactivity.Store in memory.
type memStore struct {
	rosters  map[string][]storage.RosterItem // its keys are the accounts
	activity map[string]storage.Activity
	fail     error
	batches  int // SetLastActivities calls
}

func (m *memStore) Credentials(_ context.Context, user string) (sasl.Credentials, error) {
	if m.fail != nil {
		return sasl.Credentials{}, m.fail
	}
	if _, ok := m.rosters[user]; !ok {
		return sasl.Credentials{}, storage.ErrNotFound
	}
	return sasl.Credentials{}, nil
}

func (m *memStore) Roster(_ context.Context, user string) ([]storage.RosterItem, uint64, error) {
	return m.rosters[user], 1, nil
}

func (m *memStore) LastActivity(_ context.Context, user string) (storage.Activity, bool, error) {
	a, ok := m.activity[user]
	return a, ok, nil
}

func (m *memStore) SetLastActivities(_ context.Context, acts map[string]storage.Activity) error {
	m.batches++
	for user, a := range acts {
		if _, ok := m.rosters[user]; ok {
			m.activity[user] = a
		}
	}
	return nil
}

// query sends raw as sess and returns what was written; handled is false
// when no handler took it (the core then answers service-unavailable).
func query(t *testing.T, reg *hook.Registry, h hook.Host, sess *iqtest.Session, raw string) (written []string, handled bool) {
	t.Helper()
	res := iqtest.Send(t, reg, h, sess, raw)
	return res.Conn.Written, res.Handled
}

// TestUptime: queries to the domain, with or without a store.
func TestUptime(t *testing.T) {
	start := time.Unix(1_700_000_000, 0)
	cases := []struct {
		name, to, want string
		now            time.Time
	}{
		{"just started", "localhost", `<iq type='result' id='1' from='localhost'><query xmlns='jabber:iq:last' seconds='0'/></iq>`, start.Add(999 * time.Millisecond)},
		{"one day", "localhost", `<iq type='result' id='1' from='localhost'><query xmlns='jabber:iq:last' seconds='86400'/></iq>`, start.Add(24 * time.Hour)},
		{"clock stepped back", "localhost", `<iq type='result' id='1' from='localhost'><query xmlns='jabber:iq:last' seconds='0'/></iq>`, start.Add(-time.Hour)},
		{"account without a store", "alice@localhost", "", start},
		{"own account without a store", "", "", start},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			reg, err := hook.New(&lastactivity.Module{Started: start, Now: func() time.Time { return tc.now }})
			if err != nil {
				t.Fatal(err)
			}
			raw := `<iq type='get' id='1'><query xmlns='jabber:iq:last'/></iq>`
			if tc.to != "" {
				raw = `<iq type='get' id='1' to='` + tc.to + `'><query xmlns='jabber:iq:last'/></iq>`
			}
			got, handled := query(t, reg, nil, iqtest.Bound("alice", "a"), raw)
			if want := tc.want != ""; handled != want || handled && !slices.Equal(got, []string{tc.want}) {
				t.Fatalf("handled %v, wrote %q; want %q", handled, got, tc.want)
			}
		})
	}
	if f := iqtest.Registry(t, &lastactivity.Module{}).AccountFeatures(); len(f) != 0 {
		t.Fatalf("account features without a store: %v", f)
	}
}

func mustParse(t *testing.T, from, raw string) *hook.Stanza {
	t.Helper()
	st, err := iqtest.Parse(from, raw)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// TestAccount: queries to accounts as profanity's /lastactivity sends
// them, by whom may see the account's presence and by whom may not.
func TestAccount(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	q := func(to string) string {
		if to == "" {
			return `<iq id="l1" type="get"><query xmlns="jabber:iq:last"/></iq>`
		}
		return `<iq id="l1" type="get" to="` + to + `"><query xmlns="jabber:iq:last"/></iq>`
	}
	cases := []struct {
		name, from, to string
		benOnline      bool
		fail           error
		want           string
	}{
		{"subscription from", "amy", "ben@localhost", false, nil,
			`<iq type='result' id='l1' from='ben@localhost'><query xmlns='jabber:iq:last' seconds='1000'>gone &amp; fishing</query></iq>`},
		{"subscription both", "dan", "ben@localhost", false, nil,
			`<iq type='result' id='l1' from='ben@localhost'><query xmlns='jabber:iq:last' seconds='1000'>gone &amp; fishing</query></iq>`},
		{"available", "amy", "ben@localhost", true, nil,
			`<iq type='result' id='l1' from='ben@localhost'><query xmlns='jabber:iq:last' seconds='0'/></iq>`},
		{"own, no to", "ben", "", false, nil,
			`<iq type='result' id='l1'><query xmlns='jabber:iq:last' seconds='1000'>gone &amp; fishing</query></iq>`},
		{"own bare", "ben", "ben@localhost", false, nil,
			`<iq type='result' id='l1' from='ben@localhost'><query xmlns='jabber:iq:last' seconds='1000'>gone &amp; fishing</query></iq>`},
		{"subscription to only", "cat", "ben@localhost", false, nil,
			`<iq type='error' id='l1' from='ben@localhost' to='cat@localhost/r'><error type='auth'><forbidden ` + errNS + `/></error></iq>`},
		{"stranger", "eve", "ben@localhost", true, nil,
			`<iq type='error' id='l1' from='ben@localhost' to='eve@localhost/r'><error type='auth'><forbidden ` + errNS + `/></error></iq>`},
		{"no such account", "amy", "nobody@localhost", false, nil,
			`<iq type='error' id='l1' from='nobody@localhost' to='amy@localhost/r'><error type='cancel'><service-unavailable ` + errNS + `/></error></iq>`},
		{"never seen", "amy", "", false, nil,
			`<iq type='error' id='l1' to='amy@localhost/r'><error type='cancel'><item-not-found ` + errNS + `/></error></iq>`},
		{"store down", "amy", "ben@localhost", false, errors.New("disk on fire"),
			`<iq type='error' id='l1' from='ben@localhost' to='amy@localhost/r'><error type='wait'><internal-server-error ` + errNS + `/></error></iq>`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			store := &memStore{
				rosters: map[string][]storage.RosterItem{
					"ben": {
						{Contact: "amy@localhost", Subscription: storage.SubFrom},
						{Contact: "cat@localhost", Subscription: storage.SubTo},
						{Contact: "dan@localhost", Subscription: storage.SubBoth},
					},
					"amy": nil, "cat": nil, "dan": nil, "eve": nil,
				},
				activity: map[string]storage.Activity{"ben": {At: now.Add(-1000 * time.Second), Status: "gone & fishing"}},
				fail:     tc.fail,
			}
			reg := iqtest.Registry(t, &lastactivity.Module{Store: store, Now: func() time.Time { return now }})
			h := &iqtest.Host{List: []*iqtest.Session{
				iqtest.Bound("ben", "b"),
				{Account: "ben", JID: "ben@localhost/c", Avail: tc.benOnline},
			}}
			got, handled := query(t, reg, h, iqtest.Bound(tc.from, "r"), q(tc.to))
			if !handled || !slices.Equal(got, []string{tc.want}) {
				t.Fatalf("handled %v, wrote %q; want %q", handled, got, tc.want)
			}
		})
	}
	reg := iqtest.Registry(t, &lastactivity.Module{Store: &memStore{}})
	if f := reg.AccountFeatures(); !slices.Equal(f, []string{lastactivity.NS}) {
		t.Fatalf("account features %v", f)
	}
	if f := reg.DiscoFeatures(); !slices.Equal(f, []string{lastactivity.NS}) {
		t.Fatalf("domain features %v", f)
	}
}

// TestRecord: the time and status stored when a session goes unavailable,
// by presence (with the status it gave) or by closing, and nothing while
// another resource is available.
func TestRecord(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	long := "a" + strings.Repeat("é", lastactivity.MaxStatusLen) // é is 2 bytes: the cut falls inside one
	cases := []struct {
		name     string
		presence string // "": the connection closed
		other    bool   // another resource available
		want     *storage.Activity
	}{
		{"unavailable presence", `<presence type='unavailable'><status>gone &amp; fishing</status></presence>`, false,
			&storage.Activity{At: now, Status: "gone & fishing"}},
		{"no status", `<presence type='unavailable'/>`, false, &storage.Activity{At: now}},
		{"first status", `<presence type='unavailable'><priority>1</priority><status>one</status><status xml:lang='de'>eins</status></presence>`, false,
			&storage.Activity{At: now, Status: "one"}},
		{"status of another namespace", `<presence type='unavailable'><status xmlns='urn:x'>no</status></presence>`, false, &storage.Activity{At: now}},
		{"status cut", `<presence type='unavailable'><status>` + long + `</status></presence>`, false,
			&storage.Activity{At: now, Status: long[:lastactivity.MaxStatusLen-1]}},
		{"connection closed", "", false, &storage.Activity{At: now}},
		{"another resource available", `<presence type='unavailable'><status>bye</status></presence>`, true, nil},
		{"closed, another resource available", "", true, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			store := &memStore{rosters: map[string][]storage.RosterItem{"ben": nil}, activity: map[string]storage.Activity{}}
			mod := &lastactivity.Module{Store: store, Now: func() time.Time { return now }, FlushDelay: time.Hour}
			reg := iqtest.Registry(t, mod)
			me := iqtest.Bound("ben", "b")
			h := &iqtest.Host{List: []*iqtest.Session{me, {Account: "ben", JID: "ben@localhost/c", Avail: tc.other}}}
			var c *hook.Ctx
			if tc.presence != "" {
				c = hooktest.Ctx(reg, h, me, &hooktest.Conn{}, mustParse(t, me.JID, tc.presence))
			} else {
				c = hooktest.Ctx(reg, h, nil, &hooktest.Conn{}, nil)
				c.Reset(me, nil, nil) // closing: no connection, no stanza
			}
			reg.Fire(c, hook.Unavailable)
			if len(store.activity) != 0 || store.batches != 0 {
				t.Fatalf("written before the flush: %+v", store.activity)
			}
			mod.Stop(context.Background()) // what the server does at exit; the timer does it otherwise
			a, ok := store.activity["ben"]
			if tc.want == nil && ok || tc.want != nil && (!ok || !a.At.Equal(tc.want.At) || a.Status != tc.want.Status) {
				t.Fatalf("stored %v %+v, want %+v", ok, a, tc.want)
			}
		})
	}
}

// TestBatchedWrites checks that logouts are written together, and that a
// query sees a logout that is still waiting to be written.
func TestBatchedWrites(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	store := &memStore{rosters: map[string][]storage.RosterItem{"ben": nil, "ann": nil}, activity: map[string]storage.Activity{}}
	mod := &lastactivity.Module{Store: store, Now: func() time.Time { return now }, FlushDelay: time.Hour}
	reg := iqtest.Registry(t, mod)
	ben, ann := iqtest.Bound("ben", "b"), iqtest.Bound("ann", "a")
	h := &iqtest.Host{List: []*iqtest.Session{ben, ann}}
	for _, s := range []*iqtest.Session{ben, ann} {
		reg.Fire(hooktest.Ctx(reg, h, s, &hooktest.Conn{}, mustParse(t, s.JID, `<presence type='unavailable'><status>out</status></presence>`)), hook.Unavailable)
	}
	now = now.Add(5 * time.Second)
	got, handled := query(t, reg, h, ben, `<iq type='get' id='q'><query xmlns='jabber:iq:last'/></iq>`)
	want := []string{`<iq type='result' id='q'><query xmlns='jabber:iq:last' seconds='5'>out</query></iq>`}
	if !handled || !slices.Equal(got, want) {
		t.Fatalf("query before the flush: %q, want %q", got, want)
	}
	mod.Stop(context.Background())
	if store.batches != 1 || len(store.activity) != 2 || store.activity["ann"].Status != "out" {
		t.Fatalf("after the flush: %d batches, %+v; want 1 batch of 2", store.batches, store.activity)
	}
}
