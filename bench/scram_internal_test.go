package bench

import (
	"crypto/tls"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

type scramVector struct {
	User        string `json:"user"`
	Password    string `json:"password"`
	ClientNonce string `json:"client_nonce"`
	ClientFirst string `json:"client_first"`
	ServerFirst string `json:"server_first"`
	ClientFinal string `json:"client_final"`
	ServerFinal string `json:"server_final"`
}

func readVector(t *testing.T) scramVector {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "scram-sha-256-rfc7677.json"))
	if err != nil {
		t.Fatal(err)
	}
	var v scramVector
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatal(err)
	}
	return v
}

// vectorClient is the RFC 7677 exchange's client, its nonce fixed.
func vectorClient(v scramVector) *scramClient {
	return &scramClient{password: v.Password, clientFirst: v.ClientFirst[len("n,,"):], nonce: v.ClientNonce}
}

// TestSCRAMVector runs the client through RFC 7677's example exchange.
func TestSCRAMVector(t *testing.T) {
	v := readVector(t)
	if _, first := newSCRAM(v.User, v.Password); string(first[:len("n,,n=user,r=")]) != v.ClientFirst[:len("n,,n=user,r=")] {
		t.Errorf("client-first %q, want the form of %q", first, v.ClientFirst)
	}
	// Twice: the second exchange takes its keys from the cache.
	for i := range 2 {
		c := vectorClient(v)
		final, err := c.final([]byte(v.ServerFirst))
		if err != nil {
			t.Fatal(err)
		}
		if string(final) != v.ClientFinal {
			t.Fatalf("exchange %d: client-final %q, want %q", i, final, v.ClientFinal)
		}
		if err := c.verify([]byte(v.ServerFinal)); err != nil {
			t.Fatalf("exchange %d: verify: %v", i, err)
		}
	}
}

// TestSCRAMBadServer feeds the client server messages it must refuse.
func TestSCRAMBadServer(t *testing.T) {
	v := readVector(t)
	tests := []struct {
		name, first, final string
	}{
		{name: "empty server-first", first: ""},
		{name: "nonce not extended", first: "r=someoneelse,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"},
		{name: "nonce only the client's", first: "r=rOprNGfwEbeRWgbNEkqO,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"},
		{name: "salt not base64", first: "r=rOprNGfwEbeRWgbNEkqOxyz,s=!!,i=4096"},
		{name: "zero iterations", first: "r=rOprNGfwEbeRWgbNEkqOxyz,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=0"},
		{name: "huge iteration count", first: "r=rOprNGfwEbeRWgbNEkqOxyz,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=999999999"},
		{name: "attributes out of order", first: "s=W22ZaJ0SNY7soEsUEjb6gQ==,r=rOprNGfwEbeRWgbNEkqOxyz,i=4096"},
		{name: "wrong server signature", first: v.ServerFirst, final: "v=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="},
		{name: "server-final not v=", first: v.ServerFirst, final: "e=other-error"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := vectorClient(v)
			_, err := c.final([]byte(tt.first))
			if tt.final == "" {
				if !errors.Is(err, ErrSCRAM) {
					t.Fatalf("final(%q) = %v, want ErrSCRAM", tt.first, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if err := c.verify([]byte(tt.final)); !errors.Is(err, ErrSCRAM) {
				t.Fatalf("verify(%q) = %v, want ErrSCRAM", tt.final, err)
			}
		})
	}
}

func TestSASLName(t *testing.T) {
	tests := []struct{ name, in, want string }{
		{"plain", "bench7", "bench7"},
		{"equals and comma", "a=b,c", "a=3Db=2Cc"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := saslName(tt.in); got != tt.want {
				t.Fatalf("saslName(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

func TestParseCurves(t *testing.T) {
	tests := []struct {
		name, in string
		want     []tls.CurveID
		err      error
	}{
		{name: "empty is the default", in: ""},
		{name: "default", in: "default"},
		{name: "x25519", in: "x25519", want: []tls.CurveID{tls.X25519}},
		{name: "list with case and spaces", in: "X25519MLKEM768, x25519,p256",
			want: []tls.CurveID{tls.X25519MLKEM768, tls.X25519, tls.CurveP256}},
		{name: "unknown", in: "x448", err: ErrUnknownCurve},
		{name: "empty element", in: "x25519,", err: ErrUnknownCurve},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseCurves(tt.in)
			if !errors.Is(err, tt.err) || !slices.Equal(got, tt.want) {
				t.Fatalf("ParseCurves(%q) = %v, %v; want %v, %v", tt.in, got, err, tt.want, tt.err)
			}
		})
	}
}

// BenchmarkSCRAMClient is the bench client's share of one login with
// the keys cached: it must stay far below the server's cost of a login.
func BenchmarkSCRAMClient(b *testing.B) {
	v := readVectorB(b)
	b.ReportAllocs()
	for b.Loop() {
		c := vectorClient(v)
		if _, err := c.final([]byte(v.ServerFirst)); err != nil {
			b.Fatal(err)
		}
		if err := c.verify([]byte(v.ServerFinal)); err != nil {
			b.Fatal(err)
		}
	}
}

func readVectorB(b *testing.B) scramVector {
	b.Helper()
	raw, err := os.ReadFile(filepath.Join("testdata", "scram-sha-256-rfc7677.json"))
	if err != nil {
		b.Fatal(err)
	}
	var v scramVector
	if err := json.Unmarshal(raw, &v); err != nil {
		b.Fatal(err)
	}
	return v
}
