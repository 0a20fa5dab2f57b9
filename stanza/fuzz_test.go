package stanza

import (
	"bytes"
	"errors"
	"testing"
	"unsafe"
)

// fuzzRestart is the seed bit that frames the input as a restarted stream
// (after Reset), as after SASL success or STARTTLS.
const fuzzRestart = 1 << 31

// fuzzSetup derives from seed whether to prepend a stream header, the
// limits and the cut points for the split run.
func fuzzSetup(data []byte, seed uint32) (in []byte, lim Limits, cuts []int) {
	in = data
	if seed&1 != 0 {
		in = append([]byte(hdr), data...)
	}
	if seed&2 != 0 {
		lim = Limits{MaxBytes: 64 + int(seed>>8&0x3ff), MaxElements: 1 + int(seed>>4&15), MaxDepth: 1 + int(seed>>2&3)}
	}
	x := seed | 1
	for p := 0; p < len(in) && len(cuts) < 64; {
		x ^= x << 13 // xorshift32
		x ^= x >> 17
		x ^= x << 5
		p += 1 + int(x%17)
		cuts = append(cuts, p)
	}
	return in, lim, cuts
}

func FuzzFramer(f *testing.F) {
	for _, s := range []string{
		"", hdr, " <message><body>hi</body></message></stream:stream>",
		"<a x='1' y=\"2\"><![CDATA[x]]>&lt;&#x41;</a>", "<?xml version='1.0'?>" + hdr,
		"<!DOCTYPE x>", "<a xmlns:p='u'><p:b p:c='1'/></a>", "\xef\xbb\xbf" + hdr,
		"\n<?xml version='1.0'?>" + hdr, "\r\n \t<?xml-stylesheet?>",
	} {
		f.Add([]byte(s), uint32(0))
		f.Add([]byte(s), uint32(1))
		f.Add([]byte(s), uint32(0x1237))
		f.Add([]byte(s), uint32(fuzzRestart))
	}
	f.Fuzz(func(t *testing.T, data []byte, seed uint32) {
		in, lim, cuts := fuzzSetup(data, seed)
		run := frame
		if seed&fuzzRestart != 0 {
			run = frameRestarted
		}
		whole := run(t, in, lim, nil)
		split := run(t, in, lim, cuts)
		if whole.consumed() > len(in) {
			t.Fatalf("tokens cover %d bytes of %d", whole.consumed(), len(in))
		}
		if !equalTokens(whole.toks, split.toks) || whole.cond() != split.cond() || !sameSentinel(whole.err, split.err) {
			t.Fatalf("whole: %v %v; split at %v: %v %v", whole.toks, whole.err, cuts, split.toks, split.err)
		}
		// Every unit the framer yields is accepted by the views.
		off := 0
		for _, tok := range whole.toks {
			unit := in[off : off+tok.Len]
			off += tok.Len
			switch tok.Kind {
			case KindHeader:
				if _, err := ParseHeader(unit); err != nil {
					t.Fatalf("ParseHeader(%q): %v", unit, err)
				}
			case KindElement:
				st, err := ParseStartTag(unit)
				if err != nil || st.Len() > len(unit) {
					t.Fatalf("ParseStartTag(%q) = %v, %v", unit, st.Len(), err)
				}
				if !st.SelfClosing() && Inner(unit) == nil {
					t.Fatalf("Inner(%q) = nil", unit)
				}
				if c, ok := FirstChild(unit); ok && !bytes.Contains(unit, c) {
					t.Fatalf("FirstChild(%q) = %q", unit, c)
				}
			}
		}
	})
}

func equalTokens(a, b []Token) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// within reports whether s is empty or a sub-slice of b.
func within(s, b []byte) bool {
	if len(s) == 0 {
		return true
	}
	if len(b) == 0 {
		return false
	}
	p, lo := uintptr(unsafe.Pointer(unsafe.SliceData(s))), uintptr(unsafe.Pointer(unsafe.SliceData(b)))
	return p >= lo && p+uintptr(len(s)) <= lo+uintptr(len(b))
}

func FuzzViews(f *testing.F) {
	for _, s := range []string{
		"<a/>", "<a x='1' xmlns='u' xml:lang=\"en\">t<b>&lt;</b></a>", "<p:a p:x='&amp;'><![CDATA[<x>]]><c/></p:a>",
		"<a", "<a x='1>", "&#x41;&lt;&bogus;", "<?xml version='1.0'?><stream:stream to='x&amp;y'>",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if st, err := ParseStartTag(data); err == nil {
			if st.Len() > len(data) || !within(st.Local(), data) || !within(st.Prefix(), data) {
				t.Fatalf("bad view of %q", data)
			}
			st.Attrs(func(name, raw []byte) bool {
				if !within(name, data) || !within(raw, data) {
					t.Fatalf("attribute outside %q", data)
				}
				if v, ok := st.Attr(string(name)); !ok || !within(v, data) {
					t.Fatalf("Attr(%q) not found in %q", name, data)
				}
				st.AttrString(string(name))
				return true
			})
		}
		if in := Inner(data); !within(in, data) {
			t.Fatalf("Inner outside %q", data)
		}
		if c, ok := FirstChild(data); ok && !within(c, data) {
			t.Fatalf("FirstChild outside %q", data)
		}
		out, err := Unescape(nil, data)
		if err == nil && bytes.IndexByte(data, '&') < 0 && !bytes.Equal(out, data) {
			t.Fatalf("Unescape changed %q to %q", data, out)
		}
		var fe *FrameError
		if err != nil && !errors.As(err, &fe) {
			t.Fatalf("Unescape error %v is not a *FrameError", err)
		}
		if err == nil {
			// Escaping and unescaping round-trip.
			back, err := Unescape(nil, AppendEscaped(nil, string(out)))
			if err != nil || !bytes.Equal(back, out) {
				t.Fatalf("round trip of %q: %q, %v", out, back, err)
			}
		}
		ParseHeader(data)
	})
}
