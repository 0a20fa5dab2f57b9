package server

import (
	"bytes"
	"crypto/sha1"
	"crypto/subtle"
	"encoding/hex"
	"time"

	"github.com/panjf2000/gnet/v2"
	"go.uber.org/zap"
	"mellium.im/xmpp/jid"
	"mellium.im/xmpp/stream"

	"github.com/krill-xmpp/krill/stanza"
)

// XEP-0114 external components on the reactor. A component's stream is an
// s2s conn marked component: the same pre-auth policy until its handshake
// (hex SHA-1 of the stream id and the shared secret), then it serves its
// domain: stanzas for it go through a link (s2sLink) that is ready from
// the handshake on, the same delivery abstraction as a remote domain.

const nsComponent = "jabber:component:accept"

// componentListen returns the component listener's gnet address, or none.
func (s *Server) componentListen() ([]string, error) {
	if s.cfg.Component.Listen == "" || len(s.cfg.Component.Secrets) == 0 {
		return nil, nil
	}
	addr, err := s.ports.concrete(s.cfg.Component.Listen)
	if err != nil {
		return nil, err
	}
	s.fed.compListen, s.fed.compPort = addr, portOf(addr)
	return []string{"tcp://" + addr}, nil
}

// ComponentAddr returns the component listener's address, or nil.
func (s *Server) ComponentAddr() string { return s.fed.compListen }

// openComponent accepts a component's connection.
func (s *Server) openComponent(gc gnet.Conn) ([]byte, gnet.Action) {
	out, action := s.openInbound(gc, false)
	if c, ok := gc.Context().(*conn); ok {
		s2sOf(c).component = true
	}
	return out, action
}

// componentHeader answers a component's stream header (no features: the
// protocol predates them).
func (s *Server) componentHeader(c *conn, st *s2sStream, h stanza.Header) {
	if h.DefaultNS != nsComponent {
		s.fail(c, stream.InvalidNamespace.Err, "the default namespace must be "+nsComponent)
		return
	}
	if _, ok := s.cfg.Component.Secrets[h.To]; !ok || c.phase != phaseHeader {
		s.fail(c, stream.HostUnknown.Err, "no component is configured for that domain")
		return
	}
	st.remote = h.To
	st.id = newStreamID()
	b := append(c.loop.scratch[:0], `<?xml version='1.0'?><stream:stream xmlns:stream='`+nsStream+`' xmlns='`+nsComponent+`' from='`...)
	b = stanza.AppendEscaped(b, st.remote)
	b = append(b, `' id='`+st.id+`'>`...)
	c.flags |= flagHeaderSent
	c.phase = phaseNegotiate
	c.write(b)
	c.loop.scratch = b[:0]
}

// componentElement handles an element on a component's stream.
func (s *Server) componentElement(c *conn, st *s2sStream, tag stanza.StartTag, local string, unit []byte) {
	if c.phase != phaseSession {
		if local != "handshake" {
			s.fail(c, stream.NotAuthorized.Err, "handshake first")
			return
		}
		got, _ := stanza.Text(unit)
		sum := sha1.Sum([]byte(st.id + s.cfg.Component.Secrets[st.remote]))
		want := hex.EncodeToString(sum[:])
		if subtle.ConstantTimeCompare([]byte(got), []byte(want)) != 1 {
			s.fed.authFailed.Add(1)
			s.fail(c, stream.NotAuthorized.Err, "handshake failed")
			return
		}
		if !s.attachComponent(c, st) {
			s.fail(c, stream.Conflict.Err, "this component is already connected")
			return
		}
		s.s2sAuthenticated(c, st)
		c.write([]byte(`<handshake/>`))
		s.log.Info("component connected", zap.String("domain", st.remote), zap.Stringer("ip", c.ip))
		return
	}
	if local != "message" && local != "presence" && local != "iq" {
		s.fail(c, stream.UnsupportedStanzaType.Err, "unknown top-level element")
		return
	}
	from, _ := tag.AttrString("from")
	fj, err := jid.Parse(from)
	if err != nil || fj.Domainpart() != st.remote {
		s.fed.invalidFrom.Add(1)
		s.fail(c, stream.InvalidFrom.Err, "from is not of the component's domain")
		return
	}
	to, _ := tag.AttrString("to")
	if to == "" {
		return
	}
	st.last = c.loop.since()
	s.fed.stanzasIn.Add(1)
	// unit is the loop's input buffer: what is queued (for a remote
	// domain, a hosted one) must own its bytes.
	s.deliver(c.loop, to, bytes.Clone(unit))
}

// attachComponent makes c the link of its domain.
func (s *Server) attachComponent(c *conn, st *s2sStream) bool {
	f := s.fed
	f.mu.Lock()
	defer f.mu.Unlock()
	if lk := f.components[st.remote]; lk != nil {
		return false
	}
	lk := &s2sLink{domain: st.remote, loop: c.loop, started: time.Now(), c: c, ready: true}
	st.link = lk
	f.components[st.remote] = lk
	return true
}

// toComponent delivers b to the component serving domain; false when no
// component is configured for it. A configured component that is not
// connected bounces it with service-unavailable.
func (s *Server) toComponent(domain string, b []byte) bool {
	if _, ok := s.cfg.Component.Secrets[domain]; !ok {
		return false
	}
	f := s.fed
	f.mu.Lock()
	lk := f.components[domain]
	f.mu.Unlock()
	if lk == nil {
		s.bounce(b, "cancel", "service-unavailable")
		return true
	}
	switch lk.push(s, b) {
	case pushFull:
		s.bounce(b, "wait", "resource-constraint")
	case pushDead:
		s.bounce(b, "cancel", "service-unavailable")
	}
	return true
}

// componentGone detaches a closed component.
func (s *Server) componentGone(c *conn, st *s2sStream) {
	lk := st.link
	if lk == nil {
		return
	}
	f := s.fed
	f.mu.Lock()
	if f.components[st.remote] == lk {
		delete(f.components, st.remote)
	}
	f.mu.Unlock()
	lk.mu.Lock()
	lk.dead = true
	q := lk.queue
	lk.queue, lk.bytes = nil, 0
	lk.mu.Unlock()
	for _, b := range q {
		s.bounce(b, "cancel", "service-unavailable")
	}
}

// Attached implements hook.Attached: false while the session is parked.
func (s *session) Attached() bool { return s.conn != nil }
