package server

import (
	"crypto/rand"
	"encoding/base32"
	"strings"

	"go.uber.org/zap"
	"mellium.im/xmpp/jid"
	"mellium.im/xmpp/stream"

	"github.com/krill-xmpp/krill/hook"
	"github.com/krill-xmpp/krill/stanza"
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
		c.write(stanza.AppendResult(c.loop.scratch[:0], id, "", "", nil))
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
	s.completeBind(c, id, full)
}

// completeBind makes c a routable session for full and answers the bind
// request id.
func (s *Server) completeBind(c *conn, id string, full jid.JID) {
	sess := c.sess
	s.bindSession(c, full)
	payload := append([]byte(`<bind xmlns='`+nsBind+`'><jid>`), stanza.AppendEscaped(nil, sess.full)...)
	payload = append(payload, `</jid></bind>`...)
	c.write(stanza.AppendResult(c.loop.scratch[:0], id, "", "", payload))
	s.hooks.Fire(c.loop.sessionCtx(sess), hook.Bound)
	s.log.Debug("session bound", zap.String("jid", sess.full))
}

// bindSession makes c a routable session for full (legacy bind and
// Bind 2): a session of the same full JID is replaced.
func (s *Server) bindSession(c *conn, full jid.JID) {
	sess := c.sess
	sess.conn = c
	sess.full = full.String()
	sess.resOff = int32(len(sess.full) - len(full.Resourcepart()))
	sess.bound = true
	sess.lastActive = c.loop.since()
	if old := s.sessions.bind(sess); old != nil {
		s.stats.replaced.Add(1)
		old.closeWith(stream.Conflict.Err)
	}
	s.clusterBound(sess)
	c.phase = phaseSession
	c.framer.SetLimits(stanza.Limits{MaxBytes: s.conf().C2S.MaxStanzaSize, MaxDepth: s.conf().C2S.MaxDepth})
	// The pre-auth deadline ends here; the idle-ping schedule begins.
	c.loop.wheel.Cancel(&c.timer)
	if s.conf().C2S.IdlePing > 0 {
		c.loop.wheel.Arm(&c.timer, c, c.loop.now.Add(s.conf().C2S.IdlePing))
	}
	s.stats.bound.Add(1)
}

func (s *Server) replyBindError(c *conn, id, typ, cond string) {
	c.write(stanza.AppendError(c.loop.scratch[:0], "iq", id, "", "", typ, cond, ""))
}

func newResource() string {
	var b [10]byte
	_, _ = rand.Read(b[:])
	return "krill-" + strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(b[:]))
}

// handleStanza checks one stanza of a bound session, fires its Pre stage
// and routes what the modules leave: the core knows no feature.
func (s *Server) handleStanza(c *conn, tag stanza.StartTag, ns, local string, unit []byte) {
	sess := c.sess
	if ns != nsClient {
		s.fail(c, stream.InvalidNamespace.Err, "stanzas must be in the "+nsClient+" namespace")
		return
	}
	kind, ok := hook.KindOf(tag.Local())
	if !ok {
		s.fail(c, stream.UnsupportedStanzaType.Err, "unknown top-level element")
		return
	}
	s.stats.stanzasIn.Add(1)
	s.stats.in[kindIndex(unit)].Add(1)
	s.hooks.Received(sess)
	if from, ok := tag.AttrString("from"); ok && from != sess.full && from != sess.full[:sess.resOff-1] {
		if fj, err := jid.Parse(from); err != nil || (fj.String() != sess.full && fj.String() != sess.full[:sess.resOff-1]) {
			s.fail(c, stream.InvalidFrom.Err, "from does not match the session's address")
			return
		}
	}
	st := &c.loop.stanza
	*st = hook.Stanza{Kind: kind, From: sess.full, Tag: tag, Raw: unit}
	st.Type, _ = tag.AttrString("type")
	st.ID, _ = tag.AttrString("id")
	st.To, _ = tag.AttrString("to")
	cx := c.loop.ctxFor(c, st)
	defer cx.Reset(nil, nil, nil)
	if !s.address(st) {
		cx.ReplyError("modify", "jid-malformed", "")
		return
	}
	if kind == hook.IQ {
		st.Payload, st.NS, st.Name, _ = payloadOf(unit)
	}
	if s.hooks.Stanza(cx, hook.Pre, st) == hook.Stop || c.has(flagClosed) {
		return
	}
	switch st.Addr {
	case hook.ToRemote:
		if h := s.hooks.Domain(st.Domain); h != nil {
			h(cx, st) // a domain a module serves (Registrar.Domain)
			return
		}
		s.deliverTo(c.loop, st.Local, st.Domain, st.Resource, stamp(st.Tag, st.Raw, st.From)) // a component or a remote domain
	case hook.ToNone, hook.ToHost:
		if st.Addr == hook.ToHost && st.Resource != "" {
			cx.ReplyError("cancel", "service-unavailable", "")
			return
		}
		if kind == hook.IQ {
			s.toServer(c, cx, st)
		}
		// Messages and presence to the server itself: nobody takes them.
	case hook.ToBare:
		if kind == hook.IQ {
			if st.Local == sess.local && (st.Type == "result" || st.Type == "error") {
				return
			}
			s.toServer(c, cx, st)
			return
		}
		s.route(c, cx, st)
	case hook.ToFull:
		s.route(c, cx, st)
	}
}

