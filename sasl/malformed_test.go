package sasl

import (
	"encoding/base64"
	"errors"
	"strings"
	"testing"
)

const fixedServerNonce = "SRVNONCE"

// fakeBinding stands in for a TLS connection: tls-exporter data is known,
// tls-server-end-point is unavailable.
func fakeBinding(cbType string) ([]byte, error) {
	if cbType == BindingTLSExporter {
		return []byte("exporter-data-32-bytes-long-----"), nil
	}
	return nil, errors.New("no certificate")
}

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

func TestScramMalformedStart(t *testing.T) {
	long := "n,,n=" + strings.Repeat("a", maxMessage) + ",r=abc"
	cases := []struct {
		name  string
		mech  string
		plusA bool
		first string
		want  error
	}{
		{name: "empty message", first: "", want: ErrMalformed},
		{name: "unknown flag", first: "x,,n=juliet,r=abc", want: ErrMalformed},
		{name: "flag without comma", first: "n", want: ErrMalformed},
		{name: "p with non-PLUS mechanism", first: "p=tls-exporter,,n=juliet,r=abc", want: ErrBindingFlag},
		{name: "n with PLUS mechanism", mech: ScramSHA256Plus, first: "n,,n=juliet,r=abc", want: ErrBindingFlag},
		{name: "y with PLUS mechanism", mech: ScramSHA256Plus, first: "y,,n=juliet,r=abc", want: ErrBindingFlag},
		{name: "y when PLUS advertised", plusA: true, first: "y,,n=juliet,r=abc", want: ErrDowngrade},
		{name: "unknown binding type", mech: ScramSHA256Plus, first: "p=tls-unique,,n=juliet,r=abc", want: ErrBindingType},
		{name: "bad binding name", mech: ScramSHA256Plus, first: "p=tls_exporter,,n=juliet,r=abc", want: ErrMalformed},
		{name: "empty binding name", mech: ScramSHA256Plus, first: "p=,,n=juliet,r=abc", want: ErrMalformed},
		{name: "gs2 header missing comma", first: "n,n=juliet,r=abc", want: ErrMalformed},
		{name: "authzid not terminated", first: "n,a=admin", want: ErrMalformed},
		{name: "empty authzid", first: "n,a=,n=juliet,r=abc", want: ErrMalformed},
		{name: "bad escape in authzid", first: "n,a=ad=min,n=juliet,r=abc", want: ErrMalformed},
		{name: "mandatory extension", first: "n,,m=ext,n=juliet,r=abc", want: ErrMandatoryExtension},
		{name: "empty username", first: "n,,n=,r=abc", want: ErrMalformed},
		{name: "unknown escape", first: "n,,n=ju=2Xliet,r=abc", want: ErrMalformed},
		{name: "lowercase escape", first: "n,,n=ju=2cliet,r=abc", want: ErrMalformed},
		{name: "truncated escape", first: "n,,n=juliet=2,r=abc", want: ErrMalformed},
		{name: "bare equals in username", first: "n,,n=a=b,r=abc", want: ErrMalformed},
		{name: "missing nonce", first: "n,,n=juliet", want: ErrMalformed},
		{name: "empty nonce", first: "n,,n=juliet,r=", want: ErrMalformed},
		{name: "nonce with space", first: "n,,n=juliet,r=a c", want: ErrMalformed},
		{name: "nonce with DEL", first: "n,,n=juliet,r=a\x7fc", want: ErrMalformed},
		{name: "attributes out of order", first: "n,,r=abc,n=juliet", want: ErrMalformed},
		{name: "repeated nonce", first: "n,,n=juliet,r=abc,r=def", want: ErrMalformed},
		{name: "repeated username", first: "n,,n=juliet,r=abc,n=romeo", want: ErrMalformed},
		{name: "m after nonce", first: "n,,n=juliet,r=abc,m=x", want: ErrMalformed},
		{name: "trailing comma", first: "n,,n=juliet,r=abc,", want: ErrMalformed},
		{name: "extension without value", first: "n,,n=juliet,r=abc,x=", want: ErrMalformed},
		{name: "extension without name", first: "n,,n=juliet,r=abc,xyz", want: ErrMalformed},
		{name: "NUL", first: "n,,n=jul\x00iet,r=abc", want: ErrMalformed},
		{name: "invalid UTF-8", first: "n,,n=jul\xffiet,r=abc", want: ErrMalformed},
		{name: "too long", first: long, want: ErrMalformed},
		{name: "unknown extension accepted", first: "n,,n=juliet,r=abc,x=1,y=2"},
		{name: "escapes accepted", first: "n,a=a=3Db,n=b=2Cc,r=abc"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if c.mech == "" {
				c.mech = ScramSHA256
			}
			s, err := NewServer(Options{Mechanism: c.mech, Binding: fakeBinding, PlusAdvertised: c.plusA})
			if err != nil {
				t.Fatal(err)
			}
			if _, _, err = s.Start([]byte(c.first)); !errors.Is(err, c.want) {
				t.Fatalf("Start(%q) = %v, want %v", c.first, err, c.want)
			}
			// Nothing in client-first is checked against a credential.
			if CheckedCredential(err) {
				t.Errorf("CheckedCredential(%v) = true before any credential was checked", err)
			}
			if c.want == nil {
				return
			}
			// A failed exchange is over.
			if _, _, err := s.Respond(credsFor(t)); !errors.Is(err, ErrState) {
				t.Errorf("Respond after failure = %v, want ErrState", err)
			}
		})
	}
}

