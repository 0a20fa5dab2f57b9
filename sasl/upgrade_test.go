package sasl

import (
	"bytes"
	"encoding/base64"
	"errors"
	"testing"
)

func TestUpgradeTaskNames(t *testing.T) {
	for _, h := range []Hash{SHA1, SHA256, SHA512} {
		got, ok := UpgradeHash(UpgradeTask(h))
		if !ok || got != h {
			t.Errorf("UpgradeHash(%s) = %v, %v", UpgradeTask(h), got, ok)
		}
	}
	if UpgradeTask(SHA256) != "UPGR-SCRAM-SHA-256" {
		t.Errorf("task name %q", UpgradeTask(SHA256))
	}
	for _, name := range []string{"UPGR-SCRAM-SHA-256-PLUS", "SCRAM-SHA-256", "UPGR-BLOOP2", ""} {
		if _, ok := UpgradeHash(name); ok {
			t.Errorf("UpgradeHash(%q) accepted", name)
		}
	}
}

// TestScramUpgrade: the server's salt and iteration count, the client's
// SaltedPassword (computed by Python's hashlib.pbkdf2_hmac for "pencil"
// over the salt of XEP-0480's example, 4096 iterations), and the stored
// credential, which then logs in like one derived from the password.
func TestScramUpgrade(t *testing.T) {
	u, err := NewScramUpgrade(SHA256, 4096)
	if err != nil {
		t.Fatal(err)
	}
	copy(u.salt[:], "A_SXCRXQ6sek8bf_") // XEP-0480's example salt, first 16 bytes
	u2, _ := NewScramUpgrade(SHA256, 4096)
	if bytes.Equal(u2.salt[:], u.salt[:]) {
		t.Fatal("salt not random")
	}
	if got, want := string(u.AppendSalt(nil)), `<salt xmlns='urn:xmpp:scram-upgrade:0' iterations='4096'>QV9TWENSWFE2c2VrOGJmXw==</salt>`; got != want {
		t.Fatalf("salt element %s, want %s", got, want)
	}
	// python3 -c "import hashlib,base64;print(base64.b64encode(hashlib.pbkdf2_hmac('sha256',b'pencil',b'A_SXCRXQ6sek8bf_',4096)))"
	salted, _ := base64.StdEncoding.DecodeString("Mmyq5B7r8eCbx3OeBDHIQLUbQuWVHOxvtAreZKhEvaI=")
	cred, err := u.Finish(salted)
	if err != nil {
		t.Fatal(err)
	}
	want := Derive(SHA256, "pencil", []byte("A_SXCRXQ6sek8bf_"), 4096)
	if !bytes.Equal(cred.StoredKey, want.StoredKey) || !bytes.Equal(cred.ServerKey, want.ServerKey) || cred.Iterations != 4096 {
		t.Fatalf("credential %+v, want %+v", cred, want)
	}
	if _, err := u.Finish(salted[:31]); !errors.Is(err, ErrMalformed) {
		t.Fatalf("short SaltedPassword: %v", err)
	}
	if _, err := NewScramUpgrade(Hash(0), 0); !errors.Is(err, ErrInvalidMechanism) {
		t.Fatalf("hash 0: %v", err)
	}
}
