// Package upload implements XEP-0363 HTTP File Upload: a slot service on
// its own domain (upload.domain, upload.<domain> by default) hands a
// client a signed PUT URL and a GET URL; the files move over the web
// listener (web.listen), through the routes this module adds there
// (hook.WebRouter), with their disk I/O on the server's bounded transfer
// pool and never on an event loop.
//
// A slot is stateless: the PUT URL's Authorization header carries an
// HMAC-SHA256, under a secret made at start-up, of the URL's path, the
// size, the content type, the expiry and the requester's bare JID, so
// only the requester (who alone received the header) can use it, and only
// until upload.slot_ttl has passed. It is used once: the first PUT claims
// the slot's id in the store, and a second one gets 409.
package upload

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/krill-xmpp/krill/config"
	"github.com/krill-xmpp/krill/hook"
	"github.com/krill-xmpp/krill/stanza"
)

// Namespaces.
const (
	NS           = "urn:xmpp:http:upload:0"
	NSDiscoInfo  = "http://jabber.org/protocol/disco#info"
	NSDiscoItems = "http://jabber.org/protocol/disco#items"
)

// Prefix is the path of the web routes: files are at Prefix<id>/<name>.
const Prefix = "/upload/"

// idBytes is the size of a slot's random id: 128 bits, so that a GET URL
// cannot be guessed (XEP-0363, Security Considerations).
const idBytes = 16

// maxFilename caps the file name of a request, in bytes.
const maxFilename = 255

// Module is the XEP-0363 service. Config is the configuration it serves;
// Now is its clock (nil: time.Now), for tests of slot and file expiry;
// Store is where files go (nil: a Disk at upload.path).
type Module struct {
	Config config.Config
	Now    func() time.Time
	Store  Store

	domain string
	secret []byte
	base   atomic.Pointer[string] // the web listener's base URL

	mu     sync.Mutex
	used   map[string]int64    // bytes stored (and being stored) per account
	total  int64               // bytes stored (and being stored) in all
	active map[string]struct{} // ids being uploaded, which a sweep leaves alone

	stop     chan struct{}
	stopOnce sync.Once

	slots, puts, gets, expired atomic.Uint64
}

// Name implements hook.Module.
func (*Module) Name() string { return "upload" }

// enabled reports whether the service runs: a domain and a web listener.
func (m *Module) enabled() bool {
	return m.Config.UploadDomain() != "" && m.Config.Web.Listen != ""
}

func (m *Module) now() time.Time {
	if m.Now != nil {
		return m.Now()
	}
	return time.Now()
}

// Register implements hook.Module: the slot service's domain, and the
// bytes already stored per account, read from the store once.
func (m *Module) Register(r *hook.Registrar) error {
	if !m.enabled() {
		return nil
	}
	m.domain = m.Config.UploadDomain()
	if m.Store == nil {
		dir := m.Config.UploadPath()
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return fmt.Errorf("upload: %w", err)
		}
		m.Store = Disk{Dir: dir}
	}
	m.secret = make([]byte, 32)
	if _, err := rand.Read(m.secret); err != nil {
		return fmt.Errorf("upload: secret: %w", err)
	}
	m.used = make(map[string]int64)
	m.active = make(map[string]struct{})
	m.stop = make(chan struct{})
	err := m.Store.Walk(func(f Meta) {
		if f.Owner != "" {
			m.used[f.Owner] += f.Size
			m.total += f.Size
		}
	})
	if err != nil {
		return err
	}
	r.Domain(m.domain, m.handle)
	return nil
}

// WebRoutes implements hook.WebRouter.
func (m *Module) WebRoutes() []hook.WebRoute {
	if !m.enabled() {
		return nil
	}
	return []hook.WebRoute{{Path: Prefix, Prefix: true, Serve: m.serve}}
}

// WebListening implements hook.WebListening: the base of the URLs, and
// the start of the expiry sweep.
func (m *Module) WebListening(base string) {
	if !m.enabled() {
		return
	}
	m.base.Store(&base)
	if m.Config.Upload.ExpireAfter > 0 {
		go m.sweeper()
	}
}

// Stop implements hook.Stopper: the expiry sweep ends.
func (m *Module) Stop(context.Context) {
	if m.stop != nil {
		m.stopOnce.Do(func() { close(m.stop) })
	}
}

// Counters implements hook.Counter.
func (m *Module) Counters(fn func(event string, n uint64)) {
	fn("slots", m.slots.Load())
	fn("puts", m.puts.Load())
	fn("gets", m.gets.Load())
	fn("expired", m.expired.Load())
}

// sweepEvery is how often the expiry sweep runs: hourly, or a tenth of
// upload.expire_after when that is shorter (but not under a second).
func (m *Module) sweepEvery() time.Duration {
	d := min(time.Hour, m.Config.Upload.ExpireAfter/10)
	return max(d, time.Second)
}

