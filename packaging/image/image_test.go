package main

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"debug/elf"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// fakeELF returns a minimal little-endian ELF64 executable header for
// machine with one program header of each given type: enough for
// debug/elf, not for a kernel.
func fakeELF(t *testing.T, machine elf.Machine, progs ...elf.ProgType) []byte {
	t.Helper()
	var buf bytes.Buffer
	h := elf.Header64{
		Type:      uint16(elf.ET_EXEC),
		Machine:   uint16(machine),
		Version:   uint32(elf.EV_CURRENT),
		Phoff:     64,
		Ehsize:    64,
		Phentsize: 56,
		Phnum:     uint16(len(progs)),
		Shentsize: 64,
	}
	copy(h.Ident[:], elf.ELFMAG)
	h.Ident[elf.EI_CLASS] = byte(elf.ELFCLASS64)
	h.Ident[elf.EI_DATA] = byte(elf.ELFDATA2LSB)
	h.Ident[elf.EI_VERSION] = byte(elf.EV_CURRENT)
	if err := binary.Write(&buf, binary.LittleEndian, h); err != nil {
		t.Fatal(err)
	}
	for _, p := range progs {
		if err := binary.Write(&buf, binary.LittleEndian, elf.Prog64{Type: uint32(p)}); err != nil {
			t.Fatal(err)
		}
	}
	return buf.Bytes()
}

func TestCheckStatic(t *testing.T) {
	notELF, err := os.ReadFile(filepath.Join("testdata", "not-elf.txt"))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		data     []byte
		wantArch string
		wantErr  error
	}{
		{"static amd64", fakeELF(t, elf.EM_X86_64, elf.PT_LOAD, elf.PT_NOTE), "amd64", nil},
		{"static arm64", fakeELF(t, elf.EM_AARCH64, elf.PT_LOAD), "arm64", nil},
		{"static riscv64", fakeELF(t, elf.EM_RISCV, elf.PT_LOAD), "riscv64", nil},
		{"program interpreter", fakeELF(t, elf.EM_X86_64, elf.PT_PHDR, elf.PT_INTERP, elf.PT_LOAD), "", errDynamic},
		{"unknown machine", fakeELF(t, elf.EM_SPARCV9, elf.PT_LOAD), "", errArch},
		{"text file", notELF, "", errNotELF},
		{"empty", nil, "", errNotELF},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			arch, err := checkStatic(bytes.NewReader(tt.data))
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("checkStatic: error %v, want %v", err, tt.wantErr)
			}
			if arch != tt.wantArch {
				t.Errorf("arch %q, want %q", arch, tt.wantArch)
			}
		})
	}
}

func TestSourceDateEpoch(t *testing.T) {
	tests := []struct {
		in      string
		want    time.Time
		wantErr bool
	}{
		{"", time.Time{}, false},
		{"0", time.Unix(0, 0).UTC(), false},
		{"1764000000", time.Unix(1764000000, 0).UTC(), false},
		{"-1", time.Time{}, true},
		{"yesterday", time.Time{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := sourceDateEpoch(tt.in)
			if (err != nil) != tt.wantErr || !got.Equal(tt.want) {
				t.Fatalf("sourceDateEpoch(%q) = %v, %v; want %v, error %v", tt.in, got, err, tt.want, tt.wantErr)
			}
		})
	}
}

