package upload

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"
)

// Meta describes a stored file.
type Meta struct {
	ID      string    `json:"id"`   // the slot's random id (hex)
	Name    string    `json:"name"` // the file name the client asked for
	Owner   string    `json:"owner"`
	Type    string    `json:"type"` // Content-Type served on GET
	Size    int64     `json:"size"`
	Created time.Time `json:"created"`
}

// Store keeps uploaded files. Every method may block (disk or network
// I/O) and runs on the transfer pool, never on an event loop. The disk
// store is the one implementation; an S3-compatible one can take its
// place.
type Store interface {
	// Create claims id for one upload: it fails with ErrExists when id
	// was claimed before (the slot was used), so that a slot is PUT once.
	Create(id string) (File, error)
	// Open returns a complete file's metadata and contents.
	Open(id string) (Meta, io.ReadCloser, error)
	// Delete removes a file, complete or not.
	Delete(id string) error
	// Walk calls fn for every complete file, and for every claimed id
	// that never completed with its claim's time in Meta.Created and an
	// empty Owner, so that the caller can remove abandoned claims.
	Walk(fn func(Meta)) error
}

// File is an upload in progress.
type File interface {
	io.Writer
	// Commit makes the file complete, with its metadata.
	Commit(m Meta) error
	// Abort removes the partial file and frees its id for another PUT.
	Abort() error
}

// Errors of a Store.
var (
	// ErrExists means the id was claimed before: the slot was used.
	ErrExists = errors.New("upload: slot already used")
	// ErrNotFound means there is no complete file of that id.
	ErrNotFound = errors.New("upload: no such file")
)

// Disk stores files in a directory: <dir>/<id>/data and, once complete,
// <dir>/<id>/meta.json. The directory of id is the claim: Mkdir fails for
// a used id.
type Disk struct {
	Dir string
}

var _ Store = Disk{}

// validID reports whether id is one of ours: lowercase hex, so that it is
// safe as a path element.
func validID(id string) bool {
	if len(id) != 2*idBytes {
		return false
	}
	for i := 0; i < len(id); i++ {
		if c := id[i]; !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// Create implements Store.
func (d Disk) Create(id string) (File, error) {
	if !validID(id) {
		return nil, ErrNotFound
	}
	dir := filepath.Join(d.Dir, id)
	if err := os.Mkdir(dir, 0o700); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return nil, ErrExists
		}
		return nil, fmt.Errorf("upload: claim %s: %w", id, err)
	}
	f, err := os.OpenFile(filepath.Join(dir, "data"), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("upload: create %s: %w", id, err)
	}
	return &diskFile{f: f, dir: dir}, nil
}

type diskFile struct {
	f   *os.File
	dir string
}

func (f *diskFile) Write(p []byte) (int, error) { return f.f.Write(p) }

func (f *diskFile) Commit(m Meta) error {
	if err := f.f.Close(); err != nil {
		_ = os.RemoveAll(f.dir)
		return fmt.Errorf("upload: close %s: %w", m.ID, err)
	}
	b, _ := json.Marshal(m)
	tmp := filepath.Join(f.dir, "meta.tmp")
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		_ = os.RemoveAll(f.dir)
		return fmt.Errorf("upload: meta %s: %w", m.ID, err)
	}
	// The rename is what makes the file visible: a crash before it
	// leaves a claim that Walk reports as abandoned.
	if err := os.Rename(tmp, filepath.Join(f.dir, "meta.json")); err != nil {
		_ = os.RemoveAll(f.dir)
		return fmt.Errorf("upload: commit %s: %w", m.ID, err)
	}
	return nil
}

func (f *diskFile) Abort() error {
	_ = f.f.Close()
	return os.RemoveAll(f.dir)
}

// Open implements Store.
func (d Disk) Open(id string) (Meta, io.ReadCloser, error) {
	if !validID(id) {
		return Meta{}, nil, ErrNotFound
	}
	dir := filepath.Join(d.Dir, id)
	m, err := readMeta(dir)
	if err != nil {
		return Meta{}, nil, err
	}
	f, err := os.Open(filepath.Join(dir, "data"))
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return Meta{}, nil, ErrNotFound
		}
		return Meta{}, nil, fmt.Errorf("upload: open %s: %w", id, err)
	}
	return m, f, nil
}

func readMeta(dir string) (Meta, error) {
	var m Meta
	b, err := os.ReadFile(filepath.Join(dir, "meta.json"))
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return m, ErrNotFound
		}
		return m, fmt.Errorf("upload: read meta: %w", err)
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return m, fmt.Errorf("upload: meta in %s: %w", dir, err)
	}
	return m, nil
}

// Delete implements Store.
func (d Disk) Delete(id string) error {
	if !validID(id) {
		return ErrNotFound
	}
	return os.RemoveAll(filepath.Join(d.Dir, id))
}

// Walk implements Store.
func (d Disk) Walk(fn func(Meta)) error {
	ents, err := os.ReadDir(d.Dir)
	if err != nil {
		return fmt.Errorf("upload: list %s: %w", d.Dir, err)
	}
	for _, e := range ents {
		if !e.IsDir() || !validID(e.Name()) {
			continue
		}
		dir := filepath.Join(d.Dir, e.Name())
		m, err := readMeta(dir)
		if errors.Is(err, ErrNotFound) {
			info, err := e.Info()
			if err != nil {
				continue
			}
			m = Meta{ID: e.Name(), Created: info.ModTime()}
		} else if err != nil {
			continue
		}
		fn(m)
	}
	return nil
}
