package server

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base32"
	"encoding/base64"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"go.uber.org/zap"
	"mellium.im/xmpp/jid"
	"mellium.im/xmpp/stream"

	"github.com/krill-xmpp/krill/hook"
	"github.com/krill-xmpp/krill/sasl"
	"github.com/krill-xmpp/krill/stanza"
)

// SASL2 (XEP-0388) and Bind 2 (XEP-0386): the same mechanisms, exchanges,
// failure counting, throttle, deadline and sizes as RFC 6120 SASL
// (negotiate.go), in another syntax that carries more than authentication
// (a resource, a resumption, the features a session starts with) and ends
// without a stream restart. The inline features are the modules' (see
// package hook, sasl2.go); the core owns the profile and Bind 2.

const (
	nsSASL2 = "urn:xmpp:sasl:2"
	nsBind2 = "urn:xmpp:bind:0"
	nsFAST  = "urn:xmpp:fast:0"
)

// Caps on how a client describes itself. The whole <authenticate/> is
// within preauth.max_stanza_size already; these keep what is copied into
// the exchange small.
const (
	maxUAText  = 256 // bytes of <software/> and of <device/>
	maxBindTag = 32  // bytes of a Bind 2 <tag/> kept in the resource
)

// sasl2Exchange is a SASL2 exchange: the mechanism's state and what the
// request asked for beyond authentication. It is the connection's c.ex
// while the exchange runs, so a connection pays for it only then.
type sasl2Exchange struct {
	sasl.Server
	auth       hook.Auth
	bind       []byte // a copy of the <bind/> request; nil when none
	inline     []inlineReq
	additional []byte // the mechanism's success data
	children   []byte // a token login's own children of <success/> (a fresh token)
	// XEP-0480 (upgrade.go): the upgrades asked for, those the account
	// lacks (known once its credentials were read), and the one running.
	upgrades, lacks []sasl.Hash
	upgrade         *sasl.ScramUpgrade
}

// asked reports whether the request already carries handler i's element.
func (x *sasl2Exchange) asked(i int) bool {
	for _, r := range x.inline {
		if r.i == i {
			return true
		}
	}
	return false
}

// inlineReq is one inline request a module accepted: the handler's index
// in the registry and the state it keeps until the outcome.
type inlineReq struct {
	i     int
	state any
}

// appendSASL2Feature appends the <authentication/> stream feature: the
// mechanisms of legacy SASL on the same stream, and the inline features.
func (s *Server) appendSASL2Feature(b []byte, mechs []string) []byte {
	b = append(b, `<authentication xmlns='`+nsSASL2+`'>`...)
	for _, m := range mechs {
		b = append(b, `<mechanism>`+m+`</mechanism>`...)
	}
	b = append(b, `<inline><bind xmlns='`+nsBind2+`'>`...)
	if vars := s.hooks.Bind2Features(); len(vars) > 0 {
		b = append(b, `<inline>`...)
		for _, v := range vars {
			b = append(b, `<feature var='`...)
			b = stanza.AppendEscaped(b, v)
			b = append(b, `'/>`...)
		}
		b = append(b, `</inline>`...)
	}
	b = append(b, `</bind>`...)
	b = s.hooks.SASL2Features(b)
	b = append(b, `</inline>`...)
	b = s.appendUpgrades(b)
	return append(b, `</authentication>`...)
}

// sasl2Of returns c's exchange if it is a SASL2 one.
func sasl2Of(c *conn) *sasl2Exchange {
	x, _ := c.ex.(*sasl2Exchange)
	return x
}

