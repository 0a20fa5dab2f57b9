package server_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	msasl "mellium.im/sasl"

	"github.com/krill-xmpp/krill/config"
	"github.com/krill-xmpp/krill/server"
)

// smAck is a stream management <a/> with h.
func smAck(h string) string { return `<a xmlns='` + nsSM + `' h='` + h + `'/>` }

// TestClusterResumeAcrossNodes: ann's session on node a parks with an
// unacknowledged message; she resumes on node b: a hands the session
// over, b answers <resumed/> with a's counters, resends the unacknowledged
// message, and a message sent to her during the hand-over (it reaches a
// after the session has left, and is forwarded to b) arrives once, after
// the resent queue. Later messages go to b directly; nothing went to
// offline storage and a kept nothing.
func TestClusterResumeAcrossNodes(t *testing.T) {
	dsn := clusterDSN(t)
	_, url := testNATS(t)
	a := startNode(t, clusterConfig(t, url, dsn, "a"), "ann", "ben")
	b := startNode(t, clusterConfig(t, url, dsn, "b"))
	const annFull = "ann@localhost/phone"

	ann := dialRaw(t, a)
	ann.scramLogin("ann", testPassword, "phone")
	id := enableResume(t, ann)
	ben := dialRaw(t, b)
	benFull := ben.scramLogin("ben", testPassword, "b")
	seen(t, b, "ann", "phone", false)

	sendChat(ben, annFull, "m1", "one")
	ann.expect(t, chat(benFull, annFull, "m1", "one"))
	ann.cut()
	if !waitFor(ioTimeout, func() bool { return a.Stats().Modules["sm.parked_now"] == 1 }) {
		t.Fatal("ann's session did not park")
	}
	sendChat(ben, annFull, "m2", "two")
	ben.sync(t, "s1")

	// During the hand-over, with the session gone from a and not yet on
	// b, ben sends m3: a buffers it.
	server.SetHandOutHook(a, func() {
		sendChat(ben, annFull, "m3", "three")
		if !waitFor(ioTimeout, func() bool { return server.MovesBuffered(a) == 1 }) {
			t.Error("m3 was not buffered during the hand-over")
		}
	})
	next := dialRaw(t, b)
	next.scramAuth("ann", testPassword)
	next.exchange(t, `<resume xmlns='`+nsSM+`' previd='`+id+`' h='1'/>`,
		`<resumed xmlns='`+nsSM+`' previd='`+id+`' h='0'/>`+delayed(benFull, annFull, "m2", "two")+`<r xmlns='`+nsSM+`'/>`+
			chat(benFull, annFull, "m3", "three"))
	server.SetHandOutHook(a, nil)
	next.send(smAck("3"))
	seen(t, a, "ann", "phone", false)
	if e := a.ClusterNode().Find("ann", "phone"); e.Node != "b" {
		t.Fatalf("directory on a says %s holds ann/phone", e.Node)
	}
	sendChat(ben, annFull, "m4", "four")
	next.expect(t, chat(benFull, annFull, "m4", "four"))
	next.exchange(t, `<r xmlns='`+nsSM+`'/>`, smAck("0"))
	next.sync(t, "s2")

	if out, in, failed := server.HandoverCounts(a); out != 1 || in != 0 || failed != 0 {
		t.Errorf("a: handed out %d, in %d, failed %d", out, in, failed)
	}
	if out, in, failed := server.HandoverCounts(b); out != 0 || in != 1 || failed != 0 {
		t.Errorf("b: handed out %d, in %d, failed %d", out, in, failed)
	}
	am, bm := a.Stats().Modules, b.Stats().Modules
	for _, c := range []struct {
		name      string
		got, want uint64
	}{
		{"a sm.migrated_out", am["sm.migrated_out"], 1},
		{"a sm.parked_now", am["sm.parked_now"], 0},
		{"a sm.closed_parked", am["sm.closed_parked"], 0},
		{"b sm.migrated_in", bm["sm.migrated_in"], 1},
		{"b sm.resumed", bm["sm.resumed"], 1},
		{"a offline.stored", am["offline.stored"], 0},
		{"b offline.stored", bm["offline.stored"], 0},
	} {
		if c.got != c.want {
			t.Errorf("%s = %d, want %d", c.name, c.got, c.want)
		}
	}
}

