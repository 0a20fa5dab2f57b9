package main

import (
	"syscall"
	"time"
)

func tv(t syscall.Timeval) time.Duration {
	return time.Duration(t.Sec)*time.Second + time.Duration(t.Usec)*time.Microsecond
}

// rusageCPU is the user+system time of a Rusage.
func rusageCPU(ru *syscall.Rusage) time.Duration { return tv(ru.Utime) + tv(ru.Stime) }
