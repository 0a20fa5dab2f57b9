package offline

import "github.com/krill-xmpp/krill/stanza"

// Which messages are worth keeping for an account with no available
// resource (XEP-0160, RFC 6121 8.5.2.2.1). A message is stored when it
// carries content a person reads later: a <body>, or an end-to-end
// encrypted payload (whose body, if any, is only a fallback text); or when
// its sender asks for it with an XEP-0334 <store/> hint. It is not stored
// when it carries <no-store/> or <no-permanent-store/>, nor when it holds
// nothing but chat states (XEP-0085), receipts (XEP-0184), markers and the
// like: those are about a conversation happening now, and delivered an
// hour later they are noise (a "typing" that never ends).
//
// A message not worth storing is dropped silently, as Prosody and ejabberd
// do for chat states: RFC 6121 8.5.2.2.1 leaves a server that does not keep a
// message free to ignore it, and an error for every "composing" would
// both annoy the sender and tell it that the contact is offline. The
// decision is made on the event loop from the framer's element views,
// without a storage lookup, so a body-less message to an unknown account
// is dropped the same way.

// Namespaces that decide whether a message is stored.
const (
	nsClient    = "jabber:client"
	nsHints     = "urn:xmpp:hints"                 // XEP-0334
	nsOMEMO     = "eu.siacs.conversations.axolotl" // XEP-0384 before 0.4
	nsOMEMO2    = "urn:xmpp:omemo:2"               // XEP-0384 0.4 and later
	nsPGPLegacy = "jabber:x:encrypted"             // XEP-0027
	nsOX        = "urn:xmpp:openpgp:0"             // XEP-0373
)

// worthy reports whether a message for an account with no
// available resource is to be stored offline.
func worthy(unit []byte) bool {
	content, store, noStore := false, false, false
	stanza.Children(unit, func(child []byte) bool {
		tag, err := stanza.ParseStartTag(child)
		if err != nil {
			return true
		}
		local := string(tag.Local())
		var ns string
		if p := tag.Prefix(); p != nil {
			ns, _ = tag.AttrString("xmlns:" + string(p))
		} else if v, ok := tag.AttrString("xmlns"); ok {
			ns = v
		} else {
			ns = nsClient // inherited from the stanza
		}
		switch {
		case ns == nsClient && local == "body":
			content = true
		case ns == nsOMEMO && local == "encrypted", ns == nsOMEMO2 && local == "encrypted",
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
