package server

import (
	"context"
	"encoding/xml"
	"errors"
	"slices"
	"strconv"
	"sync/atomic"

	"go.uber.org/zap"
	"mellium.im/xmpp/jid"

	"github.com/krill-xmpp/krill/stanza"
	"github.com/krill-xmpp/krill/storage"
)

// Rosters and subscriptions (RFC 6121 sections 2 and 3). Every change is
// one storage transaction covering both sides of a subscription (both
// accounts are local: one domain per server); roster pushes and presence
// deliveries follow the commit.

const nsRoster = "jabber:iq:roster"

// rosterQuery is the payload of a roster iq.
type rosterQuery struct {
	XMLName xml.Name `xml:"jabber:iq:roster query"`
	Ver     *string  `xml:"ver,attr"`
	Items   []struct {
		JID          string   `xml:"jid,attr"`
		Name         string   `xml:"name,attr"`
		Subscription string   `xml:"subscription,attr"`
		Groups       []string `xml:"group"`
	} `xml:"item"`
}

// maxRosterGroups and maxGroupLen bound one roster item.
const (
	maxRosterGroups = 32
	maxGroupLen     = 256
)

// handleRoster answers roster get and set (RFC 6121 2.1.3, 2.3, 2.5).
func (s *Server) handleRoster(c *conn, typ, id, from string, payload []byte) {
	sess := c.sess
	var q rosterQuery
	if err := xml.Unmarshal(payload, &q); err != nil {
		s.sendError(c, "iq", id, from, "modify", "bad-request")
		return
	}
	reply := func(cond, etype string) func() {
		return func() { s.sendError(c, "iq", id, from, etype, cond) }
	}
	busy := reply("resource-constraint", "wait")
	if typ == "get" {
		sess.interested.Store(true)
		s.async(c, func(ctx context.Context) func() {
			items, ver, err := s.store.Roster(ctx, sess.local)
			if err != nil {
				s.log.Error("roster read failed", zap.String("user", sess.local), zap.Error(err))
				return reply("internal-server-error", "wait")
			}
			verStr := strconv.FormatUint(ver, 10)
			if q.Ver != nil && *q.Ver == verStr {
				// XEP-0237: the client's copy is current.
				return func() { c.write(appendResult(c.loop.scratch[:0], id, from, nil)) }
			}
			b := []byte(`<query xmlns='` + nsRoster + `' ver='` + verStr + `'>`)
			for _, it := range items {
				b = appendRosterItem(b, it, false)
			}
			b = append(b, `</query>`...)
			return func() { c.write(appendResult(nil, id, from, b)) }
		}, busy)
		return
	}
	if len(q.Items) != 1 {
		s.sendError(c, "iq", id, from, "modify", "bad-request")
		return
	}
	in := q.Items[0]
	contact, err := jid.Parse(in.JID)
	if err != nil || len(in.Groups) > maxRosterGroups || len(in.Name) > maxGroupLen {
		s.sendError(c, "iq", id, from, "modify", "bad-request")
		return
	}
	for _, g := range in.Groups {
		if g == "" || len(g) > maxGroupLen {
			s.sendError(c, "iq", id, from, "modify", "not-acceptable")
			return
		}
	}
	bare := contact.Bare().String()
	remove := in.Subscription == "remove"
	s.async(c, func(ctx context.Context) func() {
		if !remove {
			if err := s.rosterRoom(ctx, sess.local, bare); err != nil {
				if errors.Is(err, errRosterFull) {
					return reply("policy-violation", "modify")
				}
				return reply("internal-server-error", "wait")
			}
		}
		var fx effects
		err := s.store.UpdateRosters(ctx, func(tx storage.RosterTx) error {
			fx = effects{}
			if remove {
				return s.removeItem(tx, &fx, sess.local, bare)
			}
			item, _, err := tx.Item(sess.local, bare)
			if err != nil {
				return err
			}
			item.Contact, item.Name = bare, in.Name
			item.Groups = normaliseGroups(in.Groups)
			return fx.put(tx, sess.local, item)
		})
		if errors.Is(err, errItemNotFound) {
			return reply("item-not-found", "cancel")
		}
		if err != nil {
			s.log.Error("roster set failed", zap.String("user", sess.local), zap.Error(err))
			return reply("internal-server-error", "wait")
		}
		s.apply(fx)
		return func() { c.write(appendResult(c.loop.scratch[:0], id, from, nil)) }
	}, busy)
}

