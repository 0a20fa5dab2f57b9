package cluster

import (
	"context"
	"sync"
	"testing"
	"time"
)

// startLeased starts a node of the test cluster with its leases; what is
// forwarded to it goes to got.
func startLeased(t *testing.T, url, name string, got chan<- string) (*Node, *Leases) {
	t.Helper()
	n, err := Start(context.Background(), testCluster(url, name), Options{Domain: "example.org", Handler: &nopHandler{}})
	if err != nil {
		t.Fatal(err)
	}
	l, err := StartLeases(context.Background(), n, func(_ time.Time, origin string, hops int, from string, b []byte) {
		got <- origin + " " + from + " " + string(b)
	})
	if err != nil {
		n.Close()
		t.Fatal(err)
	}
	return n, l
}

// TestClusterLeaseContention: two nodes needing the same room at once agree on
// one holder; the other forwards to it; the holder's death hands the
// lease to the next taker (a takeover); a release lets the other take it
// anew.
func TestClusterLeaseContention(t *testing.T) {
	url := runNATS(t)
	ga, gb := make(chan string, 16), make(chan string, 16)
	a, la := startLeased(t, url, "a", ga)
	defer a.Close()
	b, lb := startLeased(t, url, "b", gb)
	defer b.Close()
	defer lb.Close()
	if !waitFor(func() bool { return a.alive("b", b.inc) && b.alive("a", a.inc) }) {
		t.Fatal("the nodes never heard each other")
	}
	ctx := context.Background()
	for _, room := range []string{"r1", "r2", "r3", "r4"} {
		owners := make([]string, 8)
		var wg sync.WaitGroup
		for i := range owners {
			wg.Add(1)
			go func() {
				defer wg.Done()
				l := la
				if i%2 == 1 {
					l = lb
				}
				o, err := l.Take(ctx, "muc", room)
				if err != nil {
					t.Errorf("Take: %v", err)
				}
				owners[i] = o
			}()
		}
		wg.Wait()
		for _, o := range owners[1:] {
			if o != owners[0] || o == "" {
				t.Fatalf("room %s: owners %q", room, owners)
			}
		}
		for _, l := range []*Leases{la, lb} {
			if !waitFor(func() bool { return l.Owner("muc", room) == owners[0] }) {
				t.Fatalf("room %s: %s's copy says %q, want %q", room, l.n.name, l.Owner("muc", room), owners[0])
			}
		}
	}
	if st := la.Stats().Taken + lb.Stats().Taken; st != 4 {
		t.Fatalf("%d leases taken for 4 rooms", st)
	}

	// Forwarding to the holder, in order.
	if !lb.Forward("a", "b", "bob@example.org/x", []byte("<message to='r1@muc.example.org' id='1'/>"), 0) ||
		!lb.Forward("a", "b", "bob@example.org/x", []byte("<message to='r1@muc.example.org' id='2'/>"), 0) {
		t.Fatal("Forward failed")
	}
	for _, want := range []string{"b bob@example.org/x <message to='r1@muc.example.org' id='1'/>", "b bob@example.org/x <message to='r1@muc.example.org' id='2'/>"} {
		select {
		case got := <-ga:
			if got != want {
				t.Fatalf("forwarded %q, want %q", got, want)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("nothing forwarded")
		}
	}

	// A release: the other node takes it anew (not a takeover).
	held := "a"
	if la.Owner("muc", "r1") != "a" {
		held = "b"
	}
	hl, other := la, lb
	if held == "b" {
		hl, other = lb, la
	}
	hl.Release("muc", "r1")
	if !waitFor(func() bool { return other.Owner("muc", "r1") == "" }) {
		t.Fatal("the release was not seen")
	}
	if o, err := other.Take(ctx, "muc", "r1"); err != nil || o != other.n.name {
		t.Fatalf("after the release: %q, %v", o, err)
	}

	// a crashes: what it held goes to b once a is found dead.
	var aHeld []string
	for _, room := range []string{"r1", "r2", "r3", "r4"} {
		if lb.Owner("muc", room) == "a" {
			aHeld = append(aHeld, room)
		}
	}
	if len(aHeld) == 0 {
		if o, err := la.Take(ctx, "muc", "r5"); err != nil || o != "a" {
			t.Fatalf("a taking r5: %q, %v", o, err)
		}
		aHeld = []string{"r5"}
	}
	la.cancel()
	a.Abandon()
	if !waitFor(func() bool { return !b.alive("a", a.inc) }) {
		t.Fatal("a was never found dead")
	}
	for _, room := range aHeld {
		if o := lb.Owner("muc", room); o != "" {
			t.Fatalf("room %s still owned by %q", room, o)
		}
		if o, err := lb.Take(ctx, "muc", room); err != nil || o != "b" {
			t.Fatalf("takeover of %s: %q, %v", room, o, err)
		}
	}
	if st := lb.Stats(); st.Takeovers != uint64(len(aHeld)) {
		t.Fatalf("%d takeovers, want %d", st.Takeovers, len(aHeld))
	}
}
