package server

import (
	"bytes"
	"context"
	"testing"
	"unsafe"

	"github.com/panjf2000/gnet/v2"
	"mellium.im/xmpp/stream"

	"github.com/krill-xmpp/krill/config"
)

// heldLoop is an event loop that never runs what is posted to it: the
// mailbox of a session on it only fills, as when its loop is stalled.
type heldLoop struct {
	gnet.EventLoop
	posted int
}

func (h *heldLoop) Execute(context.Context, gnet.Runnable) error { h.posted++; return nil }

// TestInboxCap: a session's mailbox holds at most c2s.max_outbound bytes;
// the stanza that does not fit is refused (so Deliver routes it as if the
// session were gone), the session is asked to close with
// resource-constraint, and the overflow is counted.
func TestInboxCap(t *testing.T) {
	cfg := config.Default()
	cfg.C2S.MaxOutbound = 1000
	s := &Server{}
	s.live.Store(&cfg)
	el := &heldLoop{}
	sess := &session{loop: &loop{srv: s, el: el}, local: "ivy", full: "ivy@localhost/r", resOff: 16}
	msg := bytes.Repeat([]byte("x"), 300)
	for i := range 3 {
		if !sess.deliver(nil, msg) {
			t.Fatalf("delivery %d refused under the cap", i)
		}
	}
	if sess.deliver(nil, msg) {
		t.Fatal("a delivery beyond c2s.max_outbound was queued")
	}
	if got := s.stats.inboxOverflow.Load(); got != 1 {
		t.Fatalf("inboxOverflow = %d, want 1", got)
	}
	sess.mu.Lock()
	kick, queued, n := kickCond(sess.kick), sess.inboxBytes, len(sess.inbox)
	sess.mu.Unlock()
	if kick != stream.ResourceConstraint.Err || queued != 900 || n != 3 {
		t.Fatalf("kick %q, %d bytes in %d stanzas; want resource-constraint, 900 in 3", kick, queued, n)
	}
	if el.posted != 1 {
		t.Fatalf("%d drain tasks posted, want 1 (one is enough for the queue and the close)", el.posted)
	}
}

// TestKickCode: every stream condition survives its one-byte code; an
// unknown one becomes undefined-condition.
func TestKickCode(t *testing.T) {
	for _, cond := range streamConditions {
		if got := kickCond(kickCode(cond)); got != cond {
			t.Errorf("kickCond(kickCode(%q)) = %q", cond, got)
		}
	}
	for _, tt := range []struct{ in, want string }{
		{stream.Conflict.Err, "conflict"},
		{stream.SystemShutdown.Err, "system-shutdown"},
		{"no-such-condition", "undefined-condition"},
	} {
		if got := kickCond(kickCode(tt.in)); got != tt.want {
			t.Errorf("kickCond(kickCode(%q)) = %q, want %q", tt.in, got, tt.want)
		}
	}
	if kickCond(0) != "" {
		t.Error("kickCond(0) is not empty")
	}
	if n := unsafe.Sizeof(session{}); n > 192 {
		t.Errorf("session is %d bytes, want at most 192 (a size class parked sessions fill)", n)
	}
}