func normaliseGroups(gs []string) []string {
	if len(gs) == 0 {
		return nil
	}
	out := slices.Clone(gs)
	slices.Sort(out)
	return slices.Compact(out)
}

// subscription handles an outbound subscription stanza from the session's
// user to contact (RFC 6121 section 3, the state tables of appendix A).
func (s *Server) subscription(c *conn, typ, id string, contact jid.JID, unit []byte) {
	sess := c.sess
	if contact.Domainpart() != s.cfg.Domain {
		if typ == "subscribe" {
			s.sendError(c, "presence", id, contact.Bare().String(), "cancel", "remote-server-not-found")
		}
		return
	}
	if contact.Localpart() == "" || contact.Localpart() == sess.local {
		return
	}
	user, peer := sess.local, contact.Localpart()
	userBare, peerBare := user+"@"+s.cfg.Domain, peer+"@"+s.cfg.Domain
	// Subscription stanzas carry bare JIDs both ways (RFC 6121 3.1.1).
	out := []byte(`<presence type='` + typ + `' from='`)
	out = stanza.AppendEscaped(out, userBare)
	out = append(out, `' to='`...)
	out = stanza.AppendEscaped(out, peerBare)
	out = append(out, `'/>`...)
	s.async(c, func(ctx context.Context) func() {
		if _, err := s.accounts.Credentials(ctx, peer); errors.Is(err, storage.ErrNotFound) {
			if typ == "subscribe" {
				return func() {
					s.sendError(c, "presence", id, peerBare, "cancel", "service-unavailable")
				}
			}
			return nil
		}
		var fx effects
		err := s.store.UpdateRosters(ctx, func(tx storage.RosterTx) error {
			fx = effects{}
			switch typ {
			case "subscribe":
				return s.subscribe(tx, &fx, user, peer, out)
			case "subscribed":
				return s.subscribed(tx, &fx, user, peer, out)
			case "unsubscribe":
				return s.unsubscribe(tx, &fx, user, peer, out)
			default:
				return s.unsubscribed(tx, &fx, user, peer, out)
			}
		})
		if err != nil {
			s.log.Error("subscription change failed", zap.String("user", user), zap.String("contact", peer), zap.Error(err))
			return nil
		}
		s.apply(fx)
		return nil
	}, func() {
		s.sendError(c, "presence", id, peerBare, "wait", "resource-constraint")
	})
}

// subscribe: user asks to see peer's presence.
func (s *Server) subscribe(tx storage.RosterTx, fx *effects, user, peer string, out []byte) error {
	peerBare, userBare := s.bare(peer), s.bare(user)
	u, _, err := tx.Item(user, peerBare)
	if err != nil {
		return err
	}
	if u.Subscription == storage.SubTo || u.Subscription == storage.SubBoth {
		// Already subscribed: the contact's server answers for it (3.1.3).
		fx.deliver(user, s.presenceFrom(peerBare, userBare, "subscribed"))
		return nil
	}
	if !u.AskOut {
		u.Contact, u.AskOut = peerBare, true
		if err := fx.put(tx, user, u); err != nil {
			return err
		}
	}
	p, _, err := tx.Item(peer, userBare)
	if err != nil {
		return err
	}
	switch {
	case p.Subscription == storage.SubFrom || p.Subscription == storage.SubBoth:
		return s.approved(tx, fx, user, peer)
	case p.PreApproved:
		p.PreApproved = false
		p.Subscription = addFrom(p.Subscription)
		if err := fx.put(tx, peer, p); err != nil {
			return err
		}
		return s.approved(tx, fx, user, peer)
	}
	if err := tx.PutRequest(peer, storage.SubscriptionRequest{From: userBare, Stanza: out}); err != nil {
		return err
	}
	fx.deliver(peer, out)
	return nil
}