// readArchive reads an archive written by writeArchive back in both of its
// forms, checks that they name the same image, and returns it.
func readArchive(t *testing.T, path, ref string) v1.Image {
	t.Helper()
	dir := t.TempDir()
	untar(t, path, dir)
	idx, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		t.Fatalf("reading the OCI layout: %v", err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(im.Manifests) != 1 {
		t.Fatalf("index.json lists %d manifests, want 1", len(im.Manifests))
	}
	desc := im.Manifests[0]
	if got := desc.Annotations[refNameAnnotation]; got != ref {
		t.Errorf("index.json %s = %q, want %q", refNameAnnotation, got, ref)
	}
	img, err := idx.Image(desc.Digest)
	if err != nil {
		t.Fatal(err)
	}

	// The docker-save manifest.json must point at the same config and layers.
	docker, err := tarball.ImageFromPath(path, nil)
	if err != nil {
		t.Fatalf("reading manifest.json: %v", err)
	}
	for _, f := range []func(v1.Image) (any, error){
		func(i v1.Image) (any, error) { return i.ConfigName() },
		func(i v1.Image) (any, error) {
			ls, err := i.Layers()
			if err != nil {
				return nil, err
			}
			var ds []v1.Hash
			for _, l := range ls {
				d, err := l.Digest()
				if err != nil {
					return nil, err
				}
				ds = append(ds, d)
			}
			return ds, nil
		},
	} {
		a, errA := f(img)
		b, errB := f(docker)
		if errA != nil || errB != nil || !reflect.DeepEqual(a, b) {
			t.Errorf("OCI layout and manifest.json disagree: %v (%v) vs %v (%v)", a, errA, b, errB)
		}
	}
	return img
}

// untar extracts the regular files and directories of the tar at path into dir.
func untar(t *testing.T, path, dir string) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		if !filepath.IsLocal(h.Name) {
			t.Fatalf("archive entry %q leaves the directory", h.Name)
		}
		p := filepath.Join(dir, h.Name)
		switch h.Typeflag {
		case tar.TypeDir:
			err = os.MkdirAll(p, 0o755)
		case tar.TypeReg:
			var b []byte
			if b, err = io.ReadAll(tr); err == nil {
				err = os.WriteFile(p, b, 0o644)
			}
		default:
			t.Fatalf("archive entry %q has type %c", h.Name, h.Typeflag)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
}

// fsEntry is a file of the image's flattened filesystem.
type fsEntry struct {
	hdr  *tar.Header
	data []byte
}

// imageFS flattens the image's layers into a map by clean path ("krill", "etc").
func imageFS(t *testing.T, img v1.Image) map[string]fsEntry {
	t.Helper()
	rc := mutate.Extract(img)
	defer rc.Close()
	tr := tar.NewReader(rc)
	files := make(map[string]fsEntry)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return files
		}
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		files[h.Name] = fsEntry{h, b}
	}
}

