package upload

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/krill-xmpp/krill/config"
)

func TestParseRange(t *testing.T) {
	for _, tc := range []struct {
		h                string
		start, end       int64
		ranged, unsatisf bool
	}{
		{"", 0, 0, false, false},
		{"bytes=0-0", 0, 0, true, false},
		{"bytes=0-99", 0, 99, true, false},
		{"bytes=10-", 10, 99, true, false},
		{"bytes=-10", 90, 99, true, false},
		{"bytes=-1000", 0, 99, true, false},
		{"bytes=50-1000", 50, 99, true, false},
		{"bytes=100-", 0, 0, false, true},
		{"bytes=100-200", 0, 0, false, true},
		{"bytes=-0", 0, 0, false, true},
		{"bytes=5-4", 0, 0, false, false},
		{"bytes=0-1,3-4", 0, 0, false, false},
		{"bytes=a-b", 0, 0, false, false},
		{"items=0-1", 0, 0, false, false},
	} {
		s, e, ok, bad := parseRange(tc.h, 100)
		if s != tc.start || e != tc.end || ok != tc.ranged || bad != tc.unsatisf {
			t.Errorf("parseRange(%q) = %d, %d, %v, %v; want %d, %d, %v, %v", tc.h, s, e, ok, bad, tc.start, tc.end, tc.ranged, tc.unsatisf)
		}
	}
}

// A token's claims are bound to its MAC: changing any of them, or the
// path, is a bad signature, not a different slot.
func TestCheckAuth(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	m := &Module{Config: config.Default(), Now: func() time.Time { return now }, secret: []byte("0123456789abcdef0123456789abcdef")}
	path := Prefix + "00112233445566778899aabbccddeeff/a.txt"
	tok := m.token(path, 5, "text/plain", now.Unix()+60, "alice@example.org")
	parts := strings.Split(strings.TrimPrefix(tok, "Bearer "), ".")
	with := func(i int, v string) string {
		p := append([]string(nil), parts...)
		p[i] = v
		return "Bearer " + strings.Join(p, ".")
	}
	for _, tc := range []struct {
		name, auth, path, ctype string
		size                    int64
		want                    error
	}{
		{"valid", tok, path, "text/plain", 5, nil},
		{"type case", tok, path, "Text/Plain", 5, nil},
		{"other size", tok, path, "text/plain", 6, errSize},
		{"other type", tok, path, "text/html", 5, errType},
		{"other path", tok, Prefix + "00112233445566778899aabbccddeeff/b.txt", "text/plain", 5, errBadAuth},
		{"later expiry", with(0, "1700009999"), path, "text/plain", 5, errBadAuth},
		{"larger size claimed", with(1, "6"), path, "text/plain", 6, errBadAuth},
		{"another owner", with(2, "Ym9iQGV4YW1wbGUub3Jn"), path, "text/plain", 5, errBadAuth},
		{"no scheme", strings.TrimPrefix(tok, "Bearer "), path, "text/plain", 5, errBadAuth},
		{"empty", "", path, "text/plain", 5, errBadAuth},
	} {
		t.Run(tc.name, func(t *testing.T) {
			owner, err := m.checkAuth(tc.auth, tc.path, tc.size, tc.ctype)
			if !errors.Is(err, tc.want) || err == nil && owner != "alice@example.org" {
				t.Fatalf("checkAuth = %q, %v; want %v", owner, err, tc.want)
			}
		})
	}
	now = now.Add(61 * time.Second)
	if _, err := m.checkAuth(tok, path, 5, "text/plain"); !errors.Is(err, errExpired) {
		t.Fatalf("after the slot's life: %v", err)
	}
}

func TestValidFilename(t *testing.T) {
	for name, want := range map[string]bool{
		"a.txt": true, "héllo world.txt": true, "": false, ".": false, "..": false, "a/b": false,
		`a\b`: false, "a\x00b": false, "a\nb": false, strings.Repeat("a", 255): true, strings.Repeat("a", 256): false,
	} {
		if got := validFilename(name); got != want {
			t.Errorf("validFilename(%q) = %v", name, got)
		}
	}
}
