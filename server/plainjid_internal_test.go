package server

import (
	"testing"

	"mellium.im/xmpp/jid"
)

// TestPlainJID: the allocation-free path agrees with jid.Parse on every
// JID it accepts, and leaves the rest to it.
func TestPlainJID(t *testing.T) {
	cases := []struct {
		in    string
		plain bool
	}{
		{"bob@localhost", true},
		{"bob@localhost/phone", true},
		{"localhost", true},
		{"localhost/res", true},
		{"a.b-c_d+e@example.org/Res.1!~", true},
		{"Bob@localhost", false},
		{"bob@LocalHost", false},
		{"bob@localhost/with space", false},
		{"b\u00f6b@localhost", false},
		{"bob@xn--bcher-kva.example", false},
		{"@localhost", false},
		{"bob@", false},
		{"bob@localhost/", false},
		{"bob@.localhost", false},
		{"bob@local..host", false},
		{"b<b@localhost", false},
		{"bob@[::1]", false},
		{"bob@local_host", false},
	}
	for _, tc := range cases {
		l, d, r, ok := plainJID(tc.in)
		if ok != tc.plain {
			t.Errorf("plainJID(%q) ok = %v, want %v", tc.in, ok, tc.plain)
			continue
		}
		if !ok {
			continue
		}
		j, err := jid.Parse(tc.in)
		if err != nil {
			t.Errorf("plainJID accepted %q, which jid.Parse refuses: %v", tc.in, err)
			continue
		}
		if l != j.Localpart() || d != j.Domainpart() || r != j.Resourcepart() {
			t.Errorf("plainJID(%q) = %q %q %q; jid.Parse: %q %q %q", tc.in, l, d, r, j.Localpart(), j.Domainpart(), j.Resourcepart())
		}
	}
	if n := testing.AllocsPerRun(100, func() { plainJID("bob@localhost/phone") }); n != 0 {
		t.Errorf("plainJID allocates %v times", n)
	}
}

// FuzzPlainJID: whatever plainJID accepts, jid.Parse accepts with the
// same parts.
func FuzzPlainJID(f *testing.F) {
	for _, s := range []string{"bob@localhost/phone", "localhost", "a!b@c-d.e/f~g", "x@y/z@w"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		l, d, r, ok := plainJID(s)
		if !ok {
			return
		}
		j, err := jid.Parse(s)
		if err != nil {
			t.Fatalf("plainJID accepted %q, which jid.Parse refuses: %v", s, err)
		}
		if l != j.Localpart() || d != j.Domainpart() || r != j.Resourcepart() {
			t.Fatalf("plainJID(%q) = %q %q %q; jid.Parse: %q %q %q", s, l, d, r, j.Localpart(), j.Domainpart(), j.Resourcepart())
		}
	})
}
