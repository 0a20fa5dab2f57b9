// Package offline implements XEP-0160 Best Practices for Handling Offline
// Messages: a chat or normal message to an account with no available
// resource is stored, within a quota in messages and in bytes, and
// delivered with an XEP-0203 delay when the account next sends available
// presence.
package offline

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"sync"
	"sync/atomic"

	"go.uber.org/zap"
	"mellium.im/xmpp/jid"

	"github.com/krill-xmpp/krill/config"
	"github.com/krill-xmpp/krill/hook"
	"github.com/krill-xmpp/krill/sasl"
	"github.com/krill-xmpp/krill/stanza"
	"github.com/krill-xmpp/krill/storage"
)

// BatchSize is how many stored messages one storage read returns at login:
// a large store is delivered in pieces, each on its own worker job, so
// that neither memory nor one job grows with it.
const BatchSize = 100

// Store keeps offline messages; storage.SQL implements it.
type Store interface {
	// StoreOfflineWithin appends a message unless the user has
	// maxMessages messages or the stored bytes and these would exceed
	// maxBytes (storage.ErrQuota).
	StoreOfflineWithin(ctx context.Context, user string, stanza []byte, maxMessages int, maxBytes int64) error
	// OfflineBatch returns at most limit messages with an ID above
	// afterID, oldest first.
	OfflineBatch(ctx context.Context, user string, afterID int64, limit int) ([]storage.OfflineMessage, error)
	// DeleteOffline removes the messages with an ID up to upTo.
	DeleteOffline(ctx context.Context, user string, upTo int64) error
}

// Accounts tells whether an account exists; storage.SQL implements it
// (ErrNotFound for none).
type Accounts interface {
	Credentials(ctx context.Context, username string) (sasl.Credentials, error)
}

// Blocker tells whether an account blocks a JID according to storage
// (XEP-0191): the recipient of an offline message has no session, so its
// blocklist is not in memory. The blocking module implements it.
type Blocker interface {
	BlocksStored(ctx context.Context, owner string, j jid.JID) (bool, error)
}

// Module stores and delivers offline messages. Store and Accounts must be
// set; Blocker may be nil (nobody blocks anybody). Use it by pointer: it
// holds its counters.
type Module struct {
	Store    Store
	Accounts Accounts
	Blocker  Blocker
	// Archived, when set, tells which stored messages a session already
	// has from the message archive (package mam): they are deleted
	// without being delivered, so that the client does not get them
	// twice (XEP-0313 §5.1.1).
	Archived func(sess hook.Session, b []byte) bool

	stored, delivered, fromArchive, raced atomic.Uint64
}

// deliveryLocks serialise the reading, handing over and deleting of one
// account's stored messages (a striped lock: a fixed array, whatever the
// number of accounts), so that the delivery at initial presence and the
// one after a store that raced with it (see undelivered) never hand the
// same message over twice. Only workers take them.
var (
	deliveryLocks [64]sync.Mutex
	deliverySeed  = maphash.MakeSeed()
)

func deliveryLock(user string) *sync.Mutex {
	return &deliveryLocks[maphash.String(deliverySeed, user)%uint64(len(deliveryLocks))]
}

// Stats are the module's counters since start.
type Stats struct {
	// OfflineStored counts messages stored.
	OfflineStored uint64
	// OfflineDelivered counts stored messages handed to a session.
	OfflineDelivered uint64
}

// Stats returns the counters. Safe for concurrent use.
func (m *Module) Stats() Stats {
	return Stats{OfflineStored: m.stored.Load(), OfflineDelivered: m.delivered.Load()}
}

// Name implements hook.Module.
func (*Module) Name() string { return "offline" }

// Register implements hook.Module.
func (m *Module) Register(r *hook.Registrar) error {
	r.Stanza(hook.Message, hook.ToBare|hook.ToFull, hook.Undelivered, m.undelivered)
	r.On(hook.Available, m.available)
	return nil
}

// quotaBytes is the byte quota in force. It becomes
// c.Host.Config().IM.OfflineQuotaBytes once the configuration has the key.
func quotaBytes(c *hook.Ctx) int64 { return int64(c.Host.Config().IM.OfflineQuotaBytes) }

// errRefused is why a message was not stored when it is not a failure.
var errRefused = errors.New("offline: refused")

