package sasl

import (
	"bytes"
	"errors"
	"fmt"
	"testing"
)

func TestHash(t *testing.T) {
	cases := []struct {
		h    Hash
		name string
		size int
	}{
		{SHA1, "SHA-1", 20},
		{SHA256, "SHA-256", 32},
		{SHA512, "SHA-512", 64},
		{0, "Hash(0)", 0},
		{9, "Hash(9)", 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := c.h.String(); got != c.name {
				t.Errorf("String = %q, want %q", got, c.name)
			}
			if got := c.h.Size(); got != c.size {
				t.Errorf("Size = %d, want %d", got, c.size)
			}
		})
	}
}

func TestNewCredentials(t *testing.T) {
	a := credsFor(t)
	b, err := NewCredentials(testPassword, DefaultIterations)
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range []Hash{SHA1, SHA256, SHA512} {
		t.Run(h.String(), func(t *testing.T) {
			c := a.For(h)
			if err := c.check(h); err != nil {
				t.Fatal(err)
			}
			if len(c.Salt) != saltLen || c.Iterations != DefaultIterations {
				t.Errorf("salt %d bytes, %d iterations", len(c.Salt), c.Iterations)
			}
			if bytes.Equal(c.Salt, b.For(h).Salt) {
				t.Error("two calls drew the same salt")
			}
			// The stored keys are what Derive gives for the stored salt.
			d := Derive(h, testPassword, c.Salt, c.Iterations)
			if !bytes.Equal(d.StoredKey, c.StoredKey) || !bytes.Equal(d.ServerKey, c.ServerKey) {
				t.Error("stored keys differ from Derive")
			}
		})
	}
	if bytes.Equal(a.SHA1.Salt, a.SHA256.Salt[:saltLen]) {
		t.Error("hashes share a salt")
	}

	errCases := []struct {
		name     string
		password string
		iter     int
		want     error
	}{
		{"empty password", "", 1, ErrInvalidPassword},
		{"invalid UTF-8", "pass\xff", 1, ErrInvalidPassword},
		{"negative iterations", "pw", -1, ErrInvalidCredential},
		{"too many iterations", "pw", maxIterations + 1, ErrInvalidCredential},
	}
	for _, c := range errCases {
		t.Run(c.name, func(t *testing.T) {
			if _, err := NewCredentials(c.password, c.iter); !errors.Is(err, c.want) {
				t.Fatalf("err = %v, want %v", err, c.want)
			}
		})
	}
	t.Run("zero iterations means default", func(t *testing.T) {
		c, err := NewCredentials("pw", 0)
		if err != nil || c.SHA256.Iterations != DefaultIterations {
			t.Fatalf("iterations %d, err %v", c.SHA256.Iterations, err)
		}
	})
}

func TestDeriveUnusable(t *testing.T) {
	cases := []struct {
		name string
		h    Hash
		salt []byte
		iter int
	}{
		{"unknown hash", 0, []byte("salt"), 1},
		{"no salt", SHA256, nil, 1},
		{"zero iterations", SHA256, []byte("salt"), 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if d := Derive(c.h, "pw", c.salt, c.iter); !d.IsZero() {
				t.Fatalf("Derive = %+v, want zero", d)
			}
		})
	}
}

func TestCredentialsFor(t *testing.T) {
	var c Credentials
	if c.For(SHA1) != &c.SHA1 || c.For(SHA256) != &c.SHA256 || c.For(SHA512) != &c.SHA512 {
		t.Error("For returns the wrong field")
	}
	if c.For(0) != nil || c.For(4) != nil {
		t.Error("For(unknown) != nil")
	}
}

func TestCredentialText(t *testing.T) {
	for _, v := range loadVectors(t) {
		t.Run(v.Name, func(t *testing.T) {
			h := hashOf(t, v.Mechanism)
			want := fmt.Sprintf("%s$%d:%s$%s:%s", v.Mechanism, v.Iterations, v.Salt, v.StoredKey, v.ServerKey)
			gh, c, err := ParseCredential(want)
			if err != nil || gh != h {
				t.Fatalf("ParseCredential = %v, %v", gh, err)
			}
			if got := c.Text(h); got != want {
				t.Errorf("Text = %q, want %q", got, want)
			}
		})
	}
	creds := credsFor(t)
	for _, h := range []Hash{SHA1, SHA256, SHA512} {
		t.Run("round trip "+h.String(), func(t *testing.T) {
			c := creds.For(h)
			gh, got, err := ParseCredential(c.Text(h))
			if err != nil || gh != h {
				t.Fatalf("ParseCredential = %v, %v", gh, err)
			}
			if !bytes.Equal(got.Salt, c.Salt) || got.Iterations != c.Iterations ||
				!bytes.Equal(got.StoredKey, c.StoredKey) || !bytes.Equal(got.ServerKey, c.ServerKey) {
				t.Errorf("round trip changed the credential")
			}
		})
	}
}

func TestParseCredentialErrors(t *testing.T) {
	const (
		salt   = "QSXCR+Q6sek8bf92"
		stored = "6dlGYMOdZcOPutkcNY8U2g7vK9Y="
		server = "D+CSWLOshSulAsxiupA+qs2/fTE="
	)
	cases := []struct{ name, in string }{
		{"empty", ""},
		{"unknown scheme", "SCRAM-MD5$4096:" + salt + "$" + stored + ":" + server},
		{"lowercase scheme", "scram-sha-1$4096:" + salt + "$" + stored + ":" + server},
		{"no second dollar", "SCRAM-SHA-1$4096:" + salt},
		{"no colon in info", "SCRAM-SHA-1$4096$" + stored + ":" + server},
		{"no colon in value", "SCRAM-SHA-1$4096:" + salt + "$" + stored},
		{"zero iterations", "SCRAM-SHA-1$0:" + salt + "$" + stored + ":" + server},
		{"leading zero", "SCRAM-SHA-1$04096:" + salt + "$" + stored + ":" + server},
		{"signed iterations", "SCRAM-SHA-1$+4096:" + salt + "$" + stored + ":" + server},
		{"huge iterations", "SCRAM-SHA-1$999999999:" + salt + "$" + stored + ":" + server},
		{"empty salt", "SCRAM-SHA-1$4096:$" + stored + ":" + server},
		{"bad base64", "SCRAM-SHA-1$4096:" + salt + "$" + stored[1:] + ":" + server},
		{"key length for other hash", "SCRAM-SHA-256$4096:" + salt + "$" + stored + ":" + server},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if _, _, err := ParseCredential(c.in); !errors.Is(err, ErrInvalidCredential) {
				t.Fatalf("ParseCredential(%q) = %v, want ErrInvalidCredential", c.in, err)
			}
		})
	}
}

func TestRespondInvalidStoredCredential(t *testing.T) {
	bad := &Credentials{SHA256: Credential{Salt: []byte("s"), Iterations: 4096, StoredKey: []byte("short"), ServerKey: []byte("short")}}
	for _, mech := range []string{ScramSHA256, Plain} {
		t.Run(mech, func(t *testing.T) {
			s, _ := NewServer(Options{Mechanism: mech})
			first := []byte("n,,n=juliet,r=abc")
			if mech == Plain {
				first = []byte("\x00juliet\x00pw")
			}
			if _, _, err := s.Start(first); err != nil {
				t.Fatal(err)
			}
			_, _, err := s.Respond(bad)
			if !errors.Is(err, ErrInvalidCredential) || Condition(err) != CondTemporaryAuthFailure {
				t.Fatalf("err = %v (%s), want ErrInvalidCredential", err, Condition(err))
			}
		})
	}
}
