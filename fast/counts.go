package fast

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/krill-xmpp/krill/storage"
)

// # Replay counters, written behind
//
// XEP-0484's count (<fast count='n'/>) must be above the last one accepted
// for the token. Checked in the database, that is a compare-and-set
// UPDATE whose commit syncs the write-ahead log: on SQLite most of a
// token login's server CPU. Standalone, the counter is checked in memory
// instead (counts) and written behind: each token's highest accepted count
// waits at most Options.CountFlush, then one write per token records it
// (UseFastToken, which keeps the database's own compare-and-set, so a
// late write never lowers a count).
//
// The database stays the floor: a login reads its token's row (it does
// anyway, to derive the token) and the count must be above both the
// row's last count and the one in memory. An entry leaves memory only
// once its count is in the database; a login whose row was read before an
// entry left could see neither, so entries leave under a generation
// number, and a login that read its row under an older generation and
// finds no entry reads the row again.
//
// The crash window: counts accepted in the last CountFlush before a crash
// are lost, and the same counts would be accepted once more after the
// restart. That reopens nothing the count protects against. The count
// guards a client's TLS 0-RTT flight, which a network attacker can replay
// verbatim without reading it (XEP-0484, "Client authenticates using
// FAST": servers reject replayed counts "received via TLS 0-RTT
// payloads"); Krill's TLS takes no early data, and a 1-RTT record cannot
// be replayed into another connection at all. Whoever can read a login's
// plaintext gains nothing from an old count either: the count is outside
// the HT proof, so such a reader could send any higher count. HT-SHA-256-
// EXPR binds the proof to the connection's tls-exporter (RFC 9266),
// unique per connection, so a recorded proof is refused on any other
// connection whatever its count; -ENDP binds it to the server's
// certificate only (the same for every connection) and -NONE to nothing,
// which is why XEP-0484 says clients MUST prefer channel binding.
//
// In a cluster (Options.CountFlush < 0, cmd/krill) the nodes share the
// database but not their memory: every count is written before the login
// succeeds, as before.

// DefaultCountFlush is how long an accepted count waits in memory before
// it is written (Options.CountFlush).
const DefaultCountFlush = time.Second

// MaxPendingCounts bounds the tokens whose counts wait in memory; beyond
// it a login with a count fails for the moment (temporary-auth-failure)
// until a flush has made room. Only a valid token adds an entry, and the
// bound is some 40 times the logins a second a core can serve, so this
// caps memory rather than shaping traffic. A login does not write its
// count itself instead: a count in the database but not in memory could
// be accepted once more by a login that read its row just before.
const MaxPendingCounts = 1 << 16

// maxStaleReads bounds the re-reads of one login whose row went stale
// under a flush (see counts); each needs a flush to land between a read
// and the check, at most one a CountFlush.
const maxStaleReads = 3

// errCountBusy is what a login gets when its row went stale under flushes
// maxStaleReads times, when memory is full (MaxPendingCounts) or after
// Flush: a temporary failure, the client retries.
var errCountBusy = errors.New("fast: replay counter busy")

// countEntry is a token's highest count accepted in memory.
type countEntry struct {
	username string
	count    int64
	at       time.Time // when it was accepted: the use recorded
	dirty    bool      // not yet written
}

// counts holds the replay counters written behind. Any goroutine.
type counts struct {
	store storage.FastTokens
	delay time.Duration

	mu      sync.Mutex
	entries map[string]*countEntry // by token id
	gen     uint64                 // entries that left memory so far
	armed   bool                   // a flush is scheduled
	stopped bool                   // after stop: logins write their own counts
	timer   *time.Timer

	written, failed atomic.Uint64
}

// verdict is the in-memory check's answer.
type verdict uint8

const (
	countAccepted verdict = iota
	countReplayed
	countStale // the row may be older than an entry that left: read it again
	countFull  // no room, or stopped: refuse for now
)

// generation is read before a login reads its token's row.
func (c *counts) generation() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.gen
}

// accept checks count against the row's last count (read under gen) and
// the one in memory, and keeps it as the token's highest if above both.
func (c *counts) accept(username, id string, count, dbLast int64, gen uint64, now time.Time) verdict {
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.entries[id]
	if e == nil && gen != c.gen {
		return countStale
	}
	floor := dbLast
	if e != nil {
		floor = max(floor, e.count)
	}
	if count <= floor {
		return countReplayed
	}
	if c.stopped {
		return countFull
	}
	if e == nil {
		if len(c.entries) >= MaxPendingCounts {
			return countFull
		}
		if c.entries == nil {
			c.entries = make(map[string]*countEntry)
		}
		e = &countEntry{username: username}
		c.entries[id] = e
	}
	e.count, e.at, e.dirty = count, now, true
	if !c.armed {
		c.armed = true
		c.timer = time.AfterFunc(c.delay, c.tick)
	}
	return countAccepted
}

