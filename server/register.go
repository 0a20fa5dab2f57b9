package server

import (
	"context"
	"encoding/xml"
	"errors"
	"time"

	"go.uber.org/zap"
	"mellium.im/xmpp/stream"

	"github.com/krill-xmpp/krill/sasl"
	"github.com/krill-xmpp/krill/stanza"
	"github.com/krill-xmpp/krill/storage"
)

// XEP-0077 In-Band Registration, before authentication. It is off unless
// register.enabled; it is part of the negotiation, so the pre-auth
// deadline, size limits and caps all apply, failed attempts count like
// failed SASL attempts, and each source address may create at most
// register.max_per_ip accounts per register.window.

const (
	nsRegister        = "jabber:iq:register"
	nsRegisterFeature = "http://jabber.org/features/iq-register"
)

type registerQuery struct {
	XMLName  xml.Name `xml:"jabber:iq:register query"`
	Username *string  `xml:"username"`
	Password *string  `xml:"password"`
}

// registerOffered reports whether registration may run on c: enabled, and
// over TLS unless plaintext authentication is allowed (a password travels).
func (s *Server) registerOffered(c *conn) bool {
	return s.cfg.Register.Enabled && (c.tls != nil || s.cfg.C2S.AllowPlaintext)
}

// handleRegister answers a pre-auth registration iq.
func (s *Server) handleRegister(c *conn, tag stanza.StartTag, unit []byte) {
	typ, _ := tag.AttrString("type")
	id, _ := tag.AttrString("id")
	child, _ := stanza.FirstChild(unit)
	var q registerQuery
	if err := xml.Unmarshal(child, &q); err != nil {
		s.sendError(c, "iq", id, "", "modify", "bad-request")
		return
	}
	if typ == "get" {
		c.write(appendResult(c.loop.scratch[:0], id, "", []byte(`<query xmlns='`+nsRegister+`'>`+
			`<instructions>Choose a username and password.</instructions><username/><password/></query>`)))
		return
	}
	refuse := func(etype, cond string) {
		s.sendError(c, "iq", id, "", etype, cond)
		c.failed++
		if int(c.failed) >= s.conf().Preauth.MaxFailedAuth {
			s.fail(c, stream.PolicyViolation.Err, "too many failed attempts")
		}
	}
	if typ != "set" || q.Username == nil || q.Password == nil || *q.Password == "" {
		refuse("modify", "not-acceptable")
		return
	}
	local, err := normalizeLocal(*q.Username, s.cfg.Domain)
	if err != nil {
		refuse("modify", "not-acceptable")
		return
	}
	if !s.registrations.allow(c.ip, time.Now()) {
		s.log.Info("registration refused", zap.String("reason", "rate limit"), zap.Stringer("ip", c.ip))
		refuse("wait", "resource-constraint")
		return
	}
	password := *q.Password
	s.async(c, func(ctx context.Context) func() {
		creds, err := sasl.NewCredentials(password, sasl.DefaultIterations)
		if err == nil {
			err = s.accounts.AddAccount(ctx, local, creds)
		}
		switch {
		case err == nil:
			s.log.Info("account registered", zap.String("user", local), zap.Stringer("ip", c.ip))
			s.stats.registered.Add(1)
			return func() { c.write(appendResult(c.loop.scratch[:0], id, "", nil)) }
		case errors.Is(err, storage.ErrExists):
			return func() { refuse("cancel", "conflict") }
		case errors.Is(err, sasl.ErrInvalidPassword):
			return func() { refuse("modify", "not-acceptable") }
		default:
			s.log.Error("registration failed", zap.String("user", local), zap.Error(err))
			return func() { refuse("wait", "internal-server-error") }
		}
	}, func() { refuse("wait", "resource-constraint") })
}
