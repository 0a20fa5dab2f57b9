package timerwheel

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
	"unsafe"
)

// start is a fixed time base with no monotonic reading, so that tests are
// deterministic; Sub then uses the wall clock, which is what a monotonic
// reading would give too.
var start = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)

// ceilTick is the test's own statement of a deadline's tick: the smallest k
// with start + k*tick >= at.
func ceilTick(tick time.Duration, at time.Time) uint64 {
	d := at.Sub(start)
	if d <= 0 {
		return 0
	}
	k := d / tick
	if k*tick < d {
		k++
	}
	return uint64(k)
}

// check verifies every structural invariant of w, and that each timer sits
// in a slot that comes due at or before its deadline.
func (w *Wheel[T]) check() error {
	count := 0
	for i := range numLists {
		var prev *Timer[T]
		for x := w.heads[i]; x != nil; x = x.next {
			if count++; count > w.n {
				return fmt.Errorf("list %d: more timers than Len %d, or a cycle", i, w.n)
			}
			if x.prev != prev {
				return fmt.Errorf("list %d: broken prev link", i)
			}
			if int(x.list) != i+1 {
				return fmt.Errorf("list %d: timer says list %d", i, int(x.list)-1)
			}
			prev = x
			switch {
			case i == dueList:
				if x.when > w.cur {
					return fmt.Errorf("due timer at %d after cur %d", x.when, w.cur)
				}
				continue
			case i == firingList:
				continue
			}
			if x.when <= w.cur {
				return fmt.Errorf("slot %d: timer at %d not after cur %d", i, x.when, w.cur)
			}
			lvl, s := i/numSlots, uint64(i%numSlots)
			shift := uint(slotBits * lvl)
			if lvl < topLevel {
				if x.when>>shift&slotMask != s {
					return fmt.Errorf("slot %d: timer at %d has another digit", i, x.when)
				}
				if x.when>>(shift+slotBits) != w.cur>>(shift+slotBits) {
					return fmt.Errorf("slot %d: timer at %d differs from cur %d above its level", i, x.when, w.cur)
				}
				if s <= w.cur>>shift&slotMask {
					return fmt.Errorf("slot %d: not ahead of cur %d", i, w.cur)
				}
				continue
			}
			c := w.cur >> shift
			k := (s - c) & slotMask
			if k == 0 {
				return fmt.Errorf("top slot %d is cur's own slot", s)
			}
			if due := (c + k) << shift; due > x.when {
				return fmt.Errorf("top slot %d comes due at %d after timer at %d", s, due, x.when)
			}
		}
		if i < dueList {
			lvl, s := i/numSlots, i%numSlots
			if (w.heads[i] != nil) != (w.occupied[lvl]&(1<<s) != 0) {
				return fmt.Errorf("slot %d: occupancy bit disagrees with list", i)
			}
		}
	}
	for lvl := range numLevels {
		if (w.occupied[lvl] != 0) != (w.levels&(1<<lvl) != 0) {
			return fmt.Errorf("level %d: summary bit disagrees", lvl)
		}
	}
	if count != w.n {
		return fmt.Errorf("Len %d, %d timers linked", w.n, count)
	}
	return nil
}

func mustCheck[T any](t *testing.T, w *Wheel[T]) {
	t.Helper()
	if err := w.check(); err != nil {
		t.Fatal(err)
	}
}

// logRand returns a value spread log-uniformly below 2^maxBits.
func logRand(r *rand.Rand, maxBits int) int64 {
	b := r.IntN(maxBits + 1)
	if b == 0 {
		return 0
	}
	return r.Int64N(int64(1) << b)
}

// entry is a timed thing in the model test.
type entry struct {
	id    int
	timer Timer[*entry]
	armed bool      // the model's view
	at    time.Time // the model's deadline
}

// firing records a timer that fired and its deadline tick at the time.
type firing struct {
	id   int
	tick uint64
}

