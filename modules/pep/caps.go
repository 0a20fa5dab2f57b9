package pep

import (
	"bytes"
	"container/list"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"encoding/xml"
	"errors"
	"hash"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/krill-xmpp/krill/hook"
	"github.com/krill-xmpp/krill/stanza"
)

// NSCaps is the XEP-0115 namespace.
const NSCaps = "http://jabber.org/protocol/caps"

// Limits of the caps cache, which is shared by the whole server: a
// session holds only a pointer to an entry of it.
const (
	// CapsCacheBytes bounds the verified entries (their feature strings
	// and a fixed overhead each); beyond it the least recently used
	// entry is dropped. Sessions that point at a dropped entry keep it
	// (it is theirs until they go); the next session announcing that
	// ver causes a new query.
	CapsCacheBytes = 4 << 20
	// MaxPendingCaps bounds the disco#info queries in flight. A hash
	// seen while the limit is reached is not queried (its sessions get
	// no notifications until they announce it again).
	MaxPendingCaps = 1024
	// maxWaiters bounds the sessions waiting on one pending hash that
	// get their last items when it resolves.
	maxWaiters = 256
	// MaxRemoteCaps bounds the resources of contacts at other servers
	// whose caps the cache follows (their available presence reached
	// this server); beyond it a new one is not followed and gets no
	// notification until one goes unavailable.
	MaxRemoteCaps = 65536
	// maxServed bounds the local accounts one remote resource has had
	// the last items of (remoteEntry.served).
	maxServed = 64
	// entryOverhead is the bytes charged per entry beyond its strings.
	entryOverhead = 128
	// queryTimeout is how long a client has to answer; after it, the
	// next session announcing the hash is asked instead.
	queryTimeout = 30 * time.Second
)

// capsInfo is what one verification string says a client supports. A
// pending entry has no features yet; a failed one never will.
type capsInfo struct {
	ver string
	// features is sorted; nil while pending. Written once under the
	// cache's lock, read under it too.
	features []string
	size     int
	elem     *list.Element // in the LRU while cached
}

// pendingQuery is a disco#info query in flight for one hash.
type pendingQuery struct {
	info    *capsInfo
	node    string // node#ver queried
	algo    string
	asked   any // the entity the query went to: a hook.Session or a remote
	id      string
	sent    time.Time
	waiters []any // hook.Session, or lastFor for a remote resource
}

// remote is a contact's resource at another server, by full JID: the
// cache's key for an entity with no local session, whose caps came in its
// presence over federation.
type remote string

// bare returns the remote resource's bare JID.
func (r remote) bare() string {
	b, _, _ := strings.Cut(string(r), "/")
	return b
}

// remoteEntry is what the cache knows of one remote resource: its caps,
// and the local accounts that have sent it their last items since it
// became available with them.
type remoteEntry struct {
	info   *capsInfo
	served []string
}

// lastFor is a remote resource waiting on a caps query for the last
// items of owner.
type lastFor struct {
	to    remote
	owner string
}

// capsCache is the server's XEP-0115 cache: verified feature sets by
// verification string (bounded in bytes, least recently used dropped
// first), the queries in flight, and each available session's entry.
type capsCache struct {
	mu      sync.Mutex
	byVer   map[string]*capsInfo
	lru     list.List // front: most recently used
	bytes   int
	max     int
	pending map[string]*pendingQuery // by ver
	byID    map[string]*pendingQuery // by query id
	sess    map[hook.Session]*capsInfo
	// rem holds the remote resources' entries by bare JID, then full
	// JID; remN counts them (at most MaxRemoteCaps).
	rem    map[string]map[remote]*remoteEntry
	remN   int
	nextID uint64
	now    func() time.Time // time.Now; tests move it
	// queries counts disco#info queries sent, for tests and stats.
	queries uint64
}

func newCapsCache(max int) *capsCache {
	return &capsCache{
		byVer:   make(map[string]*capsInfo),
		pending: make(map[string]*pendingQuery),
		byID:    make(map[string]*pendingQuery),
		sess:    make(map[hook.Session]*capsInfo),
		rem:     make(map[string]map[remote]*remoteEntry),
		max:     max,
		now:     time.Now,
	}
}

// entry returns the caps entry of k (a hook.Session or a remote), nil
// when none. Under c.mu.
func (c *capsCache) entry(k any) *capsInfo {
	switch k := k.(type) {
	case remote:
		if e := c.rem[k.bare()][k]; e != nil {
			return e.info
		}
		return nil
	case hook.Session:
		return c.sess[k]
	}
	return nil
}

