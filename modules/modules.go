// Package modules lists Krill's feature modules in the order they are
// registered: the one place where the server's features are chosen. Each
// feature lives in its own package below this one; the core (server/)
// imports none of them.
package modules

import (
	"time"

	"github.com/krill-xmpp/krill/config"
	"github.com/krill-xmpp/krill/fast"
	"github.com/krill-xmpp/krill/hook"
	"github.com/krill-xmpp/krill/modules/account"
	"github.com/krill-xmpp/krill/modules/avatar"
	"github.com/krill-xmpp/krill/modules/blocking"
	"github.com/krill-xmpp/krill/modules/carbons"
	"github.com/krill-xmpp/krill/modules/csi"
	"github.com/krill-xmpp/krill/modules/disco"
	fastmod "github.com/krill-xmpp/krill/modules/fast"
	"github.com/krill-xmpp/krill/modules/lastactivity"
	"github.com/krill-xmpp/krill/modules/mam"
	"github.com/krill-xmpp/krill/modules/muc"
	"github.com/krill-xmpp/krill/modules/offline"
	"github.com/krill-xmpp/krill/modules/pep"
	"github.com/krill-xmpp/krill/modules/ping"
	"github.com/krill-xmpp/krill/modules/presence"
	"github.com/krill-xmpp/krill/modules/private"
	"github.com/krill-xmpp/krill/modules/push"
	"github.com/krill-xmpp/krill/modules/register"
	"github.com/krill-xmpp/krill/modules/roster"
	"github.com/krill-xmpp/krill/modules/sm"
	"github.com/krill-xmpp/krill/modules/upload"
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
	storage.PEP
	storage.Private
	storage.Archive
	storage.MUC
	storage.Push
}

// Options are the settings of the standard modules that are fixed at
// start-up (the rest they read live from hook.Host.Config).
type Options struct {
	// Config is the configuration the server starts with.
	Config config.Config
	// Started is when the server started, for its uptime (XEP-0012);
	// zero means when the process started.
	Started time.Time
	// Now is the message archive's clock (nil: time.Now), for tests of
	// its retention.
	Now func() time.Time
	// FAST issues and checks XEP-0484 tokens (fast.New over the store,
	// with the secret of fast.secret_file); nil, or fast.enabled off,
	// leaves FAST out.
	FAST *fast.Tokens
}

// Standard returns the standard modules over store, in registration
// order: handlers of one event run in this order, so blocking refuses a
// stanza before carbons copy it and before roster, presence or offline
// storage see it.
func Standard(store Store, opt Options) []hook.Module {
	blk := blocking.New(store)
	off := &offline.Module{Store: store, Accounts: store, Blocker: blk}
	av := &avatar.Module{Store: store}
	pp := &pep.Module{Store: store, Blocker: blk, OnPublish: av.Published}
	// The archive goes after blocking (see package mam) and before
	// offline storage, whose copy then carries the stanza ID.
	var archive []hook.Module
	// The MUC service archives rooms into the same archive (XEP-0313
	// on room JIDs) when there is one.
	mc := &muc.Module{Store: store, Config: opt.Config}
	cb := &carbons.Module{Blocker: blk}
	if opt.Config.MAM.Enabled {
		// Carbons runs the archive's Pre stage before its copies,
		// which then carry the stanza IDs (see package mam).
		m := &mam.Module{Store: store, Blocker: blk, Now: opt.Now, Chained: true, Rooms: store}
		cb.Archive = m.Archive
		off.Archived = m.Delivered
		archive = append(archive, m)
		mc.Archiver = m
	}
	mods := append(append([]hook.Module{
		ping.Module{},
		disco.Module{AccountNode: pp.NodeInfo},
		version.Module{},
		vcard.Module{Store: store, OnSet: av.VCardSet},
		private.Module{Store: store},
		&lastactivity.Module{Started: opt.Started, Store: store},
		account.New(store),
		blk,
		cb,
		&roster.Module{Store: store, Accounts: store},
		// Before presence, which consumes the broadcasts whose caps
		// it reads.
		pp,
		av,
		&presence.Module{Store: store, Blocker: blk},
	}, archive...), []hook.Module{
		// Before offline storage (its Undelivered handler goes first)
		// and before csi and sm (its outbound filter sees what a parked
		// session is sent).
		&push.Module{Store: store, Clustered: opt.Config.Cluster.NATSURL != ""},
		off,
		&register.Module{Accounts: store, Enabled: opt.Config.Register.Enabled, AllowPlaintext: opt.Config.C2S.AllowPlaintext},
		mc,
		&upload.Module{Config: opt.Config, Now: opt.Now},
		// Holding before counting: stream management goes after csi, so
		// that it counts what reaches the client.
		csi.New(opt.Config.CSI.MaxBufferBytes),
		// Last: its outbound filter counts what the filters before it
		// pass on (see package sm).
		&sm.Module{Offline: off},
	}...)
	if opt.Config.FAST.Enabled && opt.FAST != nil {
		mods = append(mods, &fastmod.Module{Tokens: opt.FAST})
	}
	return mods
}

// Registry registers the standard modules.
func Registry(store Store, opt Options) (*hook.Registry, error) {
	return hook.New(Standard(store, opt)...)
}