// approved completes user's subscription to peer on the user's side: the
// user learns it was approved and gets peer's presence.
func (s *Server) approved(tx storage.RosterTx, fx *effects, user, peer string) error {
	peerBare, userBare := s.bare(peer), s.bare(user)
	u, _, err := tx.Item(user, peerBare)
	if err != nil {
		return err
	}
	u.Contact, u.AskOut = peerBare, false
	u.Subscription = addTo(u.Subscription)
	if err := fx.put(tx, user, u); err != nil {
		return err
	}
	fx.deliver(user, s.presenceFrom(peerBare, userBare, "subscribed"))
	fx.presenceOf(peer, user)
	return nil
}

// subscribed: user approves peer's request, or pre-approves one (3.4).
func (s *Server) subscribed(tx storage.RosterTx, fx *effects, user, peer string, out []byte) error {
	peerBare, userBare := s.bare(peer), s.bare(user)
	u, _, err := tx.Item(user, peerBare)
	if err != nil {
		return err
	}
	_, pending, err := tx.Request(user, peerBare)
	if err != nil {
		return err
	}
	p, pexists, err := tx.Item(peer, userBare)
	if err != nil {
		return err
	}
	if !pending && !(pexists && p.AskOut) {
		if u.Subscription == storage.SubFrom || u.Subscription == storage.SubBoth || u.PreApproved {
			return nil
		}
		u.Contact, u.PreApproved = peerBare, true
		return fx.put(tx, user, u)
	}
	if pending {
		if _, err := tx.DeleteRequest(user, peerBare); err != nil {
			return err
		}
	}
	u.Contact = peerBare
	u.Subscription = addFrom(u.Subscription)
	if err := fx.put(tx, user, u); err != nil {
		return err
	}
	if pexists && p.AskOut {
		p.AskOut = false
		p.Subscription = addTo(p.Subscription)
		if err := fx.put(tx, peer, p); err != nil {
			return err
		}
		fx.deliver(peer, out)
		fx.presenceOf(user, peer)
	}
	return nil
}

// unsubscribe: user stops seeing peer's presence.
func (s *Server) unsubscribe(tx storage.RosterTx, fx *effects, user, peer string, out []byte) error {
	peerBare, userBare := s.bare(peer), s.bare(user)
	u, uexists, err := tx.Item(user, peerBare)
	if err != nil {
		return err
	}
	if uexists && (u.AskOut || u.Subscription == storage.SubTo || u.Subscription == storage.SubBoth) {
		u.AskOut = false
		u.Subscription = dropTo(u.Subscription)
		if err := fx.put(tx, user, u); err != nil {
			return err
		}
	}
	if _, err := tx.DeleteRequest(peer, userBare); err != nil {
		return err
	}
	p, pexists, err := tx.Item(peer, userBare)
	if err != nil {
		return err
	}
	if pexists && (p.Subscription == storage.SubFrom || p.Subscription == storage.SubBoth) {
		p.Subscription = dropFrom(p.Subscription)
		if err := fx.put(tx, peer, p); err != nil {
			return err
		}
		fx.deliver(peer, out)
		fx.unavailableOf(peer, user)
	}
	return nil
}

