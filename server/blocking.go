package server

import (
	"context"
	"encoding/xml"
	"slices"

	"go.uber.org/zap"
	"mellium.im/xmpp/jid"

	"github.com/krill-xmpp/krill/stanza"
)

// XEP-0191 Blocking Command. The blocklist of an account with bound
// sessions is kept in the session table, loaded once when its first
// session binds, so that routing checks it without storage; accounts with
// no session are checked in storage by the worker that stores their
// offline messages.

const (
	nsBlocking       = "urn:xmpp:blocking"
	nsBlockingErrors = "urn:xmpp:blocking:errors"
	maxBlockItems    = 1000
)

// blockQuery is a block, unblock or blocklist payload.
type blockQuery struct {
	XMLName xml.Name
	Items   []struct {
		JID string `xml:"jid,attr"`
	} `xml:"item"`
}

// handleBlocking answers blocklist get, block and unblock (XEP-0191 §3).
func (s *Server) handleBlocking(c *conn, typ, id, from string, payload []byte) {
	sess := c.sess
	var q blockQuery
	if err := xml.Unmarshal(payload, &q); err != nil || len(q.Items) > maxBlockItems {
		s.sendError(c, "iq", id, from, "modify", "bad-request")
		return
	}
	fail := func(typ, cond string) func() {
		return func() { s.sendError(c, "iq", id, from, typ, cond) }
	}
	op := q.XMLName.Local
	switch {
	case typ == "get" && op == "blocklist":
		sess.blockInterested.Store(true)
		s.async(c, func(ctx context.Context) func() {
			list, err := s.store.Blocklist(ctx, sess.local)
			if err != nil {
				return fail("wait", "internal-server-error")
			}
			b := append([]byte(`<blocklist xmlns='`+nsBlocking+`'>`), appendBlockItems(nil, list)...)
			b = append(b, `</blocklist>`...)
			return func() { c.write(appendResult(nil, id, from, b)) }
		}, fail("wait", "resource-constraint"))
		return
	case typ == "set" && (op == "block" || op == "unblock"):
	default:
		s.sendError(c, "iq", id, from, "modify", "bad-request")
		return
	}
	jids := make([]string, 0, len(q.Items))
	for _, it := range q.Items {
		j, err := jid.Parse(it.JID)
		if err != nil {
			s.sendError(c, "iq", id, from, "modify", "jid-malformed")
			return
		}
		jids = append(jids, j.String())
	}
	if op == "block" && len(jids) == 0 {
		s.sendError(c, "iq", id, from, "modify", "bad-request")
		return
	}
	s.async(c, func(ctx context.Context) func() {
		var err error
		if op == "block" {
			err = s.store.Block(ctx, sess.local, jids)
		} else {
			err = s.store.Unblock(ctx, sess.local, jids)
		}
		if err != nil {
			s.log.Error("blocklist change failed", zap.String("user", sess.local), zap.Error(err))
			return fail("wait", "internal-server-error")
		}
		list, err := s.store.Blocklist(ctx, sess.local)
		if err == nil {
			s.sessions.setBlocklist(sess.local, list)
		}
		// Pushes to every resource that asked for the blocklist (§3.3).
		push := append([]byte(`<`+op+` xmlns='`+nsBlocking+`'>`), appendBlockItems(nil, jids)...)
		push = append(push, `</`+op+`>`...)
		s.sessions.each(sess.local, func(o *session) {
			if o.blockInterested.Load() {
				b := []byte(`<iq type='set' id='block-push' to='`)
				b = stanza.AppendEscaped(b, o.full)
				b = append(b, `'>`...)
				b = append(b, push...)
				o.deliver(nil, append(b, `</iq>`...))
			}
		})
		if op == "block" {
			// Blocked contacts see the user go unavailable (§3.3).
			for _, j := range jids {
				if bj, err := jid.Parse(j); err == nil && bj.Domainpart() == s.cfg.Domain && bj.Localpart() != "" {
					s.unavailableTo(sess.local, bj)
				}
			}
		}
		return func() { c.write(appendResult(c.loop.scratch[:0], id, from, nil)) }
	}, fail("wait", "resource-constraint"))
}

// unavailableTo sends unavailable presence from the available sessions of
// local to the sessions of to.
func (s *Server) unavailableTo(local string, to jid.JID) {
	s.sessions.each(local, func(o *session) {
		if !o.available.Load() {
			return
		}
		b := s.presenceFrom(o.full, to.String(), "unavailable")
		if to.Resourcepart() != "" {
			if t := s.sessions.full(to.Localpart(), to.Resourcepart()); t != nil {
				t.deliver(nil, b)
			}
			return
		}
		s.sessions.each(to.Localpart(), func(t *session) { t.deliver(nil, slices.Clone(b)) })
	})
}

func appendBlockItems(b []byte, jids []string) []byte {
	for _, j := range jids {
		b = append(b, `<item jid='`...)
		b = stanza.AppendEscaped(b, j)
		b = append(b, `'/>`...)
	}
	return b
}

// blocks reports whether a blocklist covers j, matching as XEP-0016 does:
// the full JID, the bare JID, the domain with the resource, the domain.
func blocks(list []string, j jid.JID) bool {
	if len(list) == 0 {
		return false
	}
	full := j.String()
	bare := j.Bare().String()
	domain := j.Domainpart()
	domRes := domain
	if r := j.Resourcepart(); r != "" {
		domRes = domain + "/" + r
	}
	for _, b := range list {
		if b == full || b == bare || b == domain || b == domRes {
			return true
		}
	}
	return false
}

// blockedError answers a stanza to a JID the sender blocked (§3.4).
func (s *Server) blockedError(c *conn, local, id, to string) {
	b := append(c.loop.scratch[:0], '<')
	b = append(b, local...)
	b = append(b, ` type='error'`...)
	if id != "" {
		b = append(b, ` id='`...)
		b = stanza.AppendEscaped(b, id)
		b = append(b, '\'')
	}
	b = append(b, ` from='`...)
	b = stanza.AppendEscaped(b, to)
	b = append(b, `' to='`...)
	b = stanza.AppendEscaped(b, c.sess.full)
	b = append(b, `'><error type='cancel'><not-acceptable xmlns='`+nsStanzas+`'/><blocked xmlns='`+nsBlockingErrors+`'/></error></`...)
	b = append(b, local...)
	c.write(append(b, '>'))
}
