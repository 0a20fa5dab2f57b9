package server_test

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/krill-xmpp/krill/config"
	"github.com/krill-xmpp/krill/hook"
	"github.com/krill-xmpp/krill/modules"
	"github.com/krill-xmpp/krill/modules/upload"
	"github.com/krill-xmpp/krill/server"
)

// XEP-0363 HTTP upload over real sockets: slots over raw XML from a
// logged-in client, PUT and GET with net/http's client (an independent
// HTTP implementation) against the web listener.

const uploadSvc = "upload.localhost"

// uploadEnv is a server with the upload service, its clock, and the
// module (for Sweep).
type uploadEnv struct {
	srv    *server.Server
	mod    *upload.Module
	dir    string       // upload.path
	clock  atomic.Int64 // UnixNano
	http   *http.Client
	scheme string // http:// or https://
}

func (e *uploadEnv) now() time.Time { return time.Unix(0, e.clock.Load()) }

func (e *uploadEnv) advance(d time.Duration) { e.clock.Add(int64(d)) }

func startUpload(t *testing.T, edit func(*config.Config), users ...string) *uploadEnv {
	t.Helper()
	cfg := webConfig(t)
	cfg.Upload.MaxFileSize = 1 << 20
	if edit != nil {
		edit(&cfg)
	}
	tr := &http.Transport{DisableKeepAlives: true}
	e := &uploadEnv{http: &http.Client{Timeout: ioTimeout, Transport: tr}}
	e.clock.Store(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC).UnixNano())
	o := serverOpts{modsFor: func(st modules.Store) []hook.Module {
		mods := modules.Standard(st, modules.Options{Config: cfg, Now: e.now})
		for _, m := range mods {
			if u, ok := m.(*upload.Module); ok {
				e.mod = u
			}
		}
		return mods
	}}
	e.dir = cfg.UploadPath()
	e.scheme = "http://"
	if cfg.Web.TLS {
		e.scheme = "https://"
	}
	e.srv, _ = startServerOpts(t, cfg, o, users...)
	if cfg.Web.TLS {
		// The development certificate, made by the server at start.
		tr.TLSClientConfig = clientTLS(t, cfg)
	}
	return e
}

// slot is a slot as the service granted it.
type slot struct{ put, auth, get string }

// requestSlot asks for a slot and checks the exact answer; it returns the
// URLs and the header.
func (e *uploadEnv) requestSlot(t *testing.T, c *rawConn, id, name string, size int, ctype string) slot {
	t.Helper()
	base := e.scheme + e.srv.WebAddr().String() + "/upload/"
	c.send(fmt.Sprintf(`<iq type='get' id='%s' to='%s'><request xmlns='urn:xmpp:http:upload:0' filename='%s' size='%d' content-type='%s'/></iq>`, id, uploadSvc, name, size, ctype))
	got := c.expect(t, `<iq type='result' id='`+id+`' from='`+uploadSvc+`'><slot xmlns='urn:xmpp:http:upload:0'><put url='`+base+`{*}'><header name='Authorization'>Bearer {*}</header></put><get url='`+base+`{*}'/></slot></iq>`)
	s := slot{put: between(got, "<put url='", "'><header"), auth: between(got, "<header name='Authorization'>", "</header>"), get: between(got, "<get url='", "'/>")}
	if s.put != s.get || !strings.HasSuffix(s.put, "/"+name) {
		t.Fatalf("slot %+v for %q", s, name)
	}
	return s
}

func (e *uploadEnv) do(t *testing.T, method, url string, body []byte, hdr ...string) (*http.Response, []byte) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := e.http.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: body: %v", method, url, err)
	}
	return resp, b
}

func (e *uploadEnv) put(t *testing.T, s slot, body []byte, ctype string) (*http.Response, []byte) {
	t.Helper()
	return e.do(t, "PUT", s.put, body, "Authorization", s.auth, "Content-Type", ctype)
}

func wantStatus(t *testing.T, what string, resp *http.Response, body []byte, status int) {
	t.Helper()
	if resp.StatusCode != status {
		t.Fatalf("%s: status %d (%q), want %d", what, resp.StatusCode, body, status)
	}
}

