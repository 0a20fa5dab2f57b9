package stanza

import (
	"errors"
	"strconv"
	"strings"
)

// Errors reported by the Framer and the element views. A framer error is
// always a *FrameError wrapping one of these; use errors.Is to test for them
// and Condition to map them to an RFC 6120 stream error condition.
var (
	// Well-formedness (RFC 6120 section 4.9.3.13, not-well-formed).
	ErrSyntax           = errors.New("stanza: syntax error")
	ErrMismatchedTag    = errors.New("stanza: mismatched end tag")
	ErrDuplicateAttr    = errors.New("stanza: duplicate attribute")
	ErrUndeclaredPrefix = errors.New("stanza: undeclared namespace prefix")
	ErrInvalidUTF8      = errors.New("stanza: invalid UTF-8")
	ErrInvalidChar      = errors.New("stanza: character not allowed in XML")
	ErrNoHeader         = errors.New("stanza: stream header expected")
	ErrAfterClose       = errors.New("stanza: data after stream close")

	// ErrInvalidNamespace means the stream header is not in the
	// http://etherx.jabber.org/streams namespace (invalid-namespace).
	ErrInvalidNamespace = errors.New("stanza: stream header not in the streams namespace")

	// Restricted XML (RFC 6120 section 11.1, restricted-xml).
	ErrDTD      = errors.New("stanza: document type declaration")
	ErrComment  = errors.New("stanza: comment")
	ErrProcInst = errors.New("stanza: processing instruction")
	ErrEntity   = errors.New("stanza: entity reference other than the predefined ones")

	// Limits (policy-violation).
	ErrTooLarge        = errors.New("stanza: element too large")
	ErrTooManyElements = errors.New("stanza: too many elements")
	ErrTooDeep         = errors.New("stanza: nesting too deep")
	ErrTooManyAttrs    = errors.New("stanza: too many attributes")
	ErrTooManyDecls    = errors.New("stanza: too many namespace declarations")

	// Encoding (RFC 6120 section 11.6, unsupported-encoding).
	ErrUnsupportedEncoding = errors.New("stanza: unsupported encoding")

	// ErrBufferShrunk means Next was given fewer bytes than it had already
	// scanned: the caller broke the resumption contract.
	ErrBufferShrunk = errors.New("stanza: buffer shorter than bytes already scanned")
)

// FrameError is the error returned by Framer.Next and the parsing functions:
// which check failed and where.
type FrameError struct {
	// Offset is the byte offset of the offending input: from the start of the
	// stream (since the last Reset) for the Framer, from the start of the
	// argument for the parsing functions.
	Offset int64
	// Err is one of the package's sentinel errors.
	Err error
}

// Error returns "stanza: byte N: " and what failed.
func (e *FrameError) Error() string {
	return "stanza: byte " + strconv.FormatInt(e.Offset, 10) + ": " + strings.TrimPrefix(e.Err.Error(), "stanza: ")
}

// Unwrap returns the sentinel error.
func (e *FrameError) Unwrap() error { return e.Err }

func errAt(off int, err error) error { return &FrameError{Offset: int64(off), Err: err} }

// Condition returns the name of the RFC 6120 stream error condition element
// (section 4.9.3) the server should send for err: "restricted-xml",
// "policy-violation", "unsupported-encoding", "invalid-namespace",
// "internal-server-error" for
// a broken resumption contract, and "not-well-formed" for everything else.
func Condition(err error) string {
	switch {
	case errors.Is(err, ErrDTD), errors.Is(err, ErrComment),
		errors.Is(err, ErrProcInst), errors.Is(err, ErrEntity):
		return "restricted-xml"
	case errors.Is(err, ErrTooLarge), errors.Is(err, ErrTooManyElements),
		errors.Is(err, ErrTooDeep), errors.Is(err, ErrTooManyAttrs),
		errors.Is(err, ErrTooManyDecls):
		return "policy-violation"
	case errors.Is(err, ErrUnsupportedEncoding):
		return "unsupported-encoding"
	case errors.Is(err, ErrInvalidNamespace):
		return "invalid-namespace"
	case errors.Is(err, ErrBufferShrunk):
		return "internal-server-error"
	}
	return "not-well-formed"
}