// TestModel runs random operations, including from expiry callbacks, and
// checks each Advance against a model: exactly the armed timers with a
// deadline tick at or before now fire, never before their deadline, in
// deadline order, and timers armed from callbacks for a due time wait for
// the next Advance.
func TestModel(t *testing.T) {
	tests := []struct {
		name       string
		tick       time.Duration
		timers     int
		ops        int
		deadline   int // log2 of the largest deadline offset, in ticks
		step       int // log2 of the largest Advance step, in ticks
		callbackOp float64
	}{
		{"1ns tick, all levels and clamping", time.Nanosecond, 500, 20000, 46, 44, 0},
		{"1us tick, callbacks act", time.Microsecond, 500, 20000, 46, 44, 0.5},
		{"3ms tick, unaligned deadlines", 3*time.Millisecond + 7, 300, 20000, 34, 30, 0.3},
		{"100ms tick, short deadlines, busy callbacks", 100 * time.Millisecond, 200, 20000, 14, 8, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := rand.New(rand.NewPCG(1, uint64(len(tc.name))))
			var (
				w        *Wheel[*entry]
				es       = make([]*entry, tc.timers)
				expected map[int]bool
				fired    []firing
				now      time.Time
				prevCur  uint64
			)
			randAt := func() time.Time {
				off := time.Duration(logRand(r, tc.deadline)) * tc.tick
				off += time.Duration(r.Int64N(int64(tc.tick)))
				if r.IntN(10) == 0 {
					off = -off // in the past
				}
				return w.Now().Add(off)
			}
			op := func(inCallback bool) {
				e := es[r.IntN(len(es))]
				switch r.IntN(3) {
				case 0:
					at := randAt()
					w.Arm(&e.timer, e, at)
					e.armed, e.at = true, at
					delete(expected, e.id)
				case 1:
					d := time.Duration(logRand(r, tc.deadline)) * tc.tick
					w.ArmAfter(&e.timer, e, d)
					e.armed, e.at = true, w.Now().Add(d)
					delete(expected, e.id)
				case 2:
					if got := w.Cancel(&e.timer); got != e.armed {
						t.Fatalf("Cancel(%d) = %v, model says armed = %v (in callback: %v)", e.id, got, e.armed, inCallback)
					}
					e.armed = false
					delete(expected, e.id)
				}
			}
			w = New(tc.tick, start, func(e *entry) {
				if !expected[e.id] {
					t.Fatalf("timer %d fired, not expected (at %v, now %v)", e.id, e.at.Sub(start), now.Sub(start))
				}
				if e.at.After(now) {
					t.Fatalf("timer %d fired early: at %v, now %v", e.id, e.at.Sub(start), now.Sub(start))
				}
				if e.timer.Armed() {
					t.Fatalf("timer %d armed in its own callback", e.id)
				}
				delete(expected, e.id)
				e.armed = false
				fired = append(fired, firing{e.id, ceilTick(tc.tick, e.at)})
				if r.Float64() < tc.callbackOp {
					op(true)
				}
				mustCheck(t, w)
			})
			for i := range es {
				es[i] = &entry{id: i}
			}
			now = start
			for range tc.ops {
				if r.IntN(4) != 0 {
					op(false)
					mustCheck(t, w)
					continue
				}
				step := time.Duration(logRand(r, tc.step)) * tc.tick
				if r.IntN(2) == 0 {
					step += time.Duration(r.Int64N(int64(tc.tick)))
				}
				if r.IntN(50) == 0 {
					step = -step // a clock that goes back does not move the wheel back
				}
				advTo := now.Add(step)
				if advTo.After(now) {
					now = advTo
				}
				nowTick := uint64(now.Sub(start) / tc.tick)
				expected = map[int]bool{}
				for _, e := range es {
					if e.armed && ceilTick(tc.tick, e.at) <= nowTick {
						expected[e.id] = true
					}
				}
				fired = fired[:0]
				n := w.Advance(advTo)
				if n != len(fired) {
					t.Fatalf("Advance returned %d, %d callbacks ran", n, len(fired))
				}
				if len(expected) != 0 {
					t.Fatalf("%d due timers did not fire", len(expected))
				}
				last := uint64(0)
				for _, f := range fired {
					eff := max(f.tick, prevCur)
					if eff < last {
						t.Fatalf("timer %d (tick %d) fired after one due at tick %d", f.id, eff, last)
					}
					last = eff
				}
				prevCur = nowTick
				if !w.Now().Equal(now) {
					t.Fatalf("Now() = %v, want %v", w.Now().Sub(start), now.Sub(start))
				}
				mustCheck(t, w)
				armed := 0
				for _, e := range es {
					if e.armed {
						armed++
					}
					if e.armed != e.timer.Armed() {
						t.Fatalf("timer %d: Armed() = %v, model %v", e.id, e.timer.Armed(), e.armed)
					}
				}
				if w.Len() != armed {
					t.Fatalf("Len() = %d, model %d", w.Len(), armed)
				}
			}
			expected = nil
		})
	}
}

