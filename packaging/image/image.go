package main

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"maps"
	"sort"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/krill-xmpp/krill/config"
)

// The container's fixed layout. The Dockerfile at the repository root
// states the same facts; image_test.go checks that the two agree.
const (
	// uid and gid of the non-root user "krill" (distroless's "nonroot" id,
	// so both images run as the same numeric user).
	uid = 65532
	gid = 65532

	binPath  = "/krill"
	dataDir  = "/var/lib/krill"
	certsDir = "/etc/krill/tls"
)

// containerEnv is the configuration the container runs with unless the
// operator overrides it: listeners on every interface (the container's
// network namespace is the boundary), data in the volume, JSON logs for a
// collector. build checks that it loads: an unknown KRILL_ variable is a
// fatal configuration error, and the image must start.
var containerEnv = [][2]string{
	{"KRILL_C2S_LISTEN", "0.0.0.0:5222"},
	{"KRILL_C2S_DIRECT_TLS_LISTEN", "0.0.0.0:5223"},
	{"KRILL_S2S_LISTEN", "0.0.0.0:5269"},
	{"KRILL_ADMIN_LISTEN", "0.0.0.0:5280"},
	{"KRILL_DATA_DIR", dataDir},
	{"KRILL_LOG_FORMAT", "json"},
}

// exposedPorts are c2s STARTTLS, c2s direct TLS (XEP-0368), server-to-server
// (federation) and the admin listener (health and metrics).
var exposedPorts = []string{"5222/tcp", "5223/tcp", "5269/tcp", "5280/tcp"}

// volumes hold what must outlive the container: the database and the
// generated development certificate, and the operator's certificates.
var volumes = []string{dataDir, certsDir}

// healthcheck asks the binary itself, which needs no shell or curl in the
// image: `krill health` GETs /healthz on the admin listener and exits 0 or 1.
var healthcheck = &v1.HealthConfig{
	Test:        []string{"CMD", binPath, "health"},
	Interval:    30 * time.Second,
	Timeout:     5 * time.Second,
	StartPeriod: 10 * time.Second,
	Retries:     3,
}

// staticLabels are the annotations (OCI image spec, annotations.md) every
// build carries; version, revision and created come from the build.
var staticLabels = map[string]string{
	"org.opencontainers.image.title":       "krill",
	"org.opencontainers.image.description": "Krill XMPP server, built for connection density",
	"org.opencontainers.image.source":      "https://github.com/krill-xmpp/krill",
	"org.opencontainers.image.licenses":    "Apache-2.0",
}

// imageEnv returns containerEnv as NAME=value.
func imageEnv() []string {
	env := make([]string, 0, len(containerEnv))
	for _, kv := range containerEnv {
		env = append(env, kv[0]+"="+kv[1])
	}
	return env
}

// spec describes one image build.
type spec struct {
	// binary is the static krill executable.
	binary []byte
	// arch is its GOARCH (from checkStatic).
	arch string
	// created stamps the files and the image config; the zero time means
	// the Unix epoch, so that one binary always gives one image digest.
	created time.Time
	// labels are added to the org.opencontainers.image.* defaults.
	labels map[string]string
}

// build assembles the image: an empty base and one layer holding the
// binary, the user database and the two volume directories.
func build(s spec) (v1.Image, error) {
	if _, err := config.Load("", imageEnv(), nil); err != nil {
		return nil, fmt.Errorf("image: the container's environment does not load: %w", err)
	}
	created := s.created
	if created.IsZero() {
		created = time.Unix(0, 0)
	}
	created = created.UTC()
	layerTar, err := rootfs(s.binary, created)
	if err != nil {
		return nil, err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar)), nil
	}, tarball.WithMediaType(types.OCILayer), tarball.WithCompressedCaching)
	if err != nil {
		return nil, fmt.Errorf("image: layer: %w", err)
	}
	base := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	base = mutate.ConfigMediaType(base, types.OCIConfigJSON)
	img, err := mutate.Append(base, mutate.Addendum{
		Layer:     layer,
		MediaType: types.OCILayer,
		History: v1.History{
			Created:   v1.Time{Time: created},
			CreatedBy: "go run ./packaging/image",
			Comment:   "static krill binary, passwd entry for uid 65532, volume directories",
		},
	})
	if err != nil {
		return nil, fmt.Errorf("image: append layer: %w", err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("image: config: %w", err)
	}
	cf = cf.DeepCopy()
	cf.Created = v1.Time{Time: created}
	cf.OS = "linux"
	cf.Architecture = s.arch
	cf.Config = containerConfig(s.labels, s.created)
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		return nil, fmt.Errorf("image: config: %w", err)
	}
	return img, nil
}

