package server

import (
	"sync/atomic"
	"time"
)

// Stats are the server's counters, updated from every loop.
type Stats struct {
	accepted      atomic.Uint64
	closed        atomic.Uint64
	closedBy      [numCloseReasons]atomic.Uint64 // counted once per connection, in OnClose
	authSucceeded atomic.Uint64
	authSASL2     atomic.Uint64 // of which with SASL2 (XEP-0388)
	authFAST      atomic.Uint64 // of which with a FAST token (XEP-0484)
	upgraded      atomic.Uint64 // SCRAM keys added by a XEP-0480 upgrade task
	authFailed    atomic.Uint64
	bound         atomic.Uint64
	replaced      atomic.Uint64
	resumed       atomic.Uint64 // sessions taken over by a resumption (hook.Resumer)
	resumedAcross atomic.Uint64 // of which from another event loop
	stanzasIn     atomic.Uint64
	stanzasRouted atomic.Uint64
	workRejected  atomic.Uint64
	tlsHandshakes atomic.Uint64
	tlsFailed     [numTLSCauses]atomic.Uint64 // handshake failures by cause
	maxLateness   atomic.Int64                // nanoseconds
	panics        atomic.Uint64
	authThrottled atomic.Uint64
	inboxOverflow atomic.Uint64
	droppedNoConn atomic.Uint64

	// Connections by state, as gauges.
	preauthPlain  atomic.Int64
	preauthTLS    atomic.Int64
	preauthWeb    atomic.Int64 // on the web listener, before authentication (ws:// and wss://)
	authenticated atomic.Int64

	webStats // the web listener's (ws.go, web.go)

	in, out [3]atomic.Uint64 // stanzas by kind, indexed like stanzaKinds

	// authFailed split by whether a credential was checked.
	authFailedCredential, authFailedExchange atomic.Uint64

	// Handshakes that ended on the lean record layer and on the stock one
	// (tls.lean off, TLS 1.2, FIPS mode), and connections the lean layer
	// closed for a bad record or a client's fatal alert.
	tlsLean, tlsStock, tlsRecordErrors atomic.Uint64
	tlsResumed                         atomic.Uint64 // handshakes that resumed a session (tickets.go)
	// Lean sessions whose AEADs were dropped after tls.idle_release, and
	// directions expanded again by a record after that.
	tlsCooled, tlsRewarmed atomic.Uint64
	tlsKeyUpdates          atomic.Uint64 // sent on our own (tls.key_update_records)
}

// closeReason is why a connection closed. Every connection gets exactly
// one, set when it starts closing (the first one set wins) and counted
// once, in gnet's OnClose, together with krill_connections_closed_total.
type closeReason uint8

// Close reasons; closeReasonNames gives their metric labels.
const (
	reasonNone      closeReason = iota // not closing (never counted: a bug if it were)
	reasonDeadline                     // pre-auth or TLS handshake deadline, unanswered ping
	reasonPolicy                       // a pre-auth rule or cap, a client that does not read
	reasonError                        // malformed or oversized input, a protocol error
	reasonClient                       // the client's stream close
	reasonDropped                      // the peer went away without a stream close
	reasonTLSFailed                    // a TLS handshake failed, or the input was not TLS
	reasonReplaced                     // a bind of the same full JID replaced the session
	reasonShutdown                     // the server is shutting down
	reasonPanic                        // a contained panic (a bug)
	numCloseReasons
)

var closeReasonNames = [numCloseReasons]string{"", "deadline", "policy", "error", "client_close",
	"dropped", "tls_failed", "replaced", "shutdown", "panic"}

// tlsCause is why a TLS handshake failed.
type tlsCause uint8

// TLS handshake failure causes; tlsCauseNames gives their metric labels.
const (
	causeClientAlert  tlsCause = iota // the client sent an alert: it gave up (an untrusted certificate, say)
	causeClientClosed                 // the client closed the connection mid-handshake without an alert
	causeTimeout                      // the handshake deadline passed
	causeNotTLS                       // the first bytes were not a TLS handshake record
	causeOther                        // anything else: no common version or cipher, a broken record, a flood
	causeQueueFull                    // every slot busy and tls.max_handshake_queue connections waiting
	numTLSCauses
)

var tlsCauseNames = [numTLSCauses]string{"client_alert", "client_closed", "timeout", "not_tls", "other", "queue_full"}

// stanzaKinds names the indexes of Stats.in and Stats.out.
var stanzaKinds = [3]string{"message", "presence", "iq"}

// kindIndex returns the stanzaKinds index of a stanza's wire form.
func kindIndex(b []byte) int {
	if len(b) > 1 {
		switch b[1] {
		case 'm':
			return 0
		case 'p':
			return 1
		}
	}
	return 2
}

