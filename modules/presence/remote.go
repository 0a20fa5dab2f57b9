package presence

import (
	"context"

	"go.uber.org/zap"
	"mellium.im/xmpp/jid"

	"github.com/krill-xmpp/krill/hook"
	"github.com/krill-xmpp/krill/stanza"
)

// Presence with contacts of other domains (RFC 6121 4.3): probes go out
// when a session becomes available, and probes that come in over
// federation are answered with the user's current presence when the
// contact is subscribed to it.

var _ hook.Inbound = (*Module)(nil)

// blockedRemote reports whether user blocks the remote contact.
func (m *Module) blockedRemote(user, contact string) bool {
	if m.Blocker == nil {
		return false
	}
	cj, err := jid.Parse(contact)
	return err != nil || m.Blocker.Blocks(user, cj)
}

// probeRemote asks a remote contact's server for its presence (4.3.1).
func (m *Module) probeRemote(host hook.Host, user, contact string) {
	if m.blockedRemote(user, contact) {
		return
	}
	host.Deliver(contact, stanza.AppendPresence(nil, "probe", user+"@"+host.Domain(), contact))
}

// InboundStanza implements hook.Inbound: a probe from a remote contact is
// answered with the last presence of each of the user's available
// resources, if the contact is subscribed (4.3.2); otherwise nothing is
// said. Probes are never delivered to clients.
func (m *Module) InboundStanza(c *hook.Ctx, st *hook.Stanza) hook.Verdict {
	if st.Kind != hook.Presence || st.Type != "probe" {
		return hook.Continue
	}
	if st.Local == "" {
		return hook.Stop
	}
	user, host, log := st.Local, c.Host, c.Log
	prober := st.From
	if i := indexByte(prober, '/'); i >= 0 {
		prober = prober[:i]
	}
	c.Conn.Async(func(ctx context.Context) func(*hook.Ctx) {
		items, _, err := m.Store.Roster(ctx, user)
		if err != nil {
			log.Error("roster read for probe failed", zap.String("user", user), zap.Error(err))
			return nil
		}
		for _, it := range items {
			if it.Contact != prober || !hasFrom(it.Subscription) || m.blockedRemote(user, prober) {
				continue
			}
			host.Sessions(user, func(o hook.Session) {
				last := o.Presence()
				if last == nil {
					return
				}
				if tag, err := stanza.ParseStartTag(last); err == nil {
					host.Deliver(prober, stanza.WithAttr(tag, last, "to", prober))
				}
			})
		}
		return nil
	}, nil)
	return hook.Stop
}

func indexByte(s string, b byte) int {
	for i := 0; i < len(s); i++ {
		if s[i] == b {
			return i
		}
	}
	return -1
}
