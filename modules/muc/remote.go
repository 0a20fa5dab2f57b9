package muc

import (
	"github.com/krill-xmpp/krill/hook"
	"github.com/krill-xmpp/krill/stanza"
)

// Occupants from other servers. A stanza from a remote JID reaches the
// service over federation with no local session behind it (the Ctx has
// none): such an occupant gets a peer as its session, which hands each
// copy to Host.Deliver. Delivery to another domain is the federation
// layer's: one stream from the service's domain to each remote domain
// carries every copy for that domain's occupants, in order. Nothing tells
// the room that a remote client went away but its server's unavailable
// presence, or an error bounced for one of the room's copies: an error of
// type cancel from an occupant's real JID (remote-server-not-found when
// its domain cannot be reached, service-unavailable when its session is
// gone) removes it, with status codes 307 and 333 ("kicked because of a
// technical problem", as Prosody does).

// peer is the hook.Session of a remote occupant: only Full and Deliver
// mean anything; the rest is the zero session a remote JID is to a
// module.
type peer struct {
	h    hook.Host
	full string
}

var _ hook.Session = (*peer)(nil)

func (p *peer) Local() string                      { return "" }
func (p *peer) Full() string                       { return p.full }
func (p *peer) Available() bool                    { return true }
func (p *peer) Priority() int                      { return 0 }
func (p *peer) SetPresence(*hook.Ctx, []byte, int) {}
func (p *peer) Presence() []byte                   { return nil }
func (p *peer) Has(hook.Flag) bool                 { return false }
func (p *peer) Set(hook.Flag, bool)                {}
func (p *peer) Slot(hook.Slot) any                 { return nil }
func (p *peer) SetSlot(hook.Slot, any)             {}
func (p *peer) Pass(hook.Outbound, []byte)         {}
func (p *peer) Close(string, string)               {}

// Deliver routes b to the occupant's real JID (over federation).
func (p *peer) Deliver(b []byte) bool { return p.h.Deliver(p.full, b) > 0 }

// sessionOf returns the session an occupant joining with c is: the bound
// session, or a peer for a sender on another server.
func sessionOf(c *hook.Ctx, full string) hook.Session {
	if c.Session != nil {
		return c.Session
	}
	return &peer{h: c.Host, full: full}
}

// kickable reports whether an error stanza from an occupant's real JID
// means it is gone: an error of type cancel (RFC 6120 8.3.2).
func kickable(raw []byte) bool {
	e := child(elem(raw), "error")
	return e.ok() && attr(e, "type") == "cancel"
}

// errorCondition returns the defined condition of an error stanza's
// error element, "" when none.
func errorCondition(raw []byte) string {
	var cond string
	stanza.Children(child(elem(raw), "error"), func(ch []byte) bool {
		t, err := stanza.ParseStartTag(ch)
		if err != nil {
			return true
		}
		if ns, _ := t.AttrString("xmlns"); ns == nsStanzas && string(t.Local()) != "text" {
			cond = string(t.Local())
			return false
		}
		return true
	})
	return cond
}

// bounced removes o, whose real JID bounced a stanza of the room with an
// error of type cancel: unavailable with 307 and 333, the condition as the
// reason. Called with r.mu held; it unlocks.
func (r *room) bounced(h hook.Host, o *occupant, cond string) {
	if cond == "" {
		r.leave(h, o, nil, []int{307, 333})
		return
	}
	reason := append([]byte(`<reason>`), stanza.AppendEscaped(nil, cond)...)
	r.leave(h, o, nil, []int{307, 333}, append(reason, `</reason>`...))
}

// remote reports whether o is on another server.
func (o *occupant) remote() bool {
	_, ok := o.sess.(*peer)
	return ok
}
