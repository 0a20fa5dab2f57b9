package workpool

import (
	"errors"
	"sync"
	"testing"
)

func TestSubmitRunsJobs(t *testing.T) {
	p := New(2, 16)
	var wg sync.WaitGroup
	var mu sync.Mutex
	sum := 0
	for i := 1; i <= 10; i++ {
		wg.Add(1)
		if err := p.Submit(func() { mu.Lock(); sum += i; mu.Unlock(); wg.Done() }); err != nil {
			t.Fatalf("Submit(%d): %v", i, err)
		}
	}
	wg.Wait()
	p.Close()
	if sum != 55 {
		t.Fatalf("sum = %d, want 55", sum)
	}
}

func TestSubmitFullDoesNotBlock(t *testing.T) {
	p := New(1, 1)
	release := make(chan struct{})
	started := make(chan struct{})
	if err := p.Submit(func() { close(started); <-release }); err != nil {
		t.Fatal(err)
	}
	<-started // the worker is busy; the queue has one free place
	if err := p.Submit(func() {}); err != nil {
		t.Fatalf("second Submit: %v", err)
	}
	if err := p.Submit(func() {}); !errors.Is(err, ErrFull) {
		t.Fatalf("third Submit = %v, want ErrFull", err)
	}
	if q := p.Queued(); q != 1 {
		t.Fatalf("Queued = %d, want 1", q)
	}
	close(release)
	p.Close()
	if err := p.Submit(func() {}); !errors.Is(err, ErrClosed) {
		t.Fatalf("Submit after Close = %v, want ErrClosed", err)
	}
}

func BenchmarkSubmit(b *testing.B) {
	p := New(2, 1024)
	defer p.Close()
	var wg sync.WaitGroup
	b.ReportAllocs()
	for b.Loop() {
		wg.Add(1)
		if p.Submit(wg.Done) != nil {
			wg.Done() // queue full: drain it, as a loop would shed load
			wg.Wait()
		}
	}
	wg.Wait()
}
