package server

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"time"

	"go.uber.org/zap"
	"mellium.im/xmpp/jid"
	"mellium.im/xmpp/stream"

	"github.com/krill-xmpp/krill/hook"
	"github.com/krill-xmpp/krill/sasl"
	"github.com/krill-xmpp/krill/stanza"
	"github.com/krill-xmpp/krill/storage"
)

// Namespaces the core speaks.
const (
	nsClient  = "jabber:client"
	nsStream  = "http://etherx.jabber.org/streams"
	nsStreams = "urn:ietf:params:xml:ns:xmpp-streams"
	nsSASL    = "urn:ietf:params:xml:ns:xmpp-sasl"
	nsTLS     = "urn:ietf:params:xml:ns:xmpp-tls"
	nsBind    = "urn:ietf:params:xml:ns:xmpp-bind"
	nsSession = "urn:ietf:params:xml:ns:xmpp-session"
	nsStanzas = "urn:ietf:params:xml:ns:xmpp-stanzas"
	nsPing    = "urn:xmpp:ping"
	nsSASLCB  = "urn:xmpp:sasl-cb:0"
)

const streamClose = "</stream:stream>"

// storageTimeout bounds one credential look-up on a worker.
const storageTimeout = 10 * time.Second

// plaintextMechanisms are offered without TLS when c2s.allow_plaintext is
// on. PLAIN would send the password in the clear: never without TLS.
var plaintextMechanisms = []string{sasl.ScramSHA512, sasl.ScramSHA256, sasl.ScramSHA1}

// tlsMechanisms are the mechanisms offered over TLS, and offeredBindings
// the channel-binding types advertised there (XEP-0440). Both go into
// XEP-0474's downgrade-protection hash, so they are exactly what the
// features say; shared, never modified.
var (
	tlsMechanisms   = sasl.Mechanisms(true)
	offeredBindings = []string{sasl.BindingTLSExporter, sasl.BindingTLSServerEndPoint}
)

// mechanisms returns the SASL mechanisms offered on a connection.
func (s *Server) mechanisms(overTLS bool) []string {
	if overTLS {
		return tlsMechanisms
	}
	if s.cfg.C2S.AllowPlaintext {
		return plaintextMechanisms
	}
	return nil
}

// buildFeatures returns the pre-authentication stream features.
func (s *Server) buildFeatures(overTLS bool) []byte {
	b := []byte(`<stream:features>`)
	if !overTLS {
		b = append(b, `<starttls xmlns='`+nsTLS+`'>`...)
		if !s.cfg.C2S.AllowPlaintext {
			b = append(b, `<required/>`...)
		}
		b = append(b, `</starttls>`...)
	}
	if mechs := s.mechanisms(overTLS); len(mechs) > 0 {
		b = append(b, `<mechanisms xmlns='`+nsSASL+`'>`...)
		for _, m := range mechs {
			b = append(b, `<mechanism>`+m+`</mechanism>`...)
		}
		b = append(b, `</mechanisms>`...)
		if overTLS {
			// XEP-0388: the same mechanisms, after TLS only.
			b = s.appendSASL2Feature(b, mechs)
		}
	}
	b = s.hooks.StreamFeatures(b, hook.PhasePreAuth, overTLS)
	if overTLS {
		// XEP-0440: the channel-binding types a -PLUS client may choose.
		b = append(b, `<sasl-channel-binding xmlns='`+nsSASLCB+`'>`...)
		for _, t := range offeredBindings {
			b = append(b, `<channel-binding type='`+t+`'/>`...)
		}
		b = append(b, `</sasl-channel-binding>`...)
	}
	return append(b, `</stream:features>`...)
}

func (s *Server) appendHeader(b []byte) []byte {
	var id [8]byte
	_, _ = rand.Read(id[:])
	b = append(b, `<?xml version='1.0'?><stream:stream xmlns='`+nsClient+`' xmlns:stream='`+nsStream+`' id='`...)
	b = hex.AppendEncode(b, id[:])
	b = append(b, `' from='`...)
	b = stanza.AppendEscaped(b, s.cfg.Domain)
	return append(b, `' version='1.0' xml:lang='en'>`...)
}