func TestUploadDisco(t *testing.T) {
	e := startUpload(t, nil, "alice")
	c := dialRaw(t, e.srv)
	c.scramLogin("alice", testPassword, "r")
	c.exchange(t, `<iq type='get' id='i1' to='localhost'><query xmlns='http://jabber.org/protocol/disco#items'/></iq>`,
		`<iq type='result' id='i1' from='localhost'><query xmlns='http://jabber.org/protocol/disco#items'><item jid='conference.localhost'/><item jid='upload.localhost'/></query></iq>`)
	c.exchange(t, `<iq type='get' id='i2' to='upload.localhost'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>`,
		`<iq type='result' id='i2' from='upload.localhost'><query xmlns='http://jabber.org/protocol/disco#info'><identity category='store' type='file' name='HTTP File Upload'/>`+
			`<feature var='http://jabber.org/protocol/disco#info'/><feature var='urn:xmpp:http:upload:0'/>`+
			`<x xmlns='jabber:x:data' type='result'><field var='FORM_TYPE' type='hidden'><value>urn:xmpp:http:upload:0</value></field>`+
			`<field var='max-file-size'><value>1048576</value></field></x></query></iq>`)
	c.exchange(t, `<iq type='get' id='i3' to='upload.localhost'><query xmlns='http://jabber.org/protocol/disco#items'/></iq>`,
		`<iq type='result' id='i3' from='upload.localhost'><query xmlns='http://jabber.org/protocol/disco#items'/></iq>`)
}

func TestUploadPutGet(t *testing.T) {
	e := startUpload(t, func(c *config.Config) { c.Web.AllowedOrigins = []string{"https://chat.example"} }, "alice")
	c := dialRaw(t, e.srv)
	c.scramLogin("alice", testPassword, "r")
	data := make([]byte, 200<<10+17) // several chunks, not a multiple of one
	_, _ = rand.Read(data)
	s := e.requestSlot(t, c, "s1", "photo.jpg", len(data), "image/jpeg")

	// CORS preflight, as a browser sends it before its PUT.
	resp, body := e.do(t, "OPTIONS", s.put, nil, "Origin", "https://chat.example",
		"Access-Control-Request-Method", "PUT", "Access-Control-Request-Headers", "authorization,content-type")
	wantStatus(t, "preflight", resp, body, 204)
	for k, v := range map[string]string{"Access-Control-Allow-Origin": "https://chat.example",
		"Access-Control-Allow-Methods": "GET, HEAD, PUT, OPTIONS", "Access-Control-Allow-Headers": "Authorization, Content-Type"} {
		if got := resp.Header.Get(k); got != v {
			t.Errorf("preflight %s = %q, want %q", k, got, v)
		}
	}
	resp, _ = e.do(t, "OPTIONS", s.put, nil, "Origin", "https://evil.example")
	if got := resp.Header.Get("Access-Control-Allow-Origin"); got != "" {
		t.Errorf("preflight from another origin allowed: %q", got)
	}

	resp, body = e.put(t, s, data, "image/jpeg")
	wantStatus(t, "PUT", resp, body, 201)

	resp, body = e.do(t, "GET", s.get, nil, "Origin", "https://chat.example")
	wantStatus(t, "GET", resp, body, 200)
	if !bytes.Equal(body, data) {
		t.Fatalf("GET returned %d bytes, not the %d uploaded", len(body), len(data))
	}
	for k, v := range map[string]string{"Content-Type": "image/jpeg", "Content-Length": fmt.Sprint(len(data)),
		"Accept-Ranges": "bytes", "Access-Control-Allow-Origin": "https://chat.example", "X-Content-Type-Options": "nosniff"} {
		if got := resp.Header.Get(k); got != v {
			t.Errorf("GET %s = %q, want %q", k, got, v)
		}
	}

	resp, body = e.do(t, "HEAD", s.get, nil)
	wantStatus(t, "HEAD", resp, body, 200)
	if resp.ContentLength != int64(len(data)) || len(body) != 0 {
		t.Errorf("HEAD: Content-Length %d, body %d bytes", resp.ContentLength, len(body))
	}

	ranges := []struct {
		name, rng string
		status    int
		from, to  int // the bytes expected, data[from:to]
		crange    string
	}{
		{"first bytes", "bytes=0-9", 206, 0, 10, fmt.Sprintf("bytes 0-9/%d", len(data))},
		{"middle", "bytes=70000-70099", 206, 70000, 70100, fmt.Sprintf("bytes 70000-70099/%d", len(data))},
		{"open end", fmt.Sprintf("bytes=%d-", len(data)-5), 206, len(data) - 5, len(data), fmt.Sprintf("bytes %d-%d/%d", len(data)-5, len(data)-1, len(data))},
		{"suffix", "bytes=-3", 206, len(data) - 3, len(data), fmt.Sprintf("bytes %d-%d/%d", len(data)-3, len(data)-1, len(data))},
		{"last beyond the end", "bytes=5-999999999", 206, 5, len(data), fmt.Sprintf("bytes 5-%d/%d", len(data)-1, len(data))},
		{"unsatisfiable", fmt.Sprintf("bytes=%d-", len(data)), 416, 0, 0, fmt.Sprintf("bytes */%d", len(data))},
		{"several ranges: ignored", "bytes=0-1,5-6", 200, 0, len(data), ""},
		{"other unit: ignored", "items=0-1", 200, 0, len(data), ""},
	}
	for _, tc := range ranges {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := e.do(t, "GET", s.get, nil, "Range", tc.rng)
			wantStatus(t, tc.rng, resp, body, tc.status)
			if got := resp.Header.Get("Content-Range"); got != tc.crange {
				t.Errorf("Content-Range %q, want %q", got, tc.crange)
			}
			if tc.status != 416 && !bytes.Equal(body, data[tc.from:tc.to]) {
				t.Errorf("got %d bytes, want data[%d:%d]", len(body), tc.from, tc.to)
			}
		})
	}

	// The slot is used: a second PUT is refused, and the file stays.
	resp, body = e.put(t, s, data, "image/jpeg")
	wantStatus(t, "second PUT", resp, body, 409)
	resp, body = e.do(t, "GET", s.get, nil)
	wantStatus(t, "GET after the second PUT", resp, body, 200)
	if !bytes.Equal(body, data) {
		t.Fatal("the file changed")
	}
	// Another name under the same id, or an unknown id: 404.
	resp, body = e.do(t, "GET", strings.TrimSuffix(s.get, "photo.jpg")+"other.jpg", nil)
	wantStatus(t, "GET another name", resp, body, 404)
	resp, body = e.do(t, "GET", "http://"+e.srv.WebAddr().String()+"/upload/00112233445566778899aabbccddeeff/photo.jpg", nil)
	wantStatus(t, "GET unknown id", resp, body, 404)
}

