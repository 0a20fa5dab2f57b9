package sasl

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"net"
	"sync"
	"testing"
	"time"

	msasl "mellium.im/sasl"
)

const (
	testUser     = "juliet"
	testPassword = "r0m30myr0m30"
)

var (
	testCredsOnce sync.Once
	testCreds     Credentials
)

// credsFor returns the credentials of testUser, derived once per run.
func credsFor(t testing.TB) *Credentials {
	t.Helper()
	testCredsOnce.Do(func() {
		var err error
		if testCreds, err = NewCredentials(testPassword, DefaultIterations); err != nil {
			panic(err)
		}
	})
	c := testCreds
	return &c
}

// tlsPair holds both ends of a completed TLS 1.3 handshake over net.Pipe.
type tlsPair struct {
	client, server tls.ConnectionState
	leaf           *x509.Certificate
}

var (
	tlsPairOnce sync.Once
	tlsPairVal  tlsPair
	tlsPairErr  error
)

// newTLSPair runs one real crypto/tls handshake in memory, so that the
// client's ConnectionState can export keying material for mellium.
func newTLSPair(t testing.TB) tlsPair {
	t.Helper()
	tlsPairOnce.Do(func() { tlsPairVal, tlsPairErr = handshake() })
	if tlsPairErr != nil {
		t.Fatal(tlsPairErr)
	}
	return tlsPairVal
}

func handshake() (tlsPair, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tlsPair{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "example.net"},
		DNSNames:     []string{"example.net"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tlsPair{}, err
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return tlsPair{}, err
	}
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	cc, sc := net.Pipe()
	defer cc.Close()
	defer sc.Close()
	deadline := time.Now().Add(time.Minute) // a hang guard, not a timing assertion
	cc.SetDeadline(deadline)
	sc.SetDeadline(deadline)
	srv := tls.Server(sc, &tls.Config{
		Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}},
		MinVersion:   tls.VersionTLS13,
	})
	cli := tls.Client(cc, &tls.Config{ServerName: "example.net", RootCAs: pool, MinVersion: tls.VersionTLS13})
	errc := make(chan error, 1)
	go func() { errc <- srv.Handshake() }()
	if err := cli.Handshake(); err != nil {
		return tlsPair{}, err
	}
	if err := <-errc; err != nil {
		return tlsPair{}, err
	}
	return tlsPair{client: cli.ConnectionState(), server: srv.ConnectionState(), leaf: leaf}, nil
}

// runMellium drives mellium's client against our server and returns the
// server's error, checking that both sides agree on success.
func runMellium(t *testing.T, mech msasl.Mechanism, opts Options, user, pass, authz string, creds *Credentials, copts ...msasl.Option) error {
	t.Helper()
	copts = append(copts, msasl.Credentials(func() ([]byte, []byte, []byte) {
		return []byte(user), []byte(pass), []byte(authz)
	}))
	client := msasl.NewClient(mech, copts...)
	opts.Mechanism = mech.Name
	s, err := NewServer(opts)
	if err != nil {
		return err
	}
	_, msg, err := client.Step(nil)
	if err != nil {
		t.Fatalf("client start: %v", err)
	}
	gotUser, gotAuthz, err := s.Start(msg)
	if err != nil {
		return err
	}
	if gotUser != user || gotAuthz != authz {
		t.Errorf("Start = %q, %q; want %q, %q", gotUser, gotAuthz, user, authz)
	}
	msg, done, err := s.Respond(creds)
	// Bounded: SCRAM has one challenge and PLAIN none.
	for step := 0; err == nil && !done && step < 2; step++ {
		if _, msg, err = client.Step(msg); err != nil {
			t.Fatalf("client step %d: %v", step, err)
		}
		msg, done, err = s.Next(msg)
	}
	if err != nil {
		return err
	}
	if !done {
		t.Fatal("exchange did not finish")
	}
	if msg != nil {
		if _, _, err := client.Step(msg); err != nil {
			t.Fatalf("client rejected server-final %q: %v", msg, err)
		}
	}
	return nil
}

func TestMelliumInterop(t *testing.T) {
	pair := newTLSPair(t)
	binding := TLSBinding(&pair.server, pair.leaf)
	creds := credsFor(t)
	mechs := []struct {
		mech  msasl.Mechanism
		plus  bool
		copts []msasl.Option
	}{
		{mech: msasl.Plain},
		{mech: msasl.ScramSha1},
		{mech: msasl.ScramSha256},
		// mellium picks tls-exporter on TLS 1.3 when the server lists the mechanism.
		{mech: msasl.ScramSha1Plus, plus: true, copts: []msasl.Option{msasl.TLSState(pair.client), msasl.RemoteMechanisms(ScramSHA1Plus)}},
		{mech: msasl.ScramSha256Plus, plus: true, copts: []msasl.Option{msasl.TLSState(pair.client), msasl.RemoteMechanisms(ScramSHA256Plus)}},
	}
	cases := []struct {
		name     string
		user     string
		password string
		authz    string
		creds    *Credentials
		want     error
	}{
		{name: "right password", user: testUser, password: testPassword, creds: creds},
		{name: "right password with authzid", user: testUser, password: testPassword, authz: "juliet@example.net", creds: creds},
		{name: "wrong password", user: testUser, password: "r0m30", creds: creds, want: ErrNotAuthorized},
		{name: "unknown user", user: "nobody", password: testPassword, creds: nil, want: ErrNotAuthorized},
		{name: "user name with escapes", user: "a=b,c", password: testPassword, creds: creds},
	}
	for _, m := range mechs {
		for _, c := range cases {
			t.Run(m.mech.Name+"/"+c.name, func(t *testing.T) {
				opts := Options{PlusAdvertised: m.plus}
				if m.plus {
					opts.Binding = binding
				}
				err := runMellium(t, m.mech, opts, c.user, c.password, c.authz, c.creds, m.copts...)
				if !errors.Is(err, c.want) || (c.want == nil && err != nil) {
					t.Fatalf("err = %v, want %v", err, c.want)
				}
			})
		}
	}
}

