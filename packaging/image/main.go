// Command image builds Krill's container image without a container engine
// or a registry: an empty base plus one layer holding the static krill
// binary, a passwd entry for the non-root user (uid 65532), and the data and
// certificate volume directories, written as an OCI image layout in a tar
// file (with a docker-save manifest.json beside it).
//
//	go run ./packaging/image -o bin/krill-image.tar
//	podman load -i bin/krill-image.tar
//	skopeo copy oci-archive:bin/krill-image.tar docker-daemon:krill:latest
//
// Without -bin it builds ./cmd/krill itself, for linux and the host's
// architecture (or -goarch), with CGO_ENABLED=0. A binary that is not static
// is refused: the image has no loader and no libraries. SOURCE_DATE_EPOCH,
// when set, stamps the files and the image; otherwise the Unix epoch does,
// so one binary always gives one image digest.
//
// The Dockerfile at the repository root builds the same image with an
// engine; the test checks that the two agree.
package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

func main() {
	if err := run(os.Args[1:], os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

// run is main without the process.
func run(args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("image", flag.ContinueOnError)
	fs.SetOutput(stderr)
	out := fs.String("o", "bin/krill-image.tar", "output `file` (OCI layout tar)")
	bin := fs.String("bin", "", "static krill `binary` to package (default: build ./cmd/krill)")
	tag := fs.String("tag", "krill:latest", "image `name` recorded in the archive")
	version := fs.String("version", "", "org.opencontainers.image.version label")
	revision := fs.String("revision", "", "org.opencontainers.image.revision label")
	goarch := fs.String("goarch", runtime.GOARCH, "`architecture` to build for (without -bin)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("image: unexpected argument %q", fs.Arg(0))
	}
	created, err := sourceDateEpoch(os.Getenv("SOURCE_DATE_EPOCH"))
	if err != nil {
		return err
	}
	path := *bin
	if path == "" {
		dir, err := os.MkdirTemp("", "krill-build-")
		if err != nil {
			return fmt.Errorf("image: %w", err)
		}
		defer os.RemoveAll(dir)
		path = filepath.Join(dir, "krill")
		if err := buildBinary(context.Background(), path, *goarch); err != nil {
			return err
		}
	}
	img, err := makeImage(path, *tag, *out, created, map[string]string{
		"org.opencontainers.image.version":  *version,
		"org.opencontainers.image.revision": *revision,
	})
	if err != nil {
		return err
	}
	d, err := img.Digest()
	if err != nil {
		return fmt.Errorf("image: %w", err)
	}
	fmt.Fprintf(stderr, "wrote %s: %s %s\n", *out, *tag, d)
	return nil
}

// makeImage packages the binary at path and writes the archive to out.
func makeImage(path, tag, out string, created time.Time, labels map[string]string) (v1.Image, error) {
	binary, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("image: %w", err)
	}
	arch, err := checkStatic(bytes.NewReader(binary))
	if err != nil {
		return nil, fmt.Errorf("%w (%s)", err, path)
	}
	img, err := build(spec{binary: binary, arch: arch, created: created, labels: labels})
	if err != nil {
		return nil, err
	}
	if created.IsZero() {
		created = time.Unix(0, 0)
	}
	if err := writeArchive(img, tag, out, created); err != nil {
		return nil, err
	}
	return img, nil
}

// buildBinary builds ./cmd/krill of the enclosing module into out, static
// and for Linux on goarch whatever the host.
func buildBinary(ctx context.Context, out, goarch string) error {
	mod, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return fmt.Errorf("image: go env GOMOD: %w", err)
	}
	root := filepath.Dir(strings.TrimSpace(string(mod)))
	if root == "." || root == "" || strings.TrimSpace(string(mod)) == os.DevNull {
		return fmt.Errorf("image: not inside the krill module")
	}
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-o", out, "./cmd/krill")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+goarch)
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("image: go build: %w\n%s", err, b)
	}
	return nil
}

// sourceDateEpoch parses SOURCE_DATE_EPOCH (reproducible-builds.org): Unix
// seconds; empty means the zero time.
func sourceDateEpoch(s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 {
		return time.Time{}, fmt.Errorf("image: SOURCE_DATE_EPOCH must be Unix seconds, got %q", s)
	}
	return time.Unix(n, 0).UTC(), nil
}
