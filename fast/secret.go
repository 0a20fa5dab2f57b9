package fast

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// SecretFileName is the default secret file's name in the data directory
// (config fast.secret_file empty): next to the SQLite database, and in the
// data directory with PostgreSQL too, so that the secret never lives in the
// database it protects.
const SecretFileName = "fast.secret"

// LoadSecret reads the token secret from path, creating it on first start:
// SecretLen random bytes, hex-encoded on one line, mode 0600 in a
// directory created 0700 if missing. It refuses a file that group or others
// may read or write (chmod 600 it), and one that holds fewer than
// SecretLen bytes. Replacing or deleting the file revokes every token.
func LoadSecret(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		if err := create(path); err != nil && !errors.Is(err, fs.ErrExist) {
			return nil, fmt.Errorf("fast: create secret %s: %w", path, err)
		}
		b, err = os.ReadFile(path) // another process may have won the race
	}
	if err != nil {
		return nil, fmt.Errorf("fast: read secret: %w", err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("fast: read secret: %w", err)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("%w: %s has mode %#o: group and others must have no access (chmod 600)", ErrSecret, path, perm)
	}
	secret, err := hex.DecodeString(string(bytes.TrimSpace(b)))
	if err != nil || len(secret) < SecretLen {
		return nil, fmt.Errorf("%w: %s must hold at least %d hex-encoded bytes", ErrSecret, path, SecretLen)
	}
	return secret, nil
}

// create writes a new secret to path, failing with fs.ErrExist if the file
// appeared meanwhile.
func create(path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	var s [SecretLen]byte
	if _, err := rand.Read(s[:]); err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	_, err = f.WriteString(hex.EncodeToString(s[:]) + "\n")
	return errors.Join(err, f.Sync(), f.Close())
}