// TestPrecision arms deadlines spread over every level and beyond, and
// checks each one fires in the Advance that reaches its deadline's tick,
// not in the one just before, after random steps in between.
func TestPrecision(t *testing.T) {
	tests := []struct {
		name     string
		tick     time.Duration
		deadline int // log2 of the largest deadline, in ticks
	}{
		{"1ns", time.Nanosecond, 48},
		{"1us", time.Microsecond, 41},
		{"7ms+3ns", 7*time.Millisecond + 3, 38},
		{"1s", time.Second, 30},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := rand.New(rand.NewPCG(2, uint64(tc.tick)))
			fired := 0
			w := New(tc.tick, start, func(int) { fired++ })
			var tm Timer[int]
			for i := range 2000 {
				if w.Now().Sub(start) > 1<<61 { // keep deadlines within time.Duration
					w = New(tc.tick, start, w.expire)
				}
				at := w.Now().Add(time.Duration(logRand(r, tc.deadline))*tc.tick + time.Duration(r.Int64N(int64(tc.tick))))
				want := start.Add(time.Duration(ceilTick(tc.tick, at)) * tc.tick)
				w.Arm(&tm, i, at)
				for range 3 { // random steps that stay before the deadline's tick
					gap := want.Sub(w.Now()) - tc.tick
					if gap <= 0 {
						break
					}
					w.Advance(w.Now().Add(time.Duration(r.Int64N(int64(gap)))))
				}
				if before := want.Add(-1); !before.Before(w.Now()) {
					if n := w.Advance(before); n != 0 || fired != i {
						t.Fatalf("deadline %v: fired early at %v", at.Sub(start), before.Sub(start))
					}
				}
				if n := w.Advance(want); n != 1 || fired != i+1 {
					t.Fatalf("deadline %v: did not fire at %v", at.Sub(start), want.Sub(start))
				}
				mustCheck(t, w)
			}
		})
	}
}

func TestOrdering(t *testing.T) {
	const tick = time.Millisecond
	tests := []struct {
		name      string
		deadlines []time.Duration // offsets from start, one timer each
	}{
		{"one slot", []time.Duration{5 * tick, 5 * tick, 5 * tick}},
		{"level 0", []time.Duration{9 * tick, 3 * tick, 63 * tick, 1 * tick}},
		{"across levels", []time.Duration{5000 * tick, 70 * tick, 1 << 20 * tick, 64 * tick, 2 * tick, 4096 * tick}},
		{"sub-tick offsets round up", []time.Duration{2*tick + 1, 2 * tick, 1*tick + 1, 1}},
		{"far future", []time.Duration{1 << 50, time.Hour, 1 << 62, 1<<62 + 1}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var got []time.Duration
			w := New(tick, start, func(d time.Duration) { got = append(got, d) })
			timers := make([]Timer[time.Duration], len(tc.deadlines))
			for i, d := range tc.deadlines {
				w.Arm(&timers[i], d, start.Add(d))
			}
			end := start.Add(math.MaxInt64)
			if n := w.Advance(end); n != len(tc.deadlines) {
				t.Fatalf("Advance fired %d, want %d", n, len(tc.deadlines))
			}
			for i := 1; i < len(got); i++ {
				if ceilTick(tick, start.Add(got[i])) < ceilTick(tick, start.Add(got[i-1])) {
					t.Fatalf("fired in order %v", got)
				}
			}
			if w.visits > uint64(len(tc.deadlines)*numLevels) {
				t.Errorf("visited %d slots for %d timers", w.visits, len(tc.deadlines))
			}
		})
	}
}

