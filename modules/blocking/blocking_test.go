package blocking

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"strings"
	"testing"

	"mellium.im/xmpp/jid"

	"github.com/krill-xmpp/krill/hook"
	"github.com/krill-xmpp/krill/hook/hooktest"
)

func TestListBlocks(t *testing.T) {
	l := newList([]string{"bob@example.org", "eve@example.org/phone", "spam.example", "example.net/bot"})
	cases := []struct {
		jid  string
		want bool
	}{
		{"bob@example.org", true},
		{"bob@example.org/any", true},
		{"eve@example.org/phone", true},
		{"eve@example.org/laptop", false},
		{"eve@example.org", false},
		{"anyone@spam.example/r", true},
		{"spam.example", true},
		{"spam.example/r", true},
		{"x@example.net/bot", true}, // as the server always has: domain/resource of any account
		{"example.net/bot", true},
		{"example.net", false},
		{"carol@example.org", false},
		{"example.org", false},
	}
	for _, tc := range cases {
		j := jid.MustParse(tc.jid)
		if got := l.blocks(j.Localpart(), j.Domainpart(), j.Resourcepart()); got != tc.want {
			t.Errorf("blocks(%s) = %v, want %v", tc.jid, got, tc.want)
		}
		sorted := []string{"bob@example.org", "eve@example.org/phone", "spam.example", "example.net/bot"}
		slices.Sort(sorted)
		if got := sortedBlocks(sorted, j); got != tc.want {
			t.Errorf("sortedBlocks(%s) = %v, want %v", tc.jid, got, tc.want)
		}
		if l, d, r := splitFull(j.String()); l != j.Localpart() || d != j.Domainpart() || r != j.Resourcepart() {
			t.Errorf("splitFull(%s) = %q %q %q", tc.jid, l, d, r)
		}
	}
	var none *list
	if none.blocks("a", "b", "c") || newList(nil) != nil {
		t.Fatal("an empty list blocks")
	}
	if n := testing.AllocsPerRun(100, func() { l.blocks("eve", "example.org", "laptop") }); n != 0 {
		t.Fatalf("blocks allocates %v times", n)
	}
}

func TestSplitFullResourceWithSeparators(t *testing.T) {
	l, d, r := splitFull("a@b/c@d/e")
	if l != "a" || d != "b" || r != "c@d/e" {
		t.Fatalf("got %q %q %q", l, d, r)
	}
}

func TestParseItems(t *testing.T) {
	items := func(n int) string {
		var b strings.Builder
		b.WriteString("<block xmlns='urn:xmpp:blocking'>")
		for i := range n {
			b.WriteString("<item jid='u" + strconv.Itoa(i) + "@example.org'/>")
		}
		return b.String() + "</block>"
	}
	cases := []struct {
		name, payload string
		max           int
		want          []string
		cond          string
	}{
		{"none", "<unblock xmlns='urn:xmpp:blocking'/>", 10, nil, ""},
		{"normalised", "<block xmlns='urn:xmpp:blocking'><item jid='Bob@Example.ORG/R'/><item jid='x.org'></item></block>", 10,
			[]string{"bob@example.org/R", "x.org"}, ""},
		{"escaped", "<block xmlns='urn:xmpp:blocking'><item jid='a@b/&amp;'/></block>", 10, []string{"a@b/&"}, ""},
		{"nested items ignored", "<block xmlns='urn:xmpp:blocking'><item jid='a@b'><item jid='c@d'/></item></block>", 10,
			[]string{"a@b"}, ""},
		{"at the cap", items(3), 3, []string{"u0@example.org", "u1@example.org", "u2@example.org"}, ""},
		{"over the cap", items(4), 3, nil, "bad-request"},
		{"no jid", "<block xmlns='urn:xmpp:blocking'><item/></block>", 10, nil, "jid-malformed"},
		{"bad jid", "<block xmlns='urn:xmpp:blocking'><item jid='@x'/></block>", 10, nil, "jid-malformed"},
		{"cdata", "<block xmlns='urn:xmpp:blocking'><![CDATA[<item jid='a@b'/>]]></block>", 10, nil, "bad-request"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, cond, _ := parseItems([]byte(tc.payload), tc.max)
			if cond != tc.cond || !slices.Equal(got, tc.want) {
				t.Fatalf("parseItems = %q, %q; want %q, %q", got, cond, tc.want, tc.cond)
			}
		})
	}
}