func appendStreamError(b []byte, cond, text string) []byte {
	b = append(b, `<stream:error><`...)
	b = append(b, cond...)
	b = append(b, ` xmlns='`+nsStreams+`'/>`...)
	if text != "" {
		b = append(b, `<text xmlns='`+nsStreams+`'>`...)
		b = stanza.AppendEscaped(b, text)
		b = append(b, `</text>`...)
	}
	return append(b, `</stream:error>`+streamClose...)
}

// handleHeader checks the client's stream header and answers with ours and
// the features of the current phase.
func (s *Server) handleHeader(c *conn, unit []byte) {
	if c.has(flagS2S) {
		s.s2sHeader(c, unit)
		return
	}
	h, err := stanza.ParseHeader(unit)
	if err != nil {
		s.fail(c, stream.BadFormat.Err, "malformed stream header")
		return
	}
	switch {
	case h.Name.Local != "stream" || h.Name.Space != nsStream:
		s.fail(c, stream.InvalidNamespace.Err, "the stream element must be {"+nsStream+"}stream")
		return
	case h.DefaultNS != nsClient:
		s.fail(c, stream.InvalidNamespace.Err, "the default namespace must be "+nsClient)
		return
	case h.Version == "" || !validVersion(h.Version):
		s.fail(c, stream.UnsupportedVersion.Err, "only XMPP 1.0 streams are supported")
		return
	}
	if h.To != s.cfg.Domain {
		if d, err := jid.New("", h.To, ""); err != nil || d.Domainpart() != s.cfg.Domain {
			s.fail(c, stream.HostUnknown.Err, "this server does not serve that domain")
			return
		}
	}
	b := s.appendHeader(c.loop.scratch[:0])
	c.flags |= flagHeaderSent
	switch c.phase {
	case phaseHeader, phaseNegotiate:
		c.phase = phaseNegotiate
		switch {
		case c.tr.secure():
			b = append(b, s.featuresTLS...)
		case c.has(flagWeb):
			b = append(b, s.web.features...) // no STARTTLS over WebSocket (ws.go)
		default:
			b = append(b, s.featuresPlain...)
		}
	case phaseAuthHeader, phaseBind:
		c.phase = phaseBind
		b = append(b, s.featuresBind...)
	default:
		// A restart after binding is not part of RFC 6120.
		s.fail(c, stream.NotAuthorized.Err, "stream restart after resource binding")
		return
	}
	c.write(b)
	c.loop.scratch = b[:0]
}

// validVersion accepts major version 1 (RFC 6120 section 4.7.5).
func validVersion(v string) bool {
	major, _, _ := bytes.Cut([]byte(v), []byte("."))
	return string(major) == "1"
}

