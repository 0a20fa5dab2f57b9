// Package stanza frames an XMPP XML stream (RFC 6120 section 4) into its
// top-level units without building a tree, and offers allocation-free views
// of the complete elements it yields.
//
// A Framer is a resumable byte state machine: it is handed all bytes not yet
// consumed, reports the next complete unit (stream header, top-level
// element, whitespace keepalive, stream close) or asks for more, and never
// rescans bytes it has seen. It enforces well-formedness, namespace
// well-formedness of prefixes, the restricted XML profile of RFC 6120
// section 11 and size limits while scanning, before anything is buffered in
// full.
package stanza

import (
	"hash/maphash"
	"math"
	"strconv"
	"unicode/utf8"
)

// Kind is the kind of unit a Token covers.
type Kind uint8

// Kinds of unit.
const (
	KindNone       Kind = iota // no complete unit yet: feed more bytes
	KindHeader                 // optional XML declaration, whitespace and the stream open tag, one unit
	KindElement                // one complete top-level element (stanza or nonza), including its end tag
	KindWhitespace             // a run of whitespace between top-level elements (keepalive), or before a restarted stream's header; Len covers the run
	KindClose                  // the stream's close tag, matching the header's qualified name
)

var kindNames = [...]string{"none", "header", "element", "whitespace", "close"}

// String returns the kind's lowercase name, such as "element".
func (k Kind) String() string {
	if int(k) < len(kindNames) {
		return kindNames[k]
	}
	return "kind(" + strconv.Itoa(int(k)) + ")"
}

// Token is a complete unit at the front of the buffer given to Next: its
// bytes are buf[:Len].
type Token struct {
	Kind Kind
	Len  int
}

// Limits bound what one top-level unit may cost. A zero field means no limit.
type Limits struct {
	MaxBytes    int // most bytes in one top-level element (also the header); checked as bytes are scanned
	MaxElements int // most start tags within one top-level element, itself included
	MaxDepth    int // deepest nesting within a top-level element; the top-level element is depth 1
}

// Internal bounds, beyond the configurable Limits, that keep the cost of
// checks linear in the input.
const (
	maxAttrs       = 128 // attributes on one start tag (duplicate check)
	maxDecls       = 32  // prefixed namespace declarations in scope in one top-level element
	maxHeaderDecls = 8   // prefixed namespace declarations on the stream header
	maxXMLDecl     = 256 // bytes of the XML declaration
	maxUnit        = math.MaxInt32
)

// Parser states.
const (
	sStart        uint8 = iota // stream start: BOM, XML declaration, whitespace or '<'
	sPrologWS                  // whitespace before the stream open tag
	sPrologLt                  // after '<' before the stream open tag
	sDecl                      // inside "<?xml ... ?>"
	sTop                       // between top-level units, at the start of one
	sTopLt                     // after '<' at top level
	sTagName                   // element name in a start tag
	sTagSpace                  // inside a start tag after whitespace
	sAttrName                  // attribute name
	sAttrNameEnd               // whitespace after an attribute name
	sAttrEq                    // after '='
	sAttrValue                 // quoted attribute value
	sAttrValueEnd              // after the closing quote
	sTagSlash                  // after '/' in a start tag
	sContent                   // character data inside an element
	sContentLt                 // after '<' in content
	sBang                      // after "<!"
	sCDATAOpen                 // matching "[CDATA["
	sCDATA                     // inside a CDATA section
	sEndName                   // name in an end tag
	sEndSpace                  // whitespace after an end tag's name
	sCloseName                 // name in the stream close tag
	sCloseSpace                // whitespace after the close tag's name
	sEntStart                  // after '&'
	sEntName                   // entity name
	sCharRef                   // after "&#"
	sCharRefDec                // decimal character reference
	sCharRefHex                // hexadecimal character reference
)

// Stream phases.
const (
	phHeader uint8 = iota // expecting the stream header
	phStream              // between or inside top-level elements
	phClosed              // after the stream close tag
)

