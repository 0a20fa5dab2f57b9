package sasl

import (
	"crypto/hmac"
	"crypto/pbkdf2"
	"encoding/base64"
	"fmt"
	"strconv"
	"strings"
)

// testClient is an independent SCRAM client written from RFC 5802 section 3
// for the tests: it covers what mellium.im/sasl's client lacks (SHA-512,
// tls-server-end-point, authzid escapes) and can be made to misbehave.
type testClient struct {
	hash     Hash
	user     string // unescaped
	password string
	authzid  string
	gs2      string // "n", "y" or "p=<type>"
	cbData   []byte
	nonce    string
	finalExt string // extensions for client-final, with leading ','

	first    string // client-first-message-bare
	authMsg  string
	salted   []byte
	expected string // server-final-message it expects
}

func escapeName(s string) string {
	return strings.NewReplacer("=", "=3D", ",", "=2C").Replace(s)
}

func (c *testClient) header() string {
	h := c.gs2 + ","
	if c.authzid != "" {
		h += "a=" + escapeName(c.authzid)
	}
	return h + ","
}

// First returns client-first-message.
func (c *testClient) First() []byte {
	if c.gs2 == "" {
		c.gs2 = "n"
	}
	if c.nonce == "" {
		c.nonce = "rOprNGfwEbeRWgbNEkqO"
	}
	c.first = "n=" + escapeName(c.user) + ",r=" + c.nonce
	return []byte(c.header() + c.first)
}

// Final parses server-first-message and returns client-final-message.
func (c *testClient) Final(serverFirst []byte) ([]byte, error) {
	var nonce, salt64, iter string
	for _, f := range strings.Split(string(serverFirst), ",") {
		k, v, _ := strings.Cut(f, "=")
		switch k {
		case "r":
			nonce = v
		case "s":
			salt64 = v
		case "i":
			iter = v
		}
	}
	if !strings.HasPrefix(nonce, c.nonce) || len(nonce) <= len(c.nonce) {
		return nil, fmt.Errorf("server nonce %q does not extend %q", nonce, c.nonce)
	}
	salt, err := base64.StdEncoding.DecodeString(salt64)
	if err != nil {
		return nil, err
	}
	n, err := strconv.Atoi(iter)
	if err != nil {
		return nil, err
	}
	cb := base64.StdEncoding.EncodeToString(append([]byte(c.header()), c.cbData...))
	without := "c=" + cb + ",r=" + nonce + c.finalExt
	c.authMsg = c.first + "," + string(serverFirst) + "," + without
	c.salted, err = pbkdf2.Key(c.hash.new, c.password, salt, n, c.hash.Size())
	if err != nil {
		return nil, err
	}
	proof := c.proof()
	serverKey := c.mac(c.salted, "Server Key")
	c.expected = "v=" + base64.StdEncoding.EncodeToString(c.mac(serverKey, c.authMsg))
	return []byte(without + ",p=" + base64.StdEncoding.EncodeToString(proof)), nil
}

// proof computes ClientProof = ClientKey XOR HMAC(H(ClientKey), AuthMessage).
func (c *testClient) proof() []byte {
	clientKey := c.mac(c.salted, "Client Key")
	d := c.hash.new()
	d.Write(clientKey)
	sig := c.mac(d.Sum(nil), c.authMsg)
	for i := range clientKey {
		clientKey[i] ^= sig[i]
	}
	return clientKey
}

func (c *testClient) mac(key []byte, msg string) []byte {
	m := hmac.New(c.hash.new, key)
	m.Write([]byte(msg))
	return m.Sum(nil)
}

// Verify checks server-final-message.
func (c *testClient) Verify(serverFinal []byte) error {
	if string(serverFinal) != c.expected {
		return fmt.Errorf("server final %q, want %q", serverFinal, c.expected)
	}
	return nil
}
