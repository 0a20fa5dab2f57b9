package mam

import (
	"strings"
	"testing"
	"time"
)

func TestArchivable(t *testing.T) {
	for _, tc := range []struct {
		typ, raw string
		want     bool
	}{
		{"chat", `<message><body>x</body></message>`, true},
		{"", `<message><body>x</body></message>`, true},
		{"normal", `<message><body>x</body></message>`, true},
		{"headline", `<message><body>x</body></message>`, false},
		{"groupchat", `<message><body>x</body></message>`, false},
		{"error", `<message><body>x</body></message>`, false},
		{"chat", `<message><encrypted xmlns='eu.siacs.conversations.axolotl'/></message>`, true},
		{"chat", `<message><encrypted xmlns='urn:xmpp:omemo:2'/></message>`, true},
		{"chat", `<message><encryption xmlns='urn:xmpp:eme:0' namespace='x'/></message>`, true},
		{"chat", `<message><x xmlns='jabber:x:encrypted'>..</x></message>`, true},
		{"chat", `<message><openpgp xmlns='urn:xmpp:openpgp:0'>..</openpgp></message>`, true},
		{"chat", `<message><store xmlns='urn:xmpp:hints'/><received xmlns='urn:xmpp:receipts' id='1'/></message>`, true},
		{"chat", `<message><body>x</body><no-store xmlns='urn:xmpp:hints'/></message>`, false},
		{"chat", `<message><body>x</body><no-permanent-store xmlns='urn:xmpp:hints'/></message>`, false},
		{"chat", `<message><composing xmlns='http://jabber.org/protocol/chatstates'/></message>`, false},
		{"chat", `<message><body xmlns='urn:other'>x</body></message>`, false},
		{"chat", `<message/>`, false},
	} {
		if got := archivable(tc.typ, []byte(tc.raw)); got != tc.want {
			t.Errorf("archivable(%q, %s) = %v, want %v", tc.typ, tc.raw, got, tc.want)
		}
	}
}

func TestStripForged(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{`<message><body>x</body></message>`, ``},
		{`<message><stanza-id xmlns='urn:xmpp:sid:0' by='bob@localhost' id='1'/><body>x</body></message>`, `<message><body>x</body></message>`},
		{`<message><body>x</body><stanza-id xmlns='urn:xmpp:sid:0' by='localhost' id='1'/></message>`, `<message><body>x</body></message>`},
		{`<message><stanza-id xmlns='urn:xmpp:sid:0' by='BOB@localhost' id='1'></stanza-id><b/><stanza-id xmlns='urn:xmpp:sid:0' by='room@conf.example' id='2'/></message>`,
			`<message><b/><stanza-id xmlns='urn:xmpp:sid:0' by='room@conf.example' id='2'/></message>`},
		// A full JID is no archive of ours; another namespace is not XEP-0359.
		{`<message><stanza-id xmlns='urn:xmpp:sid:0' by='bob@localhost/r' id='1'/></message>`, ``},
		{`<message><stanza-id xmlns='urn:other' by='bob@localhost' id='1'/></message>`, ``},
		{`<message><origin-id xmlns='urn:xmpp:sid:0' id='o'/></message>`, ``},
	} {
		got, ok := stripForged([]byte(tc.in), "localhost")
		want := tc.want
		if want == "" {
			want = tc.in
		}
		if string(got) != want || ok != (tc.want != "") {
			t.Errorf("stripForged(%s) = %s, %v; want %s", tc.in, got, ok, want)
		}
	}
}

func TestWithStanzaID(t *testing.T) {
	for in, want := range map[string]string{
		`<message><body>x</body></message>`: `<message><body>x</body><stanza-id xmlns='urn:xmpp:sid:0' by='bob@localhost' id='abc'/></message>`,
		`<message to='b'/>`:                 `<message to='b'><stanza-id xmlns='urn:xmpp:sid:0' by='bob@localhost' id='abc'/></message>`,
	} {
		got := withStanzaID([]byte(in), "bob@localhost", "abc")
		if string(got) != want {
			t.Errorf("withStanzaID(%s) = %s", in, got)
		}
		if !hasStanzaID(got, "bob@localhost") || hasStanzaID(got, "alice@localhost") {
			t.Errorf("hasStanzaID(%s) wrong", got)
		}
	}
}