// unsubscribed: user cancels peer's subscription, or denies its request.
func (s *Server) unsubscribed(tx storage.RosterTx, fx *effects, user, peer string, out []byte) error {
	peerBare, userBare := s.bare(peer), s.bare(user)
	u, uexists, err := tx.Item(user, peerBare)
	if err != nil {
		return err
	}
	hadFrom := uexists && (u.Subscription == storage.SubFrom || u.Subscription == storage.SubBoth)
	if uexists && (hadFrom || u.PreApproved) {
		u.PreApproved = false
		u.Subscription = dropFrom(u.Subscription)
		if err := fx.put(tx, user, u); err != nil {
			return err
		}
	}
	denied, err := tx.DeleteRequest(user, peerBare)
	if err != nil {
		return err
	}
	p, pexists, err := tx.Item(peer, userBare)
	if err != nil {
		return err
	}
	if pexists && (p.AskOut || p.Subscription == storage.SubTo || p.Subscription == storage.SubBoth) {
		p.AskOut = false
		p.Subscription = dropTo(p.Subscription)
		if err := fx.put(tx, peer, p); err != nil {
			return err
		}
		fx.deliver(peer, out)
	} else if denied {
		fx.deliver(peer, out)
	}
	if hadFrom {
		fx.unavailableOf(user, peer)
	}
	return nil
}

// removeItem deletes user's item for contact, cancelling the subscriptions
// both ways first (RFC 6121 2.5.2).
func (s *Server) removeItem(tx storage.RosterTx, fx *effects, user, contact string) error {
	u, exists, err := tx.Item(user, contact)
	if err != nil {
		return err
	}
	if !exists {
		return errItemNotFound
	}
	if peer, ok := s.localOf(contact); ok {
		userBare := s.bare(user)
		if u.AskOut || u.Subscription == storage.SubTo || u.Subscription == storage.SubBoth {
			if err := s.unsubscribe(tx, fx, user, peer, s.presenceFrom(userBare, contact, "unsubscribe")); err != nil {
				return err
			}
		}
		if u.Subscription == storage.SubFrom || u.Subscription == storage.SubBoth || u.PreApproved {
			if err := s.unsubscribed(tx, fx, user, peer, s.presenceFrom(userBare, contact, "unsubscribed")); err != nil {
				return err
			}
		}
	}
	if _, err := tx.DeleteItem(user, contact); err != nil {
		return err
	}
	ver, err := tx.Version(user)
	if err != nil {
		return err
	}
	fx.pushes = append(fx.pushes, push{user: user, item: storage.RosterItem{Contact: contact}, remove: true, ver: ver})
	return nil
}

var (
	errItemNotFound = errors.New("server: no such roster item")
	errRosterFull   = errors.New("server: roster full")
)

// rosterRoom reports errRosterFull when user's roster has reached
// im.max_roster_items and has no item for contact yet. It reads before the
// change's transaction: the cap guards against abuse, it is not an exact
// count under concurrent sets.
func (s *Server) rosterRoom(ctx context.Context, user, contact string) error {
	limit := s.conf().IM.MaxRosterItems
	if limit <= 0 {
		return nil
	}
	items, _, err := s.store.Roster(ctx, user)
	if err != nil {
		return err
	}
	if len(items) >= limit && !slices.ContainsFunc(items, func(it storage.RosterItem) bool { return it.Contact == contact }) {
		return errRosterFull
	}
	return nil
}

func (s *Server) bare(local string) string { return local + "@" + s.cfg.Domain }

func (s *Server) presenceFrom(from, to, typ string) []byte {
	b := []byte(`<presence type='` + typ + `' from='`)
	b = stanza.AppendEscaped(b, from)
	b = append(b, `' to='`...)
	b = stanza.AppendEscaped(b, to)
	return append(b, `'/>`...)
}

func addTo(s storage.Subscription) storage.Subscription {
	if s == storage.SubFrom || s == storage.SubBoth {
		return storage.SubBoth
	}
	return storage.SubTo
}

func addFrom(s storage.Subscription) storage.Subscription {
	if s == storage.SubTo || s == storage.SubBoth {
		return storage.SubBoth
	}
	return storage.SubFrom
}

func dropTo(s storage.Subscription) storage.Subscription {
	if s == storage.SubBoth || s == storage.SubFrom {
		return storage.SubFrom
	}
	return storage.SubNone
}

