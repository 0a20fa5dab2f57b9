package server_test

import (
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

// post sends an empty POST to url and returns the status and body.
func post(t *testing.T, url string) (int, string) {
	t.Helper()
	c := http.Client{Timeout: ioTimeout}
	resp, err := c.Post(url, "text/plain", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// countMessages adds the id of every <message/> in s to got.
func countMessages(s string, got map[string]int) int {
	n := 0
	for _, part := range strings.Split(s, "<message ")[1:] {
		n++
		if i := strings.Index(part, "id='"); i >= 0 {
			id := part[i+4:]
			got[id[:strings.IndexByte(id, '\'')]]++
		}
	}
	return n
}

// TestClusterDrain: node b drains while alice, on node a, sends messages
// to bob on b. bob's client, with stream management, sees its TCP
// connection close without a stream error, resumes on a with the count of
// what it received, and gets the rest: every message exactly once, and
// no new login. carl, without stream management, gets see-other-host
// naming a; a new connection to b gets it too. The drain returns once
// bob's session has left b, and b stops.
func TestClusterDrain(t *testing.T) {
	dsn := clusterDSN(t)
	_, url := testNATS(t)
	ca, cb := clusterConfig(t, url, dsn, "a"), clusterConfig(t, url, dsn, "b")
	cb.Cluster.HandoverTimeout = 300 * time.Millisecond
	a := startNode(t, ca, "alice", "bob", "carl")
	other := a.Addr().String()
	cb.Cluster.SeeOtherHost = other
	b := startNode(t, cb)
	const bobFull = "bob@localhost/phone"

	alice := dialRaw(t, a)
	aliceFull := alice.scramLogin("alice", testPassword, "a")
	bob := dialRaw(t, b)
	bob.scramLogin("bob", testPassword, "phone")
	id := enableResume(t, bob)
	carl := dialRaw(t, b)
	carl.scramLogin("carl", testPassword, "c")
	seen(t, a, "bob", "phone", false)

	total := 0
	send := func(n int) {
		for range n {
			sendChat(alice, bobFull, "m"+strconv.Itoa(total), strconv.Itoa(total))
			total++
		}
		alice.sync(t, "s"+strconv.Itoa(total))
	}
	send(20)
	got := make(map[string]int)
	first := bob.skipUntil(chat(aliceFull, bobFull, "m19", "19"))

	// The admin API starts the drain (krill cluster drain calls it).
	if code, body := post(t, "http://"+b.AdminAddr().String()+"/cluster/drain"); code != http.StatusAccepted || body != "draining\n" {
		t.Fatalf("POST /cluster/drain: %d %q", code, body)
	}
	if code, _ := post(t, "http://"+b.AdminAddr().String()+"/cluster/drain"); code != http.StatusConflict {
		t.Fatalf("a second POST /cluster/drain: %d", code)
	}
	if code, body := get(t, "http://"+b.AdminAddr().String()+"/readyz"); code != http.StatusServiceUnavailable || body != "draining\n" {
		t.Fatalf("readyz while draining: %d %q", code, body)
	}
	if _, m := get(t, "http://"+b.AdminAddr().String()+"/metrics"); !strings.Contains(m, "krill_cluster_draining 1\n") {
		t.Fatalf("metrics while draining:\n%s", grepLines(m, "krill_cluster"))
	}
	send(20) // during the drain: before or after bob's connection closes
	wantSOH := `<stream:error><see-other-host xmlns='urn:ietf:params:xml:ns:xmpp-streams'>` + other + `</see-other-host></stream:error></stream:stream>`
	if out := carl.closed(); out != wantSOH {
		t.Fatalf("carl got %q", out)
	}
	rest := bob.closed()
	if strings.Contains(rest, "<stream:error>") {
		t.Fatalf("bob's connection closed with a stream error: %q", rest)
	}
	h := countMessages(first, got) + countMessages(rest, got)
	send(20) // to bob's parked session on b

	// A new connection to the draining node is sent to the other one.
	late := dialRaw(t, b)
	late.send(clientHeader)
	if out := late.closed(); !strings.HasSuffix(out, wantSOH) {
		t.Fatalf("a new connection to the draining node got %q", out)
	}

	next := dialRaw(t, a)
	next.scramAuth("bob", testPassword)
	next.send(`<resume xmlns='` + nsSM + `' previd='` + id + `' h='` + strconv.Itoa(h) + `'/>`)
	next.expect(t, `<resumed xmlns='`+nsSM+`' previd='`+id+`' h='0'/>`)
	send(20) // after the resumption: to a directly, or through b
	var after string
	if !waitFor(ioTimeout, func() bool {
		next.send(`<iq type='get' id='p' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>`)
		after += next.skipUntil(`<iq type='result' id='p' from='localhost'/>`)
		seen := make(map[string]int)
		countMessages(after, seen)
		return len(seen)+len(got) >= total
	}) {
		t.Logf("messages after the resumption: %q", after)
	}
	resent := countMessages(after, got)
	t.Logf("%d received before the connection closed, %d after the resumption on a", h, resent)
	for i := range total {
		if n := got[fmt.Sprintf("m%d", i)]; n != 1 {
			t.Errorf("message m%d arrived %d times", i, n)
		}
	}
	select {
	case <-b.Drained():
		if err := b.DrainErr(); err != nil {
			t.Fatalf("drain: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the drain did not end")
	}
	_, metrics := get(t, "http://"+a.AdminAddr().String()+"/metrics")
	for _, want := range []string{`krill_cluster_handovers_total{result="in"} 1` + "\n", `krill_cluster_handovers_total{result="failed"} 0` + "\n",
		"krill_cluster_draining 0\n"} {
		if !strings.Contains(metrics, want) {
			t.Errorf("a's metrics lack %q:\n%s", want, grepLines(metrics, "krill_cluster"))
		}
	}
	if st := a.Stats(); st.Modules["sm.migrated_in"] != 1 || st.Modules["offline.stored"] != 0 {
		t.Fatalf("a: migrated in %d, stored offline %d", st.Modules["sm.migrated_in"], st.Modules["offline.stored"])
	}
	gone(t, a, "carl", "c")
}
