// Package vcard implements XEP-0054 vcard-temp: each account stores one
// vCard, which any user may read and only its owner may set.
package vcard

import (
	"bytes"
	"context"

	"github.com/krill-xmpp/krill/router"
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
}

// Name implements router.Module.
func (Module) Name() string { return "vcard" }

// Routes implements router.Module.
func (Module) Routes() []router.Route {
	return []router.Route{
		{Kind: router.IQGet, NS: NS, Local: "vCard"},
		{Kind: router.IQSet, NS: NS, Local: "vCard"},
	}
}

// Features implements router.Module.
func (Module) Features() []string { return []string{NS} }

// HandleIQ implements router.Module: a get returns the addressed account's
// vCard (the sender's own without a to), a set replaces the sender's own.
func (m Module) HandleIQ(c *router.Ctx, iq router.IQ) error {
	owner := iq.From.Localpart()
	target := owner
	if iq.To.Localpart() != "" {
		target = iq.To.Localpart()
	}
	if iq.Type == "set" {
		if target != owner {
			c.ReplyError(iq, "auth", "forbidden")
			return nil
		}
		if len(iq.Payload) > MaxSize {
			c.ReplyError(iq, "modify", "not-acceptable")
			return nil
		}
		card := bytes.Clone(iq.Payload) // valid only during HandleIQ
		c.Async(func(ctx context.Context) func() {
			if err := m.Store.SetVCard(ctx, owner, card); err != nil {
				return func() { c.ReplyError(iq, "wait", "internal-server-error") }
			}
			return func() { c.ReplyResult(iq, nil) }
		})
		return nil
	}
	c.Async(func(ctx context.Context) func() {
		card, err := m.Store.VCard(ctx, target)
		if err != nil {
			return func() { c.ReplyError(iq, "wait", "internal-server-error") }
		}
		if len(card) == 0 {
			card = []byte(`<vCard xmlns='` + NS + `'/>`)
		}
		return func() { c.ReplyResult(iq, card) }
	})
	return nil
}