// sweeper runs Sweep periodically on one goroutine of its own, for the
// module and not per connection, until Stop.
func (m *Module) sweeper() {
	t := time.NewTicker(m.sweepEvery())
	defer t.Stop()
	for {
		select {
		case <-m.stop:
			return
		case <-t.C:
			_, _ = m.Sweep()
		}
	}
}

// Sweep deletes files older than upload.expire_after and claims abandoned
// for longer than a slot's life, and returns how many files it deleted.
func (m *Module) Sweep() (int, error) {
	if !m.enabled() {
		return 0, nil
	}
	now := m.now()
	exp := m.Config.Upload.ExpireAfter
	var gone []Meta
	err := m.Store.Walk(func(f Meta) {
		m.mu.Lock()
		_, busy := m.active[f.ID]
		m.mu.Unlock()
		switch {
		case busy:
		case f.Owner == "" && now.Sub(f.Created) > m.Config.Upload.SlotTTL+time.Hour:
			gone = append(gone, f)
		case f.Owner != "" && exp > 0 && now.Sub(f.Created) >= exp:
			gone = append(gone, f)
		}
	})
	n := 0
	for _, f := range gone {
		if err := m.Store.Delete(f.ID); err != nil {
			continue
		}
		if f.Owner != "" {
			m.release(f.Owner, f.Size)
			m.expired.Add(1)
			n++
		}
	}
	return n, err
}

// reserve counts size bytes for owner when both quotas allow it.
func (m *Module) reserve(owner string, size int64) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.fits(owner, size) {
		return false
	}
	m.used[owner] += size
	m.total += size
	return true
}

// fits reports whether owner may store size bytes more; m.mu is held.
func (m *Module) fits(owner string, size int64) bool {
	q := m.Config.Upload
	return (q.UserQuota == 0 || m.used[owner]+size <= q.UserQuota) &&
		(q.TotalQuota == 0 || m.total+size <= q.TotalQuota)
}

// release uncounts size bytes of owner.
func (m *Module) release(owner string, size int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.used[owner] -= size
	if m.used[owner] <= 0 {
		delete(m.used, owner)
	}
	m.total -= size
}

// handle serves stanzas to the service's domain: disco and slot requests.
func (m *Module) handle(c *hook.Ctx, st *hook.Stanza) hook.Verdict {
	switch {
	case st.Kind != hook.IQ || st.Local != "" || st.Resource != "":
		c.ReplyError("cancel", "service-unavailable", "")
	case st.Type == "get" && st.NS == NSDiscoInfo && st.Name == "query":
		c.ReplyResult(m.discoInfo())
	case st.Type == "get" && st.NS == NSDiscoItems && st.Name == "query":
		c.ReplyResult([]byte(`<query xmlns='` + NSDiscoItems + `'/>`))
	case st.Type == "get" && st.NS == NS && st.Name == "request" && c.Session == nil:
		// From another server (or a component): slots and their quota
		// are for this server's accounts.
		c.ReplyError("cancel", "not-allowed", "upload slots are for this server's users")
	case st.Type == "get" && st.NS == NS && st.Name == "request":
		m.request(c, st)
	default:
		c.ReplyError("cancel", "service-unavailable", "")
	}
	return hook.Stop
}

// discoInfo is the service's disco#info: identity store/file, and the
// XEP-0128 form announcing max-file-size (XEP-0363 section 3).
func (m *Module) discoInfo() []byte {
	return []byte(`<query xmlns='` + NSDiscoInfo + `'><identity category='store' type='file' name='HTTP File Upload'/>` +
		`<feature var='` + NSDiscoInfo + `'/><feature var='` + NS + `'/>` +
		`<x xmlns='jabber:x:data' type='result'><field var='FORM_TYPE' type='hidden'><value>` + NS + `</value></field>` +
		`<field var='max-file-size'><value>` + strconv.FormatInt(m.Config.Upload.MaxFileSize, 10) + `</value></field></x></query>`)
}

