package stanza

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"unsafe"
)

const hdr = `<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='example.com' version='1.0'>`

// outcome is what a Framer made of an input: the tokens (adjacent
// whitespace tokens merged, since a run is reported up to the end of each
// feed) and the first error.
type outcome struct {
	toks []Token
	err  error
}

func (o outcome) cond() string {
	if o.err == nil {
		return ""
	}
	return Condition(o.err)
}

func (o outcome) consumed() int {
	n := 0
	for _, t := range o.toks {
		n += t.Len
	}
	return n
}

func (o outcome) kinds() []Kind {
	var k []Kind
	for _, t := range o.toks {
		k = append(k, t.Kind)
	}
	return k
}

// frame feeds in to a fresh Framer in pieces ending at the given cut
// offsets, the way the server does with gnet's inbound buffer: each call
// sees every unconsumed byte.
func frame(t testing.TB, in []byte, lim Limits, cuts []int) outcome {
	var f Framer
	f.SetLimits(lim)
	return frameOn(t, &f, in, lim, cuts)
}

// frameRestarted is frame on a Framer that has framed a stream and been
// Reset, as after SASL success or STARTTLS.
func frameRestarted(t testing.TB, in []byte, lim Limits, cuts []int) outcome {
	var f Framer
	if tok, err := f.Next([]byte(hdr)); err != nil || tok.Kind != KindHeader {
		t.Fatalf("first header: %v, %v", tok, err)
	}
	f.Reset()
	f.SetLimits(lim)
	return frameOn(t, &f, in, lim, cuts)
}

// frameOn feeds in to f, cut at cuts, as frame describes.
func frameOn(t testing.TB, f *Framer, in []byte, lim Limits, cuts []int) outcome {
	var o outcome
	pending := []byte{}
	fed := 0
	for _, cut := range append(cuts, len(in)) {
		if cut < fed || cut > len(in) {
			continue
		}
		pending = append(pending, in[fed:cut]...)
		fed = cut
		for range len(in) + 1 { // each iteration consumes a byte or breaks
			tok, err := f.Next(pending)
			if err != nil {
				o.err = err
				if err2 := nextErr(f, pending); !errors.Is(err2, err) {
					t.Errorf("dead framer returned %v, want %v", err2, err)
				}
				return o
			}
			if tok.Kind == KindNone {
				if f.Scanned() != len(pending) && !(lim.MaxBytes > 0 && f.Scanned() == lim.MaxBytes) {
					t.Errorf("Scanned() = %d after KindNone, want %d", f.Scanned(), len(pending))
				}
				break
			}
			if tok.Len <= 0 || tok.Len > len(pending) {
				t.Fatalf("token %v out of range of %d pending bytes", tok, len(pending))
			}
			if n := len(o.toks); n > 0 && tok.Kind == KindWhitespace && o.toks[n-1].Kind == KindWhitespace {
				o.toks[n-1].Len += tok.Len
			} else {
				o.toks = append(o.toks, tok)
			}
			pending = pending[tok.Len:]
		}
	}
	return o
}

func nextErr(f *Framer, b []byte) error {
	_, err := f.Next(b)
	return err
}

// frameAllSplits frames in whole, one byte at a time and at every 2-way
// split, failing the test unless all give the same tokens and condition.
func frameAllSplits(t *testing.T, in []byte, lim Limits) outcome {
	t.Helper()
	whole := frame(t, in, lim, nil)
	check := func(how string, o outcome) {
		t.Helper()
		if !slices.Equal(o.toks, whole.toks) || o.cond() != whole.cond() || !sameSentinel(o.err, whole.err) {
			t.Fatalf("%s: got %v %v, whole input gave %v %v", how, o.toks, o.err, whole.toks, whole.err)
		}
	}
	ones := make([]int, len(in))
	for i := range ones {
		ones[i] = i
	}
	check("byte at a time", frame(t, in, lim, ones))
	for i := 1; i < len(in); i++ {
		check("split", frame(t, in, lim, []int{i}))
	}
	return whole
}

func sameSentinel(a, b error) bool {
	var ea, eb *FrameError
	if errors.As(a, &ea) != errors.As(b, &eb) {
		return false
	}
	return ea == nil || ea.Err == eb.Err && ea.Offset == eb.Offset
}

