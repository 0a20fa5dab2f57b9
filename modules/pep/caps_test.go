package pep

import (
	"strings"
	"testing"
	"time"

	"github.com/krill-xmpp/krill/modules/internal/iqtest"
)

// The two examples of XEP-0115 section 5, as the XEP gives them.
const (
	exodusInfo = `<query xmlns='http://jabber.org/protocol/disco#info'
         node='http://code.google.com/p/exodus#QgayPKawpkPSDYmwT/WM94uAlu0='>
    <identity category='client' name='Exodus 0.9.1' type='pc'/>
    <feature var='http://jabber.org/protocol/caps'/>
    <feature var='http://jabber.org/protocol/disco#info'/>
    <feature var='http://jabber.org/protocol/disco#items'/>
    <feature var='http://jabber.org/protocol/muc'/>
  </query>`
	psiInfo = `<query xmlns='http://jabber.org/protocol/disco#info'
         node='http://psi-im.org#q07IKJEyjvHSyhy//CH0CxmKi8w='>
    <identity xml:lang='en' category='client' name='Psi 0.11' type='pc'/>
    <identity xml:lang='el' category='client' name='&#936; 0.11' type='pc'/>
    <feature var='http://jabber.org/protocol/caps'/>
    <feature var='http://jabber.org/protocol/disco#info'/>
    <feature var='http://jabber.org/protocol/disco#items'/>
    <feature var='http://jabber.org/protocol/muc'/>
    <x xmlns='jabber:x:data' type='result'>
      <field var='FORM_TYPE' type='hidden'>
        <value>urn:xmpp:dataforms:softwareinfo</value>
      </field>
      <field var='ip_version' type='text-multi' >
        <value>ipv4</value>
        <value>ipv6</value>
      </field>
      <field var='os'>
        <value>Mac</value>
      </field>
      <field var='os_version'>
        <value>10.5.1</value>
      </field>
      <field var='software'>
        <value>Psi</value>
      </field>
      <field var='software_version'>
        <value>0.11</value>
      </field>
    </x>
  </query>`
)

// TestVerString: the XEP-0115 examples hash to their ver; malformed
// answers (5.4) are refused.
func TestVerString(t *testing.T) {
	cases := []struct {
		name, info, algo, want string
		bad                    bool
	}{
		{"simple", exodusInfo, "sha-1", "QgayPKawpkPSDYmwT/WM94uAlu0=", false},
		{"complex", psiInfo, "sha-1", "q07IKJEyjvHSyhy//CH0CxmKi8w=", false},
		{"duplicate feature", strings.Replace(exodusInfo, "disco#items", "disco#info", 1), "sha-1", "", true},
		{"duplicate identity", strings.Replace(exodusInfo, "<feature", "<identity category='client' name='Exodus 0.9.1' type='pc'/><feature", 1), "sha-1", "", true},
		{"unknown hash", exodusInfo, "md5", "", true},
		// A form whose FORM_TYPE is not hidden is left out of the hash.
		{"FORM_TYPE not hidden", strings.Replace(exodusInfo, "</query>", "<x xmlns='jabber:x:data' type='result'><field var='FORM_TYPE'><value>urn:x</value></field></x></query>", 1),
			"sha-1", "QgayPKawpkPSDYmwT/WM94uAlu0=", false},
		{"two FORM_TYPE values", strings.Replace(psiInfo, "<value>urn:xmpp:dataforms:softwareinfo</value>", "<value>a</value><value>b</value>", 1), "sha-1", "", true},
		{"same FORM_TYPE twice", strings.Replace(psiInfo, "</query>", "<x xmlns='jabber:x:data' type='result'><field var='FORM_TYPE' type='hidden'><value>urn:xmpp:dataforms:softwareinfo</value></field></x></query>", 1), "sha-1", "", true},
		{"not xml", "<query", "sha-1", "", true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, ver, err := verString([]byte(tc.info), tc.algo)
			if tc.bad {
				if err == nil {
					t.Fatalf("accepted, ver %q", ver)
				}
				return
			}
			if tc.want != "" && (err != nil || ver != tc.want) {
				t.Fatalf("ver %q, %v; want %q", ver, err, tc.want)
			}
		})
	}
}

