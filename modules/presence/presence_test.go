package presence_test

import (
	"context"
	"slices"
	"strconv"
	"testing"

	"mellium.im/xmpp/jid"

	"github.com/krill-xmpp/krill/hook"
	"github.com/krill-xmpp/krill/modules/internal/imtest"
	"github.com/krill-xmpp/krill/modules/presence"
	"github.com/krill-xmpp/krill/storage"
)

// rosters is a presence.Store in memory: user → items.
type rosters map[string][]storage.RosterItem

func (r rosters) Roster(_ context.Context, user string) ([]storage.RosterItem, uint64, error) {
	return r[user], 0, nil
}

// blocks is a presence.Blocker: owner → blocked bare JIDs.
type blocks map[string][]string

func (b blocks) Blocks(owner string, j jid.JID) bool {
	return slices.Contains(b[owner], j.Bare().String())
}

// pending stands for the modules after presence that queue work when a
// session becomes available (roster's pending requests, offline
// messages): what they deliver must come after the broadcast and probes.
type pending struct{}

func (pending) Name() string { return "pending" }
func (pending) Register(r *hook.Registrar) error {
	r.On(hook.Available, func(c *hook.Ctx, _ hook.Event) hook.Verdict {
		s := c.Session
		c.Conn.Async(func(context.Context) func(*hook.Ctx) { s.Deliver([]byte("pending")); return nil }, nil)
		return hook.Continue
	})
	return nil
}

func setup(t *testing.T, store rosters, b presence.Blocker) (*imtest.Host, *hook.Registry) {
	t.Helper()
	m := &presence.Module{Store: store}
	if b != nil {
		m.Blocker = b
	}
	// pending registers first, as roster does: the order must not matter.
	reg, err := hook.New(pending{}, m)
	if err != nil {
		t.Fatal(err)
	}
	return imtest.NewHost(), reg
}

func send(t *testing.T, c *imtest.Conn, raw string, want hook.Verdict) {
	t.Helper()
	v, err := c.Send(raw)
	if err != nil {
		t.Fatal(err)
	}
	if v != want {
		t.Fatalf("%s: verdict %v, want %v", raw, v, want)
	}
}

func expect(t *testing.T, what string, got []string, want ...string) {
	t.Helper()
	if !slices.Equal(got, want) {
		t.Fatalf("%s:\n got %q\nwant %q", what, got, want)
	}
}

func item(contact string, s storage.Subscription) storage.RosterItem {
	return storage.RosterItem{Contact: contact, Subscription: s}
}

// TestInitialPresence: the sender's own echo, then its contacts' presence
// (probes), then what other modules queued; contacts subscribed to the
// user and the user's other available resources get the presence; a
// contact blocked either way gets nothing and gives nothing.
func TestInitialPresence(t *testing.T) {
	store := rosters{
		"alice": {item("bob@localhost", storage.SubBoth), item("carol@localhost", storage.SubTo),
			item("dave@localhost", storage.SubFrom), item("eve@localhost", storage.SubBoth), item("x@example.org", storage.SubBoth)},
	}
	host, reg := setup(t, store, blocks{"eve": {"alice@localhost"}})
	a1, a2, a3 := host.Bind("alice", "1"), host.Bind("alice", "2"), host.Bind("alice", "3")
	others := map[string]*imtest.Session{}
	for _, u := range []string{"bob", "carol", "dave", "eve"} {
		s := host.Bind(u, "r")
		c := imtest.NewConn(host, reg, s)
		send(t, c, `<presence><show>chat</show></presence>`, hook.Stop)
		s.Take()
		others[u] = s
	}
	c2 := imtest.NewConn(host, reg, a2)
	send(t, c2, `<presence/>`, hook.Stop)
	a2.Take()
	for _, s := range others {
		s.Take()
	}

	c1 := imtest.NewConn(host, reg, a1)
	if _, err := c1.Handle(`<presence from='alice@localhost'><priority>5</priority></presence>`); err != nil {
		t.Fatal(err)
	}
	if !a1.Available() || a1.Priority() != 5 || string(a1.Presence()) != `<presence from='alice@localhost/1'><priority>5</priority></presence>` {
		t.Fatalf("session state: %v %d %q", a1.Available(), a1.Priority(), a1.Presence())
	}
	c1.Run()
	p := `<priority>5</priority></presence>`
	expect(t, "alice/1", a1.Take(),
		`<presence from='alice@localhost/1'>`+p,
		`<presence from='alice@localhost/2' to='alice@localhost/1'/>`,
		`<presence from='bob@localhost/r' to='alice@localhost/1'><show>chat</show></presence>`,
		`<presence from='carol@localhost/r' to='alice@localhost/1'><show>chat</show></presence>`,
		"pending")
	expect(t, "alice/2", a2.Take(), `<presence from='alice@localhost/1'>`+p)
	expect(t, "alice/3 (unavailable)", a3.Take())
	expect(t, "bob", others["bob"].Take(), `<presence from='alice@localhost/1' to='bob@localhost'>`+p)
	expect(t, "carol (to only)", others["carol"].Take())
	expect(t, "dave", others["dave"].Take(), `<presence from='alice@localhost/1' to='dave@localhost'>`+p)
	expect(t, "eve (blocks alice)", others["eve"].Take())

	// A later presence is broadcast without probes or pending work.
	send(t, c1, `<presence><show>away</show></presence>`, hook.Stop)
	expect(t, "alice/1 again", a1.Take(), `<presence from='alice@localhost/1'><show>away</show></presence>`)
	expect(t, "bob again", others["bob"].Take(), `<presence from='alice@localhost/1' to='bob@localhost'><show>away</show></presence>`)
}

