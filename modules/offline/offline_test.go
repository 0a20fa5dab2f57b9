package offline

import (
	"context"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"mellium.im/xmpp/jid"

	"github.com/krill-xmpp/krill/hook"
	"github.com/krill-xmpp/krill/hook/hooktest"
	"github.com/krill-xmpp/krill/modules/internal/imtest"
	"github.com/krill-xmpp/krill/sasl"
	"github.com/krill-xmpp/krill/stanza"
	"github.com/krill-xmpp/krill/storage"
)

// session is a hook.Session that takes up to room deliveries.
type session struct {
	local, full string
	available   bool
	room        int
	delivered   []string
}

func (s *session) Local() string                      { return s.local }
func (s *session) Full() string                       { return s.full }
func (s *session) Available() bool                    { return s.available }
func (s *session) Priority() int                      { return 0 }
func (s *session) SetPresence(*hook.Ctx, []byte, int) {}
func (s *session) Presence() []byte                   { return nil }
func (s *session) Has(hook.Flag) bool                 { return false }
func (s *session) Set(hook.Flag, bool)                {}
func (s *session) Slot(hook.Slot) any                 { return nil }
func (s *session) SetSlot(hook.Slot, any)             {}
func (s *session) Close(string, string)               {}
func (s *session) Pass(_ hook.Outbound, b []byte)     { s.Deliver(b) }

func (s *session) Deliver(b []byte) bool {
	if len(s.delivered) >= s.room {
		return false
	}
	s.delivered = append(s.delivered, string(b))
	return true
}

// blocker blocks the JIDs in it.
type blocker map[string]bool

func (b blocker) BlocksStored(_ context.Context, owner string, j jid.JID) (bool, error) {
	return b[owner+" "+j.Bare().String()], nil
}

// countingStore counts batch reads.
type countingStore struct {
	*storage.SQL
	batches int
}

func (s *countingStore) OfflineBatch(ctx context.Context, user string, after int64, limit int) ([]storage.OfflineMessage, error) {
	s.batches++
	return s.SQL.OfflineBatch(ctx, user, after, limit)
}

func open(t *testing.T, users ...string) *storage.SQL {
	t.Helper()
	db, err := storage.OpenSQLite(filepath.Join(t.TempDir(), "krill.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	creds, err := sasl.NewCredentials("pw", 4096)
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range users {
		if err := db.AddAccount(context.Background(), u, creds); err != nil {
			t.Fatal(err)
		}
	}
	return db
}

func message(t *testing.T, raw, from string) hook.Stanza {
	t.Helper()
	tag, err := stanza.ParseStartTag([]byte(raw))
	if err != nil {
		t.Fatal(err)
	}
	to, _ := tag.AttrString("to")
	id, _ := tag.AttrString("id")
	typ, _ := tag.AttrString("type")
	j := jid.MustParse(to)
	addr := hook.ToBare
	if j.Resourcepart() != "" {
		addr = hook.ToFull
	}
	return hook.Stanza{Kind: hook.Message, Type: typ, ID: id, From: from, To: to, Addr: addr,
		Local: j.Localpart(), Domain: j.Domainpart(), Resource: j.Resourcepart(), Tag: tag, Raw: []byte(raw)}
}

func TestUndelivered(t *testing.T) {
	db := open(t, "gina", "lea")
	m := &Module{Store: db, Accounts: db, Blocker: blocker{"lea frank@localhost": true}}
	reg, err := hook.New(m)
	if err != nil {
		t.Fatal(err)
	}
	frank := &session{local: "frank", full: "frank@localhost/f"}
	h := &hooktest.Host{}
	h.Config().IM.OfflineQuota = 2
	cases := []struct {
		name, raw string
		verdict   hook.Verdict
		reply     string // condition answered, "" for none
	}{
		{"stored, stamped", `<message to='gina@localhost' id='m0' type='chat' from='spoofed'><body>first</body></message>`, hook.Stop, ""},
		{"to a full JID", `<message to='gina@localhost/gone' id='m1'><body>second</body></message>`, hook.Stop, ""},
		{"chat state only: dropped", `<message to='gina@localhost' id='cs' type='chat'><composing xmlns='http://jabber.org/protocol/chatstates'/></message>`, hook.Stop, ""},
		{"over quota", `<message to='gina@localhost' id='m2' type='chat'><body>third</body></message>`, hook.Stop, "service-unavailable"},
		{"no account", `<message to='nobody@localhost' id='u' type='chat'><body>x</body></message>`, hook.Stop, "service-unavailable"},
		{"blocked", `<message to='lea@localhost' id='b' type='chat'><body>x</body></message>`, hook.Stop, "service-unavailable"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			st := message(t, tc.raw, frank.full)
			conn := &hooktest.Conn{}
			v := reg.Stanza(hooktest.Ctx(reg, h, frank, conn, &st), hook.Undelivered, &st)
			if v != tc.verdict {
				t.Fatalf("verdict %v", v)
			}
			switch {
			case tc.reply == "" && len(conn.Written) != 0,
				tc.reply != "" && (len(conn.Written) != 1 || !strings.Contains(conn.Written[0], "<"+tc.reply+" ")):
				t.Fatalf("wrote %q, want %q", conn.Written, tc.reply)
			}
		})
	}
	msgs, err := db.Offline(context.Background(), "gina")
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs) != 2 || string(msgs[0].Stanza) != `<message to='gina@localhost' id='m0' type='chat' from='frank@localhost/f'><body>first</body></message>` {
		t.Fatalf("stored %d: %+v", len(msgs), msgs)
	}
	if got := m.Stats(); got.OfflineStored != 2 || got.OfflineDelivered != 0 {
		t.Fatalf("stats %+v", got)
	}
	// A quota of 0 disables offline storage: the core answers.
	h.Config().IM.OfflineQuota = 0
	st := message(t, `<message to='lea@localhost' id='z'><body>x</body></message>`, frank.full)
	conn := &hooktest.Conn{}
	if v := reg.Stanza(hooktest.Ctx(reg, h, frank, conn, &st), hook.Undelivered, &st); v != hook.Continue || len(conn.Written) != 0 {
		t.Fatalf("quota 0: %v %q", v, conn.Written)
	}
}

