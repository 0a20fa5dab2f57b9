package mam

import (
	"context"
	"sync"
	"time"

	"go.uber.org/zap"
	"mellium.im/xmpp/jid"

	"github.com/krill-xmpp/krill/hook"
	"github.com/krill-xmpp/krill/storage"
)

// Limits of the write queue. Archiving never delays delivery: a message
// is queued on the sender's loop and written by a job on the worker pool,
// many to a transaction. The queue is bounded in records and bytes; a
// message that finds it full is delivered but not archived, and gets no
// <stanza-id/> (counted as "dropped", logged).
const (
	// QueueRecords caps the records waiting to be written.
	QueueRecords = 16384
	// QueueBytes caps the stanza bytes waiting to be written.
	QueueBytes = 32 << 20
	// WriteBatch is how many records one transaction writes.
	WriteBatch = 256
	// batchesPerJob bounds one job's work, so that a busy archive does
	// not keep a worker from the rest; the job queues its successor.
	batchesPerJob = 16
)

// pending is one record waiting, with the checks only storage can make.
type pending struct {
	rec storage.ArchiveRecord
	// roster: store only if rec.With is in the owner's roster.
	roster bool
	// blockFrom: the owner had no session when the message came, so
	// the blocking module could not refuse it from memory; skip it if
	// the owner's stored blocklist blocks this sender.
	blockFrom string
}

// queue is the bounded write queue.
type queue struct {
	mu        sync.Mutex
	recs      []pending
	bytes     int
	scheduled bool
	// flushMu serialises writers, so that drain sees every record
	// queued before it written (a query reads its own writes).
	flushMu sync.Mutex
}

// enqueue adds p and, unless a job is already on its way, queues one on
// the worker pool. It reports false when the queue is full.
func (m *Module) enqueue(h hook.Host, p pending) bool {
	q := &m.q
	q.mu.Lock()
	if len(q.recs) >= QueueRecords || q.bytes+len(p.rec.Stanza) > QueueBytes {
		q.mu.Unlock()
		return false
	}
	q.recs = append(q.recs, p)
	q.bytes += len(p.rec.Stanza)
	start := !q.scheduled
	q.scheduled = true
	q.mu.Unlock()
	if start {
		m.schedule(h)
	}
	return true
}

// schedule queues a write job from a loop; a full pool leaves the
// records queued for the next message, query or login to write.
func (m *Module) schedule(h hook.Host) {
	if !h.Go(func(ctx context.Context) { m.writeJob(ctx, h) }) {
		m.q.mu.Lock()
		m.q.scheduled = false
		m.q.mu.Unlock()
	}
}

// writeJob writes batches until the queue is empty. After its share it
// hands the rest to a new job, behind the others waiting; when the pool
// has no room for one, it goes on itself, so that no record is left
// waiting for traffic that may not come.
func (m *Module) writeJob(ctx context.Context, h hook.Host) {
	for {
		for range batchesPerJob {
			if m.writeBatch(ctx, h.Logger()) == 0 {
				m.q.mu.Lock()
				if len(m.q.recs) == 0 {
					m.q.scheduled = false
					m.q.mu.Unlock()
					m.maybeExpire(ctx, h)
					return
				}
				m.q.mu.Unlock()
			}
		}
		if h.Go(func(ctx context.Context) { m.writeJob(ctx, h) }) {
			return
		}
	}
}

// drain writes everything queued so far. Queries call it first.
func (m *Module) drain(ctx context.Context, log *zap.Logger) {
	for range QueueRecords/WriteBatch + 1 {
		if m.writeBatch(ctx, log) == 0 {
			return
		}
	}
}

