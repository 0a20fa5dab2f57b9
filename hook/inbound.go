package hook

// Inbound is an optional interface of a Module: stanzas that arrive from
// another domain over server-to-server federation, after the core checked
// that their from is of the authenticated peer domain and their to of
// ours, and before the core routes them to sessions. The Ctx has no
// Session (the sender is remote) and its Conn is the inbound s2s stream:
// Async works, and Reply goes to the sender's domain over the outbound
// stream. A handler that consumes the stanza returns Stop. It lives apart
// from the stanza stages so that a module needs no new stage to see its
// remote side of a protocol (RFC 6121's subscription state machine, say).
type Inbound interface {
	InboundStanza(c *Ctx, st *Stanza) Verdict
}

// Attached is implemented by the core's sessions: whether the session has
// a connection now. A session kept without one (parked by stream
// management) reports false; a module that must act for a user whose
// devices are all asleep (XEP-0357 push) asks. Only on the session's loop.
type Attached interface {
	Attached() bool
}

// PeerGone is an optional interface of a Module: the server no longer
// hears from another server's domain. It is called when the last
// authenticated inbound stream from domain ends other than by an orderly
// stream close (the peer dropped the connection, broke the protocol, or
// a deadline passed), and when an outbound stream to domain could not be
// set up while no inbound stream from it is up (the peer is unreachable).
// What the module keeps about that domain's users on the word of their
// presence (a resource's capabilities, say) can go: an unreachable server
// sends no unavailable presence for them. An orderly close (an idle
// stream, either side) says nothing of the peer's users and calls nothing.
// Called on an event loop or a dialer goroutine: it must not block, and
// must be safe for concurrent use.
type PeerGone interface {
	PeerGone(domain string)
}
