package sasl

import (
	"encoding/base64"
	"slices"
	"strings"
	"testing"

	msasl "mellium.im/sasl"
)

// XEP-0474 (0.5.0) section 7 example: SCRAM-SHA-1-PLUS with tls-exporter,
// password "pencil", over SASL2 advertising SCRAM-SHA-1 and
// SCRAM-SHA-1-PLUS with XEP-0440 types tls-exporter and
// tls-server-end-point. The messages are the example's base64 payloads,
// decoded.
const (
	ssdpClientFirst = "p=tls-exporter,,n=user,r=12C4CD5C-E38E-4A98-8F6D-15C38F51CCC6"
	ssdpServerNonce = "a09117a6-ac50-4f2f-93f1-93799c2bddf6"
	ssdpSalt        = "QSXCR+Q6sek8bf92"
	ssdpServerFirst = "r=12C4CD5C-E38E-4A98-8F6D-15C38F51CCC6a09117a6-ac50-4f2f-93f1-93799c2bddf6,s=QSXCR+Q6sek8bf92,i=4096,h=G6k/rBLDqgOhRRaCuuatSDFkJ08="
	ssdpClientFinal = "c=cD10bHMtZXhwb3J0ZXIsLFRISVMgSVMgRkFLRSBDQiBEQVRB,r=12C4CD5C-E38E-4A98-8F6D-15C38F51CCC6a09117a6-ac50-4f2f-93f1-93799c2bddf6,x=19C6532F-1CF4-4A27-A18D-DC9CEA41BBB3,p=M/SIDjT+dfcxUh89jZEypRvFxB4="
	ssdpServerFinal = "v=MQrMPvv7yv4x4Cq4W4Ih25EqS2c="
	ssdpCBData      = "THIS IS FAKE CB DATA"
)

var (
	ssdpMechs = []string{ScramSHA1Plus, ScramSHA1} // unsorted on purpose
	ssdpTypes = []string{BindingTLSServerEndPoint, BindingTLSExporter}
)

// TestDowngradeProtectionXEPExample replays the XEP's example exchange: the
// server-first message carries exactly its h=, and the client's proof
// (signed over that server-first message) verifies.
func TestDowngradeProtectionXEPExample(t *testing.T) {
	withServerNonce(t, ssdpServerNonce)
	salt, _ := base64.StdEncoding.DecodeString(ssdpSalt)
	creds := &Credentials{SHA1: Derive(SHA1, "pencil", salt, 4096)}
	s, err := NewServer(Options{
		Mechanism:         ScramSHA1Plus,
		Binding:           bindingFor(BindingTLSExporter, []byte(ssdpCBData)),
		PlusAdvertised:    true,
		OfferedMechanisms: ssdpMechs,
		OfferedBindings:   ssdpTypes,
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Start([]byte(ssdpClientFirst)); err != nil {
		t.Fatal(err)
	}
	first, _, err := s.Respond(creds)
	if err != nil {
		t.Fatal(err)
	}
	if string(first) != ssdpServerFirst {
		t.Fatalf("server-first =\n%s\nwant\n%s", first, ssdpServerFirst)
	}
	final, done, err := s.Next([]byte(ssdpClientFinal))
	if err != nil || !done || string(final) != ssdpServerFinal {
		t.Fatalf("Next = %q, %v, %v; want %q", final, done, err, ssdpServerFinal)
	}
	if !slices.Equal(ssdpMechs, []string{ScramSHA1Plus, ScramSHA1}) || !slices.Equal(ssdpTypes, []string{BindingTLSServerEndPoint, BindingTLSExporter}) {
		t.Fatal("DowngradeHash sorted the caller's slices")
	}
}

// TestDowngradeProtectionStripped shows what the attribute is for: a client
// that received a list stripped in transit computes its hash over what it
// saw, and that differs from the server's h=. Each case is one thing a
// man in the middle could remove.
func TestDowngradeProtectionStripped(t *testing.T) {
	offered := Mechanisms(true)
	types := []string{BindingTLSExporter, BindingTLSServerEndPoint}
	withServerNonce(t, fixedServerNonce)
	for _, h := range []Hash{SHA1, SHA256, SHA512} {
		s, _ := NewServer(Options{Mechanism: h.scramName(), OfferedMechanisms: offered, OfferedBindings: types})
		if _, _, err := s.Start([]byte("n,,n=user,r=abc")); err != nil {
			t.Fatal(err)
		}
		first, _, err := s.Respond(nil)
		if err != nil {
			t.Fatal(err)
		}
		_, attr, ok := strings.Cut(string(first), ",h=")
		if !ok {
			t.Fatalf("%v: no h= in %q", h, first)
		}
		seen := func(mechs, cb []string) string {
			return base64.StdEncoding.EncodeToString(DowngradeHash(h, mechs, cb))
		}
		if got := seen(offered, types); got != attr {
			t.Fatalf("%v: client over the full offer computes %s, server sent %s", h, got, attr)
		}
		// The order a client received the list in does not matter.
		reversed := slices.Clone(offered)
		slices.Reverse(reversed)
		if got := seen(reversed, []string{types[1], types[0]}); got != attr {
			t.Fatalf("%v: order changed the hash", h)
		}
		stripped := []struct {
			name  string
			mechs []string
			cb    []string
		}{
			{"-PLUS removed", []string{ScramSHA512, ScramSHA256, ScramSHA1, Plain}, types},
			{"all but SCRAM-SHA-1 removed", []string{ScramSHA1}, types},
			{"tls-exporter removed", offered, []string{BindingTLSServerEndPoint}},
			{"XEP-0440 element removed", offered, nil},
		}
		for _, c := range stripped {
			if got := seen(c.mechs, c.cb); got == attr {
				t.Errorf("%v, %s: hash unchanged", h, c.name)
			}
		}
	}
}

// TestDowngradeProtectionOff: the zero Options send no h=, so exchanges
// stay byte for byte what they were.
func TestDowngradeProtectionOff(t *testing.T) {
	withServerNonce(t, fixedServerNonce)
	s, _ := NewServer(Options{Mechanism: ScramSHA256})
	s.Start([]byte("n,,n=user,r=abc"))
	first, _, err := s.Respond(nil)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(first), ",h=") {
		t.Fatalf("h= without an offer: %s", first)
	}
}

// TestDowngradeProtectionMellium: a client that does not know XEP-0474
// (mellium.im/sasl's) logs in as before when the server sends h=.
func TestDowngradeProtectionMellium(t *testing.T) {
	pair := newTLSPair(t)
	opts := Options{
		Binding:           TLSBinding(&pair.server, pair.leaf),
		PlusAdvertised:    true,
		OfferedMechanisms: Mechanisms(true),
		OfferedBindings:   []string{BindingTLSExporter, BindingTLSServerEndPoint},
	}
	for _, m := range []struct {
		mech  msasl.Mechanism
		copts []msasl.Option
	}{
		{mech: msasl.ScramSha256},
		{mech: msasl.ScramSha256Plus, copts: []msasl.Option{msasl.TLSState(pair.client), msasl.RemoteMechanisms(ScramSHA256Plus)}},
	} {
		if err := runMellium(t, m.mech, opts, testUser, testPassword, "", credsFor(t), m.copts...); err != nil {
			t.Errorf("%s: %v", m.mech.Name, err)
		}
	}
}