func readTestdata(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

const (
	H = KindHeader
	E = KindElement
	W = KindWhitespace
	C = KindClose
)

func TestFramerValid(t *testing.T) {
	tests := []struct {
		name  string
		in    string // inline input, or
		file  string // a file under testdata
		kinds []Kind
	}{
		{name: "header only", in: hdr, kinds: []Kind{H}},
		{name: "xml declaration", in: `<?xml version="1.0"?>` + hdr, kinds: []Kind{H}},
		{name: "xml declaration and whitespace", in: "<?xml version='1.0' encoding='utf-8' standalone='yes' ?>\r\n\t" + hdr, kinds: []Kind{H}},
		{name: "utf-8 bom", in: "\uFEFF<?xml version='1.0'?>" + hdr, kinds: []Kind{H}},
		{name: "leading whitespace", in: "\n " + hdr, kinds: []Kind{H}},
		{name: "close", in: hdr + "</stream:stream>", kinds: []Kind{H, C}},
		{name: "close with space", in: hdr + "</stream:stream \n>", kinds: []Kind{H, C}},
		{name: "whitespace after close", in: hdr + "</stream:stream>\n \n", kinds: []Kind{H, C, W}},
		{name: "keepalives", in: hdr + " <presence/>\n\n<presence/> ", kinds: []Kind{H, W, E, W, E, W}},
		{name: "nested", in: hdr + "<a><b><c/></b><b>x</b></a>", kinds: []Kind{H, E}},
		{name: "both quotes", in: hdr + `<a x='"' y="'" z = 'v' />`, kinds: []Kind{H, E}},
		{name: "gt in attribute", in: hdr + `<a x='a>b' y="]]>"/>`, kinds: []Kind{H, E}},
		{name: "entities", in: hdr + `<a x='&lt;&gt;&amp;&apos;&quot;&#60;&#x3c;&#x3C;'>&lt;&#x10FFFF;&#9;</a>`, kinds: []Kind{H, E}},
		{name: "gt in text", in: hdr + `<a>a > b ]> ]</a>`, kinds: []Kind{H, E}},
		{name: "cdata", in: hdr + `<a><![CDATA[<b>&foo;]]]]><![CDATA[]]></a>`, kinds: []Kind{H, E}},
		{name: "multi-byte", in: hdr + "<a é='ü'>日本語 😀<ü:x xmlns:ü='u'/></a>", kinds: []Kind{H, E}},
		{name: "xml prefix", in: hdr + `<a xml:lang='en'/>`, kinds: []Kind{H, E}},
		{name: "prefix from header", in: hdr + `<stream:features/>`, kinds: []Kind{H, E}},
		{name: "redeclared prefix", in: hdr + `<a xmlns:p='1'><p:b xmlns:p='2'/><p:c/></a>`, kinds: []Kind{H, E}},
		{name: "attribute declared after use", in: hdr + `<a p:x='1' xmlns:p='u'/>`, kinds: []Kind{H, E}},
		{name: "del and c1 chars", in: hdr + "<a>\x7f\u0085</a>", kinds: []Kind{H, E}},
		{name: "client stream", file: "client_stream.xml", kinds: []Kind{H, W, E, W, E, W, E, W, E, W, E, W, E, W, C, W}},
		{name: "prefixed stream", file: "prefixed.xml", kinds: []Kind{H, E, E, C, W}},
		{name: "deep and spaced", file: "deep.xml", kinds: []Kind{H, E, E, C, W}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := []byte(tt.in)
			if tt.file != "" {
				in = readTestdata(t, tt.file)
			}
			o := frameAllSplits(t, in, Limits{})
			if o.err != nil {
				t.Fatalf("error %v after %v", o.err, o.toks)
			}
			if !slices.Equal(o.kinds(), tt.kinds) {
				t.Errorf("kinds = %v, want %v", o.kinds(), tt.kinds)
			}
			if o.consumed() != len(in) {
				t.Errorf("consumed %d of %d bytes", o.consumed(), len(in))
			}
		})
	}
}

