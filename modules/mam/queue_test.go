package mam

import (
	"context"
	"strings"
	"sync"
	"testing"

	"github.com/krill-xmpp/krill/hook"
	"github.com/krill-xmpp/krill/modules/internal/imtest"
	"github.com/krill-xmpp/krill/storage"
)

// memStore is an archive that records appends; the rest of
// storage.Archive is not used by these tests.
type memStore struct {
	storage.Archive
	mu   sync.Mutex
	recs []storage.ArchiveRecord
}

func (s *memStore) AllArchivePrefs(context.Context, func(string, storage.ArchivePrefs)) error {
	return nil
}

func (s *memStore) AppendArchive(_ context.Context, recs []storage.ArchiveRecord) error {
	s.mu.Lock()
	s.recs = append(s.recs, recs...)
	s.mu.Unlock()
	return nil
}

// heldHost keeps the worker jobs instead of running them: the writer
// falls behind.
type heldHost struct {
	*imtest.Host
	jobs []func(context.Context)
}

func (h *heldHost) Go(job func(context.Context)) bool {
	h.jobs = append(h.jobs, job)
	return true
}

// TestQueueFull: when the write queue is full a message is delivered
// without a stanza ID and not archived, and counted; once the writer has
// caught up, archiving resumes.
func TestQueueFull(t *testing.T) {
	st := &memStore{}
	m := &Module{Store: st}
	reg, err := hook.New(m)
	if err != nil {
		t.Fatal(err)
	}
	host := &heldHost{Host: imtest.NewHost()}
	sess := host.Bind("alice", "a")
	conn := imtest.NewConn(host.Host, reg, sess)
	send := func() string {
		t.Helper()
		s, err := imtest.Parse(sess, `<message to='bob@localhost' type='chat'><body>x</body></message>`)
		if err != nil {
			t.Fatal(err)
		}
		c := conn.Ctx(s)
		c.Host = host
		reg.Stanza(c, hook.Pre, s)
		return string(s.Raw)
	}
	// Two records a message: alice's and bob's.
	for i := range QueueRecords / 2 {
		if got := send(); !strings.Contains(got, "<stanza-id") {
			t.Fatalf("message %d: no stanza-id: %s", i, got)
		}
	}
	if got := send(); strings.Contains(got, "<stanza-id") {
		t.Fatalf("a message with the queue full got a stanza-id: %s", got)
	}
	if n := m.dropped.Load(); n != 2 {
		t.Fatalf("dropped = %d, want 2", n)
	}
	if len(host.jobs) != 1 {
		t.Fatalf("%d write jobs queued, want 1", len(host.jobs))
	}
	// A job writes its share and hands the rest to the next.
	for i := 0; i < len(host.jobs) && i < 100; i++ {
		host.jobs[i](context.Background())
	}
	if len(host.jobs) != QueueRecords/(WriteBatch*batchesPerJob)+1 {
		t.Errorf("%d jobs, want %d", len(host.jobs), QueueRecords/(WriteBatch*batchesPerJob)+1)
	}
	if len(st.recs) != QueueRecords || m.archived.Load() != QueueRecords {
		t.Fatalf("written %d, archived %d; want %d", len(st.recs), m.archived.Load(), QueueRecords)
	}
	for i := 1; i < len(st.recs); i++ {
		if st.recs[i].ID <= st.recs[i-1].ID {
			t.Fatalf("record %d: id %d after %d", i, st.recs[i].ID, st.recs[i-1].ID)
		}
	}
	if got := send(); !strings.Contains(got, "<stanza-id") {
		t.Fatalf("after the writer caught up, no stanza-id: %s", got)
	}
}
