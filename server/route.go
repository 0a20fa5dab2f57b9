package server

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base32"
	"errors"
	"strings"

	"go.uber.org/zap"
	"mellium.im/xmpp/jid"
	xstanza "mellium.im/xmpp/stanza"
	"mellium.im/xmpp/stream"

	"github.com/krill-xmpp/krill/router"
	"github.com/krill-xmpp/krill/stanza"
	"github.com/krill-xmpp/krill/storage"
)

// pingID marks the server's own pings so that their answers are recognised.
const pingID = "krill-ping"

// payloadOf returns an iq's first child element, its namespace and its
// local name; ok is false when there is none.
func payloadOf(unit []byte) (child []byte, ns, local string, ok bool) {
	child, ok = stanza.FirstChild(unit)
	if !ok {
		return nil, "", "", false
	}
	tag, err := stanza.ParseStartTag(child)
	if err != nil {
		return nil, "", "", false
	}
	ns, _ = tag.AttrString("xmlns")
	return child, ns, string(tag.Local()), true
}

// handleBindIQ handles an iq before binding: only bind and the legacy
// session request are allowed (RFC 6120 section 7, RFC 3921 section 3).
func (s *Server) handleBindIQ(c *conn, tag stanza.StartTag, unit []byte) {
	typ, _ := tag.AttrString("type")
	id, _ := tag.AttrString("id")
	child, ns, clocal, ok := payloadOf(unit)
	if !ok || typ != "set" {
		s.fail(c, stream.NotAuthorized.Err, "bind a resource first")
		return
	}
	switch {
	case ns == nsSession && clocal == "session":
		c.write(appendResult(c.loop.scratch[:0], id, "", nil))
		return
	case ns != nsBind || clocal != "bind":
		s.fail(c, stream.NotAuthorized.Err, "bind a resource first")
		return
	}
	resource := ""
	if r, ok := stanza.FirstChild(child); ok {
		if rtag, err := stanza.ParseStartTag(r); err == nil && string(rtag.Local()) == "resource" {
			raw, err := stanza.Unescape(nil, stanza.Inner(r))
			if err != nil {
				s.replyBindError(c, id, "modify", "bad-request")
				return
			}
			resource = strings.TrimSpace(string(raw))
		}
	}
	if resource == "" {
		resource = newResource()
	}
	full, err := jid.New(c.sess.local, s.cfg.Domain, resource)
	if err != nil || full.Resourcepart() == "" {
		s.replyBindError(c, id, "modify", "bad-request")
		return
	}
	// The account's blocklist is read before the session exists, so that
	// XEP-0191 applies from its first stanza; the client waits for the
	// bind result anyway (RFC 6120 7.6).
	local := c.sess.local
	s.async(c, func(ctx context.Context) func() {
		list, err := s.store.Blocklist(ctx, local)
		if err != nil {
			s.log.Error("blocklist read failed", zap.String("user", local), zap.Error(err))
			return func() { s.replyBindError(c, id, "wait", "internal-server-error") }
		}
		return func() { s.completeBind(c, id, full, list) }
	}, func() { s.replyBindError(c, id, "wait", "resource-constraint") })
}

// completeBind makes c a routable session for full.
func (s *Server) completeBind(c *conn, id string, full jid.JID, blocklist []string) {
	sess := c.sess
	sess.conn = c
	sess.jid = full
	sess.full = full.String()
	sess.resource = full.Resourcepart()
	sess.bound = true
	sess.lastActive = c.loop.since()
	if old := s.sessions.bind(sess); old != nil {
		s.stats.replaced.Add(1)
		old.closeWith(stream.Conflict.Err)
	}
	c.phase = phaseSession
	c.framer.SetLimits(stanza.Limits{MaxBytes: s.conf().C2S.MaxStanzaSize, MaxDepth: s.conf().C2S.MaxDepth})
	// The pre-auth deadline ends here; the idle-ping schedule begins.
	c.loop.wheel.Cancel(&c.timer)
	if s.conf().C2S.IdlePing > 0 {
		c.loop.wheel.Arm(&c.timer, c, c.loop.now.Add(s.conf().C2S.IdlePing))
	}
	s.stats.bound.Add(1)
	payload := append([]byte(`<bind xmlns='`+nsBind+`'><jid>`), stanza.AppendEscaped(nil, sess.full)...)
	payload = append(payload, `</jid></bind>`...)
	c.write(appendResult(c.loop.scratch[:0], id, "", payload))
	s.sessions.setBlocklist(sess.local, blocklist)
	s.log.Debug("session bound", zap.String("jid", sess.full))
}