// TestMelliumNoRemotePlus pins what happens when mellium uses a -PLUS
// mechanism without knowing the server offers it: it sends flag 'y', which
// contradicts the mechanism.
func TestMelliumNoRemotePlus(t *testing.T) {
	pair := newTLSPair(t)
	err := runMellium(t, msasl.ScramSha256Plus, Options{Binding: TLSBinding(&pair.server, pair.leaf)},
		testUser, testPassword, "", credsFor(t), msasl.TLSState(pair.client))
	if !errors.Is(err, ErrBindingFlag) {
		t.Fatalf("err = %v, want ErrBindingFlag", err)
	}
}

// runClient drives the independent test client against our server.
func runClient(t *testing.T, c *testClient, opts Options, creds *Credentials) error {
	t.Helper()
	s, err := NewServer(opts)
	if err != nil {
		return err
	}
	user, authz, err := s.Start(c.First())
	if err != nil {
		return err
	}
	if user != c.user || authz != c.authzid {
		t.Errorf("Start = %q, %q; want %q, %q", user, authz, c.user, c.authzid)
	}
	first, done, err := s.Respond(creds)
	if err != nil || done {
		t.Fatalf("Respond: done=%v err=%v", done, err)
	}
	final, err := c.Final(first)
	if err != nil {
		t.Fatalf("client final: %v", err)
	}
	last, done, err := s.Next(final)
	if err != nil {
		return err
	}
	if !done {
		t.Fatal("not done after client-final")
	}
	if err := c.Verify(last); err != nil {
		t.Fatal(err)
	}
	return nil
}

func TestTestClientInterop(t *testing.T) {
	pair := newTLSPair(t)
	binding := TLSBinding(&pair.server, pair.leaf)
	exporter, err := pair.client.ExportKeyingMaterial(exporterLabel, nil, exporterLen)
	if err != nil {
		t.Fatal(err)
	}
	endPoint, err := serverEndPoint(pair.client.PeerCertificates[0])
	if err != nil {
		t.Fatal(err)
	}
	creds := credsFor(t)
	cases := []struct {
		name  string
		mech  string
		c     testClient
		creds *Credentials
		plusA bool
		want  error
	}{
		{name: "SHA-512 right password", mech: ScramSHA512, c: testClient{hash: SHA512, user: testUser, password: testPassword}, creds: creds},
		{name: "SHA-512 wrong password", mech: ScramSHA512, c: testClient{hash: SHA512, user: testUser, password: "x"}, creds: creds, want: ErrNotAuthorized},
		{name: "SHA-512 unknown user", mech: ScramSHA512, c: testClient{hash: SHA512, user: "nobody", password: testPassword}, want: ErrNotAuthorized},
		{name: "SHA-512 authzid with escapes", mech: ScramSHA512, c: testClient{hash: SHA512, user: testUser, password: testPassword, authzid: "x=y,z"}, creds: creds},
		{name: "SHA-512-PLUS tls-exporter", mech: ScramSHA512Plus, c: testClient{hash: SHA512, user: testUser, password: testPassword, gs2: "p=tls-exporter", cbData: exporter}, creds: creds, plusA: true},
		{name: "SHA-512-PLUS tls-server-end-point", mech: ScramSHA512Plus, c: testClient{hash: SHA512, user: testUser, password: testPassword, gs2: "p=tls-server-end-point", cbData: endPoint}, creds: creds, plusA: true},
		{name: "SHA-256-PLUS tls-server-end-point", mech: ScramSHA256Plus, c: testClient{hash: SHA256, user: testUser, password: testPassword, gs2: "p=tls-server-end-point", cbData: endPoint}, creds: creds, plusA: true},
		{name: "SHA-1-PLUS tls-server-end-point", mech: ScramSHA1Plus, c: testClient{hash: SHA1, user: testUser, password: testPassword, gs2: "p=tls-server-end-point", cbData: endPoint}, creds: creds, plusA: true},
		{name: "SHA-512-PLUS wrong binding data", mech: ScramSHA512Plus, c: testClient{hash: SHA512, user: testUser, password: testPassword, gs2: "p=tls-exporter", cbData: endPoint}, creds: creds, plusA: true, want: ErrChannelBinding},
		{name: "SHA-512-PLUS unknown user", mech: ScramSHA512Plus, c: testClient{hash: SHA512, user: "nobody", password: testPassword, gs2: "p=tls-exporter", cbData: exporter}, plusA: true, want: ErrNotAuthorized},
		{name: "flag y without -PLUS offered", mech: ScramSHA256, c: testClient{hash: SHA256, user: testUser, password: testPassword, gs2: "y"}, creds: creds},
		{name: "flag y with -PLUS offered", mech: ScramSHA256, c: testClient{hash: SHA256, user: testUser, password: testPassword, gs2: "y"}, creds: creds, plusA: true, want: ErrDowngrade},
		{name: "hash not stored for account", mech: ScramSHA1, c: testClient{hash: SHA1, user: testUser, password: testPassword}, creds: &Credentials{SHA256: creds.SHA256}, want: ErrNotAuthorized},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			opts := Options{Mechanism: c.mech, PlusAdvertised: c.plusA, Binding: binding}
			err := runClient(t, &c.c, opts, c.creds)
			if !errors.Is(err, c.want) || (c.want == nil && err != nil) {
				t.Fatalf("err = %v, want %v", err, c.want)
			}
		})
	}
}
