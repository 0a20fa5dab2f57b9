package stanza

import (
	"errors"
	"fmt"
	"testing"
)

func TestParseStartTag(t *testing.T) {
	tests := []struct {
		name          string
		in            string
		prefix, local string
		n             int
		self          bool
		attrs         string // name=raw pairs as "name=raw;"
		err           bool
	}{
		{name: "simple", in: "<a>x</a>", local: "a", n: 3},
		{name: "self-closing", in: "<a/>", local: "a", n: 4, self: true},
		{name: "self-closing with space", in: "<a  x='1' />", local: "a", n: 12, self: true, attrs: "x=1;"},
		{name: "prefixed", in: "<p:a p:x=\"1\" xml:lang='en'>", prefix: "p", local: "a", n: 27, attrs: "p:x=1;xml:lang=en;"},
		{name: "gt in value", in: "<a x='>' y = \"'\">z</a>", local: "a", n: 17, attrs: "x=>;y=';"},
		{name: "escaped value", in: "<a x='&lt;&amp;'/>", local: "a", n: 18, self: true, attrs: "x=&lt;&amp;;"},
		{name: "unicode", in: "<日本 é='ü'/>", local: "日本", n: 17, self: true, attrs: "é=ü;"},
		{name: "empty", in: "", err: true},
		{name: "no lt", in: "a/>", err: true},
		{name: "unterminated", in: "<a x='1'", err: true},
		{name: "unterminated value", in: "<a x='1>", err: true},
		{name: "lt in value", in: "<a x='<'/>", err: true},
		{name: "no space", in: "<a x='1'y='2'/>", err: true},
		{name: "bad name", in: "<1a/>", err: true},
		{name: "bad attr name", in: "<a 1='2'/>", err: true},
		{name: "slash without gt", in: "<a/ >", err: true},
		{name: "missing equals", in: "<a x/>", err: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st, err := ParseStartTag([]byte(tt.in))
			if (err != nil) != tt.err {
				t.Fatalf("err = %v, want error %v", err, tt.err)
			}
			if err != nil {
				return
			}
			if string(st.Prefix()) != tt.prefix || string(st.Local()) != tt.local || st.Len() != tt.n || st.SelfClosing() != tt.self {
				t.Errorf("got prefix %q local %q len %d self %v", st.Prefix(), st.Local(), st.Len(), st.SelfClosing())
			}
			var got string
			st.Attrs(func(name, raw []byte) bool {
				got += fmt.Sprintf("%s=%s;", name, raw)
				return true
			})
			if got != tt.attrs {
				t.Errorf("attrs = %q, want %q", got, tt.attrs)
			}
		})
	}
}

func TestStartTagAttr(t *testing.T) {
	st, err := ParseStartTag([]byte(`<message xmlns='jabber:client' xmlns:x="urn:x" to='a@b' xml:lang='en' body='&lt;3 &amp; &#x263A;'>`))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, raw, str string
		ok             bool
	}{
		{"xmlns", "jabber:client", "jabber:client", true},
		{"xmlns:x", "urn:x", "urn:x", true},
		{"to", "a@b", "a@b", true},
		{"xml:lang", "en", "en", true},
		{"body", "&lt;3 &amp; &#x263A;", "<3 & ☺", true},
		{"from", "", "", false},
		{"x", "", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			raw, ok := st.Attr(tt.name)
			if string(raw) != tt.raw || ok != tt.ok {
				t.Errorf("Attr = %q, %v", raw, ok)
			}
			s, ok := st.AttrString(tt.name)
			if s != tt.str || ok != tt.ok {
				t.Errorf("AttrString = %q, %v", s, ok)
			}
		})
	}
	n := 0
	st.Attrs(func(name, raw []byte) bool { n++; return n < 2 })
	if n != 2 {
		t.Errorf("Attrs did not stop: %d calls", n)
	}
	if n := testing.AllocsPerRun(100, func() { st.Attr("body") }); n != 0 {
		t.Errorf("Attr allocates %v times", n)
	}
}

func TestInnerAndFirstChild(t *testing.T) {
	tests := []struct {
		name, in, inner, child string
		innerNil, hasChild     bool
	}{
		{name: "self-closing", in: "<a/>", innerNil: true},
		{name: "empty", in: "<a></a>", inner: ""},
		{name: "text", in: "<a>hi</a>", inner: "hi"},
		{name: "child", in: "<iq type='get'> <query xmlns='q'><item/></query><x/></iq>", inner: " <query xmlns='q'><item/></query><x/>", child: "<query xmlns='q'><item/></query>", hasChild: true},
		{name: "self-closing child", in: "<a>text<b x='>'/>more</a>", inner: "text<b x='>'/>more", child: "<b x='>'/>", hasChild: true},
		{name: "cdata skipped", in: "<a><![CDATA[<fake/>]]><real>x<![CDATA[</real>]]></real></a>", inner: "<![CDATA[<fake/>]]><real>x<![CDATA[</real>]]></real>", child: "<real>x<![CDATA[</real>]]></real>", hasChild: true},
		{name: "nested same name", in: "<a><a><a/></a></a>", inner: "<a><a/></a>", child: "<a><a/></a>", hasChild: true},
		{name: "end tag with space", in: "<a><b></b ></a >", inner: "<b></b >", child: "<b></b >", hasChild: true},
		{name: "malformed", in: "<a>", innerNil: true},
		{name: "not an element", in: "hello", innerNil: true},
		{name: "unclosed child", in: "<a><b></a>", inner: "<b>"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := Inner([]byte(tt.in))
			if (in == nil) != tt.innerNil || string(in) != tt.inner {
				t.Errorf("Inner = %q (nil %v)", in, in == nil)
			}
			c, ok := FirstChild([]byte(tt.in))
			if ok != tt.hasChild || string(c) != tt.child {
				t.Errorf("FirstChild = %q, %v", c, ok)
			}
		})
	}
}

