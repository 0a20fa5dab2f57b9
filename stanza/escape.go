package stanza

import (
	"bytes"
	"unicode/utf8"
)

// predefined returns the character a predefined entity name stands for.
func predefined(name []byte) (byte, bool) {
	switch string(name) {
	case "lt":
		return '<', true
	case "gt":
		return '>', true
	case "amp":
		return '&', true
	case "apos":
		return '\'', true
	case "quot":
		return '"', true
	}
	return 0, false
}

// Unescape appends raw to dst with the five predefined entities and numeric
// character references resolved. raw is character data or an attribute value
// from a complete element. Other entity references are ErrEntity, malformed
// references ErrSyntax and references to characters XML forbids
// ErrInvalidChar. Attribute-value whitespace normalisation is not applied.
func Unescape(dst, raw []byte) ([]byte, error) {
	for i := 0; i < len(raw); {
		j := bytes.IndexByte(raw[i:], '&')
		if j < 0 {
			return append(dst, raw[i:]...), nil
		}
		dst = append(dst, raw[i:i+j]...)
		i += j
		end := bytes.IndexByte(raw[i:], ';')
		if end < 0 {
			return dst, errAt(i, ErrSyntax)
		}
		ref := raw[i+1 : i+end]
		if len(ref) > 0 && ref[0] == '#' {
			r, ok := parseCharRef(ref[1:])
			if !ok {
				return dst, errAt(i, ErrSyntax)
			}
			if !isChar(r) {
				return dst, errAt(i, ErrInvalidChar)
			}
			dst = utf8.AppendRune(dst, r)
		} else if c, ok := predefined(ref); ok {
			dst = append(dst, c)
		} else if validNCName(ref) {
			return dst, errAt(i, ErrEntity)
		} else {
			return dst, errAt(i, ErrSyntax)
		}
		i += end + 1
	}
	return dst, nil
}

// parseCharRef parses the digits of "&#...;" or "&#x...;" (after '#').
// Values beyond U+10FFFF saturate so that they stay invalid.
func parseCharRef(b []byte) (rune, bool) {
	base := rune(10)
	if len(b) > 0 && b[0] == 'x' {
		base, b = 16, b[1:]
	}
	if len(b) == 0 {
		return 0, false
	}
	var r rune
	for _, c := range b {
		d, ok := digitVal(c, base)
		if !ok {
			return 0, false
		}
		r = r*base + d
		if r > utf8.MaxRune {
			r = utf8.MaxRune + 1
		}
	}
	return r, true
}

// digitVal returns the value of c as a digit in base 10 or 16.
func digitVal(c byte, base rune) (rune, bool) {
	switch {
	case c >= '0' && c <= '9':
		return rune(c - '0'), true
	case base == 16 && c >= 'a' && c <= 'f':
		return rune(c-'a') + 10, true
	case base == 16 && c >= 'A' && c <= 'F':
		return rune(c-'A') + 10, true
	}
	return 0, false
}

// AppendEscaped appends s to dst escaped for use as character data or as an
// attribute value in either quote style: &, <, >, ' and " become entity
// references. It does not check that s holds only characters XML allows.
func AppendEscaped(dst []byte, s string) []byte {
	last := 0
	for i := 0; i < len(s); i++ {
		var esc string
		switch s[i] {
		case '&':
			esc = "&amp;"
		case '<':
			esc = "&lt;"
		case '>':
			esc = "&gt;"
		case '\'':
			esc = "&apos;"
		case '"':
			esc = "&quot;"
		default:
			continue
		}
		dst = append(dst, s[last:i]...)
		dst = append(dst, esc...)
		last = i + 1
	}
	return append(dst, s[last:]...)
}