// Framer splits an XMPP stream into Tokens. The zero value expects a stream
// header and has no limits. A Framer is not safe for concurrent use; it is
// meant to live inside a connection's state, so it is small and allocates
// only for what the peer makes it track: the header's qualified name and
// prefixes (unless they are the usual "stream:stream"), and a stack of open
// elements and namespace declarations that is kept across stanzas.
type Framer struct {
	err error // sticky: set once, returned by every later Next

	// hdr is the header's qualified name followed by the prefixes it
	// declares, each preceded by a space.
	hdr string

	// stack holds, for the open elements of the current top-level element,
	// the offset of each name (a positive int32) and, above it, a triple
	// [previous declTop, prefix length, -prefix offset] for each prefixed
	// namespace declaration on that element.
	stack   []int32
	declTop int32 // index+1 of the innermost declaration's last slot, 0 if none
	ndecl   int32 // declarations in scope

	base int64 // stream offset of buf[0]

	maxBytes, maxElems, maxDepth int32

	pos   int32 // bytes of buf scanned
	mark  int32 // start of the current tag ('<'), or of the name in an end or close tag
	aux   int32 // entity start, open element name offset, or "[CDATA[" index
	depth int32
	elems int32
	cp    rune // code point being decoded, or character reference value

	state, phase uint8
	ret          uint8 // state to return to after an entity reference
	need         uint8 // UTF-8 continuation bytes still expected
	lo, hi       uint8 // bounds of the next continuation byte
	quote        uint8 // quote of the current attribute value
	run          uint8 // state-specific: ']' count, colon seen, digit seen, declaration allowed
	restart      bool  // set by Reset: whitespace may precede the new header's XML declaration
}

// SetLimits sets the limits that apply from the next byte scanned. It may
// be called between any two calls to Next. Negative values mean no limit.
func (f *Framer) SetLimits(l Limits) {
	f.maxBytes, f.maxElems, f.maxDepth = clamp(l.MaxBytes), clamp(l.MaxElements), clamp(l.MaxDepth)
}

func clamp(n int) int32 {
	if n <= 0 {
		return 0
	}
	if n > maxUnit {
		return maxUnit
	}
	return int32(n)
}

// Reset prepares f for a fresh stream header, as after a stream restart
// (SASL success, STARTTLS), and clears any error. Limits are kept. The next
// call to Next must be given the bytes that follow the last token.
//
// A restarted stream is a new XML document, so its header may again begin
// with an XML declaration. Unlike at the very start of the first stream,
// whitespace may come first: it is what the client wrote after its last
// element of the previous stream (go-sendxmpp writes a newline before
// "<?xml version='1.0'?>"). Next reports it as KindWhitespace, then the
// header as if the declaration came first. A processing instruction
// anywhere else is still refused.
func (f *Framer) Reset() {
	stack := f.stack[:0]
	*f = Framer{maxBytes: f.maxBytes, maxElems: f.maxElems, maxDepth: f.maxDepth, stack: stack, restart: true}
}

// Scanned returns how many bytes at the front of the unconsumed buffer f
// has already scanned.
func (f *Framer) Scanned() int { return int(f.pos) }