func TestIDs(t *testing.T) {
	var g idGen
	now := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	prev := int64(0)
	for i := range 10000 {
		at := now
		if i > 5000 {
			at = now.Add(-time.Second) // a clock that steps back
		}
		id := g.next(at)
		if id <= prev {
			t.Fatalf("id %d after %d", id, prev)
		}
		prev = id
		if s := formatID(id); func() bool { back, ok := parseID(s); return !ok || back != id }() {
			t.Fatalf("id %d does not survive its text %q", id, s)
		}
	}
	if got := timeOf(g.next(now.Add(time.Hour))); !got.Equal(now.Add(time.Hour)) {
		t.Errorf("timeOf = %v", got)
	}
	if idAt(now) >= idAt(now.Add(time.Millisecond)) || idAt(time.Unix(0, 0)) != 0 {
		t.Error("idAt does not order times")
	}
	for _, bad := range []string{"", "-1", "0", "zzzzzzzzzzzzzzzzzz", "a b"} {
		if _, ok := parseID(bad); ok {
			t.Errorf("parseID(%q) accepted", bad)
		}
	}
}

func TestParsePrefs(t *testing.T) {
	if _, why, err := parsePrefs([]byte(`<prefs xmlns='urn:xmpp:mam:2' default='always'><always><jid>A@Example.org/r</jid><jid>a@example.org</jid></always></prefs>`)); err != nil {
		t.Fatalf("parsePrefs: %s", why)
	}
	p, _, _ := parsePrefs([]byte(`<prefs xmlns='urn:xmpp:mam:2' default='roster'><always><jid>A@Example.org/r</jid><jid>a@example.org</jid></always><never><jid>x.example</jid></never></prefs>`))
	if p.Default.String() != "roster" || len(p.Always) != 1 || p.Always[0] != "a@example.org" || len(p.Never) != 1 || p.Never[0] != "x.example" {
		t.Errorf("prefs = %+v", p)
	}
	big := `<prefs xmlns='urn:xmpp:mam:2' default='always'><never>`
	for i := range MaxPrefsJIDs + 1 {
		big += `<jid>u` + formatID(int64(i+1)) + `@x</jid>`
	}
	big += `</never></prefs>`
	if _, why, err := parsePrefs([]byte(big)); err == nil || why != "too many jids" {
		t.Errorf("a list of %d JIDs: %v %q", MaxPrefsJIDs+1, err, why)
	}
	long := `<prefs xmlns='urn:xmpp:mam:2' default='always'><never>`
	for i := range 40 {
		long += `<jid>` + strings.Repeat("u", 1000) + formatID(int64(i+1)) + `@x</jid>`
	}
	long += `</never></prefs>`
	if _, why, err := parsePrefs([]byte(long)); err == nil || why != "jids too long in all" {
		t.Errorf("40 KB of JIDs: %v %q", err, why)
	}
	if _, why, err := parsePrefs([]byte(`<prefs xmlns='urn:xmpp:mam:2'/>`)); err == nil {
		t.Errorf("no default accepted (%s)", why)
	}
}

func TestParseQuery(t *testing.T) {
	r, e := parseQuery([]byte(`<query xmlns='urn:xmpp:mam:2' queryid='q'><x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE'><value>urn:xmpp:mam:2</value></field>`+
		`<field var='with'><value>Juliet@Capulet.lit/Balcony</value></field><field var='start'><value>2026-11-30T12:00:00Z</value></field><field var='end'/></x>`+
		`<set xmlns='http://jabber.org/protocol/rsm'><max>500</max><before/></set><flip-page/></query>`), 50)
	if e != nil {
		t.Fatalf("parseQuery: %+v", e)
	}
	if r.queryID != "q" || r.with != "juliet@capulet.lit" || r.withRes != "Balcony" || r.max != 50 || !r.hasRSMBefore || r.rsmBefore != "" || !r.flip ||
		r.after != idAt(time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC))-1 {
		t.Errorf("request = %+v", r)
	}
	for _, bad := range []string{
		`<query xmlns='urn:xmpp:mam:2'><x xmlns='jabber:x:data'><field var='with'><value>@@</value></field></x></query>`,
		`<query xmlns='urn:xmpp:mam:2'><x xmlns='jabber:x:data'><field var='end'><value>soon</value></field></x></query>`,
		`<query xmlns='urn:xmpp:mam:2'><x xmlns='jabber:x:data'><field var='other'><value>1</value></field></x></query>`,
		`<query xmlns='urn:xmpp:mam:2'><set xmlns='http://jabber.org/protocol/rsm'><max>x</max></set></query>`,
		`<query xmlns='urn:xmpp:mam:2'><set xmlns='http://jabber.org/protocol/rsm'><after>a</after><before>b</before></set></query>`,
	} {
		if _, e := parseQuery([]byte(bad), 50); e == nil {
			t.Errorf("parseQuery(%s) accepted", bad)
		}
	}
}
