package server_test

import (
	"context"
	"fmt"
	"io"
	"syscall"
	"testing"
	"time"

	"github.com/krill-xmpp/krill/storage"
)

// BenchmarkPEPPublish: one account with 50 contacts online (mutual
// subscriptions), 25 of whose clients ask for the node's notifications in
// their caps; each operation is a publish and its result, which the server
// sends once it has stored the item and queued the 25 notifications (and
// the owner's own). Reported: the process's CPU time per publish (server
// and this test's clients together; the clients only read) and the
// allocations per publish (likewise).
//
//	go test -run '^$' -bench PEPPublish -benchmem ./server/
func BenchmarkPEPPublish(b *testing.B) {
	const contacts = 50
	users := []string{"owner"}
	for i := range contacts {
		users = append(users, fmt.Sprintf("c%02d", i))
	}
	cfg := testConfig(b)
	cfg.Log.Level = "error"
	srv, store := startServerOpts(b, cfg, serverOpts{}, users...)
	err := store.UpdateRosters(context.Background(), func(tx storage.RosterTx) error {
		for _, u := range users[1:] {
			if err := tx.PutItem("owner", storage.RosterItem{Contact: u + "@localhost", Subscription: storage.SubBoth}); err != nil {
				return err
			}
			if err := tx.PutItem(u, storage.RosterItem{Contact: "owner@localhost", Subscription: storage.SubBoth}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	owner := dialRaw(b, srv)
	full := owner.scramLogin("owner", testPassword, "o")
	owner.send(capsOMEMO.presence())
	owner.expect(b, capsOMEMO.query("caps-1", full))
	owner.send(capsOMEMO.answer("caps-1"))
	owner.skipUntil(`ver='` + capsOMEMO.ver() + `'/></presence>`)
	owner.sync(b, "s0")
	var conns []*rawConn
	for i, u := range users[1:] {
		c := dialRaw(b, srv)
		cf := c.scramLogin(u, testPassword, "r")
		caps := capsOMEMO
		if i%2 == 1 {
			caps = capsPlain
		}
		c.send(caps.presence())
		if i == 1 {
			c.expect(b, capsPlain.query("caps-2", cf))
			c.send(capsPlain.answer("caps-2"))
		}
		c.send(`<iq type='get' id='s0' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>`)
		c.skipUntil(`<iq type='result' id='s0' from='localhost'/>`)
		conns = append(conns, c)
	}
	// The owner's stream gets its contacts' presence: drained up to a
	// round trip.
	owner.send(`<iq type='get' id='drained' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>`)
	owner.skipUntil(`<iq type='result' id='drained' from='localhost'/>`)
	payload := devicelistPayload("12345")
	// One publish checked: the 25 with +notify get it, the others not.
	owner.send(pub("check", legacyDevices, "current", payload, publishOpts("pubsub#access_model", "open")))
	owner.skipUntil(`<iq type='result' id='check'>`)
	for i, c := range conns {
		if i%2 == 0 {
			c.expect(b, event("owner@localhost", fmt.Sprintf("c%02d@localhost/r", i), legacyDevices, "current", payload))
		}
		c.sync(b, "s1")
		// From here on the contact only reads, and discards.
		go func() { _, _ = io.Copy(io.Discard, c.conn) }()
		_ = c.conn.SetReadDeadline(time.Time{})
	}
	var ru0, ru1 syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru0)
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		id := fmt.Sprintf("p%d", i)
		owner.send(pub(id, legacyDevices, "current", payload, publishOpts("pubsub#access_model", "open")))
		owner.skipUntil(`<iq type='result' id='` + id + `'>`)
	}
	b.StopTimer()
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru1)
	cpu := time.Duration(ru1.Utime.Nano()+ru1.Stime.Nano()-ru0.Utime.Nano()-ru0.Stime.Nano()) / time.Duration(b.N)
	b.ReportMetric(float64(cpu.Microseconds()), "cpu-µs/publish")
}