// Next scans buf, which must hold every byte not yet consumed: the bytes
// given to the previous call, minus the previous token's Len if it was not
// KindNone, plus any new bytes. It returns the unit at the front of buf,
// or KindNone if buf holds no complete unit yet; in that case it remembers
// its progress and resumes from there on the next call. A whitespace run is
// reported up to the end of buf, so one run may come as several tokens.
//
// After an error, f is dead: every later call returns the same error.
func (f *Framer) Next(buf []byte) (Token, error) {
	if f.err != nil {
		return Token{}, f.err
	}
	if len(buf) < int(f.pos) {
		return Token{}, f.fail(int(f.pos), ErrBufferShrunk)
	}
	if f.pos == 0 && (f.state == sTop || f.state == sStart && f.restart) && len(buf) > 0 && isSpace(buf[0]) {
		n := 1
		for n < len(buf) && n < maxUnit && isSpace(buf[n]) {
			n++
		}
		return f.emit(KindWhitespace, n), nil
	}
	limit := maxUnit
	if f.maxBytes > 0 {
		limit = int(f.maxBytes)
	}
	n, over := len(buf), false
	if n > limit {
		n, over = limit, true
	}
	i := int(f.pos)
	for i < n {
		c := buf[i]
		start := i
		var r rune
		if f.need == 0 && c < utf8.RuneSelf {
			r = rune(c)
			if asciiClass[c]&cText != 0 {
				// Fast path over plain character data.
				switch f.state {
				case sContent:
					if c == '>' && f.run >= 2 {
						break // "]]>": let step reject it
					}
					f.run = 0
					for i+1 < n && asciiClass[buf[i+1]]&cText != 0 {
						i++
					}
					i++
					continue
				case sTagName, sAttrName:
					if asciiClass[c]&cNameChar == 0 || buf[i-1] == ':' {
						break
					}
					for i+1 < n && asciiClass[buf[i+1]]&cNameChar != 0 {
						i++
					}
					i++
					continue
				case sAttrValue, sCDATA:
					if f.state == sCDATA {
						if c == '>' && f.run >= 2 {
							break
						}
						f.run = 0
					}
					for i+1 < n && asciiClass[buf[i+1]]&cText != 0 && buf[i+1] != '>' {
						i++
					}
					i++
					continue
				}
			} else if c < 0x20 && !isSpace(c) {
				if c == 0 && f.phase == phHeader && (f.state == sStart || f.state == sPrologLt) {
					return Token{}, f.fail(i, ErrUnsupportedEncoding)
				}
				return Token{}, f.fail(i, ErrInvalidChar)
			}
		} else {
			if f.need == 0 && f.phase == phHeader && i == 0 && (c == 0xFE || c == 0xFF) {
				return Token{}, f.fail(i, ErrUnsupportedEncoding) // UTF-16 or UTF-32 BOM
			}
			done, err := f.decode(c)
			if err != nil {
				return Token{}, f.fail(i, err)
			}
			if !done {
				i++
				continue
			}
			r = f.cp
			start = i + 1 - utf8.RuneLen(r)
			if !isChar(r) {
				return Token{}, f.fail(start, ErrInvalidChar)
			}
		}
		k, err := f.step(buf, start, i, r)
		if err != nil {
			return Token{}, f.fail(start, err)
		}
		if k != KindNone {
			return f.emit(k, i+1), nil
		}
		i++
	}
	f.pos = int32(n)
	if over {
		return Token{}, f.fail(n, ErrTooLarge)
	}
	return Token{}, nil
}

func (f *Framer) fail(off int, err error) error {
	f.err = &FrameError{Offset: f.base + int64(off), Err: err}
	return f.err
}

// emit ends the current unit after n bytes.
func (f *Framer) emit(k Kind, n int) Token {
	f.base += int64(n)
	f.pos, f.mark, f.aux, f.depth, f.elems, f.run = 0, 0, 0, 0, 0, 0
	f.state = sTop
	switch k {
	case KindHeader:
		f.phase = phStream
	case KindElement:
		if cap(f.stack) > 64 {
			f.stack = nil // do not keep one deep stanza's stack for good
		}
		f.stack, f.declTop, f.ndecl = f.stack[:0], 0, 0
	case KindClose:
		f.phase = phClosed
	case KindWhitespace:
		if f.phase == phHeader {
			f.state = sStart // whitespace before a restarted stream's header
		}
	}
	return Token{Kind: k, Len: n}
}

// decode feeds one byte of a multi-byte UTF-8 sequence, rejecting overlong
// forms, surrogates and values above U+10FFFF (RFC 3629 section 4).
func (f *Framer) decode(c byte) (done bool, err error) {
	if f.need == 0 {
		f.lo, f.hi = 0x80, 0xBF
		switch {
		case c >= 0xC2 && c <= 0xDF:
			f.need, f.cp = 1, rune(c&0x1F)
		case c >= 0xE0 && c <= 0xEF:
			f.need, f.cp = 2, rune(c&0x0F)
			if c == 0xE0 {
				f.lo = 0xA0
			} else if c == 0xED {
				f.hi = 0x9F
			}
		case c >= 0xF0 && c <= 0xF4:
			f.need, f.cp = 3, rune(c&0x07)
			if c == 0xF0 {
				f.lo = 0x90
			} else if c == 0xF4 {
				f.hi = 0x8F
			}
		default:
			return false, ErrInvalidUTF8
		}
		return false, nil
	}
	if c < f.lo || c > f.hi {
		return false, ErrInvalidUTF8
	}
	f.cp = f.cp<<6 | rune(c&0x3F)
	f.lo, f.hi = 0x80, 0xBF
	f.need--
	return f.need == 0, nil
}

