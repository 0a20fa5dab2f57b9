// Package workpool runs blocking work (storage, password hashing) off the
// event loops on a fixed number of goroutines with a bounded queue.
//
// Event loops must never block, so Submit never waits: when the queue is
// full it reports ErrFull at once and the caller answers the client with
// resource-constraint instead of stalling every connection on its loop.
package workpool

import (
	"errors"
	"sync"
	"sync/atomic"
)

// Errors returned by Submit.
var (
	// ErrFull means the queue is at capacity; the work was not accepted.
	ErrFull = errors.New("workpool: queue full")
	// ErrClosed means the pool has been closed.
	ErrClosed = errors.New("workpool: closed")
)

// Pool is a fixed set of worker goroutines fed from a bounded queue.
// Create one with New; the zero value is not usable.
type Pool struct {
	jobs    chan func()
	wg      sync.WaitGroup
	mu      sync.RWMutex // guards closed against concurrent Submit/Close
	closed  bool
	running atomic.Int64
}

// New starts workers goroutines reading from a queue of capacity queue.
func New(workers, queue int) *Pool {
	if workers < 1 {
		workers = 1
	}
	if queue < 1 {
		queue = 1
	}
	p := &Pool{jobs: make(chan func(), queue)}
	p.wg.Add(workers)
	for range workers {
		go p.work()
	}
	return p
}

func (p *Pool) work() {
	defer p.wg.Done()
	for job := range p.jobs {
		p.running.Add(1)
		job()
		p.running.Add(-1)
	}
}

// Submit queues job without blocking. A job must not panic; it hands its
// result back to the connection's own event loop itself.
func (p *Pool) Submit(job func()) error {
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.closed {
		return ErrClosed
	}
	select {
	case p.jobs <- job:
		return nil
	default:
		return ErrFull
	}
}

// Queued returns how many jobs wait for a worker.
func (p *Pool) Queued() int { return len(p.jobs) }

// Running returns how many jobs are executing now.
func (p *Pool) Running() int { return int(p.running.Load()) }

// Close stops accepting work, lets queued jobs finish and waits for the
// workers to exit.
func (p *Pool) Close() {
	p.mu.Lock()
	if !p.closed {
		p.closed = true
		close(p.jobs)
	}
	p.mu.Unlock()
	p.wg.Wait()
}
