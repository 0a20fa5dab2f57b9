package stanza

import "unicode/utf8"

// Character classes of XML 1.0 (fifth edition) and Namespaces in XML 1.0:
// names here are NCNames, so ':' is handled by the callers.

// asciiClass bits.
const (
	cNameStart = 1 << iota // NameStartChar other than ':'
	cNameChar              // NameChar other than ':'
	cSpace                 // S
	cText                  // ordinary character data: no action in content or attribute values
)

var asciiClass = func() (t [256]uint8) {
	for c := 0; c < 0x80; c++ {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c == '_':
			t[c] |= cNameStart | cNameChar
		case c >= '0' && c <= '9', c == '-', c == '.':
			t[c] |= cNameChar
		case c == ' ', c == '\t', c == '\n', c == '\r':
			t[c] |= cSpace
		}
		if c >= 0x20 && c != '<' && c != '&' && c != ']' && c != '"' && c != '\'' || c == '\t' || c == '\n' || c == '\r' {
			t[c] |= cText
		}
	}
	return t
}()

func isSpace(c byte) bool { return asciiClass[c]&cSpace != 0 }

// isNameStart reports whether r may start an NCName.
func isNameStart(r rune) bool {
	if r < utf8.RuneSelf {
		return asciiClass[r]&cNameStart != 0
	}
	switch {
	case r >= 0xC0 && r <= 0xD6, r >= 0xD8 && r <= 0xF6, r >= 0xF8 && r <= 0x2FF,
		r >= 0x370 && r <= 0x37D, r >= 0x37F && r <= 0x1FFF, r >= 0x200C && r <= 0x200D,
		r >= 0x2070 && r <= 0x218F, r >= 0x2C00 && r <= 0x2FEF, r >= 0x3001 && r <= 0xD7FF,
		r >= 0xF900 && r <= 0xFDCF, r >= 0xFDF0 && r <= 0xFFFD, r >= 0x10000 && r <= 0xEFFFF:
		return true
	}
	return false
}

// isNameChar reports whether r may continue an NCName.
func isNameChar(r rune) bool {
	if r < utf8.RuneSelf {
		return asciiClass[r]&cNameChar != 0
	}
	return isNameStart(r) || r == 0xB7 || r >= 0x300 && r <= 0x36F || r >= 0x203F && r <= 0x2040
}

// isChar reports whether r is a Char of XML 1.0.
func isChar(r rune) bool {
	switch {
	case r == '\t', r == '\n', r == '\r':
		return true
	case r < 0x20:
		return false
	case r <= 0xD7FF:
		return true
	case r < 0xE000:
		return false
	case r <= 0xFFFD:
		return true
	}
	return r >= 0x10000 && r <= utf8.MaxRune
}

// validNCName reports whether b is a non-empty NCName.
func validNCName(b []byte) bool {
	if len(b) == 0 {
		return false
	}
	for i := 0; i < len(b); {
		r, n := rune(b[i]), 1
		if r >= utf8.RuneSelf {
			r, n = utf8.DecodeRune(b[i:])
			if r == utf8.RuneError {
				return false
			}
		}
		if i == 0 && !isNameStart(r) || !isNameChar(r) {
			return false
		}
		i += n
	}
	return true
}

// splitQName splits a QName into prefix and local part; ok is false if b is
// not a QName (NCName or NCName:NCName).
func splitQName(b []byte) (prefix, local []byte, ok bool) {
	for i, c := range b {
		if c == ':' {
			prefix, local = b[:i], b[i+1:]
			return prefix, local, validNCName(prefix) && validNCName(local)
		}
	}
	return nil, b, validNCName(b)
}
