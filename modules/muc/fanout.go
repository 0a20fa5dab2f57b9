package muc

import (
	"context"
	"slices"

	"github.com/krill-xmpp/krill/hook"
)

// Fan-out. What a room sends to all its occupants (a groupchat message, a
// presence change) is built once as a broadcast: the bytes before the
// recipient's address and the bytes after it. Each copy is one allocation
// of exactly its size, filled by two copies and the address: a session's
// mailbox owns what it is given, so a copy per recipient is the floor.
//
// A room's occupants are spread over numParts partitions. A broadcast is
// queued on every partition with the partition's members at that moment
// (a copy-on-write slice: queuing copies nothing), and each partition is
// drained by one runner at a time, in queue order: every occupant gets the
// room's stanzas in the room's order, and the partitions of a big room are
// drained in parallel by the worker pool instead of stalling the sender's
// event loop. A small room (at most inlineMax occupants) is drained on the
// sender's loop at once, which is cheaper than a hand-over.

const (
	// numParts is the partitions of a room: the most workers one
	// broadcast occupies.
	numParts = 8
	// inlineMax is the largest room whose broadcasts are written from the
	// sender's loop.
	inlineMax = 64
	// drainBatch is the most queued broadcasts a worker drains before it
	// yields the worker to other jobs and queues itself again.
	drainBatch = 32
)

// broadcast is one stanza for several occupants, split around the
// recipient's address.
type broadcast struct {
	// head is everything up to the to attribute's value.
	head []byte
	// plain is what follows the address for most recipients; withJID,
	// when set, is for those who may see real JIDs (moderators of a
	// semi-anonymous room).
	plain, withJID []byte
	// self, when set, gets selfTail instead (its own presence, status
	// 110), preceded by before and followed by after: complete stanzas
	// (the room's occupants on join; history and subject after it).
	self          *occupant
	selfTail      []byte
	before, after [][]byte
	// skip get nothing: the sessions of a nick that changes, which each
	// get their own copy with status 110 instead.
	skip []*occupant
	// onlySelf sends it to self only (a presence the room does not
	// broadcast), in order with the rest of what self gets.
	onlySelf bool
}

// partition is one share of a room's occupants. Guarded by the room's mu.
type partition struct {
	members  []*occupant // copy-on-write: never modified in place
	queue    []queued
	draining bool
}

// queued is a broadcast with the members it is for.
type queued struct {
	bc *broadcast
	to []*occupant
}

// copyFor returns the stanza b with to as its recipient.
func (bc *broadcast) copyFor(o *occupant) []byte {
	if slices.Contains(bc.skip, o) {
		return nil
	}
	tail := bc.plain
	switch {
	case o == bc.self && bc.selfTail != nil:
		tail = bc.selfTail
	case bc.withJID != nil && o.seesJIDs():
		tail = bc.withJID
	}
	b := make([]byte, 0, len(bc.head)+len(o.toAttr)+len(tail))
	b = append(b, bc.head...)
	b = append(b, o.toAttr...)
	return append(b, tail...)
}

// deliver writes the broadcast to each of to.
func (bc *broadcast) deliver(to []*occupant) {
	for _, o := range to {
		if o == bc.self {
			for _, s := range bc.before {
				o.sess.Deliver(s)
			}
		}
		if b := bc.copyFor(o); b != nil {
			o.sess.Deliver(b)
		}
		if o == bc.self {
			for _, s := range bc.after {
				o.sess.Deliver(s)
			}
		}
	}
}

// addMember puts o in the least-filled partition. Called with r.mu held.
func (r *room) addMember(o *occupant) {
	best := 0
	for i := 1; i < numParts; i++ {
		if len(r.parts[i].members) < len(r.parts[best].members) {
			best = i
		}
	}
	p := &r.parts[best]
	m := make([]*occupant, len(p.members), len(p.members)+1)
	copy(m, p.members)
	p.members = append(m, o)
	o.part = uint8(best)
}

// removeMember takes o out of its partition. Called with r.mu held.
func (r *room) removeMember(o *occupant) {
	p := &r.parts[o.part]
	m := make([]*occupant, 0, len(p.members))
	for _, x := range p.members {
		if x != o {
			m = append(m, x)
		}
	}
	p.members = m
}

// enqueue queues bc for every occupant, and for extra (an occupant that
// has just left and still gets its own unavailable presence), and returns
// the partitions this caller must start draining. Called with r.mu held;
// the caller calls run after unlocking.
func (r *room) enqueue(bc *broadcast, extra *occupant) (start [numParts]bool) {
	for i := range r.parts {
		p := &r.parts[i]
		to := p.members
		if bc.onlySelf {
			if int(bc.self.part) != i {
				continue
			}
			to = []*occupant{bc.self}
		}
		if extra != nil && int(extra.part) == i && !bc.onlySelf {
			to = append(to[:len(to):len(to)], extra)
		}
		if len(to) == 0 {
			continue
		}
		p.queue = append(p.queue, queued{bc, to})
		if !p.draining {
			p.draining = true
			start[i] = true
		}
	}
	return start
}

// run drains the partitions the caller is to start: on this goroutine for a
// small room, on the worker pool for a big one.
func (r *room) run(h hook.Host, start [numParts]bool, small bool) {
	for i, ok := range start {
		if !ok {
			continue
		}
		if small || !h.Go(func(context.Context) { r.drain(h, i, drainBatch) }) {
			r.drain(h, i, 0)
		}
	}
}

// drain delivers partition i's queue in order until it is empty; with a
// limit, after that many broadcasts it hands the rest to a new worker job.
func (r *room) drain(h hook.Host, i, limit int) {
	p := &r.parts[i]
	done := 0
	for {
		r.mu.Lock()
		q := p.queue
		if len(q) == 0 {
			p.draining = false
			r.mu.Unlock()
			return
		}
		if limit > 0 && done >= limit {
			r.mu.Unlock()
			if h.Go(func(context.Context) { r.drain(h, i, limit) }) {
				return
			}
			done = 0
			continue
		}
		n := len(q)
		if limit > 0 {
			n = min(n, limit-done)
		}
		p.queue = q[n:]
		if len(p.queue) == 0 {
			p.queue = nil
		}
		r.mu.Unlock()
		for _, e := range q[:n] {
			e.bc.deliver(e.to)
		}
		done += n
	}
}

// sendLocked queues bc for the whole room and starts what drains it. Called with
// r.mu held; it unlocks it.
func (r *room) sendLocked(h hook.Host, bc *broadcast, extra *occupant) {
	start := r.enqueue(bc, extra)
	small := len(r.byJID) <= inlineMax
	r.mu.Unlock()
	r.run(h, start, small)
}