func TestCancelAndRearm(t *testing.T) {
	const tick = time.Second
	type step struct {
		do   string // "arm" (offset at), "cancel", "advance" (to offset at)
		at   time.Duration
		want int // fired by advance, or 1/0 for cancel's result
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{"cancel unarmed", []step{{do: "cancel", want: 0}}},
		{"cancel armed", []step{{"arm", 10 * tick, 0}, {"cancel", 0, 1}, {"cancel", 0, 0}, {"advance", time.Hour, 0}}},
		{"cancel far", []step{{"arm", 1000 * time.Hour, 0}, {"cancel", 0, 1}, {"advance", 2000 * time.Hour, 0}}},
		{"cancel due", []step{{"advance", 5 * tick, 0}, {"arm", tick, 0}, {"cancel", 0, 1}, {"advance", 5 * tick, 0}}},
		{"cancel after fire", []step{{"arm", tick, 0}, {"advance", tick, 1}, {"cancel", 0, 0}}},
		{"rearm later", []step{{"arm", tick, 0}, {"arm", 100 * tick, 0}, {"advance", 99 * tick, 0}, {"advance", 100 * tick, 1}, {"advance", 200 * tick, 0}}},
		{"rearm earlier", []step{{"arm", 5000 * tick, 0}, {"arm", 3 * tick, 0}, {"advance", 3 * tick, 1}, {"advance", 9000 * tick, 0}}},
		{"rearm same deadline", []step{{"arm", 70 * tick, 0}, {"arm", 70 * tick, 0}, {"advance", 70 * tick, 1}}},
		{"rearm after cascade", []step{{"arm", 200 * tick, 0}, {"advance", 130 * tick, 0}, {"arm", 131 * tick, 0}, {"advance", 131 * tick, 1}}},
		{"rearm due to future", []step{{"advance", 10 * tick, 0}, {"arm", tick, 0}, {"arm", 20 * tick, 0}, {"advance", 19 * tick, 0}, {"advance", 20 * tick, 1}}},
		{"past deadline fires at next advance", []step{{"advance", time.Hour, 0}, {"arm", -time.Hour, 0}, {"advance", 0, 1}}},
		{"deadline now fires at next advance", []step{{"advance", 10 * tick, 0}, {"arm", 10 * tick, 0}, {"advance", 10 * tick, 1}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			fired := 0
			w := New(tick, start, func(struct{}) { fired++ })
			var tm Timer[struct{}]
			for i, s := range tc.steps {
				switch s.do {
				case "arm":
					w.Arm(&tm, struct{}{}, start.Add(s.at))
					if !tm.Armed() || w.Len() != 1 {
						t.Fatalf("step %d: Armed() = %v, Len() = %d after Arm", i, tm.Armed(), w.Len())
					}
				case "cancel":
					if got := w.Cancel(&tm); got != (s.want == 1) {
						t.Fatalf("step %d: Cancel() = %v", i, got)
					}
					if tm.Armed() || w.Len() != 0 {
						t.Fatalf("step %d: Armed() = %v, Len() = %d after Cancel", i, tm.Armed(), w.Len())
					}
				case "advance":
					fired = 0
					if n := w.Advance(start.Add(s.at)); n != s.want || fired != s.want {
						t.Fatalf("step %d: Advance(%v) = %d (%d callbacks), want %d", i, s.at, n, fired, s.want)
					}
				}
				mustCheck(t, w)
			}
		})
	}
}

// slotTimer is an owner that acts on other timers when it fires.
type slotTimer struct {
	id     int
	timer  Timer[*slotTimer]
	action func(w *Wheel[*slotTimer], self *slotTimer)
}