func TestUploadRefused(t *testing.T) {
	e := startUpload(t, func(c *config.Config) { c.Upload.SlotTTL = time.Minute }, "alice")
	c := dialRaw(t, e.srv)
	c.scramLogin("alice", testPassword, "r")
	data := []byte("hello world")

	t.Run("file too large", func(t *testing.T) {
		c.exchange(t, `<iq type='get' id='big' to='upload.localhost'><request xmlns='urn:xmpp:http:upload:0' filename='big.bin' size='1048577'/></iq>`,
			`<iq type='error' id='big' from='upload.localhost' to='alice@localhost/r'><error type='modify'><not-acceptable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>`+
				`<text xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'>file too large: the maximum is 1048576 bytes</text>`+
				`<file-too-large xmlns='urn:xmpp:http:upload:0'><max-file-size>1048576</max-file-size></file-too-large></error></iq>`)
	})
	for _, tc := range []struct{ name, attrs, text string }{
		{"no filename", `size='3'`, "filename must be 1 to 255 bytes without '/' or control characters"},
		{"path in filename", `filename='../x' size='3'`, "filename must be 1 to 255 bytes without '/' or control characters"},
		{"no size", `filename='a.txt'`, "size must be a positive number of bytes"},
		{"zero size", `filename='a.txt' size='0'`, "size must be a positive number of bytes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c.exchange(t, `<iq type='get' id='bad' to='upload.localhost'><request xmlns='urn:xmpp:http:upload:0' `+tc.attrs+`/></iq>`,
				`<iq type='error' id='bad' from='upload.localhost' to='alice@localhost/r'><error type='modify'><bad-request xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>`+
					`<text xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'>`+strings.ReplaceAll(tc.text, "'", "&apos;")+`</text></error></iq>`)
		})
	}

	s := e.requestSlot(t, c, "s1", "a.txt", len(data), "text/plain")
	t.Run("wrong signature", func(t *testing.T) {
		forged := s.auth[:len(s.auth)-2] + "AA"
		if forged == s.auth {
			forged = s.auth[:len(s.auth)-2] + "BB"
		}
		resp, body := e.do(t, "PUT", s.put, data, "Authorization", forged, "Content-Type", "text/plain")
		wantStatus(t, "forged", resp, body, 403)
		resp, body = e.do(t, "PUT", s.put, data, "Content-Type", "text/plain")
		wantStatus(t, "no Authorization", resp, body, 403)
		other := e.requestSlot(t, c, "s2", "b.txt", len(data), "text/plain")
		resp, body = e.do(t, "PUT", s.put, data, "Authorization", other.auth, "Content-Type", "text/plain")
		wantStatus(t, "another slot's header", resp, body, 403)
	})
	t.Run("larger than announced", func(t *testing.T) {
		resp, body := e.put(t, s, append(data, '!'), "text/plain")
		wantStatus(t, "PUT", resp, body, 413)
	})
	t.Run("smaller than announced", func(t *testing.T) {
		resp, body := e.put(t, s, data[:5], "text/plain")
		wantStatus(t, "PUT", resp, body, 413)
	})
	t.Run("other content type", func(t *testing.T) {
		resp, body := e.put(t, s, data, "text/html")
		wantStatus(t, "PUT", resp, body, 415)
	})
	t.Run("expired", func(t *testing.T) {
		late := e.requestSlot(t, c, "s3", "late.txt", len(data), "text/plain")
		e.advance(time.Minute + time.Second)
		resp, body := e.put(t, late, data, "text/plain")
		wantStatus(t, "PUT", resp, body, 403)
		if string(body) != "upload: the slot has expired\n" {
			t.Errorf("body %q", body)
		}
	})
	// After all the refusals the slot is still unused (but expired now).
	t.Run("refusals did not use the slot", func(t *testing.T) {
		fresh := e.requestSlot(t, c, "s4", "a.txt", len(data), "text/plain")
		resp, body := e.put(t, fresh, data, "text/plain")
		wantStatus(t, "PUT", resp, body, 201)
		resp, body = e.do(t, "GET", fresh.get, nil)
		wantStatus(t, "GET", resp, body, 200)
		if string(body) != string(data) || resp.Header.Get("Content-Type") != "text/plain" {
			t.Fatalf("GET %q %q", body, resp.Header.Get("Content-Type"))
		}
	})
}

