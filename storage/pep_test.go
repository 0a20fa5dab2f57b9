package storage

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
)

func TestSQLitePEP(t *testing.T) { testPEP(t, openTestSQLite(t)) }

func TestPostgresPEP(t *testing.T) {
	postgresDSN(t)
	testPEP(t, openTestPostgres(t))
}

// testPEP runs nodes, items, limits, private XML and account deletion
// against one store.
func testPEP(t *testing.T, s *SQL) {
	ctx := context.Background()
	addTestAccount(t, s, "alice")
	cfg := PEPConfig{Access: "presence", PersistItems: true, MaxItems: 2, SendLast: "on_sub_and_presence", NotifyRetract: true}
	lim := PEPLimits{MaxNodes: 2, MaxItems: 3, MaxBytes: 100}
	ids := func(items []PEPItem) []string {
		var out []string
		for _, it := range items {
			out = append(out, it.ID+"="+string(it.Payload))
		}
		return out
	}
	pub := func(node, id, payload string) error {
		_, err := s.PEPPublish(ctx, "alice", node, cfg, nil, PEPItem{ID: id, Payload: []byte(payload)}, lim)
		return err
	}
	for i, p := range []string{"a", "b", "c"} {
		if err := pub("n1", fmt.Sprint(i), p); err != nil {
			t.Fatal(err)
		}
	}
	items, err := s.PEPItems(ctx, "alice", "n1", nil, 0)
	if err != nil || !slices.Equal(ids(items), []string{"1=b", "2=c"}) {
		t.Fatalf("items after three publishes, max 2: %q, %v", ids(items), err)
	}
	// Republishing an id makes it the newest.
	if err := pub("n1", "1", "B"); err != nil {
		t.Fatal(err)
	}
	if items, _ = s.PEPItems(ctx, "alice", "n1", nil, 1); !slices.Equal(ids(items), []string{"1=B"}) {
		t.Fatalf("newest: %q", ids(items))
	}
	if items, _ = s.PEPItems(ctx, "alice", "n1", []string{"2", "zz"}, 0); !slices.Equal(ids(items), []string{"2=c"}) {
		t.Fatalf("by id: %q", ids(items))
	}
	// The check sees the existing configuration and can refuse.
	refuse := errors.New("precondition")
	if _, err := s.PEPPublish(ctx, "alice", "n1", cfg, func(c PEPConfig) error {
		if c.MaxItems != 2 {
			t.Errorf("check saw %+v", c)
		}
		return refuse
	}, PEPItem{ID: "x", Payload: []byte("x")}, lim); !errors.Is(err, refuse) {
		t.Fatalf("check: %v", err)
	}
	// Limits: a third node, then bytes.
	if err := pub("n2", "1", "x"); err != nil {
		t.Fatal(err)
	}
	if err := pub("n3", "1", "x"); !errors.Is(err, ErrPEPTooManyNodes) {
		t.Fatalf("third node: %v", err)
	}
	if err := s.PEPCreate(ctx, "alice", PEPNode{Name: "n3", Config: cfg}, lim); !errors.Is(err, ErrPEPTooManyNodes) {
		t.Fatalf("create third node: %v", err)
	}
	if err := pub("n2", "2", strings.Repeat("z", 100)); !errors.Is(err, ErrPEPQuota) {
		t.Fatalf("over bytes: %v", err)
	}
	if items, _ = s.PEPItems(ctx, "alice", "n2", nil, 0); len(items) != 1 {
		t.Fatalf("refused publish stored: %q", ids(items))
	}
	// "max" keeps lim.MaxItems.
	mx := cfg
	mx.MaxItems = MaxItemsMax
	mx.RosterGroups = "Family\nFriends"
	if err := s.PEPConfigure(ctx, "alice", PEPNode{Name: "n2", Config: mx}, lim); err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		if err := pub("n2", fmt.Sprint("m", i), "y"); err != nil {
			t.Fatal(err)
		}
	}
	if items, _ = s.PEPItems(ctx, "alice", "n2", nil, 0); len(items) != 3 {
		t.Fatalf("max keeps %d items: %q", lim.MaxItems, ids(items))
	}
	n, ok, err := s.PEPNode(ctx, "alice", "n2")
	if err != nil || !ok || n.Config != mx {
		t.Fatalf("node n2: %+v %v %v", n, ok, err)
	}
	// Not persisting drops the items.
	np := cfg
	np.PersistItems = false
	if err := s.PEPConfigure(ctx, "alice", PEPNode{Name: "n2", Config: np}, lim); err != nil {
		t.Fatal(err)
	}
	if items, _ = s.PEPItems(ctx, "alice", "n2", nil, 0); len(items) != 0 {
		t.Fatalf("not persisting: %q", ids(items))
	}
	if err := s.PEPConfigure(ctx, "alice", PEPNode{Name: "none", Config: np}, lim); !errors.Is(err, ErrPEPNoNode) {
		t.Fatalf("configure missing: %v", err)
	}
	if ok, err := s.PEPRetract(ctx, "alice", "n1", "1"); !ok || err != nil {
		t.Fatalf("retract: %v %v", ok, err)
	}
	if ok, _ := s.PEPRetract(ctx, "alice", "n1", "1"); ok {
		t.Fatal("retract twice")
	}
	// Explicit subscriptions, capped per node, gone with the node.
	if err := s.PEPSubscribe(ctx, "alice", "n2", "bob@localhost", 2); err != nil {
		t.Fatal(err)
	}
	if err := s.PEPSubscribe(ctx, "alice", "n2", "bob@localhost", 2); err != nil {
		t.Fatalf("subscribe twice: %v", err)
	}
	if err := s.PEPSubscribe(ctx, "alice", "n2", "carol@localhost/r", 2); err != nil {
		t.Fatal(err)
	}
	if err := s.PEPSubscribe(ctx, "alice", "n2", "dave@localhost", 2); !errors.Is(err, ErrPEPTooManySubscribers) {
		t.Fatalf("third subscriber: %v", err)
	}
	if err := s.PEPSubscribe(ctx, "alice", "none", "dave@localhost", 2); !errors.Is(err, ErrPEPNoNode) {
		t.Fatalf("subscribe to nothing: %v", err)
	}
	if subs, err := s.PEPSubscribers(ctx, "alice", "n2"); err != nil || !slices.Equal(subs, []string{"bob@localhost", "carol@localhost/r"}) {
		t.Fatalf("subscribers %q %v", subs, err)
	}
	if ok, err := s.PEPUnsubscribe(ctx, "alice", "n2", "bob@localhost"); !ok || err != nil {
		t.Fatalf("unsubscribe: %v %v", ok, err)
	}
	if ok, _ := s.PEPUnsubscribe(ctx, "alice", "n2", "bob@localhost"); ok {
		t.Fatal("unsubscribe twice")
	}
	if ok, err := s.PEPDelete(ctx, "alice", "n2"); !ok || err != nil {
		t.Fatalf("delete: %v %v", ok, err)
	}
	if subs, _ := s.PEPSubscribers(ctx, "alice", "n2"); len(subs) != 0 {
		t.Fatalf("subscribers of a deleted node: %q", subs)
	}
	nodes, err := s.PEPNodes(ctx, "alice")
	if err != nil || len(nodes) != 1 || nodes[0].Name != "n1" {
		t.Fatalf("nodes: %+v %v", nodes, err)
	}
	// Private XML with its quota.
	if err := s.SetPrivateXML(ctx, "alice", "ns", "a", []byte("<a xmlns='ns'/>"), 20); err != nil {
		t.Fatal(err)
	}
	if err := s.SetPrivateXML(ctx, "alice", "ns", "b", []byte("<b xmlns='ns'/>"), 20); !errors.Is(err, ErrPrivateQuota) {
		t.Fatalf("private quota: %v", err)
	}
	if v, err := s.PrivateXML(ctx, "alice", "ns", "a"); err != nil || string(v) != "<a xmlns='ns'/>" {
		t.Fatalf("private: %q %v", v, err)
	}
	// Deleting the account deletes it all.
	if err := s.RemoveAccount(ctx, "alice"); err != nil {
		t.Fatal(err)
	}
	if nodes, _ := s.PEPNodes(ctx, "alice"); len(nodes) != 0 {
		t.Fatalf("nodes after removal: %+v", nodes)
	}
	if items, _ := s.PEPItems(ctx, "alice", "n1", nil, 0); len(items) != 0 {
		t.Fatalf("items after removal: %q", ids(items))
	}
	if v, _ := s.PrivateXML(ctx, "alice", "ns", "a"); v != nil {
		t.Fatalf("private after removal: %q", v)
	}
}

func addTestAccount(t *testing.T, s *SQL, user string) {
	t.Helper()
	if err := s.AddAccount(context.Background(), user, fakeCredentials(1)); err != nil {
		t.Fatal(err)
	}
}
