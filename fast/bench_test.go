package fast

import (
	"context"
	"testing"
	"time"

	"github.com/krill-xmpp/krill/sasl"
	"github.com/krill-xmpp/krill/storage"
)

// memTokens is a storage.FastTokens that answers from memory, so that the
// benchmark measures the CPU of a token login without the database.
type memTokens struct{ rows []storage.FastToken }

func (m *memTokens) FastTokens(context.Context, string, string) ([]storage.FastToken, error) {
	return m.rows, nil
}
func (m *memTokens) AddFastToken(_ context.Context, t storage.FastToken, _ int, _ string) error {
	m.rows = append(m.rows, t)
	return nil
}
func (m *memTokens) UseFastToken(context.Context, string, string, int64, time.Time, bool) error {
	return nil
}
func (m *memTokens) DeleteFastTokens(context.Context, string) (int64, error)           { return 0, nil }
func (m *memTokens) DeleteExpiredFastTokens(context.Context, time.Time) (int64, error) { return 0, nil }

// BenchmarkAuthenticateCPU measures a FAST login with HT-SHA-256-EXPR as a
// worker runs it, storage excluded: derive the client's two tokens (current
// and new) from the secret, NewHT, Start, Verify, and the responder
// message.
func BenchmarkAuthenticateCPU(b *testing.B) {
	store := &memTokens{}
	now := time.Date(2026, 11, 30, 6, 0, 0, 0, time.UTC)
	tokens, err := New(store, testSecret(1), Options{Now: func() time.Time { return now }})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	if _, err := tokens.Issue(ctx, "juliet", "phone", sasl.HTSHA256Expr); err != nil {
		b.Fatal(err)
	}
	tok, err := tokens.Issue(ctx, "juliet", "phone", sasl.HTSHA256Expr)
	if err != nil {
		b.Fatal(err)
	}
	cb := exporterA
	msg := append([]byte("juliet\x00"), hmac256([]byte(tok.Secret), cat("Initiator", cb))...)
	l := Login{Username: "juliet", Client: "phone", Count: -1}
	b.ReportAllocs()
	for b.Loop() {
		ht, err := sasl.NewHT(sasl.Options{Mechanism: sasl.HTSHA256Expr, Binding: binding(cb)})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := ht.Start(msg); err != nil {
			b.Fatal(err)
		}
		if _, err := tokens.Authenticate(ctx, ht, l); err != nil {
			b.Fatal(err)
		}
	}
}
