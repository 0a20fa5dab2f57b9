package stanza

import "bytes"

// StartTag is an allocation-free view of an element's start tag. Its zero
// value is an empty tag with no name and no attributes.
type StartTag struct {
	b     []byte // '<' through '>'
	name  int    // end of the qualified name in b
	colon int    // index of ':' in the name, 0 if unprefixed
}

// ParseStartTag parses the start tag at the beginning of elem, which is
// normally a complete element as yielded by a KindElement token. It checks
// the tag's syntax (QNames, quoted values without '<', whitespace between
// attributes) but neither namespaces nor duplicates: the Framer did that.
func ParseStartTag(elem []byte) (StartTag, error) {
	if len(elem) < 2 || elem[0] != '<' {
		return StartTag{}, errAt(0, ErrSyntax)
	}
	i := 1
	for i < len(elem) && !isSpace(elem[i]) && elem[i] != '>' && elem[i] != '/' {
		i++
	}
	t := StartTag{name: i}
	p, _, ok := splitQName(elem[1:i])
	if !ok {
		return StartTag{}, errAt(1, ErrSyntax)
	}
	if p != nil {
		t.colon = 1 + len(p)
	}
	for {
		ws := i
		for i < len(elem) && isSpace(elem[i]) {
			i++
		}
		if i >= len(elem) {
			return StartTag{}, errAt(i, ErrSyntax)
		}
		switch elem[i] {
		case '>':
			t.b = elem[:i+1]
			return t, nil
		case '/':
			if i+1 < len(elem) && elem[i+1] == '>' {
				t.b = elem[:i+2]
				return t, nil
			}
			return StartTag{}, errAt(i, ErrSyntax)
		}
		if ws == i {
			return StartTag{}, errAt(i, ErrSyntax)
		}
		name, raw, next, ok := nextAttr(elem, i)
		if !ok {
			return StartTag{}, errAt(i, ErrSyntax)
		}
		if _, _, ok := splitQName(name); !ok {
			return StartTag{}, errAt(i, ErrSyntax)
		}
		if bytes.IndexByte(raw, '<') >= 0 {
			return StartTag{}, errAt(i, ErrSyntax)
		}
		i = next
	}
}

// nextAttr lexes the attribute starting at b[i] (its name's first byte):
// name, optional whitespace, '=', optional whitespace, quoted value. next is
// the index after the closing quote.
func nextAttr(b []byte, i int) (name, raw []byte, next int, ok bool) {
	start := i
	for i < len(b) && b[i] != '=' && !isSpace(b[i]) && b[i] != '>' && b[i] != '/' {
		i++
	}
	name = b[start:i]
	for i < len(b) && isSpace(b[i]) {
		i++
	}
	if i >= len(b) || b[i] != '=' {
		return nil, nil, 0, false
	}
	i++
	for i < len(b) && isSpace(b[i]) {
		i++
	}
	if i >= len(b) || b[i] != '"' && b[i] != '\'' {
		return nil, nil, 0, false
	}
	q := b[i]
	i++
	end := bytes.IndexByte(b[i:], q)
	if end < 0 {
		return nil, nil, 0, false
	}
	return name, b[i : i+end], i + end + 1, true
}

// attrStart returns the index of the next attribute's name at or after i,
// or -1 at the end of the tag.
func attrStart(b []byte, i int) int {
	for i < len(b) && isSpace(b[i]) {
		i++
	}
	if i >= len(b) || b[i] == '>' || b[i] == '/' {
		return -1
	}
	return i
}

// Prefix returns the namespace prefix of the element name, nil if none.
func (t StartTag) Prefix() []byte {
	if t.colon == 0 {
		return nil
	}
	return t.b[1:t.colon]
}

// Local returns the local part of the element name.
func (t StartTag) Local() []byte {
	if t.b == nil {
		return nil
	}
	if t.colon == 0 {
		return t.b[1:t.name]
	}
	return t.b[t.colon+1 : t.name]
}

// Len returns the length of the start tag in bytes, including '>'.
func (t StartTag) Len() int { return len(t.b) }