// persisted marks id's count as in the database (a login wrote it itself).
func (c *counts) persisted(id string, count int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e := c.entries[id]; e != nil && e.count == count {
		e.dirty = false
	}
}

// flushTimeout bounds one scheduled flush: a database that does not
// answer holds the writes back, not a goroutine forever.
const flushTimeout = 30 * time.Second

// tick is the scheduled flush. The flush stays armed while it runs, so
// ticks never overlap; the next is armed if counts are still waiting
// (accepted meanwhile, or a write failed).
func (c *counts) tick() {
	ctx, cancel := context.WithTimeout(context.Background(), flushTimeout)
	defer cancel()
	c.flush(ctx)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.armed = false
	if len(c.entries) > 0 && !c.stopped {
		c.armed = true
		c.timer = time.AfterFunc(c.delay, c.tick)
	}
}

// flush writes every pending count, one write per token, and lets the
// written entries leave memory. Entries whose write failed stay and are
// tried again at the next flush.
func (c *counts) flush(ctx context.Context) {
	type use struct {
		id, username string
		count        int64
		at           time.Time
	}
	c.mu.Lock()
	var batch []use
	for id, e := range c.entries {
		if !e.dirty {
			// Written by its login (persisted): it may leave.
			delete(c.entries, id)
			c.gen++
			continue
		}
		batch = append(batch, use{id, e.username, e.count, e.at})
	}
	c.mu.Unlock()
	for _, u := range batch {
		err := c.store.UseFastToken(ctx, u.username, u.id, u.count, u.at, false)
		switch {
		case err == nil:
			c.written.Add(1)
		case errors.Is(err, storage.ErrReplayed), errors.Is(err, storage.ErrNotFound):
			// The database holds as high a count already, or the token
			// is gone (revoked): nothing to keep either way.
		default:
			c.failed.Add(1)
			continue
		}
		c.mu.Lock()
		if e := c.entries[u.id]; e != nil && e.count == u.count {
			delete(c.entries, u.id)
			c.gen++
		}
		c.mu.Unlock()
	}
}

// stop writes what is pending and stops the timer; logins with a count
// fail from now on (countFull).
func (c *counts) stop(ctx context.Context) {
	c.mu.Lock()
	c.stopped = true
	if c.timer != nil {
		c.timer.Stop()
	}
	c.mu.Unlock()
	c.flush(ctx)
}

// checkCount runs the in-memory check for a login of row with count,
// reading the row again if it went stale (see counts).
func (t *Tokens) checkCount(ctx context.Context, l Login, row *storage.FastToken, gen uint64, now time.Time) error {
	last := row.LastCount
	for range maxStaleReads {
		switch t.counts.accept(l.Username, row.ID, l.Count, last, gen, now) {
		case countAccepted:
			return nil
		case countFull:
			return errCountBusy
		case countReplayed:
			return fmt.Errorf("%w: count %d", storage.ErrReplayed, l.Count)
		}
		gen = t.counts.generation()
		rows, err := t.store.FastTokens(ctx, l.Username, l.Client)
		if err != nil {
			return fmt.Errorf("fast: look up tokens: %w", err)
		}
		found := false
		for i := range rows {
			if rows[i].ID == row.ID {
				last, found = rows[i].LastCount, true
			}
		}
		if !found {
			return fmt.Errorf("%w: FAST token %s", storage.ErrNotFound, row.ID)
		}
	}
	return errCountBusy
}

// Flush writes the replay counts waiting in memory (see counts) and
// returns once they are written; the server calls it when it stops, after
// the event loops. A login with a count after Flush fails (temporarily).
func (t *Tokens) Flush(ctx context.Context) {
	if t.counts != nil {
		t.counts.stop(ctx)
	}
}

// CountStats reports the counts written behind so far and the writes
// that failed (and are tried again).
func (t *Tokens) CountStats() (written, failed uint64) {
	if t.counts == nil {
		return 0, 0
	}
	return t.counts.written.Load(), t.counts.failed.Load()
}
