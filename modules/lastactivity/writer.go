package lastactivity

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/krill-xmpp/krill/hook"
	"github.com/krill-xmpp/krill/storage"
)

// Write-behind bounds. A logout's last activity waits at most FlushDelay
// before it is written, together with every other logout of that moment,
// in one transaction: on SQLite a commit per logout was a tenth of the
// server CPU of a full login and logout. What is pending is bounded in
// bytes; reaching the bound sends the batch to a worker at once. Only when
// the worker pool's queue is full too is a batch dropped, logged and
// counted (event "dropped"), as a single write was before batching.
const (
	// FlushDelay is how long a recorded activity may wait for others, by
	// default (Module.FlushDelay).
	FlushDelay = time.Second
	// MaxPendingBytes bounds the activities waiting (names and statuses).
	MaxPendingBytes = 1 << 20
)

// pendingOverhead is what an entry costs beyond its strings, roughly: the
// map slot and the entry. It keeps MaxPendingBytes honest for entries
// without a status.
const pendingOverhead = 96

// entry is one account's pending last activity.
type entry struct {
	act storage.Activity
	// full is the session that went away: it may still be registered
	// when the write runs, and must not count as "another resource still
	// available".
	full string
}

// writer batches last-activity writes (see FlushDelay). Any goroutine.
type writer struct {
	store Store
	delay time.Duration

	mu      sync.Mutex
	host    hook.Host   // the server's, from the first add
	log     *zap.Logger // likewise
	pending map[string]entry
	bytes   int
	armed   bool // a flush is scheduled
	flushes atomic.Uint64
	written atomic.Uint64
	failed  atomic.Uint64
	dropped atomic.Uint64
}

// add records user's activity. It never blocks on storage.
func (w *writer) add(host hook.Host, log *zap.Logger, user string, e entry) {
	size := len(user) + len(e.act.Status) + len(e.full) + pendingOverhead
	w.mu.Lock()
	if w.host == nil {
		// Set once, under mu: every later reader took mu first.
		w.host, w.log = host, log
	}
	if w.bytes+size > MaxPendingBytes {
		batch := w.pending
		w.pending, w.bytes = nil, 0 // the scheduled flush finds it empty
		w.mu.Unlock()
		batch[user] = e
		w.submit(batch, true)
		return
	}
	if old, ok := w.pending[user]; ok {
		w.bytes -= len(user) + len(old.act.Status) + len(old.full) + pendingOverhead
	}
	if w.pending == nil {
		w.pending = make(map[string]entry)
	}
	w.pending[user] = e
	w.bytes += size
	arm := !w.armed
	w.armed = true
	w.mu.Unlock()
	if arm {
		time.AfterFunc(w.delay, w.flush)
	}
}

// get returns user's pending activity, so a query sees a logout before it
// is written.
func (w *writer) get(user string) (storage.Activity, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	e, ok := w.pending[user]
	return e.act, ok
}

// take empties the pending set and returns it.
func (w *writer) take() map[string]entry {
	w.mu.Lock()
	defer w.mu.Unlock()
	batch := w.pending
	w.pending, w.bytes, w.armed = nil, 0, false
	return batch
}

// flush hands the pending set to a worker.
func (w *writer) flush() {
	if batch := w.take(); len(batch) > 0 {
		w.submit(batch, false)
	}
}

// submit writes batch on a worker. When the pool's queue is full, a timer
// goroutine writes it itself, but an event loop (onLoop) must not wait for
// storage: the batch is dropped, logged and counted.
func (w *writer) submit(batch map[string]entry, onLoop bool) {
	if w.host.Go(func(ctx context.Context) { w.write(ctx, batch) }) {
		return
	}
	if !onLoop {
		w.write(context.Background(), batch)
		return
	}
	w.dropped.Add(uint64(len(batch)))
	w.log.Warn("last activity not stored: worker queue full", zap.Int("accounts", len(batch)))
}

// write stores batch, skipping accounts with another resource available.
func (w *writer) write(ctx context.Context, batch map[string]entry) {
	acts := make(map[string]storage.Activity, len(batch))
	for user, e := range batch {
		if !anyAvailable(w.host, user, e.full) {
			acts[user] = e.act
		}
	}
	if len(acts) == 0 {
		return
	}
	w.flushes.Add(1)
	if err := w.store.SetLastActivities(ctx, acts); err != nil {
		w.failed.Add(uint64(len(acts)))
		w.log.Error("last activity not stored", zap.Int("accounts", len(acts)), zap.Error(err))
		return
	}
	w.written.Add(uint64(len(acts)))
}

// stop writes what is pending, on the caller's goroutine.
func (w *writer) stop(ctx context.Context) {
	if batch := w.take(); len(batch) > 0 {
		w.write(ctx, batch)
	}
}
