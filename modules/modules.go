// Package modules lists Krill's feature modules in the order they are
// registered: the one place where the server's features are chosen. Each
// feature lives in its own package below this one; the core (server/)
// imports none of them.
package modules

import (
	"time"

	"github.com/krill-xmpp/krill/config"
	"github.com/krill-xmpp/krill/hook"
	"github.com/krill-xmpp/krill/modules/account"
	"github.com/krill-xmpp/krill/modules/blocking"
	"github.com/krill-xmpp/krill/modules/carbons"
	"github.com/krill-xmpp/krill/modules/csi"
	"github.com/krill-xmpp/krill/modules/disco"
	"github.com/krill-xmpp/krill/modules/lastactivity"
	"github.com/krill-xmpp/krill/modules/offline"
	"github.com/krill-xmpp/krill/modules/ping"
	"github.com/krill-xmpp/krill/modules/presence"
	"github.com/krill-xmpp/krill/modules/push"
	"github.com/krill-xmpp/krill/modules/register"
	"github.com/krill-xmpp/krill/modules/roster"
	"github.com/krill-xmpp/krill/modules/sm"
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
	lastactivity.Store
}

// Options are the settings of the standard modules that are fixed at
// start-up (the rest they read live from hook.Host.Config).
type Options struct {
	// Config is the configuration the server starts with.
	Config config.Config
	// Started is when the server started, for its uptime (XEP-0012);
	// zero means when the process started.
	Started time.Time
}

// Standard returns the standard modules over store, in registration
// order: handlers of one event run in this order, so blocking refuses a
// stanza before carbons copy it and before roster, presence or offline
// storage see it.
func Standard(store Store, opt Options) []hook.Module {
	blk := blocking.New(store)
	off := &offline.Module{Store: store, Accounts: store, Blocker: blk}
	return []hook.Module{
		ping.Module{},
		disco.Module{},
		version.Module{},
		vcard.Module{Store: store},
		&lastactivity.Module{Started: opt.Started, Store: store},
		account.New(store),
		blk,
		&carbons.Module{Blocker: blk},
		&roster.Module{Store: store, Accounts: store},
		&presence.Module{Store: store, Blocker: blk},
		// Before offline storage (its Undelivered handler goes first)
		// and before csi and sm (its outbound filter sees what a parked
		// session is sent).
		&push.Module{},
		off,
		&register.Module{Accounts: store, Enabled: opt.Config.Register.Enabled, AllowPlaintext: opt.Config.C2S.AllowPlaintext},
		// Holding before counting: stream management goes after csi, so
		// that it counts what reaches the client.
		csi.New(opt.Config.CSI.MaxBufferBytes),
		// Last: its outbound filter counts what the filters before it
		// pass on (see package sm).
		&sm.Module{Offline: off},
	}
}

// Registry registers the standard modules.
func Registry(store Store, opt Options) (*hook.Registry, error) {
	return hook.New(Standard(store, opt)...)
}
