package cluster

import (
	"sync/atomic"
	"time"
)

// RouteBuckets are the upper bounds, in seconds, of the routing latency
// histogram: from a stanza's publish on one node to its hand-over to the
// target session's loop on another. Loopback NATS takes tens of
// microseconds; a loaded or distant cluster, milliseconds.
var RouteBuckets = [...]float64{0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5}

// latency is a histogram of durations, lock-free: one counter per bucket
// (the last is +Inf) and the sum in nanoseconds.
type latency struct {
	counts [len(RouteBuckets) + 1]atomic.Uint64
	sumNs  atomic.Int64
}

// observe adds d; a negative d (the clocks of two hosts disagree) counts
// as zero.
func (h *latency) observe(d time.Duration) {
	d = max(d, 0)
	s := d.Seconds()
	i := 0
	for i < len(RouteBuckets) && s > RouteBuckets[i] {
		i++
	}
	h.counts[i].Add(1)
	h.sumNs.Add(int64(d))
}

// Latency is a snapshot of a histogram: Counts[i] stanzas took at most
// RouteBuckets[i] (not cumulative; the last is above every bound).
type Latency struct {
	Counts [len(RouteBuckets) + 1]uint64
	Sum    time.Duration
}

// Count returns the number of observations.
func (l Latency) Count() uint64 {
	var n uint64
	for _, c := range l.Counts {
		n += c
	}
	return n
}

// Quantile returns the upper bound of the bucket holding quantile q (0 to
// 1), the +Inf bucket reported as the largest bound.
func (l Latency) Quantile(q float64) float64 {
	n := l.Count()
	if n == 0 {
		return 0
	}
	want := uint64(q*float64(n) + 0.5)
	var acc uint64
	for i, c := range l.Counts {
		acc += c
		if acc >= want && i < len(RouteBuckets) {
			return RouteBuckets[i]
		}
	}
	return RouteBuckets[len(RouteBuckets)-1]
}

func (h *latency) snapshot() Latency {
	var l Latency
	for i := range h.counts {
		l.Counts[i] = h.counts[i].Load()
	}
	l.Sum = time.Duration(h.sumNs.Load())
	return l
}