func TestUnionLen(t *testing.T) {
	if n := unionLen([]string{"a", "b"}, []string{"b", "c", "c"}); n != 3 {
		t.Fatalf("unionLen = %d, want 3", n)
	}
}

// memStore is a Store in memory.
type memStore struct {
	lists map[string][]string
	reads int
	fail  bool
}

func (s *memStore) Blocklist(_ context.Context, user string) ([]string, error) {
	s.reads++
	if s.fail {
		return nil, errors.New("down")
	}
	return slices.Clone(s.lists[user]), nil
}

func (s *memStore) Block(_ context.Context, user string, jids []string) error {
	l := append(s.lists[user], jids...)
	slices.Sort(l)
	s.lists[user] = slices.Compact(l)
	return nil
}

func (s *memStore) Unblock(_ context.Context, user string, jids []string) error {
	if len(jids) == 0 {
		delete(s.lists, user)
		return nil
	}
	s.lists[user] = slices.DeleteFunc(s.lists[user], func(j string) bool { return slices.Contains(jids, j) })
	return nil
}

// session is a hook.Session that records deliveries.
type session struct {
	local, full string
	available   bool
	flags       hook.Flag
	delivered   []string
}

func (s *session) Local() string                      { return s.local }
func (s *session) Full() string                       { return s.full }
func (s *session) Available() bool                    { return s.available }
func (s *session) Priority() int                      { return 0 }
func (s *session) SetPresence(*hook.Ctx, []byte, int) {}
func (s *session) Presence() []byte                   { return nil }
func (s *session) Has(f hook.Flag) bool               { return s.flags&f != 0 }
func (s *session) Slot(hook.Slot) any                 { return nil }
func (s *session) SetSlot(hook.Slot, any)             {}
func (s *session) Close(string, string)               {}
func (s *session) Deliver(b []byte) bool              { s.delivered = append(s.delivered, string(b)); return true }
func (s *session) Pass(_ hook.Outbound, b []byte)     { s.Deliver(b) }
func (s *session) Set(f hook.Flag, on bool)           { s.flags = s.flags&^f | map[bool]hook.Flag{true: f}[on] }
func (h *host) Sessions(local string, fn func(hook.Session)) {
	for _, s := range h.sessions[local] {
		fn(s)
	}
}

// host is a hooktest.Host with sessions.
type host struct {
	hooktest.Host
	sessions map[string][]*session
}