func TestDeliveryInBatches(t *testing.T) {
	db := open(t, "gina")
	const n = 2*BatchSize + 5
	for i := range n {
		if err := db.StoreOffline(context.Background(), "gina", []byte(`<message id='`+strconv.Itoa(i)+`'/>`), 0); err != nil {
			t.Fatal(err)
		}
	}
	cs := &countingStore{SQL: db}
	m := &Module{Store: cs, Accounts: db}
	reg, err := hook.New(m)
	if err != nil {
		t.Fatal(err)
	}
	h := &hooktest.Host{}

	// The session takes 150 messages, then is gone: the rest stays.
	gina := &session{local: "gina", full: "gina@localhost/g", available: true, room: 150}
	reg.Fire(hooktest.Ctx(reg, h, gina, &hooktest.Conn{}, nil), hook.Available)
	if len(gina.delivered) != 150 || cs.batches != 2 {
		t.Fatalf("delivered %d in %d reads", len(gina.delivered), cs.batches)
	}
	stamp := time.Now().UTC().Format("2006-01-02T")
	for i, b := range gina.delivered {
		want := `<message id='` + strconv.Itoa(i) + `'><delay xmlns='urn:xmpp:delay' from='localhost' stamp='` + stamp
		if !strings.HasPrefix(b, want) || !strings.HasSuffix(b, `Z'/></message>`) {
			t.Fatalf("message %d: %q, want %q...", i, b, want)
		}
	}
	left, err := db.Offline(context.Background(), "gina")
	if err != nil || len(left) != n-150 || string(left[0].Stanza) != `<message id='150'/>` {
		t.Fatalf("left %d, %v", len(left), err)
	}

	// The next session gets the rest, in order, in bounded reads.
	cs.batches = 0
	gina2 := &session{local: "gina", full: "gina@localhost/g2", available: true, room: n}
	reg.Fire(hooktest.Ctx(reg, h, gina2, &hooktest.Conn{}, nil), hook.Available)
	if len(gina2.delivered) != n-150 || !strings.HasPrefix(gina2.delivered[0], `<message id='150'>`) || cs.batches != 1 {
		t.Fatalf("second session got %d in %d reads", len(gina2.delivered), cs.batches)
	}
	if got := m.Stats().OfflineDelivered; got != n {
		t.Fatalf("delivered counter %d, want %d", got, n)
	}
	if left, _ := db.Offline(context.Background(), "gina"); len(left) != 0 {
		t.Fatalf("%d left after delivery", len(left))
	}
}

func TestWithDelay(t *testing.T) {
	at := time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC)
	for _, tc := range []struct{ in, want string }{
		{`<message/>`, `<message><delay xmlns='urn:xmpp:delay' from='d' stamp='2024-05-06T07:08:09Z'/></message>`},
		{`<message><body>x</body></message>`, `<message><body>x</body><delay xmlns='urn:xmpp:delay' from='d' stamp='2024-05-06T07:08:09Z'/></message>`},
	} {
		if got := string(stanza.WithDelay([]byte(tc.in), "d", at)); got != tc.want {
			t.Errorf("stanza.WithDelay(%s) = %s", tc.in, got)
		}
	}
}

// TestStoreRacingInitialPresence: a message routed while its recipient had
// no available resource is stored; if the recipient's initial presence
// came meanwhile and its delivery read the store before the message was
// committed, the store itself delivers it (afterStore), once, instead of
// leaving it for the next login.
func TestStoreRacingInitialPresence(t *testing.T) {
	db := open(t, "gina", "frank")
	m := &Module{Store: db, Accounts: db}
	reg, err := hook.New(m)
	if err != nil {
		t.Fatal(err)
	}
	h := imtest.NewHost()
	gina := h.Bind("gina", "phone")
	frank := h.Bind("frank", "f")
	// gina becomes available; her delivery reads the (still empty) store.
	gconn := imtest.NewConn(h, reg, gina)
	gina.SetPresence(gconn.Ctx(nil), []byte(`<presence/>`), 0)
	gconn.Run()
	if got := gina.Take(); len(got) != 0 {
		t.Fatalf("delivered from an empty store: %q", got)
	}
	// frank's message was routed before gina's presence: undelivered.
	st := message(t, `<message to='gina@localhost' id='r1' type='chat'><body>raced</body></message>`, frank.Full())
	fconn := imtest.NewConn(h, reg, frank)
	if v := reg.Stanza(fconn.Ctx(&st), hook.Undelivered, &st); v != hook.Stop {
		t.Fatalf("verdict %v", v)
	}
	fconn.Run()
	got := gina.Take()
	if len(got) != 1 || !strings.Contains(got[0], `id='r1'`) || !strings.Contains(got[0], `<body>raced</body>`) || !strings.Contains(got[0], `urn:xmpp:delay`) {
		t.Fatalf("gina got %q, want the raced message once, with a delay", got)
	}
	if left, err := db.Offline(context.Background(), "gina"); err != nil || len(left) != 0 {
		t.Fatalf("still stored: %d, %v", len(left), err)
	}
	counters := map[string]uint64{}
	m.Counters(func(ev string, n uint64) { counters[ev] = n })
	if counters["stored"] != 1 || counters["delivered"] != 1 || counters["delivered_after_race"] != 1 {
		t.Fatalf("counters %v", counters)
	}
}