// handleElement dispatches one top-level element by phase.
func (s *Server) handleElement(c *conn, unit []byte) {
	if c.has(flagS2S) {
		s.s2sElement(c, unit)
		return
	}
	tag, err := stanza.ParseStartTag(unit)
	if err != nil {
		s.fail(c, stream.NotWellFormed.Err, err.Error())
		return
	}
	ns, hasNS := tag.AttrString("xmlns")
	if !hasNS && len(tag.Prefix()) == 0 {
		ns = nsClient
	}
	local := string(tag.Local())
	switch c.phase {
	case phaseHeader, phaseAuthHeader:
		s.fail(c, stream.NotWellFormed.Err, "expected a stream header")
	case phaseNegotiate:
		if ns == nsSASL2 {
			s.handleSASL2(c, tag, local, unit)
			return
		}
		if sasl2Of(c) != nil {
			// XEP-0388 2.5: nothing but <response/> or <abort/> during
			// the exchange.
			s.fail(c, stream.PolicyViolation.Err, "only SASL2 responses during a SASL2 exchange")
			return
		}
		if ns == nsSASL {
			s.handleSASL(c, tag, local, unit)
			return
		}
		if ns == nsTLS && local == "starttls" {
			if c.tr.secure() || c.ex != nil || c.sess != nil || c.has(flagWeb) {
				c.write([]byte(`<failure xmlns='` + nsTLS + `'/>` + streamClose))
				s.shut(c, reasonError)
				return
			}
			c.write([]byte(`<proceed xmlns='` + nsTLS + `'/>`))
			s.startTLS(c, false)
			return
		}
		if ns == nsClient && local == "iq" && c.ex == nil && s.preauthIQ(c, tag, unit) {
			return
		}
		// Nothing but negotiation before authentication, and no pong.
		s.fail(c, stream.NotAuthorized.Err, "authenticate first")
	case phaseBind:
		if ns == nsClient && local == "iq" {
			s.handleBindIQ(c, tag, unit)
			return
		}
		if h := s.hooks.Nonza(hook.PhaseBind, ns, local); h != nil {
			// Stream management's <resume/>, say: after authentication,
			// instead of binding.
			s.nonza(c, h, unit)
			return
		}
		s.fail(c, stream.NotAuthorized.Err, "bind a resource first")
	case phaseSession:
		if ns != nsClient {
			if h := s.hooks.Nonza(hook.PhaseBound, ns, local); h != nil {
				s.nonza(c, h, unit)
				return
			}
		}
		s.handleStanza(c, tag, ns, local, unit)
	}
}

// handleSASL runs RFC 6120 section 6 on one element of the SASL namespace.
func (s *Server) handleSASL(c *conn, tag stanza.StartTag, local string, unit []byte) {
	switch local {
	case "auth":
		if c.ex != nil {
			s.saslFail(c, "aborted", "", false)
			return
		}
		if s.throttled(c) {
			s.saslFail(c, "temporary-auth-failure", "too many failed logins from your address; try later", false)
			return
		}
		mech, _ := tag.AttrString("mechanism")
		if !s.offered(c, mech) {
			cond := "invalid-mechanism"
			if !c.tr.secure() && !s.cfg.C2S.AllowPlaintext {
				cond = "encryption-required"
			}
			s.saslFail(c, cond, "", false)
			return
		}
		// XEP-0474: SCRAM's server-first carries a hash of what the
		// features offered, so a client sees a list stripped in transit.
		secure := c.tr.secure()
		opts := sasl.Options{Mechanism: mech, OfferedMechanisms: s.mechanisms(secure)}
		if secure {
			opts.OfferedBindings = offeredBindings
		}
		if b := c.tr.binding(); b != nil {
			opts.Binding = b
			opts.PlusAdvertised = true // a layer with a binding is secure: -PLUS was offered
		}
		ex, err := sasl.NewServer(opts)
		if err != nil {
			s.saslFail(c, "invalid-mechanism", "", false)
			return
		}
		payload, err := saslPayload(unit)
		if err != nil {
			s.saslFail(c, "incorrect-encoding", "", false)
			return
		}
		c.ex = ex
		if payload == nil {
			// No initial response: an empty challenge asks for it.
			c.write([]byte(`<challenge xmlns='` + nsSASL + `'/>`))
			return
		}
		s.saslStart(c, payload)
	case "response":
		if c.ex == nil {
			s.saslFail(c, "malformed-request", "no exchange in progress", false)
			return
		}
		payload, err := saslPayload(unit)
		if err != nil {
			s.saslFail(c, "incorrect-encoding", "", false)
			return
		}
		if payload == nil {
			payload = []byte{}
		}
		if !c.exStarted() {
			s.saslStart(c, payload)
			return
		}
		chal, done, err := c.ex.Next(payload)
		s.saslStep(c, chal, done, err)
	case "abort":
		c.ex = nil
		s.saslFail(c, "aborted", "", false)
	default:
		s.fail(c, stream.UnsupportedStanzaType.Err, "unknown SASL element")
	}
}