func TestFramerTokenBytes(t *testing.T) {
	in := []byte(hdr + " <message><body>hi</body></message></stream:stream>")
	o := frame(t, in, Limits{}, nil)
	want := []string{hdr, " ", "<message><body>hi</body></message>", "</stream:stream>"}
	var got []string
	off := 0
	for _, tok := range o.toks {
		got = append(got, string(in[off:off+tok.Len]))
		off += tok.Len
	}
	if !slices.Equal(got, want) || o.err != nil {
		t.Errorf("units = %q, %v; want %q", got, o.err, want)
	}
}

func TestFramerReject(t *testing.T) {
	big := hdr + "<message>" + string(bytes.Repeat([]byte("x"), 200)) + "</message>"
	tests := []struct {
		name string
		in   string
		lim  Limits
		err  error
		cond string
	}{
		// not-well-formed (RFC 6120 4.9.3.13)
		{"mismatched end tag", hdr + "<a><b></a></b>", Limits{}, ErrMismatchedTag, "not-well-formed"},
		{"end tag longer", hdr + "<a></ab>", Limits{}, ErrMismatchedTag, "not-well-formed"},
		{"end tag shorter", hdr + "<ab></a>", Limits{}, ErrMismatchedTag, "not-well-formed"},
		{"end tag without open element", hdr + "</a>", Limits{}, ErrMismatchedTag, "not-well-formed"},
		{"close inside element", hdr + "<a></stream:stream>", Limits{}, ErrMismatchedTag, "not-well-formed"},
		{"wrong close", hdr + "</stream:streams>", Limits{}, ErrMismatchedTag, "not-well-formed"},
		{"text between stanzas", hdr + "<a/>hello<b/>", Limits{}, ErrSyntax, "not-well-formed"},
		{"missing quotes", hdr + "<a x=1/>", Limits{}, ErrSyntax, "not-well-formed"},
		{"missing equals", hdr + "<a x '1'/>", Limits{}, ErrSyntax, "not-well-formed"},
		{"no space between attributes", hdr + "<a x='1'y='2'/>", Limits{}, ErrSyntax, "not-well-formed"},
		{"duplicate attribute", hdr + "<a x='1' y='2' x='3'/>", Limits{}, ErrDuplicateAttr, "not-well-formed"},
		{"duplicate xmlns", hdr + "<a xmlns='a' xmlns='b'/>", Limits{}, ErrDuplicateAttr, "not-well-formed"},
		{"lt in attribute", hdr + "<a x='<'/>", Limits{}, ErrSyntax, "not-well-formed"},
		{"invalid name start", hdr + "<1a/>", Limits{}, ErrSyntax, "not-well-formed"},
		{"invalid name char", hdr + "<a\\b/>", Limits{}, ErrSyntax, "not-well-formed"},
		{"empty name", hdr + "< a/>", Limits{}, ErrSyntax, "not-well-formed"},
		{"double colon", hdr + "<a:b:c/>", Limits{}, ErrSyntax, "not-well-formed"},
		{"trailing colon", hdr + "<a: x='1'/>", Limits{}, ErrSyntax, "not-well-formed"},
		{"digit after colon", hdr + "<a:1/>", Limits{}, ErrSyntax, "not-well-formed"},
		{"cdata end in text", hdr + "<a>]]></a>", Limits{}, ErrSyntax, "not-well-formed"},
		{"bare ampersand", hdr + "<a>&</a>", Limits{}, ErrSyntax, "not-well-formed"},
		{"unterminated entity", hdr + "<a>&lt </a>", Limits{}, ErrSyntax, "not-well-formed"},
		{"empty hex char ref", hdr + "<a>&#x;</a>", Limits{}, ErrSyntax, "not-well-formed"},
		{"cdata at top level", hdr + "<![CDATA[x]]>", Limits{}, ErrSyntax, "not-well-formed"},
		{"self-closing header", "<stream:stream xmlns:stream='http://etherx.jabber.org/streams'/>", Limits{}, ErrSyntax, "not-well-formed"},
		{"element before header", "<message/>" + hdr, Limits{}, ErrSyntax, "not-well-formed"},
		{"open element before header", "<message to='x'><body/></message>" + hdr, Limits{}, ErrNoHeader, "not-well-formed"},
		{"header in wrong namespace", "<stream:stream xmlns:stream='jabber:client'>", Limits{}, ErrInvalidNamespace, "invalid-namespace"},
		{"header without namespace", "<stream>", Limits{}, ErrInvalidNamespace, "invalid-namespace"},
		{"uppercase hex char ref", hdr + "<a>&#X3C;</a>", Limits{}, ErrSyntax, "not-well-formed"},
		{"space inside empty-element tag", hdr + "<a / >", Limits{}, ErrSyntax, "not-well-formed"},
		{"end tag before header", "</stream:stream>", Limits{}, ErrNoHeader, "not-well-formed"},
		{"text before header", "hello" + hdr, Limits{}, ErrNoHeader, "not-well-formed"},
		{"element after close", hdr + "</stream:stream><a/>", Limits{}, ErrAfterClose, "not-well-formed"},
		{"text after close", hdr + "</stream:stream> x", Limits{}, ErrAfterClose, "not-well-formed"},
		{"xmlns undeclare", hdr + "<a xmlns:p=''/>", Limits{}, ErrSyntax, "not-well-formed"},
		{"bind xmlns prefix", hdr + "<a xmlns:xmlns='u'/>", Limits{}, ErrSyntax, "not-well-formed"},
		{"bad xml declaration", "<?xml encoding='UTF-8'?>" + hdr, Limits{}, ErrSyntax, "not-well-formed"},
		// namespace well-formedness (RFC 6120 11.2)
		{"undeclared element prefix", hdr + "<p:a/>", Limits{}, ErrUndeclaredPrefix, "not-well-formed"},
		{"undeclared attribute prefix", hdr + "<a p:x='1'/>", Limits{}, ErrUndeclaredPrefix, "not-well-formed"},
		{"prefix out of scope", hdr + "<a><b xmlns:p='u'/><p:c/></a>", Limits{}, ErrUndeclaredPrefix, "not-well-formed"},
		{"prefix out of scope after stanza", hdr + "<a xmlns:p='u'/><p:b/>", Limits{}, ErrUndeclaredPrefix, "not-well-formed"},
		{"undeclared header prefix", "<stream:stream xmlns='http://etherx.jabber.org/streams'>", Limits{}, ErrUndeclaredPrefix, "not-well-formed"},
		{"too many declarations", hdr + "<a" + decls(maxDecls+1) + "/>", Limits{}, ErrTooManyDecls, "policy-violation"},
		{"too many attributes", hdr + "<a" + attrs(maxAttrs+1) + "/>", Limits{}, ErrTooManyAttrs, "policy-violation"},
		// restricted XML (RFC 6120 11.1)
		{"doctype", "<?xml version='1.0'?><!DOCTYPE stream>" + hdr, Limits{}, ErrDTD, "restricted-xml"},
		{"entity declaration in stream", hdr + "<!ENTITY x 'y'>", Limits{}, ErrDTD, "restricted-xml"},
		{"comment before header", "<!-- hi -->" + hdr, Limits{}, ErrComment, "restricted-xml"},
		{"comment between stanzas", hdr + "<!-- hi -->", Limits{}, ErrComment, "restricted-xml"},
		{"comment in stanza", hdr + "<a><!-- hi --></a>", Limits{}, ErrComment, "restricted-xml"},
		{"pi before header", "<?xml-stylesheet href='x'?>" + hdr, Limits{}, ErrProcInst, "restricted-xml"},
		{"second xml declaration", "<?xml version='1.0'?><?xml version='1.0'?>" + hdr, Limits{}, ErrProcInst, "restricted-xml"},
		{"xml declaration after whitespace", " <?xml version='1.0'?>" + hdr, Limits{}, ErrProcInst, "restricted-xml"},
		{"pi between stanzas", hdr + "<?foo?>", Limits{}, ErrProcInst, "restricted-xml"},
		{"pi in stanza", hdr + "<a><?foo?></a>", Limits{}, ErrProcInst, "restricted-xml"},
		{"xml declaration in stream", hdr + "<?xml version='1.0'?>", Limits{}, ErrProcInst, "restricted-xml"},
		{"entity in text", hdr + "<a>&nbsp;</a>", Limits{}, ErrEntity, "restricted-xml"},
		{"entity in attribute", hdr + "<a x='&foo;'/>", Limits{}, ErrEntity, "restricted-xml"},
		{"long entity name", hdr + "<a>&aVeryLongEntityName", Limits{}, ErrEntity, "restricted-xml"},
		// encoding (RFC 6120 11.6)
		{"overlong", hdr + "<a>\xc0\xaf</a>", Limits{}, ErrInvalidUTF8, "not-well-formed"},
		{"overlong 3 byte", hdr + "<a>\xe0\x80\xaf</a>", Limits{}, ErrInvalidUTF8, "not-well-formed"},
		{"surrogate", hdr + "<a>\xed\xa0\x80</a>", Limits{}, ErrInvalidUTF8, "not-well-formed"},
		{"above max rune", hdr + "<a>\xf4\x90\x80\x80</a>", Limits{}, ErrInvalidUTF8, "not-well-formed"},
		{"truncated sequence", hdr + "<a>\xe6\x97</a>", Limits{}, ErrInvalidUTF8, "not-well-formed"},
		{"stray continuation", hdr + "<a x='\x80'/>", Limits{}, ErrInvalidUTF8, "not-well-formed"},
		{"invalid utf-8 in name", hdr + "<a\xff/>", Limits{}, ErrInvalidUTF8, "not-well-formed"},
		{"control char", hdr + "<a>\x01</a>", Limits{}, ErrInvalidChar, "not-well-formed"},
		{"nul in attribute", hdr + "<a x='\x00'/>", Limits{}, ErrInvalidChar, "not-well-formed"},
		{"U+FFFE", hdr + "<a>\uFFFE</a>", Limits{}, ErrInvalidChar, "not-well-formed"},
		{"char ref to nul", hdr + "<a>&#0;</a>", Limits{}, ErrInvalidChar, "not-well-formed"},
		{"char ref to FFFF", hdr + "<a>&#xFFFF;</a>", Limits{}, ErrInvalidChar, "not-well-formed"},
		{"char ref to surrogate", hdr + "<a>&#xD800;</a>", Limits{}, ErrInvalidChar, "not-well-formed"},
		{"char ref too big", hdr + "<a>&#x1100000000000;</a>", Limits{}, ErrInvalidChar, "not-well-formed"},
		{"encoding latin1", "<?xml version='1.0' encoding='ISO-8859-1'?>" + hdr, Limits{}, ErrUnsupportedEncoding, "unsupported-encoding"},
		{"utf-16 be bom", "\xfe\xff\x00<", Limits{}, ErrUnsupportedEncoding, "unsupported-encoding"},
		{"utf-16 le bom", "\xff\xfe<\x00", Limits{}, ErrUnsupportedEncoding, "unsupported-encoding"},
		{"utf-32 be bom", "\x00\x00\xfe\xff", Limits{}, ErrUnsupportedEncoding, "unsupported-encoding"},
		{"utf-16 le without bom", "<\x00?\x00", Limits{}, ErrUnsupportedEncoding, "unsupported-encoding"},
		// limits (policy-violation)
		{"too large", big, Limits{MaxBytes: 100}, ErrTooLarge, "policy-violation"},
		{"header too large", hdr, Limits{MaxBytes: 50}, ErrTooLarge, "policy-violation"},
		{"too many elements", hdr + "<a><b/><c/><d/></a>", Limits{MaxElements: 3}, ErrTooManyElements, "policy-violation"},
		{"too deep", hdr + "<a><b><c/></b></a>", Limits{MaxDepth: 2}, ErrTooDeep, "policy-violation"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := frameAllSplits(t, []byte(tt.in), tt.lim)
			if !errors.Is(o.err, tt.err) {
				t.Fatalf("error = %v, want %v", o.err, tt.err)
			}
			if got := Condition(o.err); got != tt.cond {
				t.Errorf("Condition = %q, want %q", got, tt.cond)
			}
		})
	}
}