// containerConfig is the runtime configuration of the image. The created
// label is set only for a real build time, not for the epoch placeholder.
func containerConfig(extra map[string]string, created time.Time) v1.Config {
	labels := maps.Clone(staticLabels)
	if !created.IsZero() {
		labels["org.opencontainers.image.created"] = created.UTC().Format(time.RFC3339)
	}
	for k, v := range extra {
		if v != "" {
			labels[k] = v
		}
	}
	return v1.Config{
		User:         fmt.Sprintf("%d:%d", uid, gid),
		Entrypoint:   []string{binPath},
		Cmd:          []string{"serve"},
		Env:          imageEnv(),
		WorkingDir:   dataDir,
		ExposedPorts: set(exposedPorts),
		Volumes:      set(volumes),
		Labels:       labels,
		StopSignal:   "SIGTERM",
		Healthcheck:  healthcheck,
	}
}

func set(xs []string) map[string]struct{} {
	m := make(map[string]struct{}, len(xs))
	for _, x := range xs {
		m[x] = struct{}{}
	}
	return m
}

// passwd and group name root (so that tools resolving uid 0 work) and the
// non-root user the server runs as. The shell is nologin: the image has
// no shell at all.
var (
	passwd = fmt.Sprintf("root:x:0:0:root:/root:/sbin/nologin\nkrill:x:%d:%d:krill:%s:/sbin/nologin\n", uid, gid, dataDir)
	group  = fmt.Sprintf("root:x:0:\nkrill:x:%d:\n", gid)
)

// entry is one file or directory of the layer.
type entry struct {
	name     string // absolute path in the image
	mode     int64
	uid, gid int
	data     []byte // nil for a directory
}

// rootfs returns the uncompressed layer. Parent directories come first, the
// order and the timestamps are fixed, so the same binary gives the same
// bytes. The binary belongs to root: the server cannot rewrite itself.
func rootfs(binary []byte, mtime time.Time) ([]byte, error) {
	entries := []entry{
		{name: binPath, mode: 0o755, data: binary},
		{name: "/etc/", mode: 0o755},
		{name: "/etc/passwd", mode: 0o644, data: []byte(passwd)},
		{name: "/etc/group", mode: 0o644, data: []byte(group)},
		{name: "/etc/krill/", mode: 0o755},
		{name: certsDir + "/", mode: 0o750, uid: uid, gid: gid},
		{name: "/tmp/", mode: 0o1777},
		{name: "/var/", mode: 0o755},
		{name: "/var/lib/", mode: 0o755},
		{name: dataDir + "/", mode: 0o750, uid: uid, gid: gid},
	}
	sort.SliceStable(entries, func(i, j int) bool { return entries[i].name < entries[j].name })
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := &tar.Header{
			Name:    strings.TrimPrefix(e.name, "/"),
			Mode:    e.mode,
			Uid:     e.uid,
			Gid:     e.gid,
			ModTime: mtime,
			Format:  tar.FormatUSTAR,
		}
		if e.data == nil {
			h.Typeflag = tar.TypeDir
		} else {
			h.Typeflag = tar.TypeReg
			h.Size = int64(len(e.data))
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, fmt.Errorf("image: layer %s: %w", e.name, err)
		}
		if _, err := tw.Write(e.data); err != nil {
			return nil, fmt.Errorf("image: layer %s: %w", e.name, err)
		}
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("image: layer: %w", err)
	}
	return buf.Bytes(), nil
}