// throttled reports (and counts) a login refused because its address
// failed too often: no look-up, no hashing, for this address a while.
func (s *Server) throttled(c *conn) bool {
	if s.authFailures.Over(c.ip.Addr(), time.Now(), s.failureLimit()) {
		s.stats.authThrottled.Add(1)
		return true
	}
	return false
}

// exStarted reports whether Start has run for the exchange: the session
// holding the username exists from then on.
func (c *conn) exStarted() bool { return c.sess != nil }

func (s *Server) offered(c *conn, mech string) bool {
	for _, m := range s.mechanisms(c.tr.secure()) {
		if m == mech {
			return true
		}
	}
	return false
}

// saslPayload decodes the base64 content of auth/response: nil when the
// element is empty, empty (not nil) for "=".
func saslPayload(unit []byte) ([]byte, error) {
	raw, err := stanza.Unescape(nil, stanza.Inner(unit))
	if err != nil {
		return nil, err
	}
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 {
		return nil, nil
	}
	if len(raw) == 1 && raw[0] == '=' {
		return []byte{}, nil
	}
	out := make([]byte, base64.StdEncoding.DecodedLen(len(raw)))
	n, err := base64.StdEncoding.Decode(out, raw)
	if err != nil {
		return nil, err
	}
	return out[:n], nil
}

// saslStart parses the initial response on the loop, then looks up the
// account on a worker, which also runs the mechanism's first step (PLAIN's
// password hashing must not run on a loop).
func (s *Server) saslStart(c *conn, initial []byte) {
	username, authzid, err := c.ex.Start(initial)
	if err != nil {
		s.saslStep(c, nil, false, err)
		return
	}
	local, err := normalizeLocal(username, s.cfg.Domain)
	if err != nil {
		s.saslFail(c, "not-authorized", "", false)
		return
	}
	if authzid != "" && authzid != local+"@"+s.cfg.Domain {
		s.saslFail(c, "invalid-authzid", "", false)
		return
	}
	c.sess = &session{local: local}
	ex := c.ex
	x := sasl2Of(c)
	s.async(c, func(ctx context.Context) func() {
		creds, lerr := s.accounts.Credentials(ctx, local)
		var (
			chal  []byte
			done  bool
			serr  error
			lacks []sasl.Hash
		)
		switch {
		case lerr == nil:
			chal, done, serr = ex.Respond(&creds)
			if x != nil && len(x.upgrades) > 0 {
				lacks = lacking(x, &creds) // XEP-0480: what to add
			}
		case errors.Is(lerr, storage.ErrNotFound):
			chal, done, serr = ex.Respond(nil)
		default:
			s.log.Error("credential look-up failed", zap.String("user", local), zap.Error(lerr))
			serr = errTemporary
		}
		return func() {
			if x != nil {
				x.lacks = lacks
			}
			s.saslStep(c, chal, done, serr)
		}
	}, func() { s.saslStep(c, nil, false, errTemporary) })
}

// errTemporary maps to the temporary-auth-failure SASL condition.
var errTemporary = errors.New("server: authentication temporarily unavailable")

// saslStep sends the outcome of one exchange step.
func (s *Server) saslStep(c *conn, chal []byte, done bool, err error) {
	switch {
	case err != nil:
		cond := sasl.Condition(err)
		if errors.Is(err, errTemporary) {
			cond = "temporary-auth-failure"
		}
		checked := sasl.CheckedCredential(err)
		// Why, for whoever debugs a client; never the credentials.
		if ce := s.log.Check(zap.DebugLevel, "sasl failure"); ce != nil {
			ce.Write(zap.String("condition", cond), zap.Error(err), zap.Bool("credential_checked", checked), zap.Stringer("ip", c.ip))
		}
		s.saslFail(c, cond, "", checked)
	case done:
		s.saslSucceed(c, chal)
	default:
		ns := nsSASL
		if sasl2Of(c) != nil {
			ns = nsSASL2
		}
		b := append(c.loop.scratch[:0], `<challenge xmlns='`+ns+`'>`...)
		b = base64.StdEncoding.AppendEncode(b, chal)
		b = append(b, `</challenge>`...)
		c.write(b)
		c.loop.scratch = b[:0]
	}
}