func (s *Server) replyBindError(c *conn, id, typ, cond string) {
	s.sendError(c, "iq", id, "", typ, cond)
}

func newResource() string {
	var b [10]byte
	_, _ = rand.Read(b[:])
	return "krill-" + strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(b[:]))
}

// handleStanza routes one stanza of a bound session.
func (s *Server) handleStanza(c *conn, tag stanza.StartTag, ns, local string, unit []byte) {
	sess := c.sess
	if ns != nsClient {
		s.fail(c, stream.InvalidNamespace.Err, "stanzas must be in the "+nsClient+" namespace")
		return
	}
	switch local {
	case "message", "presence", "iq":
	default:
		s.fail(c, stream.UnsupportedStanzaType.Err, "unknown top-level element")
		return
	}
	s.stats.stanzasIn.Add(1)
	s.stats.in[kindIndex(unit)].Add(1)
	if from, ok := tag.AttrString("from"); ok && from != sess.full {
		if fj, err := jid.Parse(from); err != nil || !(fj.Equal(sess.jid) || fj.Equal(sess.jid.Bare())) {
			s.fail(c, stream.InvalidFrom.Err, "from does not match the session's address")
			return
		}
	}
	typ, _ := tag.AttrString("type")
	id, _ := tag.AttrString("id")
	toStr, hasTo := tag.AttrString("to")
	var to jid.JID
	if hasTo && toStr != "" {
		var err error
		if to, err = jid.Parse(toStr); err != nil {
			if typ != "error" {
				s.sendError(c, local, id, "", "modify", "jid-malformed")
			}
			return
		}
	}
	if to.Domainpart() == s.cfg.Domain && to.Localpart() != "" && !s.blockingAllows(c, local, typ, id, to, toStr) {
		return
	}
	if local == "presence" {
		s.handlePresence(c, tag, typ, id, to, toStr, unit)
		return
	}
	switch {
	case !hasTo || toStr == "":
		s.toServer(c, local, typ, id, jid.JID{}, unit)
	case to.Domainpart() != s.cfg.Domain:
		if local != "presence" && typ != "error" {
			s.sendError(c, local, id, toStr, "cancel", "remote-server-not-found")
		}
	case to.Localpart() == "":
		if to.Resourcepart() != "" {
			s.unavailable(c, local, typ, id, toStr)
			return
		}
		s.toServer(c, local, typ, id, to, unit)
	case to.Resourcepart() != "":
		s.toFull(c, tag, local, typ, id, to, toStr, unit)
	default:
		s.toBare(c, tag, local, typ, id, to, toStr, unit)
	}
}

// blockingAllows applies XEP-0191 to a stanza for a local account: to a
// JID the sender blocked, the sender gets not-acceptable; from a JID the
// recipient blocked, presence is dropped and the rest gets
// service-unavailable, as if the recipient did not exist.
func (s *Server) blockingAllows(c *conn, local, typ, id string, to jid.JID, toStr string) bool {
	sess := c.sess
	answerable := typ != "error" && typ != "result" && local != "presence"
	if blocks(s.sessions.blocklist(sess.local), to) {
		if answerable {
			s.blockedError(c, local, id, toStr)
		}
		return false
	}
	if blocks(s.sessions.blocklist(to.Localpart()), sess.jid) {
		if answerable {
			s.unavailable(c, local, typ, id, toStr)
		}
		return false
	}
	return true
}

