package carbons

import "github.com/krill-xmpp/krill/hook"

// Messages over federation: <sent/> copies of a message to another domain
// are made in Pre like local ones (the ToRemote addressing); <received/>
// copies of a message from another domain are made here, when it arrives
// (hook.Inbound), before the core delivers the original.

var _ hook.Inbound = (*Module)(nil)

// InboundStanza implements hook.Inbound: <received/> copies for the
// recipient's enabled resources the original does not reach. It never
// consumes the stanza.
func (m *Module) InboundStanza(c *hook.Ctx, st *hook.Stanza) hook.Verdict {
	if st.Kind != hook.Message || st.Type == "groupchat" || st.Local == "" || !m.table.any(st.Local) {
		return hook.Continue
	}
	t := classify(st.Tag, st.Raw)
	if !eligible(st, t) || t&mucPM != 0 && st.Addr == hook.ToFull {
		return hook.Continue
	}
	m.copyReceived(c.Host, st, planRoute(c.Host, st), forwarded(st), c.Host.Domain())
	return hook.Continue
}
