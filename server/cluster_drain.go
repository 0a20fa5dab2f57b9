package server

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"mellium.im/xmpp/stream"

	"github.com/krill-xmpp/krill/stanza"
)

// Draining a cluster node for a rolling restart (krill cluster drain, or
// POST /cluster/drain on the admin listener): the node refuses new
// connections (see-other-host to cluster.see_other_host when set,
// system-shutdown otherwise), closes the TCP connection of every client
// that can resume (XEP-0198) so that its session parks and the client
// resumes on another node (cluster_resume.go), gives the other clients
// see-other-host or system-shutdown, waits until its sessions have moved
// or expired (at most cluster.drain_timeout), then shuts down as on
// SIGTERM: what is left is closed, queued messages go to offline storage,
// the directory writes are flushed.

// drainState is a node's drain.
type drainState struct {
	on       atomic.Bool // draining: refuse new connections
	once     sync.Once
	done     chan struct{} // closed when a drain started by StartDrain has ended
	err      error         // its result, set before done closes
	resumers atomic.Uint64 // connections closed for their clients to resume elsewhere
}

// errDraining is a second drain.
var errDraining = errors.New("server: already draining")

// drainRescan is how often a draining node looks again for sessions bound
// since (a client that had authenticated before the drain began).
const drainRescan = 500 * time.Millisecond

func (d *drainState) init() { d.once.Do(func() { d.done = make(chan struct{}) }) }

// Draining reports whether the node is draining.
func (s *Server) Draining() bool { return s.drain.on.Load() }

// Drained is closed once a drain started by StartDrain has ended with the
// server stopped; DrainErr then says how it went. krill serve exits then.
func (s *Server) Drained() <-chan struct{} {
	s.drain.init()
	return s.drain.done
}

// DrainErr returns the result of the drain StartDrain started, once
// Drained is closed.
func (s *Server) DrainErr() error { return s.drain.err }

// StartDrain drains the node in the background (Drain); Drained tells
// when it is over. False when a drain or a shutdown is already under way.
func (s *Server) StartDrain() bool {
	if !s.started.Load() || s.stopping.Load() || s.drain.on.Load() {
		return false
	}
	s.drain.init()
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), s.cfg.Cluster.DrainTimeout+s.cfg.Server.ShutdownTimeout)
		defer cancel()
		s.drain.err = s.Drain(ctx)
		close(s.drain.done)
	}()
	return true
}

// Drain moves the node's clients to the other nodes and stops it: see the
// comment at the top of this file. It returns once the server has
// stopped (Shutdown's result), or with errDraining.
func (s *Server) Drain(ctx context.Context) error {
	if !s.started.Load() {
		return ErrNotStarted
	}
	if !s.drain.on.CompareAndSwap(false, true) {
		return errDraining
	}
	s.log.Info("draining", zap.Int("sessions", s.sessions.count()), zap.Duration("timeout", s.cfg.Cluster.DrainTimeout))
	deadline := time.NewTimer(s.cfg.Cluster.DrainTimeout)
	defer deadline.Stop()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	s.drainAll()
	rescan := time.Now().Add(drainRescan)
wait:
	for s.sessions.count() > 0 {
		select {
		case <-ctx.Done():
			break wait
		case <-deadline.C:
			s.log.Warn("drain timeout: stopping with sessions left", zap.Int("sessions", s.sessions.count()))
			break wait
		case now := <-tick.C:
			if now.After(rescan) {
				s.drainAll()
				rescan = now.Add(drainRescan)
			}
		}
	}
	s.log.Info("drained", zap.Uint64("resumable", s.drain.resumers.Load()), zap.Uint64("handed_over", s.moves.handedOut.Load()))
	return s.Shutdown(ctx)
}

// drainAll asks every session's loop to let its client go.
func (s *Server) drainAll() {
	s.sessions.all(func(sess *session) { s.onLoopSession(sess, func() { s.drainSession(sess) }) })
}

// drainSession lets one client go, on its session's loop.
func (s *Server) drainSession(sess *session) {
	c := sess.conn
	if c == nil || c.has(flagClosed) || !sess.bound {
		return // parked (or leaving): it waits for its client, or expires
	}
	sess.drain() // what is queued for it goes first
	if c.has(flagClosed) || sess.conn != c {
		return
	}
	if mig := s.migrator(); mig != nil && mig.Resumes(sess) {
		// Lost as far as the session knows: it parks, and the client
		// resumes it on another node.
		s.drain.resumers.Add(1)
		s.shut(c, reasonDropped)
		return
	}
	host := s.cfg.Cluster.SeeOtherHost
	if host == "" {
		s.fail(c, stream.SystemShutdown.Err, "the node is draining")
		return
	}
	c.write(appendSeeOtherHost(c.loop.scratch[:0], host))
	s.sessionEnded(c, "drain", "see-other-host", nil)
	s.shut(c, reasonShutdown)
}

// appendSeeOtherHost appends the see-other-host stream error naming host
// (RFC 6120 4.9.3.19) and the stream's close.
func appendSeeOtherHost(b []byte, host string) []byte {
	b = append(b, `<stream:error><see-other-host xmlns='`+nsStreams+`'>`...)
	b = stanza.AppendEscaped(b, host)
	return append(b, `</see-other-host></stream:error>`+streamClose...)
}

// drainRefusal is what a draining node answers a new connection with.
func (s *Server) drainRefusal() []byte {
	b := s.appendHeader(nil)
	if host := s.cfg.Cluster.SeeOtherHost; host != "" {
		return appendSeeOtherHost(b, host)
	}
	return appendStreamError(b, stream.SystemShutdown.Err, "the node is draining")
}

// serveDrain is POST /cluster/drain on the admin listener: the drain
// starts (202) and the process exits when it is over.
func (s *Server) serveDrain(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "POST only", http.StatusMethodNotAllowed)
		return
	}
	if s.cluster == nil {
		http.Error(w, "not a cluster node: nothing to drain to", http.StatusConflict)
		return
	}
	if !s.StartDrain() {
		http.Error(w, "already draining or stopping", http.StatusConflict)
		return
	}
	w.WriteHeader(http.StatusAccepted)
	_, _ = w.Write([]byte("draining\n"))
}