// writeBatch takes at most WriteBatch records and writes them in one
// transaction, after the roster and blocklist checks. It returns how many
// it took.
func (m *Module) writeBatch(ctx context.Context, log *zap.Logger) int {
	q := &m.q
	q.flushMu.Lock()
	defer q.flushMu.Unlock()
	q.mu.Lock()
	n := min(len(q.recs), WriteBatch)
	batch := make([]pending, n)
	copy(batch, q.recs[:n])
	q.recs = append(q.recs[:0], q.recs[n:]...)
	for _, p := range batch {
		q.bytes -= len(p.rec.Stanza)
	}
	if len(q.recs) == 0 && cap(q.recs) > 4*WriteBatch {
		q.recs = nil // a burst's backing array goes back to the collector
	}
	q.mu.Unlock()
	if n == 0 {
		return 0
	}
	recs := make([]storage.ArchiveRecord, 0, n)
	for _, p := range batch {
		if ok, err := m.checks(ctx, p); err != nil {
			log.Warn("archive check failed; message not archived", zap.String("user", p.rec.User), zap.Error(err))
			m.failed.Add(1)
			continue
		} else if !ok {
			m.skipped.Add(1)
			continue
		}
		recs = append(recs, p.rec)
	}
	if err := m.Store.AppendArchive(ctx, recs); err != nil {
		log.Error("archive write failed", zap.Int("messages", len(recs)), zap.Error(err))
		m.failed.Add(uint64(len(recs)))
		return n
	}
	m.archived.Add(uint64(len(recs)))
	return n
}

// checks makes the decisions that need storage.
func (m *Module) checks(ctx context.Context, p pending) (bool, error) {
	if p.roster {
		ok, err := m.Store.InRoster(ctx, p.rec.User, p.rec.With)
		if err != nil || !ok {
			return false, err
		}
	}
	if p.blockFrom != "" && m.Blocker != nil {
		j, err := jid.Parse(p.blockFrom)
		if err != nil {
			return false, nil
		}
		blocked, err := m.Blocker.BlocksStored(ctx, p.rec.User, j)
		if err != nil || blocked {
			return false, err
		}
	}
	return true, nil
}

// Retention. The job runs on the worker pool, after a write job that
// emptied the queue, before a query and at login, at most once per
// expireEvery; each run deletes at most expireBatches batches of
// ExpireBatch messages (a database never holds a lock for long), and
// queues another run while there is more.
const (
	// ExpireBatch is how many archived messages one statement deletes.
	ExpireBatch   = 1000
	expireBatches = 10
	expireEvery   = time.Minute
)

// maybeExpire deletes messages older than mam.retention, and room
// messages older than their room's own retention, if it is time. The
// lock is held through the run, so that a query that comes meanwhile
// waits for it rather than reading what is being deleted.
func (m *Module) maybeExpire(ctx context.Context, h hook.Host) {
	retention := h.Config().MAM.Retention
	rooms := h.Config().MUCDomain()
	if retention <= 0 && (m.Rooms == nil || rooms == "") {
		return
	}
	m.expireMu.Lock()
	defer m.expireMu.Unlock()
	now := m.now()
	if !m.lastExpire.IsZero() && now.Sub(m.lastExpire) < expireEvery {
		return
	}
	m.lastExpire = now
	if retention > 0 {
		m.expire(ctx, h, idAt(now.Add(-retention)))
	}
	if m.Rooms != nil && rooms != "" {
		m.expireRooms(ctx, h, "@"+rooms, idAt(now))
	}
}

// idsPerDay is how far archive IDs move in a day.
const idsPerDay = int64(24*time.Hour/time.Millisecond) << idShift

// expireRooms deletes, in bounded batches, room messages older than their
// room's own retention, now being the archive ID of the run's time.
func (m *Module) expireRooms(ctx context.Context, h hook.Host, suffix string, now int64) {
	for range expireBatches {
		n, err := m.Rooms.ExpireRoomArchives(ctx, suffix, now, idsPerDay, ExpireBatch)
		if err != nil {
			h.Logger().Error("room archive retention failed", zap.Error(err))
			return
		}
		m.expired.Add(uint64(n))
		if n < ExpireBatch {
			return
		}
	}
	h.Go(func(ctx context.Context) { m.expireRooms(ctx, h, suffix, now) })
}

// expire deletes messages with IDs below before in bounded batches.
func (m *Module) expire(ctx context.Context, h hook.Host, before int64) {
	for range expireBatches {
		n, err := m.Store.ExpireArchive(ctx, before, ExpireBatch)
		if err != nil {
			h.Logger().Error("archive retention failed", zap.Error(err))
			return
		}
		m.expired.Add(uint64(n))
		if n < ExpireBatch {
			return
		}
	}
	h.Go(func(ctx context.Context) { m.expire(ctx, h, before) })
}
