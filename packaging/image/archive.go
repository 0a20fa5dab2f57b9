package main

import (
	"archive/tar"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
)

// refNameAnnotation names the image inside an OCI layout (OCI image spec,
// annotations.md); podman, skopeo and docker use it as the tag on load.
const refNameAnnotation = "org.opencontainers.image.ref.name"

// writeArchive writes img to out as a tar of an OCI image layout
// (oci-layout, index.json, blobs/sha256/...), tagged ref. It also adds the
// manifest.json that `docker save` writes beside the layout, pointing at
// the same blobs, so that both `podman load` / `skopeo copy oci-archive:`
// and older `docker load` read the one file. Entries are sorted and their
// times fixed at mtime. The file appears at out only once complete.
func writeArchive(img v1.Image, ref, out string, mtime time.Time) error {
	dir, err := os.MkdirTemp("", "krill-image-")
	if err != nil {
		return fmt.Errorf("image: %w", err)
	}
	defer os.RemoveAll(dir)
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		return fmt.Errorf("image: oci layout: %w", err)
	}
	if err := p.AppendImage(img, layout.WithAnnotations(map[string]string{refNameAnnotation: ref})); err != nil {
		return fmt.Errorf("image: oci layout: %w", err)
	}
	manifest, err := dockerManifest(img, ref)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "manifest.json"), manifest, 0o644); err != nil {
		return fmt.Errorf("image: %w", err)
	}

	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return fmt.Errorf("image: %w", err)
	}
	tmp := out + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return fmt.Errorf("image: %w", err)
	}
	defer os.Remove(tmp) // after a successful rename it no longer exists
	if err := tarDir(f, dir, mtime); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("image: %w", err)
	}
	if err := os.Rename(tmp, out); err != nil {
		return fmt.Errorf("image: %w", err)
	}
	return nil
}

// dockerManifestEntry is one element of the manifest.json of `docker save`.
type dockerManifestEntry struct {
	Config   string
	RepoTags []string
	Layers   []string
}

// dockerManifest returns a manifest.json naming the layout's blobs.
func dockerManifest(img v1.Image, ref string) ([]byte, error) {
	cfg, err := img.ConfigName()
	if err != nil {
		return nil, fmt.Errorf("image: config digest: %w", err)
	}
	layers, err := img.Layers()
	if err != nil {
		return nil, fmt.Errorf("image: layers: %w", err)
	}
	e := dockerManifestEntry{Config: blobPath(cfg), RepoTags: []string{ref}}
	for _, l := range layers {
		d, err := l.Digest()
		if err != nil {
			return nil, fmt.Errorf("image: layer digest: %w", err)
		}
		e.Layers = append(e.Layers, blobPath(d))
	}
	return json.Marshal([]dockerManifestEntry{e})
}

func blobPath(h v1.Hash) string { return path.Join("blobs", h.Algorithm, h.Hex) }

// tarDir writes the tree under dir to w, in lexical order, with root
// ownership and fixed times, so equal trees give equal archives.
func tarDir(w io.Writer, dir string, mtime time.Time) error {
	tw := tar.NewWriter(w)
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == dir {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		h := &tar.Header{Name: filepath.ToSlash(rel), ModTime: mtime, Format: tar.FormatUSTAR}
		switch {
		case d.IsDir():
			h.Typeflag, h.Name, h.Mode = tar.TypeDir, h.Name+"/", 0o755
		case info.Mode().IsRegular():
			h.Typeflag, h.Mode, h.Size = tar.TypeReg, 0o644, info.Size()
		default:
			return fmt.Errorf("unexpected file %s", rel)
		}
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		if d.IsDir() {
			return nil
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		_, err = io.Copy(tw, f)
		return err
	})
	if err != nil {
		return fmt.Errorf("image: archive: %w", err)
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("image: archive: %w", err)
	}
	return nil
}
