package roster

import (
	"context"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/krill-xmpp/krill/hook"
	"github.com/krill-xmpp/krill/modules/internal/imtest"
	"github.com/krill-xmpp/krill/sasl"
	"github.com/krill-xmpp/krill/storage"
)

// memStore is a Store and Accounts in memory over memTx.
type memStore struct {
	mu       sync.Mutex
	tx       *memTx
	accounts []string
}

func (m *memStore) Roster(_ context.Context, user string) ([]storage.RosterItem, uint64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var items []storage.RosterItem
	for k, it := range m.tx.items {
		if k[0] == user {
			items = append(items, it)
		}
	}
	slices.SortFunc(items, func(a, b storage.RosterItem) int { return strings.Compare(a.Contact, b.Contact) })
	return items, m.tx.ver[user], nil
}

func (m *memStore) UpdateRosters(_ context.Context, fn func(storage.RosterTx) error) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return fn(m.tx) // tests do not fail mid-transaction
}

func (m *memStore) Requests(_ context.Context, user string) ([]storage.SubscriptionRequest, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []storage.SubscriptionRequest
	for k, r := range m.tx.reqs {
		if k[0] == user {
			out = append(out, r)
		}
	}
	slices.SortFunc(out, func(a, b storage.SubscriptionRequest) int { return strings.Compare(a.From, b.From) })
	return out, nil
}

func (m *memStore) Credentials(_ context.Context, user string) (sasl.Credentials, error) {
	if slices.Contains(m.accounts, user) {
		return sasl.Credentials{}, nil
	}
	return sasl.Credentials{}, storage.ErrNotFound
}

// setup registers a roster module over a fresh store with the accounts
// given.
func setup(t *testing.T, accounts ...string) (*imtest.Host, *hook.Registry, *memStore) {
	t.Helper()
	store := &memStore{tx: newMemTx(), accounts: accounts}
	reg, err := hook.New(&Module{Store: store, Accounts: store})
	if err != nil {
		t.Fatal(err)
	}
	return imtest.NewHost(), reg, store
}

func send(t *testing.T, c *imtest.Conn, raw string) {
	t.Helper()
	if _, err := c.Send(raw); err != nil {
		t.Fatal(err)
	}
}

func expect(t *testing.T, what string, got []string, want ...string) {
	t.Helper()
	if !slices.Equal(got, want) {
		t.Fatalf("%s:\n got %q\nwant %q", what, got, want)
	}
}

// TestRosterIQ: get, set with pushes only to the resources that requested
// the roster, versions, removal, and the refusals, with exact bytes.
func TestRosterIQ(t *testing.T) {
	host, reg, _ := setup(t, "alice", "bob")
	s1, s2, s3 := host.Bind("alice", "one"), host.Bind("alice", "two"), host.Bind("alice", "three")
	c1, c2 := imtest.NewConn(host, reg, s1), imtest.NewConn(host, reg, s2)
	c3 := imtest.NewConn(host, reg, s3)

	send(t, c1, `<iq type='get' id='r1'><query xmlns='jabber:iq:roster'/></iq>`)
	send(t, c2, `<iq type='get' id='r1'><query xmlns='jabber:iq:roster' ver='0'/></iq>`)
	expect(t, "first get", c1.Written, `<iq type='result' id='r1'><query xmlns='jabber:iq:roster' ver='0'></query></iq>`)
	expect(t, "current version", c2.Written, `<iq type='result' id='r1'/>`)

	// s3 never asked for the roster: it sets but gets no push.
	c1.Written = nil
	send(t, c3, `<iq type='set' id='s1'><query xmlns='jabber:iq:roster'><item jid='Bob@localhost/x' name='B&amp;b'><group>Work</group><group>Friends</group><group>Work</group></item></query></iq>`)
	item := `<item jid='bob@localhost' name='B&amp;b' subscription='none'><group>Friends</group><group>Work</group></item>`
	expect(t, "set result", c3.Written, `<iq type='result' id='s1'/>`)
	expect(t, "push one", s1.Take(), `<iq type='set' id='push1' to='alice@localhost/one'><query xmlns='jabber:iq:roster' ver='1'>`+item+`</query></iq>`)
	expect(t, "push two", s2.Take(), `<iq type='set' id='push2' to='alice@localhost/two'><query xmlns='jabber:iq:roster' ver='1'>`+item+`</query></iq>`)
	expect(t, "no push", s3.Take())

	send(t, c1, `<iq type='get' id='r2' to='alice@localhost'><query xmlns='jabber:iq:roster' ver='0'/></iq>`)
	expect(t, "get to own bare JID", c1.Written, `<iq type='result' id='r2' from='alice@localhost'><query xmlns='jabber:iq:roster' ver='1'>`+item+`</query></iq>`)

	cases := []struct{ name, send, want string }{
		{"remove", `<iq type='set' id='s2'><query xmlns='jabber:iq:roster'><item jid='bob@localhost' subscription='remove'/></query></iq>`,
			`<iq type='result' id='s2'/>`},
		{"remove again", `<iq type='set' id='s3'><query xmlns='jabber:iq:roster'><item jid='bob@localhost' subscription='remove'/></query></iq>`,
			`<iq type='error' id='s3' to='alice@localhost/one'><error type='cancel'><item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/><text xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'>no such roster item</text></error></iq>`},
		{"two items", `<iq type='set' id='s4'><query xmlns='jabber:iq:roster'><item jid='a@localhost'/><item jid='b@localhost'/></query></iq>`,
			`<iq type='error' id='s4' to='alice@localhost/one'><error type='modify'><bad-request xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>`},
		{"another's roster", `<iq type='get' id='g' to='bob@localhost'><query xmlns='jabber:iq:roster'/></iq>`,
			`<iq type='error' id='g' from='bob@localhost' to='alice@localhost/one'><error type='auth'><forbidden xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>`},
	}
	for _, tc := range cases {
		c1.Written = nil
		send(t, c1, tc.send)
		expect(t, tc.name, c1.Written, tc.want)
	}
	expect(t, "remove push", s2.Take(), `<iq type='set' id='push4' to='alice@localhost/two'><query xmlns='jabber:iq:roster' ver='2'><item jid='bob@localhost' subscription='remove'/></query></iq>`)
}