// setEntry makes info k's entry; a new remote resource's served list
// starts empty. It reports false when k is a remote resource the cache
// has no room for. Under c.mu.
func (c *capsCache) setEntry(k any, info *capsInfo) bool {
	switch k := k.(type) {
	case remote:
		byFull := c.rem[k.bare()]
		if e := byFull[k]; e != nil {
			if e.info != info {
				e.info, e.served = info, nil
			}
			return true
		}
		if c.remN >= MaxRemoteCaps {
			return false
		}
		if byFull == nil {
			byFull = make(map[remote]*remoteEntry, 1)
			c.rem[k.bare()] = byFull
		}
		byFull[k] = &remoteEntry{info: info}
		c.remN++
	case hook.Session:
		c.sess[k] = info
	}
	return true
}

// dropEntry removes k's entry. Under c.mu.
func (c *capsCache) dropEntry(k any) {
	switch k := k.(type) {
	case remote:
		b := k.bare()
		if _, ok := c.rem[b][k]; !ok {
			return
		}
		delete(c.rem[b], k)
		if len(c.rem[b]) == 0 {
			delete(c.rem, b)
		}
		c.remN--
	case hook.Session:
		delete(c.sess, k)
	}
}

// seen records that s announced ver (with the caps node and hash
// algorithm). It returns the query to send when the hash is unknown and
// nobody is asking yet (id and node# ver to ask s about), and whether the
// session's entry changed.
func (c *capsCache) seen(s any, node, ver, algo string) (id, query string, changed bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	old := c.entry(s)
	if old != nil && old.ver == ver {
		return "", "", false
	}
	if _, ok := s.(remote); ok && old == nil && c.remN >= MaxRemoteCaps {
		return "", "", false // not followed (MaxRemoteCaps)
	}
	// A session has at most one query in flight: announcing new caps
	// drops the question about its old ones, so that one client cannot
	// hold many of the MaxPendingCaps places.
	if old != nil {
		if p := c.pending[old.ver]; p != nil && p.asked == s {
			delete(c.pending, old.ver)
			delete(c.byID, p.id)
		}
	}
	if info, ok := c.byVer[ver]; ok {
		c.lru.MoveToFront(info.elem)
		c.setEntry(s, info)
		return "", "", true
	}
	if p, ok := c.pending[ver]; ok && c.now().Sub(p.sent) > queryTimeout {
		// Unanswered: ask s instead, keeping those who wait.
		delete(c.pending, ver)
		delete(c.byID, p.id)
		c.nextID++
		c.queries++
		p.asked, p.id, p.sent = s, "caps-"+itoa(c.nextID), c.now()
		p.node = node + "#" + ver
		p.algo = algo
		c.pending[ver], c.byID[p.id] = p, p
		c.setEntry(s, p.info)
		if _, ok := s.(hook.Session); ok && len(p.waiters) < maxWaiters {
			p.waiters = append(p.waiters, s)
		}
		return p.id, p.node, true
	}
	if p, ok := c.pending[ver]; ok {
		c.setEntry(s, p.info)
		if _, ok := s.(hook.Session); ok && len(p.waiters) < maxWaiters {
			p.waiters = append(p.waiters, s)
		}
		return "", "", true
	}
	info := &capsInfo{ver: ver}
	c.setEntry(s, info)
	if len(c.pending) >= MaxPendingCaps {
		return "", "", true
	}
	c.nextID++
	c.queries++
	p := &pendingQuery{info: info, node: node + "#" + ver, algo: algo, asked: s,
		id: "caps-" + itoa(c.nextID), sent: c.now()}
	if _, ok := s.(hook.Session); ok {
		p.waiters = []any{s}
	}
	c.pending[ver] = p
	c.byID[p.id] = p
	return p.id, p.node, true
}

// resolve handles the answer to query id from session from: result is the
// disco#info <query/> (nil for an error). It verifies the answer against
// the hash and caches it; it returns the sessions waiting on it when it
// verified, and whether id was one of the cache's queries.
func (c *capsCache) resolve(id string, from any, result []byte) (waiters []any, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	p := c.byID[id]
	if p == nil || p.asked != from {
		return nil, p != nil
	}
	delete(c.byID, id)
	delete(c.pending, p.info.ver)
	if result == nil {
		return nil, true
	}
	features, ver, err := verString(result, p.algo)
	if err != nil || ver != p.info.ver {
		return nil, true // not cached: the next announcement asks again
	}
	if qn, ok := queryNode(result); ok && qn != "" && qn != p.node {
		return nil, true
	}
	info := p.info
	info.features = features
	info.size = entryOverhead + len(info.ver)
	for _, f := range features {
		info.size += len(f) + 16
	}
	c.byVer[info.ver] = info
	info.elem = c.lru.PushFront(info)
	c.bytes += info.size
	for c.bytes > c.max && c.lru.Len() > 1 {
		old := c.lru.Remove(c.lru.Back()).(*capsInfo)
		old.elem = nil
		delete(c.byVer, old.ver)
		c.bytes -= old.size
	}
	return p.waiters, true
}