// TestDirectedPresence: recipients are remembered normalised, forgotten by
// unavailable, told when the session broadcasts unavailable or closes, and
// capped.
func TestDirectedPresence(t *testing.T) {
	store := rosters{"alice": {item("bob@localhost", storage.SubFrom)}}
	host, reg := setup(t, store, nil)
	a := host.Bind("alice", "a")
	bob, carol, dan := host.Bind("bob", "b"), host.Bind("carol", "c"), host.Bind("dan", "d")
	for _, s := range []*imtest.Session{bob, carol, dan} {
		send(t, imtest.NewConn(host, reg, s), `<presence/>`, hook.Stop)
		s.Take()
	}
	ca := imtest.NewConn(host, reg, a)
	send(t, ca, `<presence/>`, hook.Stop)
	a.Take()
	bob.Take()
	// The core delivers directed presence: the module lets it through.
	send(t, ca, `<presence to='Carol@LOCALHOST/c'/>`, hook.Continue)
	send(t, ca, `<presence to='bob@localhost'/>`, hook.Continue)
	send(t, ca, `<presence to='dan@localhost'/>`, hook.Continue)
	send(t, ca, `<presence to='dan@localhost' type='unavailable'/>`, hook.Continue)
	send(t, ca, `<presence to='x@example.org'/>`, hook.Continue)
	send(t, ca, `<presence to='localhost'/>`, hook.Stop)
	send(t, ca, `<presence to='dan@localhost' type='error'/>`, hook.Continue)

	send(t, ca, `<presence type='unavailable'/>`, hook.Stop)
	expect(t, "alice", a.Take(), `<presence type='unavailable' from='alice@localhost/a'/>`)
	expect(t, "bob (contact and directed, once)", bob.Take(), `<presence type='unavailable' from='alice@localhost/a' to='bob@localhost'/>`)
	expect(t, "carol (directed, normalised)", carol.Take(), `<presence type='unavailable' from='alice@localhost/a' to='carol@localhost/c'/>`)
	expect(t, "dan (forgotten)", dan.Take())
	send(t, ca, `<presence type='unavailable'/>`, hook.Stop)
	expect(t, "unavailable twice", a.Take())

	// Closing while available announces the same, with no connection.
	send(t, ca, `<presence/>`, hook.Stop)
	send(t, ca, `<presence to='carol@localhost/c'/>`, hook.Continue)
	bob.Take()
	ca.Close()
	expect(t, "bob on close", bob.Take(), `<presence type='unavailable' from='alice@localhost/a' to='bob@localhost'/>`)
	expect(t, "carol on close", carol.Take(), `<presence type='unavailable' from='alice@localhost/a' to='carol@localhost/c'/>`)

	// The cap: 64 recipients, the 65th refused and not delivered; one
	// unavailable frees a place; a known recipient is not counted twice.
	e := host.Bind("erin", "e")
	ce := imtest.NewConn(host, reg, e)
	for i := range presence.MaxDirected {
		send(t, ce, `<presence to='u`+strconv.Itoa(i)+`@localhost'/>`, hook.Continue)
	}
	send(t, ce, `<presence to='u0@localhost'/>`, hook.Continue)
	send(t, ce, `<presence id='over' to='over@localhost'/>`, hook.Stop)
	expect(t, "over the cap", ce.Written, `<presence type='error' id='over' to='erin@localhost/e'><error type='modify'><policy-violation xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/><text xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'>too many directed-presence recipients (64)</text></error></presence>`)
	send(t, ce, `<presence to='u0@localhost' type='unavailable'/>`, hook.Continue)
	send(t, ce, `<presence to='over@localhost'/>`, hook.Continue)
}

