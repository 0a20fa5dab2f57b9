package bench

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestParseProcMemory(t *testing.T) {
	tests := []struct {
		name    string
		fixture string
		parse   func(f *os.File) (ProcMemory, error)
		want    ProcMemory
		err     error
	}{
		{name: "smaps_rollup", fixture: "smaps_rollup.txt", want: ProcMemory{RSS: 1752 << 10, PSS: 630 << 10}},
		{name: "smaps_rollup without Pss", fixture: "smaps_rollup-no-pss.txt", err: ErrNoProcMemory},
		{name: "smaps_rollup with a bad number", fixture: "smaps_rollup-bad.txt", err: ErrNoProcMemory},
		{name: "status", fixture: "status.txt", want: ProcMemory{RSS: 1716 << 10},
			parse: func(f *os.File) (ProcMemory, error) { return parseStatus(f) }},
		{name: "status without VmRSS", fixture: "status-no-rss.txt", err: ErrNoProcMemory,
			parse: func(f *os.File) (ProcMemory, error) { return parseStatus(f) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, err := os.Open(filepath.Join("testdata", tt.fixture))
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			parse := tt.parse
			if parse == nil {
				parse = func(f *os.File) (ProcMemory, error) { return parseSmapsRollup(f) }
			}
			got, err := parse(f)
			if !errors.Is(err, tt.err) || got != tt.want {
				t.Fatalf("got %+v, %v; want %+v, %v", got, err, tt.want, tt.err)
			}
		})
	}
}

func TestParseSockstat(t *testing.T) {
	tests := []struct {
		name    string
		fixture string
		want    uint64
		err     error
	}{
		{name: "sockstat", fixture: "sockstat.txt", want: 424},
		{name: "no TCP line", fixture: "sockstat-no-tcp.txt", err: ErrNoProcMemory},
		{name: "bad mem", fixture: "sockstat-bad-mem.txt", err: ErrNoProcMemory},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, err := os.Open(filepath.Join("testdata", tt.fixture))
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			got, err := parseSockstat(f)
			if !errors.Is(err, tt.err) || got != tt.want {
				t.Fatalf("parseSockstat = %d, %v; want %d, %v", got, err, tt.want, tt.err)
			}
		})
	}
}

// TestReadProcMemory reads this process's own figures, which must show
// what it has just made resident.
func TestReadProcMemory(t *testing.T) {
	if _, err := os.Stat("/proc/self/status"); err != nil {
		t.Skip("no /proc")
	}
	before, err := ReadProcMemory(0)
	if err != nil {
		t.Fatal(err)
	}
	const grow = 16 << 20
	b := make([]byte, grow)
	for i := 0; i < len(b); i += 4096 {
		b[i] = 1
	}
	after, err := ReadProcMemory(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if after.RSS < before.RSS+grow/2 {
		t.Errorf("RSS grew from %d to %d after touching %d bytes", before.RSS, after.RSS, grow)
	}
	if after.PSS == 0 || after.PSS > after.RSS {
		t.Errorf("PSS %d, want within (0, RSS %d]", after.PSS, after.RSS)
	}
	if b[0] != 1 {
		t.Fatal("lost the touched memory")
	}
	if _, err := ReadProcMemory(-1); !errors.Is(err, ErrNoProcMemory) {
		t.Errorf("ReadProcMemory(-1) = %v, want %v", err, ErrNoProcMemory)
	}
	if _, err := ReadKernelMemory(); err != nil {
		t.Errorf("ReadKernelMemory: %v", err)
	}
}
