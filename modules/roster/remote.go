package roster

import (
	"context"

	"go.uber.org/zap"

	"github.com/krill-xmpp/krill/hook"
	"github.com/krill-xmpp/krill/stanza"
	"github.com/krill-xmpp/krill/storage"
)

// The subscription state machine with a remote side (RFC 6121 appendix
// A): for a contact of another domain the user's server runs only the
// user's half of each transition, and the contact's server the other half
// when the stanza reaches it over federation.

var _ hook.Inbound = (*Module)(nil)

// remoteOut is A.2 for a remote contact: user sends typ to peerBare.
func (sm machine) remoteOut(tx storage.RosterTx, fx *effects, typ, user, peerBare string) error {
	u, exists, err := tx.Item(user, peerBare)
	if err != nil {
		return err
	}
	userBare := sm.bare(user)
	send := func() {
		fx.remote = append(fx.remote, delivery{peerBare, stanza.AppendPresence(nil, typ, userBare, peerBare)})
	}
	switch typ {
	case "subscribe":
		if !hasTo(u.Subscription) && !u.AskOut {
			u.Contact, u.AskOut = peerBare, true
			if err := fx.put(tx, user, u); err != nil {
				return err
			}
		}
		send() // the contact's server answers even when already subscribed (3.1.3)
	case "subscribed":
		_, pending, err := tx.Request(user, peerBare)
		if err != nil {
			return err
		}
		if !pending {
			if hasFrom(u.Subscription) || u.PreApproved {
				return nil
			}
			u.Contact, u.PreApproved = peerBare, true
			return fx.put(tx, user, u)
		}
		if _, err := tx.DeleteRequest(user, peerBare); err != nil {
			return err
		}
		u.Contact = peerBare
		u.Subscription = withFrom(u.Subscription, true)
		if err := fx.put(tx, user, u); err != nil {
			return err
		}
		send()
		fx.presenceTo = append(fx.presenceTo, [2]string{user, peerBare})
	case "unsubscribe":
		if exists && (u.AskOut || hasTo(u.Subscription)) {
			u.AskOut = false
			u.Subscription = withTo(u.Subscription, false)
			if err := fx.put(tx, user, u); err != nil {
				return err
			}
		}
		send()
	case "unsubscribed":
		hadFrom := exists && hasFrom(u.Subscription)
		if exists && (hadFrom || u.PreApproved) {
			u.PreApproved = false
			u.Subscription = withFrom(u.Subscription, false)
			if err := fx.put(tx, user, u); err != nil {
				return err
			}
		}
		if _, err := tx.DeleteRequest(user, peerBare); err != nil {
			return err
		}
		send()
		if hadFrom {
			fx.unavailableTo = append(fx.unavailableTo, [2]string{user, peerBare})
		}
	}
	return nil
}

// remoteIn is A.3: a subscription stanza typ from the remote peerBare
// reached user.
func (sm machine) remoteIn(tx storage.RosterTx, fx *effects, typ, user, peerBare string) error {
	u, exists, err := tx.Item(user, peerBare)
	if err != nil {
		return err
	}
	userBare := sm.bare(user)
	in := stanza.AppendPresence(nil, typ, peerBare, userBare)
	switch typ {
	case "subscribe":
		switch {
		case hasFrom(u.Subscription):
			// Already approved: the server answers for the user.
			fx.remote = append(fx.remote, delivery{peerBare, stanza.AppendPresence(nil, "subscribed", userBare, peerBare)})
		case u.PreApproved:
			u.PreApproved = false
			u.Subscription = withFrom(u.Subscription, true)
			if err := fx.put(tx, user, u); err != nil {
				return err
			}
			fx.remote = append(fx.remote, delivery{peerBare, stanza.AppendPresence(nil, "subscribed", userBare, peerBare)})
			fx.presenceTo = append(fx.presenceTo, [2]string{user, peerBare})
		default:
			if err := tx.PutRequest(user, storage.SubscriptionRequest{From: peerBare, Stanza: in}); err != nil {
				return err
			}
			fx.deliver(user, in)
		}
	case "subscribed":
		if !exists || !u.AskOut {
			return nil // not asked for: ignored (3.1.6)
		}
		u.AskOut = false
		u.Subscription = withTo(u.Subscription, true)
		if err := fx.put(tx, user, u); err != nil {
			return err
		}
		fx.deliver(user, in)
	case "unsubscribe":
		if _, err := tx.DeleteRequest(user, peerBare); err != nil {
			return err
		}
		if exists && hasFrom(u.Subscription) {
			u.Subscription = withFrom(u.Subscription, false)
			if err := fx.put(tx, user, u); err != nil {
				return err
			}
			fx.deliver(user, in)
			fx.unavailableTo = append(fx.unavailableTo, [2]string{user, peerBare})
		}
	case "unsubscribed":
		if exists && (u.AskOut || hasTo(u.Subscription)) {
			u.AskOut = false
			u.Subscription = withTo(u.Subscription, false)
			if err := fx.put(tx, user, u); err != nil {
				return err
			}
			fx.deliver(user, in)
		}
	}
	return nil
}

