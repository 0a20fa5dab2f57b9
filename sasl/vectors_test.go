package sasl

import (
	"encoding/base64"
	"encoding/json"
	"os"
	"testing"
)

// vector is one RFC example exchange, from testdata/rfc_vectors.json.
type vector struct {
	Name        string `json:"name"`
	Mechanism   string `json:"mechanism"`
	Password    string `json:"password"`
	Salt        string `json:"salt"`
	Iterations  int    `json:"iterations"`
	ClientFirst string `json:"client_first"`
	ServerNonce string `json:"server_nonce"`
	ServerFirst string `json:"server_first"`
	ClientFinal string `json:"client_final"`
	ServerFinal string `json:"server_final"`
	StoredKey   string `json:"stored_key"`
	ServerKey   string `json:"server_key"`
}

func loadVectors(t testing.TB) []vector {
	t.Helper()
	data, err := os.ReadFile("testdata/rfc_vectors.json")
	if err != nil {
		t.Fatal(err)
	}
	var vs []vector
	if err := json.Unmarshal(data, &vs); err != nil {
		t.Fatal(err)
	}
	return vs
}

func hashOf(t testing.TB, mech string) Hash {
	t.Helper()
	for _, h := range []Hash{SHA1, SHA256, SHA512} {
		if mech == h.scramName() || mech == h.scramName()+"-PLUS" {
			return h
		}
	}
	t.Fatalf("no hash for %q", mech)
	return 0
}

// withServerNonce makes every exchange in the test use nonce as the server
// part of the nonce. Tests using it must not run in parallel.
func withServerNonce(t testing.TB, nonce string) {
	t.Helper()
	saved := serverNonce
	serverNonce = func() string { return nonce }
	t.Cleanup(func() { serverNonce = saved })
}

func TestRFCVectors(t *testing.T) {
	for _, v := range loadVectors(t) {
		t.Run(v.Name, func(t *testing.T) {
			h := hashOf(t, v.Mechanism)
			salt, err := base64.StdEncoding.DecodeString(v.Salt)
			if err != nil {
				t.Fatal(err)
			}
			cred := Derive(h, v.Password, salt, v.Iterations)
			if got := base64.StdEncoding.EncodeToString(cred.StoredKey); got != v.StoredKey {
				t.Errorf("Derive StoredKey = %s, want %s", got, v.StoredKey)
			}
			if got := base64.StdEncoding.EncodeToString(cred.ServerKey); got != v.ServerKey {
				t.Errorf("Derive ServerKey = %s, want %s", got, v.ServerKey)
			}

			withServerNonce(t, v.ServerNonce)
			var creds Credentials
			*creds.For(h) = cred
			s, err := NewServer(Options{Mechanism: v.Mechanism})
			if err != nil {
				t.Fatal(err)
			}
			user, authz, err := s.Start([]byte(v.ClientFirst))
			if err != nil || user != "user" || authz != "" {
				t.Fatalf("Start = %q, %q, %v; want user, \"\", nil", user, authz, err)
			}
			first, done, err := s.Respond(&creds)
			if err != nil || done {
				t.Fatalf("Respond: done=%v err=%v", done, err)
			}
			if string(first) != v.ServerFirst {
				t.Errorf("server-first = %q\nwant %q", first, v.ServerFirst)
			}
			final, done, err := s.Next([]byte(v.ClientFinal))
			if err != nil || !done {
				t.Fatalf("Next: done=%v err=%v", done, err)
			}
			if string(final) != v.ServerFinal {
				t.Errorf("server-final = %q, want %q", final, v.ServerFinal)
			}
		})
	}
}
