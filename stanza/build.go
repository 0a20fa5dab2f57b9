package stanza

import (
	"bytes"
	"time"
)

// Builders of the stanzas the server writes itself. Each appends to b and
// returns the extended slice; values are escaped, names and conditions
// are trusted (they come from the server's own constants).

// NSStanzas is the namespace of stanza error conditions (RFC 6120 8.3.3).
const NSStanzas = "urn:ietf:params:xml:ns:xmpp-stanzas"

// AppendResult appends an iq result with id, from and to (each omitted
// when empty) carrying payload (nil: an empty result).
func AppendResult(b []byte, id, from, to string, payload []byte) []byte {
	b = append(b, `<iq type='result'`...)
	b = appendAttr(b, "id", id)
	b = appendAttr(b, "from", from)
	b = appendAttr(b, "to", to)
	if len(payload) == 0 {
		return append(b, `/>`...)
	}
	b = append(b, '>')
	b = append(b, payload...)
	return append(b, `</iq>`...)
}

// AppendError appends a stanza error reply (RFC 6120 8.3) of kind
// ("message", "presence", "iq") with error type typ and condition cond,
// and a text element when text is not empty.
func AppendError(b []byte, kind, id, from, to, typ, cond, text string) []byte {
	return AppendErrorApp(b, kind, id, from, to, typ, cond, text, "")
}

// AppendErrorApp is AppendError with an application-specific condition
// element (such as XEP-0191's <blocked/>) given as raw XML.
func AppendErrorApp(b []byte, kind, id, from, to, typ, cond, text, app string) []byte {
	b = append(b, '<')
	b = append(b, kind...)
	b = append(b, ` type='error'`...)
	b = appendAttr(b, "id", id)
	b = appendAttr(b, "from", from)
	b = appendAttr(b, "to", to)
	b = append(b, `><error type='`...)
	b = append(b, typ...)
	b = append(b, `'><`...)
	b = append(b, cond...)
	b = append(b, ` xmlns='`+NSStanzas+`'/>`...)
	if text != "" {
		b = append(b, `<text xmlns='`+NSStanzas+`'>`...)
		b = AppendEscaped(b, text)
		b = append(b, `</text>`...)
	}
	b = append(b, app...)
	b = append(b, `</error></`...)
	b = append(b, kind...)
	return append(b, '>')
}

// AppendPresence appends an empty presence of type typ ("" for available)
// from from to to (each omitted when empty).
func AppendPresence(b []byte, typ, from, to string) []byte {
	b = append(b, `<presence`...)
	b = appendAttr(b, "type", typ)
	b = appendAttr(b, "from", from)
	b = appendAttr(b, "to", to)
	return append(b, `/>`...)
}

// AppendIQ appends an iq request of type typ with payload.
func AppendIQ(b []byte, typ, id, from, to string, payload []byte) []byte {
	b = append(b, `<iq type='`...)
	b = append(b, typ...)
	b = append(b, '\'')
	b = appendAttr(b, "id", id)
	b = appendAttr(b, "from", from)
	b = appendAttr(b, "to", to)
	b = append(b, '>')
	b = append(b, payload...)
	return append(b, `</iq>`...)
}

func appendAttr(b []byte, name, value string) []byte {
	if value == "" {
		return b
	}
	b = append(b, ' ')
	b = append(b, name...)
	b = append(b, `='`...)
	b = AppendEscaped(b, value)
	return append(b, '\'')
}

// WithAttr returns a copy of elem (whose start tag is tag) with attribute
// name set to value, replacing any it had; the rest is copied unchanged.
func WithAttr(tag StartTag, elem []byte, name, value string) []byte {
	b := make([]byte, 0, len(elem)+len(value)+16)
	b = append(b, '<')
	b = append(b, tag.Local()...)
	tag.Attrs(func(n, raw []byte) bool {
		if string(n) == name {
			return true
		}
		q := byte('\'')
		if bytes.IndexByte(raw, '\'') >= 0 {
			q = '"' // the raw value may hold the other quote unescaped
		}
		b = append(b, ' ')
		b = append(b, n...)
		b = append(b, '=', q)
		b = append(b, raw...)
		b = append(b, q)
		return true
	})
	b = append(b, ' ')
	b = append(b, name...)
	b = append(b, `='`...)
	b = AppendEscaped(b, value)
	b = append(b, '\'')
	rest := tag.Len() - 1
	if tag.SelfClosing() {
		rest--
	}
	return append(b, elem[rest:]...)
}

// WithDelay returns a copy of the complete stanza b with an XEP-0203
// delay element from from saying it was first handled at at (UTC, to
// the second): for messages the server stored or resends.
func WithDelay(b []byte, from string, at time.Time) []byte {
	tag, err := ParseStartTag(b)
	if err != nil {
		return bytes.Clone(b)
	}
	delay := []byte(`<delay xmlns='urn:xmpp:delay' from='`)
	delay = AppendEscaped(delay, from)
	delay = append(delay, `' stamp='`...)
	delay = at.UTC().AppendFormat(delay, "2006-01-02T15:04:05Z")
	delay = append(delay, `'/>`...)
	if tag.SelfClosing() {
		out := append([]byte(nil), b[:tag.Len()-2]...)
		out = append(out, '>')
		out = append(out, delay...)
		out = append(out, `</`...)
		out = append(out, tag.Local()...)
		return append(out, '>')
	}
	end := bytes.LastIndexByte(b, '<')
	out := append([]byte(nil), b[:end]...)
	out = append(out, delay...)
	return append(out, b[end:]...)
}