func TestUnescape(t *testing.T) {
	tests := []struct {
		name, in, out string
		err           error
	}{
		{"plain", "hello", "hello", nil},
		{"predefined", "&lt;&gt;&amp;&apos;&quot;", `<>&'"`, nil},
		{"char refs", "&#65;&#x42;&#x1F600;&#9;", "AB😀\t", nil},
		{"mixed", "a &lt; b", "a < b", nil},
		{"unknown entity", "&nbsp;", "", ErrEntity},
		{"unterminated", "&lt", "", ErrSyntax},
		{"empty", "&;", "", ErrSyntax},
		{"bad digit", "&#12a;", "", ErrSyntax},
		{"empty char ref", "&#;", "", ErrSyntax},
		{"nul", "&#0;", "", ErrInvalidChar},
		{"surrogate", "&#xD800;", "", ErrInvalidChar},
		{"huge", "&#99999999999999999;", "", ErrInvalidChar},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := Unescape(nil, []byte(tt.in))
			if !errors.Is(err, tt.err) {
				t.Fatalf("err = %v, want %v", err, tt.err)
			}
			if err == nil && string(out) != tt.out {
				t.Errorf("Unescape = %q, want %q", out, tt.out)
			}
		})
	}
}

func TestAppendEscaped(t *testing.T) {
	tests := []struct{ name, in, out string }{
		{"plain", "hello", "hello"},
		{"all five", `<a href="x">&'`, "&lt;a href=&quot;x&quot;&gt;&amp;&apos;"},
		{"unicode", "日本 & 😀", "日本 &amp; 😀"},
		{"empty", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := AppendEscaped([]byte("x"), tt.in)
			if string(got) != "x"+tt.out {
				t.Errorf("AppendEscaped = %q", got)
			}
		})
	}
}

func TestParseHeader(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want Header
		err  error
	}{
		{name: "client", in: "<?xml version='1.0'?>\n" + hdr, want: Header{
			Name: xmlName(NSStream, "stream"), Prefix: "stream", To: "example.com", Version: "1.0", DefaultNS: "jabber:client"}},
		{name: "all attributes", in: "\uFEFF<stream:stream from='a&amp;b' to='c' id='x1' version='1.0' xml:lang='en' xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams'>",
			want: Header{Name: xmlName(NSStream, "stream"), Prefix: "stream", From: "a&b", To: "c", ID: "x1", Version: "1.0", Lang: "en", DefaultNS: "jabber:server"}},
		{name: "unprefixed", in: "<stream xmlns='http://etherx.jabber.org/streams'>", want: Header{Name: xmlName(NSStream, "stream"), DefaultNS: NSStream}},
		{name: "self-closing", in: "<stream:stream/>", err: ErrSyntax},
		{name: "bad escape", in: "<stream:stream to='&x;'>", err: ErrSyntax},
		{name: "latin1", in: "<?xml version='1.0' encoding='latin1'?>" + hdr, err: ErrUnsupportedEncoding},
		{name: "unterminated declaration", in: "<?xml version='1.0'", err: ErrSyntax},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, err := ParseHeader([]byte(tt.in))
			if !errors.Is(err, tt.err) {
				t.Fatalf("err = %v, want %v", err, tt.err)
			}
			if h != tt.want {
				t.Errorf("ParseHeader = %+v, want %+v", h, tt.want)
			}
		})
	}
}

func TestCondition(t *testing.T) {
	tests := []struct {
		err  error
		want string
	}{
		{ErrDTD, "restricted-xml"}, {ErrComment, "restricted-xml"}, {ErrProcInst, "restricted-xml"}, {ErrEntity, "restricted-xml"},
		{ErrTooLarge, "policy-violation"}, {ErrTooManyElements, "policy-violation"}, {ErrTooDeep, "policy-violation"},
		{ErrTooManyAttrs, "policy-violation"}, {ErrTooManyDecls, "policy-violation"},
		{ErrUnsupportedEncoding, "unsupported-encoding"}, {ErrInvalidNamespace, "invalid-namespace"},
		{ErrSyntax, "not-well-formed"}, {ErrInvalidUTF8, "not-well-formed"}, {ErrUndeclaredPrefix, "not-well-formed"},
		{errors.New("other"), "not-well-formed"},
	}
	for _, tt := range tests {
		t.Run(tt.err.Error(), func(t *testing.T) {
			if got := Condition(&FrameError{Offset: 3, Err: tt.err}); got != tt.want {
				t.Errorf("Condition = %q, want %q", got, tt.want)
			}
		})
	}
	if got := (&FrameError{Offset: 42, Err: ErrTooDeep}).Error(); got != "stanza: byte 42: nesting too deep" {
		t.Errorf("Error() = %q", got)
	}
}

func xmlName(space, local string) (n struct{ Space, Local string }) {
	n.Space, n.Local = space, local
	return n
}
