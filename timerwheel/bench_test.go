package timerwheel_test

import (
	"container/heap"
	"sync/atomic"
	"testing"
	"time"

	"github.com/krill-xmpp/krill/timerwheel"
)

// The benchmarks compare the wheel with the runtime's timers
// (time.AfterFunc) and with a binary heap, at three population sizes. The
// populations are armed once per sub-benchmark, before b.Loop starts timing.

var benchSizes = []struct {
	name string
	n    int
}{{"1k", 1_000}, {"100k", 100_000}, {"1M", 1_000_000}}

const benchTick = time.Millisecond

// benchDeadline spreads deadlines between 30 s and 90 s, like pre-auth and
// idle deadlines, so the wheel uses several levels.
func benchDeadline(i int) time.Duration {
	return 30*time.Second + time.Duration(i*7919%60_000)*time.Millisecond
}

type benchConn struct {
	timer timerwheel.Timer[*benchConn]
	fired int
}

// heapItem and timerHeap are the container/heap priority queue the wheel is
// compared with.
type heapItem struct {
	when  int64
	index int // in the heap; -1 when not queued
}

type timerHeap []*heapItem

func (h timerHeap) Len() int           { return len(h) }
func (h timerHeap) Less(i, j int) bool { return h[i].when < h[j].when }
func (h timerHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index, h[j].index = i, j
}
func (h *timerHeap) Push(x any) {
	it := x.(*heapItem)
	it.index = len(*h)
	*h = append(*h, it)
}
func (h *timerHeap) Pop() any {
	old := *h
	it := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	it.index = -1
	return it
}

func newWheelPopulation(n int) (*timerwheel.Wheel[*benchConn], []benchConn) {
	w := timerwheel.New(benchTick, time.Now(), func(c *benchConn) { c.fired++ })
	conns := make([]benchConn, n)
	for i := range conns {
		w.ArmAfter(&conns[i].timer, &conns[i], benchDeadline(i))
	}
	return w, conns
}

func newAfterFuncPopulation(n int) ([]*time.Timer, func()) {
	f := func() {}
	ts := make([]*time.Timer, n)
	for i := range ts {
		ts[i] = time.AfterFunc(benchDeadline(i), f)
	}
	return ts, f
}

func stopAll(ts []*time.Timer) {
	for _, t := range ts {
		t.Stop()
	}
}

func newHeapPopulation(n int) (*timerHeap, []heapItem) {
	items := make([]heapItem, n)
	h := make(timerHeap, 0, n)
	for i := range items {
		items[i].when = int64(benchDeadline(i))
		h = append(h, &items[i])
		items[i].index = i
	}
	heap.Init(&h)
	return &h, items
}

// BenchmarkArmCancel measures the common case: a connection closes before
// its deadline (cancel) and another one arrives (arm), with n armed.
func BenchmarkArmCancel(b *testing.B) {
	for _, size := range benchSizes {
		b.Run("wheel/"+size.name, func(b *testing.B) {
			w, conns := newWheelPopulation(size.n)
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				c := &conns[i%len(conns)]
				w.Cancel(&c.timer)
				w.ArmAfter(&c.timer, c, benchDeadline(i))
				i++
			}
		})
		b.Run("afterfunc/"+size.name, func(b *testing.B) {
			ts, f := newAfterFuncPopulation(size.n)
			defer stopAll(ts)
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				j := i % len(ts)
				ts[j].Stop()
				ts[j] = time.AfterFunc(benchDeadline(i), f)
				i++
			}
		})
		b.Run("heap/"+size.name, func(b *testing.B) {
			h, items := newHeapPopulation(size.n)
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				it := &items[i%len(items)]
				heap.Remove(h, it.index)
				it.when = int64(benchDeadline(i))
				heap.Push(h, it)
				i++
			}
		})
	}
}

