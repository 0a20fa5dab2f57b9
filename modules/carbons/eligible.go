package carbons

import (
	"bytes"

	"github.com/krill-xmpp/krill/hook"
	"github.com/krill-xmpp/krill/stanza"
)

// Which messages are copied: XEP-0280 §6.1, its recommended rules. A
// message is eligible when it holds no <private/> and
//   - it is of type chat;
//   - it is of type normal (or has no type) and holds a <body/>;
//   - it holds a payload used in instant messaging: a chat state
//     (XEP-0085), a receipt (XEP-0184), a chat marker (XEP-0333);
//   - it is an invitation to a room: direct (XEP-0249) or mediated
//     (XEP-0045 <x xmlns='…muc#user'><invite/></x>);
//   - it is of type error in answer to an eligible message. The server
//     keeps no record of the messages it routed, so it takes an error to a
//     full JID that echoes the message's <body/> (RFC 6120 8.3.1 lets the
//     error carry the original) as one;
//
// and it is not of type groupchat (§6.1's MUC rules), is not a carbon
// already (it holds no <sent/> or <received/> of urn:xmpp:carbons:2: no
// carbons of carbons, nor of a client's forgery of one), and holds no
// XEP-0334 <no-copy/> hint, which asks that it be copied nowhere but to
// whom it is addressed. A private message from a room occupant (it holds
// <x xmlns='…muc#user'/> and is sent to a full JID) is not copied to the
// recipient's other resources: the room sends it to each of them. The
// <private/> element is left in the message (§9: removing it was dropped
// as a way to manipulate delivery silently).
//
// The decision reads the children through the framer's element views on
// the sender's loop, without allocating.

// traits are what classify found in a message.
type traits uint8

const (
	hasBody    traits = 1 << iota // a <body/> of jabber:client
	hasIM                         // a chat state, receipt or marker
	hasInvite                     // a direct or mediated invitation
	mucPM                         // <x xmlns='…muc#user'/> without an invitation
	hasPrivate                    // <private xmlns='urn:xmpp:carbons:2'/>
	hasNoCopy                     // <no-copy xmlns='urn:xmpp:hints'/>
	isCarbon                      // <sent/> or <received/> of urn:xmpp:carbons:2
)

// classify reads the children of the message unit, whose start tag is tag.
func classify(tag stanza.StartTag, unit []byte) traits {
	var t traits
	stanza.Children(unit, func(child []byte) bool {
		ctag, err := stanza.ParseStartTag(child)
		if err != nil {
			return true
		}
		local := string(ctag.Local())
		switch string(namespace(tag, ctag)) {
		case nsClient:
			if local == "body" {
				t |= hasBody
			}
		case NS:
			switch local {
			case "private":
				t |= hasPrivate
			case "sent", "received":
				t |= isCarbon
			}
		case NSHints:
			if local == "no-copy" {
				t |= hasNoCopy
			}
		case nsChatStates, nsReceipts, nsMarkers:
			t |= hasIM
		case nsConference:
			if local == "x" {
				t |= hasInvite
			}
		case nsMUCUser:
			if local == "x" {
				if invites(ctag, child) {
					t |= hasInvite
				} else {
					t |= mucPM
				}
			}
		}
		return true
	})
	return t
}

// namespace returns the namespace of a child element: declared on it,
// declared for its prefix on it or on the stanza, or the stanza's,
// jabber:client. It reads the attribute's raw value and unescapes only
// one that holds a reference, so that the common case allocates nothing.
func namespace(stanzaTag, tag stanza.StartTag) []byte {
	if p := tag.Prefix(); p != nil {
		attr := "xmlns:" + string(p)
		if v, ok := tag.Attr(attr); ok {
			return unescaped(v)
		}
		v, _ := stanzaTag.Attr(attr)
		return unescaped(v)
	}
	if v, ok := tag.Attr("xmlns"); ok {
		return unescaped(v)
	}
	return clientNS
}

var clientNS = []byte(nsClient)

// unescaped returns an attribute's value from its raw form: a namespace
// written with a character reference is the same namespace.
func unescaped(raw []byte) []byte {
	if bytes.IndexByte(raw, '&') < 0 {
		return raw
	}
	v, err := stanza.Unescape(nil, raw)
	if err != nil {
		return nil
	}
	return v
}

// invites reports whether a muc#user <x/> holds an <invite/>.
func invites(xtag stanza.StartTag, x []byte) bool {
	found := false
	stanza.Children(x, func(child []byte) bool {
		ctag, err := stanza.ParseStartTag(child)
		if err != nil {
			return true
		}
		_, declared := ctag.Attr("xmlns")
		inherited := ctag.Prefix() == nil && !declared // from <x/>
		found = string(ctag.Local()) == "invite" && (inherited || string(namespace(xtag, ctag)) == nsMUCUser)
		return !found
	})
	return found
}

// eligible reports whether a message with traits t is copied.
func eligible(st *hook.Stanza, t traits) bool {
	if t&(hasPrivate|hasNoCopy|isCarbon) != 0 {
		return false
	}
	switch st.Type {
	case "groupchat":
		return false
	case "chat":
		return true
	case "error":
		return st.Addr == hook.ToFull && t&hasBody != 0
	case "headline":
		return t&(hasIM|hasInvite) != 0
	}
	// normal, and types RFC 6121 5.2.2 says to treat as normal
	return t&(hasBody|hasIM|hasInvite) != 0
}
