// Package mam implements XEP-0313 Message Archive Management
// (urn:xmpp:mam:2, with the #extended queries) over a user archive per
// account, and XEP-0359 stanza IDs: each chat message between accounts is
// archived for the sender and for the recipient, the recipient's copy
// carries <stanza-id by='recipient@domain' id=.../> naming its archive
// entry, and a <stanza-id/> a client forges in this server's name is
// removed.
//
// Archiving happens in the Pre stage of a message, on the sender's loop:
// the decision (XEP-0441 preferences, kept in memory) and the IDs are made
// there, and the records go to a bounded queue that jobs on the worker
// pool write in batches (writer.go), so delivery never waits for storage.
// The module runs after blocking (modules.Standard): a refused message is
// not archived. With carbons, the carbons module runs the archiving
// (Archive, Chained) before it copies, so that a <received/> copy carries
// the recipient's stanza ID, as the original does, and a <sent/> copy the
// sender's instead of the recipient's, which the sender's other devices
// must not see.
//
// No duplicates with offline delivery and stream management: the copy
// that routing gives to offline storage, or that stream management stores
// offline when a session ends unacknowledged, is the recipient's copy with
// its <stanza-id/>, so a client that fetched the message from the archive
// recognises it (XEP-0313 §3.5, §5.1.1). Moreover, as Prosody does, a
// session that has queried the archive before its offline messages are
// delivered does not get those that carry its archive's stanza ID: they
// are deleted from offline storage instead (Delivered, used by package
// offline).
package mam

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"mellium.im/xmpp/jid"

	"github.com/krill-xmpp/krill/hook"
	"github.com/krill-xmpp/krill/storage"
)

// Namespaces.
const (
	// NS is XEP-0313's namespace and disco feature.
	NS = "urn:xmpp:mam:2"
	// NSExtended is the disco feature of before-id, after-id, ids,
	// flipped pages and the metadata query.
	NSExtended = "urn:xmpp:mam:2#extended"
	// NSSID is XEP-0359's namespace and disco feature.
	NSSID = "urn:xmpp:sid:0"

	nsForward = "urn:xmpp:forward:0"
	nsDelay   = "urn:xmpp:delay"
	nsRSM     = "http://jabber.org/protocol/rsm"
	nsData    = "jabber:x:data"
)

// Store is the archive's storage; storage.SQL implements it.
type Store = storage.Archive

// Blocker tells whether an account blocks a JID according to storage
// (XEP-0191), for recipients with no session; the blocking module
// implements it.
type Blocker interface {
	BlocksStored(ctx context.Context, owner string, j jid.JID) (bool, error)
}

// RoomRetention deletes what rooms with a retention of their own no
// longer keep; storage.SQL implements it (see
// storage.MUC.ExpireRoomArchives).
type RoomRetention interface {
	ExpireRoomArchives(ctx context.Context, suffix string, now, perDay int64, limit int) (int, error)
}

// Module is the message archive. Store must be set; Blocker may be nil.
// Use it by pointer.
type Module struct {
	Store   Store
	Blocker Blocker
	// Now is the clock (nil: time.Now); tests move it.
	Now func() time.Time
	// Chained: the carbons module calls Archive from its own Pre
	// handler, before it makes its copies (so that they carry the
	// stanza IDs), and Register adds no Pre handler.
	Chained bool
	// Rooms expires the archives of rooms whose owners chose a
	// retention of their own; nil: rooms follow mam.retention only.
	Rooms RoomRetention

	// queried marks a session that has queried the archive.
	queried hook.Flag
	prefs   prefsCache
	ids     idGen
	q       queue

	expireMu   sync.Mutex
	lastExpire time.Time

	archived, dropped, skipped, failed, expired, queries, stripped atomic.Uint64
}

// Name implements hook.Module.
func (*Module) Name() string { return "mam" }

// loadTimeout bounds the start-up read of stored preferences.
const loadTimeout = 30 * time.Second

// Register implements hook.Module. It loads the stored preferences.
func (m *Module) Register(r *hook.Registrar) error {
	if m.Store == nil {
		return errors.New("mam: no store")
	}
	ctx, cancel := context.WithTimeout(context.Background(), loadTimeout)
	defer cancel()
	if err := m.prefs.load(ctx, m.Store); err != nil {
		return err
	}
	m.queried = r.Flag()
	if !m.Chained {
		r.Stanza(hook.Message, hook.ToBare|hook.ToFull, hook.Pre, m.pre)
	}
	r.IQ(hook.PhaseBound, hook.IQSet, hook.ToAccount, NS, "query", m.query)
	r.IQ(hook.PhaseBound, hook.IQGet, hook.ToAccount, NS, "query", m.form)
	r.IQ(hook.PhaseBound, hook.IQGet, hook.ToAccount, NS, "metadata", m.metadata)
	r.IQ(hook.PhaseBound, hook.IQGet, hook.ToAccount, NS, "prefs", m.prefsGet)
	r.IQ(hook.PhaseBound, hook.IQSet, hook.ToAccount, NS, "prefs", m.prefsSet)
	r.On(hook.Bound, m.bound)
	r.AccountFeature(NS, NSExtended, NSSID)
	return nil
}

// Counters implements hook.Counter.
func (m *Module) Counters(fn func(event string, n uint64)) {
	fn("archived", m.archived.Load())
	fn("dropped_queue_full", m.dropped.Load())
	fn("skipped", m.skipped.Load())
	fn("write_failed", m.failed.Load())
	fn("expired", m.expired.Load())
	fn("queries", m.queries.Load())
	fn("forged_stanza_ids_removed", m.stripped.Load())
}