// TestRosterCap: im.max_roster_items refuses a new contact beyond the cap
// but lets an existing one be edited; a busy pool answers
// resource-constraint (by the core, with no busy function).
func TestRosterCap(t *testing.T) {
	host, reg, _ := setup(t, "vic")
	host.Conf.IM.MaxRosterItems = 1
	c := imtest.NewConn(host, reg, host.Bind("vic", "v"))
	for i, j := range []string{"a@localhost", "b@localhost", "a@localhost"} {
		c.Written = nil
		send(t, c, `<iq type='set' id='`+string(rune('0'+i))+`'><query xmlns='jabber:iq:roster'><item jid='`+j+`'/></query></iq>`)
		want := `<iq type='result' id='` + string(rune('0'+i)) + `'/>`
		if i == 1 {
			want = `<iq type='error' id='1' to='vic@localhost/v'><error type='modify'><policy-violation xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/><text xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'>the roster is full (1 items)</text></error></iq>`
		}
		expect(t, j, c.Written, want)
	}
	c.Written, c.Busy = nil, true
	send(t, c, `<iq type='get' id='b'><query xmlns='jabber:iq:roster'/></iq>`)
	expect(t, "busy", c.Written, `<iq type='error' id='b' to='vic@localhost/v'><error type='wait'><resource-constraint xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>`)
}