func decls(n int) string {
	var b []byte
	for i := range n {
		b = append(b, " xmlns:p"...)
		b = append(b, byte('a'+i/26), byte('a'+i%26))
		b = append(b, "='u'"...)
	}
	return string(b)
}

func attrs(n int) string {
	var b []byte
	for i := range n {
		b = append(b, " a"...)
		b = append(b, byte('a'+i/26), byte('a'+i%26))
		b = append(b, "='v'"...)
	}
	return string(b)
}

func TestFramerLimitsAllowExact(t *testing.T) {
	st := "<a><b><c/></b></a>"
	lim := Limits{MaxBytes: len(st), MaxElements: 3, MaxDepth: 3}
	var f Framer
	if _, err := f.Next([]byte(hdr)); err != nil {
		t.Fatal(err)
	}
	f.SetLimits(lim) // limits may change between tokens
	tok, err := f.Next([]byte(st + "<x/>"))
	if err != nil || tok != (Token{KindElement, len(st)}) {
		t.Fatalf("Next = %v, %v", tok, err)
	}
}

func TestFramerLargeRefusedEarly(t *testing.T) {
	var f Framer
	f.SetLimits(Limits{MaxBytes: 8192})
	if _, err := f.Next([]byte(hdr)); err != nil {
		t.Fatal(err)
	}
	// A huge element is refused once MaxBytes is reached, not at its end.
	buf := append([]byte("<message><body>"), bytes.Repeat([]byte("a"), 8192)...)
	_, err := f.Next(buf)
	var fe *FrameError
	if !errors.As(err, &fe) || fe.Err != ErrTooLarge || fe.Offset != int64(len(hdr)+8192) {
		t.Fatalf("err = %v, want ErrTooLarge at %d", err, len(hdr)+8192)
	}
}

