package sm

import (
	"bytes"
	"errors"
	"slices"
	"testing"
)

// TestStateRoundTrip: what one node exports (encodeState's form, written
// by Export) another reads back the same, and a damaged or foreign form
// is refused rather than misread.
func TestStateRoundTrip(t *testing.T) {
	st := &state{in: 7, acked: 1<<32 - 1, timeout: 300, resumable: true,
		buf:  []byte(`<message id='1'/><iq id='2' type='get'/>`),
		ents: []ent{{n: 17, at: 1700000000}, {n: 23, at: 1700000001}}}
	copy(st.tok[:], "0123456789abcdef")
	b := encodeState(st)
	got, err := decodeState(b)
	if err != nil {
		t.Fatal(err)
	}
	if got.in != st.in || got.acked != st.acked || got.timeout != st.timeout || got.tok != st.tok ||
		!bytes.Equal(got.buf, st.buf) || !slices.Equal(got.ents, st.ents) || !got.parked || !got.resumable {
		t.Fatalf("read back %+v from %+v", got, st)
	}
	empty, err := decodeState(encodeState(&state{resumable: true}))
	if err != nil || empty.buf != nil || empty.ents != nil {
		t.Fatalf("empty queue read back %+v, %v", empty, err)
	}
	for _, tc := range []struct {
		name string
		b    []byte
	}{
		{"empty", nil},
		{"short", b[:10]},
		{"other version", append([]byte{2}, b[1:]...)},
		{"queue cut", b[:len(b)-1]},
		{"queue longer", append(slices.Clone(b), 'x')},
		{"entries past the end", b[:1+12+16+4+8]},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := decodeState(tc.b); !errors.Is(err, errState) {
				t.Fatalf("decodeState(%q) = %v, want errState", tc.b, err)
			}
		})
	}
}
