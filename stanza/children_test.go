package stanza

import (
	"slices"
	"testing"
)

func TestChildren(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want []string
		ok   bool
	}{
		{name: "self-closing", in: "<m/>", ok: true},
		{name: "text only", in: "<m>hello</m>", ok: true},
		{name: "one", in: "<m><body>hi</body></m>", want: []string{"<body>hi</body>"}, ok: true},
		{name: "several with text and cdata", in: "<m> <a/>x<![CDATA[<b/>]]><c k='>'><d/></c>\n<e></e></m>",
			want: []string{"<a/>", "<c k='>'><d/></c>", "<e></e>"}, ok: true},
		{name: "nested same name", in: "<m><x><x/></x><y/></m>", want: []string{"<x><x/></x>", "<y/>"}, ok: true},
		{name: "prefixed", in: "<m><p:x xmlns:p='urn:p'/></m>", want: []string{"<p:x xmlns:p='urn:p'/>"}, ok: true},
		{name: "unterminated child", in: "<m><a><b/></m>", ok: false},
		{name: "unterminated cdata", in: "<m><![CDATA[x</m>", ok: false},
		{name: "malformed", in: "<m", ok: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []string
			ok := Children([]byte(tt.in), func(c []byte) bool {
				got = append(got, string(c))
				return true
			})
			if ok != tt.ok || !slices.Equal(got, tt.want) {
				t.Fatalf("Children(%q) = %q, %v; want %q, %v", tt.in, got, ok, tt.want, tt.ok)
			}
		})
	}
	t.Run("stop early", func(t *testing.T) {
		n := 0
		ok := Children([]byte("<m><a/><b/><c/></m>"), func([]byte) bool { n++; return n < 2 })
		if !ok || n != 2 {
			t.Fatalf("visited %d, ok %v; want 2, true", n, ok)
		}
	})
}

func TestChildrenAllocs(t *testing.T) {
	elem := []byte("<message><composing xmlns='http://jabber.org/protocol/chatstates'/><body>x</body></message>")
	n := 0
	fn := func([]byte) bool { n++; return true }
	if a := testing.AllocsPerRun(100, func() { Children(elem, fn) }); a != 0 {
		t.Fatalf("%v allocations per call, want 0", a)
	}
}

func TestText(t *testing.T) {
	for _, tc := range []struct {
		in, want string
		err      bool
	}{
		{`<password>s3cr&amp;t</password>`, "s3cr&t", false},
		{`<password/>`, "", false},
		{`<username>a<b/></username>`, "", true},
		{`<username>&bogus;</username>`, "", true},
	} {
		got, err := Text([]byte(tc.in))
		if got != tc.want || (err != nil) != tc.err {
			t.Errorf("Text(%s) = %q, %v; want %q, error %v", tc.in, got, err, tc.want, tc.err)
		}
	}
}