func TestScramMalformedFinal(t *testing.T) {
	withServerNonce(t, fixedServerNonce)
	creds := credsFor(t)
	exporter, _ := fakeBinding(BindingTLSExporter)
	replace := func(old, new string) func(string) string {
		return func(s string) string {
			if !strings.Contains(s, old) {
				panic("mutation does not apply: " + old)
			}
			return strings.Replace(s, old, new, 1)
		}
	}
	beforeProof := func(ins string) func(string) string {
		return func(s string) string {
			i := strings.LastIndex(s, ",p=")
			return s[:i] + ins + s[i:]
		}
	}
	proofOf := func(s string) string { return s[strings.LastIndex(s, ",p=")+3:] }
	cases := []struct {
		name   string
		mech   string
		client testClient
		mutate func(string) string
		want   error
	}{
		{name: "valid"},
		{name: "valid with authzid", client: testClient{authzid: "juliet@example.net"}},
		{name: "unknown extension ignored", client: testClient{finalExt: ",x=1,y=a=b"}},
		{name: "empty message", mutate: func(string) string { return "" }, want: ErrMalformed},
		{name: "bad base64 in c", mutate: replace("c=biws", "c=bi!s"), want: ErrIncorrectEncoding},
		{name: "unpadded base64 in c", mutate: replace("c=biws", "c=biw"), want: ErrIncorrectEncoding},
		{name: "bad base64 in p", mutate: func(s string) string { return strings.Replace(s, proofOf(s), "@@@@", 1) }, want: ErrIncorrectEncoding},
		{name: "wrong nonce", mutate: replace("r=abc"+fixedServerNonce, "r=abcWRONG"), want: ErrMalformed},
		{name: "client nonce only", mutate: replace("r=abc"+fixedServerNonce, "r=abc"), want: ErrMalformed},
		{name: "missing c", mutate: replace("c=biws,", ""), want: ErrMalformed},
		{name: "missing p", mutate: func(s string) string { return s[:strings.LastIndex(s, ",p=")] }, want: ErrMalformed},
		{name: "missing r", mutate: replace(",r=abc"+fixedServerNonce, ""), want: ErrMalformed},
		{name: "c and r swapped", mutate: func(s string) string {
			return "r=abc" + fixedServerNonce + ",c=biws," + s[strings.LastIndex(s, "p="):]
		}, want: ErrMalformed},
		{name: "repeated r", mutate: beforeProof(",r=abc" + fixedServerNonce), want: ErrMalformed},
		{name: "repeated c", mutate: beforeProof(",c=biws"), want: ErrMalformed},
		{name: "repeated p", mutate: func(s string) string { return s + ",p=" + proofOf(s) }, want: ErrMalformed},
		{name: "p not last", mutate: func(s string) string { return s + ",x=1" }, want: ErrMalformed},
		{name: "mandatory extension", mutate: beforeProof(",m=1"), want: ErrMalformed},
		{name: "empty extension", mutate: beforeProof(","), want: ErrMalformed},
		{name: "gs2 flag differs from client-first", mutate: replace("c=biws", "c="+b64("y,,")), want: ErrChannelBinding},
		{name: "authzid differs from client-first", mutate: replace("c=biws", "c="+b64("n,a=admin,")), want: ErrChannelBinding},
		{name: "binding data without p", mutate: replace("c=biws", "c="+b64("n,,extra")), want: ErrChannelBinding},
		{name: "proof of wrong length", mutate: func(s string) string {
			return strings.Replace(s, proofOf(s), base64.StdEncoding.EncodeToString(make([]byte, 20)), 1)
		}, want: ErrMalformed},
		{name: "long proof", mutate: func(s string) string {
			return strings.Replace(s, proofOf(s), base64.StdEncoding.EncodeToString(make([]byte, 600)), 1)
		}, want: ErrMalformed},
		{name: "wrong proof", mutate: func(s string) string {
			p, _ := base64.StdEncoding.DecodeString(proofOf(s))
			p[0] ^= 1
			return strings.Replace(s, proofOf(s), base64.StdEncoding.EncodeToString(p), 1)
		}, want: ErrNotAuthorized},
		{name: "PLUS valid", mech: ScramSHA256Plus, client: testClient{gs2: "p=tls-exporter", cbData: exporter}},
		{name: "PLUS without binding data", mech: ScramSHA256Plus, client: testClient{gs2: "p=tls-exporter"}, want: ErrChannelBinding},
		{name: "PLUS wrong binding data", mech: ScramSHA256Plus, client: testClient{gs2: "p=tls-exporter", cbData: []byte("exporter-data-32-bytes-long----!")}, want: ErrChannelBinding},
		{name: "PLUS binding unavailable", mech: ScramSHA256Plus, client: testClient{gs2: "p=tls-server-end-point", cbData: []byte("x")}, want: ErrBindingType},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if c.mech == "" {
				c.mech = ScramSHA256
			}
			c.client.hash, c.client.user, c.client.password, c.client.nonce = SHA256, testUser, testPassword, "abc"
			s, err := NewServer(Options{Mechanism: c.mech, Binding: fakeBinding})
			if err != nil {
				t.Fatal(err)
			}
			if _, _, err := s.Start(c.client.First()); err != nil {
				t.Fatalf("Start: %v", err)
			}
			first, _, err := s.Respond(creds)
			if err != nil {
				t.Fatalf("Respond: %v", err)
			}
			final, err := c.client.Final(first)
			if err != nil {
				t.Fatal(err)
			}
			msg := string(final)
			if c.mutate != nil {
				msg = c.mutate(msg)
			}
			last, done, err := s.Next([]byte(msg))
			if !errors.Is(err, c.want) || (c.want == nil && err != nil) {
				t.Fatalf("Next(%q) = %v, want %v", msg, err, c.want)
			}
			// Only the proof comparison checks a credential: syntax,
			// nonce and channel binding are checked before it.
			if got, want := CheckedCredential(err), c.want == ErrNotAuthorized; got != want {
				t.Errorf("CheckedCredential(%v) = %v, want %v", err, got, want)
			}
			if c.want != nil {
				if done || last != nil {
					t.Errorf("failed Next returned done=%v data=%q", done, last)
				}
				return
			}
			if !done {
				t.Fatal("valid exchange not done")
			}
			if err := c.client.Verify(last); err != nil {
				t.Error(err)
			}
		})
	}
}

