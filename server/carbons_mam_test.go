package server_test

import (
	"regexp"
	"slices"
	"testing"
)

// resultIDRe finds the archive IDs of a query's results.
var resultIDRe = regexp.MustCompile(`<result xmlns='urn:xmpp:mam:2' id='([^']*)'>`)

// TestCarbonsStanzaID: with the archive on, XEP-0280 copies carry XEP-0359
// stanza IDs as XEP-0313 §5.1.1 asks: a <received/> copy the recipient's
// (the one the original carries), a <sent/> copy the sender's archive's
// and never the recipient's, none when an archive does not store the
// message; forged ones stay removed and a remote one stays.
//
// alice/a sends; alice/b and bob/y enabled carbons; bob/x gets the
// originals.
func TestCarbonsStanzaID(t *testing.T) {
	srv, _, _ := mamServer(t, nil, "alice", "bob")
	a := dialRaw(t, srv)
	a.scramLogin("alice", testPassword, "a")
	b := dialRaw(t, srv)
	b.scramLogin("alice", testPassword, "b")
	x := online(t, srv, "bob", "x")
	y := dialRaw(t, srv)
	y.scramLogin("bob", testPassword, "y")
	b.exchange(t, `<iq type='set' id='e1'><enable xmlns='urn:xmpp:carbons:2'/></iq>`, `<iq type='result' id='e1'/>`)
	y.exchange(t, `<iq type='set' id='e1'><enable xmlns='urn:xmpp:carbons:2'/></iq>`, `<iq type='result' id='e1'/>`)

	sidBy := func(by, id string) string {
		return `<stanza-id xmlns='urn:xmpp:sid:0' by='` + by + `' id='` + id + `'/>`
	}
	const remote = `<stanza-id xmlns='urn:xmpp:sid:0' by='room@muc.example' id='kept'/>`
	cases := []struct {
		name           string
		prefs          string // alice's default mode set first ("" for none)
		children       string // what alice/a sends in the message
		kept           string // the children as delivered, before any stanza-id the server adds
		bobID, aliceID bool   // whether bob's and alice's archives store it
	}{
		{"archived by both", "", `<body>one</body>`, `<body>one</body>`, true, true},
		{"forged removed, remote kept", "",
			`<body>two</body>` + sidBy("bob@localhost", "fake1") + sidBy("alice@localhost", "fake2") + remote,
			`<body>two</body>` + remote, true, true},
		{"not stored", "", `<body>three</body><no-store xmlns='urn:xmpp:hints'/>`, `<body>three</body><no-store xmlns='urn:xmpp:hints'/>`, false, false},
		{"the sender's archive stores nothing", "never", `<body>four</body>`, `<body>four</body>`, true, false},
	}
	var bobIDs, aliceIDs []string
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.prefs != "" {
				a.exchange(t, `<iq type='set' id='prefs'><prefs xmlns='urn:xmpp:mam:2' default='`+tc.prefs+`'><always/><never/></prefs></iq>`,
					`<iq type='result' id='prefs'>{**}</iq>`)
			}
			id := "c" + string(rune('1'+i))
			a.send(`<message to='bob@localhost/x' type='chat' id='` + id + `'>` + tc.children + `</message>`)
			attrs := ` to='bob@localhost/x' type='chat' id='` + id + `' from='alice@localhost/a'>`
			recv, sent := "", ""
			if tc.bobID {
				recv = sidBy("bob@localhost", "{*}")
			}
			if tc.aliceID {
				sent = sidBy("alice@localhost", "{*}")
			}
			got := x.expect(t, `<message`+attrs+tc.kept+recv+`</message>`)
			bobID := ""
			if tc.bobID {
				bobID = stanzaID(t, got, "bob@localhost")
				bobIDs = append(bobIDs, bobID)
				recv = sidBy("bob@localhost", bobID)
			}
			got = b.expect(t, carbon("sent", "alice@localhost", "alice@localhost/b", "chat", `<message xmlns='jabber:client'`+attrs+tc.kept+sent+`</message>`))
			if tc.aliceID {
				aliceID := stanzaID(t, got, "alice@localhost")
				if aliceID == bobID {
					t.Fatalf("the sent copy carries bob's archive ID %s", bobID)
				}
				aliceIDs = append(aliceIDs, aliceID)
			}
			y.expect(t, carbon("received", "bob@localhost", "bob@localhost/y", "chat", `<message xmlns='jabber:client'`+attrs+tc.kept+recv+`</message>`))
		})
	}
	// The IDs the copies carry are those of each archive.
	for _, q := range []struct {
		who  string
		c    *rawConn
		want []string
	}{{"bob", x, bobIDs}, {"alice", a, aliceIDs}} {
		got := q.c.exchange(t, mamQuery("q", "", ""), `{**}</iq>`)
		var ids []string
		for _, m := range resultIDRe.FindAllStringSubmatch(got, -1) {
			ids = append(ids, m[1])
		}
		if !slices.Equal(ids, q.want) {
			t.Errorf("%s's archive holds %v, the copies said %v", q.who, ids, q.want)
		}
	}
}