// undelivered stores a message for an account with no available resource,
// if it is worth storing (worthy); one that is not is dropped. The account
// must exist and not block the sender, and the quota have room; otherwise the core's service-unavailable answers it, as if there
// were nobody to deliver it to. A full worker pool answers
// resource-constraint.
func (m *Module) undelivered(c *hook.Ctx, st *hook.Stanza) hook.Verdict {
	if !worthy(st.Raw) {
		return hook.Stop // dropped silently: see worthy
	}
	maxMessages := c.Host.Config().IM.OfflineQuota
	if maxMessages <= 0 || st.Local == "" {
		return hook.Continue // 0 disables offline storage
	}
	maxBytes := quotaBytes(c)
	user, from := st.Local, st.From
	b := stanza.WithAttr(st.Tag, st.Raw, "from", st.From) // st is valid only during this call
	log, host := c.Log, c.Host
	job := func(ctx context.Context) error {
		err := m.store(ctx, user, from, b, maxMessages, maxBytes)
		switch {
		case err == nil:
			m.stored.Add(1)
			m.afterStore(ctx, host, log, user)
		case !errors.Is(err, errRefused) && !errors.Is(err, storage.ErrQuota):
			log.Error("offline store failed", zap.String("user", user), zap.Error(err))
		}
		return err
	}
	if c.Conn == nil {
		// No connection to answer on (a stanza routed on a module's
		// behalf): store detached, or let the core refuse it.
		if !c.Host.Go(func(ctx context.Context) { _ = job(ctx) }) {
			return hook.Continue
		}
		return hook.Stop
	}
	c.Conn.Async(func(ctx context.Context) func(*hook.Ctx) {
		if job(ctx) != nil {
			return func(c *hook.Ctx) { c.ReplyError("cancel", "service-unavailable", "") }
		}
		return nil
	}, func(c *hook.Ctx) { c.ReplyError("wait", "resource-constraint", "") })
	return hook.Stop
}

// afterStore closes a race. A message is stored because its recipient had
// no available resource when it was routed; if one became available
// meanwhile, its initial-presence delivery may have read the store before
// this message was committed, and the message would wait for the next
// login. The commit happened before this check, so either that delivery
// saw the message or this check sees the available session and delivers
// it. Runs on a worker.
func (m *Module) afterStore(ctx context.Context, host hook.Host, log *zap.Logger, user string) {
	var sess hook.Session
	host.Sessions(user, func(s hook.Session) {
		// A resource with a negative priority never gets messages to the
		// bare JID (RFC 6121 8.5.2.1.1): those wait offline for it.
		// A session on another node of a cluster flushes the store
		// itself, under that node's locks (hook.Remote).
		if r, ok := s.(hook.Remote); ok && r.Remote() {
			return
		}
		if sess == nil && s.Available() && s.Priority() >= 0 {
			sess = s
		}
	})
	if sess == nil {
		return
	}
	m.raced.Add(1)
	for after, n := int64(0), 0; n < maxBatches; n++ {
		var more bool
		if after, more = m.deliverBatch(ctx, log, host.Domain(), sess, after); !more {
			return
		}
	}
}

// store checks the recipient and stores b. Runs on a worker.
func (m *Module) store(ctx context.Context, user, from string, b []byte, maxMessages int, maxBytes int64) error {
	if _, err := m.Accounts.Credentials(ctx, user); err != nil {
		if errors.Is(err, storage.ErrNotFound) {
			return fmt.Errorf("%w: no account %q", errRefused, user)
		}
		return err
	}
	if m.Blocker != nil {
		fj, err := jid.Parse(from)
		if err != nil {
			return fmt.Errorf("%w: sender %q: %w", errRefused, from, err)
		}
		blocked, err := m.Blocker.BlocksStored(ctx, user, fj)
		if err != nil {
			return err
		}
		if blocked {
			return fmt.Errorf("%w: %q blocks the sender", errRefused, user)
		}
	}
	return m.Store.StoreOfflineWithin(ctx, user, b, maxMessages, maxBytes)
}