// step advances the state machine over the character r, which occupies
// buf[start:end+1]. It returns the kind of unit that ends at end, if any.
func (f *Framer) step(buf []byte, start, end int, r rune) (Kind, error) {
	sp := r < utf8.RuneSelf && isSpace(byte(r))
	switch f.state {
	case sStart:
		switch {
		case r == 0xFEFF && start == 0:
			// UTF-8 byte order mark; the XML declaration may follow.
		case r == '<':
			f.mark, f.run, f.state = int32(start), 1, sPrologLt
		case sp:
			f.state = sPrologWS
		default:
			return 0, ErrNoHeader
		}
	case sPrologWS:
		switch {
		case r == '<':
			f.mark, f.run, f.state = int32(start), 0, sPrologLt
		case !sp:
			return 0, ErrNoHeader
		}
	case sPrologLt:
		switch {
		case r == '?':
			if f.run == 0 {
				return 0, ErrProcInst
			}
			f.state = sDecl
		case r == '!':
			f.state = sBang
		case isNameStart(r):
			return 0, f.beginTag(start)
		case r == '/':
			return 0, ErrNoHeader
		default:
			return 0, ErrSyntax
		}
	case sDecl:
		k := start - int(f.mark)
		switch {
		case k <= 4:
			if r != rune("<?xml"[k]) {
				return 0, ErrProcInst
			}
		case k == 5:
			if !sp {
				return 0, ErrProcInst // a PI whose target starts with "xml"
			}
		case r == '>' && buf[start-1] == '?':
			if err := checkXMLDecl(buf[f.mark : end+1]); err != nil {
				return 0, err.(*FrameError).Err
			}
			f.state = sPrologWS
		case k >= maxXMLDecl:
			return 0, ErrSyntax
		}
	case sTop:
		if f.phase == phClosed {
			return 0, ErrAfterClose
		}
		if r != '<' {
			return 0, ErrSyntax // character data outside elements
		}
		f.state = sTopLt
	case sTopLt:
		switch {
		case r == '/':
			f.mark, f.state = int32(end+1), sCloseName
		case r == '!':
			f.state = sBang
		case r == '?':
			return 0, ErrProcInst
		case isNameStart(r):
			return 0, f.beginTag(start)
		default:
			return 0, ErrSyntax
		}
	case sContentLt:
		switch {
		case r == '/':
			f.aux = f.openName()
			f.mark, f.state = int32(end+1), sEndName
		case r == '!':
			f.state = sBang
		case r == '?':
			return 0, ErrProcInst
		case isNameStart(r):
			return 0, f.beginTag(start)
		default:
			return 0, ErrSyntax
		}
	case sTagName, sAttrName:
		switch {
		case r == ':':
			if f.run != 0 {
				return 0, ErrSyntax // a second colon
			}
			f.run = 1
		case isNameChar(r):
			if buf[start-1] == ':' && !isNameStart(r) {
				return 0, ErrSyntax
			}
		case buf[start-1] == ':':
			return 0, ErrSyntax
		case f.state == sTagName:
			return f.tagSep(buf, end, r, sp)
		case r == '=':
			f.state = sAttrEq
		case sp:
			f.state = sAttrNameEnd
		default:
			return 0, ErrSyntax
		}
	case sTagSpace:
		switch {
		case sp:
		case isNameStart(r):
			f.run, f.state = 0, sAttrName
		default:
			return f.tagSep(buf, end, r, false)
		}
	case sAttrNameEnd:
		switch {
		case r == '=':
			f.state = sAttrEq
		case !sp:
			return 0, ErrSyntax
		}
	case sAttrEq:
		switch {
		case r == '"' || r == '\'':
			f.quote, f.state = byte(r), sAttrValue
		case !sp:
			return 0, ErrSyntax
		}
	case sAttrValue:
		switch r {
		case rune(f.quote):
			f.state = sAttrValueEnd
		case '<':
			return 0, ErrSyntax
		case '&':
			f.aux, f.ret, f.state = int32(start), sAttrValue, sEntStart
		}
	case sAttrValueEnd:
		if sp {
			f.state = sTagSpace
			return 0, nil
		}
		return f.tagSep(buf, end, r, false)
	case sTagSlash:
		if r != '>' {
			return 0, ErrSyntax
		}
		return f.endStartTag(buf, end, true)
	case sContent:
		switch r {
		case '<':
			f.state = sContentLt
		case '&':
			f.aux, f.ret, f.state = int32(start), sContent, sEntStart
		case ']':
			if f.run < 2 {
				f.run++
			}
		case '>':
			if f.run >= 2 {
				return 0, ErrSyntax // "]]>" in character data
			}
			f.run = 0
		default:
			f.run = 0
		}
	case sBang:
		switch {
		case r == '-':
			return 0, ErrComment
		case r == '[' && f.depth > 0:
			f.aux, f.state = 0, sCDATAOpen
		case r < utf8.RuneSelf && asciiClass[r]&cNameStart != 0:
			return 0, ErrDTD // <!DOCTYPE, <!ENTITY, <!ELEMENT ...
		default:
			return 0, ErrSyntax
		}
	case sCDATAOpen:
		if r != rune("CDATA["[f.aux]) {
			return 0, ErrSyntax
		}
		f.aux++
		if f.aux == 6 {
			f.run, f.state = 0, sCDATA
		}
	case sCDATA:
		switch {
		case r == ']':
			if f.run < 2 {
				f.run++
			}
		case r == '>' && f.run >= 2:
			f.run, f.state = 0, sContent
		default:
			f.run = 0
		}
	case sEndName:
		if sp || r == '>' {
			k := int(f.aux) + start - int(f.mark)
			if start == int(f.mark) || !endsName(buf[k]) {
				return 0, ErrMismatchedTag
			}
			if sp {
				f.state = sEndSpace
				return 0, nil
			}
			return f.endTag(end)
		}
		k := int(f.aux) + start - int(f.mark)
		if k+end-start >= int(f.mark) || string(buf[start:end+1]) != string(buf[k:k+end+1-start]) {
			return 0, ErrMismatchedTag
		}
	case sEndSpace, sCloseSpace:
		switch {
		case r == '>':
			if f.state == sCloseSpace {
				return KindClose, nil
			}
			return f.endTag(end)
		case !sp:
			return 0, ErrSyntax
		}
	case sCloseName:
		qn := f.hdr
		for j := 0; j < len(qn); j++ {
			if qn[j] == ' ' {
				qn = qn[:j]
				break
			}
		}
		k := start - int(f.mark)
		if sp || r == '>' {
			if k != len(qn) {
				return 0, ErrMismatchedTag
			}
			if sp {
				f.state = sCloseSpace
				return 0, nil
			}
			return KindClose, nil
		}
		if k+end+1-start > len(qn) || string(buf[start:end+1]) != qn[k:k+end+1-start] {
			return 0, ErrMismatchedTag
		}
	case sEntStart:
		switch {
		case r == '#':
			f.cp, f.run, f.state = 0, 0, sCharRef
		case isNameStart(r):
			f.state = sEntName
		default:
			return 0, ErrSyntax
		}
	case sEntName:
		switch {
		case r == ';':
			if _, ok := predefined(buf[f.aux+1 : start]); !ok {
				return 0, ErrEntity
			}
			f.run, f.state = 0, f.ret
		case isNameChar(r) || r == ':':
			if start-int(f.aux) > len("quot") {
				return 0, ErrEntity // longer than any predefined entity
			}
		default:
			return 0, ErrSyntax
		}
	case sCharRef:
		switch {
		case r == 'x':
			f.state = sCharRefHex
		case r >= '0' && r <= '9':
			f.cp, f.state = r-'0', sCharRefDec
		default:
			return 0, ErrSyntax
		}
	case sCharRefDec, sCharRefHex:
		if r == ';' {
			if f.state == sCharRefHex && f.run == 0 {
				return 0, ErrSyntax
			}
			if !isChar(f.cp) {
				return 0, ErrInvalidChar
			}
			f.run, f.state = 0, f.ret
			return 0, nil
		}
		base := rune(10)
		if f.state == sCharRefHex {
			base = 16
		}
		d, ok := rune(0), false
		if r < utf8.RuneSelf {
			d, ok = digitVal(byte(r), base)
		}
		if !ok {
			return 0, ErrSyntax
		}
		f.cp, f.run = f.cp*base+d, 1
		if f.cp > utf8.MaxRune {
			f.cp = utf8.MaxRune + 1
		}
	}
	return 0, nil
}