// Quotas: a slot request beyond them gets resource-constraint; a PUT
// that would pass them (slots granted before others were used) gets 507.
func TestUploadQuota(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(*config.Config)
	}{
		{"user", func(c *config.Config) { c.Upload.UserQuota = 100 }},
		{"total", func(c *config.Config) { c.Upload.TotalQuota = 100 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := startUpload(t, tc.edit, "alice")
			c := dialRaw(t, e.srv)
			c.scramLogin("alice", testPassword, "r")
			a := e.requestSlot(t, c, "a", "a.bin", 60, "")
			b := e.requestSlot(t, c, "b", "b.bin", 60, "")
			resp, body := e.do(t, "PUT", a.put, make([]byte, 60), "Authorization", a.auth)
			wantStatus(t, "PUT a", resp, body, 201)
			resp, body = e.do(t, "PUT", b.put, make([]byte, 60), "Authorization", b.auth)
			wantStatus(t, "PUT b", resp, body, 507)
			c.exchange(t, `<iq type='get' id='q' to='upload.localhost'><request xmlns='urn:xmpp:http:upload:0' filename='c.bin' size='41'/></iq>`,
				`<iq type='error' id='q' from='upload.localhost' to='alice@localhost/r'><error type='wait'><resource-constraint xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>`+
					`<text xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'>upload quota reached</text></error></iq>`)
			e.requestSlot(t, c, "d", "d.bin", 40, "") // what is left
			resp, body = e.do(t, "GET", a.get, nil)
			wantStatus(t, "GET a", resp, body, 200)
			if resp.Header.Get("Content-Type") != "application/octet-stream" {
				t.Errorf("Content-Type %q", resp.Header.Get("Content-Type"))
			}
		})
	}
}

