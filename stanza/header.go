package stanza

import (
	"bytes"
	"encoding/xml"
)

// Header holds the attributes of a stream header (RFC 6120 section 4.7).
// Values are unescaped; absent attributes are empty.
type Header struct {
	// Name is the open tag's name; Space is the namespace its prefix (or the
	// default namespace, if unprefixed) is bound to in the header.
	Name xml.Name
	// Prefix is the open tag's prefix, usually "stream".
	Prefix    string
	To        string
	From      string
	ID        string
	Version   string
	Lang      string // xml:lang
	DefaultNS string // xmlns, the content namespace such as "jabber:client"
}

var (
	utf8BOM = []byte{0xEF, 0xBB, 0xBF}
	xmlDecl = []byte("<?xml")
)

// ParseHeader parses a KindHeader unit: an optional XML declaration,
// whitespace and the stream open tag.
func ParseHeader(b []byte) (Header, error) {
	i := 0
	if bytes.HasPrefix(b, utf8BOM) {
		i = len(utf8BOM)
	}
	if bytes.HasPrefix(b[i:], xmlDecl) {
		end := bytes.Index(b[i:], []byte("?>"))
		if end < 0 {
			return Header{}, errAt(i, ErrSyntax)
		}
		if err := checkXMLDecl(b[i : i+end+2]); err != nil {
			return Header{}, err
		}
		i += end + 2
	}
	for i < len(b) && isSpace(b[i]) {
		i++
	}
	t, err := ParseStartTag(b[i:])
	if err != nil {
		return Header{}, err
	}
	if t.SelfClosing() {
		return Header{}, errAt(i, ErrSyntax)
	}
	var h Header
	var bad bool
	str := func(raw []byte) string {
		v, err := Unescape(nil, raw)
		if err != nil {
			bad = true
		}
		return string(v)
	}
	h.Prefix = string(t.Prefix())
	h.Name.Local = string(t.Local())
	nsAttr := "xmlns"
	if h.Prefix != "" {
		nsAttr = "xmlns:" + h.Prefix
	}
	t.Attrs(func(name, raw []byte) bool {
		switch string(name) {
		case "to":
			h.To = str(raw)
		case "from":
			h.From = str(raw)
		case "id":
			h.ID = str(raw)
		case "version":
			h.Version = str(raw)
		case "xml:lang":
			h.Lang = str(raw)
		case "xmlns":
			h.DefaultNS = str(raw)
		}
		if string(name) == nsAttr {
			h.Name.Space = str(raw)
		}
		return true
	})
	if bad {
		return Header{}, errAt(i, ErrSyntax)
	}
	return h, nil
}

// checkXMLDecl checks a complete XML declaration, "<?xml" through "?>":
// version first, then optional encoding (which must be UTF-8) and
// standalone, as in XML 1.0 production [23].
func checkXMLDecl(d []byte) error {
	if len(d) < len("<?xml?>") || !bytes.HasPrefix(d, xmlDecl) || !bytes.HasSuffix(d, []byte("?>")) {
		return errAt(0, ErrSyntax)
	}
	body := d[len(xmlDecl) : len(d)-2]
	i, n := 0, 0
	for {
		ws := i
		for i < len(body) && isSpace(body[i]) {
			i++
		}
		if i == len(body) {
			break
		}
		if ws == i {
			return errAt(len(xmlDecl)+i, ErrSyntax)
		}
		name, val, next, ok := nextAttr(body, i)
		if !ok {
			return errAt(len(xmlDecl)+i, ErrSyntax)
		}
		switch {
		case n == 0 && string(name) == "version":
			if !validVersion(val) {
				return errAt(len(xmlDecl)+i, ErrSyntax)
			}
			n = 1
		case n == 1 && string(name) == "encoding":
			if !bytes.EqualFold(val, []byte("UTF-8")) {
				return errAt(len(xmlDecl)+i, ErrUnsupportedEncoding)
			}
			n = 2
		case n >= 1 && n <= 2 && string(name) == "standalone":
			if string(val) != "yes" && string(val) != "no" {
				return errAt(len(xmlDecl)+i, ErrSyntax)
			}
			n = 3
		default:
			return errAt(len(xmlDecl)+i, ErrSyntax)
		}
		i = next
	}
	if n == 0 {
		return errAt(0, ErrSyntax)
	}
	return nil
}

// validVersion reports whether v matches "1." [0-9]+.
func validVersion(v []byte) bool {
	if len(v) < 3 || v[0] != '1' || v[1] != '.' {
		return false
	}
	for _, c := range v[2:] {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}
