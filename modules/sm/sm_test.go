package sm

import (
	"testing"
	"time"
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