// The sweep deletes files older than upload.expire_after, frees their
// quota, and keeps younger ones.
func TestUploadExpiry(t *testing.T) {
	e := startUpload(t, func(c *config.Config) {
		c.Upload.ExpireAfter = 24 * time.Hour
		c.Upload.UserQuota = 10
		c.Upload.SlotTTL = 48 * time.Hour
	}, "alice")
	c := dialRaw(t, e.srv)
	c.scramLogin("alice", testPassword, "r")
	old := e.requestSlot(t, c, "o", "old.txt", 5, "")
	young := e.requestSlot(t, c, "y", "young.txt", 5, "")
	resp, body := e.do(t, "PUT", old.put, []byte("aaaaa"), "Authorization", old.auth)
	wantStatus(t, "PUT old", resp, body, 201)
	e.advance(12 * time.Hour)
	resp, body = e.do(t, "PUT", young.put, []byte("bbbbb"), "Authorization", young.auth)
	wantStatus(t, "PUT young", resp, body, 201)
	e.advance(12 * time.Hour)
	n, err := e.mod.Sweep()
	if err != nil || n != 1 {
		t.Fatalf("Sweep: %d, %v; want 1 file", n, err)
	}
	resp, body = e.do(t, "GET", old.get, nil)
	wantStatus(t, "GET old", resp, body, 404)
	resp, body = e.do(t, "GET", young.get, nil)
	wantStatus(t, "GET young", resp, body, 200)
	id := strings.Split(strings.TrimPrefix(old.get, "http://"+e.srv.WebAddr().String()+"/upload/"), "/")[0]
	if _, err := os.Stat(filepath.Join(e.dir, id)); !os.IsNotExist(err) {
		t.Fatalf("the old file's directory is still there: %v", err)
	}
	// Its 5 bytes of quota are free again.
	e.requestSlot(t, c, "n", "new.txt", 5, "")
}

// A PUT whose client goes away mid-body frees its claim and its quota: the
// slot can be used again. While it runs it holds the one transfer
// upload.max_transfers allows, so another gets 503. A client that asks
// for 100 Continue gets it before it sends the body.
func TestUploadAbortAndTransferCap(t *testing.T) {
	e := startUpload(t, func(c *config.Config) {
		c.Upload.MaxTransfers = 1
		c.Upload.UserQuota = 101 << 10
	}, "alice")
	c := dialRaw(t, e.srv)
	c.scramLogin("alice", testPassword, "r")
	data := make([]byte, 100<<10)
	_, _ = rand.Read(data)
	s := e.requestSlot(t, c, "s1", "big.bin", len(data), "")
	small := e.requestSlot(t, c, "s2", "small.bin", 3, "")

	path := strings.TrimPrefix(s.put, "http://"+e.srv.WebAddr().String())
	raw := dialWeb(t, e.srv)
	raw.send(fmt.Sprintf("PUT %s HTTP/1.1\r\nHost: localhost\r\nAuthorization: %s\r\nContent-Length: %d\r\nExpect: 100-continue\r\n\r\n", path, s.auth, len(data)))
	raw.expect(t, "HTTP/1.1 100 Continue\r\n\r\n")
	raw.send(string(data[:1000]))
	// The transfer is counted once the 100 Continue is out: the cap is
	// reached.
	resp, body := e.do(t, "PUT", small.put, []byte("abc"), "Authorization", small.auth)
	wantStatus(t, "PUT beside a running transfer", resp, body, 503)
	_ = raw.conn.Close()

	ok := waitFor(ioTimeout, func() bool {
		resp, body := e.do(t, "PUT", small.put, []byte("abc"), "Authorization", small.auth)
		return resp.StatusCode == 201 && string(body) == "stored\n"
	})
	if !ok {
		t.Fatal("the aborted transfer was not counted out")
	}
	// The aborted slot is free again, and the whole quota with it.
	req, _ := http.NewRequest("PUT", s.put, bytes.NewReader(data))
	req.Header.Set("Authorization", s.auth)
	req.Header.Set("Expect", "100-continue")
	cl := &http.Client{Timeout: ioTimeout, Transport: &http.Transport{DisableKeepAlives: true, ExpectContinueTimeout: ioTimeout}}
	resp, err := cl.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != 201 {
		t.Fatalf("PUT after the abort: %d", resp.StatusCode)
	}
	resp, body = e.do(t, "GET", s.get, nil)
	wantStatus(t, "GET", resp, body, 200)
	if !bytes.Equal(body, data) {
		t.Fatal("GET differs from the PUT")
	}
}

