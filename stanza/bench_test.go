package stanza

import (
	"fmt"
	"testing"
)

// benchStream is a stream header followed by n typical message stanzas
// separated by newlines, and its close tag.
func benchStream(n int) []byte {
	b := []byte("<?xml version='1.0'?>" + hdr)
	for i := range n {
		b = fmt.Appendf(b, "\n<message xmlns='jabber:client' from='juliet@example.com/balcony' to='romeo@example.net' type='chat' id='msg-%d' xml:lang='en'>"+
			"<body>Wherefore art thou, Romeo? Deny thy father &amp; refuse thy name. ☺</body>"+
			"<active xmlns='http://jabber.org/protocol/chatstates'/><request xmlns='urn:xmpp:receipts'/></message>", i)
	}
	return append(b, "\n</stream:stream>"...)
}

// frameChunks frames in, fed piece bytes at a time (0: all at once), the
// way the server does: each call sees every unconsumed byte.
func frameChunks(b *testing.B, f *Framer, in []byte, piece int) {
	f.Reset()
	start, fed := 0, len(in)
	if piece > 0 {
		fed = min(piece, len(in))
	}
	for start < len(in) {
		tok, err := f.Next(in[start:fed])
		if err != nil {
			b.Fatal(err)
		}
		if tok.Kind == KindNone {
			if fed == len(in) {
				b.Fatal("stream incomplete")
			}
			fed = min(fed+piece, len(in))
			continue
		}
		start += tok.Len
	}
}

func BenchmarkFramer(b *testing.B) {
	in := benchStream(100)
	for _, bc := range []struct {
		name  string
		piece int
	}{{"whole", 0}, {"64B", 64}, {"1B", 1}} {
		b.Run(bc.name, func(b *testing.B) {
			var f Framer
			f.SetLimits(Limits{MaxBytes: 256 << 10, MaxElements: 64, MaxDepth: 16})
			b.SetBytes(int64(len(in)))
			b.ReportAllocs()
			for b.Loop() {
				frameChunks(b, &f, in, bc.piece)
			}
		})
	}
}

func BenchmarkParseStartTag(b *testing.B) {
	elem := []byte("<message xmlns='jabber:client' from='juliet@example.com/balcony' to='romeo@example.net' type='chat' id='msg-1' xml:lang='en'><body>hi</body></message>")
	b.SetBytes(int64(len(elem)))
	b.ReportAllocs()
	for b.Loop() {
		st, err := ParseStartTag(elem)
		if err != nil {
			b.Fatal(err)
		}
		if _, ok := st.Attr("to"); !ok {
			b.Fatal("no to")
		}
		if _, ok := st.Attr("id"); !ok {
			b.Fatal("no id")
		}
	}
}

func BenchmarkUnescape(b *testing.B) {
	raw := []byte("Wherefore art thou, Romeo? Deny thy father &amp; refuse thy name &lt;3 &#x263A;")
	dst := make([]byte, 0, 128)
	b.SetBytes(int64(len(raw)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Unescape(dst[:0], raw); err != nil {
			b.Fatal(err)
		}
	}
}