// address sets st's addressing from its to attribute; false when to is
// not a valid JID.
func (s *Server) address(st *hook.Stanza) bool {
	if st.To == "" {
		st.Addr = hook.ToNone
		return true
	}
	var ok bool
	if st.Local, st.Domain, st.Resource, ok = plainJID(st.To); !ok {
		to, err := jid.Parse(st.To)
		if err != nil {
			return false
		}
		// One string for the normalised JID; its parts are slices of it.
		st.Local, st.Domain, st.Resource = splitJID(to.String())
	}
	switch {
	case st.Domain != s.cfg.Domain:
		st.Addr = hook.ToRemote
	case st.Local == "":
		st.Addr = hook.ToHost
	case st.Resource == "":
		st.Addr = hook.ToBare
	default:
		st.Addr = hook.ToFull
	}
	return true
}

// toServer answers an iq addressed to the server or handled on an
// account's behalf, with the module registered for its payload.
func (s *Server) toServer(c *conn, cx *hook.Ctx, st *hook.Stanza) {
	var t hook.IQType
	switch st.Type {
	case "result", "error":
		if st.ID == pingID {
			c.flags &^= flagAwaitPong
		}
		return
	case "get":
		t = hook.IQGet
	case "set":
		t = hook.IQSet
	default:
		cx.ReplyError("modify", "bad-request", "")
		return
	}
	if st.Payload == nil {
		cx.ReplyError("modify", "bad-request", "")
		return
	}
	h := s.hooks.IQ(hook.PhaseBound, t, st.Addr, st.NS, st.Name)
	if h == nil {
		cx.ReplyError("cancel", "service-unavailable", "")
		return
	}
	if err := h(cx, st); err != nil {
		s.log.Warn("module failed", zap.String("ns", st.NS), zap.Error(err))
		cx.ReplyError("cancel", "internal-server-error", "")
	}
}

// route delivers a stanza to a local account and answers what nobody took
// as RFC 6121 8.5 says.
func (s *Server) route(c *conn, cx *hook.Ctx, st *hook.Stanza) {
	if st.Kind == hook.Message && st.Type == "groupchat" && (st.Addr == hook.ToBare || s.sessions.find(st.Local, st.Resource) == nil && s.remoteFind(st.Local, st.Resource) == nil) {
		cx.ReplyError("cancel", "service-unavailable", "")
		return
	}
	if s.deliverTo(c.loop, st.Local, st.Domain, st.Resource, stamp(st.Tag, st.Raw, st.From)) > 0 {
		return
	}
	switch st.Kind {
	case hook.Presence:
		return
	case hook.IQ:
		cx.ReplyError("cancel", "service-unavailable", "")
		return
	}
	switch st.Type {
	case "error", "headline":
		return
	}
	if st.Addr == hook.ToFull {
		// Undelivered to a full JID: it was tried as the bare JID.
		st.Addr = hook.ToBare
		defer func() { st.Addr = hook.ToFull }()
	}
	if s.hooks.Stanza(cx, hook.Undelivered, st) == hook.Stop {
		return
	}
	cx.ReplyError("cancel", "service-unavailable", "")
}

// stamp returns unit with its from attribute set to from (RFC 6120
// section 8.1.2.1: the server stamps the sender's full JID).
func stamp(tag stanza.StartTag, unit []byte, from string) []byte {
	return stanza.WithAttr(tag, unit, "from", from)
}

// appendPing appends the server's ping of an idle session.
func (s *Server) appendPing(b []byte, sess *session) []byte {
	return stanza.AppendIQ(b, "get", pingID, s.cfg.Domain, sess.full, []byte(`<ping xmlns='`+nsPing+`'/>`))
}

// plainJID splits s without allocating when it is an ASCII JID already in
// the normal form jid.Parse would return: a localpart of printable ASCII
// without uppercase and without the characters RFC 7622 forbids there, a
// lowercase LDH domain (no IDNA labels), a resource of printable ASCII
// without spaces. Clients nearly always address stanzas with JIDs the
// server gave them, which are in that form; anything else goes through
// PRECIS (ok is false).
func plainJID(s string) (local, domain, resource string, ok bool) {
	rest := s
	if i := strings.IndexByte(rest, '/'); i >= 0 {
		rest, resource = rest[:i], rest[i+1:]
		if resource == "" || len(resource) > 1023 {
			return "", "", "", false
		}
		for i := 0; i < len(resource); i++ {
			if c := resource[i]; c <= ' ' || c > '~' {
				return "", "", "", false
			}
		}
	}
	if i := strings.IndexByte(rest, '@'); i >= 0 {
		local, rest = rest[:i], rest[i+1:]
		if local == "" || len(local) > 1023 {
			return "", "", "", false
		}
		for i := 0; i < len(local); i++ {
			c := local[i]
			if c <= ' ' || c > '~' || ('A' <= c && c <= 'Z') || strings.IndexByte(`"&'/:<>@`, c) >= 0 {
				return "", "", "", false
			}
		}
	}
	domain = rest
	if domain == "" || len(domain) > 253 || domain[0] == '.' || domain[len(domain)-1] == '.' ||
		strings.Contains(domain, "--") || strings.Contains(domain, "..") {
		return "", "", "", false
	}
	label := 0 // length of the current label
	for i := 0; i < len(domain); i++ {
		switch c := domain[i]; {
		case c == '.':
			if domain[i-1] == '-' {
				return "", "", "", false
			}
			label = 0
		case c == '-' && label == 0, label == 63:
			return "", "", "", false
		case 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-':
			label++
		default:
			return "", "", "", false
		}
	}
	if domain[len(domain)-1] == '-' {
		return "", "", "", false
	}
	return local, domain, resource, true
}