func TestCallbacks(t *testing.T) {
	const tick = time.Millisecond
	type advance struct {
		at   time.Duration
		want []int // ids fired, in order
	}
	tests := []struct {
		name    string
		at      []time.Duration // deadline of timer i
		actions map[int]func(w *Wheel[*slotTimer], ts []*slotTimer, self *slotTimer)
		steps   []advance
	}{
		{
			name: "rearm self for now waits for next advance",
			at:   []time.Duration{5 * tick},
			actions: map[int]func(*Wheel[*slotTimer], []*slotTimer, *slotTimer){
				0: func(w *Wheel[*slotTimer], _ []*slotTimer, s *slotTimer) { w.ArmAfter(&s.timer, s, 0) },
			},
			steps: []advance{{5 * tick, []int{0}}, {5 * tick, []int{0}}, {6 * tick, []int{0}}},
		},
		{
			name: "rearm self in the past waits for next advance",
			at:   []time.Duration{5 * tick},
			actions: map[int]func(*Wheel[*slotTimer], []*slotTimer, *slotTimer){
				0: func(w *Wheel[*slotTimer], _ []*slotTimer, s *slotTimer) { w.Arm(&s.timer, s, start) },
			},
			steps: []advance{{100 * tick, []int{0}}, {100 * tick, []int{0}}},
		},
		{
			name: "rearm self for later",
			at:   []time.Duration{5 * tick},
			actions: map[int]func(*Wheel[*slotTimer], []*slotTimer, *slotTimer){
				0: func(w *Wheel[*slotTimer], _ []*slotTimer, s *slotTimer) {
					if s.timer.Armed() {
						panic("armed in own callback")
					}
					if w.Cancel(&s.timer) {
						panic("Cancel of a firing timer reported true")
					}
					w.ArmAfter(&s.timer, s, 100*tick)
				},
			},
			steps: []advance{{5 * tick, []int{0}}, {104 * tick, nil}, {105 * tick, []int{0}}},
		},
		{
			name: "cancel another in the same slot",
			at:   []time.Duration{7 * tick, 7 * tick, 7 * tick},
			actions: map[int]func(*Wheel[*slotTimer], []*slotTimer, *slotTimer){
				0: func(w *Wheel[*slotTimer], ts []*slotTimer, _ *slotTimer) {
					w.Cancel(&ts[1].timer)
					w.Cancel(&ts[2].timer)
				},
				1: func(w *Wheel[*slotTimer], ts []*slotTimer, _ *slotTimer) {
					w.Cancel(&ts[0].timer)
					w.Cancel(&ts[2].timer)
				},
				2: func(w *Wheel[*slotTimer], ts []*slotTimer, _ *slotTimer) {
					w.Cancel(&ts[0].timer)
					w.Cancel(&ts[1].timer)
				},
			},
			steps: []advance{{7 * tick, []int{-1}}, {time.Hour, nil}}, // -1: exactly one, any
		},
		{
			name: "cancel others on the due list",
			at:   []time.Duration{0, -tick, 0},
			actions: map[int]func(*Wheel[*slotTimer], []*slotTimer, *slotTimer){
				0: func(w *Wheel[*slotTimer], ts []*slotTimer, _ *slotTimer) {
					w.Cancel(&ts[1].timer)
					w.Cancel(&ts[2].timer)
				},
				1: func(w *Wheel[*slotTimer], ts []*slotTimer, _ *slotTimer) {
					w.Cancel(&ts[0].timer)
					w.Cancel(&ts[2].timer)
				},
				2: func(w *Wheel[*slotTimer], ts []*slotTimer, _ *slotTimer) {
					w.Cancel(&ts[0].timer)
					w.Cancel(&ts[1].timer)
				},
			},
			steps: []advance{{0, []int{-1}}, {time.Hour, nil}},
		},
		{
			name:  "due list fires in arming order, before the wheel",
			at:    []time.Duration{tick, 0, -time.Hour, -tick},
			steps: []advance{{tick, []int{1, 2, 3, 0}}},
		},
		{
			name: "rearm another in the same slot for later",
			at:   []time.Duration{300 * tick, 300 * tick},
			actions: map[int]func(*Wheel[*slotTimer], []*slotTimer, *slotTimer){
				0: func(w *Wheel[*slotTimer], ts []*slotTimer, _ *slotTimer) { w.ArmAfter(&ts[1].timer, ts[1], 10*tick) },
				1: func(w *Wheel[*slotTimer], ts []*slotTimer, _ *slotTimer) { w.ArmAfter(&ts[0].timer, ts[0], 10*tick) },
			},
			steps: []advance{{300 * tick, []int{-1}}, {309 * tick, nil}, {310 * tick, []int{-1}}, {319 * tick, nil}, {320 * tick, []int{-1}}},
		},
		{
			name: "rearm a later timer to now waits for next advance",
			at:   []time.Duration{10 * tick, 20 * tick, 5000 * tick},
			actions: map[int]func(*Wheel[*slotTimer], []*slotTimer, *slotTimer){
				0: func(w *Wheel[*slotTimer], ts []*slotTimer, _ *slotTimer) { w.ArmAfter(&ts[2].timer, ts[2], 0) },
			},
			steps: []advance{{30 * tick, []int{0, 1}}, {30 * tick, []int{2}}, {time.Hour, nil}},
		},
		{
			name: "cancel a later timer due in the same advance",
			at:   []time.Duration{10 * tick, 20 * tick, 700 * tick},
			actions: map[int]func(*Wheel[*slotTimer], []*slotTimer, *slotTimer){
				0: func(w *Wheel[*slotTimer], ts []*slotTimer, _ *slotTimer) { w.Cancel(&ts[2].timer) },
			},
			steps: []advance{{time.Hour, []int{0, 1}}, {2 * time.Hour, nil}},
		},
		{
			name: "arm a new timer within the advanced span",
			at:   []time.Duration{10 * tick, 50 * tick},
			actions: map[int]func(*Wheel[*slotTimer], []*slotTimer, *slotTimer){
				// Wheel time is already 100ms: 20ms from the start is due.
				0: func(w *Wheel[*slotTimer], ts []*slotTimer, _ *slotTimer) {
					w.Arm(&ts[2].timer, ts[2], start.Add(20*tick))
				},
			},
			steps: []advance{{100 * tick, []int{0, 1}}, {100 * tick, []int{2}}},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var got []int
			var w *Wheel[*slotTimer]
			w = New(tick, start, func(s *slotTimer) {
				got = append(got, s.id)
				if s.action != nil {
					s.action(w, s)
				}
			})
			ts := make([]*slotTimer, len(tc.at)+1)
			for i := range ts {
				ts[i] = &slotTimer{id: i}
				if act := tc.actions[i]; act != nil {
					ts[i].action = func(w *Wheel[*slotTimer], s *slotTimer) { act(w, ts, s) }
				}
			}
			for i, at := range tc.at {
				w.Arm(&ts[i].timer, ts[i], start.Add(at))
			}
			for i, s := range tc.steps {
				got = got[:0]
				n := w.Advance(start.Add(s.at))
				if n != len(got) {
					t.Fatalf("step %d: Advance = %d, %d callbacks", i, n, len(got))
				}
				ok := len(got) == len(s.want)
				if ok && !(len(s.want) == 1 && s.want[0] == -1) {
					ok = slices.Equal(got, s.want)
				}
				if !ok {
					t.Fatalf("step %d: Advance(%v) fired %v, want %v", i, s.at, got, s.want)
				}
				mustCheck(t, w)
			}
		})
	}
}