// handleSASL2 runs XEP-0388 on one element of its namespace.
func (s *Server) handleSASL2(c *conn, tag stanza.StartTag, local string, unit []byte) {
	if c.ex != nil && sasl2Of(c) == nil {
		s.fail(c, stream.PolicyViolation.Err, "a SASL exchange is in progress")
		return
	}
	switch local {
	case "authenticate":
		if x := sasl2Of(c); x != nil {
			s.authFail(c, true, "aborted", "", false)
			return
		}
		s.sasl2Authenticate(c, tag, unit)
	case "response":
		x := sasl2Of(c)
		if x == nil {
			s.authFail(c, true, "malformed-request", "no exchange in progress", false)
			return
		}
		payload, err := sasl2Payload(unit)
		if err != nil {
			s.authFail(c, true, "incorrect-encoding", "", false)
			return
		}
		if x.Server == nil {
			// A token login has no challenge to respond to.
			s.authFail(c, true, "malformed-request", "no challenge was sent", false)
			return
		}
		if !c.exStarted() {
			s.saslStart(c, payload)
			return
		}
		chal, done, err := x.Next(payload)
		s.saslStep(c, chal, done, err)
	case "abort":
		s.authFail(c, true, "aborted", "", false)
	case "next", "task-data":
		// XEP-0480 upgrade tasks, the only tasks offered.
		x := sasl2Of(c)
		if x == nil {
			s.authFail(c, true, "malformed-request", "no exchange in progress", false)
			return
		}
		if local == "next" {
			s.sasl2Next(c, x, tag)
		} else {
			s.sasl2TaskData(c, x, unit)
		}
	default:
		s.fail(c, stream.UnsupportedStanzaType.Err, "unknown SASL2 element")
	}
}

