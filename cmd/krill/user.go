package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"runtime"
	"strings"
	"sync"

	"mellium.im/xmpp/jid"

	"github.com/krill-xmpp/krill/config"
	"github.com/krill-xmpp/krill/sasl"
	"github.com/krill-xmpp/krill/storage"
)

// userCmd implements "krill user add|passwd|remove|list".
func userCmd(args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return errors.New("user: want add, passwd, remove or list")
	}
	sub, rest := args[0], args[1:]
	var who string
	if len(rest) > 0 && !strings.HasPrefix(rest[0], "-") {
		who, rest = rest[0], rest[1:]
	}
	fs := flag.NewFlagSet("user "+sub, flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "", "TOML configuration file")
	password := fs.String("password", "", "the password (read from stdin when omitted)")
	config.RegisterFlags(fs)
	if err := fs.Parse(rest); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("user %s: unexpected argument %q", sub, fs.Arg(0))
	}
	cfg, err := config.Load(*path, environ(), fs)
	if err != nil {
		return err
	}
	store, err := openStore(cfg)
	if err != nil {
		return err
	}
	defer store.Close()
	ctx := context.Background()
	passwordSet := false
	fs.Visit(func(f *flag.Flag) { passwordSet = passwordSet || f.Name == "password" })

	switch sub {
	case "add":
		if who == "" {
			n, err := bulkAdd(ctx, store, cfg.Domain, stdin)
			if err != nil {
				return err
			}
			fmt.Fprintf(stdout, "added %d accounts\n", n)
			return nil
		}
		local, creds, err := newCredentials(who, cfg.Domain, *password, passwordSet, stdin)
		if err != nil {
			return err
		}
		if err := store.AddAccount(ctx, local, creds); err != nil {
			return fmt.Errorf("user add %s: %w", who, err)
		}
		fmt.Fprintf(stdout, "added %s@%s\n", local, cfg.Domain)
	case "passwd":
		local, creds, err := newCredentials(who, cfg.Domain, *password, passwordSet, stdin)
		if err != nil {
			return err
		}
		if err := store.SetCredentials(ctx, local, creds); err != nil {
			return fmt.Errorf("user passwd %s: %w", who, err)
		}
		fmt.Fprintf(stdout, "changed the password of %s@%s\n", local, cfg.Domain)
	case "remove":
		local, err := localpart(who, cfg.Domain)
		if err != nil {
			return err
		}
		if err := store.RemoveAccount(ctx, local); err != nil {
			return fmt.Errorf("user remove %s: %w", who, err)
		}
		fmt.Fprintf(stdout, "removed %s@%s\n", local, cfg.Domain)
	case "list":
		names, err := store.ListAccounts(ctx)
		if err != nil {
			return err
		}
		for _, n := range names {
			fmt.Fprintf(stdout, "%s@%s\n", n, cfg.Domain)
		}
	default:
		return fmt.Errorf("user: unknown command %q (want add, passwd, remove or list)", sub)
	}
	return nil
}

// newCredentials resolves who to a localpart and derives the SCRAM
// credentials of the password from the flag or stdin.
func newCredentials(who, domain, flagValue string, flagSet bool, stdin io.Reader) (string, sasl.Credentials, error) {
	local, err := localpart(who, domain)
	if err != nil {
		return "", sasl.Credentials{}, err
	}
	pw, err := passwordArg(flagValue, flagSet, stdin)
	if err != nil {
		return "", sasl.Credentials{}, err
	}
	creds, err := sasl.NewCredentials(pw, sasl.DefaultIterations)
	return local, creds, err
}

// localpart accepts "alice" or "alice@domain" and returns the normalised
// localpart; another domain is an error.
func localpart(who, domain string) (string, error) {
	if who == "" {
		return "", errors.New("user: a JID is required")
	}
	local, dom, ok := strings.Cut(who, "@")
	if !ok {
		dom = domain
	}
	j, err := jid.New(local, dom, "")
	if err != nil {
		return "", fmt.Errorf("user: %q is not a valid JID: %w", who, err)
	}
	if j.Domainpart() != domain {
		return "", fmt.Errorf("user: %q is not in this server's domain %s", who, domain)
	}
	if j.Localpart() == "" {
		return "", fmt.Errorf("user: %q has no localpart", who)
	}
	return j.Localpart(), nil
}

// passwordArg returns the --password value, or the first line of stdin.
func passwordArg(flagValue string, set bool, stdin io.Reader) (string, error) {
	if set {
		if flagValue == "" {
			return "", errors.New("user: the password must not be empty")
		}
		return flagValue, nil
	}
	line, err := bufio.NewReader(stdin).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return "", fmt.Errorf("user: reading the password: %w", err)
	}
	line = strings.TrimRight(line, "\r\n")
	if line == "" {
		return "", errors.New("user: the password must not be empty")
	}
	return line, nil
}

// bulkAdd reads "jid password" lines and adds all accounts in one
// transaction. Key derivation (PBKDF2 for three hashes) dominates, so it
// runs on every CPU.
func bulkAdd(ctx context.Context, store storage.Accounts, domain string, stdin io.Reader) (int, error) {
	type line struct {
		no       int
		local    string
		password string
	}
	var lines []line
	sc := bufio.NewScanner(stdin)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for no := 1; sc.Scan(); no++ {
		text := strings.TrimSpace(sc.Text())
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		who, pw, ok := strings.Cut(text, " ")
		pw = strings.TrimSpace(pw)
		if !ok || pw == "" {
			return 0, fmt.Errorf("user add: stdin line %d: want \"jid password\"", no)
		}
		local, err := localpart(who, domain)
		if err != nil {
			return 0, fmt.Errorf("user add: stdin line %d: %w", no, err)
		}
		lines = append(lines, line{no, local, pw})
	}
	if err := sc.Err(); err != nil {
		return 0, fmt.Errorf("user add: reading stdin: %w", err)
	}
	accounts := make([]storage.NewAccount, len(lines))
	errs := make([]error, len(lines))
	var wg sync.WaitGroup
	next := make(chan int)
	for range runtime.GOMAXPROCS(0) {
		wg.Go(func() {
			for i := range next {
				creds, err := sasl.NewCredentials(lines[i].password, sasl.DefaultIterations)
				accounts[i] = storage.NewAccount{Username: lines[i].local, Credentials: creds}
				errs[i] = err
			}
		})
	}
	for i := range lines {
		next <- i
	}
	close(next)
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			return 0, fmt.Errorf("user add: stdin line %d: %w", lines[i].no, err)
		}
	}
	if err := store.AddAccounts(ctx, accounts); err != nil {
		return 0, fmt.Errorf("user add: %w", err)
	}
	return len(accounts), nil
}