// toServer handles stanzas addressed to the server itself (or, for iq
// handled on an account's behalf, to a bare JID).
func (s *Server) toServer(c *conn, local, typ, id string, to jid.JID, unit []byte) {
	sess := c.sess
	switch local {
	case "message":
		// Messages to the server are not handled by the core.
	case "iq":
		switch typ {
		case "result", "error":
			if id == pingID {
				c.flags &^= flagAwaitPong
			}
			return
		case "get", "set":
		default:
			s.sendError(c, "iq", id, to.String(), "modify", "bad-request")
			return
		}
		child, cns, clocal, ok := payloadOf(unit)
		if !ok {
			s.sendError(c, "iq", id, to.String(), "modify", "bad-request")
			return
		}
		if cns == nsBlocking {
			if to.Localpart() != "" && to.Localpart() != sess.local {
				s.sendError(c, "iq", id, to.String(), "auth", "forbidden")
				return
			}
			s.handleBlocking(c, typ, id, to.String(), child)
			return
		}
		if cns == nsRoster && clocal == "query" {
			if to.Localpart() != "" && to.Localpart() != sess.local {
				s.sendError(c, "iq", id, to.String(), "auth", "forbidden")
				return
			}
			s.handleRoster(c, typ, id, to.String(), child)
			return
		}
		if cns == nsRegister && clocal == "query" {
			if to.Localpart() != "" && to.Localpart() != sess.local {
				s.sendError(c, "iq", id, to.String(), "auth", "forbidden")
				return
			}
			s.handleAccountRegister(c, typ, id, to.String(), child)
			return
		}
		if cns == nsLast && clocal == "query" && (to.Localpart() != "" || to.Domainpart() == "") {
			s.handleLastActivity(c, typ, id, to)
			return
		}
		kind := router.IQGet
		if typ == "set" {
			kind = router.IQSet
		}
		mod := s.router.Lookup(router.Route{Kind: kind, NS: cns, Local: clocal})
		iq := router.IQ{ID: id, Type: xstanza.IQType(typ), From: sess.jid, To: to, Payload: child}
		if mod == nil {
			s.writeStanzaError(c, "iq", id, to.String(), string(xstanza.Cancel), string(xstanza.ServiceUnavailable), cns)
			return
		}
		rep := &replier{s: s, c: c}
		ctx := &router.Ctx{Domain: s.cfg.Domain, Router: s.router, Replier: rep,
			Async: func(job func(context.Context) func()) {
				s.async(c, job, func() { rep.ReplyError(iq, xstanza.Wait, xstanza.ResourceConstraint) })
			}}
		if err := mod.HandleIQ(ctx, iq); err != nil {
			s.log.Warn("module failed", zap.String("module", mod.Name()), zap.Error(err))
			ctx.ReplyError(iq, xstanza.Cancel, xstanza.InternalServerError)
		}
	}
}

// toFull routes to one resource (RFC 6121 section 8.5.3): to the bound
// session, or else a normal or chat message as if to the bare JID, an iq
// or a groupchat message gets service-unavailable, the rest is dropped.
func (s *Server) toFull(c *conn, tag stanza.StartTag, local, typ, id string, to jid.JID, toStr string, unit []byte) {
	target := s.sessions.full(to.Localpart(), to.Resourcepart())
	if target != nil && target.deliver(c.loop, stamp(tag, unit, c.sess.full)) {
		s.stats.stanzasRouted.Add(1)
		return
	}
	switch {
	case local == "message" && (typ == "" || typ == "normal" || typ == "chat"):
		s.toBare(c, tag, local, typ, id, to.Bare(), to.Bare().String(), unit)
	case local == "iq" || typ == "groupchat":
		s.unavailable(c, local, typ, id, toStr)
	}
}

