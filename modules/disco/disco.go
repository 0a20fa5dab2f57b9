// Package disco implements XEP-0030 Service Discovery info for the domain:
// the server's identity and the features every registered module adds.
package disco

import (
	"github.com/krill-xmpp/krill/router"
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

// Name implements router.Module.
func (Module) Name() string { return "disco" }

// Routes implements router.Module.
func (Module) Routes() []router.Route {
	return []router.Route{
		{Kind: router.IQGet, NS: NSInfo, Local: "query"},
		{Kind: router.IQGet, NS: NSItems, Local: "query"},
	}
}

// Features implements router.Module.
func (Module) Features() []string { return []string{NSInfo, NSItems} }

// HandleIQ implements router.Module. Queries to an account's bare JID are
// answered with the account identity; node queries are not supported.
func (m Module) HandleIQ(c *router.Ctx, iq router.IQ) error {
	tag, err := stanza.ParseStartTag(iq.Payload)
	if err != nil {
		return err
	}
	ns, _ := tag.AttrString("xmlns")
	if node, ok := tag.AttrString("node"); ok && node != "" {
		c.ReplyError(iq, "cancel", "item-not-found")
		return nil
	}
	if ns == NSItems {
		c.ReplyResult(iq, []byte(`<query xmlns='`+NSItems+`'/>`))
		return nil
	}
	b := make([]byte, 0, 512)
	b = append(b, `<query xmlns='`+NSInfo+`'>`...)
	if iq.To.Localpart() != "" {
		b = append(b, `<identity category='account' type='registered'/>`...)
	} else {
		name := m.IdentityName
		if name == "" {
			name = "Krill"
		}
		b = append(b, `<identity category='server' type='im' name='`...)
		b = stanza.AppendEscaped(b, name)
		b = append(b, `'/>`...)
	}
	for _, f := range c.Router.Features() {
		b = append(b, `<feature var='`...)
		b = stanza.AppendEscaped(b, f)
		b = append(b, `'/>`...)
	}
	b = append(b, `</query>`...)
	c.ReplyResult(iq, b)
	return nil
}