func dropFrom(s storage.Subscription) storage.Subscription {
	if s == storage.SubBoth || s == storage.SubTo {
		return storage.SubTo
	}
	return storage.SubNone
}

// effects collects what a roster transaction must do once committed. A
// transaction may be retried, so it is rebuilt from empty each time.
type effects struct {
	pushes      []push
	deliveries  []delivery
	presence    [][2]string // [from, to] localparts: send from's current presence to to
	unavailable [][2]string // [from, to]: send from's unavailable presence to to
}

type push struct {
	user   string
	item   storage.RosterItem
	remove bool
	ver    uint64
}

type delivery struct {
	user string
	b    []byte
}

func (fx *effects) put(tx storage.RosterTx, user string, item storage.RosterItem) error {
	if err := tx.PutItem(user, item); err != nil {
		return err
	}
	ver, err := tx.Version(user)
	if err != nil {
		return err
	}
	fx.pushes = append(fx.pushes, push{user: user, item: item, ver: ver})
	return nil
}

func (fx *effects) deliver(user string, b []byte) {
	fx.deliveries = append(fx.deliveries, delivery{user, b})
}

func (fx *effects) presenceOf(from, to string) {
	fx.presence = append(fx.presence, [2]string{from, to})
}
func (fx *effects) unavailableOf(from, to string) {
	fx.unavailable = append(fx.unavailable, [2]string{from, to})
}

// pushSeq numbers roster pushes.
var pushSeq atomic.Uint64

// apply carries out committed effects. Runs on a worker.
func (s *Server) apply(fx effects) {
	for _, p := range fx.pushes {
		s.sessions.each(p.user, func(o *session) {
			if !o.interested.Load() {
				return
			}
			b := []byte(`<iq type='set' id='push` + strconv.FormatUint(pushSeq.Add(1), 10) + `' to='`)
			b = stanza.AppendEscaped(b, o.full)
			b = append(b, `'><query xmlns='`+nsRoster+`' ver='`+strconv.FormatUint(p.ver, 10)+`'>`...)
			b = appendRosterItem(b, p.item, p.remove)
			b = append(b, `</query></iq>`...)
			o.deliver(nil, b)
		})
	}
	for _, d := range fx.deliveries {
		s.toAvailable(d.user, d.b)
	}
	for _, p := range fx.presence {
		to := s.bare(p[1])
		s.sessions.each(p[0], func(o *session) {
			if last := o.lastPresence(); last != nil {
				s.toAvailable(p[1], withTo(last, to))
			}
		})
	}
	for _, p := range fx.unavailable {
		to := s.bare(p[1])
		s.sessions.each(p[0], func(o *session) {
			if o.available.Load() {
				s.toAvailable(p[1], s.presenceFrom(o.full, to, "unavailable"))
			}
		})
	}
}

// appendRosterItem appends one <item/> (RFC 6121 2.1.2).
func appendRosterItem(b []byte, it storage.RosterItem, remove bool) []byte {
	b = append(b, `<item jid='`...)
	b = stanza.AppendEscaped(b, it.Contact)
	b = append(b, '\'')
	if remove {
		return append(b, ` subscription='remove'/>`...)
	}
	if it.Name != "" {
		b = append(b, ` name='`...)
		b = stanza.AppendEscaped(b, it.Name)
		b = append(b, '\'')
	}
	b = append(b, ` subscription='`...)
	b = append(b, it.Subscription.String()...)
	b = append(b, '\'')
	if it.AskOut {
		b = append(b, ` ask='subscribe'`...)
	}
	if it.PreApproved {
		b = append(b, ` approved='true'`...)
	}
	if len(it.Groups) == 0 {
		return append(b, `/>`...)
	}
	b = append(b, '>')
	for _, g := range it.Groups {
		b = append(b, `<group>`...)
		b = stanza.AppendEscaped(b, g)
		b = append(b, `</group>`...)
	}
	return append(b, `</item>`...)
}
