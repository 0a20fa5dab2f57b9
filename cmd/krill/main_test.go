package main

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
)

// krill runs the command in-process with the given stdin.
func krill(t *testing.T, stdin string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var out, errb bytes.Buffer
	code = run(args, strings.NewReader(stdin), &out, &errb)
	return out.String(), errb.String(), code
}

func TestUserCommands(t *testing.T) {
	dir := "--data_dir=" + t.TempDir()
	steps := []struct {
		name     string
		stdin    string
		args     []string
		code     int
		contains string
	}{
		{"add with flag", "", []string{"user", "add", "alice@localhost", "--password", "pw1", dir}, 0, "added alice@localhost"},
		{"add from stdin", "pw2\n", []string{"user", "add", "Bob@localhost", dir}, 0, "added bob@localhost"},
		{"add existing", "", []string{"user", "add", "alice", "--password", "x", dir}, 1, "already exists"},
		{"add other domain", "", []string{"user", "add", "carol@example.org", "--password", "x", dir}, 1, "not in this server's domain"},
		{"add empty password", "\n", []string{"user", "add", "dave", dir}, 1, "must not be empty"},
		{"bulk add", "erin@localhost e1\n# comment\n\nfrank f1\n", []string{"user", "add", dir}, 0, "added 2 accounts"},
		{"bulk add is atomic", "gina g1\nalice a1\n", []string{"user", "add", dir}, 1, "already exists"},
		{"bulk add bad line", "justajid\n", []string{"user", "add", dir}, 1, "line 1"},
		{"list", "", []string{"user", "list", dir}, 0, "alice@localhost\nbob@localhost\nerin@localhost\nfrank@localhost\n"},
		{"passwd", "", []string{"user", "passwd", "alice", "--password", "new", dir}, 0, "changed the password"},
		{"passwd unknown", "", []string{"user", "passwd", "zed", "--password", "new", dir}, 1, "not found"},
		{"remove", "", []string{"user", "remove", "bob@localhost", dir}, 0, "removed bob@localhost"},
		{"remove unknown", "", []string{"user", "remove", "bob@localhost", dir}, 1, "not found"},
		{"list after", "", []string{"user", "list", dir}, 0, "alice@localhost\nerin@localhost\nfrank@localhost\n"},
		{"unknown subcommand", "", []string{"user", "rename", dir}, 1, "unknown command"},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			out, errOut, code := krill(t, s.stdin, s.args...)
			if code != s.code || !strings.Contains(out+errOut, s.contains) {
				t.Fatalf("krill %v: exit %d, stdout %q, stderr %q; want exit %d and %q", s.args, code, out, errOut, s.code, s.contains)
			}
		})
	}
}

func TestBulkAddThousand(t *testing.T) {
	dir := "--data_dir=" + t.TempDir()
	var in strings.Builder
	for i := range 1000 {
		fmt.Fprintf(&in, "user%d@localhost pw%d\n", i, i)
	}
	out, errOut, code := krill(t, in.String(), "user", "add", dir)
	if code != 0 || !strings.Contains(out, "added 1000 accounts") {
		t.Fatalf("exit %d, %q %q", code, out, errOut)
	}
	out, _, _ = krill(t, "", "user", "list", dir)
	if n := strings.Count(out, "\n"); n != 1000 {
		t.Fatalf("list has %d accounts, want 1000", n)
	}
}

func TestConfigCheck(t *testing.T) {
	cases := []struct {
		name     string
		args     []string
		code     int
		contains string
	}{
		{"defaults", []string{"config", "check"}, 0, "configuration OK"},
		{"bad flag value", []string{"config", "check", "--preauth.timeout=-1s"}, 1, "preauth.timeout"},
		{"missing file", []string{"config", "check", "--config", "/nonexistent.toml"}, 1, "nonexistent.toml"},
		{"no command", nil, 2, "usage"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			out, errOut, code := krill(t, "", tc.args...)
			if code != tc.code || !strings.Contains(out+errOut, tc.contains) {
				t.Fatalf("exit %d, %q %q; want %d and %q", code, out, errOut, tc.code, tc.contains)
			}
		})
	}
}
