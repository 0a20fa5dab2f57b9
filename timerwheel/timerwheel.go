// Package timerwheel implements a hierarchical timer wheel for deadlines
// that are usually cancelled or re-armed before they fire: one per event
// loop, driven by that loop, holding one deadline per connection.
//
// A Wheel has 7 levels of 64 slots; each level is 64 times coarser than the
// one below it, so level 0 holds the next 64 ticks and the top level spans
// 2^42 ticks. A Timer is an intrusive list node embedded in the struct it
// times out: arming, re-arming and cancelling are O(1) and never allocate.
//
// Unlike Linux's non-cascading wheel, timers in a coarse slot are moved to
// finer levels when that slot comes due (lazy cascading), so a timer fires
// in the first Advance whose time reaches its deadline rounded up to a whole
// tick: never early, and no later than one tick late when Advance is called
// every tick. Each timer moves at most once per level, and a timer that is
// cancelled before its slot comes due costs nothing more.
//
// A Wheel is not safe for concurrent use: all calls, including the expiry
// callbacks, happen on the goroutine that drives it.
package timerwheel

import (
	"math"
	"math/bits"
	"time"
)

// DefaultTick is the tick New uses when it is given a tick <= 0.
const DefaultTick = 100 * time.Millisecond

const (
	slotBits  = 6
	numSlots  = 1 << slotBits
	slotMask  = numSlots - 1
	numLevels = 7
	topLevel  = numLevels - 1

	// Indices into Wheel.heads. Wheel slot (level, s) is level*numSlots+s.
	dueList    = numLevels * numSlots // deadline already reached: fires at the next Advance
	firingList = dueList + 1          // collected by the running Advance, fired in order
	numLists   = firingList + 1
)

// Timer is an entry of a Wheel, embedded by value in the struct it times
// out, so that arming it allocates nothing.
//
// The zero value is an unarmed timer. A Timer belongs to one Wheel at a time
// and must not be copied while armed. It keeps its owner after it fires or
// is cancelled, until it is armed again.
type Timer[T any] struct {
	next, prev *Timer[T]
	when       uint64 // deadline in ticks since the wheel's start, rounded up
	list       uint32 // index in Wheel.heads plus one; zero when unarmed
	owner      T
}

// Armed reports whether t is armed: it will fire unless it is cancelled.
// A timer is no longer armed when its expiry callback runs.
func (t *Timer[T]) Armed() bool { return t.list != 0 }

// Wheel is a hierarchical timer wheel. Create one with New.
//
// Time inside the wheel is counted in whole ticks since the time given to
// New. A timer armed for at fires in the first Advance(now) with now at or
// after at rounded up to a whole tick, and never before at. Timers that fire
// in the same Advance fire in deadline order at tick granularity; ties fire
// in no particular order.
type Wheel[T any] struct {
	tick   time.Duration
	start  time.Time
	now    time.Time
	nowOff time.Duration // now.Sub(start), never negative
	expire func(owner T)

	// cur is the last tick Advance has reached: every timer in the levels
	// is due after cur. In level L < topLevel, a timer sits in the slot of
	// its deadline's level-L digit, which is above cur's while all higher
	// digits are equal; in the top level, it sits in the slot that comes
	// due 1 to 63 top-level slots after cur's, which is its own if its
	// deadline is that near, else the last one (clamped).
	cur uint64

	n        int                 // armed timers
	levels   uint64              // bit L is set when occupied[L] != 0
	occupied [numLevels]uint64   // bit s of occupied[L] is set when slot (L, s) is non-empty
	heads    [numLists]*Timer[T] // doubly linked, nil-terminated lists
	visits   uint64              // wheel slots emptied by Advance; tests bound the work with it
}

// New returns an empty Wheel whose time starts at now and advances in steps
// of tick (DefaultTick if tick <= 0). Advance calls expire with the owner of
// each timer that fires; a nil expire only disarms them.
func New[T any](tick time.Duration, now time.Time, expire func(owner T)) *Wheel[T] {
	if tick <= 0 {
		tick = DefaultTick
	}
	if expire == nil {
		expire = func(T) {}
	}
	return &Wheel[T]{tick: tick, start: now, now: now, expire: expire}
}

// Tick returns the wheel's granularity.
func (w *Wheel[T]) Tick() time.Duration { return w.tick }

// Now returns the wheel's current time: the latest time passed to Advance,
// or the time passed to New.
func (w *Wheel[T]) Now() time.Time { return w.now }

// Len returns the number of armed timers.
func (w *Wheel[T]) Len() int { return w.n }

// Arm arms t to call the wheel's expire function with owner at the absolute
// deadline at, replacing its previous deadline and owner if it was armed.
// A deadline at or before the wheel's current tick fires at the next
// Advance, before the timers still in the wheel, in arming order; this
// includes a timer armed from an expiry callback for a time at or before
// the Advance that runs it, so that each Advance does bounded work.
func (w *Wheel[T]) Arm(t *Timer[T], owner T, at time.Time) {
	w.arm(t, owner, w.ticksCeil(at.Sub(w.start)))
}

// ArmAfter is Arm with a deadline d after the wheel's current time, Now.
func (w *Wheel[T]) ArmAfter(t *Timer[T], owner T, d time.Duration) {
	off := w.nowOff + d
	if d > 0 && off < w.nowOff { // overflow: as far as time.Time.Sub goes
		off = math.MaxInt64
	}
	w.arm(t, owner, w.ticksCeil(off))
}

// Cancel disarms t and reports whether it was armed. Cancelling a timer
// from an expiry callback stops it from firing in the running Advance.
func (w *Wheel[T]) Cancel(t *Timer[T]) bool {
	if t.list == 0 {
		return false
	}
	w.unlink(t)
	w.n--
	return true
}