func TestModule(t *testing.T) {
	store := &memStore{lists: map[string][]string{"lea": {"max@localhost"}}}
	m := New(store)
	reg, err := hook.New(m)
	if err != nil {
		t.Fatal(err)
	}
	lea := &session{local: "lea", full: "lea@localhost/l"}
	lea2 := &session{local: "lea", full: "lea@localhost/l2"}
	max := &session{local: "max", full: "max@localhost/m", available: true}
	h := &host{sessions: map[string][]*session{"lea": {lea, lea2}, "max": {max}}}
	fire := func(s *session, ev hook.Event) *hooktest.Conn {
		conn := &hooktest.Conn{}
		reg.Fire(hooktest.Ctx(reg, h, s, conn, nil), ev)
		return conn
	}
	send := func(s *session, st hook.Stanza) (*hooktest.Conn, hook.Verdict) {
		conn := &hooktest.Conn{}
		st.From = s.full
		if st.To != "" {
			j := jid.MustParse(st.To)
			st.Local, st.Domain, st.Resource = j.Localpart(), j.Domainpart(), j.Resourcepart()
		}
		c := hooktest.Ctx(reg, h, s, conn, &st)
		if st.Kind == hook.IQ && (st.Type == "get" || st.Type == "set") && st.Addr&hook.ToAccount != 0 {
			typ := hook.IQGet
			if st.Type == "set" {
				typ = hook.IQSet
			}
			if hd := reg.IQ(hook.PhaseBound, typ, st.Addr, st.NS, st.Name); hd != nil {
				if err := hd(c, &st); err != nil {
					t.Fatal(err)
				}
				return conn, hook.Stop
			}
		}
		return conn, reg.Stanza(c, hook.Pre, &st)
	}

	// Loaded once per account, at the first session's authentication.
	fire(lea, hook.Authenticated)
	fire(lea2, hook.Authenticated)
	fire(max, hook.Authenticated)
	if store.reads != 2 {
		t.Fatalf("%d blocklist reads for two accounts", store.reads)
	}
	if !m.Blocks("lea", jid.MustParse("max@localhost/m")) || m.Blocks("max", jid.MustParse("lea@localhost")) {
		t.Fatal("Blocks does not reflect the loaded lists")
	}
	if ok, err := m.BlocksStored(context.Background(), "lea", jid.MustParse("max@localhost/x")); !ok || err != nil {
		t.Fatalf("BlocksStored = %v, %v", ok, err)
	}

	msg := func(to string, addr hook.Addr) hook.Stanza {
		return hook.Stanza{Kind: hook.Message, Type: "chat", ID: "x", To: to, Addr: addr}
	}
	// The sender blocks the recipient.
	conn, v := send(lea, msg("max@localhost", hook.ToBare))
	if v != hook.Stop || len(conn.Written) != 1 || conn.Written[0] != `<message type='error' id='x' from='max@localhost' to='lea@localhost/l'>`+
		`<error type='cancel'><not-acceptable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/><blocked xmlns='urn:xmpp:blocking:errors'/></error></message>` {
		t.Fatalf("to a blocked JID: %v %q", v, conn.Written)
	}
	// The recipient blocks the sender: as if it did not exist.
	conn, v = send(max, msg("lea@localhost/l", hook.ToFull))
	if v != hook.Stop || len(conn.Written) != 1 || !strings.HasPrefix(conn.Written[0],
		`<message type='error' id='x' from='lea@localhost/l' to='max@localhost/m'><error type='cancel'><service-unavailable`) {
		t.Fatalf("from a blocked JID: %v %q", v, conn.Written)
	}
	// Presence and errors are dropped silently.
	for _, st := range []hook.Stanza{
		{Kind: hook.Presence, To: "lea@localhost", Addr: hook.ToBare},
		{Kind: hook.Message, Type: "error", To: "lea@localhost", Addr: hook.ToBare},
		{Kind: hook.IQ, Type: "result", To: "lea@localhost/l", Addr: hook.ToFull},
	} {
		if conn, v := send(max, st); v != hook.Stop || len(conn.Written) != 0 {
			t.Fatalf("%v %s: %v %q", st.Kind, st.Type, v, conn.Written)
		}
	}
	// Others pass.
	if conn, v := send(max, msg("max@localhost", hook.ToBare)); v != hook.Continue || len(conn.Written) != 0 {
		t.Fatalf("unblocked: %v %q", v, conn.Written)
	}

	iq := func(typ, name, payload, to string, addr hook.Addr) hook.Stanza {
		return hook.Stanza{Kind: hook.IQ, Type: typ, ID: "b", To: to, Addr: addr, NS: NS, Name: name, Payload: []byte(payload)}
	}
	// lea2 asks for the list: it gets pushes from now on.
	conn, _ = send(lea2, iq("get", "blocklist", `<blocklist xmlns='urn:xmpp:blocking'/>`, "", hook.ToNone))
	// (Whether a result carries to is the core's business: hook.Ctx.)
	if want := `><blocklist xmlns='urn:xmpp:blocking'><item jid='max@localhost'/></blocklist></iq>`; len(conn.Written) != 1 ||
		!strings.HasPrefix(conn.Written[0], `<iq type='result' id='b'`) || !strings.HasSuffix(conn.Written[0], want) {
		t.Fatalf("blocklist: %q", conn.Written)
	}
	// Another account's list is forbidden.
	conn, _ = send(max, iq("get", "blocklist", `<blocklist xmlns='urn:xmpp:blocking'/>`, "lea@localhost", hook.ToBare))
	if len(conn.Written) != 1 || !strings.Contains(conn.Written[0], "<forbidden") {
		t.Fatalf("other's blocklist: %q", conn.Written)
	}
	// Block: pushed to lea2 only, and max sees lea's available sessions go.
	lea.available = true
	conn, _ = send(lea, iq("set", "block", `<block xmlns='urn:xmpp:blocking'><item jid='Eve@localhost'/><item jid='max@localhost'/></block>`, "", hook.ToNone))
	if len(conn.Written) != 1 || !strings.HasPrefix(conn.Written[0], `<iq type='result' id='b'`) || !strings.HasSuffix(conn.Written[0], `/>`) {
		t.Fatalf("block: %q", conn.Written)
	}
	wantPush := `<iq type='set' id='block-push' to='lea@localhost/l2'><block xmlns='urn:xmpp:blocking'><item jid='eve@localhost'/><item jid='max@localhost'/></block></iq>`
	if len(lea2.delivered) != 1 || lea2.delivered[0] != wantPush || len(lea.delivered) != 0 {
		t.Fatalf("pushes: %q / %q", lea2.delivered, lea.delivered)
	}
	wantGone := []string{
		`eve@localhost: <presence type='unavailable' from='lea@localhost/l' to='eve@localhost'/>`,
		`max@localhost: <presence type='unavailable' from='lea@localhost/l' to='max@localhost'/>`,
	}
	if !slices.Equal(h.Delivered, wantGone) {
		t.Fatalf("unavailable presence: %q", h.Delivered)
	}
	if !m.Blocks("lea", jid.MustParse("eve@localhost")) {
		t.Fatal("the table was not updated")
	}
	// Malformed requests.
	for _, tc := range []struct {
		st   hook.Stanza
		cond string
	}{
		{iq("set", "block", `<block xmlns='urn:xmpp:blocking'/>`, "", hook.ToNone), "bad-request"},
		{iq("set", "block", `<block xmlns='urn:xmpp:blocking'><item jid='@'/></block>`, "", hook.ToNone), "jid-malformed"},
		{iq("get", "block", `<block xmlns='urn:xmpp:blocking'/>`, "", hook.ToNone), "bad-request"},
		{iq("set", "blocklist", `<blocklist xmlns='urn:xmpp:blocking'/>`, "", hook.ToNone), "bad-request"},
	} {
		conn, _ := send(lea, tc.st)
		if len(conn.Written) != 1 || !strings.Contains(conn.Written[0], "<"+tc.cond+" ") {
			t.Fatalf("%s %s: %q, want %s", tc.st.Type, tc.st.Payload, conn.Written, tc.cond)
		}
	}
	// The cap counts the list in storage plus the new JIDs.
	var many strings.Builder
	many.WriteString(`<block xmlns='urn:xmpp:blocking'>`)
	for i := range h.Config().IM.MaxBlocklistItems - 1 {
		many.WriteString(`<item jid='u` + strconv.Itoa(i) + `@localhost'/>`)
	}
	many.WriteString(`</block>`)
	conn, _ = send(lea, iq("set", "block", many.String(), "", hook.ToNone))
	if len(conn.Written) != 1 || !strings.Contains(conn.Written[0], "<policy-violation ") {
		t.Fatalf("over the cap: %q", conn.Written)
	}
	if len(store.lists["lea"]) != 2 {
		t.Fatalf("a refused block changed the list: %d items", len(store.lists["lea"]))
	}
	// Unblock all.
	conn, _ = send(lea, iq("set", "unblock", `<unblock xmlns='urn:xmpp:blocking'/>`, "", hook.ToNone))
	if len(conn.Written) != 1 || m.Blocks("lea", jid.MustParse("max@localhost")) {
		t.Fatalf("unblock all: %q", conn.Written)
	}

	// The list goes with the account's last session, not before.
	store.lists["lea"] = []string{"max@localhost"}
	fire(lea, hook.Closed)
	fire(lea2, hook.Closed)
	fire(lea, hook.Authenticated)
	if !m.Blocks("lea", jid.MustParse("max@localhost")) {
		t.Fatal("the list was not read again after the last session closed")
	}
	// A session whose list cannot be read does not go on.
	store.fail = true
	fire(max, hook.Closed)
	if conn := fire(max, hook.Authenticated); conn.Failed != "internal-server-error" {
		t.Fatalf("failed read: %q", conn.Failed)
	}
}
