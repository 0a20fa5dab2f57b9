package server_test

import (
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/krill-xmpp/krill/config"
	"github.com/krill-xmpp/krill/sasl"
	"github.com/krill-xmpp/krill/server"
	"github.com/krill-xmpp/krill/storage"
)

// mamClock is the archive's clock in these tests: archive IDs carry their
// time, so start, end and retention are tested by moving it.
type mamClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *mamClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *mamClock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// mamServer starts a server with the archive on and a clock at a fixed
// time.
func mamServer(t *testing.T, edit func(*config.Config), users ...string) (*server.Server, *storage.SQL, *mamClock) {
	t.Helper()
	cfg := testConfig(t)
	cfg.MAM.Enabled = true
	if edit != nil {
		edit(&cfg)
	}
	clock := &mamClock{t: time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)}
	srv, store := startServerOpts(t, cfg, serverOpts{now: clock.now}, users...)
	return srv, store, clock
}

// online logs user/res in over raw XML and sends initial presence.
func online(t *testing.T, srv *server.Server, user, res string) *rawConn {
	t.Helper()
	c := dialRaw(t, srv)
	c.scramLogin(user, testPassword, res)
	full := user + "@localhost/" + res
	c.exchange(t, `<presence/>`, `<presence from='`+full+`'/>`)
	return c
}

const sidNS = `urn:xmpp:sid:0`

var stanzaIDRe = regexp.MustCompile(`<stanza-id xmlns='urn:xmpp:sid:0' by='([^']*)' id='([^']*)'/>`)

// stanzaID returns the id of the one <stanza-id/> in got by by.
func stanzaID(t *testing.T, got, by string) string {
	t.Helper()
	var id string
	for _, m := range stanzaIDRe.FindAllStringSubmatch(got, -1) {
		if m[1] == by {
			if id != "" {
				t.Fatalf("two stanza-ids by %s in %q", by, got)
			}
			id = m[2]
		}
	}
	if id == "" {
		t.Fatalf("no stanza-id by %s in %q", by, got)
	}
	return id
}

// sid is the <stanza-id/> the server adds for bare's archive.
func sid(bare string) string {
	return `<stanza-id xmlns='` + sidNS + `' by='` + bare + `' id='{*}'/>`
}

// mamQuery builds a query iq: fields are var/value pairs of the form, rsm
// the inside of the RSM <set/> ("" for none).
func mamQuery(id, queryID, rsm string, fields ...string) string {
	b := `<iq type='set' id='` + id + `'><query xmlns='urn:xmpp:mam:2'`
	if queryID != "" {
		b += ` queryid='` + queryID + `'`
	}
	b += `>`
	if len(fields) > 0 {
		b += `<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'><value>urn:xmpp:mam:2</value></field>`
		for i := 0; i+1 < len(fields); i += 2 {
			b += `<field var='` + fields[i] + `'><value>` + fields[i+1] + `</value></field>`
		}
		b += `</x>`
	}
	if rsm != "" {
		b += `<set xmlns='http://jabber.org/protocol/rsm'>` + rsm + `</set>`
	}
	return b + `</query></iq>`
}

// mamResult is one result message of a query to full's archive, holding
// the archived message fwd.
func mamResult(full, queryID, id, fwd string) string {
	q := ""
	if queryID != "" {
		q = ` queryid='` + queryID + `'`
	}
	return `<message to='` + full + `'><result xmlns='urn:xmpp:mam:2'` + q + ` id='` + id + `'><forwarded xmlns='urn:xmpp:forward:0'>` +
		`<delay xmlns='urn:xmpp:delay' stamp='{*}'/>` + fwd + `</forwarded></result></message>`
}

// fin is the iq result ending a query.
func fin(id string, complete bool, first, last string, count int) string {
	b := `<iq type='result' id='` + id + `'><fin xmlns='urn:xmpp:mam:2'`
	if complete {
		b += ` complete='true'`
	}
	b += `><set xmlns='http://jabber.org/protocol/rsm'>`
	if first != "" {
		b += `<first>` + first + `</first><last>` + last + `</last>`
	}
	if count >= 0 {
		b += `<count>` + strconv.Itoa(count) + `</count>`
	}
	return b + `</set></fin></iq>`
}

