package roster

import (
	"bytes"
	"errors"
	"slices"

	"mellium.im/xmpp/jid"

	"github.com/krill-xmpp/krill/stanza"
)

// Limits of one roster item in a set.
const (
	// MaxGroups is the most groups one item may have.
	MaxGroups = 32
	// MaxNameLen bounds a group's and an item's name, in bytes.
	MaxNameLen = 256
)

// A roster set is parsed on the event loop, so it is read with the
// framer's element views rather than decoded: one pass over the payload
// (which the framer has already checked to be well-formed and within
// c2s.max_stanza_size), no reflection, and it stops at the second item or
// the thirty-third group instead of decoding them all.

// setItem is the one item of a roster set.
type setItem struct {
	contact string // normalised bare JID
	name    string
	groups  []string // sorted, deduplicated
	remove  bool
}

// parseError is a roster set refused with a stanza error condition.
type parseError struct{ cond, text string }

func (e *parseError) Error() string { return "roster: " + e.cond + ": " + e.text }

func badRequest(text string) error { return &parseError{"bad-request", text} }

// parseSet reads the payload of a roster set (RFC 6121 2.3.2): exactly
// one item, with a JID, and limits on its name and groups.
func parseSet(query []byte) (setItem, error) {
	var item []byte
	n := 0
	err := eachChild(query, func(child []byte, tag stanza.StartTag) bool {
		if !inRosterNS(tag) || string(tag.Local()) != "item" {
			return true // an extension: ignored
		}
		n++
		item = child
		return n < 2
	})
	if err != nil {
		return setItem{}, err
	}
	if n != 1 {
		// No text: the condition says it (and TestRepliesOnBehalf pins
		// these bytes).
		return setItem{}, badRequest("")
	}
	tag, err := stanza.ParseStartTag(item)
	if err != nil {
		return setItem{}, badRequest("malformed item")
	}
	var out setItem
	raw, ok := tag.AttrString("jid")
	if !ok {
		return setItem{}, badRequest("the item has no valid jid")
	}
	j, err := jid.Parse(raw)
	if err != nil {
		return setItem{}, badRequest("the item has no valid jid")
	}
	out.contact = j.Bare().String()
	if sub, _ := tag.AttrString("subscription"); sub == "remove" {
		out.remove = true
		return out, nil
	}
	if out.name, ok = tag.AttrString("name"); !ok && hasAttr(tag, "name") {
		return setItem{}, badRequest("malformed name")
	}
	if len(out.name) > MaxNameLen {
		return setItem{}, badRequest("the item's name is too long")
	}
	var perr error
	err = eachChild(item, func(child []byte, gt stanza.StartTag) bool {
		if !inRosterNS(gt) || string(gt.Local()) != "group" {
			return true
		}
		if len(out.groups) == MaxGroups {
			perr = badRequest("too many groups")
			return false
		}
		g, err := text(child)
		if err != nil {
			perr = badRequest("malformed group")
			return false
		}
		if len(g) == 0 || len(g) > MaxNameLen {
			perr = &parseError{"not-acceptable", "a group name is empty or too long"}
			return false
		}
		out.groups = append(out.groups, string(g))
		return true
	})
	if err == nil {
		err = perr
	}
	if err != nil {
		return setItem{}, err
	}
	if len(out.groups) > 0 {
		slices.Sort(out.groups)
		out.groups = slices.Compact(out.groups)
	}
	return out, nil
}

func hasAttr(tag stanza.StartTag, name string) bool {
	_, ok := tag.Attr(name)
	return ok
}

// inRosterNS reports whether a child element is in the roster namespace:
// unprefixed and not declaring another default namespace.
func inRosterNS(tag stanza.StartTag) bool {
	if tag.Prefix() != nil {
		return false
	}
	ns, ok := tag.AttrString("xmlns")
	return !ok || ns == NS
}

var (
	cdataOpen  = []byte("<![CDATA[")
	cdataClose = []byte("]]>")
)

// eachChild calls fn with each child element of elem and its start tag,
// until fn returns false.
func eachChild(elem []byte, fn func(child []byte, tag stanza.StartTag) bool) error {
	var err error
	ok := stanza.Children(elem, func(child []byte) bool {
		tag, perr := stanza.ParseStartTag(child)
		if perr != nil {
			err = badRequest("malformed element")
			return false
		}
		return fn(child, tag)
	})
	if err == nil && !ok {
		err = badRequest("malformed element")
	}
	return err
}

// errChild is text() meeting a child element.
var errChild = errors.New("roster: element where text was expected")

// text returns the character data of a text-only element, unescaped, with
// CDATA sections taken as they are.
func text(elem []byte) ([]byte, error) {
	in := stanza.Inner(elem)
	var out []byte
	for len(in) > 0 {
		i := bytes.IndexByte(in, '<')
		if i < 0 {
			return stanza.Unescape(out, in)
		}
		var err error
		if out, err = stanza.Unescape(out, in[:i]); err != nil {
			return nil, err
		}
		in = in[i:]
		if !bytes.HasPrefix(in, cdataOpen) {
			return nil, errChild
		}
		k := bytes.Index(in, cdataClose)
		if k < 0 {
			return nil, errChild
		}
		out = append(out, in[len(cdataOpen):k]...)
		in = in[k+len(cdataClose):]
	}
	return out, nil
}