func TestFramerResumesWithoutRescan(t *testing.T) {
	var f Framer
	in := []byte(hdr + "<message><body>héllo</body></message>")
	for i := 1; i < len(in); i++ {
		tok, err := f.Next(in[:i])
		if err != nil || tok.Kind != KindNone {
			t.Fatalf("Next(%d bytes) = %v, %v", i, tok, err)
		}
		if f.Scanned() != i {
			t.Fatalf("Scanned() = %d, want %d", f.Scanned(), i)
		}
		if i == len(hdr)-1 {
			in = in[:]
		}
		if i == len(hdr)-1 {
			tok, _ := f.Next(in[:i+1])
			if tok.Kind != KindHeader {
				t.Fatalf("header not found: %v", tok)
			}
			in = in[len(hdr):]
			break
		}
	}
	for i := 1; i <= len(in); i++ {
		tok, err := f.Next(in[:i])
		if err != nil {
			t.Fatal(err)
		}
		if want := i == len(in); (tok.Kind == KindElement) != want {
			t.Fatalf("Next(%d of %d bytes) = %v", i, len(in), tok)
		}
	}
}

func TestFramerDeadAfterError(t *testing.T) {
	var f Framer
	_, err := f.Next([]byte("<!-- x -->"))
	if !errors.Is(err, ErrComment) {
		t.Fatalf("err = %v", err)
	}
	if _, err2 := f.Next([]byte(hdr)); err2 != err {
		t.Fatalf("second Next = %v, want the same error %v", err2, err)
	}
	f.Reset()
	if tok, err := f.Next([]byte(hdr)); err != nil || tok.Kind != KindHeader {
		t.Fatalf("after Reset: %v, %v", tok, err)
	}
}