// TestCapsCacheBound: the cache stays within its bytes, dropping the
// least recently used entry; a session keeps the entry it points at.
func TestCapsCacheBound(t *testing.T) {
	c := newCapsCache(400) // two entries of about 196 bytes
	var sessions []*iqtest.Session
	for i := range 5 {
		s := iqtest.Bound("u", itoa(uint64(i)))
		sessions = append(sessions, s)
		feature := "urn:example:" + itoa(uint64(i)) + "+notify"
		info := `<query xmlns='http://jabber.org/protocol/disco#info'><feature var='` + feature + `'/></query>`
		_, ver, err := verString([]byte(info), "sha-1")
		if err != nil {
			t.Fatal(err)
		}
		id, _, _ := c.seen(s, "n", ver, "sha-1")
		if id == "" {
			t.Fatalf("no query for a new hash %d", i)
		}
		if _, ok := c.resolve(id, s, []byte(info)); !ok {
			t.Fatal("query unknown")
		}
		if entries, bytes, _ := c.stats(); bytes > c.max || entries > 2 {
			t.Fatalf("after %d: %d entries, %d bytes > %d", i, entries, bytes, c.max)
		}
	}
	if !c.wants(sessions[0], "urn:example:0") {
		t.Fatal("a session lost its evicted entry")
	}
	// Another session announcing the evicted ver is asked again.
	info := `<query xmlns='http://jabber.org/protocol/disco#info'><feature var='urn:example:0+notify'/></query>`
	_, ver, _ := verString([]byte(info), "sha-1")
	if id, _, _ := c.seen(iqtest.Bound("v", "x"), "n", ver, "sha-1"); id == "" {
		t.Fatal("evicted hash not asked again")
	}
	// A cached one is not.
	info4 := `<query xmlns='http://jabber.org/protocol/disco#info'><feature var='urn:example:4+notify'/></query>`
	_, ver4, _ := verString([]byte(info4), "sha-1")
	if id, _, _ := c.seen(iqtest.Bound("w", "x"), "n", ver4, "sha-1"); id != "" {
		t.Fatal("cached hash asked")
	}
}

// TestCapsQueryTimeout: one query per unknown hash while it is pending;
// a client that does not answer within queryTimeout is replaced by the
// next session announcing the hash, and the answer serves all waiters.
func TestCapsQueryTimeout(t *testing.T) {
	c := newCapsCache(CapsCacheBytes)
	now := time.Unix(1000, 0)
	c.now = func() time.Time { return now }
	_, ver, _ := verString([]byte(exodusInfo), "sha-1")
	s1, s2, s3 := iqtest.Bound("a", "1"), iqtest.Bound("b", "2"), iqtest.Bound("c", "3")
	id1, _, _ := c.seen(s1, "http://code.google.com/p/exodus", ver, "sha-1")
	if id2, _, _ := c.seen(s2, "http://code.google.com/p/exodus", ver, "sha-1"); id1 == "" || id2 != "" {
		t.Fatalf("queries %q, %q: want one", id1, id2)
	}
	now = now.Add(queryTimeout + time.Second)
	id3, q, _ := c.seen(s3, "http://code.google.com/p/exodus", ver, "sha-1")
	if id3 == "" || id3 == id1 || q != "http://code.google.com/p/exodus#"+ver {
		t.Fatalf("after the timeout: query %q %q", id3, q)
	}
	if w, ok := c.resolve(id1, s1, []byte(exodusInfo)); ok || w != nil {
		t.Fatal("the replaced query was taken")
	}
	w, ok := c.resolve(id3, s3, []byte(exodusInfo))
	if !ok || len(w) != 3 {
		t.Fatalf("waiters %d, %v", len(w), ok)
	}
	if entries, _, queries := c.stats(); entries != 1 || queries != 2 {
		t.Fatalf("%d entries, %d queries", entries, queries)
	}
}

