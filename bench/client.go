package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// ErrNotReady means a client process's output was not a ready line.
var ErrNotReady = errors.New("bench: client not ready")

// readyPrefix starts the one line a client process prints on stdout once
// all its connections have reached their stage.
const readyPrefix = "ready "

// ServeClient runs Drive as a client process in a benchmark, driven by a
// line protocol on its standard streams. It waits for a first line on stdin
// (any text) before it dials, so that a parent can start its clients and
// then take its baseline with them already running. When every connection
// has reached the stage it prints the ready line "ready N" on stdout, then
// holds the connections until stdin reaches end of file (the parent closed
// it or died) or ctx ends, and returns nil. End of file before the first
// line ends it at once with context.Canceled. It returns Drive's error if the connections could
// not be opened.
//
// ServeClient leaves one goroutine blocked reading stdin if it returns
// before stdin ends; a client process exits right after it returns.
func ServeClient(ctx context.Context, o Options, stdin io.Reader, stdout io.Writer) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	start := make(chan struct{})
	go func() {
		defer cancel()
		r := bufio.NewReader(stdin)
		if _, err := r.ReadString('\n'); err != nil {
			return
		}
		close(start)
		// Only the end of stdin is the signal to finish.
		_, _ = io.Copy(io.Discard, r)
	}()
	select {
	case <-start:
	case <-ctx.Done():
		return ctx.Err()
	}
	var werr error
	o.Ready = func(n int) {
		_, werr = fmt.Fprintf(stdout, "%s%d\n", readyPrefix, n)
		if werr != nil {
			cancel()
		}
	}
	if err := Drive(ctx, o); err != nil {
		return err
	}
	if werr != nil {
		return fmt.Errorf("bench: writing the ready line: %w", werr)
	}
	return nil
}

// ParseReady returns the connection count of a ready line printed by
// ServeClient.
func ParseReady(line string) (int, error) {
	rest, ok := strings.CutPrefix(strings.TrimSpace(line), readyPrefix)
	if !ok {
		return 0, fmt.Errorf("%w: got %q", ErrNotReady, clip([]byte(line), 200))
	}
	n, err := strconv.Atoi(rest)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("%w: bad count in %q", ErrNotReady, line)
	}
	return n, nil
}
