package account_test

import (
	"context"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/krill-xmpp/krill/hook"
	"github.com/krill-xmpp/krill/modules/account"
	"github.com/krill-xmpp/krill/modules/internal/iqtest"
	"github.com/krill-xmpp/krill/sasl"
	"github.com/krill-xmpp/krill/storage"
)

// TestFASTTokensRevoked: an in-band password change (profanity's
// /changepassword) and an in-band removal delete the account's XEP-0484
// FAST tokens, in the real store, and leave other accounts' alone.
func TestFASTTokensRevoked(t *testing.T) {
	cases := []struct{ name, send, want string }{
		{"password change", `<iq id="cp1" type="set"><query xmlns="jabber:iq:register"><username>alice</username><password>new secret</password></query></iq>`,
			`<iq type='result' id='cp1'/>`},
		{"remove", `<iq type='set' id='rm'><query xmlns='jabber:iq:register'><remove/></query></iq>`,
			`<iq type='result' id='rm'/>`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			store, err := storage.OpenSQLite(filepath.Join(t.TempDir(), "krill.db"))
			if err != nil {
				t.Fatal(err)
			}
			defer store.Close()
			now := time.Now()
			for i, user := range []string{"alice", "bob"} {
				creds := sasl.Credentials{SHA256: sasl.Derive(sasl.SHA256, "pw", []byte("salt-salt-salt-1"), 4096)}
				if err := store.AddAccount(ctx, user, creds); err != nil {
					t.Fatal(err)
				}
				tok := storage.FastToken{Username: user, ID: "id" + user, Client: "phone", Mechanism: sasl.HTSHA256Expr,
					Created: now, Expires: now.Add(time.Hour)}
				if err := store.AddFastToken(ctx, tok, 3, ""); err != nil {
					t.Fatalf("token %d: %v", i, err)
				}
			}
			reg, err := hook.New(account.New(store))
			if err != nil {
				t.Fatal(err)
			}
			one := iqtest.Bound("alice", "one")
			res := iqtest.Send(t, reg, &iqtest.Host{List: []*iqtest.Session{one}}, one, tc.send)
			if !slices.Equal(res.Conn.Written, []string{tc.want}) {
				t.Fatalf("wrote %q, want %q", res.Conn.Written, tc.want)
			}
			for user, want := range map[string]int{"alice": 0, "bob": 1} {
				toks, err := store.FastTokens(ctx, user, "phone")
				if err != nil || len(toks) != want {
					t.Fatalf("%s has %d tokens (%v), want %d", user, len(toks), err, want)
				}
			}
		})
	}
}