// TestPresenceTypes: probes are dropped, unknown types refused, errors
// without a to dropped, subscriptions left to the roster module.
func TestPresenceTypes(t *testing.T) {
	host, reg := setup(t, rosters{}, nil)
	a := host.Bind("alice", "a")
	c := imtest.NewConn(host, reg, a)
	cases := []struct {
		send    string
		verdict hook.Verdict
		reply   string
	}{
		{`<presence to='bob@localhost' type='probe'/>`, hook.Stop, ""},
		{`<presence type='error'/>`, hook.Stop, ""},
		{`<presence to='bob@localhost' type='subscribe'/>`, hook.Continue, ""},
		{`<presence id='b' to='bob@localhost' type='invisible'/>`, hook.Stop,
			`<presence type='error' id='b' to='alice@localhost/a'><error type='modify'><bad-request xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/><text xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'>unknown presence type</text></error></presence>`},
	}
	for _, tc := range cases {
		c.Written = nil
		send(t, c, tc.send, tc.verdict)
		var want []string
		if tc.reply != "" {
			want = []string{tc.reply}
		}
		expect(t, tc.send, c.Written, want...)
	}
	if a.Available() || len(a.Take()) != 0 {
		t.Fatal("a non-broadcast presence changed the session")
	}
}

func TestPriority(t *testing.T) {
	host, reg := setup(t, rosters{}, nil)
	for i, tc := range []struct {
		in   string
		want int
	}{
		{`<presence/>`, 0},
		{`<presence><priority>-128</priority></presence>`, -128},
		{`<presence><priority> 12 </priority></presence>`, 12},
		{`<presence><priority>128</priority></presence>`, 0},
		{`<presence><priority>x</priority></presence>`, 0},
	} {
		s := host.Bind("p", strconv.Itoa(i))
		send(t, imtest.NewConn(host, reg, s), tc.in, hook.Stop)
		if s.Priority() != tc.want {
			t.Fatalf("%s: priority %d, want %d", tc.in, s.Priority(), tc.want)
		}
	}
}

// counted is a presence.Store that counts its roster reads.
type counted struct {
	rosters
	reads int
}

func (c *counted) Roster(ctx context.Context, user string) ([]storage.RosterItem, uint64, error) {
	c.reads++
	return c.rosters.Roster(ctx, user)
}

// TestRosterReads: an initial presence reads the roster once for both its
// broadcast and its probes (a login's cost), a later one once, and each
// still reaches the contacts it should.
func TestRosterReads(t *testing.T) {
	store := &counted{rosters: rosters{"alice": {item("bob@localhost", storage.SubBoth)}}}
	reg, err := hook.New(&presence.Module{Store: store})
	if err != nil {
		t.Fatal(err)
	}
	host := imtest.NewHost()
	bob := host.Bind("bob", "r")
	cb := imtest.NewConn(host, reg, bob)
	send(t, cb, `<presence/>`, hook.Stop)
	bob.Take()
	alice := host.Bind("alice", "1")
	ca := imtest.NewConn(host, reg, alice)
	for i, tc := range []struct {
		raw       string
		wantAlice []string
	}{
		{`<presence/>`, []string{`<presence from='alice@localhost/1'/>`, `<presence from='bob@localhost/r' to='alice@localhost/1'/>`}},
		{`<presence><show>away</show></presence>`, []string{`<presence from='alice@localhost/1'><show>away</show></presence>`}},
	} {
		store.reads = 0
		send(t, ca, tc.raw, hook.Stop)
		if store.reads != 1 {
			t.Fatalf("%s: %d roster reads, want 1", tc.raw, store.reads)
		}
		expect(t, "alice "+strconv.Itoa(i), alice.Take(), tc.wantAlice...)
		if got := bob.Take(); len(got) != 1 {
			t.Fatalf("%s: bob got %q, want the broadcast", tc.raw, got)
		}
	}
}
