package bench_test

import (
	"context"
	"errors"
	"net"
	"testing"

	"github.com/krill-xmpp/krill/bench"
)

// TestAuthenticate2 logs in over SASL2 against a real server, and fails
// the way the attack's hostile profiles do: a wrong password over SASL2
// and a wrong FAST token are refused (ErrRefused), each counted by the
// server as a failed credential.
func TestAuthenticate2(t *testing.T) {
	srv := startBenchServer(t, 2)
	tc, err := clientTLS(srv.caFile)
	if err != nil {
		t.Fatal(err)
	}
	o := bench.Options{Addr: srv.Addr().String(), N: 1, Stage: bench.StageTLS, TLSConfig: tc, Timeout: testTimeout}
	const ua = "0badc0de-0000-4000-8000-000000000000"
	tests := []struct {
		name       string
		login      func(c net.Conn) error
		want       error
		credential uint64
		sasl2      uint64
	}{
		{name: "sasl2 password", sasl2: 1,
			login: func(c net.Conn) error { return bench.Authenticate2(c, "bench1", bench.DefaultPassword) }},
		{name: "sasl2 wrong password", want: bench.ErrRefused, credential: 1,
			login: func(c net.Conn) error { return bench.Authenticate2(c, "bench1", "wrong") }},
		{name: "wrong token", want: bench.ErrRefused, credential: 1,
			login: func(c net.Conn) error { return bench.AuthenticateToken(c, "bench1", "not-a-token", ua) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
			defer cancel()
			c, err := bench.Dial(ctx, o, 1)
			if err != nil {
				t.Fatal(err)
			}
			defer bench.Abort(c)
			before := srv.Stats()
			err = tt.login(c)
			if tt.want == nil && err != nil || tt.want != nil && !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
			st := srv.Stats()
			if got := st.AuthFailedCredential - before.AuthFailedCredential; got != tt.credential {
				t.Errorf("failed credentials %d, want %d", got, tt.credential)
			}
			if got := st.AuthSASL2 - before.AuthSASL2; got != tt.sasl2 {
				t.Errorf("SASL2 logins %d, want %d", got, tt.sasl2)
			}
		})
	}
}
