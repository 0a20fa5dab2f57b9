package hook

import "io"

// WebRouter is an optional ability of a Module: HTTP routes on the web
// listener (web.listen), beside the WebSocket endpoint and host-meta. The
// server asks for them once, at start-up, after Register.
type WebRouter interface {
	WebRoutes() []WebRoute
}

// WebListening is an optional ability of a Module that builds URLs of the
// web listener: the server calls it once the listener is bound, with its
// base URL (scheme://host:port, no trailing slash), before any connection
// is accepted.
type WebListening interface {
	WebListening(base string)
}

// WebRoute serves the requests for one path, or with Prefix every path
// under it. Serve runs on the connection's event loop and must not block:
// it answers at once (Respond) or hands the transfer to the server
// (Receive, Send, Async), whose jobs run on the bounded transfer pool
// (upload.max_transfers workers).
type WebRoute struct {
	Path   string
	Prefix bool
	Serve  func(r WebRequest)
}

// WebRequest is one HTTP request on the web listener. The head's accessors
// (Method, Path, Query, Header) are valid only during Serve; the rest may
// be called later, on the connection's loop, from the continuations of
// Async. Exactly one of Respond, Receive or Send answers a request; the
// connection closes after the answer (no keep-alive).
type WebRequest interface {
	Method() string
	// Path is the request target's path, still percent-encoded.
	Path() string
	// Query is the target's query, without '?'.
	Query() string
	// Header returns the first value of the named header (any case), nil
	// when absent.
	Header(name string) []byte
	// ContentLength is the announced body length, -1 when there is none
	// (no Content-Length) and -2 when it is malformed or the body is
	// chunked.
	ContentLength() int64
	// CORS returns the Access-Control-Allow-Origin header line (CRLF
	// ended) for the request's Origin under web.allowed_origins, or "".
	CORS() string
	// Respond writes a complete answer: status, extra header lines (each
	// CRLF ended), a body of type ctype.
	Respond(status int, ctype, header string, body []byte)
	// Async runs job on the transfer pool; the function it returns (nil:
	// nothing) runs back on the loop with gone false, or, when the
	// connection has gone meanwhile, off the loop with gone true, to free
	// what job took (it must then not use the request). A full pool
	// answers 503 after busy (nil: nothing) has run on the loop.
	Async(job func() func(gone bool), busy func())
	// Receive reads exactly n bytes of body and gives them, in order, to
	// write, on the transfer pool; then end runs there too, with nil
	// once all n bytes were written, or the error that stopped the
	// transfer (a write's, or ErrWebAborted when the client went away).
	// What end returns is written as the answer (nothing when the client
	// has gone). Receiving counts as a transfer: the connection leaves the
	// pre-auth limits and gets a deadline renewed by each chunk.
	Receive(n int64, write func(p []byte) error, end func(err error) (status int, ctype, header string, body []byte))
	// Send answers status with header lines and a body of n bytes read
	// from body on the transfer pool, in chunks, each written once the
	// client has taken most of the one before; body is closed at the end
	// or when the client goes away. A HEAD request gets the head only.
	Send(status int, ctype, header string, n int64, body io.ReadCloser)
}

// ErrWebAborted is given to a Receive's end when the client closed the
// connection before the whole body came.
var ErrWebAborted = errWebAborted{}

type errWebAborted struct{}

func (errWebAborted) Error() string { return "hook: web client went away during the transfer" }
