package sasl

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"os"
	"strings"
	"testing"
)

// htVector is one exchange of testdata/ht_vectors.json, computed by
// testdata/ht_vectors.py with Python's hmac module.
type htVector struct {
	Name      string `json:"name"`
	Mechanism string `json:"mechanism"`
	Username  string `json:"username"`
	Token     string `json:"token"`
	CBData    string `json:"cb_data"`
	Initiator string `json:"initiator"`
	Responder string `json:"responder"`
}

func loadHTVectors(t testing.TB) []htVector {
	t.Helper()
	data, err := os.ReadFile("testdata/ht_vectors.json")
	if err != nil {
		t.Fatal(err)
	}
	var vs []htVector
	if err := json.Unmarshal(data, &vs); err != nil {
		t.Fatal(err)
	}
	return vs
}

func unb64(t testing.TB, s string) []byte {
	t.Helper()
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// bindingFor returns a Binding callback that gives data for cbType only.
func bindingFor(cbType string, data []byte) func(string) ([]byte, error) {
	return func(t string) ([]byte, error) {
		if t != cbType {
			return nil, errors.New("not this type")
		}
		return data, nil
	}
}

func cbTypeOf(mech string) string {
	switch mech {
	case HTSHA256Endp:
		return BindingTLSServerEndPoint
	case HTSHA256Expr:
		return BindingTLSExporter
	}
	return ""
}

func TestHTVectors(t *testing.T) {
	for _, v := range loadHTVectors(t) {
		t.Run(v.Name, func(t *testing.T) {
			cb := unb64(t, v.CBData)
			s, err := NewHT(Options{Mechanism: v.Mechanism, Binding: bindingFor(cbTypeOf(v.Mechanism), cb)})
			if err != nil {
				t.Fatal(err)
			}
			user, err := s.Start(unb64(t, v.Initiator))
			if err != nil || user != v.Username {
				t.Fatalf("Start = %q, %v; want %q", user, err, v.Username)
			}
			// The matching token is second of three: Verify must find it
			// wherever it is.
			tokens := [][]byte{[]byte("some other token"), []byte(v.Token), []byte("a third")}
			i, extra, err := s.Verify(tokens)
			if err != nil || i != 1 {
				t.Fatalf("Verify = %d, %v; want 1, nil", i, err)
			}
			if got := base64.StdEncoding.EncodeToString(extra); got != v.Responder {
				t.Fatalf("responder = %s, want %s", got, v.Responder)
			}
			if _, _, err := s.Verify(tokens); !errors.Is(err, ErrState) {
				t.Fatalf("second Verify = %v, want ErrState", err)
			}
		})
	}
}

// TestHTRefused covers each way an HT exchange fails, and which error says
// so: only a token mismatch is a checked credential.
func TestHTRefused(t *testing.T) {
	v := loadHTVectors(t)[2] // HT-SHA-256-EXPR
	cb := unb64(t, v.CBData)
	initiator := unb64(t, v.Initiator)
	otherCB := bytes.Repeat([]byte{7}, 32)
	cases := []struct {
		name    string
		mech    string
		binding func(string) ([]byte, error)
		msg     []byte
		tokens  []string
		want    error
	}{
		{"wrong token", v.Mechanism, bindingFor(BindingTLSExporter, cb), initiator, []string{"not it"}, ErrNotAuthorized},
		{"no tokens (unknown account)", v.Mechanism, bindingFor(BindingTLSExporter, cb), initiator, nil, ErrNotAuthorized},
		// A message replayed on another TLS connection: the exporter
		// differs, so the right token does not match.
		{"other connection", v.Mechanism, bindingFor(BindingTLSExporter, otherCB), initiator, []string{v.Token}, ErrNotAuthorized},
		// The token was computed over tls-exporter: presenting it as
		// -NONE (a downgrade) does not match.
		{"other mechanism", HTSHA256None, bindingFor(BindingTLSExporter, cb), initiator, []string{v.Token}, ErrNotAuthorized},
		{"no binding on connection", v.Mechanism, bindingFor("tls-unique", nil), initiator, []string{v.Token}, ErrBindingType},
		{"empty binding data", v.Mechanism, bindingFor(BindingTLSExporter, []byte{}), initiator, []string{v.Token}, ErrBindingType},
		{"no NUL", v.Mechanism, bindingFor(BindingTLSExporter, cb), []byte("juliet"), []string{v.Token}, ErrMalformed},
		{"empty authcid", v.Mechanism, bindingFor(BindingTLSExporter, cb), initiator[bytes.IndexByte(initiator, 0):], []string{v.Token}, ErrMalformed},
		{"short hash", v.Mechanism, bindingFor(BindingTLSExporter, cb), initiator[:len(initiator)-1], []string{v.Token}, ErrMalformed},
		{"long hash", v.Mechanism, bindingFor(BindingTLSExporter, cb), append(bytes.Clone(initiator), 0), []string{v.Token}, ErrMalformed},
		{"authcid not UTF-8", v.Mechanism, bindingFor(BindingTLSExporter, cb), append([]byte{0xff}, initiator...), []string{v.Token}, ErrMalformed},
		{"too long", v.Mechanism, bindingFor(BindingTLSExporter, cb), append([]byte(strings.Repeat("a", maxMessage)), initiator...), []string{v.Token}, ErrMalformed},
		{"empty token never matches", v.Mechanism, bindingFor(BindingTLSExporter, cb), initiator, []string{""}, ErrNotAuthorized},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s, err := NewHT(Options{Mechanism: c.mech, Binding: c.binding})
			if err != nil {
				t.Fatal(err)
			}
			_, err = s.Start(c.msg)
			if err == nil {
				tokens := make([][]byte, len(c.tokens))
				for i, tok := range c.tokens {
					tokens[i] = []byte(tok)
				}
				_, _, err = s.Verify(tokens)
			}
			if !errors.Is(err, c.want) {
				t.Fatalf("err = %v, want %v", err, c.want)
			}
			if CheckedCredential(err) != (c.want == ErrNotAuthorized) {
				t.Fatalf("CheckedCredential(%v) = %v", err, CheckedCredential(err))
			}
			if _, _, err := s.Verify(nil); !errors.Is(err, ErrState) {
				t.Fatalf("Verify after failure = %v, want ErrState", err)
			}
		})
	}
}