// checkImage checks the runtime configuration and the filesystem of img,
// which packages binary, and returns the filesystem.
func checkImage(t *testing.T, img v1.Image, binary []byte, arch string) map[string]fsEntry {
	t.Helper()
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	c := cf.Config
	configTests := []struct {
		name      string
		got, want any
	}{
		{"os", cf.OS, "linux"},
		{"architecture", cf.Architecture, arch},
		{"user", c.User, "65532:65532"},
		{"entrypoint", c.Entrypoint, []string{"/krill"}},
		{"cmd", c.Cmd, []string{"serve"}},
		{"working dir", c.WorkingDir, "/var/lib/krill"},
		{"exposed ports", c.ExposedPorts, map[string]struct{}{"5222/tcp": {}, "5223/tcp": {}, "5269/tcp": {}, "5280/tcp": {}}},
		{"volumes", c.Volumes, map[string]struct{}{"/var/lib/krill": {}, "/etc/krill/tls": {}}},
		{"env", c.Env, imageEnv()},
		{"healthcheck", c.Healthcheck, healthcheck},
		{"stop signal", c.StopSignal, "SIGTERM"},
		{"title label", c.Labels["org.opencontainers.image.title"], "krill"},
		{"version label", c.Labels["org.opencontainers.image.version"], "v9.9.9"},
	}
	for _, tt := range configTests {
		t.Run("config/"+tt.name, func(t *testing.T) {
			if !reflect.DeepEqual(tt.got, tt.want) {
				t.Errorf("%s = %#v, want %#v", tt.name, tt.got, tt.want)
			}
		})
	}
	for _, want := range []string{"KRILL_C2S_LISTEN=0.0.0.0:5222", "KRILL_C2S_DIRECT_TLS_LISTEN=0.0.0.0:5223",
		"KRILL_ADMIN_LISTEN=0.0.0.0:5280", "KRILL_DATA_DIR=/var/lib/krill", "KRILL_LOG_FORMAT=json"} {
		if !slices.Contains(c.Env, want) {
			t.Errorf("env lacks %s: %v", want, c.Env)
		}
	}

	files := imageFS(t, img)
	fileTests := []struct {
		name     string
		typ      byte
		mode     int64
		uid, gid int
	}{
		{"krill", tar.TypeReg, 0o755, 0, 0},
		{"etc/passwd", tar.TypeReg, 0o644, 0, 0},
		{"etc/group", tar.TypeReg, 0o644, 0, 0},
		{"etc/krill/tls", tar.TypeDir, 0o750, 65532, 65532},
		{"var/lib/krill", tar.TypeDir, 0o750, 65532, 65532},
		{"tmp", tar.TypeDir, 0o1777, 0, 0},
	}
	for _, tt := range fileTests {
		t.Run("file/"+tt.name, func(t *testing.T) {
			e, ok := files[tt.name]
			if !ok {
				t.Fatalf("missing from the image")
			}
			h := e.hdr
			if h.Typeflag != tt.typ || h.Mode != tt.mode || h.Uid != tt.uid || h.Gid != tt.gid {
				t.Errorf("type %c mode %o owner %d:%d, want %c %o %d:%d",
					h.Typeflag, h.Mode, h.Uid, h.Gid, tt.typ, tt.mode, tt.uid, tt.gid)
			}
		})
	}
	if len(files) != len(fileTests)+4 { // + etc, etc/krill, var, var/lib
		names := make([]string, 0, len(files))
		for n := range files {
			names = append(names, n)
		}
		slices.Sort(names)
		t.Errorf("image holds %d entries, want %d: %v", len(files), len(fileTests)+4, names)
	}
	if !bytes.Equal(files["krill"].data, binary) {
		t.Error("/krill differs from the packaged binary")
	}
	if !strings.Contains(string(files["etc/passwd"].data), "\nkrill:x:65532:65532:") {
		t.Errorf("/etc/passwd lacks the krill user:\n%s", files["etc/passwd"].data)
	}
	if !strings.Contains(string(files["etc/group"].data), "\nkrill:x:65532:") {
		t.Errorf("/etc/group lacks the krill group:\n%s", files["etc/group"].data)
	}
	return files
}

// TestBuild builds an image around a fake static binary, writes the
// archive, reads it back and checks it; fast, it runs in -short mode.
func TestBuild(t *testing.T) {
	binary := fakeELF(t, elf.EM_AARCH64, elf.PT_LOAD)
	bin := filepath.Join(t.TempDir(), "krill")
	if err := os.WriteFile(bin, binary, 0o755); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "sub", "krill-image.tar")
	labels := map[string]string{"org.opencontainers.image.version": "v9.9.9"}
	img, err := makeImage(bin, "krill:test", out, time.Time{}, labels)
	if err != nil {
		t.Fatal(err)
	}
	back := readArchive(t, out, "krill:test")
	want, _ := img.Digest()
	if got, err := back.Digest(); err != nil || got != want {
		t.Fatalf("archive holds %v (%v), built %v", got, err, want)
	}
	checkImage(t, back, binary, "arm64")

	t.Run("reproducible", func(t *testing.T) {
		out2 := filepath.Join(t.TempDir(), "again.tar")
		if _, err := makeImage(bin, "krill:test", out2, time.Time{}, labels); err != nil {
			t.Fatal(err)
		}
		a, _ := os.ReadFile(out)
		b, _ := os.ReadFile(out2)
		if !bytes.Equal(a, b) {
			t.Error("two builds of one binary gave different archives")
		}
		later, err := build(spec{binary: binary, arch: "arm64", created: time.Unix(1764000000, 0), labels: labels})
		if err != nil {
			t.Fatal(err)
		}
		if d, _ := later.Digest(); d == want {
			t.Error("SOURCE_DATE_EPOCH did not change the image")
		}
	})

	t.Run("environment must load", func(t *testing.T) {
		saved := containerEnv
		t.Cleanup(func() { containerEnv = saved })
		containerEnv = append(slices.Clone(saved), [2]string{"KRILL_C2S_LISTN", "0.0.0.0:5222"})
		if _, err := build(spec{binary: binary, arch: "arm64"}); err == nil || !strings.Contains(err.Error(), "KRILL_C2S_LISTN") {
			t.Fatalf("build with a misspelt variable: %v, want an error naming it", err)
		}
	})

	t.Run("dynamic binary refused", func(t *testing.T) {
		dyn := filepath.Join(t.TempDir(), "krill")
		if err := os.WriteFile(dyn, fakeELF(t, elf.EM_X86_64, elf.PT_INTERP), 0o755); err != nil {
			t.Fatal(err)
		}
		out := filepath.Join(t.TempDir(), "dyn.tar")
		if _, err := makeImage(dyn, "krill:test", out, time.Time{}, nil); !errors.Is(err, errDynamic) {
			t.Fatalf("makeImage: %v, want %v", err, errDynamic)
		}
		if _, err := os.Stat(out); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("an archive was written for a dynamic binary: %v", err)
		}
	})
}

