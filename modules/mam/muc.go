package mam

import (
	"bytes"
	"context"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/krill-xmpp/krill/hook"
	"github.com/krill-xmpp/krill/storage"
)

// MUC archives (XEP-0313 §6 on room JIDs). The module is the muc
// module's Archiver and ArchiveQuerier: a room with archiving on hands it
// each groupchat message, queued like a user's (the same bounded queue,
// writer and retention job), into the room's archive in mam_messages,
// keyed by the room's bare JID (storage.ArchiveRecord.Room); with_jid is
// the room and with_res the sender's nick, so that a query's 'with' of
// room@service/nick selects one occupant's messages. Queries to the room
// come here once the room has checked the sender may read it.

// deleteBatch is how many archived messages of a destroyed room one
// statement deletes.
const deleteBatch = 1000

// ArchiveGroupchat implements the muc module's Archiver: it queues msg
// (from room/nick, without to) for room's archive if it has content
// (archivable) and returns the
// archive ID the room's copies carry in <stanza-id by=room/>, or "" when
// it is not archived (no content, or the queue was full; the message goes
// out without one). It
// runs on the sender's loop and does not block. The ID is of the
// archive's clock, as a user's archive IDs are.
func (m *Module) ArchiveGroupchat(h hook.Host, room, nick, _, _ string, msg []byte, _ time.Time) string {
	// What a user's archive keeps of a chat, a room's keeps of its
	// messages: not chat states alone, nor what asks not to be stored.
	if !archivable("", msg) || !bytes.HasPrefix(msg, []byte(`<message `)) {
		return ""
	}
	// Forwarded, the message keeps its namespace (XEP-0297).
	stored := make([]byte, 0, len(msg)+len(nsClient)+10)
	stored = append(stored, `<message xmlns='`+nsClient+`'`...)
	stored = append(stored, msg[len(`<message`):]...)
	p := pending{rec: storage.ArchiveRecord{User: room, Room: true, ID: m.ids.next(m.now()), With: room, WithResource: nick, Stanza: stored}}
	if !m.enqueue(h, p) {
		if m.dropped.Add(1)&1023 == 1 {
			h.Logger().Warn("groupchat message not archived: archive write queue full", zap.String("room", room))
		}
		return ""
	}
	return formatID(p.rec.ID)
}

// DeleteRoomArchive implements the muc module's Archiver: a gone room's
// archive, up to now, is deleted on the worker pool, in bounded batches,
// after what was queued for it is written.
func (m *Module) DeleteRoomArchive(h hook.Host, room string) {
	log := h.Logger()
	// IDs only grow: what a new room of the same name archives from now
	// on is above the bound and stays.
	before := m.ids.next(m.now())
	var run func(ctx context.Context)
	run = func(ctx context.Context) {
		m.drain(ctx, log)
		for range expireBatches {
			n, err := m.Store.DeleteArchive(ctx, room, before, deleteBatch)
			if err != nil {
				log.Error("room archive not deleted", zap.String("room", room), zap.Error(err))
				return
			}
			if n < deleteBatch {
				return
			}
		}
		h.Go(run)
	}
	if !h.Go(run) {
		log.Warn("room archive not deleted: worker pool full", zap.String("room", room))
	}
}

// QueryRoom implements the muc module's ArchiveQuerier: an urn:xmpp:mam:2
// iq to a room the sender may read. Results come from the room's bare
// JID; the messages are forwarded as the room sent them.
func (m *Module) QueryRoom(c *hook.Ctx, st *hook.Stanza, room string) error {
	switch {
	case st.Type == "set" && st.Name == "query":
	case st.Type == "get" && st.Name == "query":
		c.ReplyResult([]byte(queryForm))
		return nil
	case st.Type == "get" && st.Name == "metadata":
		m.roomMetadata(c, room)
		return nil
	default:
		// Preferences belong to users' archives.
		c.ReplyError("cancel", "feature-not-implemented", "rooms have no archiving preferences")
		return nil
	}
	r, e := parseQuery(st.Payload, c.Host.Config().MAM.MaxPage)
	if e != nil {
		c.ReplyError(e.typ, e.cond, e.text)
		return nil
	}
	if r.with != "" && !strings.EqualFold(r.with, room) {
		// Everything in a room's archive is with the room (its
		// occupants' JIDs): another JID matches nothing.
		r.before = 1
	}
	m.queries.Add(1)
	h, log, to := c.Host, c.Log, st.From
	c.Conn.Async(func(ctx context.Context) func(*hook.Ctx) {
		m.drain(ctx, log)
		m.maybeExpire(ctx, h)
		out, fin, e := m.run(ctx, room, room, to, r)
		if e != nil {
			return func(c *hook.Ctx) { c.ReplyError(e.typ, e.cond, e.text) }
		}
		return func(c *hook.Ctx) {
			for _, b := range out {
				c.Conn.Write(b)
			}
			c.ReplyResult(fin)
		}
	}, nil)
	return nil
}

// roomMetadata answers the metadata request for a room's archive.
func (m *Module) roomMetadata(c *hook.Ctx, room string) {
	log := c.Log
	c.Conn.Async(func(ctx context.Context) func(*hook.Ctx) {
		m.drain(ctx, log)
		b, err := m.metadataOf(ctx, room)
		if err != nil {
			log.Error("archive metadata failed", zap.String("room", room), zap.Error(err))
			return func(c *hook.Ctx) { c.ReplyError("wait", "internal-server-error", "") }
		}
		return func(c *hook.Ctx) { c.ReplyResult(b) }
	}, nil)
}