// forget drops a session's entry (it went unavailable or away), and a
// query that was asked of it.
func (c *capsCache) forget(s any) {
	c.mu.Lock()
	defer c.mu.Unlock()
	info := c.entry(s)
	if info == nil {
		return
	}
	c.dropEntry(s)
	if p := c.pending[info.ver]; p != nil && p.asked == s {
		delete(c.pending, info.ver)
		delete(c.byID, p.id)
	}
}

// wants reports whether session s asked for notifications of node
// (NODE+notify in its caps).
func (c *capsCache) wants(s any, node string) bool {
	c.mu.Lock()
	info := c.entry(s)
	var features []string
	if info != nil {
		features = info.features
	}
	c.mu.Unlock()
	return hasNotify(features, node)
}

// notifyNodes returns the nodes s wants notifications of, nil when its
// caps are unknown.
func (c *capsCache) notifyNodes(s any) []string {
	c.mu.Lock()
	info := c.entry(s)
	var features []string
	if info != nil {
		features = info.features
	}
	c.mu.Unlock()
	var out []string
	for _, f := range features {
		if n, ok := strings.CutSuffix(f, "+notify"); ok {
			out = append(out, n)
		}
	}
	return out
}

// remotesWanting returns the resources of bare (a contact at another
// server) whose caps ask for notifications of node.
func (c *capsCache) remotesWanting(bare, node string) []remote {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []remote
	for r, e := range c.rem[bare] {
		if e.info != nil && hasNotify(e.info.features, node) {
			out = append(out, r)
		}
	}
	return out
}

// serve records that owner sends r its last items, and reports whether it
// had not yet since r announced its caps: a remote resource's presence
// reaches each local contact, and each sends its items once. It also
// reports whether r's caps are still being asked about; then the items
// wait for the answer (wait adds r to the query's waiters).
func (c *capsCache) serve(r remote, owner string) (first, pending bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.rem[r.bare()][r]
	if e == nil || slices.Contains(e.served, owner) || len(e.served) >= maxServed {
		return false, false
	}
	e.served = append(e.served, owner)
	if e.info.features == nil {
		if p := c.pending[e.info.ver]; p != nil && len(p.waiters) < maxWaiters {
			p.waiters = append(p.waiters, lastFor{r, owner})
		}
		return true, true
	}
	return true, false
}

// stats returns the cached entries, their bytes and the queries sent.
func (c *capsCache) stats() (entries, bytes int, queries uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.byVer), c.bytes, c.queries
}

// remoteCount is the remote resources followed (at most MaxRemoteCaps).
func (c *capsCache) remoteCount() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.remN
}

// forgetDomain drops the entries of every remote resource at domain, and
// the queries asked of them. It walks the followed bare JIDs: a peer that
// goes away is rare next to presence, which an index by domain would tax.
func (c *capsCache) forgetDomain(domain string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for bare, byFull := range c.rem {
		d := bare
		if _, after, ok := strings.Cut(bare, "@"); ok {
			d = after
		}
		if d != domain {
			continue
		}
		for r, e := range byFull {
			if p := c.pending[e.info.ver]; p != nil && p.asked == r {
				delete(c.pending, e.info.ver)
				delete(c.byID, p.id)
			}
			n++
		}
		c.remN -= len(byFull)
		delete(c.rem, bare)
	}
	return n
}

func hasNotify(sorted []string, node string) bool {
	want := node + "+notify"
	i := sort.SearchStrings(sorted, want)
	return i < len(sorted) && sorted[i] == want
}

// parseCaps reads the XEP-0115 <c/> of a presence: node, ver and hash.
// Legacy caps (no hash attribute) are ignored, as XEP-0115 section 8.4
// allows.
func parseCaps(raw []byte) (node, ver, algo string, ok bool) {
	if !bytes.Contains(raw, []byte(NSCaps)) {
		return "", "", "", false
	}
	stanza.Children(raw, func(ch []byte) bool {
		t, err := stanza.ParseStartTag(ch)
		if err != nil || string(t.Local()) != "c" {
			return true
		}
		if ns, _ := t.AttrString("xmlns"); ns != NSCaps {
			return true
		}
		node, _ = t.AttrString("node")
		ver, _ = t.AttrString("ver")
		algo, _ = t.AttrString("hash")
		ok = node != "" && ver != "" && hashFor(algo) != nil
		return false
	})
	return node, ver, algo, ok
}