// TestMAMDisco: the account's bare JID advertises the archive and stanza
// IDs (XEP-0313 §7, XEP-0359 §6).
func TestMAMDisco(t *testing.T) {
	srv, _, _ := mamServer(t, nil, "alice")
	a := online(t, srv, "alice", "a")
	got := a.exchange(t, `<iq type='get' id='d' to='alice@localhost'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>`,
		`<iq type='result' id='d' from='alice@localhost'><query xmlns='http://jabber.org/protocol/disco#info'>{**}</query></iq>`)
	for _, f := range []string{"urn:xmpp:mam:2", "urn:xmpp:mam:2#extended", "urn:xmpp:sid:0"} {
		if !strings.Contains(got, `<feature var='`+f+`'/>`) {
			t.Errorf("disco#info of the account lacks %s: %s", f, got)
		}
	}
	a.exchange(t, `<iq type='get' id='f'><query xmlns='urn:xmpp:mam:2'/></iq>`,
		`<iq type='result' id='f'><query xmlns='urn:xmpp:mam:2'><x xmlns='jabber:x:data' type='form'>`+
			`<field type='hidden' var='FORM_TYPE'><value>urn:xmpp:mam:2</value></field><field type='jid-single' var='with'/>`+
			`<field type='text-single' var='start'/><field type='text-single' var='end'/><field type='text-single' var='before-id'/>`+
			`<field type='text-single' var='after-id'/><field type='list-multi' var='ids'><validate xmlns='http://jabber.org/protocol/xdata-validate' datatype='xs:string'><open/></validate></field>`+
			`</x></query></iq>`)
	a.exchange(t, `<iq type='get' id='m'><metadata xmlns='urn:xmpp:mam:2'/></iq>`,
		`<iq type='result' id='m'><metadata xmlns='urn:xmpp:mam:2'></metadata></iq>`)
}

// TestMAMArchiving: what is archived, for whom, and the stanza IDs the
// recipient sees: added for its archive, forged ones removed, none for a
// message not archived.
func TestMAMArchiving(t *testing.T) {
	srv, _, _ := mamServer(t, nil, "alice", "bob")
	a := online(t, srv, "alice", "a")
	b := online(t, srv, "bob", "b")

	cases := []struct {
		name     string
		send     string // from alice/a to bob
		want     string // what bob/b gets
		archived bool
	}{
		{"chat with body",
			`<message to='bob@localhost' type='chat' id='m1'><body>hi</body></message>`,
			`<message to='bob@localhost' type='chat' id='m1' from='alice@localhost/a'><body>hi</body>` + sid("bob@localhost") + `</message>`, true},
		{"normal to the full JID",
			`<message to='bob@localhost/b' id='m2'><body>full</body></message>`,
			`<message to='bob@localhost/b' id='m2' from='alice@localhost/a'><body>full</body>` + sid("bob@localhost") + `</message>`, true},
		{"OMEMO without body",
			`<message to='bob@localhost' type='chat' id='m3'><encrypted xmlns='eu.siacs.conversations.axolotl'><header sid='1'><iv>AAAA</iv></header><payload>BBBB</payload></encrypted><store xmlns='urn:xmpp:hints'/></message>`,
			`<message to='bob@localhost' type='chat' id='m3' from='alice@localhost/a'><encrypted xmlns='eu.siacs.conversations.axolotl'><header sid='1'><iv>AAAA</iv></header><payload>BBBB</payload></encrypted><store xmlns='urn:xmpp:hints'/>` + sid("bob@localhost") + `</message>`, true},
		{"OMEMO 2 without body",
			`<message to='bob@localhost' type='chat' id='m4'><encrypted xmlns='urn:xmpp:omemo:2'><header sid='1'/><payload>CC</payload></encrypted></message>`,
			`<message to='bob@localhost' type='chat' id='m4' from='alice@localhost/a'><encrypted xmlns='urn:xmpp:omemo:2'><header sid='1'/><payload>CC</payload></encrypted>` + sid("bob@localhost") + `</message>`, true},
		{"EME marker",
			`<message to='bob@localhost' type='chat' id='m5'><encryption xmlns='urn:xmpp:eme:0' namespace='urn:xmpp:otr:0'/></message>`,
			`<message to='bob@localhost' type='chat' id='m5' from='alice@localhost/a'><encryption xmlns='urn:xmpp:eme:0' namespace='urn:xmpp:otr:0'/>` + sid("bob@localhost") + `</message>`, true},
		{"forged stanza-ids removed, a remote one kept",
			`<message to='bob@localhost' type='chat' id='m6'><body>forged</body><stanza-id xmlns='urn:xmpp:sid:0' by='bob@localhost' id='fake1'/><stanza-id xmlns='urn:xmpp:sid:0' by='localhost' id='fake2'/><stanza-id xmlns='urn:xmpp:sid:0' by='room@muc.example' id='kept'/></message>`,
			`<message to='bob@localhost' type='chat' id='m6' from='alice@localhost/a'><body>forged</body><stanza-id xmlns='urn:xmpp:sid:0' by='room@muc.example' id='kept'/>` + sid("bob@localhost") + `</message>`, true},
		{"no-store",
			`<message to='bob@localhost' type='chat' id='n1'><body>secret</body><no-store xmlns='urn:xmpp:hints'/></message>`,
			`<message to='bob@localhost' type='chat' id='n1' from='alice@localhost/a'><body>secret</body><no-store xmlns='urn:xmpp:hints'/></message>`, false},
		{"no-permanent-store",
			`<message to='bob@localhost' type='chat' id='n2'><body>secret</body><no-permanent-store xmlns='urn:xmpp:hints'/></message>`,
			`<message to='bob@localhost' type='chat' id='n2' from='alice@localhost/a'><body>secret</body><no-permanent-store xmlns='urn:xmpp:hints'/></message>`, false},
		{"chat state only",
			`<message to='bob@localhost' type='chat' id='n3'><composing xmlns='http://jabber.org/protocol/chatstates'/></message>`,
			`<message to='bob@localhost' type='chat' id='n3' from='alice@localhost/a'><composing xmlns='http://jabber.org/protocol/chatstates'/></message>`, false},
		{"headline",
			`<message to='bob@localhost' type='headline' id='n4'><body>news</body></message>`,
			`<message to='bob@localhost' type='headline' id='n4' from='alice@localhost/a'><body>news</body></message>`, false},
		{"forged stanza-id on a message not archived",
			`<message to='bob@localhost' type='headline' id='n5'><body>x</body><stanza-id xmlns='urn:xmpp:sid:0' by='bob@localhost' id='fake'/></message>`,
			`<message to='bob@localhost' type='headline' id='n5' from='alice@localhost/a'><body>x</body></message>`, false},
	}
	var ids []string
	for _, tc := range cases {
		a.send(tc.send)
		got := b.expect(t, tc.want)
		if tc.archived {
			ids = append(ids, stanzaID(t, got, "bob@localhost"))
		}
	}
	// Bob's archive holds the archived ones with the IDs he saw;
	// alice's the same messages, under IDs of her own.
	b.send(mamQuery("q1", "b1", ""))
	k := 0
	for _, tc := range cases {
		if !tc.archived {
			continue
		}
		fwd := strings.Replace(tc.want, `<message `, `<message xmlns='jabber:client' `, 1)
		fwd = strings.Replace(fwd, sid("bob@localhost"), "", 1)
		b.expect(t, mamResult("bob@localhost/b", "b1", ids[k], fwd))
		k++
	}
	b.expect(t, fin("q1", true, ids[0], ids[len(ids)-1], len(ids)))
	got := a.exchange(t, mamQuery("q2", "", "<max>50</max>"), `{**}</iq>`)
	if n := strings.Count(got, `<result xmlns='urn:xmpp:mam:2'`); n != len(ids) {
		t.Errorf("alice's archive has %d messages, want %d: %s", n, len(ids), got)
	}
	for _, id := range ids {
		if strings.Contains(got, `id='`+id+`'`) {
			t.Errorf("alice's archive uses bob's ID %s", id)
		}
	}
	if strings.Contains(got, "by='bob@localhost'") || strings.Contains(got, "by='localhost'") {
		t.Errorf("an archived message holds a local stanza-id: %s", got)
	}
}

