package roster

import (
	"context"
	"errors"
	"slices"
	"strconv"

	"go.uber.org/zap"

	"github.com/krill-xmpp/krill/hook"
	"github.com/krill-xmpp/krill/stanza"
	"github.com/krill-xmpp/krill/storage"
)

// subscription handles an outbound subscription stanza (RFC 6121 section
// 3) from the session's user, whatever its addressing, and consumes it:
// the contact gets what the state machine says, not the stanza as sent.
func (m *Module) subscription(c *hook.Ctx, st *hook.Stanza) hook.Verdict {
	switch st.Type {
	case "subscribe", "subscribed", "unsubscribe", "unsubscribed":
	default:
		return hook.Continue
	}
	sess, host, log := c.Session, c.Host, c.Log
	user, peer := sess.Local(), st.Local
	switch {
	case st.Addr == hook.ToRemote:
		return m.remoteSubscription(c, st) // remote.go
	case st.Addr&(hook.ToBare|hook.ToFull) == 0 || peer == "" || peer == user:
		// To nobody, to the server, or to the user's own account: there is
		// no subscription to change.
		return hook.Stop
	}
	sm := machine{domain: host.Domain()}
	peerBare, typ := sm.bare(peer), st.Type
	refuse := func(typ, cond, text string) func(*hook.Ctx) {
		return func(c *hook.Ctx) {
			st := c.Stanza
			c.Reply(stanza.AppendError(c.Scratch(), "presence", st.ID, peerBare, st.From, typ, cond, text))
		}
	}
	c.Conn.Async(func(ctx context.Context) func(*hook.Ctx) {
		if _, err := m.Accounts.Credentials(ctx, peer); err != nil {
			if !errors.Is(err, storage.ErrNotFound) {
				log.Error("account look-up failed", zap.String("contact", peer), zap.Error(err))
				return nil
			}
			if typ == "subscribe" {
				return refuse("cancel", "service-unavailable", "")
			}
			return nil
		}
		var fx effects
		err := m.Store.UpdateRosters(ctx, func(tx storage.RosterTx) error {
			fx = effects{} // the transaction may run again
			return sm.run(tx, &fx, typ, user, peer)
		})
		if err != nil {
			log.Error("subscription change failed", zap.String("user", user), zap.String("contact", peer), zap.Error(err))
			return nil
		}
		m.apply(host, &fx)
		return nil
	}, refuse("wait", "resource-constraint", ""))
	return hook.Stop
}

// Subscription directions, from the user's side of an item, as one table:
// sub[to][from] is the state with those directions. Every transition below
// is one direction turned on or off through it.
var sub = [2][2]storage.Subscription{
	{storage.SubNone, storage.SubFrom},
	{storage.SubTo, storage.SubBoth},
}

// hasTo reports whether the user receives the contact's presence.
func hasTo(s storage.Subscription) bool { return s == storage.SubTo || s == storage.SubBoth }

// hasFrom reports whether the contact receives the user's presence.
func hasFrom(s storage.Subscription) bool { return s == storage.SubFrom || s == storage.SubBoth }

// withTo returns s with the to direction set to on.
func withTo(s storage.Subscription, on bool) storage.Subscription {
	return sub[b2i(on)][b2i(hasFrom(s))]
}

