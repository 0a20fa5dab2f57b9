package main

import (
	"bufio"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// goMem is what a Go server's Prometheus Go collector reports of its heap
// and stacks (runtime.MemStats as of the scrape; nothing is collected
// first).
type goMem struct {
	HeapInuse, StackInuse, HeapAlloc float64
}

// readGoMem scrapes a Prometheus text endpoint, such as Krill's admin
// listener's /metrics, for go_memstats_heap_inuse_bytes,
// go_memstats_stack_inuse_bytes and go_memstats_heap_alloc_bytes.
func readGoMem(endpoint string) (goMem, error) {
	u, err := url.Parse(endpoint)
	if err != nil {
		return goMem{}, err
	}
	if err := checkLoopback(u.Host); err != nil {
		return goMem{}, err
	}
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(endpoint)
	if err != nil {
		return goMem{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return goMem{}, fmt.Errorf("krill-bench: %s: %s", endpoint, resp.Status)
	}
	var m goMem
	found := 0
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		name, val, ok := strings.Cut(sc.Text(), " ")
		if !ok {
			continue
		}
		var dst *float64
		switch name {
		case "go_memstats_heap_inuse_bytes":
			dst = &m.HeapInuse
		case "go_memstats_stack_inuse_bytes":
			dst = &m.StackInuse
		case "go_memstats_heap_alloc_bytes":
			dst = &m.HeapAlloc
		default:
			continue
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(val), 64)
		if err != nil {
			return goMem{}, fmt.Errorf("krill-bench: %s: bad %s value %q", endpoint, name, val)
		}
		*dst = v
		found++
	}
	if err := sc.Err(); err != nil {
		return goMem{}, err
	}
	if found < 3 {
		return goMem{}, fmt.Errorf("krill-bench: %s: no go_memstats heap and stack figures", endpoint)
	}
	return m, nil
}
