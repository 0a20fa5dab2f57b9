package stanza

import (
	"bytes"
	"errors"
)

// Children calls fn with the complete bytes of each child element of the
// complete element elem, in document order, skipping character data and
// CDATA sections, until fn returns false. It reports false if elem's
// content is malformed (a child that does not end inside elem); fn may
// have been called for the children before it. It allocates nothing:
// routing decisions (store a message offline or not) look at a stanza's
// children on the event loop without a DOM.
func Children(elem []byte, fn func(child []byte) bool) bool {
	in := Inner(elem)
	for i := 0; i < len(in); {
		j := bytes.IndexByte(in[i:], '<')
		if j < 0 {
			return true
		}
		i += j
		if bytes.HasPrefix(in[i:], cdataOpen) {
			k := bytes.Index(in[i+len(cdataOpen):], cdataClose)
			if k < 0 {
				return false
			}
			i += len(cdataOpen) + k + len(cdataClose)
			continue
		}
		n, ok := elementLen(in[i:])
		if !ok {
			return false
		}
		if !fn(in[i : i+n]) {
			return true
		}
		i += n
	}
	return true
}

// ErrNotText means an element expected to hold only text holds markup.
var ErrNotText = errors.New("stanza: markup in a text-only element")

// Text returns the character data of the complete element elem, which
// must hold no child element (a username, a password, a status):
// ErrNotText when it does, an unescaping error for a bad reference.
func Text(elem []byte) (string, error) {
	inner := Inner(elem)
	if bytes.IndexByte(inner, '<') >= 0 {
		return "", ErrNotText
	}
	v, err := Unescape(nil, inner)
	if err != nil {
		return "", err
	}
	return string(v), nil
}
