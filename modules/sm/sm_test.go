package sm

import (
	"slices"
	"testing"
	"time"
	"unsafe"

	"github.com/krill-xmpp/krill/modules/internal/imtest"
)

// TestTrim: acks trim the queue by count, with the counters wrapping at
// 2^32 (XEP-0198 4), and an ack beyond what was sent is refused.
func TestTrim(t *testing.T) {
	for _, tc := range []struct {
		name    string
		acked   uint32
		queued  int
		h       uint32
		ok      bool
		left    int
		leftBuf string
	}{
		{"none", 10, 3, 10, true, 3, "abc"},
		{"some", 10, 3, 12, true, 1, "c"},
		{"all", 10, 3, 13, true, 0, ""},
		{"too many", 10, 3, 14, false, 3, "abc"},
		{"behind", 10, 3, 9, false, 3, "abc"},
		{"wrap", 1<<32 - 2, 3, 0, true, 1, "c"},
		{"wrap all", 1<<32 - 2, 3, 1, true, 0, ""},
		{"wrap too many", 1<<32 - 2, 3, 2, false, 3, "abc"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := &state{acked: tc.acked}
			for i := 0; i < tc.queued; i++ {
				st.buf = append(st.buf, byte('a'+i))
				st.ents = append(st.ents, ent{n: 1})
			}
			if ok := st.trim(tc.h); ok != tc.ok {
				t.Fatalf("trim(%d) = %v", tc.h, ok)
			}
			if len(st.ents) != tc.left || string(st.buf) != tc.leftBuf {
				t.Fatalf("left %d %q; want %d %q", len(st.ents), st.buf, tc.left, tc.leftBuf)
			}
			if tc.ok && st.acked != tc.h {
				t.Fatalf("acked %d; want %d", st.acked, tc.h)
			}
		})
	}
}

// TestWithDelay: messages and presence get a delay stamp, iq does not.
func TestWithDelay(t *testing.T) {
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, tc := range []struct{ in, want string }{
		{`<message to='a@b/c'><body>x</body></message>`, `<message to='a@b/c'><body>x</body><delay xmlns='urn:xmpp:delay' from='b' stamp='2026-01-02T03:04:05Z'/></message>`},
		{`<presence from='d@b/e'/>`, `<presence from='d@b/e'><delay xmlns='urn:xmpp:delay' from='b' stamp='2026-01-02T03:04:05Z'/></presence>`},
		{`<iq type='get' id='1'><ping xmlns='urn:xmpp:ping'/></iq>`, `<iq type='get' id='1'><ping xmlns='urn:xmpp:ping'/></iq>`},
	} {
		if got := string(withDelay([]byte(tc.in), "b", at)); got != tc.want {
			t.Errorf("withDelay(%q)\n got %q\nwant %q", tc.in, got, tc.want)
		}
	}
}

// TestLists: the parked list keeps the order of parking, an account's
// list keeps its parked sessions in that order too (a session moves to
// its end when it parks), and leaving or unparking in any position keeps
// both consistent. A parked session's state fits 128 bytes.
func TestLists(t *testing.T) {
	if n := unsafe.Sizeof(state{}); n > 128 {
		t.Errorf("state is %d bytes, want at most 128", n)
	}
	h := imtest.NewHost()
	m := &Module{accounts: map[string]*state{}}
	a1, a2, a3 := &state{sess: h.Bind("ann", "1")}, &state{sess: h.Bind("ann", "2")}, &state{sess: h.Bind("ann", "3")}
	b1 := &state{sess: h.Bind("ben", "1")}
	account := func(local string) []*state {
		var l []*state
		for p := m.accounts[local]; p != nil && len(l) < 10; p = p.anext {
			l = append(l, p)
		}
		return l
	}
	parked := func() []*state {
		var l []*state
		for p := m.head; p != nil && len(l) < 10; p = p.next {
			l = append(l, p)
		}
		return l
	}
	for _, st := range []*state{a1, a2, a3, b1} {
		m.joinLocked(st)
	}
	m.parkLocked(a2)
	m.parkLocked(b1)
	m.parkLocked(a1)
	if got := account("ann"); !slices.Equal(got, []*state{a3, a2, a1}) {
		t.Fatalf("ann's list %v, want a3 a2 a1", got)
	}
	if got := parked(); !slices.Equal(got, []*state{a2, b1, a1}) || m.parked != 3 || m.tail != a1 {
		t.Fatalf("parked %v (%d, tail %p), want a2 b1 a1", got, m.parked, m.tail)
	}
	m.unparkLocked(b1) // the middle
	m.leaveLocked(b1)
	if got := parked(); !slices.Equal(got, []*state{a2, a1}) || m.accounts["ben"] != nil {
		t.Fatalf("parked %v, ben %v", got, m.accounts["ben"])
	}
	m.leaveLocked(a2) // the middle of ann's
	m.unparkLocked(a2)
	m.unparkLocked(a2) // twice is a no-op
	if got := account("ann"); !slices.Equal(got, []*state{a3, a1}) {
		t.Fatalf("ann's list %v, want a3 a1", got)
	}
	if got := parked(); !slices.Equal(got, []*state{a1}) || m.head != a1 || m.tail != a1 || m.parked != 1 {
		t.Fatalf("parked %v, want a1 alone", got)
	}
	m.leaveLocked(a3) // the head
	m.leaveLocked(a1)
	m.unparkLocked(a1)
	if len(m.accounts) != 0 || m.head != nil || m.tail != nil || m.parked != 0 {
		t.Fatalf("left %v, head %p, tail %p, %d parked", m.accounts, m.head, m.tail, m.parked)
	}
}