// endsName reports whether c may follow an element name in a start tag.
func endsName(c byte) bool { return c == '>' || c == '/' || isSpace(c) }

// tagSep handles r after a name or value inside a start tag: whitespace,
// "/>" or ">".
func (f *Framer) tagSep(buf []byte, end int, r rune, sp bool) (Kind, error) {
	switch {
	case sp:
		f.state = sTagSpace
	case r == '/':
		f.state = sTagSlash
	case r == '>':
		return f.endStartTag(buf, end, false)
	default:
		return 0, ErrSyntax
	}
	return 0, nil
}

// beginTag starts a start tag whose name begins at start (after '<'),
// counting it against the element and depth limits.
func (f *Framer) beginTag(start int) error {
	f.mark, f.run, f.state = int32(start-1), 0, sTagName
	if f.phase != phStream {
		return nil
	}
	f.elems++
	if f.maxElems > 0 && f.elems > f.maxElems {
		return ErrTooManyElements
	}
	f.depth++
	if f.maxDepth > 0 && f.depth > f.maxDepth {
		return ErrTooDeep
	}
	return nil
}

// openName returns the offset of the innermost open element's name.
func (f *Framer) openName() int32 {
	for j := len(f.stack) - 1; j >= 0; j -= 3 {
		if f.stack[j] > 0 {
			return f.stack[j]
		}
	}
	return 0 // unreachable: depth > 0 in content
}