// TestClusterResumeAcrossNodesSASL2: the session on node a is still
// attached (its connection looks alive) when alice resumes it inside
// SASL2's <authenticate/> on node b (XEP-0198 section 6): a closes the old
// connection with conflict, b answers <resumed/> inside <success/> and
// resends the unacknowledged message. An unknown token gets <failed/>
// (every node holding a session of the account said so) and the bind
// proceeds.
func TestClusterResumeAcrossNodesSASL2(t *testing.T) {
	dsn := clusterDSN(t)
	_, url := testNATS(t)
	tlsNode := func(name string) config.Config {
		cfg := clusterConfig(t, url, dsn, name)
		cfg.C2S.AllowPlaintext = false
		cfg.C2S.DirectTLSListen = "127.0.0.1:0"
		return cfg
	}
	ca, cb := tlsNode("a"), tlsNode("b")
	a := startNode(t, ca, "alice", "bob")
	b := startNode(t, cb)
	tca, tcb := clientTLS(t, ca), clientTLS(t, cb)

	a1, succ, a1JID := bind2Login(t, a, tca, "alice", uaA, "Phone", `<enable xmlns='urn:xmpp:sm:3' resume='true'/>`)
	id := between(succ, "id='", "' resume=")
	bob := tlsRaw(t, b, tcb)
	bobJID := bob.scramLoginOpened("bob", testPassword, "b")
	seen(t, b, "alice", a1JID[len("alice@localhost/"):], false)
	sendChat(bob, a1JID, "m1", "unacknowledged")
	a1.expect(t, chat(bobJID, a1JID, "m1", "unacknowledged"))

	r := sasl2TLS(t, b, tcb)
	r.sasl2Scram(t, msasl.ScramSha256Plus, "alice", testPassword,
		`<user-agent id='`+uaA+`'/><resume xmlns='urn:xmpp:sm:3' previd='`+id+`' h='0'/><bind xmlns='urn:xmpp:bind:0'><tag>Phone</tag></bind>`)
	r.expect(t, `<success xmlns='urn:xmpp:sasl:2'><additional-data>{*}</additional-data><authorization-identifier>`+a1JID+`</authorization-identifier>`+
		`<resumed xmlns='urn:xmpp:sm:3' previd='`+id+`' h='0'/></success>`+
		delayed(bobJID, a1JID, "m1", "unacknowledged")+`<r xmlns='`+nsSM+`'/>`)
	if got := a1.closed(); got != `<stream:error><conflict xmlns='urn:ietf:params:xml:ns:xmpp-streams'/><text xmlns='urn:ietf:params:xml:ns:xmpp-streams'>the session was resumed on another node</text></stream:error></stream:stream>` {
		t.Fatalf("old connection got %q", got)
	}
	r.exchange(t, `<a xmlns='`+nsSM+`' h='1'/><r xmlns='`+nsSM+`'/>`, `<a xmlns='`+nsSM+`' h='0'/>`)
	sendChat(bob, a1JID, "m2", "back")
	r.expect(t, chat(bobJID, a1JID, "m2", "back"))

	r2 := sasl2TLS(t, b, tcb)
	r2.sasl2Scram(t, msasl.ScramSha256Plus, "alice", testPassword,
		`<user-agent id='`+uaB+`'/><resume xmlns='urn:xmpp:sm:3' previd='AAAAAAAAAAAAAAAAAAAAAA' h='0'/><bind xmlns='urn:xmpp:bind:0'><tag>Desk</tag></bind>`)
	r2.expect(t, `<success xmlns='urn:xmpp:sasl:2'><additional-data>{*}</additional-data><authorization-identifier>alice@localhost/Desk/{*}</authorization-identifier>`+
		`<failed xmlns='urn:xmpp:sm:3'><item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></failed><bound xmlns='urn:xmpp:bind:0'></bound></success><stream:features></stream:features>`)
	if out, _, failed := server.HandoverCounts(a); out != 1 || failed != 0 {
		t.Fatalf("a handed out %d, failed %d", out, failed)
	}
}