func TestFramerBufferShrunk(t *testing.T) {
	var f Framer
	if _, err := f.Next([]byte("<stream")); err != nil {
		t.Fatal(err)
	}
	_, err := f.Next([]byte("<st"))
	if !errors.Is(err, ErrBufferShrunk) || Condition(err) != "internal-server-error" {
		t.Fatalf("err = %v", err)
	}
}

func TestFramerReset(t *testing.T) {
	var f Framer
	f.SetLimits(Limits{MaxBytes: 1000})
	in := []byte(hdr + "<auth/>")
	for _, want := range []Kind{KindHeader, KindElement} {
		tok, err := f.Next(in)
		if err != nil || tok.Kind != want {
			t.Fatalf("Next = %v, %v; want %v", tok, err, want)
		}
		in = in[tok.Len:]
	}
	f.Reset() // stream restart: a new header, with an XML declaration, is expected
	in = []byte("<?xml version='1.0'?>" + hdr)
	if tok, err := f.Next(in); err != nil || tok.Kind != KindHeader {
		t.Fatalf("after Reset: %v, %v", tok, err)
	}
	if f.maxBytes != 1000 {
		t.Errorf("Reset dropped the limits")
	}
}

// TestFramerRestart: a restarted stream is a new XML document. After Reset
// its XML declaration may follow whitespace (go-sendxmpp 0.5 sends "\n"
// then "<?xml version='1.0'?>" after SASL success); other processing
// instructions, and a declaration inside the stream, are still refused.
func TestFramerRestart(t *testing.T) {
	const sendxmpp = "\n<?xml version='1.0'?><stream:stream to='localhost' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>"
	tests := []struct {
		name  string
		in    string
		kinds []Kind
		err   error
	}{
		{name: "go-sendxmpp", in: sendxmpp, kinds: []Kind{W, H}},
		{name: "declaration first", in: "<?xml version='1.0'?>" + hdr, kinds: []Kind{H}},
		{name: "no declaration", in: "\r\n " + hdr + "<a/>", kinds: []Kind{W, H, E}},
		{name: "crlf and tab", in: "\r\n\t<?xml version='1.0' encoding='UTF-8'?>\n" + hdr, kinds: []Kind{W, H}},
		{name: "other pi", in: "\n<?xml-stylesheet href='x'?>" + hdr, err: ErrProcInst},
		{name: "two declarations", in: "\n<?xml version='1.0'?><?xml version='1.0'?>" + hdr, err: ErrProcInst},
		{name: "whitespace inside the prolog", in: "\n<?xml version='1.0'?> <?xml version='1.0'?>" + hdr, err: ErrProcInst},
		{name: "declaration in the stream", in: "\n" + hdr + "<?xml version='1.0'?>", err: ErrProcInst},
		{name: "pi between stanzas", in: hdr + "<a/>\n<?foo?>", err: ErrProcInst},
		{name: "text", in: "\nhello" + hdr, err: ErrNoHeader},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			in := []byte(tc.in)
			whole := frameRestarted(t, in, Limits{}, nil)
			if tc.err == nil && (whole.err != nil || !slices.Equal(kindsOf(whole.toks), tc.kinds)) || tc.err != nil && !errors.Is(whole.err, tc.err) {
				t.Fatalf("got %v %v, want %v %v", kindsOf(whole.toks), whole.err, tc.kinds, tc.err)
			}
			for i := 1; i < len(in); i++ {
				o := frameRestarted(t, in, Limits{}, []int{i})
				if !slices.Equal(o.toks, whole.toks) || !sameSentinel(o.err, whole.err) {
					t.Fatalf("split at %d: %v %v, whole: %v %v", i, o.toks, o.err, whole.toks, whole.err)
				}
			}
		})
	}
	// The first stream stays strict: nothing may precede its declaration.
	var f Framer
	if _, err := f.Next([]byte("\n<?xml version='1.0'?>" + hdr)); !errors.Is(err, ErrProcInst) {
		t.Fatalf("first stream: err = %v, want ErrProcInst", err)
	}
}