func TestNewHT(t *testing.T) {
	b := bindingFor(BindingTLSExporter, []byte("x"))
	for _, m := range HTMechanisms() {
		if !IsHT(m) {
			t.Errorf("IsHT(%s) = false", m)
		}
		if _, err := NewHT(Options{Mechanism: m, Binding: b}); err != nil {
			t.Errorf("NewHT(%s) = %v", m, err)
		}
		// HT only over TLS, -NONE too.
		if _, err := NewHT(Options{Mechanism: m}); !errors.Is(err, ErrInvalidMechanism) {
			t.Errorf("NewHT(%s) without TLS = %v, want ErrInvalidMechanism", m, err)
		}
	}
	for _, m := range []string{"HT-SHA-256-UNIQ", "HT-SHA-512-NONE", ScramSHA256, ""} {
		if IsHT(m) {
			t.Errorf("IsHT(%q) = true", m)
		}
		if _, err := NewHT(Options{Mechanism: m, Binding: b}); !errors.Is(err, ErrInvalidMechanism) {
			t.Errorf("NewHT(%q) = %v, want ErrInvalidMechanism", m, err)
		}
	}
	s, _ := NewHT(Options{Mechanism: HTSHA256None, Binding: b})
	if _, _, err := s.Verify(nil); !errors.Is(err, ErrState) {
		t.Errorf("Verify before Start = %v, want ErrState", err)
	}
}

// FuzzHTStart: no initiator message makes Start or Verify panic, and
// only a message that parsed reaches Verify.
func FuzzHTStart(f *testing.F) {
	for _, v := range loadHTVectors(f) {
		f.Add(unb64(f, v.Initiator))
	}
	f.Add([]byte("\x00"))
	f.Add([]byte("a\x00b"))
	f.Fuzz(func(t *testing.T, msg []byte) {
		s, err := NewHT(Options{Mechanism: HTSHA256Expr, Binding: bindingFor(BindingTLSExporter, make([]byte, 32))})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Start(msg); err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("Start: %v is not ErrMalformed", err)
			}
			return
		}
		if _, _, err := s.Verify([][]byte{[]byte("token")}); err != nil && !errors.Is(err, ErrNotAuthorized) {
			t.Fatalf("Verify: %v", err)
		}
	})
}