func (m *Module) now() time.Time {
	if m.Now != nil {
		return m.Now()
	}
	return time.Now()
}

// own reports whether an iq is for the sender's own archive, and answers
// forbidden when it is for another account's (XEP-0313 §9.1).
func own(c *hook.Ctx, st *hook.Stanza) bool {
	if st.Addr == hook.ToBare && st.Local != c.Session.Local() {
		c.ReplyError("auth", "forbidden", "")
		return false
	}
	return true
}

// pre archives a message a session sends to a local account, and
// removes forged stanza IDs from every message it sends.
func (m *Module) pre(c *hook.Ctx, st *hook.Stanza) hook.Verdict {
	m.Archive(c, st)
	return hook.Continue
}

// Archive is the Pre stage of a message from a session: it removes
// forged stanza IDs, archives the message for the recipient (when local)
// and the sender, and adds the recipient's <stanza-id/> to st. It
// returns the sender's archive ID when the sender's archive stores the
// message now ("" otherwise, and for a message to oneself, whose one
// archive ID st carries), for the carbons module's <sent/> copies
// (XEP-0313 §5.1.1: a carbon copy carries the stanza-id of the archive
// of the account it goes to). Run on the sender's loop.
func (m *Module) Archive(c *hook.Ctx, st *hook.Stanza) (sentID string) {
	sess := c.Session
	if sess == nil {
		return ""
	}
	h := c.Host
	domain := h.Domain()
	if raw, ok := stripForged(st.Raw, domain); ok {
		m.stripped.Add(1)
		if tag, err := parseTag(raw); err == nil {
			st.Raw, st.Tag = raw, tag
		}
	}
	if !archivable(st.Type, st.Raw) {
		return ""
	}
	self := sess.Local()
	fromBare, fromRes := splitFull(st.From)
	toBare := st.Bare()
	mode := defaultMode(c)
	stored := forwardable(st.Tag, st.Raw, st.From)
	now := m.now()

	// The recipient's archive: its copy carries the stanza ID when the
	// decision needs no storage.
	if d := m.decide(mode, st.Local, fromBare); d != skip {
		p := pending{rec: storage.ArchiveRecord{User: st.Local, ID: m.ids.next(now), With: fromBare, WithResource: fromRes, Stanza: stored},
			roster: d == ifRoster}
		if st.Local != self && !online(h, st.Local) {
			p.blockFrom = st.From
		}
		if !m.enqueue(h, p) {
			m.full(c)
		} else if d == store {
			if raw := withStanzaID(st.Raw, toBare, formatID(p.rec.ID)); raw != nil {
				if tag, err := parseTag(raw); err == nil {
					st.Raw, st.Tag = raw, tag
				}
			}
		}
	}
	// The sender's archive, once for a message to oneself.
	if st.Local != self {
		if d := m.decide(mode, self, toBare); d != skip {
			p := pending{rec: storage.ArchiveRecord{User: self, ID: m.ids.next(now), With: toBare, WithResource: st.Resource, Stanza: stored},
				roster: d == ifRoster}
			if !m.enqueue(h, p) {
				m.full(c)
			} else if d == store {
				sentID = formatID(p.rec.ID)
			}
		}
	}
	return sentID
}

// full counts and logs a message the write queue had no room for.
func (m *Module) full(c *hook.Ctx) {
	if m.dropped.Add(1)&1023 == 1 {
		c.Log.Warn("message not archived: archive write queue full (counted in krill_module_events_total{module=\"mam\",event=\"dropped_queue_full\"})")
	}
}

// online reports whether an account has a session.
func online(h hook.Host, local string) bool {
	any := false
	h.Sessions(local, func(hook.Session) { any = true })
	return any
}

// splitFull splits a normalised full JID into its bare JID and resource.
func splitFull(full string) (bare, res string) {
	for i := 0; i < len(full); i++ {
		if full[i] == '/' {
			return full[:i], full[i+1:]
		}
	}
	return full, ""
}

// bound runs the retention job at login when it is due, and reads again
// the preferences of an account that has some in the cache (few do, so
// logins in general pay nothing), before the session's next request.
func (m *Module) bound(c *hook.Ctx, _ hook.Event) hook.Verdict {
	h, user, log := c.Host, c.Session.Local(), c.Log
	if m.prefs.get(user) != nil && c.Conn != nil {
		c.Conn.Async(func(ctx context.Context) func(*hook.Ctx) {
			if err := m.prefs.refresh(ctx, m.Store, user); err != nil {
				log.Warn("archive preferences not read", zap.String("user", user), zap.Error(err))
			}
			return nil
		}, nil)
	}
	if h.Config().MAM.Retention > 0 {
		h.Go(func(ctx context.Context) { m.maybeExpire(ctx, h) })
	}
	return hook.Continue
}

// Delivered reports whether the stored offline message b need not be
// delivered to sess: sess has queried the archive, and b carries the
// stanza ID of sess's archive, so the client has it or will fetch it from
// there (XEP-0313 §5.1.1). Package offline deletes such a message instead
// of delivering it. Safe on any goroutine.
func (m *Module) Delivered(sess hook.Session, b []byte) bool {
	if !sess.Has(m.queried) {
		return false
	}
	bare, _ := splitFull(sess.Full())
	return hasStanzaID(b, bare)
}
