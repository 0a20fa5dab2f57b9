package main

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/krill-xmpp/krill/bench"
)

// provisionProsodyCmd writes Prosody account files (internal storage,
// mod_auth_internal_hashed with password_hash = "SHA-256") directly: one
// PBKDF2 for all accounts, which share a salt, instead of one prosodyctl
// process and one PBKDF2 per account. Prosody reads the files at login.
func provisionProsodyCmd(args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("provision-prosody", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("dir", "", "the host's accounts directory, DATA_PATH/localhost/accounts")
	users := fs.String("users", "bench%d", "account pattern: a prefix followed by %d")
	password := fs.String("password", bench.DefaultPassword, "every account's password")
	n := fs.Int("n", 5000, "accounts")
	iter := fs.Int("iterations", 10000, "PBKDF2 iterations (Prosody's default_iteration_count)")
	if err := fs.Parse(args); err != nil {
		return errUsage
	}
	t := target{users: *users}
	prefix, first, err := t.userPattern()
	if err != nil {
		return err
	}
	if *dir == "" || *n < 1 || *n > 1_000_000 {
		return fmt.Errorf("krill-bench: need -dir and 1 <= -n <= 1000000")
	}
	if err := os.MkdirAll(*dir, 0o750); err != nil {
		return err
	}
	const salt = "krill-bench-salt-0001"
	stored, server, err := scramKeys(*password, []byte(salt), *iter)
	if err != nil {
		return err
	}
	body := prosodyAccount(stored, server, salt, *iter)
	for i := range *n {
		name := filepath.Join(*dir, prefix+strconv.Itoa(first+i)+".dat")
		if err := os.WriteFile(name, []byte(body), 0o640); err != nil {
			return err
		}
	}
	fmt.Fprintf(stderr, "krill-bench: wrote %d Prosody accounts to %s\n", *n, *dir)
	return nil
}

// scramKeys derives the SCRAM-SHA-256 StoredKey and ServerKey of a
// password (RFC 5802 section 3, RFC 7677).
func scramKeys(password string, salt []byte, iter int) (stored, server []byte, err error) {
	salted, err := pbkdf2.Key(sha256.New, password, salt, iter, sha256.Size)
	if err != nil {
		return nil, nil, err
	}
	mac := func(key []byte, msg string) []byte {
		h := hmac.New(sha256.New, key)
		h.Write([]byte(msg))
		return h.Sum(nil)
	}
	ck := sha256.Sum256(mac(salted, "Client Key"))
	return ck[:], mac(salted, "Server Key"), nil
}

// prosodyAccount is the text of a Prosody account file as
// mod_auth_internal_hashed writes it.
func prosodyAccount(stored, server []byte, salt string, iter int) string {
	return fmt.Sprintf("return {\n\t[\"iteration_count\"] = %d;\n\t[\"salt\"] = %q;\n\t[\"server_key\"] = %q;\n\t[\"stored_key\"] = %q;\n};\n",
		iter, salt, hex.EncodeToString(server), hex.EncodeToString(stored))
}

// provisionEjabberdCmd registers accounts through ejabberd's mod_http_api
// ("register" command) on a loopback listener, -parallel requests at a
// time: ejabberd derives each account's SCRAM keys itself, in parallel on
// its schedulers, which is far faster than one ejabberdctl process per
// account.
func provisionEjabberdCmd(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("provision-ejabberd", flag.ContinueOnError)
	fs.SetOutput(stderr)
	api := fs.String("api", "http://127.0.0.1:5480/api", "mod_http_api base URL (loopback only)")
	host := fs.String("host", "localhost", "the virtual host")
	users := fs.String("users", "bench%d", "account pattern: a prefix followed by %d")
	password := fs.String("password", bench.DefaultPassword, "every account's password")
	n := fs.Int("n", 5000, "accounts")
	par := fs.Int("parallel", 16, "requests in flight")
	if err := fs.Parse(args); err != nil {
		return errUsage
	}
	u, err := url.Parse(*api)
	if err != nil {
		return err
	}
	if err := checkLoopback(u.Host); err != nil {
		return err
	}
	t := target{users: *users}
	prefix, first, err := t.userPattern()
	if err != nil {
		return err
	}
	if *n < 1 || *n > 1_000_000 || *par < 1 {
		return fmt.Errorf("krill-bench: need 1 <= -n <= 1000000 and -parallel >= 1")
	}
	client := &http.Client{Timeout: 30 * time.Second}
	var (
		next     atomic.Int64
		wg       sync.WaitGroup
		errOnce  sync.Once
		firstErr error
	)
	start := time.Now()
	for range *par {
		wg.Go(func() {
			for i := int(next.Add(1) - 1); i < *n && ctx.Err() == nil; i = int(next.Add(1) - 1) {
				body, _ := json.Marshal(map[string]string{"user": prefix + strconv.Itoa(first+i), "host": *host, "password": *password})
				resp, err := client.Post(strings.TrimRight(*api, "/")+"/register", "application/json", bytes.NewReader(body))
				if err == nil {
					msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
					_ = resp.Body.Close()
					// 409 conflict: the account exists already, as wanted.
					if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusConflict &&
						!bytes.Contains(msg, []byte("already registered")) {
						err = fmt.Errorf("krill-bench: register %d: %s: %s", i, resp.Status, msg)
					}
				}
				if err != nil {
					errOnce.Do(func() { firstErr = err })
					return
				}
			}
		})
	}
	wg.Wait()
	if firstErr != nil {
		return firstErr
	}
	fmt.Fprintf(stderr, "krill-bench: registered %d ejabberd accounts in %.1fs\n", *n, time.Since(start).Seconds())
	return nil
}