// TestSubscriptionStanzas drives subscriptions through the Pre stage:
// what each side receives, byte for byte, and the refusals.
func TestSubscriptionStanzas(t *testing.T) {
	host, reg, store := setup(t, "alice", "bob")
	a, b := host.Bind("alice", "a"), host.Bind("bob", "b")
	ca, cb := imtest.NewConn(host, reg, a), imtest.NewConn(host, reg, b)
	send(t, ca, `<iq type='get' id='r'><query xmlns='jabber:iq:roster'/></iq>`)
	send(t, cb, `<iq type='get' id='r'><query xmlns='jabber:iq:roster'/></iq>`)
	// bob is available; alice is not (she still gets pushes).
	b.SetPresence(cb.Ctx(nil), []byte(`<presence from='bob@localhost/b'/>`), 0)
	cb.Run()

	if v, err := ca.Send(`<presence to='bob@localhost/b' type='subscribe'><status>hi</status></presence>`); err != nil || v != hook.Stop {
		t.Fatalf("subscribe not consumed: %v %v", v, err)
	}
	expect(t, "alice", a.Take(), `<iq type='set' id='push1' to='alice@localhost/a'><query xmlns='jabber:iq:roster' ver='1'><item jid='bob@localhost' subscription='none' ask='subscribe'/></query></iq>`)
	expect(t, "bob", b.Take(), `<presence type='subscribe' from='alice@localhost' to='bob@localhost'/>`)
	if r, ok, _ := store.tx.Request("bob", "alice@localhost"); !ok || string(r.Stanza) != `<presence type='subscribe' from='alice@localhost' to='bob@localhost'/>` {
		t.Fatalf("request stored: %v %q", ok, r.Stanza)
	}

	send(t, cb, `<presence to='alice@localhost' type='subscribed'/>`)
	expect(t, "bob approves", b.Take(), `<iq type='set' id='push2' to='bob@localhost/b'><query xmlns='jabber:iq:roster' ver='1'><item jid='alice@localhost' subscription='from'/></query></iq>`)
	// alice is not available: the subscribed presence and bob's presence
	// go to available resources only.
	expect(t, "alice approved", a.Take(), `<iq type='set' id='push3' to='alice@localhost/a'><query xmlns='jabber:iq:roster' ver='2'><item jid='bob@localhost' subscription='to'/></query></iq>`)

	a.SetPresence(ca.Ctx(nil), []byte(`<presence from='alice@localhost/a'/>`), 0)
	ca.Run()
	send(t, ca, `<presence to='bob@localhost' type='unsubscribe'/>`)
	expect(t, "alice unsubscribes", a.Take(),
		`<iq type='set' id='push4' to='alice@localhost/a'><query xmlns='jabber:iq:roster' ver='3'><item jid='bob@localhost' subscription='none'/></query></iq>`,
		`<presence type='unavailable' from='bob@localhost/b' to='alice@localhost'/>`)
	expect(t, "bob", b.Take(),
		`<iq type='set' id='push5' to='bob@localhost/b'><query xmlns='jabber:iq:roster' ver='2'><item jid='alice@localhost' subscription='none'/></query></iq>`,
		`<presence type='unsubscribe' from='alice@localhost' to='bob@localhost'/>`)

	cases := []struct{ name, send, want string }{
		{"no such account", `<presence id='x' to='nobody@localhost' type='subscribe'/>`,
			`<presence type='error' id='x' from='nobody@localhost' to='alice@localhost/a'><error type='cancel'><service-unavailable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></presence>`},
		{"no such account, unsubscribe", `<presence id='x' to='nobody@localhost' type='unsubscribe'/>`, ""},
		// A remote contact: the user's half of the state machine here,
		// the stanza to the contact's server (remote.go, TestRemote...).
		{"remote", `<presence id='y' to='carol@example.org/r' type='subscribe'/>`, ""},
		{"no to", `<presence type='subscribe'/>`, ""},
		{"to self", `<presence to='alice@localhost' type='subscribe'/>`, ""},
		{"to the server", `<presence to='localhost' type='subscribed'/>`, ""},
	}
	for _, tc := range cases {
		ca.Written = nil
		if v, err := ca.Send(tc.send); err != nil || v != hook.Stop {
			t.Fatalf("%s: not consumed: %v %v", tc.name, v, err)
		}
		var want []string
		if tc.want != "" {
			want = []string{tc.want}
		}
		expect(t, tc.name, ca.Written, want...)
	}
	// The remote subscribe's half on alice's side: ask='subscribe'.
	expect(t, "nothing else for alice", a.Take(),
		`<iq type='set' id='push6' to='alice@localhost/a'><query xmlns='jabber:iq:roster' ver='4'><item jid='carol@example.org' subscription='none' ask='subscribe'/></query></iq>`)
	expect(t, "nothing else for bob", b.Take())

	// Other presence is not the roster's.
	if v, _ := ca.Send(`<presence to='bob@localhost'/>`); v != hook.Continue {
		t.Fatal("available presence consumed")
	}
}

// TestPendingRequests: a request stored while the contact was offline is
// delivered when a session of the contact becomes available, after what
// was queued before (the presence module's broadcast and probes).
func TestPendingRequests(t *testing.T) {
	host, reg, _ := setup(t, "carol", "dave")
	cc := imtest.NewConn(host, reg, host.Bind("carol", "c"))
	send(t, cc, `<presence to='dave@localhost' type='subscribe'/>`)
	d := host.Bind("dave", "d")
	cd := imtest.NewConn(host, reg, d)
	cd.Async(func(context.Context) func(*hook.Ctx) { d.Deliver([]byte("earlier")); return nil }, nil)
	d.SetPresence(cd.Ctx(nil), []byte(`<presence from='dave@localhost/d'/>`), 0)
	cd.Run()
	expect(t, "dave", d.Take(), "earlier", `<presence type='subscribe' from='carol@localhost' to='dave@localhost'/>`)
}

// TestStreamFeatures: roster versioning and pre-approval after
// authentication, on both kinds of stream.
func TestStreamFeatures(t *testing.T) {
	_, reg, _ := setup(t)
	want := `<ver xmlns='urn:xmpp:features:rosterver'/><sub xmlns='urn:xmpp:features:pre-approval'/>`
	for _, secure := range []bool{false, true} {
		if got := string(reg.StreamFeatures(nil, hook.PhaseBind, secure)); got != want {
			t.Fatalf("secure=%v: %q", secure, got)
		}
		if got := reg.StreamFeatures(nil, hook.PhasePreAuth, secure); len(got) != 0 {
			t.Fatalf("before authentication: %q", got)
		}
	}
}

func TestRegisterNeedsStores(t *testing.T) {
	if _, err := hook.New(&Module{}); err == nil {
		t.Fatal("a module with no store registered")
	}
}
