package server

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"
	"mellium.im/xmpp/jid"

	"github.com/krill-xmpp/krill/stanza"
	"github.com/krill-xmpp/krill/storage"
)

// XEP-0012 Last Activity of accounts. The server's own uptime (a query to
// the domain) is modules/lastactivity; a query to an account's bare JID is
// answered here, since it needs presence and the roster: how long ago the
// account's last resource went unavailable, with the status it gave, to
// the account itself and to contacts with a subscription to its presence
// (subscription from or both in the account's roster), forbidden to
// others. An account with an available resource has been active 0 seconds
// ago. The time is written on a worker when the last resource goes
// unavailable (presence.go), not on each presence.

const nsLast = "jabber:iq:last"

// maxStatusLen bounds the status text kept as last activity, in bytes.
const maxStatusLen = 1024

// handleLastActivity answers a last-activity query to the bare JID of a
// local account (to; the zero JID means the sender's own account).
func (s *Server) handleLastActivity(c *conn, typ, id string, to jid.JID) {
	sess := c.sess
	from := to.String()
	user := to.Localpart()
	if user == "" {
		user = sess.local
	}
	if typ != "get" {
		s.writeStanzaError(c, "iq", id, from, "cancel", "service-unavailable", nsLast)
		return
	}
	requester := sess.jid.Bare().String()
	reply := func(typ, cond string) func() { return func() { s.sendError(c, "iq", id, from, typ, cond) } }
	s.async(c, func(ctx context.Context) func() {
		if _, err := s.accounts.Credentials(ctx, user); err != nil {
			if errors.Is(err, storage.ErrNotFound) {
				return reply("cancel", "service-unavailable")
			}
			return reply("wait", "internal-server-error")
		}
		if user != sess.local {
			items, _, err := s.store.Roster(ctx, user)
			if err != nil {
				s.log.Error("roster read for last activity failed", zap.String("user", user), zap.Error(err))
				return reply("wait", "internal-server-error")
			}
			allowed := false
			for _, it := range items {
				if it.Contact == requester {
					allowed = it.Subscription == storage.SubFrom || it.Subscription == storage.SubBoth
					break
				}
			}
			if !allowed {
				return reply("auth", "forbidden")
			}
		}
		available := false
		s.sessions.each(user, func(o *session) { available = available || o.available.Load() })
		var a storage.Activity
		if !available {
			var ok bool
			var err error
			if a, ok, err = s.store.LastActivity(ctx, user); err != nil {
				s.log.Error("last activity read failed", zap.String("user", user), zap.Error(err))
				return reply("wait", "internal-server-error")
			} else if !ok {
				return reply("cancel", "item-not-found")
			}
		}
		seconds := int64(0)
		if !available {
			seconds = max(0, int64(time.Since(a.At)/time.Second))
		}
		b := []byte(`<query xmlns='` + nsLast + `' seconds='`)
		b = strconv.AppendInt(b, seconds, 10)
		if a.Status == "" {
			b = append(b, `'/>`...)
		} else {
			b = append(b, `'>`...)
			b = stanza.AppendEscaped(b, a.Status)
			b = append(b, `</query>`...)
		}
		return func() { c.write(appendResult(nil, id, from, b)) }
	}, reply("wait", "resource-constraint"))
}

// recordLastActivity stores now as user's last activity with status, if
// none of user's sessions is available any more. Runs on a worker.
func (s *Server) recordLastActivity(ctx context.Context, user, status string) {
	available := false
	s.sessions.each(user, func(o *session) { available = available || o.available.Load() })
	if available {
		return
	}
	err := s.store.SetLastActivity(ctx, user, storage.Activity{At: time.Now(), Status: status})
	if err != nil && !errors.Is(err, storage.ErrNotFound) { // removed meanwhile
		s.log.Error("last activity not stored", zap.String("user", user), zap.Error(err))
	}
}

// presenceStatus returns the text of a presence's first <status/>, cut to
// maxStatusLen bytes; "" if none or malformed.
func presenceStatus(unit []byte) string {
	var status string
	stanza.Children(unit, func(child []byte) bool {
		tag, err := stanza.ParseStartTag(child)
		if err != nil || string(tag.Local()) != "status" || tag.Prefix() != nil {
			return true
		}
		if ns, ok := tag.AttrString("xmlns"); ok && ns != nsClient {
			return true
		}
		// Bounded by the stanza size limit.
		raw, err := stanza.Unescape(nil, stanza.Inner(child))
		if err != nil {
			return false
		}
		if len(raw) > maxStatusLen {
			raw = raw[:maxStatusLen]
		}
		status = strings.ToValidUTF8(string(raw), "")
		return false
	})
	return status
}
