package sasl

import (
	"testing"
)

// BenchmarkScramSHA256Exchange measures one full SCRAM-SHA-256 server
// exchange (NewServer, Start, Respond, Next) against stored credentials, as
// the event loop and a worker run it. Derivation is not included: the
// credentials are stored and the client's proof is precomputed, which the
// fixed server nonce allows.
func BenchmarkScramSHA256Exchange(b *testing.B) {
	withServerNonce(b, fixedServerNonce)
	creds := credsFor(b)
	c := testClient{hash: SHA256, user: testUser, password: testPassword, nonce: "rOprNGfwEbeRWgbNEkqO"}
	first := c.First()
	s, _ := NewServer(Options{Mechanism: ScramSHA256})
	s.Start(first)
	sf, _, _ := s.Respond(creds)
	final, err := c.Final(sf)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		s, _ := NewServer(Options{Mechanism: ScramSHA256})
		if _, _, err := s.Start(first); err != nil {
			b.Fatal(err)
		}
		if _, _, err := s.Respond(creds); err != nil {
			b.Fatal(err)
		}
		if _, done, err := s.Next(final); err != nil || !done {
			b.Fatal(err)
		}
	}
}

// BenchmarkScramSHA256RandomNonce is the same exchange with the real
// crypto/rand server nonce; the client's proof is recomputed from its
// SaltedPassword each time (two HMACs and a hash more than the server does).
func BenchmarkScramSHA256RandomNonce(b *testing.B) {
	creds := credsFor(b)
	c := testClient{hash: SHA256, user: testUser, password: testPassword, nonce: "rOprNGfwEbeRWgbNEkqO"}
	first := c.First()
	s, _ := NewServer(Options{Mechanism: ScramSHA256})
	s.Start(first)
	sf, _, _ := s.Respond(creds)
	if _, err := c.Final(sf); err != nil { // derives c.salted once
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		s, _ := NewServer(Options{Mechanism: ScramSHA256})
		if _, _, err := s.Start(first); err != nil {
			b.Fatal(err)
		}
		sf, _, err := s.Respond(creds)
		if err != nil {
			b.Fatal(err)
		}
		c.authMsg = c.first + "," + string(sf) + ",c=biws,r=" + string(sf[2:len(c.nonce)+26])
		final := "c=biws,r=" + string(sf[2:len(c.nonce)+26]) + ",p=" + b64(string(c.proof()))
		if _, done, err := s.Next([]byte(final)); err != nil || !done {
			b.Fatal(err)
		}
	}
}

// BenchmarkScramStart measures Start alone: what the event loop pays to
// accept a client-first message.
func BenchmarkScramStart(b *testing.B) {
	first := []byte("n,,n=juliet,r=rOprNGfwEbeRWgbNEkqO")
	b.ReportAllocs()
	for b.Loop() {
		s, _ := NewServer(Options{Mechanism: ScramSHA256})
		if _, _, err := s.Start(first); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkPlainVerify measures PLAIN verification at DefaultIterations
// (4096) against a stored SCRAM-SHA-256 credential: one PBKDF2 per attempt.
func BenchmarkPlainVerify(b *testing.B) {
	creds := credsFor(b)
	msg := []byte("\x00" + testUser + "\x00" + testPassword)
	b.ReportAllocs()
	for b.Loop() {
		s, _ := NewServer(Options{Mechanism: Plain})
		if _, _, err := s.Start(msg); err != nil {
			b.Fatal(err)
		}
		if _, done, err := s.Respond(creds); err != nil || !done {
			b.Fatal(err)
		}
	}
}

// BenchmarkNewCredentials measures deriving all three credentials at
// DefaultIterations, as registration or a password change does.
func BenchmarkNewCredentials(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if _, err := NewCredentials(testPassword, DefaultIterations); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkHTSHA256ExprVerify measures one HT-SHA-256-EXPR server exchange
// (NewHT, Start, Verify) against the two tokens a client may hold during a
// rotation, the second matching: what a FAST login costs the server beside
// the token look-up, to compare with BenchmarkScramSHA256Exchange.
func BenchmarkHTSHA256ExprVerify(b *testing.B) {
	cb := make([]byte, 32)
	token := []byte("iY2vS3lqK8wq2m5h0bqQmRz3yN7kVx4pW1cJ9tLfE6A")
	mac := htMAC(token, "Initiator", cb, nil)
	msg := append([]byte("juliet\x00"), mac...)
	tokens := [][]byte{[]byte("the other token of this client....."), token}
	binding := func(string) ([]byte, error) { return cb, nil }
	b.ReportAllocs()
	for b.Loop() {
		s, err := NewHT(Options{Mechanism: HTSHA256Expr, Binding: binding})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := s.Start(msg); err != nil {
			b.Fatal(err)
		}
		if i, _, err := s.Verify(tokens); err != nil || i != 1 {
			b.Fatal(i, err)
		}
	}
}