func (s *Server) saslSucceed(c *conn, additional []byte) {
	if x := sasl2Of(c); x != nil {
		if len(x.lacks) > 0 {
			// XEP-0480: authenticated; the upgrade comes before
			// <success/>, within the exchange and its deadline.
			x.Server = nil
			x.additional = additional
			s.sasl2Continue(c, x)
			return
		}
		s.sasl2Succeed(c, x, additional)
		return
	}
	c.ex = nil
	s.stats.move(c, func() {
		c.phase = phaseAuthHeader
		if c.has(flagPreauth) {
			c.flags &^= flagPreauth
			s.preauth.release(c.ip.Addr())
		}
	})
	c.flags &^= flagHeaderSent
	c.framer.Reset()
	s.stats.authSucceeded.Add(1)
	b := append(c.loop.scratch[:0], `<success xmlns='`+nsSASL+`'`...)
	if len(additional) > 0 {
		b = append(b, '>')
		b = base64.StdEncoding.AppendEncode(b, additional)
		b = append(b, `</success>`...)
	} else {
		b = append(b, `/>`...)
	}
	c.write(b)
	c.loop.scratch = b[:0]
	c.sess.loop = c.loop
	c.sess.conn = c
	s.hooks.Fire(c.loop.sessionCtx(c.sess), hook.Authenticated)
}

// saslFail sends a SASL failure and counts it; too many close the stream.
// checked says a password or proof was compared with a credential (see
// sasl.CheckedCredential): only those failures help someone guessing
// passwords, so only they count towards preauth.max_failed_auth and the
// per-address throttle. The others (unsupported channel binding, downgrade
// flag, malformed message, unknown mechanism, abort, throttled or temporary
// failure) cost a parse at most and count towards the looser
// preauth.max_failed_exchanges, so a client that tries its mechanisms in
// turn reaches one that works before it is closed.
func (s *Server) saslFail(c *conn, cond, text string, checked bool) {
	s.authFail(c, sasl2Of(c) != nil, cond, text, checked)
}

// authFail is saslFail for either profile: v2 selects SASL2's failure
// (XEP-0388), whose inline requests are told and dropped.
func (s *Server) authFail(c *conn, v2 bool, cond, text string, checked bool) {
	s.sasl2Abandoned(c)
	c.ex = nil
	if c.phase < phaseAuthHeader {
		c.sess = nil
	}
	// Counted before the failure is written, so that whoever reads it
	// (a client, a test) finds it counted.
	s.stats.authFailed.Add(1)
	if checked {
		s.stats.authFailedCredential.Add(1)
	} else {
		s.stats.authFailedExchange.Add(1)
	}
	var b []byte
	if v2 {
		b = append(c.loop.scratch[:0], `<failure xmlns='`+nsSASL2+`'><`...)
		b = append(b, cond...)
		b = append(b, ` xmlns='`+nsSASL+`'/>`...)
		if text == "" {
			text = sasl2FailText(cond)
		}
	} else {
		b = append(c.loop.scratch[:0], `<failure xmlns='`+nsSASL+`'><`...)
		b = append(b, cond...)
		b = append(b, `/>`...)
	}
	if text != "" {
		b = append(b, `<text>`...)
		b = stanza.AppendEscaped(b, text)
		b = append(b, `</text>`...)
	}
	b = append(b, `</failure>`...)
	c.write(b)
	c.loop.scratch = b[:0]
	if checked {
		c.failed++
		s.authFailures.Add(c.ip.Addr(), time.Now(), s.failureLimit())
		if int(c.failed) >= s.conf().Preauth.MaxFailedAuth {
			s.fail(c, stream.PolicyViolation.Err, "too many failed authentication attempts")
		}
		return
	}
	// Aborts count too: an endless abort loop is an exchange loop.
	c.failedEx++
	if int(c.failedEx) >= s.conf().Preauth.MaxFailedExchanges {
		s.fail(c, stream.PolicyViolation.Err, "too many failed SASL exchanges")
	}
}

