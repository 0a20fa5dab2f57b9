package cluster

import (
	"context"
	"encoding/binary"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

// TestKeptResentAndDeduplicated: a kept message published while the
// receiver's inbox has no subscription (a NATS server restarting) is
// published again until acknowledged, and delivered once; a copy of a
// message already taken is acknowledged again but not delivered twice.
func TestKeptResentAndDeduplicated(t *testing.T) {
	url := runNATS(t)
	ctx := context.Background()
	ha, hb := &nopHandler{}, &nopHandler{}
	a, err := Start(ctx, testCluster(url, "a"), Options{Domain: "example.org", Handler: ha})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := Start(ctx, testCluster(url, "b"), Options{Domain: "example.org", Handler: hb})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if !waitFor(func() bool { return a.Stats().Nodes == 2 && b.Stats().Nodes == 2 }) {
		t.Fatal("the nodes did not see each other")
	}

	// b's inbox loses its subscription: what a publishes meanwhile is
	// dropped by NATS.
	if err := b.inbox.Unsubscribe(); err != nil {
		t.Fatal(err)
	}
	if err := b.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	if !a.Send("b", "bob@example.org/r", []byte("<message id='lost'/>"), true) {
		t.Fatal("Send failed")
	}
	if err := a.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	if hb.delivered.Load() != 0 || a.Stats().Pending != 1 {
		t.Fatalf("delivered %d, pending %d before the inbox is back", hb.delivered.Load(), a.Stats().Pending)
	}
	b.inbox, err = b.nc.Subscribe(b.inboxPrefix+"b", b.onInbox)
	if err != nil {
		t.Fatal(err)
	}
	if !waitFor(func() bool { return hb.delivered.Load() == 1 && a.Stats().Pending == 0 }) {
		t.Fatalf("the lost message was not resent: delivered %d, pending %d", hb.delivered.Load(), a.Stats().Pending)
	}
	if resent, _ := a.Resent(); resent == 0 {
		t.Fatal("a counted no resend")
	}

	// A copy of a taken message: acknowledged, not delivered.
	acks := make(chan *nats.Msg, 4)
	reply := "test.acks"
	sub, err := a.nc.ChanSubscribe(reply, acks)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	msg := binary.BigEndian.AppendUint64([]byte{opDeliverAck}, 42)
	msg = binary.BigEndian.AppendUint64(msg, uint64(time.Now().UnixNano())) // publish time
	msg = binary.BigEndian.AppendUint16(msg, uint16(len("bob@example.org/r")))
	msg = append(msg, "bob@example.org/r<message id='twice'/>"...)
	for range 2 {
		if err := a.nc.PublishRequest(b.inboxPrefix+"b", reply, msg); err != nil {
			t.Fatal(err)
		}
		select {
		case m := <-acks:
			if binary.BigEndian.Uint64(m.Data) != 42 {
				t.Fatalf("ack of %x", m.Data)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("no acknowledgement")
		}
	}
	if n := hb.delivered.Load(); n != 2 {
		t.Fatalf("delivered %d, want 2 (the resent one, the copied one once)", n)
	}
	if _, dups := b.Resent(); dups != 1 {
		t.Fatalf("b dropped %d copies, want 1", dups)
	}
}

// dupStep is a kept message from a sender, and whether it is a copy.
type dupStep struct {
	from string
	seq  uint64
	dup  bool
}

// TestDuplicateWindow: the receiver's window over one sender's sequence
// numbers, numbers to other nodes skipped (gaps), a copy recognised, one
// too old to tell delivered, a new incarnation (numbers from the clock,
// far above) starting afresh, and two senders kept apart.
func TestDuplicateWindow(t *testing.T) {
	const base = 1 << 40
	for _, tc := range []struct {
		name  string
		steps []dupStep
	}{
		{"in order, then a copy", []dupStep{{"a", base, false}, {"a", base + 1, false}, {"a", base + 2, false}, {"a", base + 1, true}, {"a", base + 2, true}}},
		{"gaps, late arrival, copy of it", []dupStep{{"a", base, false}, {"a", base + 5, false}, {"a", base + 3, false}, {"a", base + 3, true}, {"a", base + 4, false}, {"a", base + 5, true}}},
		{"too old to tell", []dupStep{{"a", base, false}, {"a", base + dupWindow, false}, {"a", base, false}, {"a", base + 1, false}}},
		{"wrapped window forgets what it passed", []dupStep{{"a", base, false}, {"a", base + dupWindow - 1, false}, {"a", base + 1, false}, {"a", base + dupWindow - 1, true}}},
		{"new incarnation", []dupStep{{"a", base, false}, {"a", base + 1, false}, {"a", 2 * base, false}, {"a", 2*base + 1, false}, {"a", 2 * base, true}}},
		{"senders apart", []dupStep{{"a", base, false}, {"b", base, false}, {"a", base, true}, {"b", base, true}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := &Node{}
			for i, s := range tc.steps {
				if got := n.duplicate("krill.x.ack."+s.from, s.seq); got != s.dup {
					t.Fatalf("step %d (%s, %d): duplicate %v, want %v", i, s.from, s.seq-base, got, s.dup)
				}
			}
		})
	}
	if (&Node{}).duplicate("", 1) {
		t.Fatal("a message without a reply subject was taken as a copy")
	}
}
