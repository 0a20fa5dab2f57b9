package account_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"

	"github.com/krill-xmpp/krill/hook"
	"github.com/krill-xmpp/krill/modules/account"
	"github.com/krill-xmpp/krill/modules/internal/iqtest"
	"github.com/krill-xmpp/krill/sasl"
	"github.com/krill-xmpp/krill/storage"
)

// memStore is an account.Store in memory.
type memStore struct {
	creds map[string]sasl.Credentials
	fail  error
}

func (m *memStore) SetCredentials(_ context.Context, user string, c sasl.Credentials) error {
	if m.fail != nil {
		return m.fail
	}
	if _, ok := m.creds[user]; !ok {
		return storage.ErrNotFound
	}
	m.creds[user] = c
	return nil
}

func (m *memStore) RemoveAccount(_ context.Context, user string) error {
	if m.fail != nil {
		return m.fail
	}
	if _, ok := m.creds[user]; !ok {
		return storage.ErrNotFound
	}
	delete(m.creds, user)
	return nil
}

const errNS = `xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'`

// TestAccount: the requests of profanity's /changepassword and of
// XEP-0077 §3.1-3.3 examples, and each refusal, with the exact replies,
// the sessions closed and the store afterwards.
func TestAccount(t *testing.T) {
	cases := []struct {
		name, send string
		storeErr   error
		want       string
		failed     string // the requesting connection's stream error
		kicked     bool   // the other session closed
		creds      string // "same", "gone" or the new password
	}{
		{"registered", `<iq type='get' id='g1'><query xmlns='jabber:iq:register'/></iq>`, nil,
			`<iq type='result' id='g1'><query xmlns='jabber:iq:register'><registered/><username>alice</username><password/></query></iq>`, "", false, "same"},
		{"registered to domain", `<iq type='get' id='g2' to='localhost'><query xmlns='jabber:iq:register'/></iq>`, nil,
			`<iq type='result' id='g2' from='localhost'><query xmlns='jabber:iq:register'><registered/><username>alice</username><password/></query></iq>`, "", false, "same"},
		{"registered to own bare", `<iq type='get' id='g3' to='alice@localhost'><query xmlns='jabber:iq:register'/></iq>`, nil,
			`<iq type='result' id='g3' from='alice@localhost'><query xmlns='jabber:iq:register'><registered/><username>alice</username><password/></query></iq>`, "", false, "same"},
		{"another account's get", `<iq type='get' id='x0' to='bob@localhost'><query xmlns='jabber:iq:register'/></iq>`, nil,
			`<iq type='error' id='x0' from='bob@localhost' to='alice@localhost/one'><error type='auth'><forbidden ` + errNS + `/></error></iq>`, "", false, "same"},
		{"another account's remove", `<iq type='set' id='x1' to='bob@localhost'><query xmlns='jabber:iq:register'><remove/></query></iq>`, nil,
			`<iq type='error' id='x1' from='bob@localhost' to='alice@localhost/one'><error type='auth'><forbidden ` + errNS + `/></error></iq>`, "", false, "same"},
		{"another username", `<iq type='set' id='x2'><query xmlns='jabber:iq:register'><username>bob</username><password>pw</password></query></iq>`, nil,
			`<iq type='error' id='x2' to='alice@localhost/one'><error type='cancel'><not-allowed ` + errNS + `/></error></iq>`, "", false, "same"},
		{"no password", `<iq type='set' id='x3'><query xmlns='jabber:iq:register'><username>alice</username></query></iq>`, nil,
			`<iq type='error' id='x3' to='alice@localhost/one'><error type='modify'><bad-request ` + errNS + `/></error></iq>`, "", false, "same"},
		{"empty password", `<iq type='set' id='x4'><query xmlns='jabber:iq:register'><username>alice</username><password/></query></iq>`, nil,
			`<iq type='error' id='x4' to='alice@localhost/one'><error type='modify'><bad-request ` + errNS + `/></error></iq>`, "", false, "same"},
		{"password too long", fmt.Sprintf(`<iq type='set' id='x5'><query xmlns='jabber:iq:register'><username>alice</username><password>%0*d</password></query></iq>`, account.MaxPasswordLen+1, 0), nil,
			`<iq type='error' id='x5' to='alice@localhost/one'><error type='modify'><bad-request ` + errNS + `/></error></iq>`, "", false, "same"},
		{"markup in password", `<iq type='set' id='x6'><query xmlns='jabber:iq:register'><username>alice</username><password>a<b/></password></query></iq>`, nil,
			`<iq type='error' id='x6' to='alice@localhost/one'><error type='modify'><bad-request ` + errNS + `/></error></iq>`, "", false, "same"},
		{"bad escape", `<iq type='set' id='x7'><query xmlns='jabber:iq:register'><username>alice</username><password>&bogus;</password></query></iq>`, nil,
			`<iq type='error' id='x7' to='alice@localhost/one'><error type='modify'><bad-request ` + errNS + `/></error></iq>`, "", false, "same"},
		{"password in another namespace", `<iq type='set' id='x8'><query xmlns='jabber:iq:register'><username>alice</username><password xmlns='urn:x'>pw</password></query></iq>`, nil,
			`<iq type='error' id='x8' to='alice@localhost/one'><error type='modify'><bad-request ` + errNS + `/></error></iq>`, "", false, "same"},
		{"store down", `<iq type='set' id='x9'><query xmlns='jabber:iq:register'><username>alice</username><password>new</password></query></iq>`, errors.New("disk on fire"),
			`<iq type='error' id='x9' to='alice@localhost/one'><error type='wait'><internal-server-error ` + errNS + `/></error></iq>`, "", false, "same"},
		{"password change", `<iq id="cp1" type="set"><query xmlns="jabber:iq:register"><username>alice</username><password>new secret</password></query></iq>`, nil,
			`<iq type='result' id='cp1'/>`, "", true, "new secret"},
		{"password change, username as a JID", `<iq id="cp2" type="set"><query xmlns="jabber:iq:register"><username>Alice</username><password>n&amp;w</password></query></iq>`, nil,
			`<iq type='result' id='cp2'/>`, "", true, "n&w"},
		{"remove", `<iq type='set' id='rm'><query xmlns='jabber:iq:register'><remove/></query></iq>`, nil,
			`<iq type='result' id='rm'/>`, "not-authorized", true, "gone"},
		{"remove, store down", `<iq type='set' id='rm2'><query xmlns='jabber:iq:register'><remove/></query></iq>`, errors.New("disk on fire"),
			`<iq type='error' id='rm2' to='alice@localhost/one'><error type='wait'><internal-server-error ` + errNS + `/></error></iq>`, "", false, "same"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			old := sasl.Credentials{SHA256: sasl.Credential{Iterations: 1}}
			store := &memStore{creds: map[string]sasl.Credentials{"alice": old, "bob": old}, fail: tc.storeErr}
			mod := account.New(store)
			reg, err := hook.New(mod)
			if err != nil {
				t.Fatal(err)
			}
			one, two, bob := iqtest.Bound("alice", "one"), iqtest.Bound("alice", "two"), iqtest.Bound("bob", "b")
			h := &iqtest.Host{List: []*iqtest.Session{one, two, bob}}
			res := iqtest.Send(t, reg, h, one, tc.send)
			if !res.Handled || !slices.Equal(res.Conn.Written, []string{tc.want}) || res.Conn.Failed != tc.failed {
				t.Fatalf("handled %v, wrote %q, failed %q; want %q, %q", res.Handled, res.Conn.Written, res.Conn.Failed, tc.want, tc.failed)
			}
			wantKick := ""
			if tc.kicked {
				wantKick = "not-authorized: " + account.KickedText
			}
			if one.Closed != "" || two.Closed != wantKick || bob.Closed != "" {
				t.Fatalf("closed: one %q two %q bob %q; want two %q", one.Closed, two.Closed, bob.Closed, wantKick)
			}
			c, ok := store.creds["alice"]
			switch tc.creds {
			case "gone":
				ok = !ok
			case "same":
				ok = ok && c.SHA256.Iterations == 1
			default:
				want := sasl.Derive(sasl.SHA256, tc.creds, c.SHA256.Salt, c.SHA256.Iterations)
				ok = ok && c.SHA256.Iterations == sasl.DefaultIterations && string(c.SHA256.StoredKey) == string(want.StoredKey)
			}
			if !ok {
				t.Fatalf("credentials %+v, want %s", c, tc.creds)
			}
			if _, ok := store.creds["bob"]; !ok {
				t.Fatal("bob's account gone")
			}
			s := mod.Stats()
			want := account.Stats{}
			switch tc.creds {
			case "gone":
				want.AccountsRemoved = 1
			case "same":
			default:
				want.PasswordsChanged = 1
			}
			if s != want {
				t.Fatalf("stats %+v, want %+v", s, want)
			}
		})
	}
}

// TestNoStore: a module without a store refuses to register.
func TestNoStore(t *testing.T) {
	if _, err := hook.New(account.Module{}); err == nil {
		t.Fatal("registered without a store")
	}
}