func kindsOf(toks []Token) []Kind {
	var k []Kind
	for _, t := range toks {
		k = append(k, t.Kind)
	}
	return k
}

func TestFramerSize(t *testing.T) {
	if n := unsafe.Sizeof(Framer{}); n >= 128 {
		t.Errorf("Framer is %d bytes, want < 128", n)
	}
}

func TestNextDoesNotAllocate(t *testing.T) {
	in := readTestdata(t, "client_stream.xml")
	var f Framer
	f.SetLimits(Limits{MaxBytes: 1 << 16, MaxElements: 64, MaxDepth: 16})
	run := func() {
		f.Reset()
		for b := in; len(b) > 0; {
			tok, err := f.Next(b)
			if err != nil || tok.Kind == KindNone {
				t.Fatalf("Next = %v, %v", tok, err)
			}
			b = b[tok.Len:]
		}
	}
	run() // the open-element stack is allocated once per Framer
	if n := testing.AllocsPerRun(100, run); n != 0 {
		t.Errorf("Next allocates %v times per stream", n)
	}
}

func TestKindString(t *testing.T) {
	for k, want := range map[Kind]string{KindNone: "none", KindHeader: "header", KindElement: "element", KindWhitespace: "whitespace", KindClose: "close"} {
		if k.String() != want {
			t.Errorf("%d.String() = %q", k, k.String())
		}
	}
}
