package hook

import "time"

// Optional abilities of the core's sessions and connections. They are
// interfaces apart from Session and Conn so that fakes of those in tests
// need not implement them; the server's implement both.

// Timer is a deadline armed with Timers.AfterFunc.
type Timer interface {
	// Stop disarms the timer and reports whether it was armed. Only on
	// the session's loop.
	Stop() bool
}

// Timers is implemented by the core's sessions: deadlines on the
// session's own loop, kept in the loop's timer wheel (no goroutine and no
// runtime timer per session), for a module that keeps a session without
// its connection.
type Timers interface {
	// AfterFunc runs fn on the session's loop after d, with a Ctx for the
	// session (Conn nil when it has none). fn does not run once the
	// session has ended or been taken over by a resumption. Only on the
	// session's loop.
	AfterFunc(d time.Duration, fn func(c *Ctx)) Timer
}

// Resumer is implemented by the core's connections: a connection that has
// authenticated but not bound a resource takes over a session of the same
// account (XEP-0198 resumption).
type Resumer interface {
	// Resume moves old's state (its JID, presence, flags, module slots,
	// and what was queued for it) to the connection's session, which
	// replaces old in the session table; old's connection, if it still
	// has one, is closed with a conflict stream error, and old ends
	// without Unavailable or Closed: it lives on as the new session. The
	// handover runs on old's loop, then then runs on the connection's
	// loop with ok true and a Ctx for the resumed session, before
	// anything queued for it meanwhile is written and before Resumed
	// fires; with ok false (a Ctx for the unbound session) when old has
	// ended or is not of the same account: binding may proceed. The
	// connection's input is paused meanwhile. Only in PhaseBind, on the
	// connection's loop.
	Resume(old Session, then func(c *Ctx, ok bool))
}
