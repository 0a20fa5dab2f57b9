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
// Jobs of one connection run one at a time, in the order asked: a stanza
// whose modules each need storage (initial presence: probes, requests,
// offline messages) gets their answers in module order.
//
// job gets a context bounded by storageTimeout and must not touch c: it
// reads and writes shared state (storage, mailboxes, through hook.Host).
func (s *Server) async(c *conn, job func(ctx context.Context) func(), busy func()) {
	if c.has(flagWorkPending) {
		if c.sess == nil {
			// Before authentication a connection's input is paused while
			// its one job runs, so no second job is asked for; should a
			// handler ask, it is refused as if the pool were full.
			busy()
			return
		}
		if c.sess.queued == nil {
			c.sess.queued = new([]asyncJob)
		}
		*c.sess.queued = append(*c.sess.queued, asyncJob{job, busy})
		return
	}
	s.submit(c, job, busy)
}

// asyncJob is a job waiting for the one before it on its connection.
type asyncJob struct {
	job  func(ctx context.Context) func()
	busy func()
}

func (s *Server) submit(c *conn, job func(ctx context.Context) func(), busy func()) {
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
			s.next(c)
			if !c.has(flagClosed) && !c.has(flagWorkPending) {
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
		s.next(c)
	}
}

// next submits c's next queued job, unless one is running (a continuation
// may have asked for one).
func (s *Server) next(c *conn) {
	for c.sess != nil && c.sess.queued != nil && len(*c.sess.queued) > 0 && !c.has(flagWorkPending) && !c.has(flagClosed) {
		q := *c.sess.queued
		j := q[0]
		q[0] = asyncJob{}
		if len(q) == 1 {
			c.sess.queued = nil
		} else {
			*c.sess.queued = q[1:]
		}
		s.submit(c, j.job, j.busy)
	}
}

// detached runs job on the worker pool for no connection (a session's
// unavailable presence after it has gone, say). A full queue drops it,
// counted, and reports false.
func (s *Server) detached(job func(ctx context.Context)) bool {
	err := s.pool.Submit(func() {
		ctx, cancel := context.WithTimeout(context.Background(), storageTimeout)
		defer cancel()
		job(ctx)
	})
	if err != nil {
		s.stats.workRejected.Add(1)
		return false
	}
	return true
}
