package roster

import (
	"errors"
	"slices"
	"strings"
	"testing"
)

// TestParseSet: the element-view parser of roster sets against the
// shapes clients send and the limits, each with its condition.
func TestParseSet(t *testing.T) {
	q := func(inner string) string { return `<query xmlns='jabber:iq:roster'>` + inner + `</query>` }
	groups := func(n int) string { return strings.Repeat(`<group>g</group>`, n) }
	cases := []struct {
		name, query string
		want        setItem
		cond        string
	}{
		{"plain", q(`<item jid='bob@localhost'/>`), setItem{contact: "bob@localhost"}, ""},
		{"normalised", q(`<item jid='Bob@LocalHost/res' name='Bob'/>`), setItem{contact: "bob@localhost", name: "Bob"}, ""},
		{"groups sorted, deduplicated, unescaped", q(`<item jid='b@localhost'><group>W&amp;rk</group><group><![CDATA[<A>]]></group><group>W&#x26;rk</group></item>`),
			setItem{contact: "b@localhost", groups: []string{"<A>", "W&rk"}}, ""},
		{"whitespace and extensions ignored", q("\n <x xmlns='urn:example'><item jid='no'/></x>\n <item jid='b@localhost'>\n<ext xmlns='urn:example'/></item>\n"), setItem{contact: "b@localhost"}, ""},
		{"remove", q(`<item jid='b@localhost' subscription='remove'><group>x</group></item>`), setItem{contact: "b@localhost", remove: true}, ""},
		{"mellium", `<query xmlns="jabber:iq:roster"><item jid="bob@localhost" name="Bob" subscription=""><group xmlns="jabber:iq:roster">Friends</group></item></query>`,
			setItem{contact: "bob@localhost", name: "Bob", groups: []string{"Friends"}}, ""},
		{"32 groups", q(`<item jid='b@localhost'>` + groups(32) + `</item>`), setItem{contact: "b@localhost", groups: []string{"g"}}, ""},
		{"33 groups", q(`<item jid='b@localhost'>` + groups(33) + `</item>`), setItem{}, "bad-request"},
		{"no item", q(``), setItem{}, "bad-request"},
		{"two items", q(`<item jid='a@localhost'/><item jid='b@localhost'/>`), setItem{}, "bad-request"},
		{"no jid", q(`<item name='x'/>`), setItem{}, "bad-request"},
		{"bad jid", q(`<item jid='a@b@c'/>`), setItem{}, "bad-request"},
		{"long name", q(`<item jid='b@localhost' name='` + strings.Repeat("n", MaxNameLen+1) + `'/>`), setItem{}, "bad-request"},
		{"bad entity in name", q(`<item jid='b@localhost' name='&foo;'/>`), setItem{}, "bad-request"},
		{"empty group", q(`<item jid='b@localhost'><group/></item>`), setItem{}, "not-acceptable"},
		{"long group", q(`<item jid='b@localhost'><group>` + strings.Repeat("g", MaxNameLen+1) + `</group></item>`), setItem{}, "not-acceptable"},
		{"element in group", q(`<item jid='b@localhost'><group><b/>x</group></item>`), setItem{}, "bad-request"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseSet([]byte(tc.query))
			var pe *parseError
			switch {
			case tc.cond == "" && err != nil:
				t.Fatalf("error %v", err)
			case tc.cond != "" && (!errors.As(err, &pe) || pe.cond != tc.cond):
				t.Fatalf("error %v, want %s", err, tc.cond)
			case tc.cond == "" && (got.contact != tc.want.contact || got.name != tc.want.name || got.remove != tc.want.remove || !slices.Equal(got.groups, tc.want.groups)):
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

// BenchmarkParseSetLarge: a roster set the size of c2s.max_stanza_size
// (256 KiB of extension payload around one item) is parsed in one pass.
func BenchmarkParseSetLarge(b *testing.B) {
	query := []byte(`<query xmlns='jabber:iq:roster'><x xmlns='urn:example'>` + strings.Repeat(`<y a='1'>text</y>`, 256<<10/17) +
		`</x><item jid='b@localhost' name='B'><group>g</group></item></query>`)
	b.SetBytes(int64(len(query)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := parseSet(query); err != nil {
			b.Fatal(err)
		}
	}
}
