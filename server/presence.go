package server

import (
	"bytes"
	"context"
	"slices"
	"strconv"
	"time"

	"go.uber.org/zap"
	"mellium.im/xmpp/jid"

	"github.com/krill-xmpp/krill/stanza"
	"github.com/krill-xmpp/krill/storage"
)

// Presence (RFC 6121 section 4). The session keeps only its last
// broadcast presence, in wire form; who receives a broadcast comes from the
// roster in storage, read on a worker when the presence changes, so an idle
// session holds no roster.

// handlePresence routes one presence stanza of a bound session.
func (s *Server) handlePresence(c *conn, tag stanza.StartTag, typ, id string, to jid.JID, toStr string, unit []byte) {
	sess := c.sess
	switch typ {
	case "subscribe", "subscribed", "unsubscribe", "unsubscribed":
		if toStr == "" {
			return
		}
		s.subscription(c, typ, id, to, unit)
		return
	case "probe":
		return // the server probes on the client's behalf
	case "", "unavailable", "error":
	default:
		s.sendError(c, "presence", id, "", "modify", "bad-request")
		return
	}
	if toStr == "" {
		if typ != "error" {
			s.broadcastPresence(c, typ, tag, unit)
		}
		return
	}
	// Directed presence (section 4.6), remembered so that the recipient
	// learns when the session goes away.
	if to.Domainpart() != s.cfg.Domain || to.Localpart() == "" {
		return // no server-to-server yet; presence to the domain is dropped
	}
	b := stamp(tag, unit, sess.full)
	if to.Resourcepart() != "" {
		if t := s.sessions.full(to.Localpart(), to.Resourcepart()); t != nil {
			t.deliver(c.loop, b)
		}
	} else {
		s.sessions.each(to.Localpart(), func(o *session) {
			if o.available.Load() {
				o.deliver(c.loop, slices.Clone(b))
			}
		})
	}
	if typ == "error" {
		return
	}
	i := slices.Index(sess.directed, toStr)
	switch {
	case typ == "" && i < 0 && len(sess.directed) < maxDirected:
		sess.directed = append(sess.directed, toStr)
	case typ == "unavailable" && i >= 0:
		sess.directed = slices.Delete(sess.directed, i, i+1)
	}
}

// maxDirected bounds the directed-presence recipients a session tracks.
const maxDirected = 64

// broadcastPresence handles available and unavailable presence without a
// to: the session's own resources and every contact subscribed to the user
// get it; an initial presence also probes the user's contacts, delivers
// pending subscription requests and offline messages.
func (s *Server) broadcastPresence(c *conn, typ string, tag stanza.StartTag, unit []byte) {
	sess := c.sess
	stamped := stamp(tag, unit, sess.full)
	initial := false
	var directed []string
	if typ == "unavailable" {
		if !sess.available.Load() {
			return
		}
		sess.available.Store(false)
		sess.setLast(nil)
		directed, sess.directed = sess.directed, nil
	} else {
		initial = !sess.available.Load()
		sess.priority.Store(presencePriority(unit))
		sess.setLast(stamped)
		sess.available.Store(true)
	}
	status := ""
	if typ == "unavailable" {
		status = presenceStatus(unit)
	}
	s.async(c, func(ctx context.Context) func() {
		s.fanOutPresence(ctx, sess, stamped, directed)
		if typ == "unavailable" {
			s.recordLastActivity(ctx, sess.local, status)
		}
		if initial {
			s.initialPresence(ctx, sess)
		}
		return nil
	}, func() {
		s.log.Warn("presence not broadcast: worker queue full", zap.String("jid", sess.full))
	})
}

// fanOutPresence delivers a presence of sess to its own available
// resources (itself included, RFC 6121 4.2.2), to the available resources
// of contacts with a subscription from the user, and to directed-presence
// recipients. Runs on a worker.
func (s *Server) fanOutPresence(ctx context.Context, sess *session, stamped []byte, directed []string) {
	s.sessions.each(sess.local, func(o *session) {
		if o == sess || o.available.Load() {
			o.deliver(nil, slices.Clone(stamped))
		}
	})
	items, _, err := s.store.Roster(ctx, sess.local)
	if err != nil {
		s.log.Error("roster read for presence failed", zap.String("user", sess.local), zap.Error(err))
	}
	own := s.sessions.blocklist(sess.local)
	for _, it := range items {
		if it.Subscription != storage.SubFrom && it.Subscription != storage.SubBoth {
			continue
		}
		local, ok := s.localOf(it.Contact)
		if !ok {
			continue
		}
		if cj, err := jid.Parse(it.Contact); err == nil && (blocks(own, cj) || blocks(s.sessions.blocklist(local), sess.jid)) {
			continue // XEP-0191: no presence to or from a blocked entity
		}
		directed = slices.DeleteFunc(directed, func(d string) bool { return d == it.Contact })
		s.toAvailable(local, withTo(stamped, it.Contact))
	}
	for _, d := range directed {
		j, err := jid.Parse(d)
		if err != nil || j.Domainpart() != s.cfg.Domain {
			continue
		}
		b := withTo(stamped, d)
		if j.Resourcepart() != "" {
			if t := s.sessions.full(j.Localpart(), j.Resourcepart()); t != nil {
				t.deliver(nil, b)
			}
			continue
		}
		s.toAvailable(j.Localpart(), b)
	}
}