// toBare routes to an account (RFC 6121 section 8.5.2): an iq is handled
// on the account's behalf; a message of type normal, chat or headline goes
// to every available resource with non-negative priority, and when there
// is none a normal or chat message worth keeping (offlineWorthy) is stored
// offline, any other is dropped; groupchat gets
// service-unavailable, error is dropped.
func (s *Server) toBare(c *conn, tag stanza.StartTag, local, typ, id string, to jid.JID, toStr string, unit []byte) {
	if local == "iq" {
		if to.Localpart() == c.sess.local && (typ == "result" || typ == "error") {
			return
		}
		s.toServer(c, local, typ, id, to, unit)
		return
	}
	switch typ {
	case "groupchat":
		s.unavailable(c, local, typ, id, toStr)
		return
	case "error":
		return
	}
	var out []byte
	n := 0
	s.sessions.each(to.Localpart(), func(o *session) {
		if !o.available.Load() || o.priority.Load() < 0 {
			return
		}
		if out == nil {
			out = stamp(tag, unit, c.sess.full)
		}
		// Each mailbox owns its bytes.
		if o.deliver(c.loop, append([]byte(nil), out...)) {
			n++
		}
	})
	if n > 0 {
		s.stats.stanzasRouted.Add(uint64(n))
		return
	}
	if typ != "headline" && offlineWorthy(unit) {
		s.storeOffline(c, tag, typ, id, to, toStr, unit)
	}
}

// storeOffline keeps a chat or normal message for an account with no
// available resource (XEP-0160), within the per-user quota. An unknown
// account, or a full quota, gets service-unavailable.
func (s *Server) storeOffline(c *conn, tag stanza.StartTag, typ, id string, to jid.JID, toStr string, unit []byte) {
	sess := c.sess
	b := stamp(tag, unit, sess.full)
	user := to.Localpart()
	fail := func() { s.unavailable(c, "message", typ, id, toStr) }
	from := sess.jid
	s.async(c, func(ctx context.Context) func() {
		if _, err := s.accounts.Credentials(ctx, user); err != nil {
			return fail
		}
		if list, err := s.store.Blocklist(ctx, user); err != nil || blocks(list, from) {
			return fail
		}
		if err := s.store.StoreOffline(ctx, user, b, s.conf().IM.OfflineQuota); err != nil {
			if !errors.Is(err, storage.ErrQuota) {
				s.log.Error("offline store failed", zap.String("user", user), zap.Error(err))
			}
			return fail
		}
		s.stats.offlineStored.Add(1)
		return nil
	}, func() {
		s.sendError(c, "message", id, toStr, "wait", "resource-constraint")
	})
}

// unavailable answers a stanza nobody can take with service-unavailable,
// except error stanzas and presence, which are dropped.
func (s *Server) unavailable(c *conn, local, typ, id, toStr string) {
	if typ == "error" || local == "presence" {
		return
	}
	s.sendError(c, local, id, toStr, "cancel", "service-unavailable")
}

// stamp returns unit with its from attribute set to from (RFC 6120
// section 8.1.2.1: the server stamps the sender's full JID).
func stamp(tag stanza.StartTag, unit []byte, from string) []byte {
	return withAttr(tag, unit, "from", from)
}

// withAttr returns a copy of elem (whose start tag is tag) with attribute
// name set to value, replacing any it had; the rest is copied unchanged.
func withAttr(tag stanza.StartTag, elem []byte, name, value string) []byte {
	b := make([]byte, 0, len(elem)+len(value)+16)
	b = append(b, '<')
	b = append(b, tag.Local()...)
	tag.Attrs(func(n, raw []byte) bool {
		if string(n) == name {
			return true
		}
		q := byte('\'')
		if bytes.IndexByte(raw, '\'') >= 0 {
			q = '"' // the raw value may hold the other quote unescaped
		}
		b = append(b, ' ')
		b = append(b, n...)
		b = append(b, '=', q)
		b = append(b, raw...)
		b = append(b, q)
		return true
	})
	b = append(b, ' ')
	b = append(b, name...)
	b = append(b, `='`...)
	b = stanza.AppendEscaped(b, value)
	b = append(b, '\'')
	rest := tag.Len() - 1
	if tag.SelfClosing() {
		rest--
	}
	return append(b, elem[rest:]...)
}

// appendResult appends an iq result.
func appendResult(b []byte, id, from string, payload []byte) []byte {
	b = append(b, `<iq type='result' id='`...)
	b = stanza.AppendEscaped(b, id)
	b = append(b, '\'')
	if from != "" {
		b = append(b, ` from='`...)
		b = stanza.AppendEscaped(b, from)
		b = append(b, '\'')
	}
	if len(payload) == 0 {
		return append(b, `/>`...)
	}
	b = append(b, '>')
	b = append(b, payload...)
	return append(b, `</iq>`...)
}