// BenchmarkRearm measures moving an armed deadline (time.Timer.Reset), as
// an idle timer does on every stanza, with n armed.
func BenchmarkRearm(b *testing.B) {
	for _, size := range benchSizes {
		b.Run("wheel/"+size.name, func(b *testing.B) {
			w, conns := newWheelPopulation(size.n)
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				c := &conns[i%len(conns)]
				w.ArmAfter(&c.timer, c, benchDeadline(i+1))
				i++
			}
		})
		b.Run("afterfunc/"+size.name, func(b *testing.B) {
			ts, _ := newAfterFuncPopulation(size.n)
			defer stopAll(ts)
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				ts[i%len(ts)].Reset(benchDeadline(i + 1))
				i++
			}
		})
		b.Run("heap/"+size.name, func(b *testing.B) {
			h, items := newHeapPopulation(size.n)
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				it := &items[i%len(items)]
				it.when = int64(benchDeadline(i + 1))
				heap.Fix(h, it.index)
				i++
			}
		})
	}
}

// expireWindow is the span, in ticks, over which BenchmarkExpire spreads
// its deadlines.
const expireWindow = 1000

// BenchmarkExpire measures arming n timers spread over one second and
// firing them all, advancing one tick (1 ms) at a time; one op is the whole
// batch, and ns/timer divides it by n. The runtime's timers fire in real
// time: their figure includes up to 1 ms of waiting and a goroutine per
// timer, which is what time.AfterFunc costs.
func BenchmarkExpire(b *testing.B) {
	for _, size := range benchSizes {
		b.Run("wheel/"+size.name, func(b *testing.B) {
			w, conns := newWheelPopulation(size.n)
			for i := range conns {
				w.Cancel(&conns[i].timer)
			}
			now := w.Now()
			b.ReportAllocs()
			for b.Loop() {
				for i := range conns {
					w.ArmAfter(&conns[i].timer, &conns[i], time.Duration(1+i%expireWindow)*benchTick)
				}
				fired := 0
				for range expireWindow {
					now = now.Add(benchTick)
					fired += w.Advance(now)
				}
				if fired != len(conns) {
					b.Fatalf("fired %d of %d", fired, len(conns))
				}
			}
			reportPerTimer(b, size.n)
		})
		b.Run("afterfunc/"+size.name, func(b *testing.B) {
			b.ReportAllocs()
			var fired atomic.Int64
			done := make(chan struct{}, 1)
			target := int64(size.n)
			f := func() {
				if fired.Add(1) == target {
					done <- struct{}{}
				}
			}
			for b.Loop() {
				fired.Store(0)
				for i := range size.n {
					time.AfterFunc(time.Duration(i%expireWindow)*time.Microsecond, f)
				}
				<-done
			}
			reportPerTimer(b, size.n)
		})
		b.Run("heap/"+size.name, func(b *testing.B) {
			items := make([]heapItem, size.n)
			h := make(timerHeap, 0, size.n)
			var now int64
			b.ReportAllocs()
			for b.Loop() {
				for i := range items {
					items[i].when = now + int64(1+i%expireWindow)
					heap.Push(&h, &items[i])
				}
				fired := 0
				for range expireWindow {
					now++
					for len(h) > 0 && h[0].when <= now {
						heap.Pop(&h)
						fired++
					}
				}
				if fired != len(items) {
					b.Fatalf("fired %d of %d", fired, len(items))
				}
			}
			reportPerTimer(b, size.n)
		})
	}
}

func reportPerTimer(b *testing.B, n int) {
	if b.N > 0 {
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(n), "ns/timer")
	}
}

// BenchmarkAdvanceIdle measures an Advance by one tick that fires nothing,
// with n timers armed for later: the cost of a tick on a quiet event loop.
// It uses a 1 ns tick so that b.Loop never reaches the first deadline.
func BenchmarkAdvanceIdle(b *testing.B) {
	for _, size := range benchSizes {
		b.Run("wheel/"+size.name, func(b *testing.B) {
			w := timerwheel.New(time.Nanosecond, time.Now(), func(*benchConn) { b.Fatal("a timer fired") })
			conns := make([]benchConn, size.n)
			for i := range conns {
				w.ArmAfter(&conns[i].timer, &conns[i], benchDeadline(i))
			}
			now := w.Now()
			b.ReportAllocs()
			for b.Loop() {
				now = now.Add(1)
				w.Advance(now)
			}
		})
	}
}