// initialPresence sends the new session what it missed: its contacts'
// presence, pending subscription requests and offline messages. Runs on a
// worker; everything goes through the session's mailbox, in that order.
func (s *Server) initialPresence(ctx context.Context, sess *session) {
	items, _, err := s.store.Roster(ctx, sess.local)
	if err != nil {
		s.log.Error("roster read for probes failed", zap.String("user", sess.local), zap.Error(err))
	}
	own := s.sessions.blocklist(sess.local)
	for _, it := range items {
		if it.Subscription != storage.SubTo && it.Subscription != storage.SubBoth {
			continue
		}
		if local, ok := s.localOf(it.Contact); ok {
			if cj, err := jid.Parse(it.Contact); err == nil && (blocks(own, cj) || blocks(s.sessions.blocklist(local), sess.jid)) {
				continue // XEP-0191: no presence to or from a blocked entity
			}
			s.sessions.each(local, func(o *session) {
				if last := o.lastPresence(); last != nil {
					sess.deliver(nil, withTo(last, sess.full))
				}
			})
		}
	}
	reqs, err := s.store.Requests(ctx, sess.local)
	if err != nil {
		s.log.Error("subscription requests read failed", zap.String("user", sess.local), zap.Error(err))
	}
	for _, r := range reqs {
		sess.deliver(nil, slices.Clone(r.Stanza))
	}
	msgs, err := s.store.Offline(ctx, sess.local)
	if err != nil {
		s.log.Error("offline messages read failed", zap.String("user", sess.local), zap.Error(err))
		return
	}
	if len(msgs) == 0 {
		return
	}
	for _, m := range msgs {
		if !sess.deliver(nil, withDelay(m.Stanza, s.cfg.Domain, m.Stored)) {
			return // gone: the rest stays stored for the next session
		}
	}
	if err := s.store.DeleteOffline(ctx, sess.local, msgs[len(msgs)-1].ID); err != nil {
		s.log.Error("offline messages not deleted", zap.String("user", sess.local), zap.Error(err))
	}
	s.stats.offlineDelivered.Add(uint64(len(msgs)))
}

// sessionGone broadcasts unavailable presence for a session that ended
// without saying so (RFC 6121 4.5.1 and 4.6.3).
func (s *Server) sessionGone(sess *session) {
	if !sess.available.Swap(false) {
		return
	}
	b := []byte(`<presence type='unavailable' from='`)
	b = stanza.AppendEscaped(b, sess.full)
	b = append(b, `'/>`...)
	directed := sess.directed
	sess.directed = nil
	s.detached(func(ctx context.Context) {
		s.fanOutPresence(ctx, sess, b, directed)
		s.recordLastActivity(ctx, sess.local, "")
	})
}

// toAvailable delivers b to every available resource of a local account.
// b is cloned for each.
func (s *Server) toAvailable(local string, b []byte) int {
	n := 0
	s.sessions.each(local, func(o *session) {
		if o.available.Load() && o.deliver(nil, slices.Clone(b)) {
			n++
		}
	})
	return n
}

// localOf returns the localpart of a bare JID of this domain.
func (s *Server) localOf(bare string) (string, bool) {
	j, err := jid.Parse(bare)
	if err != nil || j.Domainpart() != s.cfg.Domain || j.Localpart() == "" {
		return "", false
	}
	return j.Localpart(), true
}

// withTo returns a copy of a stamped stanza with its to attribute set.
func withTo(b []byte, to string) []byte {
	tag, err := stanza.ParseStartTag(b)
	if err != nil {
		return slices.Clone(b)
	}
	return withAttr(tag, b, "to", to)
}

// withDelay adds an XEP-0203 delay element to a stored message.
func withDelay(b []byte, from string, at time.Time) []byte {
	tag, err := stanza.ParseStartTag(b)
	if err != nil {
		return slices.Clone(b)
	}
	delay := []byte(`<delay xmlns='urn:xmpp:delay' from='`)
	delay = stanza.AppendEscaped(delay, from)
	delay = append(delay, `' stamp='`...)
	delay = at.UTC().AppendFormat(delay, "2006-01-02T15:04:05Z")
	delay = append(delay, `'/>`...)
	if tag.SelfClosing() {
		out := append([]byte(nil), b[:tag.Len()-2]...)
		out = append(out, '>')
		out = append(out, delay...)
		out = append(out, `</`...)
		out = append(out, tag.Local()...)
		return append(out, '>')
	}
	end := bytes.LastIndexByte(b, '<')
	out := append([]byte(nil), b[:end]...)
	out = append(out, delay...)
	return append(out, b[end:]...)
}

// setLast keeps the session's last broadcast presence (nil: unavailable).
func (s *session) setLast(b []byte) {
	s.mu.Lock()
	s.last = b
	s.mu.Unlock()
}

// lastPresence returns the session's last broadcast presence, or nil.
func (s *session) lastPresence() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.last
}

// presencePriority reads <priority/> of an available presence (RFC 6121
// section 4.7.2.3): an integer from -128 to 127, 0 when absent or invalid.
func presencePriority(unit []byte) int32 {
	inner := stanza.Inner(unit)
	i := bytes.Index(inner, []byte("<priority>"))
	if i < 0 {
		return 0
	}
	inner = inner[i+len("<priority>"):]
	j := bytes.Index(inner, []byte("</priority>"))
	if j < 0 {
		return 0
	}
	n, err := strconv.Atoi(string(bytes.TrimSpace(inner[:j])))
	if err != nil || n < -128 || n > 127 {
		return 0
	}
	return int32(n)
}