// TestIdleGap checks that Advance after a long gap jumps over empty ticks
// with the occupancy bitmaps: the slots it empties are bounded by the
// timers and levels, not the elapsed ticks.
func TestIdleGap(t *testing.T) {
	tests := []struct {
		name   string
		tick   time.Duration
		timers []time.Duration
		gap    time.Duration
		fires  int
	}{
		{"empty wheel, 100 years of 1ns ticks", time.Nanosecond, nil, 100 * 365 * 24 * time.Hour, 0},
		{"one hour of 1ms ticks", time.Millisecond, []time.Duration{time.Minute, 59 * time.Minute, 2 * time.Hour}, time.Hour, 2},
		{"10 days of 1us ticks, all levels", time.Microsecond,
			[]time.Duration{time.Microsecond, 100 * time.Microsecond, 10 * time.Millisecond, time.Second, time.Minute, time.Hour, 240 * time.Hour, 2400 * time.Hour}, 240 * time.Hour, 7},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w := New[int](tc.tick, start, nil)
			timers := make([]Timer[int], len(tc.timers))
			for i, d := range tc.timers {
				w.ArmAfter(&timers[i], i, d)
			}
			if n := w.Advance(start.Add(tc.gap)); n != tc.fires {
				t.Fatalf("Advance fired %d, want %d", n, tc.fires)
			}
			// Each timer is moved at most once per level, and clamped
			// timers once per top-level revolution, which a gap of at
			// most one revolution bounds.
			if bound := uint64(len(tc.timers) * (numLevels + 1)); w.visits > bound {
				t.Fatalf("emptied %d slots, want <= %d", w.visits, bound)
			}
			mustCheck(t, w)
		})
	}
}

