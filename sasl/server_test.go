package sasl

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
)

func TestNewServer(t *testing.T) {
	cases := []struct {
		opts Options
		want error
	}{
		{Options{Mechanism: Plain}, nil},
		{Options{Mechanism: ScramSHA1}, nil},
		{Options{Mechanism: ScramSHA256}, nil},
		{Options{Mechanism: ScramSHA512}, nil},
		{Options{Mechanism: ScramSHA1Plus, Binding: fakeBinding}, nil},
		{Options{Mechanism: ScramSHA256Plus, Binding: fakeBinding}, nil},
		{Options{Mechanism: ScramSHA512Plus, Binding: fakeBinding}, nil},
		{Options{Mechanism: ScramSHA256Plus}, ErrInvalidMechanism},
		{Options{Mechanism: ""}, ErrInvalidMechanism},
		{Options{Mechanism: "scram-sha-256"}, ErrInvalidMechanism},
		{Options{Mechanism: "SCRAM-SHA-384"}, ErrInvalidMechanism},
		{Options{Mechanism: "DIGEST-MD5"}, ErrInvalidMechanism},
	}
	for _, c := range cases {
		t.Run(fmt.Sprintf("%s binding=%v", c.opts.Mechanism, c.opts.Binding != nil), func(t *testing.T) {
			s, err := NewServer(c.opts)
			if !errors.Is(err, c.want) {
				t.Fatalf("err = %v, want %v", err, c.want)
			}
			if err == nil && s.Mechanism() != c.opts.Mechanism {
				t.Errorf("Mechanism() = %q", s.Mechanism())
			}
		})
	}
}

func TestMechanisms(t *testing.T) {
	for _, plus := range []bool{false, true} {
		t.Run(fmt.Sprint("plus=", plus), func(t *testing.T) {
			names := Mechanisms(plus)
			if names[len(names)-1] != Plain {
				t.Errorf("PLAIN is not last: %v", names)
			}
			for _, n := range names {
				opts := Options{Mechanism: n}
				if strings.HasSuffix(n, "-PLUS") {
					if !plus {
						t.Errorf("%s listed without plus", n)
					}
					opts.Binding = fakeBinding
				}
				if _, err := NewServer(opts); err != nil {
					t.Errorf("listed %s but NewServer: %v", n, err)
				}
			}
			want := 4
			if plus {
				want = 7
			}
			if len(names) != want {
				t.Errorf("%d mechanisms, want %d", len(names), want)
			}
			names[0] = "changed"
			if slices.Contains(Mechanisms(plus), "changed") {
				t.Error("Mechanisms returns a shared slice")
			}
		})
	}
}

func TestCondition(t *testing.T) {
	cases := []struct {
		err     error
		want    string
		checked bool // a credential was compared
	}{
		{nil, "", false},
		{ErrMalformed, CondMalformedRequest, false},
		{fmt.Errorf("%w: detail", ErrMalformed), CondMalformedRequest, false},
		{ErrIncorrectEncoding, CondIncorrectEncoding, false},
		{ErrNotAuthorized, CondNotAuthorized, true},
		{fmt.Errorf("%w: wrapped", ErrNotAuthorized), CondNotAuthorized, true},
		{ErrChannelBinding, CondNotAuthorized, false},
		{ErrDowngrade, CondNotAuthorized, false},
		{ErrInvalidMechanism, CondInvalidMechanism, false},
		{ErrInvalidAuthzid, CondInvalidAuthzid, false},
		{ErrMandatoryExtension, CondMalformedRequest, false},
		{ErrBindingType, CondMalformedRequest, false},
		{ErrBindingFlag, CondMalformedRequest, false},
		{ErrState, CondMalformedRequest, false},
		{ErrAborted, CondAborted, false},
		{ErrMechanismTooWeak, CondMechanismTooWeak, false},
		{ErrCredentialsExpired, CondCredentialsExpired, false},
		{ErrAccountDisabled, CondAccountDisabled, false},
		{ErrEncryptionRequired, CondEncryptionRequired, false},
		{ErrInvalidCredential, CondTemporaryAuthFailure, false},
		{errors.New("storage: connection refused"), CondTemporaryAuthFailure, false},
	}
	for _, c := range cases {
		t.Run(fmt.Sprint(c.err), func(t *testing.T) {
			if got := Condition(c.err); got != c.want {
				t.Fatalf("Condition = %q, want %q", got, c.want)
			}
			if got := CheckedCredential(c.err); got != c.checked {
				t.Fatalf("CheckedCredential = %v, want %v", got, c.checked)
			}
		})
	}
}

// TestUnknownUserLooksReal checks that the server-first message for an
// unknown account has the shape of a real one and a salt that is stable per
// name, so repeated probes cannot tell the two apart.
func TestUnknownUserLooksReal(t *testing.T) {
	firstFor := func(t *testing.T, user string, creds *Credentials) (salt, iter string) {
		s, _ := NewServer(Options{Mechanism: ScramSHA256})
		if _, _, err := s.Start([]byte("n,,n=" + user + ",r=abc")); err != nil {
			t.Fatal(err)
		}
		first, _, err := s.Respond(creds)
		if err != nil {
			t.Fatal(err)
		}
		parts := strings.Split(string(first), ",")
		if len(parts) != 3 {
			t.Fatalf("server-first %q", first)
		}
		return parts[1], parts[2]
	}
	realSalt, realIter := firstFor(t, testUser, credsFor(t))
	s1, i1 := firstFor(t, "nobody", nil)
	s2, _ := firstFor(t, "nobody", nil)
	s3, _ := firstFor(t, "someone", nil)
	if s1 != s2 {
		t.Error("fake salt changes between attempts")
	}
	if s1 == s3 {
		t.Error("fake salt is the same for two names")
	}
	if len(s1) != len(realSalt) || i1 != realIter {
		t.Errorf("fake %s %s vs real %s %s", s1, i1, realSalt, realIter)
	}
}

// TestServerNonce checks the real nonce source: printable, no ',', at least
// 18 random bytes, different each time.
func TestServerNonce(t *testing.T) {
	a, b := serverNonce(), serverNonce()
	if a == b {
		t.Error("two nonces are equal")
	}
	if len(a) < 24 || !validNonce([]byte(a)) {
		t.Errorf("nonce %q", a)
	}
}