// sendError writes a stanza error reply (RFC 6120 section 8.3) to c, from
// from (omitted when ""), addressed to the session's full JID once bound.
func (s *Server) sendError(c *conn, local, id, from, typ, cond string) {
	s.writeStanzaError(c, local, id, from, typ, cond, "")
}

// writeStanzaError is sendError naming, for service-unavailable, the
// payload namespace nobody handles. Each error sent is logged at debug:
// it is often the only trace of why a client gave up.
func (s *Server) writeStanzaError(c *conn, local, id, from, typ, cond, ns string) {
	to := ""
	if c.sess != nil && c.sess.bound {
		to = c.sess.full
	}
	b := appendStanzaError(c.loop.scratch[:0], local, id, from, to, typ, cond)
	c.write(b)
	c.loop.scratch = b[:0]
	if ce := s.log.Check(zap.DebugLevel, "stanza error sent"); ce != nil {
		fields := []zap.Field{zap.String("condition", cond), zap.String("type", typ),
			zap.String("stanza", local), zap.String("id", id)}
		if from != "" {
			fields = append(fields, zap.String("from", from))
		}
		if ns != "" {
			fields = append(fields, zap.String("namespace", ns))
		}
		if to != "" {
			fields = append(fields, zap.String("jid", to))
		} else {
			fields = append(fields, zap.Stringer("ip", c.ip))
		}
		ce.Write(fields...)
	}
}

// appendStanzaError appends a stanza error reply (RFC 6120 section 8.3).
func appendStanzaError(b []byte, local, id, from, to, typ, cond string) []byte {
	b = append(b, '<')
	b = append(b, local...)
	b = append(b, ` type='error'`...)
	if id != "" {
		b = append(b, ` id='`...)
		b = stanza.AppendEscaped(b, id)
		b = append(b, '\'')
	}
	if from != "" {
		b = append(b, ` from='`...)
		b = stanza.AppendEscaped(b, from)
		b = append(b, '\'')
	}
	if to != "" {
		b = append(b, ` to='`...)
		b = stanza.AppendEscaped(b, to)
		b = append(b, '\'')
	}
	b = append(b, `><error type='`...)
	b = append(b, typ...)
	b = append(b, `'><`...)
	b = append(b, cond...)
	b = append(b, ` xmlns='`+nsStanzas+`'/></error></`...)
	b = append(b, local...)
	return append(b, '>')
}

// appendPing appends the server's ping of an idle session.
func (s *Server) appendPing(b []byte, sess *session) []byte {
	b = append(b, `<iq type='get' id='`+pingID+`' from='`...)
	b = stanza.AppendEscaped(b, s.cfg.Domain)
	b = append(b, `' to='`...)
	b = stanza.AppendEscaped(b, sess.full)
	return append(b, `'><ping xmlns='`+nsPing+`'/></iq>`...)
}

// replier answers module requests on the requesting connection.
type replier struct {
	s *Server
	c *conn
}

// from is the address a reply comes from: the addressee of the request.
// A request without to is handled on the account's behalf, so its reply
// has no from (RFC 6120 8.1.2.1 and 10.3.3): "from the domain" would tell
// the client that another entity answered.
func (r *replier) from(iq router.IQ) string {
	if iq.To.Domainpart() == "" {
		return ""
	}
	return iq.To.String()
}

// ReplyResult implements router.Replier.
func (r *replier) ReplyResult(iq router.IQ, payload []byte) {
	b := appendResult(r.c.loop.scratch[:0], iq.ID, r.from(iq), payload)
	r.c.write(b)
	r.c.loop.scratch = b[:0]
}

// ReplyError implements router.Replier.
func (r *replier) ReplyError(iq router.IQ, typ xstanza.ErrorType, cond xstanza.Condition) {
	r.s.sendError(r.c, "iq", iq.ID, r.from(iq), string(typ), string(cond))
}