// connState is the gauge a connection is counted in, or nil before it is
// admitted and after it is gone.
func (s *Stats) connState(c *conn) *atomic.Int64 {
	switch {
	case c.has(flagClosed), c.has(flagS2S): // s2s streams have gauges of their own
		return nil
	case c.has(flagPreauth) && c.has(flagWeb):
		return &s.preauthWeb
	case c.has(flagPreauth) && !c.tr.secure():
		return &s.preauthPlain
	case c.has(flagPreauth):
		return &s.preauthTLS
	case c.phase >= phaseAuthHeader:
		return &s.authenticated
	}
	return nil
}

// move runs change on c, keeping the state gauges right around it.
func (s *Stats) move(c *conn, change func()) {
	if g := s.connState(c); g != nil {
		g.Add(-1)
	}
	change()
	if g := s.connState(c); g != nil {
		g.Add(1)
	}
}

// noteLateness records how late a pre-auth deadline fired.
func (s *Stats) noteLateness(d time.Duration) {
	for {
		cur := s.maxLateness.Load()
		if int64(d) <= cur || s.maxLateness.CompareAndSwap(cur, int64(d)) {
			return
		}
	}
}

// StatsSnapshot is a point-in-time copy of Stats.
type StatsSnapshot struct {
	Accepted         uint64 // connections accepted
	Closed           uint64 // connections gone, for any reason
	ClosedDeadline   uint64 // closed by the pre-auth deadline or an unanswered ping
	ClosedPolicy     uint64 // closed by a pre-auth rule or cap
	ClosedBadInput   uint64 // closed for malformed or oversized input
	ClosedClient     uint64 // closed by the client's stream close
	ClosedPeer       uint64 // dropped by the peer without a stream close
	ClosedTLSFailed  uint64 // closed because the TLS handshake failed or the input was not TLS
	ClosedReplaced   uint64 // closed because a new session took the same full JID
	ClosedShutdown   uint64 // closed by a server shutdown
	ClosedPanic      uint64 // closed after a contained panic
	AuthSucceeded    uint64
	AuthSASL2        uint64 // of AuthSucceeded, logins with SASL2 (XEP-0388) rather than RFC 6120 SASL
	AuthFAST         uint64 // of AuthSASL2, logins with a FAST token (XEP-0484) rather than a password
	Upgraded         uint64 // SCRAM keys added to accounts by XEP-0480 upgrade tasks
	AuthFailed       uint64
	Bound            uint64 // resources bound
	Replaced         uint64 // sessions replaced by a bind of the same full JID
	Resumed          uint64 // sessions taken over by a new connection (stream management)
	ResumedAcross    uint64 // of which the old session was on another event loop
	StanzasIn        uint64 // stanzas received from bound sessions
	StanzasRouted    uint64 // stanzas delivered to local sessions
	WorkRejected     uint64 // jobs refused because the worker queue was full
	TLSHandshakes    uint64 // handshakes started
	TLSFailed        uint64 // handshakes that failed, and connections that sent no TLS (every cause but the timeout)
	TLSTimeouts      uint64 // connections closed at the handshake deadline
	TLSClientAlerts  uint64 // handshakes the client aborted with an alert
	TLSClientClosed  uint64 // handshakes the client abandoned by closing the connection
	TLSNotTLS        uint64 // connections whose first bytes were not a TLS handshake record
	TLSOtherFailures uint64 // other handshake failures
	TLSQueueFull     uint64 // handshakes refused because tls.max_handshake_queue were waiting
	Panics           uint64 // panics contained to their connection (each one a bug)
	// InboxOverflow counts sessions closed because their mailbox held
	// c2s.max_outbound bytes; the stanza that did not fit was routed as
	// if the session did not exist (offline storage for a message).
	InboxOverflow uint64
	// DroppedNoConn counts stanzas for a session kept without its
	// connection (hook.Closing) that no outbound filter took.
	DroppedNoConn uint64
	AuthThrottled uint64 // logins refused because their address failed too often
	// Modules holds the counters of modules that implement hook.Counter,
	// keyed "module.event" (such as "offline.stored").
	Modules map[string]uint64
	// DeadlineLateMax is the most a pre-auth deadline fired after it was
	// due, measured on the loop: one wheel tick plus scheduling delay.
	DeadlineLateMax time.Duration
	TLSActive       int   // handshakes running now
	TLSWaiting      int   // handshakes waiting for a slot now
	PreauthPlain    int64 // unauthenticated connections without TLS now
	PreauthTLS      int64 // unauthenticated connections with TLS (or setting it up) now
	PreauthWeb      int64 // unauthenticated connections on the web listener (HTTP or WebSocket, with or without TLS) now
	WebOpen         int64 // connections on the web listener now, authenticated or not
	// WebRequests counts the web listener's answers by HTTP status
	// ("101" for a WebSocket upgrade); WSCloses the close frames sent by
	// status code ("1000", "1002", ...).
	WebRequests, WSCloses map[string]uint64
	Authenticated         int64 // authenticated connections now
	Preauth               int   // unauthenticated connections now
	Sessions              int   // bound sessions now

	// AuthFailed split: failures after a password or proof was compared
	// (the ones that matter for password guessing), and exchanges that
	// failed before any credential was checked.
	AuthFailedCredential, AuthFailedExchange uint64

	// TLSLean and TLSStock count finished handshakes by the record layer
	// that carries the session; TLSRecordErrors the connections the lean
	// layer closed for a bad record or the client's fatal alert.
	TLSLean, TLSStock, TLSRecordErrors uint64
	// TLSResumed counts finished handshakes that resumed a session with a
	// ticket (tls.session_tickets).
	TLSResumed uint64
	// TLSCooled counts lean sessions whose AEADs were dropped after
	// tls.idle_release; TLSRewarmed the directions expanded again.
	TLSCooled, TLSRewarmed uint64
	// TLSKeyUpdates counts KeyUpdates lean sessions sent on their own
	// after tls.key_update_records records.
	TLSKeyUpdates uint64
}

