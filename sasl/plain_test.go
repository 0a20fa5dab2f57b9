package sasl

import (
	"errors"
	"testing"
)

func TestPlain(t *testing.T) {
	creds := credsFor(t)
	only := func(h Hash) *Credentials {
		var c Credentials
		*c.For(h) = *creds.For(h)
		return &c
	}
	cases := []struct {
		name    string
		msg     string
		creds   *Credentials
		user    string
		authzid string
		startEr error
		want    error
	}{
		{name: "right password", msg: "\x00juliet\x00" + testPassword, creds: creds, user: "juliet"},
		{name: "authzid", msg: "juliet@example.net\x00juliet\x00" + testPassword, creds: creds, user: "juliet", authzid: "juliet@example.net"},
		{name: "SHA-512 only", msg: "\x00juliet\x00" + testPassword, creds: only(SHA512), user: "juliet"},
		{name: "SHA-1 only", msg: "\x00juliet\x00" + testPassword, creds: only(SHA1), user: "juliet"},
		{name: "wrong password", msg: "\x00juliet\x00r0m30", creds: creds, user: "juliet", want: ErrNotAuthorized},
		{name: "password with prefix", msg: "\x00juliet\x00" + testPassword + "x", creds: creds, user: "juliet", want: ErrNotAuthorized},
		{name: "unknown user", msg: "\x00nobody\x00" + testPassword, user: "nobody", want: ErrNotAuthorized},
		{name: "no credentials stored", msg: "\x00juliet\x00" + testPassword, creds: &Credentials{}, user: "juliet", want: ErrNotAuthorized},
		{name: "empty", msg: "", startEr: ErrMalformed},
		{name: "one separator", msg: "juliet\x00pw", startEr: ErrMalformed},
		{name: "three separators", msg: "\x00juliet\x00pw\x00", startEr: ErrMalformed},
		{name: "empty authcid", msg: "\x00\x00pw", startEr: ErrMalformed},
		{name: "empty password", msg: "\x00juliet\x00", startEr: ErrMalformed},
		{name: "invalid UTF-8", msg: "\x00jul\xc3iet\x00pw", startEr: ErrMalformed},
		{name: "too long", msg: "\x00juliet\x00" + string(make([]byte, maxMessage)), startEr: ErrMalformed},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s, err := NewServer(Options{Mechanism: Plain})
			if err != nil || s.Mechanism() != Plain {
				t.Fatalf("NewServer: %v", err)
			}
			user, authzid, err := s.Start([]byte(c.msg))
			if !errors.Is(err, c.startEr) {
				t.Fatalf("Start = %v, want %v", err, c.startEr)
			}
			if err != nil {
				if CheckedCredential(err) {
					t.Errorf("CheckedCredential(%v) = true for a malformed message", err)
				}
				return
			}
			if user != c.user || authzid != c.authzid {
				t.Errorf("Start = %q, %q; want %q, %q", user, authzid, c.user, c.authzid)
			}
			data, done, err := s.Respond(c.creds)
			if !errors.Is(err, c.want) || (c.want == nil) != done || data != nil {
				t.Fatalf("Respond = %q, %v, %v; want nil, %v, %v", data, done, err, c.want == nil, c.want)
			}
			if got := CheckedCredential(err); got != (c.want != nil) {
				t.Errorf("CheckedCredential(%v) = %v after the password was compared", err, got)
			}
		})
	}
}
