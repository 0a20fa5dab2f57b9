package interop

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"encoding/xml"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/browser"
	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/chromedp"
	"mellium.im/xmlstream"
	"mellium.im/xmpp/jid"
	"mellium.im/xmpp/stanza"
)

// browserPage is the test page: @xmpp/client's browser bundle (its
// dist/xmpp.min.js, the global XMPP) logs in over Krill's WebSocket
// endpoint, sends its presence, and answers every chat message with
// "echo: " and its body. window.upload(to) shares a file as a browser
// client does with XEP-0363: a slot from upload.<domain>, a PUT with
// fetch() (after the CORS preflight its Authorization header causes),
// then the GET URL in a message to to; window.uploaded is its outcome.
// window.state and window.received are what the test reads; #log is what
// a screenshot shows.
const browserPage = `<!doctype html>
<html><head><meta charset="utf-8"><title>Krill browser test</title>
<style>body{font:14px monospace} #log{white-space:pre}</style></head>
<body><h1>Krill over WebSocket</h1><div id="state">loading</div><div id="log"></div>
<script src="/xmpp.min.js"></script>
<script>
const q = new URLSearchParams(location.search);
const { client, xml } = window.XMPP;
window.state = "connecting";
window.received = [];
function show(s) { document.getElementById("log").textContent += s + "\n"; }
function setState(s) { window.state = s; document.getElementById("state").textContent = s; show(s); }
const xmpp = client({ service: q.get("service"), domain: q.get("domain"),
  username: q.get("user"), password: q.get("password"), resource: "browser" });
xmpp.on("error", (e) => setState("error: " + (e.condition || "") + " " + e.message));
xmpp.on("stanza", async (st) => {
  if (!st.is("message") || st.attrs.type === "error") return;
  const body = st.getChildText("body");
  window.received.push({ from: st.attrs.from, body });
  show("got " + JSON.stringify(body) + " from " + st.attrs.from);
  await xmpp.send(xml("message", { to: st.attrs.from, type: "chat" }, xml("body", {}, "echo: " + body)));
});
xmpp.on("online", async (address) => {
  await xmpp.send(xml("presence"));
  setState("ready " + address.toString());
});
window.uploadText = "h\u00e9llo from the browser, " + "x".repeat(1000) + "\n";
window.uploaded = null;
window.upload = async (to) => {
  try {
    const data = new TextEncoder().encode(window.uploadText);
    const res = await xmpp.iqCaller.request(xml("iq", { type: "get", to: "upload." + q.get("domain") },
      xml("request", { xmlns: "urn:xmpp:http:upload:0", filename: "h\u00e9llo world.txt", size: String(data.length), "content-type": "text/plain; charset=utf-8" })));
    const slot = res.getChild("slot", "urn:xmpp:http:upload:0");
    const put = slot.getChild("put"), get = slot.getChild("get").attrs.url;
    const headers = { "Content-Type": "text/plain; charset=utf-8" };
    for (const h of put.getChildren("header")) headers[h.attrs.name] = h.text();
    const r = await fetch(put.attrs.url, { method: "PUT", headers, body: data });
    show("PUT " + r.status + " " + get);
    if (r.status === 201) {
      await xmpp.send(xml("message", { to, type: "chat" }, xml("body", {}, get)));
    }
    window.uploaded = { status: r.status, url: get, size: data.length };
  } catch (e) {
    show("upload failed: " + e);
    window.uploaded = { status: 0, url: String(e), size: 0 };
  }
};
xmpp.start().catch((e) => setState("error: " + e.message));
</script></body></html>
`