// hashFor returns the hash function of an IANA name XEP-0115 uses; nil
// when not supported.
func hashFor(algo string) func() hash.Hash {
	switch algo {
	case "sha-1":
		return sha1.New
	case "sha-224":
		return sha256.New224
	case "sha-256":
		return sha256.New
	case "sha-384":
		return sha512.New384
	case "sha-512":
		return sha512.New
	}
	return nil
}

// Disco#info as XEP-0115 section 5 reads it.
type discoInfo struct {
	XMLName    xml.Name   `xml:"http://jabber.org/protocol/disco#info query"`
	Identities []identity `xml:"identity"`
	Features   []feature  `xml:"feature"`
	Forms      []dataForm `xml:"jabber:x:data x"`
}

type identity struct {
	Category string     `xml:"category,attr"`
	Type     string     `xml:"type,attr"`
	Name     string     `xml:"name,attr"`
	Attrs    []xml.Attr `xml:",any,attr"`
}

type feature struct {
	Var string `xml:"var,attr"`
}

type dataForm struct {
	Type   string      `xml:"type,attr"`
	Fields []formField `xml:"field"`
}

type formField struct {
	Var    string   `xml:"var,attr"`
	Type   string   `xml:"type,attr"`
	Values []string `xml:"value"`
}

func queryNode(q []byte) (string, bool) {
	t, err := stanza.ParseStartTag(q)
	if err != nil {
		return "", false
	}
	return t.AttrString("node")
}

var errCapsInvalid = errors.New("pep: disco#info not usable for caps")

// verString computes the XEP-0115 section 5.1 verification string of a
// disco#info <query/> and hashes it with algo; it returns the sorted
// features and the base64 hash. Answers that section 5.4 says to reject
// (duplicate identities or features, malformed forms) are errors.
func verString(q []byte, algo string) (features []string, ver string, err error) {
	newHash := hashFor(algo)
	if newHash == nil {
		return nil, "", errCapsInvalid
	}
	var d discoInfo
	if err := xml.Unmarshal(q, &d); err != nil {
		return nil, "", err
	}
	var b strings.Builder
	ids := make([]string, 0, len(d.Identities))
	for _, id := range d.Identities {
		lang := ""
		for _, a := range id.Attrs {
			if a.Name.Local == "lang" {
				lang = a.Value
			}
		}
		ids = append(ids, id.Category+"/"+id.Type+"/"+lang+"/"+id.Name)
	}
	sort.Strings(ids)
	for i, s := range ids {
		if i > 0 && ids[i-1] == s {
			return nil, "", errCapsInvalid
		}
		b.WriteString(s)
		b.WriteByte('<')
	}
	for _, f := range d.Features {
		features = append(features, f.Var)
	}
	sort.Strings(features)
	for i, f := range features {
		if i > 0 && features[i-1] == f {
			return nil, "", errCapsInvalid
		}
		b.WriteString(f)
		b.WriteByte('<')
	}
	type form struct {
		typ    string
		fields []formField
	}
	var forms []form
	for _, x := range d.Forms {
		ft, hidden := "", true
		var fields []formField
		for _, f := range x.Fields {
			if f.Var == "FORM_TYPE" {
				// Section 5.4: more than one FORM_TYPE value makes
				// the whole answer ill-formed; a FORM_TYPE that is
				// not hidden, the form ignored.
				if ft != "" || len(f.Values) != 1 {
					return nil, "", errCapsInvalid
				}
				ft, hidden = f.Values[0], f.Type == "hidden"
				continue
			}
			fields = append(fields, f)
		}
		if ft == "" || !hidden {
			continue // forms without FORM_TYPE are ignored (5.4)
		}
		forms = append(forms, form{ft, fields})
	}
	sort.Slice(forms, func(i, j int) bool { return forms[i].typ < forms[j].typ })
	for i, f := range forms {
		if i > 0 && forms[i-1].typ == f.typ {
			return nil, "", errCapsInvalid
		}
		b.WriteString(f.typ)
		b.WriteByte('<')
		sort.Slice(f.fields, func(i, j int) bool { return f.fields[i].Var < f.fields[j].Var })
		for _, fl := range f.fields {
			b.WriteString(fl.Var)
			b.WriteByte('<')
			vals := append([]string(nil), fl.Values...)
			sort.Strings(vals)
			for _, v := range vals {
				b.WriteString(v)
				b.WriteByte('<')
			}
		}
	}
	h := newHash()
	h.Write([]byte(b.String()))
	return features, base64.StdEncoding.EncodeToString(h.Sum(nil)), nil
}

func itoa(n uint64) string {
	var buf [20]byte
	i := len(buf)
	for {
		i--
		buf[i] = byte('0' + n%10)
		n /= 10
		if n == 0 {
			return string(buf[i:])
		}
	}
}