// stamp formats t as a query's start or end.
func stamp(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05.000Z") }

// mamErr is the error answer to query id.
func mamErr(id, typ, cond, text string) string {
	b := `<iq type='error' id='` + id + `' to='bob@localhost/b'><error type='` + typ + `'><` + cond + ` ` + stanzasNS + `/>`
	if text != "" {
		b += `<text ` + stanzasNS + `>` + text + `</text>`
	}
	return b + `</error></iq>`
}

// TestMAMQuery pages through an archive of 13 messages, a minute apart
// (1..10 from alice, 11..13 from carol), with every filter, forwards and
// backwards, checking the exact results, <first/>, <last/>, <count/> and
// complete; and the errors.
func TestMAMQuery(t *testing.T) {
	srv, _, clock := mamServer(t, nil, "alice", "bob", "carol")
	a := online(t, srv, "alice", "a")
	c := online(t, srv, "carol", "c")
	b := online(t, srv, "bob", "b")
	const n = 13
	ids := make([]string, n+1) // 1-based
	times := make([]time.Time, n+1)
	fwd := make([]string, n+1)
	for i := 1; i <= n; i++ {
		clock.add(time.Minute)
		times[i] = clock.now()
		from, sender := a, "alice@localhost/a"
		if i > 10 {
			from, sender = c, "carol@localhost/c"
		}
		is := strconv.Itoa(i)
		from.send(`<message to='bob@localhost' type='chat' id='m` + is + `'><body>` + is + `</body></message>`)
		got := b.expect(t, `<message to='bob@localhost' type='chat' id='m`+is+`' from='`+sender+`'><body>`+is+`</body>`+sid("bob@localhost")+`</message>`)
		ids[i] = stanzaID(t, got, "bob@localhost")
		fwd[i] = `<message xmlns='jabber:client' to='bob@localhost' type='chat' id='m` + is + `' from='` + sender + `'><body>` + is + `</body></message>`
	}
	seq := func(from, to int) []int {
		var out []int
		for i := from; i <= to; i++ {
			out = append(out, i)
		}
		return out
	}
	type page struct {
		name     string
		query    string // with id "q" and queryid "p"
		want     []int
		complete bool
		count    int
	}
	field := func(v, val string) string {
		return `<field var='` + v + `'><value>` + val + `</value></field>`
	}
	form := func(fields ...string) string {
		return `<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'><value>urn:xmpp:mam:2</value></field>` + strings.Join(fields, "") + `</x>`
	}
	rsm := func(s string) string { return `<set xmlns='http://jabber.org/protocol/rsm'>` + s + `</set>` }
	q := func(inner string) string {
		return `<iq type='set' id='q'><query xmlns='urn:xmpp:mam:2' queryid='p'>` + inner + `</query></iq>`
	}
	pages := []page{
		{"all", q(""), seq(1, 13), true, 13},
		{"first page", q(rsm(`<max>3</max>`)), seq(1, 3), false, 13},
		{"next page", q(rsm(`<max>3</max><after>` + ids[3] + `</after>`)), seq(4, 6), false, 13},
		{"end reached", q(rsm(`<max>3</max><after>` + ids[11] + `</after>`)), seq(12, 13), true, 13},
		{"last page", q(rsm(`<max>3</max><before/>`)), seq(11, 13), false, 13},
		{"page before", q(rsm(`<max>3</max><before>` + ids[11] + `</before>`)), seq(8, 10), false, 13},
		{"start reached backwards", q(rsm(`<max>3</max><before>` + ids[3] + `</before>`)), seq(1, 2), true, 13},
		{"max 0 counts", q(rsm(`<max>0</max>`)), nil, false, 13},
		{"after-id and before-id", q(form(field("after-id", ids[2]), field("before-id", ids[6]))), seq(3, 5), true, 3},
		{"after-id paged", q(form(field("after-id", ids[2])) + rsm(`<max>2</max>`)), seq(3, 4), false, 11},
		{"with bare", q(form(field("with", "carol@localhost"))), seq(11, 13), true, 3},
		{"with bare, last page", q(form(field("with", "alice@localhost")) + rsm(`<max>2</max><before/>`)), seq(9, 10), false, 10},
		{"with full", q(form(field("with", "carol@localhost/c"))), seq(11, 13), true, 3},
		{"with another resource", q(form(field("with", "carol@localhost/other"))), nil, true, 0},
		{"with nobody", q(form(field("with", "dave@localhost"))), nil, true, 0},
		{"start", q(form(field("start", stamp(times[11])))), seq(11, 13), true, 3},
		{"end", q(form(field("end", stamp(times[2])))), seq(1, 2), true, 2},
		{"start and end", q(form(field("start", stamp(times[4])), field("end", stamp(times[6])))), seq(4, 6), true, 3},
		{"start, end and with", q(form(field("start", stamp(times[4])), field("end", stamp(times[12])), field("with", "carol@localhost"))), seq(11, 12), true, 2},
		{"ids", q(form(`<field var='ids'><value>` + ids[7] + `</value><value>` + ids[2] + `</value></field>`)), []int{7, 2}, true, 2},
		{"flip-page", q(rsm(`<max>3</max>`) + `<flip-page/>`), []int{3, 2, 1}, false, 13},
		{"max capped", q(rsm(`<max>100000</max>`)), seq(1, 13), true, 13},
	}
	for _, tc := range pages {
		b.send(tc.query)
		for _, i := range tc.want {
			b.expect(t, mamResult("bob@localhost/b", "p", ids[i], fwd[i]))
		}
		first, last := "", ""
		if len(tc.want) > 0 {
			first, last = ids[tc.want[0]], ids[tc.want[len(tc.want)-1]]
			if tc.name == "flip-page" {
				first, last = last, first
			}
		}
		b.expect(t, fin("q", tc.complete, first, last, tc.count))
	}

	errs := []struct {
		name, query, want string
	}{
		{"unknown after", q(rsm(`<after>zzzz</after>`)), mamErr("q", "cancel", "item-not-found", "no message zzzz")},
		{"unknown before", q(rsm(`<before>` + ids[1] + `0</before>`)), mamErr("q", "cancel", "item-not-found", "no message "+ids[1]+"0")},
		{"unknown after-id", q(form(field("after-id", "12345"))), mamErr("q", "cancel", "item-not-found", "no message 12345")},
		{"unknown ids", q(form(field("ids", "12345"))), mamErr("q", "cancel", "item-not-found", "no message 12345")},
		{"unknown field", q(form(field("fulltext", "x"))), mamErr("q", "cancel", "feature-not-implemented", "unknown field fulltext")},
		{"wrong FORM_TYPE", `<iq type='set' id='q'><query xmlns='urn:xmpp:mam:2'><x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE'><value>urn:xmpp:mam:1</value></field></x></query></iq>`,
			mamErr("q", "modify", "bad-request", "FORM_TYPE must be urn:xmpp:mam:2")},
		{"bad start", q(form(field("start", "yesterday"))), mamErr("q", "modify", "bad-request", "bad start timestamp")},
		{"bad max", q(rsm(`<max>-1</max>`)), mamErr("q", "modify", "bad-request", "bad max")},
		{"after and before", q(rsm(`<after>` + ids[1] + `</after><before>` + ids[3] + `</before>`)),
			mamErr("q", "modify", "bad-request", "after and before together: use the after-id and before-id fields")},
		{"another account's archive", `<iq type='set' id='q' to='alice@localhost'><query xmlns='urn:xmpp:mam:2'/></iq>`,
			`<iq type='error' id='q' from='alice@localhost' to='bob@localhost/b'><error type='auth'><forbidden ` + stanzasNS + `/></error></iq>`},
	}
	for _, tc := range errs {
		b.exchange(t, tc.query, tc.want)
	}

	// The archive's own address may be given.
	b.send(`<iq type='set' id='q' to='bob@localhost'><query xmlns='urn:xmpp:mam:2'>` + rsm(`<max>1</max>`) + `</query></iq>`)
	b.expect(t, `<message from='bob@localhost' to='bob@localhost/b'><result xmlns='urn:xmpp:mam:2' id='`+ids[1]+`'><forwarded xmlns='urn:xmpp:forward:0'><delay xmlns='urn:xmpp:delay' stamp='`+stamp(times[1])+`'/>`+fwd[1]+`</forwarded></result></message>`)
	b.expect(t, `<iq type='result' id='q' from='bob@localhost'><fin xmlns='urn:xmpp:mam:2'><set xmlns='http://jabber.org/protocol/rsm'><first>`+ids[1]+`</first><last>`+ids[1]+`</last><count>13</count></set></fin></iq>`)

	b.exchange(t, `<iq type='get' id='m'><metadata xmlns='urn:xmpp:mam:2'/></iq>`,
		`<iq type='result' id='m'><metadata xmlns='urn:xmpp:mam:2'><start id='`+ids[1]+`' timestamp='`+stamp(times[1])+`'/><end id='`+ids[13]+`' timestamp='`+stamp(times[13])+`'/></metadata></iq>`)
}

// archiveIDs returns the result IDs and bodies of full's whole archive, in
// order, by one query on r.
func archiveBodies(t *testing.T, r *rawConn, qid string) []string {
	t.Helper()
	got := r.exchange(t, `<iq type='set' id='`+qid+`'><query xmlns='urn:xmpp:mam:2'/></iq>`, `{**}<iq type='result' id='`+qid+`'>{**}</iq>`)
	var out []string
	for _, m := range regexp.MustCompile(`<body>([^<]*)</body>`).FindAllStringSubmatch(got, -1) {
		out = append(out, m[1])
	}
	return out
}

// TestMAMPrefs: preferences get and set (always, roster, never and the
// lists), their effect on what is archived and on the stanza ID, the
// configured default, and a malformed set.
func TestMAMPrefs(t *testing.T) {
	srv, _, _ := mamServer(t, nil, "alice", "bob", "carol", "dave")
	a := online(t, srv, "alice", "a")
	b := online(t, srv, "bob", "b")
	c := online(t, srv, "carol", "c")
	d := online(t, srv, "dave", "d")
	msg := func(from *rawConn, fromFull, id string, archived bool) {
		t.Helper()
		from.send(`<message to='bob@localhost' type='chat' id='` + id + `'><body>` + id + `</body></message>`)
		s := ""
		if archived {
			s = sid("bob@localhost")
		}
		b.expect(t, `<message to='bob@localhost' type='chat' id='`+id+`' from='`+fromFull+`'><body>`+id+`</body>`+s+`</message>`)
	}
	b.exchange(t, `<iq type='get' id='p1'><prefs xmlns='urn:xmpp:mam:2'/></iq>`,
		`<iq type='result' id='p1'><prefs xmlns='urn:xmpp:mam:2' default='always'><always></always><never></never></prefs></iq>`)
	msg(a, "alice@localhost/a", "always1", true)

	// never, with alice always (a full JID is kept as its bare JID).
	b.exchange(t, `<iq type='set' id='p2'><prefs xmlns='urn:xmpp:mam:2' default='never'><always><jid>alice@localhost/x</jid></always><never/></prefs></iq>`,
		`<iq type='result' id='p2'><prefs xmlns='urn:xmpp:mam:2' default='never'><always><jid>alice@localhost</jid></always><never></never></prefs></iq>`)
	b.exchange(t, `<iq type='get' id='p3' to='bob@localhost'><prefs xmlns='urn:xmpp:mam:2'/></iq>`,
		`<iq type='result' id='p3' from='bob@localhost'><prefs xmlns='urn:xmpp:mam:2' default='never'><always><jid>alice@localhost</jid></always><never></never></prefs></iq>`)
	msg(a, "alice@localhost/a", "never-but-alice", true)
	msg(c, "carol@localhost/c", "never-carol", false)

	// roster, with alice never: carol is in bob's roster, dave is not. The
	// roster is looked up by the writer, so no stanza ID is given.
	b.exchange(t, `<iq type='set' id='r1'><query xmlns='jabber:iq:roster'><item jid='carol@localhost'/></query></iq>`,
		`<iq type='result' id='r1'/>`)
	b.exchange(t, `<iq type='set' id='p4'><prefs xmlns='urn:xmpp:mam:2' default='roster'><never><jid>alice@localhost</jid></never></prefs></iq>`,
		`<iq type='result' id='p4'><prefs xmlns='urn:xmpp:mam:2' default='roster'><always></always><never><jid>alice@localhost</jid></never></prefs></iq>`)
	msg(a, "alice@localhost/a", "roster-alice-never", false)
	msg(c, "carol@localhost/c", "roster-carol", false)
	msg(d, "dave@localhost/d", "roster-dave", false)

	if got, want := archiveBodies(t, b, "q1"), []string{"always1", "never-but-alice", "roster-carol"}; strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("bob's archive = %v, want %v", got, want)
	}
	// The senders' archives follow their own (default) preferences.
	if got := archiveBodies(t, c, "q2"); strings.Join(got, ",") != "never-carol,roster-carol" {
		t.Errorf("carol's archive = %v", got)
	}

	for _, tc := range []struct{ send, want string }{
		{`<iq type='set' id='e1'><prefs xmlns='urn:xmpp:mam:2' default='sometimes'/></iq>`,
			`<iq type='error' id='e1' to='bob@localhost/b'><error type='modify'><bad-request ` + stanzasNS + `/><text ` + stanzasNS + `>default must be always, roster or never</text></error></iq>`},
		{`<iq type='set' id='e2'><prefs xmlns='urn:xmpp:mam:2' default='always'><always><jid>@@</jid></always></prefs></iq>`,
			`<iq type='error' id='e2' to='bob@localhost/b'><error type='modify'><bad-request ` + stanzasNS + `/><text ` + stanzasNS + `>bad jid @@</text></error></iq>`},
		{`<iq type='get' id='e3' to='alice@localhost'><prefs xmlns='urn:xmpp:mam:2'/></iq>`,
			`<iq type='error' id='e3' from='alice@localhost' to='bob@localhost/b'><error type='auth'><forbidden ` + stanzasNS + `/></error></iq>`},
	} {
		b.exchange(t, tc.send, tc.want)
	}
}

