package server

import (
	"context"
	"encoding/xml"
	"errors"

	"go.uber.org/zap"
	"mellium.im/xmpp/stream"

	"github.com/krill-xmpp/krill/sasl"
	"github.com/krill-xmpp/krill/stanza"
	"github.com/krill-xmpp/krill/storage"
)

// XEP-0077 In-Band Registration after authentication: the account's own
// registration (§3.1), a password change (§3.3) and the removal of the
// account (§3.2). They are the account holder's, so they are allowed
// whether or not register.enabled lets strangers create accounts.
//
// A password change replaces the stored SCRAM keys (with a new salt) and
// closes the account's other sessions with not-authorized: a password is
// changed when it may have leaked, and a session opened with the old one
// must not outlive it. (Prosody and ejabberd keep the other sessions; the
// price here is that the user's other clients ask for the new password at
// once instead of at their next login.) The requesting session stays.

// registerSet is the payload of a registration iq after authentication.
type registerSet struct {
	XMLName  xml.Name  `xml:"jabber:iq:register query"`
	Username *string   `xml:"username"`
	Password *string   `xml:"password"`
	Remove   *struct{} `xml:"remove"`
}

// maxPasswordLen bounds a new password (PBKDF2 runs over it on a worker).
const maxPasswordLen = 1024

// handleAccountRegister answers a jabber:iq:register iq of a bound session
// addressed to the server or to the account itself; from is the address
// its reply comes from ("" when it had no to).
func (s *Server) handleAccountRegister(c *conn, typ, id, from string, payload []byte) {
	sess := c.sess
	var q registerSet
	if err := xml.Unmarshal(payload, &q); err != nil {
		s.sendError(c, "iq", id, from, "modify", "bad-request")
		return
	}
	if typ == "get" {
		b := append([]byte(`<query xmlns='`+nsRegister+`'><registered/><username>`), stanza.AppendEscaped(nil, sess.local)...)
		b = append(b, `</username><password/></query>`...)
		c.write(appendResult(c.loop.scratch[:0], id, from, b))
		return
	}
	local := sess.local
	busy := func() { s.sendError(c, "iq", id, from, "wait", "resource-constraint") }
	if q.Remove != nil {
		s.async(c, func(ctx context.Context) func() {
			if err := s.accounts.RemoveAccount(ctx, local); err != nil && !errors.Is(err, storage.ErrNotFound) {
				s.log.Error("account removal failed", zap.String("user", local), zap.Error(err))
				return func() { s.sendError(c, "iq", id, from, "wait", "internal-server-error") }
			}
			s.log.Info("account removed by its owner", zap.String("user", local), zap.Stringer("ip", c.ip))
			return func() {
				// The result first, then the stream error XEP-0077
				// §3.2 asks for, then every other session.
				c.write(appendResult(c.loop.scratch[:0], id, from, nil))
				s.closeOthers(sess)
				s.fail(c, stream.NotAuthorized.Err, "the account was removed")
			}
		}, busy)
		return
	}
	if q.Username == nil || q.Password == nil || *q.Password == "" || len(*q.Password) > maxPasswordLen {
		s.sendError(c, "iq", id, from, "modify", "bad-request")
		return
	}
	if u, err := normalizeLocal(*q.Username, s.cfg.Domain); err != nil || u != local {
		// Only the account's own password may be changed (§3.3).
		s.sendError(c, "iq", id, from, "cancel", "not-allowed")
		return
	}
	password := *q.Password
	s.async(c, func(ctx context.Context) func() {
		creds, err := sasl.NewCredentials(password, sasl.DefaultIterations)
		if errors.Is(err, sasl.ErrInvalidPassword) {
			return func() { s.sendError(c, "iq", id, from, "modify", "not-acceptable") }
		}
		if err == nil {
			err = s.accounts.SetCredentials(ctx, local, creds)
		}
		if err != nil {
			s.log.Error("password change failed", zap.String("user", local), zap.Error(err))
			return func() { s.sendError(c, "iq", id, from, "wait", "internal-server-error") }
		}
		s.log.Info("password changed by its owner", zap.String("user", local), zap.Stringer("ip", c.ip))
		return func() {
			c.write(appendResult(c.loop.scratch[:0], id, from, nil))
			s.closeOthers(sess)
		}
	}, busy)
}

// closeOthers closes every bound session of sess's account but sess with
// not-authorized.
func (s *Server) closeOthers(sess *session) {
	s.sessions.each(sess.local, func(o *session) {
		if o != sess {
			o.closeWith(stream.NotAuthorized.Err)
		}
	})
}