// endTag closes the innermost element at the '>' at end.
func (f *Framer) endTag(end int) (Kind, error) {
	for len(f.stack) > 0 {
		n := len(f.stack)
		if f.stack[n-1] > 0 {
			f.stack = f.stack[:n-1]
			break
		}
		f.declTop = f.stack[n-3]
		f.ndecl--
		f.stack = f.stack[:n-3]
	}
	f.depth--
	if f.depth == 0 {
		return KindElement, nil
	}
	f.run, f.state = 0, sContent
	return 0, nil
}

var attrSeed = maphash.MakeSeed()

// endStartTag checks the complete start tag buf[f.mark:end+1] (attribute
// uniqueness, namespace declarations and prefixes) and enters its content.
func (f *Framer) endStartTag(buf []byte, end int, selfClosing bool) (Kind, error) {
	tag := buf[f.mark : end+1]
	base, declTop, ndecl := len(f.stack), f.declTop, f.ndecl
	if f.phase == phStream {
		f.stack = append(f.stack, f.mark+1)
	} else if selfClosing {
		return 0, ErrSyntax // the stream header must stay open
	}

	// Pass 1: count attributes, reject duplicates, push declarations.
	type seen struct {
		h      uint64
		off, n int32
	}
	var attrs [maxAttrs]seen
	na := 0
	nameEnd := 1
	for nameEnd < len(tag) && !endsName(tag[nameEnd]) {
		nameEnd++
	}
	for i := nameEnd; ; {
		i = attrStart(tag, i)
		if i < 0 {
			break
		}
		name, raw, next, ok := nextAttr(tag, i)
		if !ok {
			return 0, ErrSyntax
		}
		if na == maxAttrs {
			return 0, ErrTooManyAttrs
		}
		h := maphash.Bytes(attrSeed, name)
		for _, a := range attrs[:na] {
			if a.h == h && string(tag[a.off:a.off+a.n]) == string(name) {
				return 0, ErrDuplicateAttr
			}
		}
		attrs[na] = seen{h, int32(i), int32(len(name))}
		na++
		if len(name) > len("xmlns:") && string(name[:len("xmlns:")]) == "xmlns:" {
			p := name[len("xmlns:"):]
			switch {
			case len(raw) == 0, string(p) == "xmlns":
				return 0, ErrSyntax // undeclaring or binding "xmlns"
			case string(p) == "xml":
				if string(raw) != "http://www.w3.org/XML/1998/namespace" {
					return 0, ErrSyntax
				}
			default:
				f.ndecl++
				if f.ndecl > maxDecls || f.phase == phHeader && f.ndecl > maxHeaderDecls {
					return 0, ErrTooManyDecls
				}
				off := f.mark + int32(i+len("xmlns:"))
				f.stack = append(f.stack, f.declTop, int32(len(p)), -off)
				f.declTop = int32(len(f.stack))
			}
		}
		i = next
	}

	// Pass 2: every prefix in use must be declared.
	if p, _, _ := splitQName(tag[1:nameEnd]); p != nil && !f.declared(buf, p) {
		return 0, ErrUndeclaredPrefix
	}
	for _, a := range attrs[:na] {
		p, _, _ := splitQName(tag[a.off : a.off+a.n])
		if p != nil && string(p) != "xmlns" && !f.declared(buf, p) {
			return 0, ErrUndeclaredPrefix
		}
	}

	if f.phase == phHeader {
		if err := checkStreamName(tag, nameEnd); err != nil {
			return 0, err
		}
		f.setHeader(buf, tag[1:nameEnd])
		return KindHeader, nil
	}
	if selfClosing {
		f.stack, f.declTop, f.ndecl = f.stack[:base], declTop, ndecl
		f.depth--
		if f.depth == 0 {
			return KindElement, nil
		}
	}
	f.run, f.state = 0, sContent
	return 0, nil
}