// Advance moves the wheel's time to now, fires every timer whose deadline
// is at or before now, and returns how many fired. The expire function runs
// inside Advance and may arm and cancel any timer. A now before the wheel's
// current time does not move it back, but still fires timers already due.
//
// The work done is proportional to the number of timers in the slots that
// come due, however many ticks have passed since the last Advance.
func (w *Wheel[T]) Advance(now time.Time) int {
	if off := now.Sub(w.start); off > w.nowOff {
		w.now, w.nowOff = now, off
	}
	w.collect(uint64(w.nowOff / w.tick))
	return w.fire()
}

// ticksCeil converts an offset from the wheel's start to whole ticks,
// rounding up so that a deadline never fires early.
func (w *Wheel[T]) ticksCeil(off time.Duration) uint64 {
	if off <= 0 {
		return 0
	}
	q := off / w.tick
	if q*w.tick != off {
		q++
	}
	return uint64(q)
}

func (w *Wheel[T]) arm(t *Timer[T], owner T, when uint64) {
	if t.list != 0 {
		w.unlink(t)
	} else {
		w.n++
	}
	t.owner = owner
	t.when = when
	w.insert(t)
}

// insert puts an unlinked t on the list its deadline selects relative to
// w.cur.
func (w *Wheel[T]) insert(t *Timer[T]) {
	i := dueList
	if t.when > w.cur {
		// The highest bit in which the deadline differs from cur selects
		// the level: every coarser digit is equal, so the slot of the
		// deadline's digit at that level comes due before the deadline.
		lvl := (bits.Len64(t.when^w.cur) - 1) / slotBits
		var s uint64
		if lvl < topLevel {
			s = t.when >> (slotBits * lvl) & slotMask
		} else {
			lvl = topLevel
			d, c := t.when>>(slotBits*topLevel), w.cur>>(slotBits*topLevel)
			if d-c >= numSlots {
				d = c + numSlots - 1 // beyond the wheel: clamp, re-inserted when reached
			}
			s = d & slotMask
		}
		w.occupied[lvl] |= 1 << s
		w.levels |= 1 << lvl
		i = lvl*numSlots + int(s)
	}
	h := w.heads[i]
	t.prev = nil
	t.next = h
	if h != nil {
		h.prev = t
	}
	w.heads[i] = t
	t.list = uint32(i) + 1
}

// unlink removes an armed t from its list and disarms it.
func (w *Wheel[T]) unlink(t *Timer[T]) {
	if t.prev != nil {
		t.prev.next = t.next
	} else {
		i := int(t.list) - 1
		w.heads[i] = t.next
		if t.next == nil && i < dueList {
			lvl := i / numSlots
			w.occupied[lvl] &^= 1 << (i % numSlots)
			if w.occupied[lvl] == 0 {
				w.levels &^= 1 << lvl
			}
		}
	}
	if t.next != nil {
		t.next.prev = t.prev
	}
	t.next, t.prev = nil, nil
	t.list = 0
}

// collect advances cur to target, appending the timers that come due to
// the firing list in deadline order, after any left by an expire function
// that panicked, and after the timers that were due before this Advance.
func (w *Wheel[T]) collect(target uint64) {
	tail := w.heads[firingList]
	if tail != nil {
		for tail.next != nil {
			tail = tail.next
		}
	}
	if x := w.heads[dueList]; x != nil {
		// The due list is pushed at its head: reverse it into arming order.
		w.heads[dueList] = nil
		var seg *Timer[T]
		segTail := x
		for x != nil {
			next := x.next
			x.next, x.prev = seg, nil
			if seg != nil {
				seg.prev = x
			}
			x.list = firingList + 1
			seg, x = x, next
		}
		if tail == nil {
			w.heads[firingList] = seg
		} else {
			tail.next, seg.prev = seg, tail
		}
		tail = segTail
	}

	// The next slot to come due is in the lowest occupied level: a level's
	// slots all come due before the next slot of the level above it.
	for w.levels != 0 {
		lvl := bits.TrailingZeros64(w.levels)
		shift := slotBits * lvl
		var s int
		var due uint64
		if lvl < topLevel {
			s = bits.TrailingZeros64(w.occupied[lvl])
			due = w.cur>>(shift+slotBits)<<(shift+slotBits) | uint64(s)<<shift
		} else {
			c := w.cur >> shift
			k := uint64(bits.TrailingZeros64(bits.RotateLeft64(w.occupied[lvl], -int((c+1)&slotMask)))) + 1
			s = int((c + k) & slotMask)
			due = (c + k) << shift
		}
		if due > target {
			break
		}
		w.cur = due
		w.visits++
		i := lvl*numSlots + s
		x := w.heads[i]
		w.heads[i] = nil
		w.occupied[lvl] &^= 1 << s
		if w.occupied[lvl] == 0 {
			w.levels &^= 1 << lvl
		}
		for x != nil {
			next := x.next
			if x.when <= due {
				x.next, x.prev = nil, tail
				if tail == nil {
					w.heads[firingList] = x
				} else {
					tail.next = x
				}
				tail = x
				x.list = firingList + 1
			} else {
				w.insert(x) // cascade to a finer level, or clamp again at the top
			}
			x = next
		}
	}
	if target > w.cur {
		w.cur = target
	}
}

// fire runs the expire function for each timer on the firing list. Timers
// armed by it for a tick at or before cur go to the due list, not the
// firing list, so the loop ends.
func (w *Wheel[T]) fire() int {
	n := 0
	for {
		t := w.heads[firingList]
		if t == nil {
			return n
		}
		w.heads[firingList] = t.next
		if t.next != nil {
			t.next.prev = nil
			t.next = nil
		}
		t.list = 0
		w.n--
		n++
		w.expire(t.owner)
	}
}