// TestMAMDefaultNever: mam.default = never archives nothing for accounts
// without preferences, and says so.
func TestMAMDefaultNever(t *testing.T) {
	srv, _, _ := mamServer(t, func(c *config.Config) { c.MAM.Default = "never" }, "alice", "bob")
	a := online(t, srv, "alice", "a")
	b := online(t, srv, "bob", "b")
	a.send(`<message to='bob@localhost' type='chat' id='m1'><body>hi</body></message>`)
	b.expect(t, `<message to='bob@localhost' type='chat' id='m1' from='alice@localhost/a'><body>hi</body></message>`)
	b.exchange(t, `<iq type='get' id='p1'><prefs xmlns='urn:xmpp:mam:2'/></iq>`,
		`<iq type='result' id='p1'><prefs xmlns='urn:xmpp:mam:2' default='never'><always></always><never></never></prefs></iq>`)
	b.exchange(t, `<iq type='set' id='q1'><query xmlns='urn:xmpp:mam:2'/></iq>`, fin("q1", true, "", "", 0))
	a.exchange(t, `<iq type='set' id='q1'><query xmlns='urn:xmpp:mam:2'/></iq>`, fin("q1", true, "", "", 0))
}

// TestMAMOffline: a message to an account with no session is archived
// for it and delivered from offline storage with the same stanza ID as its
// archived copy; a session that queried the archive before its initial
// presence does not get it again from offline storage (as Prosody does),
// and it is deleted there.
func TestMAMOffline(t *testing.T) {
	srv, _, _ := mamServer(t, nil, "alice", "bob", "carol")
	a := online(t, srv, "alice", "a")
	a.send(`<message to='bob@localhost' type='chat' id='o1'><body>while you were out</body></message>`)
	a.send(`<message to='bob@localhost/gone' type='chat' id='o2'><body>to a resource</body></message>`)
	a.send(`<message to='carol@localhost' type='chat' id='o3'><body>carol's</body></message>`)
	a.sync(t, "s1")
	if !waitFor(ioTimeout, func() bool { return srv.Stats().Modules["offline.stored"] == 3 }) {
		t.Fatalf("stats %v", srv.Stats().Modules)
	}

	b := dialRaw(t, srv)
	b.scramLogin("bob", testPassword, "b")
	b.exchange(t, `<presence/>`, `<presence from='bob@localhost/b'/>`)
	got1 := b.expect(t, `<message to='bob@localhost' type='chat' id='o1' from='alice@localhost/a'><body>while you were out</body>`+sid("bob@localhost")+
		`<delay xmlns='urn:xmpp:delay' from='localhost' stamp='{*}'/></message>`)
	got2 := b.expect(t, `<message to='bob@localhost/gone' type='chat' id='o2' from='alice@localhost/a'><body>to a resource</body>`+sid("bob@localhost")+
		`<delay xmlns='urn:xmpp:delay' from='localhost' stamp='{*}'/></message>`)
	id1, id2 := stanzaID(t, got1, "bob@localhost"), stanzaID(t, got2, "bob@localhost")
	b.send(`<iq type='set' id='q1'><query xmlns='urn:xmpp:mam:2'/></iq>`)
	b.expect(t, mamResult("bob@localhost/b", "", id1, `<message xmlns='jabber:client' to='bob@localhost' type='chat' id='o1' from='alice@localhost/a'><body>while you were out</body></message>`))
	b.expect(t, mamResult("bob@localhost/b", "", id2, `<message xmlns='jabber:client' to='bob@localhost/gone' type='chat' id='o2' from='alice@localhost/a'><body>to a resource</body></message>`))
	b.expect(t, fin("q1", true, id1, id2, 2))

	// carol queries first: the offline copy is not delivered (the
	// metadata answer, queued behind the offline delivery on this
	// session, comes right after the presence), and it is gone.
	c := dialRaw(t, srv)
	c.scramLogin("carol", testPassword, "c")
	got := c.exchange(t, `<iq type='set' id='q1'><query xmlns='urn:xmpp:mam:2'/></iq>`, `{**}</iq>`)
	if !strings.Contains(got, "<body>carol&apos;s</body>") && !strings.Contains(got, "<body>carol's</body>") {
		t.Fatalf("carol's archive: %s", got)
	}
	c.exchange(t, `<presence/>`, `<presence from='carol@localhost/c'/>`)
	c.exchange(t, `<iq type='get' id='m'><metadata xmlns='urn:xmpp:mam:2'/></iq>`, `<iq type='result' id='m'><metadata xmlns='urn:xmpp:mam:2'>{**}</metadata></iq>`)
	if n := srv.Stats().Modules["offline.skipped_archived"]; n != 1 {
		t.Errorf("offline.skipped_archived = %d, want 1", n)
	}
	c2 := dialRaw(t, srv)
	c2.scramLogin("carol", testPassword, "c2")
	c2.exchange(t, `<presence/>`, `<presence from='carol@localhost/c2'/>`)
	c2.expect(t, `<presence from='carol@localhost/c' to='carol@localhost/c2'/>`)
	c2.exchange(t, `<iq type='get' id='m'><metadata xmlns='urn:xmpp:mam:2'/></iq>`, `<iq type='result' id='m'><metadata xmlns='urn:xmpp:mam:2'>{**}</metadata></iq>`)
}

