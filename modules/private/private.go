// Package private implements XEP-0049 private XML storage: an account
// stores XML fragments, each keyed by its root element's namespace and
// name, that only the account reads back. Fragments are capped by
// pep.max_item_bytes each and pep.max_bytes together.
package private

import (
	"bytes"
	"context"
	"errors"
	"strings"

	"go.uber.org/zap"

	"github.com/krill-xmpp/krill/hook"
	"github.com/krill-xmpp/krill/stanza"
	"github.com/krill-xmpp/krill/storage"
)

// NS is the XEP-0049 namespace.
const NS = "jabber:iq:private"

// Module answers private storage get and set. Store must be set.
type Module struct {
	Store storage.Private
}

// Name implements hook.Module.
func (Module) Name() string { return "private" }

// Register implements hook.Module.
func (m Module) Register(r *hook.Registrar) error {
	if m.Store == nil {
		return errors.New("private: Store must be set")
	}
	r.IQ(hook.PhaseBound, hook.IQGet, hook.ToAccount, NS, "query", m.get)
	r.IQ(hook.PhaseBound, hook.IQSet, hook.ToAccount, NS, "query", m.set)
	r.AccountFeature(NS)
	return nil
}

// reserved reports a namespace XEP-0049 section 3 reserves: jabber:*,
// http://jabber.org/*, vcard-temp.
func reserved(ns string) bool {
	return strings.HasPrefix(ns, "jabber:") || strings.HasPrefix(ns, "http://jabber.org/") || ns == "vcard-temp"
}

// fragment is one child of the query.
type fragment struct {
	ns, local string
	xml       []byte
}

// children returns the query's child elements; the error reply to give
// when they are unusable.
func children(c *hook.Ctx, iq *hook.Stanza) ([]fragment, bool) {
	if iq.Local != "" && iq.Local != c.Session.Local() {
		c.ReplyError("cancel", "forbidden", "private data of another account")
		return nil, false
	}
	var out []fragment
	bad := ""
	stanza.Children(iq.Payload, func(ch []byte) bool {
		t, err := stanza.ParseStartTag(ch)
		if err != nil {
			bad = "malformed"
			return false
		}
		ns, _ := t.AttrString("xmlns")
		switch {
		case ns == "" || len(t.Prefix()) != 0:
			bad = "each element needs its own namespace"
		case reserved(ns):
			bad = "reserved namespace " + ns
		}
		if bad != "" {
			return false
		}
		out = append(out, fragment{ns, string(t.Local()), ch})
		return true
	})
	switch {
	case bad != "":
		c.ReplyError("modify", "not-acceptable", bad)
		return nil, false
	case len(out) == 0:
		c.ReplyError("modify", "not-acceptable", "the query needs a child element")
		return nil, false
	}
	return out, true
}

// set stores each fragment of the query (XEP-0049 2.2).
func (m Module) set(c *hook.Ctx, iq *hook.Stanza) error {
	frags, ok := children(c, iq)
	if !ok {
		return nil
	}
	cfg := c.Host.Config()
	for i := range frags {
		if len(frags[i].xml) > cfg.PEP.MaxItemBytes {
			c.ReplyError("modify", "not-acceptable", "fragment larger than pep.max_item_bytes")
			return nil
		}
		frags[i].xml = bytes.Clone(frags[i].xml)
	}
	user, log, max := c.Session.Local(), c.Log, cfg.PEP.MaxBytes
	c.Conn.Async(func(ctx context.Context) func(*hook.Ctx) {
		for _, f := range frags {
			err := m.Store.SetPrivateXML(ctx, user, f.ns, f.local, f.xml, max)
			switch {
			case errors.Is(err, storage.ErrPrivateQuota):
				return func(c *hook.Ctx) { c.ReplyError("wait", "resource-constraint", "private storage full (pep.max_bytes)") }
			case errors.Is(err, storage.ErrInvalidText):
				return func(c *hook.Ctx) { c.ReplyError("modify", "not-acceptable", "text not storable") }
			case err != nil:
				log.Error("private storage write failed", zap.String("user", user), zap.Error(err))
				return func(c *hook.Ctx) { c.ReplyError("wait", "internal-server-error", "") }
			}
		}
		return func(c *hook.Ctx) { c.ReplyResult(nil) }
	}, nil)
	return nil
}

// get returns the stored fragment of the one child's namespace, or the
// child as sent when nothing is stored (XEP-0049 2.3).
func (m Module) get(c *hook.Ctx, iq *hook.Stanza) error {
	frags, ok := children(c, iq)
	if !ok {
		return nil
	}
	if len(frags) != 1 {
		c.ReplyError("modify", "not-acceptable", "one namespace per get")
		return nil
	}
	f := frags[0]
	f.xml = bytes.Clone(f.xml)
	user, log := c.Session.Local(), c.Log
	c.Conn.Async(func(ctx context.Context) func(*hook.Ctx) {
		v, err := m.Store.PrivateXML(ctx, user, f.ns, f.local)
		if err != nil {
			log.Error("private storage read failed", zap.String("user", user), zap.Error(err))
			return func(c *hook.Ctx) { c.ReplyError("wait", "internal-server-error", "") }
		}
		if v == nil {
			v = f.xml
		}
		b := append([]byte(`<query xmlns='`+NS+`'>`), v...)
		b = append(b, `</query>`...)
		return func(c *hook.Ctx) { c.ReplyResult(b) }
	}, nil)
	return nil
}
