package server_test

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	c := http.Client{Timeout: ioTimeout}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestMetrics scrapes /metrics while connections sit in every state and
// checks the counts by state, then the health endpoints.
func TestMetrics(t *testing.T) {
	cfg := tlsConfig(t)
	cfg.C2S.AllowPlaintext = true
	srv := startServer(t, cfg, "rita", "sam")
	base := "http://" + srv.AdminAddr().String()

	plain := []*rawConn{dialRaw(t, srv), dialRaw(t, srv), dialRaw(t, srv)}
	for _, r := range plain {
		r.open()
	}
	tc := clientTLS(t, cfg)
	tlsConns := []*rawConn{tlsRaw(t, srv, tc), tlsRaw(t, srv, tc)}
	authed := dialRaw(t, srv)
	authed.scramLogin("rita", testPassword, "r")
	authedTLS := tlsRaw(t, srv, tc)
	authedTLS.scramLogin("sam", testPassword, "s")
	authed.send(`<message to='sam@localhost/s'><body>m</body></message>`)
	authedTLS.expect(t, `<message to='sam@localhost/s' from='rita@localhost/r'><body>m</body></message>`)

	want := []string{
		`krill_connections{kind="c2s",state="preauth_plain"} 3`,
		`krill_connections{kind="c2s",state="preauth_tls"} 2`,
		`krill_connections{kind="c2s",state="authenticated"} 2`,
		`krill_connections_accepted_total{kind="c2s"} 7`,
		`krill_logins_total{result="success"} 2`,
		`krill_stanzas_total{direction="in",kind="message"} 1`,
		`krill_stanzas_total{direction="out",kind="message"} 1`,
		`krill_tls_handshakes_total{result="started"} 3`,
		`krill_worker_wait_seconds_count`,
		`krill_event_loop_lag_seconds_count`,
		`go_goroutines`,
		`krill_process_resident_bytes_per_connection`,
	}
	var body string
	ok := waitFor(ioTimeout, func() bool {
		_, body = get(t, base+"/metrics")
		for _, w := range want {
			if !strings.Contains(body, w) {
				return false
			}
		}
		return true
	})
	if !ok {
		for _, w := range want {
			if !strings.Contains(body, w) {
				t.Errorf("metrics lack %q", w)
			}
		}
		t.FailNow()
	}
	// Closing moves the gauges down and counts the reason.
	_ = plain[0].conn.Close()
	_ = tlsConns[0].conn.Close()
	if !waitFor(ioTimeout, func() bool {
		_, body = get(t, base+"/metrics")
		return strings.Contains(body, `krill_connections{kind="c2s",state="preauth_plain"} 2`) &&
			strings.Contains(body, `krill_connections{kind="c2s",state="preauth_tls"} 1`) &&
			strings.Contains(body, `krill_connections_closed_total{kind="c2s",reason="dropped"} 2`)
	}) {
		t.Fatalf("after two closes: %s", grepLines(body, "krill_connections"))
	}

	if code, b := get(t, base+"/healthz"); code != 200 || b != "ok\n" {
		t.Fatalf("/healthz: %d %q", code, b)
	}
	if code, b := get(t, base+"/readyz"); code != 200 {
		t.Fatalf("/readyz: %d %q", code, b)
	}
}

func grepLines(s, prefix string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.HasPrefix(l, prefix) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// TestShutdown: a graceful shutdown sends system-shutdown to sessions after
// what was queued for them, finishes storing messages in flight to an
// offline user, refuses new connections; after a restart the messages are
// delivered.
func TestShutdown(t *testing.T) {
	cfg := testConfig(t)
	first := startServer(t, cfg, "tom", "uma")
	tom := dialRaw(t, first)
	tom.scramLogin("tom", testPassword, "t")
	const n = 20
	var batch strings.Builder
	for i := range n {
		batch.WriteString(`<message type='chat' to='uma@localhost'><body>m` + string(rune('a'+i)) + `</body></message>`)
	}
	tom.send(batch.String())
	// Shut down once the server has read them, while they are being stored.
	if !waitFor(ioTimeout, func() bool { return first.Stats().StanzasIn >= n }) {
		t.Fatalf("the server read %d of %d messages", first.Stats().StanzasIn, n)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- first.Shutdown(ctx) }()
	out := tom.closed()
	if !strings.Contains(out, "<system-shutdown "+streamsNS+"/>") {
		t.Fatalf("session got %q, want system-shutdown", out)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}

	second := startServer(t, cfg)
	uma := dialRaw(t, second)
	uma.scramLogin("uma", testPassword, "u")
	uma.send(`<presence/>`)
	// Every message, once each, in the order sent.
	uma.expect(t, `<presence from='uma@localhost/u'/>`)
	for i := range n {
		uma.expect(t, `<message type='chat' to='uma@localhost' from='tom@localhost/t'><body>m`+string(rune('a'+i))+`</body><delay xmlns='urn:xmpp:delay' from='localhost' stamp='{*}'/></message>`)
	}
	uma.sync(t, "end")
}
