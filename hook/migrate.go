package hook

// Sessions that move between the nodes of a cluster: a client resumes
// (XEP-0198) on node B a session node A holds. A's core asks the module
// that owns resumption tokens (Migrator) for the session and its state,
// sends the state to B, and B's core hands it to the same module there
// before the resumption's continuation runs (RemoteResumer).

// Migrator is implemented by a module whose per-session state can move to
// another node of a cluster (stream management). The core finds it among
// Registry.Modules.
type Migrator interface {
	// Resumes reports whether s can be resumed after its connection is
	// lost (a node that drains closes such connections and lets the
	// clients resume elsewhere). On s's loop.
	Resumes(s Session) bool
	// Resumable returns the local session of the account local whose
	// resumption token is previd, or nil. Any goroutine.
	Resumable(local, previd string) Session
	// Export returns the module's state of s in the form Import reads,
	// and from then on keeps what is written to s queued only (as for a
	// session whose connection was lost). nil when s has none. On s's
	// loop.
	Export(s Session) []byte
	// Forget drops the module's state of s without the effects of its
	// end: the state lives on on another node. On s's loop.
	Forget(s Session)
	// Import installs state, from Export on another node, into
	// c.Session, a session whose connection is not yet resumed, as kept
	// for resumption. On the session's loop.
	Import(c *Ctx, state []byte) error
}

// RemoteResumer is implemented by the core's connections in cluster mode:
// a connection that has authenticated but not bound a resource takes over
// a session of the same account that another node holds.
type RemoteResumer interface {
	// ResumeRemote asks the nodes that hold sessions of the connection's
	// account for the one whose resumption token is previd. The node that
	// has it hands the session over (its JID, presence, flags, the
	// Migrator's state, then what is sent to it meanwhile); the state is
	// given to the Migrator's Import on this connection's session, and
	// then runs as for Resumer.Resume: ok true with a Ctx for the resumed
	// session, ok false when no node has it or the hand-over timed out.
	// Only in PhaseBind, on the connection's loop.
	ResumeRemote(previd string, then func(c *Ctx, ok bool))
}

// Reannouncer is implemented by the module that broadcasts presence. After
// a cluster node was cut off long enough for the others to announce its
// sessions unavailable, the core asks it, for each of that node's
// available sessions (c.Session), to announce the session's last
// presence again to those who were told it had gone: the account's
// resources and contacts on other nodes, and contacts on other domains.
// On the session's loop; the work goes to the worker pool.
type Reannouncer interface {
	Reannounce(c *Ctx)
}