// TestCapsOnePendingPerSession: a session that keeps announcing new
// hashes holds one pending query, not one per hash.
func TestCapsOnePendingPerSession(t *testing.T) {
	c := newCapsCache(CapsCacheBytes)
	s := iqtest.Bound("mallory", "m")
	for i := range 100 {
		if id, _, _ := c.seen(s, "n", "ver"+itoa(uint64(i)), "sha-1"); id == "" {
			t.Fatalf("hash %d not asked", i)
		}
	}
	c.mu.Lock()
	n := len(c.pending)
	c.mu.Unlock()
	if n != 1 {
		t.Fatalf("%d queries pending, want 1", n)
	}
}

// TestCapsRemote: the resources of contacts at other servers are keyed by
// full JID, found by bare JID, forgotten on unavailable, bounded by
// MaxRemoteCaps, and each local owner serves one its last items once per
// caps announcement.
func TestCapsRemote(t *testing.T) {
	c := newCapsCache(CapsCacheBytes)
	const ver = "QgayPKawpkPSDYmwT/WM94uAlu0="
	r := remote("bob@b.test/phone")
	id, _, changed := c.seen(r, "http://code.google.com/p/exodus", ver, "sha-1")
	if id == "" || !changed {
		t.Fatalf("seen: id %q changed %v", id, changed)
	}
	if first, pending := c.serve(r, "alice"); !first || !pending {
		t.Fatalf("serve while pending: %v %v", first, pending)
	}
	if first, _ := c.serve(r, "alice"); first {
		t.Fatal("alice served twice")
	}
	exodus := exodusInfo
	if _, ok := c.resolve(id, remote("mallory@b.test/x"), []byte(exodus)); !ok {
		t.Fatal("an answer from another JID is not ours to take, but the id is")
	}
	waiters, ok := c.resolve(id, r, []byte(exodus))
	if !ok || len(waiters) != 1 || waiters[0] != (lastFor{r, "alice"}) {
		t.Fatalf("resolve: %v %v", waiters, ok)
	}
	if got := c.remotesWanting("bob@b.test", "http://jabber.org/protocol/muc"); len(got) != 0 {
		t.Fatalf("no +notify feature, yet %v", got)
	}
	if first, pending := c.serve(r, "carol"); !first || pending {
		t.Fatalf("serve known: %v %v", first, pending)
	}
	c.forget(r)
	if c.remN != 0 || len(c.rem) != 0 {
		t.Fatalf("forget left %d entries", c.remN)
	}
	c.remN = MaxRemoteCaps // full: a new resource is not followed
	if _, _, changed := c.seen(remote("dave@b.test/x"), "n", ver, "sha-1"); changed || c.entry(remote("dave@b.test/x")) != nil {
		t.Fatal("followed beyond MaxRemoteCaps")
	}
}

// TestCapsForgetDomain: a peer gone (hook.PeerGone) takes its resources'
// entries and the queries asked of them, and nothing of other domains
// (a domain that ends like it, a server's own resource included).
func TestCapsForgetDomain(t *testing.T) {
	c := newCapsCache(CapsCacheBytes)
	const ver = "QgayPKawpkPSDYmwT/WM94uAlu0="
	for _, r := range []remote{"bob@b.test/phone", "bob@b.test/pc", "carol@b.test/x", "b.test/srv", "dan@sub.b.test/x", "erin@c.test/y"} {
		c.seen(r, "n", ver, "sha-1")
	}
	if c.remoteCount() != 6 || len(c.pending) != 1 {
		t.Fatalf("before: %d entries, %d pending", c.remoteCount(), len(c.pending))
	}
	if n := (&Module{caps: c}).caps.forgetDomain("b.test"); n != 4 {
		t.Fatalf("forgot %d, want 4", n)
	}
	if c.remoteCount() != 2 || c.entry(remote("dan@sub.b.test/x")) == nil || c.entry(remote("erin@c.test/y")) == nil {
		t.Fatalf("after: %d entries %v", c.remoteCount(), c.rem)
	}
	if len(c.pending) != 0 || len(c.byID) != 0 {
		t.Fatalf("the query asked of bob@b.test/phone is still pending: %v", c.pending)
	}
	(&Module{caps: c}).PeerGone("c.test")
	if c.remoteCount() != 1 {
		t.Fatalf("PeerGone(c.test) left %d entries", c.remoteCount())
	}
}
