// Package disco implements XEP-0030 Service Discovery info for the domain:
// the server's identity and the features every registered module adds.
// It also announces the server's own XEP-0115 entity capabilities in the
// stream features: the hash of that disco#info.
package disco

import (
	"bytes"
	"crypto/sha1"
	"encoding/base64"
	"slices"
	"sync"

	"github.com/krill-xmpp/krill/hook"
	"github.com/krill-xmpp/krill/stanza"
)

// CapsNode is the node of the server's XEP-0115 caps.
const CapsNode = "https://github.com/krill-xmpp/krill"

// nsPubSub is the feature by which an account is a XEP-0163 PEP service:
// its disco#info then has the identity pubsub/pep.
const nsPubSub = "http://jabber.org/protocol/pubsub"

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
	// AccountNode, when set, answers disco#info about a node of an
	// account (the pep module's nodes, XEP-0060 5.3); nil answers
	// item-not-found.
	AccountNode hook.IQHandler
}

// Name implements hook.Module.
func (Module) Name() string { return "disco" }

// Register implements hook.Module.
func (m Module) Register(r *hook.Registrar) error {
	to := hook.ToNone | hook.ToHost | hook.ToBare
	r.IQ(hook.PhaseBound, hook.IQGet, to, NSInfo, "query", m.info)
	// disco#items of an account lists its PEP nodes: the pep module's.
	r.IQ(hook.PhaseBound, hook.IQGet, hook.ToNone|hook.ToHost, NSItems, "query", m.items)
	// Remote senders ask the server and accounts by address.
	r.IQ(hook.PhaseRemote, hook.IQGet, hook.ToHost|hook.ToBare, NSInfo, "query", m.info)
	r.IQ(hook.PhaseRemote, hook.IQGet, hook.ToHost, NSItems, "query", m.items)
	r.DiscoFeature(NSInfo, NSItems)
	r.AccountFeature(NSInfo)
	reg := r.Registry()
	var (
		once sync.Once
		caps []byte
	)
	feature := func(b []byte) []byte {
		once.Do(func() { caps = m.appendCaps(nil, reg) })
		return append(b, caps...)
	}
	for _, p := range []hook.Phase{hook.PhasePreAuth, hook.PhaseBind} {
		r.StreamFeature(p, false, feature)
		r.StreamFeature(p, true, feature)
	}
	return nil
}

// identityName is the name of the server's identity.
func (m Module) identityName() string {
	if m.IdentityName == "" {
		return "Krill"
	}
	return m.IdentityName
}

// appendCaps appends the server's XEP-0115 <c/>: the SHA-1 of the
// verification string (section 5.1) of the domain's disco#info.
func (m Module) appendCaps(b []byte, reg *hook.Registry) []byte {
	s := "server/im//" + m.identityName() + "<"
	features := slices.Clone(reg.DiscoFeatures())
	slices.Sort(features)
	for _, f := range features {
		s += f + "<"
	}
	sum := sha1.Sum([]byte(s))
	b = append(b, `<c xmlns='http://jabber.org/protocol/caps' hash='sha-1' node='`+CapsNode+`' ver='`...)
	b = append(b, base64.StdEncoding.EncodeToString(sum[:])...)
	return append(b, `'/>`...)
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
		if iq.Local != "" && m.AccountNode != nil {
			return m.AccountNode(c, iq)
		}
		c.ReplyError("cancel", "item-not-found", "")
		return nil
	}
	b := make([]byte, 0, 512)
	b = append(b, `<query xmlns='`+NSInfo+`'>`...)
	features := c.Registry.DiscoFeatures()
	if iq.Local != "" {
		b = append(b, `<identity category='account' type='registered'/>`...)
		features = c.Registry.AccountFeatures()
		if _, pep := slices.BinarySearch(features, nsPubSub); pep {
			b = append(b, `<identity category='pubsub' type='pep'/>`...)
		}
	} else {
		b = append(b, `<identity category='server' type='im' name='`...)
		b = stanza.AppendEscaped(b, m.identityName())
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