// TestClusterResumeTimeout: the node holding the session does not answer
// within cluster.handover_timeout: the client gets item-not-found and may
// bind; the holder, its hand-over never claimed, ends the session as an
// expiry would, and the unacknowledged message goes to offline storage.
func TestClusterResumeTimeout(t *testing.T) {
	dsn := clusterDSN(t)
	_, url := testNATS(t)
	ca, cb := clusterConfig(t, url, dsn, "a"), clusterConfig(t, url, dsn, "b")
	ca.Cluster.HandoverTimeout, cb.Cluster.HandoverTimeout = 200*time.Millisecond, 200*time.Millisecond
	a := startNode(t, ca, "ann", "ben")
	b := startNode(t, cb)
	const annFull = "ann@localhost/phone"
	ann := dialRaw(t, a)
	ann.scramLogin("ann", testPassword, "phone")
	id := enableResume(t, ann)
	ben := dialRaw(t, b)
	benFull := ben.scramLogin("ben", testPassword, "b")
	seen(t, b, "ann", "phone", false)
	sendChat(ben, annFull, "m1", "one")
	ann.expect(t, chat(benFull, annFull, "m1", "one"))
	ann.cut()
	if !waitFor(ioTimeout, func() bool { return a.Stats().Modules["sm.parked_now"] == 1 }) {
		t.Fatal("ann's session did not park")
	}

	release := make(chan struct{})
	server.SetHandOutHook(a, func() { <-release })
	next := dialRaw(t, b)
	next.scramAuth("ann", testPassword)
	next.exchange(t, `<resume xmlns='`+nsSM+`' previd='`+id+`' h='0'/>`,
		`<failed xmlns='`+nsSM+`'><item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></failed>`)
	close(release)
	if !waitFor(ioTimeout, func() bool { return a.Stats().Modules["offline.stored"] == 1 }) {
		t.Fatalf("the unacknowledged message was not stored offline: %v", a.Stats().Modules)
	}
	if _, _, failed := server.HandoverCounts(a); failed != 1 {
		t.Fatalf("a counted %d failed hand-overs", failed)
	}
	gone(t, b, "ann", "phone")
	next.exchange(t, `<iq type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>phone</resource></bind></iq>`,
		`<iq type='result' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><jid>`+annFull+`</jid></bind></iq>`)
	next.send(`<presence/>`)
	next.expect(t, `<presence from='`+annFull+`'/>`+delayed(benFull, annFull, "m1", "one"))
}

// TestClusterResumeCarbonsOnce: bob's phone, with carbons, resumes on
// node b while his desk and carl stay on node a. Right after the
// hand-over, node a still holds the phone's old session (it forwards
// what reaches it) and its directory shows the phone on b: a message from
// carl to the desk gives the phone one carbon, not one through each.
func TestClusterResumeCarbonsOnce(t *testing.T) {
	dsn := clusterDSN(t)
	_, url := testNATS(t)
	a := startNode(t, clusterConfig(t, url, dsn, "a"), "bob", "carl")
	b := startNode(t, clusterConfig(t, url, dsn, "b"))

	phone := dialRaw(t, a)
	phone.scramLogin("bob", testPassword, "phone")
	id := enableResume(t, phone)
	phone.exchange(t, `<iq type='set' id='e1'><enable xmlns='urn:xmpp:carbons:2'/></iq>`, `<iq type='result' id='e1'/>`)
	phone.exchange(t, `<presence/>`, `<presence from='bob@localhost/phone'/>`)
	desk := dialRaw(t, a)
	desk.scramLogin("bob", testPassword, "desk")
	desk.send(`<presence/>`)
	desk.skipUntil(`<presence from='bob@localhost/phone' to='bob@localhost/desk'/>`)
	phone.expect(t, `<presence from='bob@localhost/desk'/>`)
	phone.exchange(t, `<r xmlns='`+nsSM+`'/>`, smAck("2"))
	phone.send(smAck("3"))
	phone.sync(t, "p1")
	phone.send(smAck("4"))
	carl := dialRaw(t, a)
	carlFull := carl.scramLogin("carl", testPassword, "c")
	seen(t, b, "bob", "phone", true)
	phone.cut()
	if !waitFor(ioTimeout, func() bool { return a.Stats().Modules["sm.parked_now"] == 1 }) {
		t.Fatal("the phone's session did not park")
	}

	next := dialRaw(t, b)
	next.scramAuth("bob", testPassword)
	next.exchange(t, `<resume xmlns='`+nsSM+`' previd='`+id+`' h='4'/>`, `<resumed xmlns='`+nsSM+`' previd='`+id+`' h='3'/>`)
	if !waitFor(ioTimeout, func() bool {
		e := a.ClusterNode().Find("bob", "phone")
		return e != nil && e.Node == "b"
	}) {
		t.Fatal("a's directory never showed the phone on b")
	}
	var want strings.Builder
	for i := range 2 {
		m := fmt.Sprintf(`<message to='bob@localhost/desk' type='chat' id='c%d'><body>%d</body></message>`, i, i)
		carl.send(m)
		fwd := fmt.Sprintf(`<message xmlns='jabber:client' to='bob@localhost/desk' type='chat' id='c%d' from='%s'><body>%d</body></message>`, i, carlFull, i)
		want.WriteString(carbon("received", "bob@localhost", "bob@localhost/phone", "chat", fwd))
	}
	next.expect(t, want.String())
	next.sync(t, "p2")
}