// sasl2Authenticate starts an exchange from <authenticate/>.
func (s *Server) sasl2Authenticate(c *conn, tag stanza.StartTag, unit []byte) {
	if !c.tr.secure() {
		// XEP-0388 section 4: SASL2 only after TLS; it is not offered.
		s.authFail(c, true, "encryption-required", "", false)
		return
	}
	if s.throttled(c) {
		s.authFail(c, true, "temporary-auth-failure", "too many failed logins from your address; try later", false)
		return
	}
	mech, ok := tag.AttrString("mechanism")
	if !ok || mech == "" {
		s.authFail(c, true, "invalid-mechanism", "the mechanism attribute is missing", false)
		return
	}
	// A token mechanism (XEP-0484's HT-*) is offered inside the FAST
	// module's inline feature only, never among the <mechanism/>s.
	verify := s.hooks.TokenVerifier(mech)
	if verify == nil && !s.offered(c, mech) {
		s.authFail(c, true, "invalid-mechanism", "", false)
		return
	}
	x := &sasl2Exchange{auth: hook.Auth{Mechanism: mech}}
	var initial []byte
	var cond, text string
	tl := hook.TokenLogin{Count: -1}
	hasFAST := false
	ok = stanza.Children(unit, func(child []byte) bool {
		ct, err := stanza.ParseStartTag(child)
		if err != nil {
			cond, text = "malformed-request", "malformed child element"
			return false
		}
		ns, has := ct.AttrString("xmlns")
		if !has {
			if len(ct.Prefix()) != 0 {
				return true // a prefixed extension: nothing of ours
			}
			ns = nsSASL2
		}
		name := string(ct.Local())
		if verify != nil && ns == nsFAST {
			// XEP-0484: what a token login asks for beside the proof.
			switch name {
			case "fast":
				if hasFAST {
					cond, text = "malformed-request", "more than one <fast/>"
					return false
				}
				hasFAST = true
				if cond, text = parseFAST(ct, &tl); cond != "" {
					return false
				}
			case "request-token":
				tl.RequestToken, _ = ct.AttrString("mechanism")
			}
		}
		switch {
		case ns == nsSASL2 && name == "initial-response":
			if initial != nil {
				cond, text = "malformed-request", "more than one initial response"
				return false
			}
			p, err := sasl2Payload(child)
			if err != nil {
				cond, text = "incorrect-encoding", ""
				return false
			}
			initial = p
		case ns == nsSASL2 && name == "user-agent":
			if cond, text = parseUserAgent(ct, child, &x.auth); cond != "" {
				return false
			}
		case ns == sasl.NSUpgrade && name == "upgrade":
			if verify == nil {
				// A token proves no password: no upgrade after one.
				s.parseUpgrade(x, child)
			}
		case ns == nsBind2 && name == "bind":
			if x.bind != nil {
				cond, text = "malformed-request", "more than one bind request"
				return false
			}
			x.bind = bytes.Clone(child)
		default:
			if i := s.hooks.SASL2Inline(ns, name); i >= 0 && !x.asked(i) {
				// A repeated element is ignored: each handler hears
				// of one request per exchange.
				x.inline = append(x.inline, inlineReq{i: i, state: child})
			}
			// Anything else (<supported/>, an unknown extension) is
			// ignored: SASL2 is extensible.
		}
		return true
	})
	if !ok && cond == "" {
		cond, text = "malformed-request", "malformed child element"
	}
	if cond != "" {
		s.authFail(c, true, cond, text, false)
		return
	}
	var ht *sasl.HT
	if verify != nil {
		var err error
		switch {
		case !hasFAST:
			cond, text = "malformed-request", "a token login needs <fast xmlns='"+nsFAST+"'/>"
		case initial == nil:
			cond, text = "malformed-request", "a token login needs an initial response"
		default:
			if ht, err = sasl.NewHT(sasl.Options{Mechanism: mech, Binding: c.tr.binding()}); err != nil {
				cond = "invalid-mechanism"
			}
		}
		if cond != "" {
			s.authFail(c, true, cond, text, false)
			return
		}
	} else {
		// XEP-0474: the <authentication/> mechanisms (the same list as
		// <mechanisms/>, SASL2 being offered over TLS only) and the
		// XEP-0440 types, exactly as this stream's features sent them.
		opts := sasl.Options{Mechanism: mech, OfferedMechanisms: s.mechanisms(true), OfferedBindings: offeredBindings}
		if b := c.tr.binding(); b != nil {
			opts.Binding = b
			opts.PlusAdvertised = true // a layer with a binding is secure: -PLUS was offered
		}
		ex, err := sasl.NewServer(opts)
		if err != nil {
			s.authFail(c, true, "invalid-mechanism", "", false)
			return
		}
		x.Server = ex
	}
	// The modules see their requests before the exchange starts, once the
	// request as a whole is known to be well-formed.
	for k := range x.inline {
		r := &x.inline[k]
		elem, _ := r.state.([]byte)
		r.state = nil
		h := s.hooks.SASL2Handler(r.i)
		if h.Request == nil {
			continue
		}
		st, err := h.Request(&x.auth, elem)
		if err != nil {
			x.inline = x.inline[:k] // only those that accepted hear of the failure
			c.ex = x
			s.authFail(c, true, "malformed-request", err.Error(), false)
			return
		}
		r.state = st
	}
	c.ex = x
	if ht != nil {
		s.tokenStart(c, x, ht, verify, tl, initial)
		return
	}
	if initial == nil {
		// No initial response: an empty challenge asks for it.
		c.write([]byte(`<challenge xmlns='` + nsSASL2 + `'/>`))
		return
	}
	s.saslStart(c, initial)
}

// parseFAST reads XEP-0484's <fast count invalidate/> into l.
func parseFAST(tag stanza.StartTag, l *hook.TokenLogin) (cond, text string) {
	if v, ok := tag.AttrString("count"); ok {
		n, err := strconv.ParseUint(v, 10, 63)
		if err != nil {
			return "malformed-request", "the FAST count must be a non-negative integer"
		}
		l.Count = int64(n)
	}
	if v, ok := tag.AttrString("invalidate"); ok {
		switch v {
		case "true", "1":
			l.Invalidate = true
		case "false", "0":
		default:
			return "malformed-request", "invalidate must be a boolean"
		}
	}
	return "", ""
}