// withFrom returns s with the from direction set to on.
func withFrom(s storage.Subscription, on bool) storage.Subscription {
	return sub[b2i(hasTo(s))][b2i(on)]
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// machine is the subscription state machine of RFC 6121 appendix A, with
// both sides local: what the user's server does for an outbound stanza
// (A.2) and what the contact's server does on receiving it (A.3), in one
// transaction. It has no effect outside tx and fx.
type machine struct{ domain string }

func (sm machine) bare(local string) string { return local + "@" + sm.domain }

// stanza builds the subscription presence user sends peer; subscription
// stanzas carry bare JIDs both ways (RFC 6121 3.1.1).
func (sm machine) stanza(typ, from, to string) []byte {
	return stanza.AppendPresence(nil, typ, sm.bare(from), sm.bare(to))
}

// run applies one outbound subscription stanza of type typ.
func (sm machine) run(tx storage.RosterTx, fx *effects, typ, user, peer string) error {
	switch typ {
	case "subscribe":
		return sm.subscribe(tx, fx, user, peer)
	case "subscribed":
		return sm.subscribed(tx, fx, user, peer)
	case "unsubscribe":
		return sm.unsubscribe(tx, fx, user, peer)
	case "unsubscribed":
		return sm.unsubscribed(tx, fx, user, peer)
	}
	return errors.New("roster: not a subscription type: " + typ)
}

// subscribe: user asks to see peer's presence (RFC 6121 3.1).
func (sm machine) subscribe(tx storage.RosterTx, fx *effects, user, peer string) error {
	peerBare, userBare := sm.bare(peer), sm.bare(user)
	u, _, err := tx.Item(user, peerBare)
	if err != nil {
		return err
	}
	if hasTo(u.Subscription) {
		// Already subscribed: the contact's server answers for it (3.1.3).
		fx.deliver(user, sm.stanza("subscribed", peer, user))
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
	case hasFrom(p.Subscription):
		return sm.approved(tx, fx, user, peer)
	case p.PreApproved:
		p.PreApproved = false
		p.Subscription = withFrom(p.Subscription, true)
		if err := fx.put(tx, peer, p); err != nil {
			return err
		}
		return sm.approved(tx, fx, user, peer)
	}
	out := sm.stanza("subscribe", user, peer)
	if err := tx.PutRequest(peer, storage.SubscriptionRequest{From: userBare, Stanza: out}); err != nil {
		return err
	}
	fx.deliver(peer, slices.Clone(out))
	return nil
}

// approved completes user's subscription to peer on the user's side: the
// user learns it was approved and gets peer's presence.
func (sm machine) approved(tx storage.RosterTx, fx *effects, user, peer string) error {
	u, _, err := tx.Item(user, sm.bare(peer))
	if err != nil {
		return err
	}
	u.Contact, u.AskOut = sm.bare(peer), false
	u.Subscription = withTo(u.Subscription, true)
	if err := fx.put(tx, user, u); err != nil {
		return err
	}
	fx.deliver(user, sm.stanza("subscribed", peer, user))
	fx.presenceOf(peer, user)
	return nil
}

// subscribed: user approves peer's request, or pre-approves one (3.4).
func (sm machine) subscribed(tx storage.RosterTx, fx *effects, user, peer string) error {
	peerBare, userBare := sm.bare(peer), sm.bare(user)
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
		if hasFrom(u.Subscription) || u.PreApproved {
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
	u.Subscription = withFrom(u.Subscription, true)
	if err := fx.put(tx, user, u); err != nil {
		return err
	}
	if pexists && p.AskOut {
		p.AskOut = false
		p.Subscription = withTo(p.Subscription, true)
		if err := fx.put(tx, peer, p); err != nil {
			return err
		}
		fx.deliver(peer, sm.stanza("subscribed", user, peer))
		fx.presenceOf(user, peer)
	}
	return nil
}

// unsubscribe: user stops seeing peer's presence (3.3).
func (sm machine) unsubscribe(tx storage.RosterTx, fx *effects, user, peer string) error {
	peerBare, userBare := sm.bare(peer), sm.bare(user)
	u, uexists, err := tx.Item(user, peerBare)
	if err != nil {
		return err
	}
	if uexists && (u.AskOut || hasTo(u.Subscription)) {
		u.AskOut = false
		u.Subscription = withTo(u.Subscription, false)
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
	if pexists && hasFrom(p.Subscription) {
		p.Subscription = withFrom(p.Subscription, false)
		if err := fx.put(tx, peer, p); err != nil {
			return err
		}
		fx.deliver(peer, sm.stanza("unsubscribe", user, peer))
		fx.unavailableOf(peer, user)
	}
	return nil
}

// unsubscribed: user cancels peer's subscription, or denies its request
// (3.2).
func (sm machine) unsubscribed(tx storage.RosterTx, fx *effects, user, peer string) error {
	peerBare, userBare := sm.bare(peer), sm.bare(user)
	u, uexists, err := tx.Item(user, peerBare)
	if err != nil {
		return err
	}
	hadFrom := uexists && hasFrom(u.Subscription)
	if uexists && (hadFrom || u.PreApproved) {
		u.PreApproved = false
		u.Subscription = withFrom(u.Subscription, false)
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
	if pexists && (p.AskOut || hasTo(p.Subscription)) {
		p.AskOut = false
		p.Subscription = withTo(p.Subscription, false)
		if err := fx.put(tx, peer, p); err != nil {
			return err
		}
		fx.deliver(peer, sm.stanza("unsubscribed", user, peer))
	} else if denied {
		fx.deliver(peer, sm.stanza("unsubscribed", user, peer))
	}
	if hadFrom {
		fx.unavailableOf(user, peer)
	}
	return nil
}

// remove deletes user's item for contact, cancelling the subscriptions
// both ways first (RFC 6121 2.5.2) when the contact is a local account.
func (sm machine) remove(tx storage.RosterTx, fx *effects, user, contact string) error {
	u, exists, err := tx.Item(user, contact)
	if err != nil {
		return err
	}
	if !exists {
		return errItemNotFound
	}
	if peer, ok := sm.localOf(contact); ok {
		if u.AskOut || hasTo(u.Subscription) {
			if err := sm.unsubscribe(tx, fx, user, peer); err != nil {
				return err
			}
		}
		if hasFrom(u.Subscription) || u.PreApproved {
			if err := sm.unsubscribed(tx, fx, user, peer); err != nil {
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

// localOf returns the localpart of a normalised bare JID of this domain.
func (sm machine) localOf(bare string) (string, bool) {
	for i := 0; i < len(bare); i++ {
		if bare[i] == '@' {
			if i > 0 && bare[i+1:] == sm.domain {
				return bare[:i], true
			}
			return "", false
		}
	}
	return "", false
}

// effects collects what a roster transaction must do once committed: the
// transaction may be retried, so it is rebuilt from empty each time.
type effects struct {
	pushes      []push
	deliveries  []delivery
	presence    [][2]string // [from, to] localparts: from's current presence to to
	unavailable [][2]string // [from, to]: from's unavailable presence to to

	// The same towards contacts of other domains (remote.go): to is a
	// bare JID.
	remote        []delivery // subscription stanzas, user is the bare JID to send to
	presenceTo    [][2]string
	unavailableTo [][2]string
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

// put stores item and queues its roster push with the new version.
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

// apply carries out committed effects, on a worker: roster pushes to the
// sessions that requested the roster, subscription stanzas to the
// accounts' available resources, and presence that the change lets
// through or withdraws.
func (m *Module) apply(host hook.Host, fx *effects) {
	for _, p := range fx.pushes {
		host.Sessions(p.user, func(o hook.Session) {
			if !o.Has(m.interested) {
				return
			}
			q := []byte(`<query xmlns='` + NS + `' ver='` + strconv.FormatUint(p.ver, 10) + `'>`)
			q = appendItem(q, p.item, p.remove)
			q = append(q, `</query>`...)
			id := "push" + strconv.FormatUint(m.pushSeq.Add(1), 10)
			o.Deliver(stanza.AppendIQ(nil, "set", id, "", o.Full(), q))
		})
	}
	domain := host.Domain()
	for _, d := range fx.deliveries {
		host.Deliver(d.user+"@"+domain, d.b)
	}
	for _, p := range fx.presence {
		to := p[1] + "@" + domain
		host.Sessions(p[0], func(o hook.Session) {
			if last := o.Presence(); last != nil {
				if b := addressed(last, to); b != nil {
					host.Deliver(to, b)
				}
			}
		})
	}
	for _, d := range fx.remote {
		host.Deliver(d.user, d.b)
	}
	for _, p := range fx.presenceTo {
		to := p[1]
		host.Sessions(p[0], func(o hook.Session) {
			if last := o.Presence(); last != nil {
				if b := addressed(last, to); b != nil {
					host.Deliver(to, b)
				}
			}
		})
	}
	for _, p := range fx.unavailableTo {
		to := p[1]
		host.Sessions(p[0], func(o hook.Session) {
			if o.Available() {
				host.Deliver(to, stanza.AppendPresence(nil, "unavailable", o.Full(), to))
			}
		})
	}
	for _, p := range fx.unavailable {
		to := p[1] + "@" + domain
		host.Sessions(p[0], func(o hook.Session) {
			if o.Available() {
				host.Deliver(to, stanza.AppendPresence(nil, "unavailable", o.Full(), to))
			}
		})
	}
}

// addressed returns a copy of a stamped presence addressed to to, nil if
// it does not parse.
func addressed(b []byte, to string) []byte {
	tag, err := stanza.ParseStartTag(b)
	if err != nil {
		return nil
	}
	return stanza.WithAttr(tag, b, "to", to)
}