// TestMAMStreamManagementOverflow: messages a session received but never
// acknowledged go to offline storage when its stream ends, and come back
// with the stanza IDs they had, which are their archive IDs.
func TestMAMStreamManagementOverflow(t *testing.T) {
	srv, _, _ := mamServer(t, func(c *config.Config) { c.SM.MaxQueueStanzas = 2 }, "ann", "ben")
	ann := dialRaw(t, srv)
	ann.scramLogin("ann", testPassword, "phone")
	ann.exchange(t, `<enable xmlns='`+nsSM+`' resume='true'/>`, `<enabled xmlns='`+nsSM+`' id='{*}' resume='true' max='300'/>`)
	ben := online(t, srv, "ben", "b")
	for _, body := range []string{"one", "two", "three"} {
		sendChat(ben, "ann@localhost/phone", body, body)
	}
	got := ann.closed()
	if !strings.Contains(got, "resource-constraint") {
		t.Fatalf("stream: %q", got)
	}
	first := map[string]string{}
	for _, m := range regexp.MustCompile(`id='(one|two)' from='ben@localhost/b'><body>[a-z]+</body><stanza-id xmlns='urn:xmpp:sid:0' by='ann@localhost' id='([^']*)'/>`).FindAllStringSubmatch(got, -1) {
		first[m[1]] = m[2]
	}
	if len(first) != 2 {
		t.Fatalf("stanza ids before the overflow: %v in %q", first, got)
	}
	if !waitFor(ioTimeout, func() bool { return srv.Stats().Modules["offline.stored"] == 3 }) {
		t.Fatalf("stats %v", srv.Stats().Modules)
	}
	again := dialRaw(t, srv)
	again.scramLogin("ann", testPassword, "phone")
	again.exchange(t, `<presence/>`, `<presence from='ann@localhost/phone'/>`)
	for _, body := range []string{"one", "two", "three"} {
		got := again.expect(t, `<message type='chat' to='ann@localhost/phone' id='`+body+`' from='ben@localhost/b'><body>`+body+`</body>`+sid("ann@localhost")+`<delay xmlns='urn:xmpp:delay' from='localhost' stamp='{*}'/></message>`)
		id := stanzaID(t, got, "ann@localhost")
		if want, ok := first[body]; ok && id != want {
			t.Errorf("%s: stanza id %s after the overflow, %s before", body, id, want)
		}
		first[body] = id
	}
	archived := again.exchange(t, `<iq type='set' id='q'><query xmlns='urn:xmpp:mam:2'/></iq>`, `{**}<iq type='result' id='q'>{**}</iq>`)
	for body, id := range first {
		if !strings.Contains(archived, `<result xmlns='urn:xmpp:mam:2' id='`+id+`'>`) {
			t.Errorf("%s: no archived message with id %s: %s", body, id, archived)
		}
	}
}

