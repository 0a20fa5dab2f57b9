// Package disco implements XEP-0030 Service Discovery info for the domain:
// the server's identity and the features every registered module adds.
package disco

import (
	"bytes"

	"github.com/krill-xmpp/krill/hook"
	"github.com/krill-xmpp/krill/stanza"
)

// Namespaces of XEP-0030.
const (
	NSInfo  = "http://jabber.org/protocol/disco#info"
	NSItems = "http://jabber.org/protocol/disco#items"
)

// Module answers disco#info and disco#items queries to the domain.
// Its zero value answers with the identity server/im named "Krill".
type Module struct {
	// Name of the identity; "" means "Krill".
	IdentityName string
}

// Name implements hook.Module.
func (Module) Name() string { return "disco" }

// Register implements hook.Module.
func (m Module) Register(r *hook.Registrar) error {
	to := hook.ToNone | hook.ToHost | hook.ToBare
	r.IQ(hook.PhaseBound, hook.IQGet, to, NSInfo, "query", m.info)
	r.IQ(hook.PhaseBound, hook.IQGet, to, NSItems, "query", m.items)
	r.DiscoFeature(NSInfo, NSItems)
	r.AccountFeature(NSInfo)
	return nil
}

// items answers disco#items: the domains modules serve, for the server.
func (m Module) items(c *hook.Ctx, iq *hook.Stanza) error {
	// The node is the query's attribute; iq.Tag is the iq's start tag.
	tag, err := stanza.ParseStartTag(iq.Payload)
	if err != nil {
		return err
	}
	if node, ok := tag.AttrString("node"); ok && node != "" {
		c.ReplyError("cancel", "item-not-found", "")
		return nil
	}
	// The domains modules serve (a multi-user chat service) are the
	// server's items (XEP-0030 section 4, XEP-0045 section 6.1).
	domains := c.Registry.Domains()
	if iq.Addr != hook.ToHost || len(domains) == 0 {
		c.ReplyResult([]byte(`<query xmlns='` + NSItems + `'/>`))
		return nil
	}
	b := append(c.Scratch(), `<query xmlns='`+NSItems+`'>`...)
	for _, d := range domains {
		b = append(b, `<item jid='`...)
		b = stanza.AppendEscaped(b, d)
		b = append(b, `'/>`...)
	}
	b = append(b, `</query>`...)
	c.ReplyResult(bytes.Clone(b))
	return nil
}

// info answers disco#info of the domain, or of an account (a query to a
// bare JID, or with no to: the sender's own account), from the features
// every module declared. Node queries are not supported.
func (m Module) info(c *hook.Ctx, iq *hook.Stanza) error {
	tag, err := stanza.ParseStartTag(iq.Payload)
	if err != nil {
		return err
	}
	if node, ok := tag.AttrString("node"); ok && node != "" {
		c.ReplyError("cancel", "item-not-found", "")
		return nil
	}
	b := make([]byte, 0, 512)
	b = append(b, `<query xmlns='`+NSInfo+`'>`...)
	features := c.Registry.DiscoFeatures()
	if iq.Local != "" {
		b = append(b, `<identity category='account' type='registered'/>`...)
		features = c.Registry.AccountFeatures()
	} else {
		name := m.IdentityName
		if name == "" {
			name = "Krill"
		}
		b = append(b, `<identity category='server' type='im' name='`...)
		b = stanza.AppendEscaped(b, name)
		b = append(b, `'/>`...)
	}
	for _, f := range features {
		b = append(b, `<feature var='`...)
		b = stanza.AppendEscaped(b, f)
		b = append(b, `'/>`...)
	}
	b = append(b, `</query>`...)
	c.ReplyResult(b)
	return nil
}