// TestImageStarts is what `make image` must show: it builds the real
// binary and the image, reads the archive back, checks that the image's
// /krill is a static executable, and runs it with the image's environment
// (listeners moved to 127.0.0.1 ephemeral ports, data in a temporary
// directory) until it listens, answers its health check and stops on
// SIGTERM.
func TestImageStarts(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	if runtime.GOOS != "linux" {
		t.Skip("runs the linux binary of the image")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "krill")
	if err := buildBinary(t.Context(), bin, runtime.GOARCH); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "krill-image.tar")
	if _, err := makeImage(bin, "krill:latest", out, time.Time{}, map[string]string{"org.opencontainers.image.version": "v9.9.9"}); err != nil {
		t.Fatal(err)
	}
	binary, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	img := readArchive(t, out, "krill:latest")
	files := checkImage(t, img, binary, runtime.GOARCH)

	// Run /krill as extracted from the image, not the build output.
	exe := filepath.Join(dir, "image-krill")
	if err := os.WriteFile(exe, files["krill"].data, 0o755); err != nil {
		t.Fatal(err)
	}
	arch, err := checkStatic(bytes.NewReader(files["krill"].data))
	if err != nil || arch != runtime.GOARCH {
		t.Fatalf("/krill in the image: %v, arch %q", err, arch)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(dir, "data")
	if err := os.Mkdir(data, 0o750); err != nil {
		t.Fatal(err)
	}
	// The container's environment and nothing else, as a runtime would
	// give it, with only the addresses and the data directory moved.
	var env []string
	listeners := 0
	for _, kv := range cf.Config.Env {
		name, _, _ := strings.Cut(kv, "=")
		switch {
		case strings.HasSuffix(name, "_LISTEN"):
			kv = name + "=" + freePort(t)
			listeners++
		case name == "KRILL_DATA_DIR":
			kv = name + "=" + data
		}
		env = append(env, kv)
	}
	cmd := exec.Command(exe, slices.Concat(cf.Config.Entrypoint[1:], cf.Config.Cmd)...)
	cmd.Env = env
	cmd.Dir = data
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	lines := make(chan string, 64)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	var log strings.Builder
	deadline := time.After(30 * time.Second)
	for strings.Count(log.String(), `"msg":"listening"`) < listeners {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("krill exited before listening:\n%s", log.String())
			}
			log.WriteString(l + "\n")
		case <-deadline:
			t.Fatalf("no %d JSON listening lines in 30s:\n%s", listeners, log.String())
		}
	}

	if hc := cf.Config.Healthcheck; hc == nil {
		t.Error("the image has no health check")
	} else {
		if len(hc.Test) < 2 || hc.Test[0] != "CMD" || hc.Test[1] != binPath {
			t.Fatalf("health check %v does not run %s", hc.Test, binPath)
		}
		ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
		defer cancel()
		check := exec.CommandContext(ctx, exe, hc.Test[2:]...)
		check.Env = env
		if b, err := check.CombinedOutput(); err != nil {
			t.Errorf("health check %v failed: %v\n%s", hc.Test, err, b)
		}
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	// Drain the log so the process never blocks on a full pipe, then wait.
	go func() {
		for range lines {
		}
	}()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("krill did not stop on SIGTERM within 20s")
	}
}

func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}