// request answers a slot request: <request filename size content-type/>.
func (m *Module) request(c *hook.Ctx, st *hook.Stanza) {
	tag, err := stanza.ParseStartTag(st.Payload)
	if err != nil {
		c.ReplyError("modify", "bad-request", "malformed request")
		return
	}
	name, _ := tag.AttrString("filename")
	sizeStr, _ := tag.AttrString("size")
	ctype, _ := tag.AttrString("content-type")
	size, err := strconv.ParseInt(sizeStr, 10, 64)
	switch {
	case !validFilename(name):
		c.ReplyError("modify", "bad-request", "filename must be 1 to 255 bytes without '/' or control characters")
		return
	case err != nil || size < 1:
		c.ReplyError("modify", "bad-request", "size must be a positive number of bytes")
		return
	case !validContentType(ctype):
		c.ReplyError("modify", "bad-request", "malformed content-type")
		return
	case size > m.Config.Upload.MaxFileSize:
		max := strconv.FormatInt(m.Config.Upload.MaxFileSize, 10)
		c.Reply(stanza.AppendErrorApp(c.Scratch(), "iq", st.ID, st.To, st.From, "modify", "not-acceptable",
			"file too large: the maximum is "+max+" bytes",
			`<file-too-large xmlns='`+NS+`'><max-file-size>`+max+`</max-file-size></file-too-large>`))
		return
	}
	owner := bare(st.From)
	m.mu.Lock()
	ok := m.fits(owner, size)
	m.mu.Unlock()
	if !ok {
		c.ReplyError("wait", "resource-constraint", "upload quota reached")
		return
	}
	base := m.base.Load()
	if base == nil {
		c.ReplyError("wait", "internal-server-error", "web listener not up")
		return
	}
	var id [idBytes]byte
	_, _ = rand.Read(id[:])
	path := Prefix + hex.EncodeToString(id[:]) + "/" + url.PathEscape(name)
	expiry := m.now().Add(m.Config.Upload.SlotTTL).Unix()
	auth := m.token(path, size, ctype, expiry, owner)
	b := append(make([]byte, 0, 512), `<slot xmlns='`+NS+`'><put url='`...)
	b = stanza.AppendEscaped(b, *base+path)
	b = append(b, `'><header name='Authorization'>`...)
	b = stanza.AppendEscaped(b, auth)
	b = append(b, `</header></put><get url='`...)
	b = stanza.AppendEscaped(b, *base+path)
	b = append(b, `'/></slot>`...)
	m.slots.Add(1)
	c.ReplyResult(b)
}

// sign is the slot's MAC: what a PUT must match.
func (m *Module) sign(path string, size int64, ctype string, expiry int64, owner string) []byte {
	h := hmac.New(sha256.New, m.secret)
	fmt.Fprintf(h, "PUT\n%s\n%d\n%s\n%d\n%s", path, size, ctype, expiry, owner)
	return h.Sum(nil)
}

// token is the Authorization header of a slot's PUT: its claims (expiry,
// size, requester, content type) and their MAC with the path, so that a
// PUT of another size or type is told apart from a forged one.
func (m *Module) token(path string, size int64, ctype string, expiry int64, owner string) string {
	enc := base64.RawURLEncoding
	return "Bearer " + strconv.FormatInt(expiry, 10) + "." + strconv.FormatInt(size, 10) + "." +
		enc.EncodeToString([]byte(owner)) + "." + enc.EncodeToString([]byte(ctype)) + "." +
		enc.EncodeToString(m.sign(path, size, ctype, expiry, owner))
}

// checkAuth verifies a PUT's Authorization header against its path, then
// its size and content type against the slot's; it returns the owner, or
// why the PUT is refused.
func (m *Module) checkAuth(auth, path string, size int64, ctype string) (string, error) {
	tok, ok := strings.CutPrefix(auth, "Bearer ")
	parts := strings.Split(tok, ".")
	if !ok || len(parts) != 5 {
		return "", errBadAuth
	}
	enc := base64.RawURLEncoding
	expiry, err1 := strconv.ParseInt(parts[0], 10, 64)
	slotSize, err2 := strconv.ParseInt(parts[1], 10, 64)
	owner, err3 := enc.DecodeString(parts[2])
	slotType, err4 := enc.DecodeString(parts[3])
	mac, err5 := enc.DecodeString(parts[4])
	if err1 != nil || err2 != nil || err3 != nil || err4 != nil || err5 != nil {
		return "", errBadAuth
	}
	switch {
	case !hmac.Equal(mac, m.sign(path, slotSize, string(slotType), expiry, string(owner))):
		return "", errBadAuth
	case m.now().Unix() > expiry:
		return "", errExpired
	case size != slotSize:
		return "", errSize
	case len(slotType) > 0 && !strings.EqualFold(ctype, string(slotType)):
		return "", errType
	}
	return string(owner), nil
}

// Why a PUT is refused.
var (
	errBadAuth = errors.New("upload: the slot's signature does not match this request")
	errExpired = errors.New("upload: the slot has expired")
	errSize    = errors.New("upload: the body is not the size of the slot")
	errType    = errors.New("upload: the Content-Type is not the slot's")
)

// validFilename accepts a file name of 1 to maxFilename bytes without a
// path separator or control characters.
func validFilename(s string) bool {
	if s == "" || len(s) > maxFilename || s == "." || s == ".." {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == 0x7f || c == '/' || c == '\\' {
			return false
		}
	}
	return true
}

// validContentType accepts "" or a media type made of visible ASCII and
// spaces, which is safe in a header line.
func validContentType(s string) bool {
	if len(s) > 255 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c > 0x7e {
			return false
		}
	}
	return true
}

// bare returns the bare JID of a full one.
func bare(full string) string {
	b, _, _ := strings.Cut(full, "/")
	return b
}
