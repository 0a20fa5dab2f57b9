package server_test

import (
	"encoding/base64"
	"regexp"
	"strings"
	"testing"

	"github.com/krill-xmpp/krill/sasl"
)

// TestSCRAMDowngradeProtection: XEP-0474. The SCRAM server-first message
// carries h=, the hash of the mechanisms and channel-binding types the
// stream features offered, as the client computes it from the features it
// received; a client that received a stripped list (here the -PLUS
// mechanisms removed by someone in the path) computes another hash and so
// detects the downgrade. Without TLS the plaintext offer is hashed, with
// no channel-binding types.
func TestSCRAMDowngradeProtection(t *testing.T) {
	mechRe := regexp.MustCompile(`<mechanism>([^<]+)</mechanism>`)
	cbRe := regexp.MustCompile(`<channel-binding type='([^']+)'/>`)
	all := func(re *regexp.Regexp, s string) []string {
		var out []string
		for _, m := range re.FindAllStringSubmatch(s, -1) {
			out = append(out, m[1])
		}
		return out
	}
	for _, overTLS := range []bool{true, false} {
		name := "plaintext"
		if overTLS {
			name = "TLS"
		}
		t.Run(name, func(t *testing.T) {
			cfg := tlsConfig(t)
			cfg.C2S.AllowPlaintext = !overTLS
			srv := startServer(t, cfg, "dora")
			var r *rawConn
			if overTLS {
				r = tlsRaw(t, srv, clientTLS(t, cfg))
			} else {
				r = dialRaw(t, srv)
			}
			feats := r.open()
			// The RFC 6120 <mechanisms/> only: SASL2's <authentication/>
			// repeats them, and FAST's <fast/> lists its own.
			mechs, cbs := all(mechRe, between(feats, "<mechanisms ", "</mechanisms>")), all(cbRe, feats)
			if len(mechs) == 0 || overTLS != (len(cbs) == 2) {
				t.Fatalf("features %q", feats)
			}
			first := "n,,n=dora,r=abcdefghijklmnopqrstuvwx"
			r.send(`<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='SCRAM-SHA-256'>` + base64.StdEncoding.EncodeToString([]byte(first)) + `</auth>`)
			chal := between(r.expect(t, `<challenge xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>{*}</challenge>`), "'>", "</challenge>")
			raw, err := base64.StdEncoding.DecodeString(chal)
			if err != nil {
				t.Fatal(err)
			}
			var h string
			for _, attr := range strings.Split(string(raw), ",") {
				if v, ok := strings.CutPrefix(attr, "h="); ok {
					h = v
				}
			}
			want := base64.StdEncoding.EncodeToString(sasl.DowngradeHash(sasl.SHA256, mechs, cbs))
			if h != want {
				t.Fatalf("server-first %q: h=%q, want %q from the offered %v %v", raw, h, want, mechs, cbs)
			}
			var stripped []string
			for _, m := range mechs {
				if !strings.HasSuffix(m, "-PLUS") && m != "SCRAM-SHA-512" {
					stripped = append(stripped, m)
				}
			}
			if base64.StdEncoding.EncodeToString(sasl.DowngradeHash(sasl.SHA256, stripped, nil)) == h {
				t.Fatalf("a stripped list %v hashes like the offered one", stripped)
			}
		})
	}
}
