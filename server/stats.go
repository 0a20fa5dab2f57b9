package server

import (
	"sync/atomic"
	"time"
)

// Stats are the server's counters, updated from every loop.
type Stats struct {
	accepted         atomic.Uint64
	closed           atomic.Uint64
	closedDeadline   atomic.Uint64
	closedPolicy     atomic.Uint64
	closedBadInput   atomic.Uint64
	closedClient     atomic.Uint64
	closedPeer       atomic.Uint64
	authSucceeded    atomic.Uint64
	authFailed       atomic.Uint64
	bound            atomic.Uint64
	replaced         atomic.Uint64
	stanzasIn        atomic.Uint64
	stanzasRouted    atomic.Uint64
	workRejected     atomic.Uint64
	tlsHandshakes    atomic.Uint64
	tlsFailed        atomic.Uint64
	tlsTimeouts      atomic.Uint64
	maxLateness      atomic.Int64 // nanoseconds
	registered       atomic.Uint64
	panics           atomic.Uint64
	authThrottled    atomic.Uint64
	offlineStored    atomic.Uint64
	offlineDelivered atomic.Uint64

	// Connections by state, as gauges.
	preauthPlain  atomic.Int64
	preauthTLS    atomic.Int64
	authenticated atomic.Int64

	in, out [3]atomic.Uint64 // stanzas by kind, indexed like stanzaKinds

	// authFailed split by whether a credential was checked.
	authFailedCredential, authFailedExchange atomic.Uint64
}

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
	case c.has(flagClosed):
		return nil
	case c.has(flagPreauth) && c.tls == nil:
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
	AuthSucceeded    uint64
	AuthFailed       uint64
	Bound            uint64 // resources bound
	Replaced         uint64 // sessions replaced by a bind of the same full JID
	StanzasIn        uint64 // stanzas received from bound sessions
	StanzasRouted    uint64 // stanzas delivered to local sessions
	WorkRejected     uint64 // jobs refused because the worker queue was full
	TLSHandshakes    uint64 // handshakes started
	TLSFailed        uint64 // handshakes that failed, and connections that sent no TLS
	TLSTimeouts      uint64 // connections closed at the handshake deadline
	Registered       uint64 // accounts created by in-band registration
	Panics           uint64 // panics contained to their connection (each one a bug)
	AuthThrottled    uint64 // logins refused because their address failed too often
	OfflineStored    uint64 // messages stored for accounts with no available resource
	OfflineDelivered uint64 // stored messages delivered at a later login
	// DeadlineLateMax is the most a pre-auth deadline fired after it was
	// due, measured on the loop: one wheel tick plus scheduling delay.
	DeadlineLateMax time.Duration
	TLSActive       int   // handshakes running now
	TLSWaiting      int   // handshakes waiting for a slot now
	PreauthPlain    int64 // unauthenticated connections without TLS now
	PreauthTLS      int64 // unauthenticated connections with TLS (or setting it up) now
	Authenticated   int64 // authenticated connections now
	Preauth         int   // unauthenticated connections now
	Sessions        int   // bound sessions now

	// AuthFailed split: failures after a password or proof was compared
	// (the ones that matter for password guessing), and exchanges that
	// failed before any credential was checked.
	AuthFailedCredential, AuthFailedExchange uint64
}

func (s *Stats) snapshot() StatsSnapshot {
	return StatsSnapshot{
		Accepted:         s.accepted.Load(),
		Closed:           s.closed.Load(),
		ClosedDeadline:   s.closedDeadline.Load(),
		ClosedPolicy:     s.closedPolicy.Load(),
		ClosedBadInput:   s.closedBadInput.Load(),
		ClosedClient:     s.closedClient.Load(),
		ClosedPeer:       s.closedPeer.Load(),
		AuthSucceeded:    s.authSucceeded.Load(),
		AuthFailed:       s.authFailed.Load(),
		Bound:            s.bound.Load(),
		Replaced:         s.replaced.Load(),
		StanzasIn:        s.stanzasIn.Load(),
		StanzasRouted:    s.stanzasRouted.Load(),
		WorkRejected:     s.workRejected.Load(),
		TLSHandshakes:    s.tlsHandshakes.Load(),
		TLSFailed:        s.tlsFailed.Load(),
		TLSTimeouts:      s.tlsTimeouts.Load(),
		DeadlineLateMax:  time.Duration(s.maxLateness.Load()),
		Registered:       s.registered.Load(),
		Panics:           s.panics.Load(),
		AuthThrottled:    s.authThrottled.Load(),
		OfflineStored:    s.offlineStored.Load(),
		OfflineDelivered: s.offlineDelivered.Load(),
		PreauthPlain:     s.preauthPlain.Load(),
		PreauthTLS:       s.preauthTLS.Load(),
		Authenticated:    s.authenticated.Load(),

		AuthFailedCredential: s.authFailedCredential.Load(),
		AuthFailedExchange:   s.authFailedExchange.Load(),
	}
}