// tokenStart runs a token login: the HT message is parsed on the loop
// (it takes the channel-binding data), the module's verifier looks the
// account's tokens up and checks the proof on a worker. The outcome goes
// through saslStep like a password's: a wrong, unknown or replayed token
// counts as a failed credential.
func (s *Server) tokenStart(c *conn, x *sasl2Exchange, ht *sasl.HT, verify hook.TokenVerifier, tl hook.TokenLogin, initial []byte) {
	username, err := ht.Start(initial)
	if err != nil {
		s.saslStep(c, nil, false, err)
		return
	}
	local, err := normalizeLocal(username, s.cfg.Domain)
	if err != nil {
		s.saslFail(c, "not-authorized", "", false)
		return
	}
	tl.Username = local
	c.sess = &session{local: local}
	auth := x.auth // the worker's copy
	s.async(c, func(ctx context.Context) func() {
		additional, children, err := verify(ctx, ht, &auth, tl)
		if err != nil && sasl.Condition(err) == sasl.CondTemporaryAuthFailure {
			s.log.Error("token login failed", zap.String("user", local), zap.Error(err))
		}
		return func() {
			if err != nil {
				s.saslStep(c, nil, false, err)
				return
			}
			x.children = children
			s.stats.authFAST.Add(1)
			s.log.Debug("token login", zap.String("user", local), zap.String("mechanism", auth.Mechanism))
			s.saslStep(c, additional, true, nil)
		}
	}, func() { s.saslStep(c, nil, false, errTemporary) })
}

// parseUserAgent reads <user-agent id><software/><device/></user-agent>
// into a, and returns a failure condition and text when it is invalid.
func parseUserAgent(tag stanza.StartTag, elem []byte, a *hook.Auth) (cond, text string) {
	if id, ok := tag.AttrString("id"); ok {
		if !validUUID(id) {
			return "malformed-request", "the user-agent id must be a UUID"
		}
		a.UserAgent = strings.ToLower(id)
	}
	cond = ""
	stanza.Children(elem, func(child []byte) bool {
		ct, err := stanza.ParseStartTag(child)
		if err != nil {
			cond, text = "malformed-request", "malformed user-agent"
			return false
		}
		name := string(ct.Local())
		if name != "software" && name != "device" {
			return true
		}
		if len(stanza.Inner(child)) > maxUAText {
			cond, text = "malformed-request", "user-agent "+name+" is too long"
			return false
		}
		v, err := stanza.Text(child)
		if err != nil {
			cond, text = "malformed-request", "malformed user-agent "+name
			return false
		}
		if name == "software" {
			a.Software = v
		} else {
			a.Device = v
		}
		return true
	})
	return cond, text
}

// validUUID reports whether s is a UUID in its textual form
// (8-4-4-4-12 hex digits).
func validUUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
				return false
			}
		}
	}
	return true
}

// sasl2Payload decodes the base64 content of <initial-response/> or
// <response/>: in SASL2 an empty element is an empty string (there is no
// "=" form).
func sasl2Payload(elem []byte) ([]byte, error) {
	raw, err := stanza.Unescape(nil, stanza.Inner(elem))
	if err != nil {
		return nil, err
	}
	raw = bytes.TrimSpace(raw)
	out := make([]byte, base64.StdEncoding.DecodedLen(len(raw)))
	n, err := base64.StdEncoding.Decode(out, raw)
	if err != nil {
		return nil, err
	}
	return out[:n], nil
}

// sasl2Succeed completes a SASL2 exchange whose credentials were verified:
// the connection is authenticated at once (no stream restart), then the
// inline requests are processed and <success/> is written.
func (s *Server) sasl2Succeed(c *conn, x *sasl2Exchange, additional []byte) {
	c.ex = nil
	x.Server = nil
	x.additional = additional
	s.stats.move(c, func() {
		c.phase = phaseBind
		if c.has(flagPreauth) {
			c.flags &^= flagPreauth
			s.preauth.release(c.ip.Addr())
		}
	})
	s.stats.authSucceeded.Add(1)
	s.stats.authSASL2.Add(1)
	c.sess.loop = c.loop
	c.sess.conn = c
	s.hooks.Fire(c.loop.sessionCtx(c.sess), hook.Authenticated)
	c.loop.ctx.Reset(nil, nil, nil)
	if c.has(flagClosed) {
		return
	}
	if c.has(flagWorkPending) {
		// A module loads what the session needs first (the account's
		// blocklist): the rest waits for it, in order, on the loop.
		s.async(c, func(context.Context) func() {
			return func() { s.sasl2Inline(c, x, 0, x.children) }
		}, func() { s.fail(c, stream.ResourceConstraint.Err, "the server is busy") })
		return
	}
	s.sasl2Inline(c, x, 0, x.children)
}