// SelfClosing reports whether the tag ends with "/>" (an empty element).
func (t StartTag) SelfClosing() bool {
	return len(t.b) >= 2 && t.b[len(t.b)-2] == '/'
}

// Attrs calls fn for each attribute in document order, with its qualified
// name and raw (still escaped) value, until fn returns false.
func (t StartTag) Attrs(fn func(name, raw []byte) bool) {
	for i := t.name; ; {
		i = attrStart(t.b, i)
		if i < 0 {
			return
		}
		name, raw, next, ok := nextAttr(t.b, i)
		if !ok || !fn(name, raw) {
			return
		}
		i = next
	}
}

// Attr returns the raw (still escaped) value of the attribute with the
// qualified name name, such as "to", "xmlns", "xml:lang" or "xmlns:foo".
func (t StartTag) Attr(name string) (raw []byte, ok bool) {
	for i := t.name; ; {
		i = attrStart(t.b, i)
		if i < 0 {
			return nil, false
		}
		n, r, next, lexed := nextAttr(t.b, i)
		if !lexed {
			return nil, false
		}
		if string(n) == name {
			return r, true
		}
		i = next
	}
}

// AttrString returns the unescaped value of the attribute name; ok is false
// if the attribute is absent or its value does not unescape.
func (t StartTag) AttrString(name string) (string, bool) {
	raw, ok := t.Attr(name)
	if !ok {
		return "", false
	}
	if bytes.IndexByte(raw, '&') < 0 {
		return string(raw), true
	}
	v, err := Unescape(nil, raw)
	if err != nil {
		return "", false
	}
	return string(v), true
}

// Inner returns the bytes between the start tag and the end tag of the
// complete element elem; nil if elem is self-closing or malformed.
func Inner(elem []byte) []byte {
	t, err := ParseStartTag(elem)
	if err != nil || t.SelfClosing() {
		return nil
	}
	end := bytes.LastIndexByte(elem, '<')
	if end < t.Len() || end+1 >= len(elem) || elem[end+1] != '/' {
		return nil
	}
	return elem[t.Len():end]
}

// FirstChild returns the complete bytes of the first child element of elem,
// skipping character data and CDATA sections; ok is false if there is none.
func FirstChild(elem []byte) ([]byte, bool) {
	in := Inner(elem)
	for i := 0; i < len(in); {
		j := bytes.IndexByte(in[i:], '<')
		if j < 0 {
			return nil, false
		}
		i += j
		if bytes.HasPrefix(in[i:], cdataOpen) {
			k := bytes.Index(in[i+len(cdataOpen):], cdataClose)
			if k < 0 {
				return nil, false
			}
			i += len(cdataOpen) + k + len(cdataClose)
			continue
		}
		n, ok := elementLen(in[i:])
		if !ok {
			return nil, false
		}
		return in[i : i+n], true
	}
	return nil, false
}

var (
	cdataOpen  = []byte("<![CDATA[")
	cdataClose = []byte("]]>")
)

// elementLen returns the length of the complete element at the start of b.
func elementLen(b []byte) (int, bool) {
	depth := 0
	for i := 0; i < len(b); {
		if b[i] != '<' {
			j := bytes.IndexByte(b[i:], '<')
			if j < 0 {
				return 0, false
			}
			i += j
			continue
		}
		rest := b[i:]
		switch {
		case bytes.HasPrefix(rest, cdataOpen):
			k := bytes.Index(rest[len(cdataOpen):], cdataClose)
			if k < 0 {
				return 0, false
			}
			i += len(cdataOpen) + k + len(cdataClose)
		case len(rest) > 1 && rest[1] == '/':
			k := bytes.IndexByte(rest, '>')
			if k < 0 || depth == 0 {
				return 0, false
			}
			i += k + 1
			depth--
			if depth == 0 {
				return i, true
			}
		default:
			t, err := ParseStartTag(rest)
			if err != nil {
				return 0, false
			}
			i += t.Len()
			if !t.SelfClosing() {
				depth++
			} else if depth == 0 {
				return i, true
			}
		}
	}
	return 0, false
}
