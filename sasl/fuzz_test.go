package sasl

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"testing"
)

// fuzzCreds are cheap credentials for testUser with a fixed salt, so seeds
// in testdata/fuzz stay valid.
func fuzzCreds() *Credentials {
	return &Credentials{SHA256: Derive(SHA256, testPassword, []byte("fuzz-salt"), 64)}
}

// FuzzScramServer runs arbitrary client messages through a SCRAM-SHA-256
// exchange. mode selects: bit 0 unknown account, bit 1 -PLUS, bit 2
// PlusAdvertised. The exchange must never panic, and it must succeed only
// when the proof is the one the password gives for the AuthMessage built
// independently from the raw messages.
func FuzzScramServer(f *testing.F) {
	withServerNonce(f, fixedServerNonce)
	creds := fuzzCreds()
	cred := creds.SHA256
	salted := fuzzSalted()
	clientKey := hmacSHA256(salted, []byte("Client Key"))

	f.Fuzz(func(t *testing.T, mode byte, first, final []byte) {
		opts := Options{Mechanism: ScramSHA256, Binding: fakeBinding, PlusAdvertised: mode&4 != 0}
		if mode&2 != 0 {
			opts.Mechanism = ScramSHA256Plus
		}
		s, err := NewServer(opts)
		if err != nil {
			t.Fatal(err)
		}
		user, _, err := s.Start(first)
		if err != nil {
			return
		}
		c := creds
		if mode&1 != 0 {
			c = nil
		}
		serverFirst, done, err := s.Respond(c)
		if err != nil {
			return
		}
		if done {
			t.Fatal("done after server-first")
		}
		serverFirst = bytes.Clone(serverFirst)
		serverFinal, done, err := s.Next(final)
		if err != nil {
			if done || serverFinal != nil {
				t.Fatalf("error %v with done=%v data=%q", err, done, serverFinal)
			}
			return
		}
		if !done {
			t.Fatal("Next neither done nor failed")
		}
		if c == nil || user != testUser {
			t.Fatalf("success for unknown account %q", user)
		}
		// Independent check of the proof.
		i := bytes.IndexByte(first, ',')
		j := bytes.IndexByte(first[i+1:], ',')
		bare := first[i+1+j+1:]
		k := bytes.LastIndex(final, []byte(",p="))
		proof, err := base64.StdEncoding.DecodeString(string(final[k+3:]))
		if err != nil || len(proof) != sha256.Size {
			t.Fatalf("success with undecodable proof %q", final[k+3:])
		}
		authMsg := bytes.Join([][]byte{bare, serverFirst, final[:k]}, []byte(","))
		sig := hmacSHA256(cred.StoredKey, authMsg)
		for n := range proof {
			proof[n] ^= sig[n]
		}
		if !hmac.Equal(proof, clientKey) {
			t.Fatalf("success without a valid proof: first %q final %q", first, final)
		}
	})
}

func fuzzSalted() []byte {
	// PBKDF2 with one output block is U1 ^ ... ^ U64, written out here
	// rather than calling the package, to stay independent of it.
	u := hmacSHA256([]byte(testPassword), append([]byte("fuzz-salt"), 0, 0, 0, 1))
	out := bytes.Clone(u)
	for range 63 {
		u = hmacSHA256([]byte(testPassword), u)
		for n := range out {
			out[n] ^= u[n]
		}
	}
	return out
}

func hmacSHA256(key, msg []byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write(msg)
	return m.Sum(nil)
}

// TestFuzzHelpers pins the fuzz oracle's hand-written PBKDF2 to Derive, so
// a broken oracle cannot make the fuzz target vacuous.
func TestFuzzHelpers(t *testing.T) {
	salted := fuzzSalted()
	d := sha256.Sum256(hmacSHA256(salted, []byte("Client Key")))
	if !bytes.Equal(d[:], fuzzCreds().SHA256.StoredKey) {
		t.Fatal("oracle PBKDF2 disagrees with Derive")
	}
}

// TestFuzzSeedsValid checks that the valid seeds in testdata/fuzz succeed,
// so the fuzzer starts from complete exchanges.
func TestFuzzSeedsValid(t *testing.T) {
	withServerNonce(t, fixedServerNonce)
	cases := []struct {
		name string
		c    testClient
		mech string
	}{
		{"plain", testClient{gs2: "n"}, ScramSHA256},
		{"authzid and extension", testClient{gs2: "n", authzid: "a=b", finalExt: ",x=1"}, ScramSHA256},
		{"plus", testClient{gs2: "p=tls-exporter", cbData: []byte("exporter-data-32-bytes-long-----")}, ScramSHA256Plus},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			c.c.hash, c.c.user, c.c.password, c.c.nonce = SHA256, testUser, testPassword, "abc"
			s, _ := NewServer(Options{Mechanism: c.mech, Binding: fakeBinding})
			first := c.c.First()
			if _, _, err := s.Start(first); err != nil {
				t.Fatal(err)
			}
			sf, _, err := s.Respond(fuzzCreds())
			if err != nil {
				t.Fatal(err)
			}
			final, err := c.c.Final(sf)
			if err != nil {
				t.Fatal(err)
			}
			if _, done, err := s.Next(final); err != nil || !done {
				t.Fatalf("Next = %v, %v", done, err)
			}
			t.Logf("seed: first %q final %q", first, final)
		})
	}
}
