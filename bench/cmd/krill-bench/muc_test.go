package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/krill-xmpp/krill/config"
	"github.com/krill-xmpp/krill/fast"
	"github.com/krill-xmpp/krill/modules"
	"github.com/krill-xmpp/krill/sasl"
	"github.com/krill-xmpp/krill/server"
	"github.com/krill-xmpp/krill/storage"
)

// startKrill runs a Krill server on 127.0.0.1 with the standard modules,
// STARTTLS required, and accounts bench0 .. bench<accounts-1> with the
// bench password; the MUC service's limits are raised as muc-compare.sh
// raises them. It stops when tb ends.
func startKrill(tb testing.TB, accounts int) *server.Server {
	tb.Helper()
	cfg := config.Default()
	cfg.DataDir = tb.TempDir()
	cfg.C2S.Listen = "127.0.0.1:0"
	cfg.C2S.DirectTLSListen = ""
	cfg.S2S.Listen = ""
	cfg.Admin.Listen = ""
	cfg.C2S.IdlePing = 0
	cfg.Log.Level = "error"
	cfg.MUC.MessageRate = 0
	cfg.MUC.MaxOccupants = accounts
	store, err := storage.OpenSQLite(filepath.Join(cfg.DataDir, "krill.db"))
	if err != nil {
		tb.Fatal(err)
	}
	creds, err := sasl.NewCredentials("bench password", sasl.DefaultIterations)
	if err != nil {
		tb.Fatal(err)
	}
	accts := make([]storage.NewAccount, accounts)
	for i := range accts {
		accts[i] = storage.NewAccount{Username: "bench" + strconv.Itoa(i), Credentials: creds}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := store.AddAccounts(ctx, accts); err != nil {
		tb.Fatal(err)
	}
	secret, err := fast.LoadSecret(cfg.FASTSecretFile())
	if err != nil {
		tb.Fatal(err)
	}
	tokens, err := fast.New(store, secret, fast.Options{TTL: cfg.FAST.TokenTTL, MaxTokens: cfg.FAST.MaxTokens})
	if err != nil {
		tb.Fatal(err)
	}
	r, err := modules.Registry(store, modules.Options{Config: cfg, FAST: tokens})
	if err != nil {
		tb.Fatal(err)
	}
	srv, err := server.New(cfg, nil, store, r)
	if err != nil {
		tb.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := srv.Stop(ctx); err != nil {
			tb.Errorf("server Stop: %v", err)
		}
		_ = store.Close()
	})
	return srv
}

// TestMUC runs the muc workload against a Krill server in this process:
// 20 occupants in two client processes, over STARTTLS and SCRAM-SHA-256,
// and 5 messages; every occupant must read every message, in order.
func TestMUC(t *testing.T) {
	tests := []struct {
		name       string
		persistent bool
		broadcast  string
		// Bounds on the presence stanzas an occupant reads: its own
		// initial presence, its self-presence in the room and the
		// sender's; with every presence broadcast, also the other 19
		// occupants' (those in the room when it joins, and those who
		// join after it).
		minPres, maxPres float64
	}{
		{"temporary, moderators' presence only", false, "moderator", 2, 4},
		{"persistent, every presence", true, "", 2 + 19, 4 + 19},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			const occupants, messages = 20, 5
			srv := startKrill(t, occupants+1)
			jsonPath := filepath.Join(t.TempDir(), "out.jsonl")
			var stdout, stderr bytes.Buffer
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			err := run(ctx, []string{"muc", "-server", "krill", "-addr", srv.Addr().String(), "-pids", strconv.Itoa(os.Getpid()),
				"-room", "bench@conference.localhost", "-n", strconv.Itoa(occupants), "-messages", strconv.Itoa(messages),
				"-rate", "50", "-clients", "2", "-idle", "100ms", "-wait", "30s",
				"-persistent=" + strconv.FormatBool(tt.persistent), "-presence-broadcast", tt.broadcast,
				"-sources", "127.0.0.2-127.0.0.3", "-json", jsonPath}, nil, &stdout, &stderr)
			if err != nil {
				t.Fatalf("muc: %v\nstdout: %s\nstderr: %s", err, stdout.String(), stderr.String())
			}
			b, err := os.ReadFile(jsonPath)
			if err != nil {
				t.Fatal(err)
			}
			var rec mucRecord
			if err := json.Unmarshal(bytes.TrimSpace(b), &rec); err != nil {
				t.Fatal(err)
			}
			if rec.Occupants != occupants || rec.Messages != messages || rec.ClientProcs != 2 {
				t.Fatalf("record = %+v", rec)
			}
			if rec.Delivered != occupants*messages || rec.Expected != occupants*messages || rec.OutOfOrder != 0 {
				t.Fatalf("delivered %d of %d, %d out of order", rec.Delivered, rec.Expected, rec.OutOfOrder)
			}
			if rec.PresencesPerOccupant < tt.minPres || rec.PresencesPerOccupant > tt.maxPres {
				t.Errorf("presences per occupant %.2f, want %.0f to %.0f", rec.PresencesPerOccupant, tt.minPres, tt.maxPres)
			}
			if len(rec.PerMessage) != messages {
				t.Fatalf("per message: %+v", rec.PerMessage)
			}
			for i, m := range rec.PerMessage {
				if m.Seq != i || m.Copies != occupants || m.LastMs <= 0 {
					t.Errorf("message %d: %+v", i, m)
				}
			}
			if rec.CopyP50ms <= 0 || rec.CopyP99ms < rec.CopyP50ms || rec.LastMaxMs < rec.LastP50ms {
				t.Errorf("latencies: %+v", rec)
			}
			if !strings.Contains(stdout.String(), "delivered 100/100") {
				t.Errorf("stdout = %q", stdout.String())
			}
			// The report's table has the run.
			res, err := readResults(filepath.Dir(jsonPath))
			if err != nil {
				t.Fatal(err)
			}
			var md strings.Builder
			writeMarkdown(&md, res)
			if !strings.Contains(md.String(), "## MUC fan-out") || !strings.Contains(md.String(), "| krill | 20 | 1 | 5 × 50/s |") ||
				!strings.Contains(md.String(), "| 100 / 100 | 0 |") {
				t.Errorf("report:\n%s", md.String())
			}
		})
	}
}