// TestMAMRetention: the retention job deletes messages older than
// mam.retention, in bounded batches on the worker pool, before a query.
func TestMAMRetention(t *testing.T) {
	srv, _, clock := mamServer(t, func(c *config.Config) { c.MAM.Retention = time.Hour }, "alice", "bob")
	a := online(t, srv, "alice", "a")
	b := online(t, srv, "bob", "b")
	a.send(`<message to='bob@localhost' type='chat' id='old'><body>old</body></message>`)
	b.skipUntil(`<body>old</body>`)
	clock.add(90 * time.Minute)
	a.send(`<message to='bob@localhost' type='chat' id='new'><body>new</body></message>`)
	b.skipUntil(`<body>new</body>`)
	b.skipUntil(`</message>`)
	if got := archiveBodies(t, b, "q1"); strings.Join(got, ",") != "new" {
		t.Errorf("bob's archive after retention = %v, want [new]", got)
	}
	if got := archiveBodies(t, a, "q2"); strings.Join(got, ",") != "new" {
		t.Errorf("alice's archive after retention = %v, want [new]", got)
	}
	if n := srv.Stats().Modules["mam.expired"]; n != 2 {
		t.Errorf("mam.expired = %d, want 2", n)
	}
}

// TestMAMAccountRemoval: removing the account (XEP-0077) deletes its
// archive and preferences.
func TestMAMAccountRemoval(t *testing.T) {
	srv, store, _ := mamServer(t, nil, "alice", "bob")
	a := online(t, srv, "alice", "a")
	b := online(t, srv, "bob", "b")
	a.send(`<message to='bob@localhost' type='chat' id='m1'><body>hi</body></message>`)
	b.skipUntil(`</message>`)
	b.exchange(t, `<iq type='set' id='p'><prefs xmlns='urn:xmpp:mam:2' default='roster'/></iq>`,
		`<iq type='result' id='p'><prefs xmlns='urn:xmpp:mam:2' default='roster'><always></always><never></never></prefs></iq>`)
	if got := archiveBodies(t, b, "q1"); len(got) != 1 {
		t.Fatalf("bob's archive = %v", got)
	}
	b.send(`<iq type='set' id='rm'><query xmlns='jabber:iq:register'><remove/></query></iq>`)
	b.closed()
	ctx, cancel := contextTimeout()
	defer cancel()
	items, err := store.ArchivePage(ctx, storage.ArchiveQuery{User: "bob", Max: 10})
	if err != nil || len(items) != 0 {
		t.Errorf("bob's archive after removal: %d items, %v", len(items), err)
	}
	if _, ok, err := store.ArchivePrefs(ctx, "bob"); ok || err != nil {
		t.Errorf("bob's prefs after removal: %v, %v", ok, err)
	}
	// alice keeps her side of the conversation.
	if got := archiveBodies(t, a, "q2"); len(got) != 1 {
		t.Errorf("alice's archive = %v", got)
	}
	// bob registered again starts with the default preferences.
	if err := store.AddAccount(ctx, "bob", mustCredentials(t)); err != nil {
		t.Fatal(err)
	}
	b2 := online(t, srv, "bob", "b")
	b2.exchange(t, `<iq type='get' id='p'><prefs xmlns='urn:xmpp:mam:2'/></iq>`,
		`<iq type='result' id='p'><prefs xmlns='urn:xmpp:mam:2' default='always'><always></always><never></never></prefs></iq>`)
}

func mustCredentials(t *testing.T) sasl.Credentials {
	t.Helper()
	c, err := sasl.NewCredentials(testPassword, sasl.DefaultIterations)
	if err != nil {
		t.Fatal(err)
	}
	return c
}
