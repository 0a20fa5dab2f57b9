// Package modules lists Krill's feature modules in the order they are
// registered: the one place where the server's features are chosen. Each
// feature lives in its own package below this one; the core (server/)
// imports none of them.
package modules

import (
	"github.com/krill-xmpp/krill/hook"
	"github.com/krill-xmpp/krill/modules/disco"
	"github.com/krill-xmpp/krill/modules/ping"
	"github.com/krill-xmpp/krill/modules/vcard"
	"github.com/krill-xmpp/krill/modules/version"
	"github.com/krill-xmpp/krill/storage"
)

// Store is what the standard modules keep their data in; storage.SQL
// implements it.
type Store interface {
	storage.Accounts
	storage.IM
	vcard.Store
}

// Standard returns the standard modules over store, in registration
// order: handlers of one event run in this order.
func Standard(store Store) []hook.Module {
	return []hook.Module{
		ping.Module{},
		disco.Module{},
		version.Module{},
		vcard.Module{Store: store},
	}
}

// Registry registers the standard modules.
func Registry(store Store) (*hook.Registry, error) { return hook.New(Standard(store)...) }