func (s *Stats) snapshot() StatsSnapshot {
	return StatsSnapshot{
		Accepted:        s.accepted.Load(),
		Closed:          s.closed.Load(),
		ClosedDeadline:  s.closedBy[reasonDeadline].Load(),
		ClosedPolicy:    s.closedBy[reasonPolicy].Load(),
		ClosedBadInput:  s.closedBy[reasonError].Load(),
		ClosedClient:    s.closedBy[reasonClient].Load(),
		ClosedPeer:      s.closedBy[reasonDropped].Load(),
		ClosedTLSFailed: s.closedBy[reasonTLSFailed].Load(),
		ClosedReplaced:  s.closedBy[reasonReplaced].Load(),
		ClosedShutdown:  s.closedBy[reasonShutdown].Load(),
		ClosedPanic:     s.closedBy[reasonPanic].Load(),
		AuthSucceeded:   s.authSucceeded.Load(),
		AuthSASL2:       s.authSASL2.Load(),
		AuthFAST:        s.authFAST.Load(),
		Upgraded:        s.upgraded.Load(),
		AuthFailed:      s.authFailed.Load(),
		Bound:           s.bound.Load(),
		Replaced:        s.replaced.Load(),
		Resumed:         s.resumed.Load(),
		ResumedAcross:   s.resumedAcross.Load(),
		StanzasIn:       s.stanzasIn.Load(),
		StanzasRouted:   s.stanzasRouted.Load(),
		WorkRejected:    s.workRejected.Load(),
		TLSHandshakes:   s.tlsHandshakes.Load(),
		TLSFailed: s.tlsFailed[causeClientAlert].Load() + s.tlsFailed[causeClientClosed].Load() +
			s.tlsFailed[causeNotTLS].Load() + s.tlsFailed[causeOther].Load() + s.tlsFailed[causeQueueFull].Load(),
		TLSTimeouts:      s.tlsFailed[causeTimeout].Load(),
		TLSClientAlerts:  s.tlsFailed[causeClientAlert].Load(),
		TLSClientClosed:  s.tlsFailed[causeClientClosed].Load(),
		TLSNotTLS:        s.tlsFailed[causeNotTLS].Load(),
		TLSOtherFailures: s.tlsFailed[causeOther].Load(),
		TLSQueueFull:     s.tlsFailed[causeQueueFull].Load(),
		DeadlineLateMax:  time.Duration(s.maxLateness.Load()),
		Panics:           s.panics.Load(),
		InboxOverflow:    s.inboxOverflow.Load(),
		DroppedNoConn:    s.droppedNoConn.Load(),
		AuthThrottled:    s.authThrottled.Load(),
		PreauthPlain:     s.preauthPlain.Load(),
		PreauthTLS:       s.preauthTLS.Load(),
		PreauthWeb:       s.preauthWeb.Load(),
		WebOpen:          s.webOpen.Load(),
		WebRequests:      s.webRequestCounts(),
		WSCloses:         s.wsCloseCounts(),
		Authenticated:    s.authenticated.Load(),

		AuthFailedCredential: s.authFailedCredential.Load(),
		AuthFailedExchange:   s.authFailedExchange.Load(),
		TLSLean:              s.tlsLean.Load(),
		TLSResumed:           s.tlsResumed.Load(),
		TLSStock:             s.tlsStock.Load(),
		TLSRecordErrors:      s.tlsRecordErrors.Load(),
		TLSCooled:            s.tlsCooled.Load(),
		TLSRewarmed:          s.tlsRewarmed.Load(),
		TLSKeyUpdates:        s.tlsKeyUpdates.Load(),
	}
}