// remoteSubscription handles a subscription stanza from the session's
// user to a contact of another domain.
func (m *Module) remoteSubscription(c *hook.Ctx, st *hook.Stanza) hook.Verdict {
	if st.Local == "" {
		return hook.Stop // a server has no presence subscription
	}
	user, typ, host, log := c.Session.Local(), st.Type, c.Host, c.Log
	peerBare := st.Local + "@" + st.Domain
	m.runRemote(c, log, host, func(tx storage.RosterTx, fx *effects) error {
		return machine{domain: host.Domain()}.remoteOut(tx, fx, typ, user, peerBare)
	}, user, peerBare)
	return hook.Stop
}

// InboundStanza implements hook.Inbound: subscription stanzas from remote
// contacts run the contact-side half of the state machine.
func (m *Module) InboundStanza(c *hook.Ctx, st *hook.Stanza) hook.Verdict {
	if st.Kind != hook.Presence {
		return hook.Continue
	}
	switch st.Type {
	case "subscribe", "subscribed", "unsubscribe", "unsubscribed":
	default:
		return hook.Continue
	}
	if st.Local == "" || st.Addr&(hook.ToBare|hook.ToFull) == 0 {
		return hook.Stop
	}
	user, typ, host, log := st.Local, st.Type, c.Host, c.Log
	peerBare := bareOf(st.From)
	m.async(c, log, func(ctx context.Context) {
		if _, err := m.Accounts.Credentials(ctx, user); err != nil {
			return // no such account: nothing to change, nothing to answer
		}
		var fx effects
		err := m.Store.UpdateRosters(ctx, func(tx storage.RosterTx) error {
			fx = effects{}
			return machine{domain: host.Domain()}.remoteIn(tx, &fx, typ, user, peerBare)
		})
		if err != nil {
			log.Error("subscription change failed", zap.String("user", user), zap.String("contact", peerBare), zap.Error(err))
			return
		}
		m.apply(host, &fx)
	})
	return hook.Stop
}

// runRemote runs a remote-side transition in a roster transaction on a
// worker and applies its effects.
func (m *Module) runRemote(c *hook.Ctx, log *zap.Logger, host hook.Host, run func(storage.RosterTx, *effects) error, user, peer string) {
	m.async(c, log, func(ctx context.Context) {
		var fx effects
		err := m.Store.UpdateRosters(ctx, func(tx storage.RosterTx) error {
			fx = effects{}
			return run(tx, &fx)
		})
		if err != nil {
			log.Error("subscription change failed", zap.String("user", user), zap.String("contact", peer), zap.Error(err))
			return
		}
		m.apply(host, &fx)
	})
}

// async runs job on a worker for the stanza in c, in order with the
// connection's other work.
func (m *Module) async(c *hook.Ctx, log *zap.Logger, job func(ctx context.Context)) {
	c.Conn.Async(func(ctx context.Context) func(*hook.Ctx) {
		job(ctx)
		return nil
	}, func(*hook.Ctx) {
		log.Warn("subscription stanza dropped: worker queue full")
	})
}

// bareOf returns the bare part of a normalised JID.
func bareOf(j string) string {
	for i := 0; i < len(j); i++ {
		if j[i] == '/' {
			return j[:i]
		}
	}
	return j
}