// normalizeLocal prepares a SASL username as a JID localpart.
func normalizeLocal(username, domain string) (string, error) {
	j, err := jid.New(username, domain, "")
	if err != nil {
		return "", err
	}
	if j.Localpart() == "" {
		return "", errors.New("server: empty username")
	}
	return j.Localpart(), nil
}

// onLoop runs fn on c's event loop unless c has closed by then.
func (s *Server) onLoop(c *conn, fn func()) { s.onLoopOr(c, fn, nil) }

// onLoopOr runs fn on c's event loop, or dropped instead (on the loop, or
// at once if the loop no longer takes tasks) when c has closed: for tasks
// that carry a resource, such as a handshake slot.
func (s *Server) onLoopOr(c *conn, fn, dropped func()) {
	err := c.loop.el.Execute(context.Background(), runOnLoop{c: c, fn: fn, dropped: dropped})
	if err != nil {
		s.log.Debug("dropping loop task", zap.Error(err))
		if dropped != nil {
			dropped()
		}
	}
}

type runOnLoop struct {
	c           *conn
	fn, dropped func()
}

// Run implements gnet.Runnable. gnet does not check Execute tasks against
// closed connections, so the connection's own flag does.
func (r runOnLoop) Run(context.Context) error {
	switch {
	case !r.c.has(flagClosed):
		defer r.c.loop.srv.contain(r.c, nil)
		r.fn()
	case r.dropped != nil:
		r.dropped()
	}
	return nil
}

// preauthIQ offers an iq before authentication to the module registered
// for its payload (in-band registration); false when none is.
func (s *Server) preauthIQ(c *conn, tag stanza.StartTag, unit []byte) bool {
	typ, _ := tag.AttrString("type")
	var t hook.IQType
	switch typ {
	case "get":
		t = hook.IQGet
	case "set":
		t = hook.IQSet
	default:
		return false
	}
	child, ns, name, ok := payloadOf(unit)
	if !ok {
		return false
	}
	h := s.hooks.IQ(hook.PhasePreAuth, t, hook.ToNone|hook.ToHost, ns, name)
	if h == nil {
		return false
	}
	st := &c.loop.stanza
	*st = hook.Stanza{Kind: hook.IQ, Type: typ, Tag: tag, Raw: unit, Payload: child, NS: ns, Name: name, Addr: hook.ToNone}
	st.ID, _ = tag.AttrString("id")
	cx := c.loop.ctxFor(c, st)
	defer cx.Reset(nil, nil, nil)
	if err := h(cx, st); err != nil {
		s.log.Warn("module failed", zap.String("ns", ns), zap.Error(err))
		cx.ReplyError("cancel", "internal-server-error", "")
	}
	return true
}

// nonza hands a top-level element that is not a stanza to its module.
func (s *Server) nonza(c *conn, h hook.NonzaHandler, unit []byte) {
	cx := c.loop.ctxFor(c, nil)
	defer cx.Reset(nil, nil, nil)
	if err := h(cx, unit); err != nil {
		s.fail(c, stream.BadFormat.Err, err.Error())
	}
}

// onLoopSession runs fn on sess's loop, unless its connection has closed
// by then.
func (s *Server) onLoopSession(sess *session, fn func()) {
	err := sess.loop.el.Execute(context.Background(), sessionTask{sess: sess, fn: fn})
	if err != nil {
		s.log.Debug("dropping loop task", zap.Error(err))
	}
}

type sessionTask struct {
	sess *session
	fn   func()
}

// Run implements gnet.Runnable. The session's connection is read here, on
// its loop, where it may change.
func (t sessionTask) Run(context.Context) error {
	if c := t.sess.conn; c != nil {
		if c.has(flagClosed) {
			return nil
		}
		defer c.loop.srv.contain(c, nil)
	} else {
		defer t.sess.loop.srv.containDetached() // a parked session's mailbox
	}
	t.fn()
	return nil
}
