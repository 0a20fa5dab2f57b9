package storage_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"path/filepath"

	"github.com/krill-xmpp/krill/sasl"
	"github.com/krill-xmpp/krill/storage"
)

func ExampleOpenSQLite() {
	dir, err := os.MkdirTemp("", "krill-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)

	s, err := storage.OpenSQLite(filepath.Join(dir, "accounts.db"))
	if err != nil {
		log.Fatal(err)
	}
	defer s.Close()

	ctx := context.Background()
	c, err := sasl.NewCredentials("pencil", 4096) // PBKDF2: on a worker
	if err != nil {
		log.Fatal(err)
	}
	if err := s.AddAccount(ctx, "juliet", c); err != nil {
		log.Fatal(err)
	}
	err = s.AddAccount(ctx, "juliet", c)
	fmt.Println(errors.Is(err, storage.ErrExists))

	stored, err := s.Credentials(ctx, "juliet")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(stored.SHA256.Iterations)

	_, err = s.Credentials(ctx, "romeo")
	fmt.Println(err)
	// Output:
	// true
	// 4096
	// storage: account not found: "romeo"
}