// declared reports whether prefix p is bound in scope: "xml", a declaration
// in the current top-level element, or one on the stream header.
func (f *Framer) declared(buf, p []byte) bool {
	if string(p) == "xml" {
		return true
	}
	for t := f.declTop; t > 0; t = f.stack[t-3] {
		off, n := -f.stack[t-1], f.stack[t-2]
		if int(n) == len(p) && string(buf[off:off+n]) == string(p) {
			return true
		}
	}
	h := f.hdr
	for j := 0; j < len(h); j++ {
		if h[j] != ' ' {
			continue
		}
		k := j + 1
		for k < len(h) && h[k] != ' ' {
			k++
		}
		if h[j+1:k] == string(p) {
			return true
		}
	}
	return false
}

// NSStream is the namespace of the stream header (RFC 6120 section 4.8.1).
const NSStream = "http://etherx.jabber.org/streams"

// checkStreamName checks that the header's open tag is <stream> in the
// NSStream namespace.
func checkStreamName(tag []byte, nameEnd int) error {
	p, local, _ := splitQName(tag[1:nameEnd])
	if string(local) != "stream" {
		return ErrNoHeader
	}
	want := "xmlns"
	if p != nil {
		want = "xmlns:" + string(p) // no escape: the compiler keeps it on the stack
	}
	t := StartTag{b: tag, name: nameEnd}
	if ns, _ := t.Attr(want); string(ns) != NSStream {
		return ErrInvalidNamespace
	}
	return nil
}

const usualHeader = "stream:stream stream"

// setHeader records the header's qualified name and declared prefixes, then
// forgets the declarations' offsets (the header bytes are about to be
// consumed).
func (f *Framer) setHeader(buf, qname []byte) {
	var small [128]byte
	h := append(small[:0], qname...)
	for t := f.declTop; t > 0; t = f.stack[t-3] {
		off, n := -f.stack[t-1], f.stack[t-2]
		h = append(h, ' ')
		h = append(h, buf[off:off+n]...)
	}
	if string(h) == usualHeader {
		f.hdr = usualHeader
	} else {
		f.hdr = string(h)
	}
	f.stack, f.declTop, f.ndecl = f.stack[:0], 0, 0
}