// dialWeb connects to the web listener for raw HTTP.
func dialWeb(t *testing.T, srv *server.Server) *rawConn {
	t.Helper()
	conn, err := net.DialTimeout("tcp", srv.WebAddr().String(), ioTimeout)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return &rawConn{t: t, conn: conn}
}

// Over TLS (web.tls): a file of the largest size, PUT and GET through the
// TLS layer, whole and one range. net/http sends the body right after its
// Finished: what comes while the handshake runs beyond its 64 KiB waits
// in gnet's buffer (this test lost it once, to gnet's Discard(0), which
// drops everything).
func TestUploadOverTLS(t *testing.T) {
	e := startUpload(t, func(c *config.Config) { c.Web.TLS = true }, "alice")
	c := dialRaw(t, e.srv)
	c.scramLogin("alice", testPassword, "r")
	data := make([]byte, 1<<20)
	_, _ = rand.Read(data)
	s := e.requestSlot(t, c, "s1", "big.bin", len(data), "application/octet-stream")
	if !strings.HasPrefix(s.put, "https://127.0.0.1:") {
		t.Fatalf("PUT URL %q", s.put)
	}
	resp, body := e.put(t, s, data, "application/octet-stream")
	wantStatus(t, "PUT", resp, body, 201)
	resp, body = e.do(t, "GET", s.get, nil)
	wantStatus(t, "GET", resp, body, 200)
	if !bytes.Equal(body, data) {
		t.Fatalf("GET returned %d bytes, not the %d uploaded", len(body), len(data))
	}
	resp, body = e.do(t, "GET", s.get, nil, "Range", "bytes=500000-600000")
	wantStatus(t, "GET range", resp, body, 206)
	if !bytes.Equal(body, data[500000:600001]) {
		t.Fatalf("range: %d bytes", len(body))
	}
}

// A transfer's deadline is preauth.timeout of inactivity: a PUT that
// stalls is closed, and its claim is freed. Meanwhile the connection is
// not counted as pre-auth.
func TestUploadTransferDeadline(t *testing.T) {
	e := startUpload(t, func(c *config.Config) { c.Preauth.Timeout = 500 * time.Millisecond }, "alice")
	c := dialRaw(t, e.srv)
	c.scramLogin("alice", testPassword, "r")
	data := []byte("0123456789")
	s := e.requestSlot(t, c, "s1", "a.txt", len(data), "")
	raw := dialWeb(t, e.srv)
	raw.send(fmt.Sprintf("PUT %s HTTP/1.1\r\nHost: localhost\r\nAuthorization: %s\r\nContent-Length: %d\r\nExpect: 100-continue\r\n\r\n",
		strings.TrimPrefix(s.put, "http://"+e.srv.WebAddr().String()), s.auth, len(data)))
	raw.expect(t, "HTTP/1.1 100 Continue\r\n\r\n")
	raw.send("01234")
	if !waitFor(ioTimeout, func() bool { st := e.srv.Stats(); return st.Preauth == 0 && st.PreauthWeb == 0 }) {
		t.Fatalf("a transfer is counted as pre-auth: %+v", e.srv.Stats())
	}
	start := time.Now()
	if got := raw.closed(); got != "" {
		t.Fatalf("the stalled PUT got %q", got)
	}
	if d := time.Since(start); d > ioTimeout {
		t.Fatalf("closed after %v", d)
	}
	if !waitFor(ioTimeout, func() bool {
		resp, _ := e.put(t, s, data, "")
		return resp.StatusCode == 201
	}) {
		t.Fatal("the stalled PUT's claim was not freed")
	}
}