// Keep stores b, a stamped message to user that a session took but its
// client never acknowledged (stream management's queue when the session
// ends), under the checks and quotas of an undelivered message: it is
// dropped when not worth storing (a chat state, say) or refused. It runs
// on a worker: ctx bounds the storage calls.
func (m *Module) Keep(ctx context.Context, cfg *config.Config, user string, b []byte) error {
	if !worthy(b) || cfg.IM.OfflineQuota <= 0 {
		return nil
	}
	tag, err := stanza.ParseStartTag(b)
	if err != nil {
		return fmt.Errorf("offline: %w", err)
	}
	from, _ := tag.AttrString("from")
	if err := m.store(ctx, user, from, b, cfg.IM.OfflineQuota, int64(cfg.IM.OfflineQuotaBytes)); err != nil {
		return err
	}
	m.stored.Add(1)
	return nil
}

// available delivers the account's stored messages to a session that has
// just become available, in batches: each batch is one worker job that
// reads, hands the messages to the session and deletes them; the next is
// queued behind whatever else the connection does meanwhile.
func (m *Module) available(c *hook.Ctx, _ hook.Event) hook.Verdict {
	if c.Session == nil {
		return hook.Continue
	}
	if c.Conn == nil {
		sess, domain, log := c.Session, c.Host.Domain(), c.Log
		c.Host.Go(func(ctx context.Context) {
			for after, n := int64(0), 0; n < maxBatches; n++ {
				var more bool
				if after, more = m.deliverBatch(ctx, log, domain, sess, after); !more {
					return
				}
			}
		})
		return hook.Continue
	}
	m.deliverFrom(c, 0)
	return hook.Continue
}

// maxBatches bounds a detached delivery loop; a store within its quota
// never needs as many.
const maxBatches = 1 << 16

// deliverFrom queues the delivery of the batch after ID after.
func (m *Module) deliverFrom(c *hook.Ctx, after int64) {
	sess, domain, log := c.Session, c.Host.Domain(), c.Log
	c.Conn.Async(func(ctx context.Context) func(*hook.Ctx) {
		last, more := m.deliverBatch(ctx, log, domain, sess, after)
		if !more {
			return nil
		}
		return func(c *hook.Ctx) {
			if c.Conn != nil && c.Session != nil {
				m.deliverFrom(c, last)
			}
		}
	}, func(*hook.Ctx) {
		// The messages stay stored for the next login.
		log.Warn("offline messages not delivered: worker queue full", zap.String("jid", sess.Full()))
	})
}

// deliverBatch hands the session at most BatchSize messages with an ID
// above after and deletes those it took. It returns the last ID taken and
// whether there may be more. Runs on a worker.
func (m *Module) deliverBatch(ctx context.Context, log *zap.Logger, domain string, sess hook.Session, after int64) (int64, bool) {
	if !sess.Available() {
		return after, false // gone unavailable: the rest waits for the next time
	}
	user := sess.Local()
	mu := deliveryLock(user)
	mu.Lock()
	defer mu.Unlock()
	msgs, err := m.Store.OfflineBatch(ctx, user, after, BatchSize)
	if err != nil {
		log.Error("offline messages read failed", zap.String("user", user), zap.Error(err))
		return after, false
	}
	last, n, skipped := after, 0, 0
	for _, msg := range msgs {
		if m.Archived != nil && m.Archived(sess, msg.Stanza) {
			last = msg.ID
			skipped++
			continue
		}
		if !sess.Deliver(stanza.WithDelay(msg.Stanza, domain, msg.Stored)) {
			break // gone: the rest stays stored for the next session
		}
		last = msg.ID
		n++
	}
	if n+skipped == 0 {
		return after, false
	}
	m.delivered.Add(uint64(n))
	m.fromArchive.Add(uint64(skipped))
	n += skipped
	if err := m.Store.DeleteOffline(ctx, user, last); err != nil {
		log.Error("offline messages not deleted", zap.String("user", user), zap.Error(err))
		return last, false
	}
	return last, n == len(msgs) && len(msgs) == BatchSize
}

// Counters implements hook.Counter: "stored" and "delivered" messages,
// those skipped because the archive had them, and the deliveries made
// after a store that raced with an initial presence (afterStore).
func (m *Module) Counters(fn func(event string, n uint64)) {
	fn("stored", m.stored.Load())
	fn("delivered", m.delivered.Load())
	fn("skipped_archived", m.fromArchive.Load())
	fn("delivered_after_race", m.raced.Load())
}
