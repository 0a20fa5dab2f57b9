package server

import (
	"context"
	"errors"
	"time"

	"github.com/krill-xmpp/krill/workpool"
)

// async runs job on the worker pool with c's input paused, so that stanzas
// c sends meanwhile are handled after the job, in order. The function job
// returns (which may be nil) runs on c's loop, then input processing
// resumes; nothing runs there if c has closed meanwhile. When the pool
// refuses the job (queue full), busy runs at once instead, on the loop.
//
// job gets a context bounded by storageTimeout and must not touch c: it
// reads and writes shared state (storage, the session table, mailboxes).
func (s *Server) async(c *conn, job func(ctx context.Context) func(), busy func()) {
	c.flags |= flagWorkPending
	submitted := time.Now()
	err := s.pool.Submit(func() {
		s.metrics.poolWait.Observe(time.Since(submitted).Seconds())
		ctx, cancel := context.WithTimeout(context.Background(), storageTimeout)
		then := job(ctx)
		cancel()
		s.onLoop(c, func() {
			c.flags &^= flagWorkPending
			if then != nil {
				then()
			}
			if !c.has(flagClosed) {
				s.process(c) // input that arrived meanwhile
			}
			if c.sess != nil && c.sess.bound && !c.has(flagClosed) && !c.has(flagWorkPending) {
				c.sess.drain() // a close requested while the job ran
			}
		})
	})
	if err != nil {
		c.flags &^= flagWorkPending
		if errors.Is(err, workpool.ErrFull) {
			s.stats.workRejected.Add(1)
		}
		busy()
	}
}

// detached runs job on the worker pool for a connection that is gone (its
// unavailable presence, say). A full queue drops it, counted.
func (s *Server) detached(job func(ctx context.Context)) {
	err := s.pool.Submit(func() {
		ctx, cancel := context.WithTimeout(context.Background(), storageTimeout)
		defer cancel()
		job(ctx)
	})
	if err != nil {
		s.stats.workRejected.Add(1)
	}
}
