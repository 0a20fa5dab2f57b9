package presence

import (
	"context"
	"slices"

	"go.uber.org/zap"
	"mellium.im/xmpp/jid"

	"github.com/krill-xmpp/krill/hook"
	"github.com/krill-xmpp/krill/stanza"
	"github.com/krill-xmpp/krill/storage"
)

var _ hook.Reannouncer = (*Module)(nil)

// Reannounce implements hook.Reannouncer: the session's last presence
// goes again to the account's available resources on other nodes, to the
// contacts' sessions on other nodes and to the contacts of other domains
// (those the node that announced this one dead told the session had
// gone). Sessions on this node were never told: they get nothing.
func (m *Module) Reannounce(c *hook.Ctx) {
	sess, host, log := c.Session, c.Host, c.Log
	stamped := sess.Presence()
	if stamped == nil {
		return
	}
	if !host.Go(func(ctx context.Context) {
		items, _, err := m.Store.Roster(ctx, sess.Local())
		if err != nil {
			log.Error("roster read for presence failed", zap.String("user", sess.Local()), zap.Error(err))
			return
		}
		m.reannounce(host, sess, stamped, items)
	}) {
		log.Warn("presence not announced again: worker queue full", zap.String("jid", sess.Full()))
	}
}

// reannounce is Reannounce's work, on a worker.
func (m *Module) reannounce(host hook.Host, sess hook.Session, stamped []byte, items []storage.RosterItem) {
	user, full := sess.Local(), sess.Full()
	remote := func(o hook.Session) bool {
		r, ok := o.(hook.Remote)
		return ok && r.Remote()
	}
	host.Sessions(user, func(o hook.Session) {
		if o.Full() != full && o.Available() && remote(o) {
			o.Deliver(slices.Clone(stamped))
		}
	})
	tag, err := stanza.ParseStartTag(stamped)
	if err != nil {
		return
	}
	sender, _ := jid.Parse(full)
	domain := host.Domain()
	for _, it := range items {
		if !hasFrom(it.Subscription) {
			continue
		}
		local, ok := localOf(it.Contact, domain)
		if !ok {
			if !m.blockedRemote(user, it.Contact) {
				host.Deliver(it.Contact, stanza.WithAttr(tag, stamped, "to", it.Contact))
			}
			continue
		}
		if m.blocked(user, local, it.Contact, sender) {
			continue
		}
		host.Sessions(local, func(o hook.Session) {
			if remote(o) && o.Available() {
				o.Deliver(stanza.WithAttr(tag, stamped, "to", it.Contact))
			}
		})
	}
}
