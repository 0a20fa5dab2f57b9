package server_test

import (
	"context"
	"crypto/pbkdf2"
	"crypto/sha256"
	"encoding/base64"
	"regexp"
	"strconv"
	"testing"

	msasl "mellium.im/sasl"

	"github.com/krill-xmpp/krill/sasl"
)

// TestSASL2UpgradeTask: XEP-0480. An account with SCRAM-SHA-1 keys only
// logs in with SCRAM-SHA-1-PLUS asking for UPGR-SCRAM-SHA-256: the server
// answers <continue/>, sends a salt, takes the SaltedPassword (computed
// here with crypto/pbkdf2) and adds SCRAM-SHA-256 keys, with which the
// account then logs in. An account that has the keys gets <success/> at
// once; tasks out of turn are refused.
func TestSASL2UpgradeTask(t *testing.T) {
	cfg := tlsConfig(t)
	srv, store := startServerOpts(t, cfg, serverOpts{}, "alice")
	full, err := sasl.NewCredentials(testPassword, sasl.DefaultIterations)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := store.AddAccount(ctx, "old", sasl.Credentials{SHA1: full.SHA1}); err != nil {
		t.Fatal(err)
	}
	tc := clientTLS(t, cfg)
	const ask = `<upgrade xmlns='urn:xmpp:sasl:upgrade:0'>UPGR-SCRAM-SHA-256</upgrade>`

	r := sasl2TLS(t, srv, tc)
	c := r.sasl2Scram(t, msasl.ScramSha1Plus, "old", testPassword, `<user-agent id='`+uaA+`'/>`+ask)
	got := r.expect(t, `<continue xmlns='urn:xmpp:sasl:2'><additional-data>{*}</additional-data><tasks><task>UPGR-SCRAM-SHA-256</task></tasks>`+
		`<text>this account has no SCRAM-SHA-256 keys yet</text></continue>`)
	verify(t, c, got)
	r.exchange(t, `<task-data xmlns='urn:xmpp:sasl:2'><hash xmlns='urn:xmpp:scram-upgrade:0'>AAAA</hash></task-data>`,
		sasl2Failure("malformed-request", "no task data was asked for"))

	r = sasl2TLS(t, srv, tc)
	c = r.sasl2Scram(t, msasl.ScramSha1Plus, "old", testPassword, ask)
	verify(t, c, r.expect(t, `<continue xmlns='urn:xmpp:sasl:2'><additional-data>{*}</additional-data><tasks><task>UPGR-SCRAM-SHA-256</task></tasks><text>{*}</text></continue>`))
	r.exchange(t, `<next xmlns='urn:xmpp:sasl:2' task='UPGR-SCRAM-SHA-512'/>`, sasl2Failure("malformed-request", "that task was not offered"))

	r = sasl2TLS(t, srv, tc)
	c = r.sasl2Scram(t, msasl.ScramSha1Plus, "old", testPassword, ask+ask)
	verify(t, c, r.expect(t, `<continue xmlns='urn:xmpp:sasl:2'><additional-data>{*}</additional-data><tasks><task>UPGR-SCRAM-SHA-256</task></tasks><text>{*}</text></continue>`))
	got = r.exchange(t, `<next xmlns='urn:xmpp:sasl:2' task='UPGR-SCRAM-SHA-256'/>`,
		`<task-data xmlns='urn:xmpp:sasl:2'><salt xmlns='urn:xmpp:scram-upgrade:0' iterations='{*}'>{*}</salt></task-data>`)
	m := regexp.MustCompile(`iterations='(\d+)'>([^<]+)</salt>`).FindStringSubmatch(got)
	iters, _ := strconv.Atoi(m[1])
	salt, err := base64.StdEncoding.DecodeString(m[2])
	if err != nil || iters < 4096 {
		t.Fatalf("task data %q", got)
	}
	salted, err := pbkdf2.Key(sha256.New, testPassword, salt, iters, sha256.Size)
	if err != nil {
		t.Fatal(err)
	}
	r.exchange(t, `<task-data xmlns='urn:xmpp:sasl:2'><hash xmlns='urn:xmpp:scram-upgrade:0'>`+b64(salted)+`</hash></task-data>`,
		`<success xmlns='urn:xmpp:sasl:2'><authorization-identifier>old@localhost</authorization-identifier></success>`+boundFeatures)
	creds, err := store.Credentials(ctx, "old")
	if err != nil || creds.SHA256.IsZero() || !creds.SHA512.IsZero() || creds.SHA1.Iterations != full.SHA1.Iterations {
		t.Fatalf("credentials after the upgrade: %+v, %v", creds, err)
	}
	if st := srv.Stats(); st.Upgraded != 1 {
		t.Fatalf("upgraded %d, want 1", st.Upgraded)
	}

	// The new keys log in; asked again, there is nothing to upgrade.
	r = sasl2TLS(t, srv, tc)
	c = r.sasl2Scram(t, msasl.ScramSha256Plus, "old", testPassword, ask)
	verify(t, c, r.expect(t, `<success xmlns='urn:xmpp:sasl:2'><additional-data>{*}</additional-data><authorization-identifier>old@localhost</authorization-identifier></success>`+boundFeatures))
	// A wrong password is refused before any task.
	r = sasl2TLS(t, srv, tc)
	r.sasl2Scram(t, msasl.ScramSha1Plus, "old", "wrong", ask)
	r.expect(t, sasl2Failure("not-authorized", "wrong username or password"))
}
