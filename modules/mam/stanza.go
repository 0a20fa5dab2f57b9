package mam

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"strconv"
	"sync"
	"time"

	"mellium.im/xmpp/jid"

	"github.com/krill-xmpp/krill/stanza"
)

// Namespaces that decide whether a message is archived.
const (
	nsClient    = "jabber:client"
	nsHints     = "urn:xmpp:hints"                 // XEP-0334
	nsOMEMO     = "eu.siacs.conversations.axolotl" // XEP-0384 before 0.4
	nsOMEMO2    = "urn:xmpp:omemo:2"               // XEP-0384 0.4 and later
	nsEME       = "urn:xmpp:eme:0"                 // XEP-0380
	nsPGPLegacy = "jabber:x:encrypted"             // XEP-0027
	nsOX        = "urn:xmpp:openpgp:0"             // XEP-0373
)

// childNS returns a child element's namespace: its own declaration, its
// prefix's, or the stanza's (jabber:client).
func childNS(tag stanza.StartTag) string {
	if p := tag.Prefix(); p != nil {
		ns, _ := tag.AttrString("xmlns:" + string(p))
		return ns
	}
	if ns, ok := tag.AttrString("xmlns"); ok {
		return ns
	}
	return nsClient
}

// archivable reports whether a message of type typ is archived (XEP-0313
// §5.1.1): a chat or normal message with a <body>, or with an end-to-end
// encrypted payload (OMEMO, OpenPGP, an XEP-0380 marker), or with an
// XEP-0334 <store/> hint; never one with <no-store/> or
// <no-permanent-store/>. Chat states, receipts and markers alone are not
// conversation and are not archived.
func archivable(typ string, raw []byte) bool {
	switch typ {
	case "", "normal", "chat":
	default:
		return false
	}
	content, store, noStore := false, false, false
	stanza.Children(raw, func(child []byte) bool {
		tag, err := stanza.ParseStartTag(child)
		if err != nil {
			return true
		}
		local, ns := string(tag.Local()), childNS(tag)
		switch {
		case ns == nsClient && local == "body":
			content = true
		case ns == nsOMEMO && local == "encrypted", ns == nsOMEMO2 && local == "encrypted",
			ns == nsEME && local == "encryption",
			ns == nsPGPLegacy && local == "x", ns == nsOX && local == "openpgp":
			content = true
		case ns == nsHints && local == "store":
			store = true
		case ns == nsHints && (local == "no-store" || local == "no-permanent-store"):
			noStore = true
			return false
		}
		return true
	})
	return !noStore && (content || store)
}

// stripForged returns raw without the XEP-0359 <stanza-id/> elements
// that claim to be by this server (by its domain or one of its accounts'
// bare JIDs): only the server may say where it archived a message
// (XEP-0359 §4, XEP-0313 §3.5). ok is false when there was none (raw is
// returned unchanged).
func stripForged(raw []byte, domain string) ([]byte, bool) {
	if !bytes.Contains(raw, []byte(NSSID)) {
		return raw, false
	}
	var cuts [][2]int
	stanza.Children(raw, func(child []byte) bool {
		tag, err := stanza.ParseStartTag(child)
		if err != nil || string(tag.Local()) != "stanza-id" || childNS(tag) != NSSID {
			return true
		}
		by, _ := tag.AttrString("by")
		if j, err := jid.Parse(by); err != nil || j.Domainpart() == domain && j.Resourcepart() == "" {
			off := cap(raw) - cap(child)
			cuts = append(cuts, [2]int{off, off + len(child)})
		}
		return true
	})
	if len(cuts) == 0 {
		return raw, false
	}
	out := make([]byte, 0, len(raw))
	prev := 0
	for _, c := range cuts {
		out = append(out, raw[prev:c[0]]...)
		prev = c[1]
	}
	return append(out, raw[prev:]...), true
}

// withStanzaID returns a copy of the message raw with the XEP-0359
// <stanza-id/> of archive by (a bare JID) and archive ID id as its last
// child.
func withStanzaID(raw []byte, by, id string) []byte {
	el := make([]byte, 0, 64+len(by)+len(id))
	el = append(el, `<stanza-id xmlns='`+NSSID+`' by='`...)
	el = stanza.AppendEscaped(el, by)
	el = append(el, `' id='`...)
	el = append(el, id...)
	el = append(el, `'/>`...)
	return appendChild(raw, el)
}