// sasl2Inline runs the inline handlers from the k-th on, one after the
// other (a handler may finish later, on the loop), then binds.
func (s *Server) sasl2Inline(c *conn, x *sasl2Exchange, k int, children []byte) {
	if c.has(flagClosed) {
		return
	}
	if k == len(x.inline) {
		s.sasl2Bind(c, x, children)
		return
	}
	r := x.inline[k]
	h := s.hooks.SASL2Handler(r.i)
	called := false
	cx := c.loop.ctxFor(c, nil)
	h.Success(cx, &x.auth, r.state, func(b []byte, resumed bool) {
		if called {
			return
		}
		called = true
		children = append(children, b...)
		if resumed {
			s.sasl2Write(c, x, children, nil, true)
			return
		}
		s.sasl2Inline(c, x, k+1, children)
	})
	c.loop.ctx.Reset(nil, nil, nil)
}

// sasl2Bind binds a resource if the client asked for one (XEP-0386), runs
// the Bind 2 inline handlers and writes <success/>.
func (s *Server) sasl2Bind(c *conn, x *sasl2Exchange, children []byte) {
	if c.has(flagClosed) {
		return
	}
	if x.bind == nil {
		s.sasl2Write(c, x, children, nil, false)
		return
	}
	sess := c.sess
	part := s.bind2Part(sess.local, x.auth.UserAgent)
	full, err := jid.New(sess.local, s.cfg.Domain, bindTag(x.bind)+"/"+part)
	if err != nil || full.Resourcepart() == "" || strings.HasPrefix(full.Resourcepart(), "/") {
		// No tag, or one PRECIS refuses: the server's part alone.
		full, err = jid.New(sess.local, s.cfg.Domain, part)
		if err != nil {
			s.fail(c, stream.InternalServerError.Err, "no resource could be bound")
			return
		}
	}
	s.bindSession(c, full)
	if x.auth.UserAgent != "" {
		// XEP-0386: earlier sessions of the same installation end, under
		// another tag too (the same tag replaced it in bindSession).
		suffix := "/" + part
		s.sessions.each(sess.local, func(o *session) {
			if o != sess && strings.HasSuffix(o.full, suffix) {
				s.stats.replaced.Add(1)
				o.closeWith(stream.Conflict.Err)
			}
		})
	}
	bound := append([]byte(nil), `<bound xmlns='`+nsBind2+`'>`...)
	stanza.Children(x.bind, func(child []byte) bool {
		ct, err := stanza.ParseStartTag(child)
		if err != nil {
			return true
		}
		ns, has := ct.AttrString("xmlns")
		if !has {
			return true // <tag/>, or prefixed
		}
		if h := s.hooks.Bind2Inline(ns, string(ct.Local())); h != nil {
			bound = h(c.loop.ctxFor(c, nil), child, bound)
			c.loop.ctx.Reset(nil, nil, nil)
		}
		return !c.has(flagClosed)
	})
	if c.has(flagClosed) {
		return
	}
	bound = append(bound, `</bound>`...)
	s.sasl2Write(c, x, children, bound, false)
	s.hooks.Fire(c.loop.sessionCtx(sess), hook.Bound)
	c.loop.ctx.Reset(nil, nil, nil)
}

