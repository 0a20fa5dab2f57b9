package server

import (
	"github.com/krill-xmpp/krill/cluster"
	"github.com/krill-xmpp/krill/hook"
)

// A node back after a cut from NATS long enough for the others to take it
// as dead (cluster/revive.go): its sessions are in the directory again,
// and each available one has its presence announced again to those who
// were told it had gone (hook.Reannouncer, the presence module).

var _ cluster.RevivalHandler = clusterHandler{}

// Revived implements cluster.RevivalHandler.
func (h clusterHandler) Revived(owner any) {
	s := h.s
	o, ok := owner.(*session)
	if !ok {
		return
	}
	s.onLoopSession(o, func() {
		o.mu.Lock()
		gone := o.gone
		o.mu.Unlock()
		if gone || !o.bound || !o.available.Load() {
			return
		}
		// The directory entry was written with the presence again
		// (reassert); the contacts on other nodes learn it here.
		cx := o.loop.sessionCtx(o)
		defer cx.Reset(nil, nil, nil)
		for _, m := range s.hooks.Modules() {
			if r, ok := m.(hook.Reannouncer); ok {
				r.Reannounce(cx)
			}
		}
	})
}