// TestFarFuture checks deadlines beyond the top level's span, which are
// clamped to the top level and re-inserted when reached: they never fire
// early, and the time.Time range limits do not overflow the tick counter.
func TestFarFuture(t *testing.T) {
	span := time.Duration(1) << (slotBits * numLevels) // in 1ns ticks
	tests := []struct {
		name string
		at   time.Time
		want time.Time // first time it fires
	}{
		{"just beyond the top level", start.Add(span + 12345), start.Add(span + 12345)},
		{"16 spans", start.Add(16*span + 1), start.Add(16*span + 1)},
		{"end of the tick range", start.Add(math.MaxInt64), start.Add(math.MaxInt64)},
		{"beyond time.Duration", start.AddDate(1000, 0, 0), start.Add(math.MaxInt64)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			fired := 0
			w := New(time.Nanosecond, start, func(int) { fired++ })
			var tm Timer[int]
			w.Arm(&tm, 0, tc.at)
			r := rand.New(rand.NewPCG(3, 3))
			for i := 0; i < 200 && w.Now().Before(tc.want.Add(-1)); i++ {
				gap := tc.want.Add(-1).Sub(w.Now())
				next := w.Now().Add(max(1, gap/time.Duration(2+r.IntN(8))))
				if i == 199 {
					next = tc.want.Add(-1)
				}
				if n := w.Advance(next); n != 0 {
					t.Fatalf("fired early at %v", next.Sub(start))
				}
				mustCheck(t, w)
			}
			if n := w.Advance(tc.want); n != 1 || fired != 1 {
				t.Fatalf("did not fire at %v", tc.want.Sub(start))
			}
			if w.Len() != 0 {
				t.Fatalf("Len() = %d after firing", w.Len())
			}
		})
	}
}

// TestLargeTicks runs the wheel near the end of its tick range: the tick
// counter is a uint64 of ticks since New, and time.Time.Sub saturates, so
// it cannot wrap; this pins that timers still work up there.
func TestLargeTicks(t *testing.T) {
	tests := []struct {
		name string
		tick time.Duration
		base time.Duration
	}{
		{"1ns at 2^62", time.Nanosecond, 1 << 62},
		{"1ns near the end", time.Nanosecond, math.MaxInt64 - 1<<40},
		{"1h tick at 290 years", time.Hour, 290 * 365 * 24 * time.Hour},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var got []int
			w := New(tc.tick, start, func(i int) { got = append(got, i) })
			w.Advance(start.Add(tc.base))
			offs := []time.Duration{70 * tc.tick, tc.tick, 5000 * tc.tick, 64 * tc.tick}
			timers := make([]Timer[int], len(offs))
			for i, d := range offs {
				w.ArmAfter(&timers[i], i, d)
			}
			mustCheck(t, w)
			if n := w.Advance(start.Add(tc.base + 64*tc.tick)); n != 2 || !slices.Equal(got, []int{1, 3}) {
				t.Fatalf("fired %v, want [1 3]", got)
			}
			if n := w.Advance(start.Add(tc.base + 5000*tc.tick)); n != 2 || !slices.Equal(got, []int{1, 3, 0, 2}) {
				t.Fatalf("fired %v, want [1 3 0 2]", got)
			}
			mustCheck(t, w)
		})
	}
}

