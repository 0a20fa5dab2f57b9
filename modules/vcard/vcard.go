// Package vcard implements XEP-0054 vcard-temp: each account stores one
// vCard, which any user may read and only its owner may set.
package vcard

import (
	"bytes"
	"context"

	"github.com/krill-xmpp/krill/hook"
)

// NS is the XEP-0054 namespace.
const NS = "vcard-temp"

// MaxSize is the largest vCard stored, in bytes.
const MaxSize = 64 << 10

// Store keeps vCards; storage.SQL implements it.
type Store interface {
	VCard(ctx context.Context, user string) ([]byte, error)
	SetVCard(ctx context.Context, user string, vcard []byte) error
}

// Module answers vCard get and set. Store must be set.
type Module struct {
	Store Store
	// OnSet, when set, is called on a worker after the owner's vCard was
	// stored (avatars follow its PHOTO this way).
	OnSet func(ctx context.Context, user string, card []byte)
}

// Name implements hook.Module.
func (Module) Name() string { return "vcard" }

// Register implements hook.Module.
func (m Module) Register(r *hook.Registrar) error {
	to := hook.ToNone | hook.ToHost | hook.ToBare
	r.IQ(hook.PhaseBound, hook.IQGet, to, NS, "vCard", m.get)
	r.IQ(hook.PhaseBound, hook.IQSet, to, NS, "vCard", m.set)
	// Anyone may read an account's vCard from another server; a set from
	// there is refused (forbidden: only the owner, who is local, may).
	r.IQ(hook.PhaseRemote, hook.IQGet, hook.ToBare, NS, "vCard", m.get)
	r.IQ(hook.PhaseRemote, hook.IQSet, hook.ToBare, NS, "vCard", m.set)
	r.DiscoFeature(NS)
	return nil
}

// set replaces the sender's own vCard.
func (m Module) set(c *hook.Ctx, iq *hook.Stanza) error {
	if c.Session == nil {
		c.ReplyError("auth", "forbidden", "")
		return nil
	}
	owner := c.Session.Local()
	if iq.Local != "" && iq.Local != owner {
		c.ReplyError("auth", "forbidden", "")
		return nil
	}
	if len(iq.Payload) > MaxSize {
		c.ReplyError("modify", "not-acceptable", "")
		return nil
	}
	card := bytes.Clone(iq.Payload) // valid only during the call
	c.Conn.Async(func(ctx context.Context) func(*hook.Ctx) {
		if err := m.Store.SetVCard(ctx, owner, card); err != nil {
			return func(c *hook.Ctx) { c.ReplyError("wait", "internal-server-error", "") }
		}
		if m.OnSet != nil {
			m.OnSet(ctx, owner, card)
		}
		return func(c *hook.Ctx) { c.ReplyResult(nil) }
	}, nil)
	return nil
}

// get returns the addressed account's vCard, the sender's own without a
// to (or with the domain as to).
func (m Module) get(c *hook.Ctx, iq *hook.Stanza) error {
	target := iq.Local
	if target == "" {
		target = c.Session.Local() // PhaseBound only: a remote get has a to
	}
	c.Conn.Async(func(ctx context.Context) func(*hook.Ctx) {
		card, err := m.Store.VCard(ctx, target)
		if err != nil {
			return func(c *hook.Ctx) { c.ReplyError("wait", "internal-server-error", "") }
		}
		if len(card) == 0 {
			card = []byte(`<vCard xmlns='` + NS + `'/>`)
		}
		return func(c *hook.Ctx) { c.ReplyResult(card) }
	}, nil)
	return nil
}