func TestScramCallOrder(t *testing.T) {
	withServerNonce(t, fixedServerNonce)
	creds := credsFor(t)
	newStarted := func(t *testing.T) (Server, *testClient) {
		s, err := NewServer(Options{Mechanism: ScramSHA1})
		if err != nil {
			t.Fatal(err)
		}
		c := &testClient{hash: SHA1, user: testUser, password: testPassword}
		if _, _, err := s.Start(c.First()); err != nil {
			t.Fatal(err)
		}
		return s, c
	}
	cases := []struct {
		name string
		run  func(t *testing.T) error
	}{
		{name: "Respond before Start", run: func(t *testing.T) error {
			s, _ := NewServer(Options{Mechanism: ScramSHA1})
			_, _, err := s.Respond(creds)
			return err
		}},
		{name: "Next before Start", run: func(t *testing.T) error {
			s, _ := NewServer(Options{Mechanism: ScramSHA1})
			_, _, err := s.Next([]byte("c=biws"))
			return err
		}},
		{name: "Start twice", run: func(t *testing.T) error {
			s, c := newStarted(t)
			_, _, err := s.Start(c.First())
			return err
		}},
		{name: "Next before Respond", run: func(t *testing.T) error {
			s, _ := newStarted(t)
			_, _, err := s.Next([]byte("c=biws,r=x,p=AAAA"))
			return err
		}},
		{name: "Respond twice", run: func(t *testing.T) error {
			s, _ := newStarted(t)
			s.Respond(creds)
			_, _, err := s.Respond(creds)
			return err
		}},
		{name: "Next after success", run: func(t *testing.T) error {
			s, c := newStarted(t)
			first, _, _ := s.Respond(creds)
			final, err := c.Final(first)
			if err != nil {
				t.Fatal(err)
			}
			if _, done, err := s.Next(final); err != nil || !done {
				t.Fatalf("Next = %v, %v", done, err)
			}
			_, _, err = s.Next(final)
			return err
		}},
		{name: "PLAIN Next", run: func(t *testing.T) error {
			s, _ := NewServer(Options{Mechanism: Plain})
			s.Start([]byte("\x00juliet\x00pw"))
			_, _, err := s.Next(nil)
			return err
		}},
		{name: "PLAIN Respond twice", run: func(t *testing.T) error {
			s, _ := NewServer(Options{Mechanism: Plain})
			s.Start([]byte("\x00juliet\x00pw"))
			s.Respond(nil)
			_, _, err := s.Respond(creds)
			return err
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if err := c.run(t); !errors.Is(err, ErrState) {
				t.Fatalf("err = %v, want ErrState", err)
			}
		})
	}
}