var errBoom = errors.New("boom")

// TestPanickingCallback checks that a panic in the expire function leaves
// the wheel consistent, and the timers it did not reach fire at the next
// Advance, first.
func TestPanickingCallback(t *testing.T) {
	var got []int
	w := New(time.Second, start, func(i int) {
		got = append(got, i)
		if i == 1 {
			panic(errBoom)
		}
	})
	timers := make([]Timer[int], 5)
	for i := range timers {
		w.ArmAfter(&timers[i], i, time.Duration(i+1)*time.Second)
	}
	func() {
		defer func() {
			if r := recover(); r != errBoom {
				t.Fatalf("recovered %v", r)
			}
		}()
		w.Advance(start.Add(3 * time.Second))
	}()
	mustCheck(t, w)
	if n := w.Advance(start.Add(4 * time.Second)); n != 2 || !slices.Equal(got, []int{0, 1, 2, 3}) {
		t.Fatalf("fired %v (%d in the second Advance)", got, n)
	}
	mustCheck(t, w)
}

func TestNewDefaults(t *testing.T) {
	w := New[int](0, start, nil)
	if w.Tick() != DefaultTick {
		t.Errorf("Tick() = %v, want %v", w.Tick(), DefaultTick)
	}
	if !w.Now().Equal(start) || w.Len() != 0 {
		t.Errorf("Now() = %v, Len() = %d", w.Now(), w.Len())
	}
	var tm Timer[int]
	if tm.Armed() {
		t.Error("zero Timer is armed")
	}
	w.ArmAfter(&tm, 1, time.Second)
	if n := w.Advance(start.Add(time.Second)); n != 1 || tm.Armed() {
		t.Errorf("nil expire: Advance = %d, Armed() = %v", n, tm.Armed())
	}
}

func TestZeroAlloc(t *testing.T) {
	type conn struct {
		timer Timer[*conn]
		n     int
	}
	w := New(time.Millisecond, start, func(c *conn) { c.n++ })
	conns := make([]conn, 1000)
	for i := range conns {
		w.ArmAfter(&conns[i].timer, &conns[i], time.Duration(i)*time.Second)
	}
	i := 0
	now := start
	tests := []struct {
		name string
		f    func()
	}{
		{"Arm", func() { c := &conns[i%len(conns)]; i++; w.Arm(&c.timer, c, now.Add(time.Minute)) }},
		{"ArmAfter", func() { c := &conns[i%len(conns)]; i++; w.ArmAfter(&c.timer, c, time.Hour) }},
		{"Cancel and Arm", func() { c := &conns[i%len(conns)]; i++; w.Cancel(&c.timer); w.ArmAfter(&c.timer, c, time.Second) }},
		{"Advance", func() {
			now = now.Add(100 * time.Millisecond)
			for j := range 10 {
				c := &conns[(i+j)%len(conns)]
				w.ArmAfter(&c.timer, c, time.Duration(j)*time.Millisecond)
			}
			i += 10
			w.Advance(now)
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if a := testing.AllocsPerRun(1000, tc.f); a != 0 {
				t.Errorf("%v allocations per run", a)
			}
		})
	}
	mustCheck(t, w)
}

func TestTimerSize(t *testing.T) {
	if s := unsafe.Sizeof(Timer[*int]{}); s > 40 {
		t.Errorf("Timer[*T] is %d bytes, want <= 40", s)
	}
}