// TestBrowser is the web client in a real browser: Debian's chromium,
// headless, driven with chromedp, loads a page with @xmpp/client's browser
// bundle that logs in over Krill's wss:// endpoint; a Go client (mellium,
// over STARTTLS) sends it a message, the page answers, and both sides'
// bodies are checked exactly. On failure a screenshot and the page's log
// go to $KRILL_ARTIFACTS, or to a krill-browser-* directory under the
// system's temporary directory (the path is logged).
func TestBrowser(t *testing.T) {
	gate(t)
	chromium := lookPath(t, "chromium")
	bundle, err := filepath.Abs("xmppjs/node_modules/@xmpp/client/dist/xmpp.min.js")
	if err != nil {
		t.Fatal(err)
	}
	_, err = os.Stat(bundle)
	need(t, err == nil, "@xmpp/client is not installed in interop/xmppjs (npm ci --prefix interop/xmppjs)")
	var pkg struct{ Version string }
	if b, err := os.ReadFile("xmppjs/node_modules/@xmpp/client/package.json"); err == nil {
		_ = json.Unmarshal(b, &pkg)
	}

	srv := startServerWeb(t, krillBin(t), freePort(t), "", freePort(t), []string{"web-a", "web-b"})

	// The page's own origin: a test-only HTTP server on loopback.
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_, _ = w.Write([]byte(browserPage))
	})
	mux.HandleFunc("/xmpp.min.js", func(w http.ResponseWriter, r *http.Request) { http.ServeFile(w, r, bundle) })
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: waitTimeout}
	go func() { _ = hs.Serve(l) }()
	t.Cleanup(func() { _ = hs.Close() })

	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium),
		chromedp.NoSandbox, // the suite may run as root (CI)
		// The development certificate is self-signed; the page's own
		// origin is plain http on loopback.
		chromedp.Flag("ignore-certificate-errors", true),
		chromedp.WindowSize(900, 600),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancelAlloc()
	bctx, cancelCtx := chromedp.NewContext(actx)
	defer cancelCtx()
	// The first Do starts the browser, on a context without a timeout
	// (which would bound the browser's life); actions get one below.
	if err := chromedp.Do(bctx); err != nil {
		t.Fatalf("starting %s: %v", chromium, err)
	}
	v, err := cdp.Call(bctx, chromedp.FromContext(bctx).Browser, browser.GetVersion, cdp.Empty{})
	if err != nil {
		t.Fatalf("browser version: %v", err)
	}
	t.Logf("%s (Debian chromium %s), @xmpp/client %s (dist/xmpp.min.js)", v.Product, debVersion("chromium"), pkg.Version)
	ctx, cancelTimeout := context.WithTimeout(bctx, 2*waitTimeout)
	defer cancelTimeout()

	var (
		mu      sync.Mutex
		console []string
	)
	messages := chromedp.Console(bctx)
	go func() {
		for m, err := range messages {
			if err != nil {
				return
			}
			mu.Lock()
			console = append(console, m.String())
			mu.Unlock()
		}
	}()
	failed := true
	defer func() {
		if failed {
			mu.Lock()
			lines := append([]string(nil), console...)
			mu.Unlock()
			saveArtifacts(t, bctx, lines)
		}
	}()

	service := "wss://localhost:" + port(srv.web) + "/xmpp-websocket"
	page := fmt.Sprintf("http://%s/?service=%s&domain=%s&user=web-a&password=%s", l.Addr(), service, domain, strings.ReplaceAll(password, " ", "%20"))
	if err := chromedp.Do(ctx, chromedp.Navigate(page),
		chromedp.Poll[chromedp.Void](`window.state.startsWith("ready") || window.state.startsWith("error")`, chromedp.WithPollingTimeout(waitTimeout))); err != nil {
		t.Fatalf("page: %v", err)
	}
	state, err := chromedp.Run(ctx, chromedp.Evaluate[string](`window.state`))
	if err != nil {
		t.Fatal(err)
	}
	// With SASL2 and Bind 2 (XEP-0386), which @xmpp/client uses when
	// offered, "browser" is the resource's tag and the server adds to it.
	pageJID, ok := strings.CutPrefix(state, "ready ")
	if !ok || !strings.HasPrefix(pageJID, "web-a@localhost/browser/") {
		t.Fatalf("browser client state %q, want ready web-a@localhost/browser…", state)
	}

	s, got := melliumSession(t, srv, "web-b@"+domain)
	sctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	const body = "hello, browser"
	msg := stanza.Message{To: jid.MustParse("web-a@" + domain), Type: stanza.ChatMessage}.Wrap(
		xmlstream.Wrap(xmlstream.Token(xml.CharData(body)), xml.StartElement{Name: xml.Name{Local: "body"}}))
	if err := s.Send(sctx, msg); err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-got:
		if m.body != "echo: "+body || m.from != pageJID {
			t.Fatalf("the Go client got %q from %q, want %q from %s", m.body, m.from, "echo: "+body, pageJID)
		}
	case <-time.After(waitTimeout):
		t.Fatalf("no answer from the browser within %v", waitTimeout)
	}
	received, err := chromedp.Run(ctx, chromedp.Evaluate[[]struct{ From, Body string }](`window.received`))
	if err != nil {
		t.Fatal(err)
	}
	if len(received) != 1 || received[0].Body != body || !strings.HasPrefix(received[0].From, "web-b@localhost/") {
		t.Fatalf("the browser received %+v, want one %q from web-b@localhost", received, body)
	}

	// XEP-0363 from the page: a slot, a PUT with fetch(), the URL sent to
	// web-b, which fetches the file byte for byte.
	if _, err := chromedp.Run(ctx, chromedp.Evaluate[chromedp.Void](`window.upload("web-b@localhost"), undefined`)); err != nil {
		t.Fatal(err)
	}
	if err := chromedp.Do(ctx, chromedp.Poll[chromedp.Void](`window.uploaded !== null`, chromedp.WithPollingTimeout(waitTimeout))); err != nil {
		t.Fatalf("upload: %v", err)
	}
	up, err := chromedp.Run(ctx, chromedp.Evaluate[struct {
		Status int
		URL    string
		Size   int
	}](`window.uploaded`))
	if err != nil {
		t.Fatal(err)
	}
	if up.Status != 201 {
		t.Fatalf("the browser's upload: %+v", up)
	}
	select {
	case m := <-got:
		if m.body != up.URL || m.from != pageJID {
			t.Fatalf("the Go client got %q from %q, want the URL %q", m.body, m.from, up.URL)
		}
	case <-time.After(waitTimeout):
		t.Fatalf("no URL from the browser within %v", waitTimeout)
	}
	want, err := chromedp.Run(ctx, chromedp.Evaluate[string](`window.uploadText`))
	if err != nil {
		t.Fatal(err)
	}
	hc := &http.Client{Timeout: waitTimeout, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}} // the development certificate
	resp, err := hc.Get(up.URL)
	if err != nil {
		t.Fatal(err)
	}
	file, err := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if err != nil || resp.StatusCode != 200 || string(file) != want || len(file) != up.Size ||
		resp.Header.Get("Content-Type") != "text/plain; charset=utf-8" {
		t.Fatalf("GET %s: %d %q, %d bytes (%v); want %d bytes of the page's text", up.URL, resp.StatusCode, resp.Header.Get("Content-Type"), len(file), err, up.Size)
	}
	t.Logf("browser upload: PUT with fetch(), %d bytes, fetched back exactly from %s", len(file), up.URL)
	failed = false
}

// saveArtifacts keeps a screenshot of the page and its log for a failed
// browser test.
func saveArtifacts(t *testing.T, ctx context.Context, console []string) {
	dir := os.Getenv("KRILL_ARTIFACTS")
	if dir == "" {
		var err error
		if dir, err = os.MkdirTemp("", "krill-browser-"); err != nil {
			t.Logf("no artifacts: %v", err)
			return
		}
	}
	_ = os.MkdirAll(dir, 0o755)
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	png, err := chromedp.Run(sctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Logf("screenshot: %v", err)
	}
	text, err := chromedp.Run(sctx, chromedp.Evaluate[string](`document.body.innerText`))
	if err != nil {
		t.Logf("page text: %v", err)
	}
	shot := filepath.Join(dir, "browser.png")
	_ = os.WriteFile(shot, png, 0o644)
	_ = os.WriteFile(filepath.Join(dir, "page.txt"), []byte(text+"\n--- console\n"+strings.Join(console, "\n")+"\n"), 0o644)
	t.Logf("browser artifacts: %s (browser.png, page.txt)", dir)
}