// sasl2Write writes <success/> and, unless a session was resumed, the
// features of the authenticated stream: there is no stream restart.
func (s *Server) sasl2Write(c *conn, x *sasl2Exchange, children, bound []byte, resumed bool) {
	if c.has(flagClosed) {
		return
	}
	b := append(c.loop.scratch[:0], `<success xmlns='`+nsSASL2+`'>`...)
	if len(x.additional) > 0 {
		b = append(b, `<additional-data>`...)
		b = base64.StdEncoding.AppendEncode(b, x.additional)
		b = append(b, `</additional-data>`...)
	}
	b = append(b, `<authorization-identifier>`...)
	if c.sess.bound {
		b = stanza.AppendEscaped(b, c.sess.full)
	} else {
		b = stanza.AppendEscaped(b, c.sess.local+"@"+s.cfg.Domain)
	}
	b = append(b, `</authorization-identifier>`...)
	b = append(b, children...)
	b = append(b, bound...)
	b = append(b, `</success>`...)
	switch {
	case resumed:
		// XEP-0198 section 6: the stream is re-established; no features.
	case c.sess.bound:
		b = append(b, s.featuresBound...)
	default:
		b = append(b, s.featuresBind...)
	}
	c.write(b)
	c.loop.scratch = b[:0]
}

// bindTag returns the text of Bind 2's <tag/>, made fit for a resource:
// no controls, no spaces, at most maxBindTag bytes.
func bindTag(bind []byte) string {
	var tag string
	stanza.Children(bind, func(child []byte) bool {
		ct, err := stanza.ParseStartTag(child)
		if err != nil || string(ct.Local()) != "tag" {
			return true
		}
		if ns, has := ct.AttrString("xmlns"); has && ns != nsBind2 {
			return true
		}
		tag, _ = stanza.Text(child)
		return false
	})
	tag = strings.Map(func(r rune) rune {
		switch {
		case unicode.IsSpace(r):
			return '-'
		case unicode.IsControl(r), r == utf8.RuneError:
			return -1
		}
		return r
	}, strings.TrimSpace(tag))
	if len(tag) > maxBindTag {
		cut := maxBindTag
		for cut > 0 && !utf8.RuneStart(tag[cut]) {
			cut--
		}
		tag = tag[:cut]
	}
	return tag
}

// resourceEncoding is lowercase base32 without padding: 13 characters for
// 8 bytes, safe in a resource and readable in logs.
var resourceEncoding = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// bind2Part returns the server's part of a Bind 2 resource, which is the
// client's tag, "/", and this part: derived from the account and the
// user-agent id, so that the same device gets the same resource back
// (XEP-0386 section 3.2.1), which replaces its earlier session like any
// bind of the same full JID. The id itself is not exposed: 8 bytes of
// SHA-256 over the domain, the account and the id. Without an id the part
// is random.
func (s *Server) bind2Part(local, uaID string) string {
	var id [8]byte
	if uaID != "" {
		h := sha256.Sum256([]byte(s.cfg.Domain + "\x00" + local + "\x00" + uaID))
		copy(id[:], h[:])
	} else {
		_, _ = rand.Read(id[:])
	}
	return resourceEncoding.EncodeToString(id[:])
}

// sasl2Abandoned tells the inline handlers of c's SASL2 exchange, if it
// has one, that it failed, was aborted or lost its connection.
func (s *Server) sasl2Abandoned(c *conn) {
	x := sasl2Of(c)
	if x == nil {
		return
	}
	inline := x.inline
	x.inline = nil // told once
	for _, r := range inline {
		if h := s.hooks.SASL2Handler(r.i); h.Failure != nil {
			h.Failure(&x.auth, r.state)
		}
	}
}

// sasl2FailText is the text of a SASL2 failure without one of its own.
func sasl2FailText(cond string) string {
	switch cond {
	case "not-authorized":
		return "wrong username or password"
	case "aborted":
		return "the exchange was aborted"
	case "invalid-mechanism":
		return "that mechanism is not offered"
	case "incorrect-encoding":
		return "invalid base64"
	case "encryption-required":
		return "SASL2 needs TLS"
	case "temporary-auth-failure":
		return "authentication is temporarily unavailable"
	}
	return ""
}