// appendChild returns a copy of the element raw with child added last.
func appendChild(raw, child []byte) []byte {
	tag, err := stanza.ParseStartTag(raw)
	if err != nil {
		return bytes.Clone(raw)
	}
	out := make([]byte, 0, len(raw)+len(child)+16)
	if tag.SelfClosing() {
		out = append(out, raw[:tag.Len()-2]...)
		out = append(out, '>')
		out = append(out, child...)
		out = append(out, `</`...)
		out = append(out, tag.Local()...)
		return append(out, '>')
	}
	end := bytes.LastIndexByte(raw, '<')
	out = append(out, raw[:end]...)
	out = append(out, child...)
	return append(out, raw[end:]...)
}

// hasStanzaID reports whether the message b carries a <stanza-id/> by the
// archive by: one the server added (forged ones are stripped on the way
// in).
func hasStanzaID(b []byte, by string) bool {
	if !bytes.Contains(b, []byte(NSSID)) {
		return false
	}
	found := false
	stanza.Children(b, func(child []byte) bool {
		tag, err := stanza.ParseStartTag(child)
		if err != nil || string(tag.Local()) != "stanza-id" || childNS(tag) != NSSID {
			return true
		}
		if v, _ := tag.AttrString("by"); v == by {
			found = true
			return false
		}
		return true
	})
	return found
}

// forwardable returns the message as archived and as it goes inside
// <forwarded/>: stamped with the sender's full JID and with its namespace
// declared, since inside <forwarded xmlns='urn:xmpp:forward:0'> it would
// otherwise inherit that one (XEP-0297 §3).
func forwardable(tag stanza.StartTag, raw []byte, from string) []byte {
	stamped := stanza.WithAttr(tag, raw, "from", from)
	if _, ok := tag.Attr("xmlns"); ok {
		return stamped
	}
	name := 1 + len(tag.Local())
	b := make([]byte, 0, len(stamped)+len(nsClient)+10)
	b = append(b, stamped[:name]...)
	b = append(b, ` xmlns='`+nsClient+`'`...)
	return append(b, stamped[name:]...)
}

// Archive IDs. An ID is a positive int64: the milliseconds since idEpoch
// in the high 41 bits, and 22 bits below them that start at a random
// value each millisecond, so IDs sort by time, do not repeat, and cannot
// be guessed from one another (XEP-0313 §3: unpredictable and unique).
// Queries by time (start, end) become ranges of IDs on the same index.
// On the wire an ID is its base-36 text, which clients treat as opaque.
const idShift = 22

// idEpoch is 2024-01-01T00:00:00Z: the 41 bits of milliseconds last
// until 2093.
var idEpoch = time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)

// idGen hands out IDs that only grow.
type idGen struct {
	mu   sync.Mutex
	last int64
}

// next returns a new ID for a message archived at now.
func (g *idGen) next(now time.Time) int64 {
	var r [4]byte
	_, _ = rand.Read(r[:])
	low := int64(binary.LittleEndian.Uint32(r[:]) & (1<<(idShift-1) - 1)) // half the range: room to grow within the millisecond
	id := idAt(now) | low
	g.mu.Lock()
	if id <= g.last {
		id = g.last + 1 + low&0xff
	}
	g.last = id
	g.mu.Unlock()
	return id
}

// idAt returns the lowest ID of the millisecond of t (0 before the epoch).
func idAt(t time.Time) int64 {
	ms := t.Sub(idEpoch).Milliseconds()
	if ms < 0 {
		return 0
	}
	return ms << idShift
}

// timeOf returns when the message of an ID was archived, to the
// millisecond.
func timeOf(id int64) time.Time {
	return idEpoch.Add(time.Duration(id>>idShift) * time.Millisecond)
}

// formatID and parseID convert IDs to and from their text.
func formatID(id int64) string { return strconv.FormatInt(id, 36) }

func parseID(s string) (int64, bool) {
	id, err := strconv.ParseInt(s, 36, 64)
	return id, err == nil && id > 0
}

// appendStamp appends an XEP-0082 DateTime with milliseconds.
func appendStamp(b []byte, t time.Time) []byte {
	return t.UTC().AppendFormat(b, "2006-01-02T15:04:05.000Z")
}
