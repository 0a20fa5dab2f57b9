package bench

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
)

// ErrNoProcMemory means /proc gave no resident-set figure for a process.
var ErrNoProcMemory = errors.New("bench: no memory figures in /proc")

// ProcMemory is what a process holds resident, as an operator sees it.
type ProcMemory struct {
	// RSS is the resident set size in bytes.
	RSS uint64
	// PSS is the proportional set size in bytes: RSS with each shared page
	// divided among the processes that map it. Zero when the kernel has no
	// /proc/PID/smaps_rollup.
	PSS uint64
}

// ReadProcMemory reads the RSS and PSS of process pid, or of the calling
// process when pid is 0, from /proc/PID/smaps_rollup, falling back to
// VmRSS in /proc/PID/status.
func ReadProcMemory(pid int) (ProcMemory, error) {
	dir := "/proc/self"
	if pid != 0 {
		dir = "/proc/" + strconv.Itoa(pid)
	}
	if f, err := os.Open(dir + "/smaps_rollup"); err == nil {
		m, err := parseSmapsRollup(f)
		_ = f.Close()
		if err == nil {
			return m, nil
		}
	}
	f, err := os.Open(dir + "/status")
	if err != nil {
		return ProcMemory{}, fmt.Errorf("%w: %w", ErrNoProcMemory, err)
	}
	defer f.Close()
	return parseStatus(f)
}

// parseSmapsRollup reads the Rss and Pss lines of a smaps_rollup file.
func parseSmapsRollup(r io.Reader) (ProcMemory, error) {
	kb, err := scanKB(r, "Rss:", "Pss:")
	if err != nil {
		return ProcMemory{}, err
	}
	rss, okR := kb["Rss:"]
	pss, okP := kb["Pss:"]
	if !okR || !okP {
		return ProcMemory{}, fmt.Errorf("%w: smaps_rollup without Rss and Pss", ErrNoProcMemory)
	}
	return ProcMemory{RSS: rss << 10, PSS: pss << 10}, nil
}

// parseStatus reads the VmRSS line of a status file.
func parseStatus(r io.Reader) (ProcMemory, error) {
	kb, err := scanKB(r, "VmRSS:")
	if err != nil {
		return ProcMemory{}, err
	}
	rss, ok := kb["VmRSS:"]
	if !ok {
		return ProcMemory{}, fmt.Errorf("%w: status without VmRSS", ErrNoProcMemory)
	}
	return ProcMemory{RSS: rss << 10}, nil
}

// scanKB returns the values of the "Key:   123 kB" lines whose key is one
// of keys; the first occurrence of each key wins.
func scanKB(r io.Reader, keys ...string) (map[string]uint64, error) {
	out := make(map[string]uint64, len(keys))
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 3 || f[2] != "kB" {
			continue
		}
		for _, k := range keys {
			if f[0] != k {
				continue
			}
			if _, dup := out[k]; dup {
				break
			}
			v, err := strconv.ParseUint(f[1], 10, 64)
			if err != nil {
				return nil, fmt.Errorf("%w: bad %s value %q", ErrNoProcMemory, k, f[1])
			}
			out[k] = v
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNoProcMemory, err)
	}
	return out, nil
}

// KernelMemory is system-wide kernel memory that grows with sockets. Both
// figures cover every process on the machine (in this network namespace,
// for SockBuf), so they are only meaningful as deltas on a quiet machine.
type KernelMemory struct {
	// SockBuf is the memory TCP sockets hold for queued data, in bytes
	// ("mem" pages of the TCP line of /proc/net/sockstat). Idle sockets
	// with empty queues hold almost none.
	SockBuf uint64
	// Slab is the kernel's slab memory in bytes (Slab in /proc/meminfo):
	// the socket, file, inode and epoll structures of a connection live
	// there.
	Slab uint64
}

// ReadKernelMemory reads /proc/net/sockstat and /proc/meminfo.
func ReadKernelMemory() (KernelMemory, error) {
	f, err := os.Open("/proc/net/sockstat")
	if err != nil {
		return KernelMemory{}, fmt.Errorf("%w: %w", ErrNoProcMemory, err)
	}
	pages, err := parseSockstat(f)
	_ = f.Close()
	if err != nil {
		return KernelMemory{}, err
	}
	f, err = os.Open("/proc/meminfo")
	if err != nil {
		return KernelMemory{}, fmt.Errorf("%w: %w", ErrNoProcMemory, err)
	}
	defer f.Close()
	kb, err := scanKB(f, "Slab:")
	if err != nil {
		return KernelMemory{}, err
	}
	slab, ok := kb["Slab:"]
	if !ok {
		return KernelMemory{}, fmt.Errorf("%w: meminfo without Slab", ErrNoProcMemory)
	}
	return KernelMemory{SockBuf: pages * uint64(os.Getpagesize()), Slab: slab << 10}, nil
}

// parseSockstat returns the "mem" field, in pages, of the TCP line of
// /proc/net/sockstat: "TCP: inuse 5 orphan 0 tw 2 alloc 7 mem 1".
func parseSockstat(r io.Reader) (uint64, error) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 || f[0] != "TCP:" {
			continue
		}
		for i := 1; i+1 < len(f); i += 2 {
			if f[i] == "mem" {
				v, err := strconv.ParseUint(f[i+1], 10, 64)
				if err != nil {
					return 0, fmt.Errorf("%w: bad sockstat TCP mem %q", ErrNoProcMemory, f[i+1])
				}
				return v, nil
			}
		}
		return 0, fmt.Errorf("%w: sockstat TCP line without mem", ErrNoProcMemory)
	}
	if err := sc.Err(); err != nil {
		return 0, fmt.Errorf("%w: %w", ErrNoProcMemory, err)
	}
	return 0, fmt.Errorf("%w: sockstat without a TCP line", ErrNoProcMemory)
}
