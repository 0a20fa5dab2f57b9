// Package hooktest runs a module's handlers without a server, for unit
// tests: a Conn that records what is written, a Host with no sessions
// that runs background work at once, and a Session with flags and slots.
// Integration tests drive the real server instead.
package hooktest

import (
	"context"
	"fmt"
	"net/netip"
	"sync"

	"go.uber.org/zap"
	"mellium.im/xmpp/jid"

	"github.com/krill-xmpp/krill/config"
	"github.com/krill-xmpp/krill/hook"
	"github.com/krill-xmpp/krill/stanza"
)

// Conn records what a handler writes. Async runs the job and its
// continuation at once, on the caller's goroutine.
type Conn struct {
	// Written holds each write, in order.
	Written []string
	// Failed is the condition of Fail, "" when not called.
	Failed string
	// Failures counts CountFailure calls.
	Failures int
	// Encrypted is what Secure reports.
	Encrypted bool
	// Addr is what IP reports; the zero value means 127.0.0.1.
	Addr netip.Addr

	ctx *hook.Ctx
}

// Write implements hook.Conn.
func (c *Conn) Write(b []byte) { c.Written = append(c.Written, string(b)) }

// WriteNonza implements hook.Conn.
func (c *Conn) WriteNonza(b []byte) { c.Written = append(c.Written, string(b)) }

// Async implements hook.Conn.
func (c *Conn) Async(job func(ctx context.Context) func(*hook.Ctx), _ func(*hook.Ctx)) {
	if then := job(context.Background()); then != nil {
		then(c.ctx)
	}
}

// Fail implements hook.Conn.
func (c *Conn) Fail(cond, _ string) { c.Failed = cond }

// Secure implements hook.Conn.
func (c *Conn) Secure() bool { return c.Encrypted }

// IP implements hook.Conn: Addr, or 127.0.0.1 when Addr is unset.
func (c *Conn) IP() netip.Addr {
	if c.Addr.IsValid() {
		return c.Addr
	}
	return netip.MustParseAddr("127.0.0.1")
}

// CountFailure implements hook.Conn.
func (c *Conn) CountFailure() { c.Failures++ }

// Host is a server with one domain and no sessions.
type Host struct {
	// Domain served; "" means "localhost".
	Name string
	// Conf is what Config returns; nil means config.Default().
	Conf *config.Config
	// Delivered records Deliver calls as "to: stanza".
	Delivered []string
	mu        sync.Mutex
}

// Domain implements hook.Host.
func (h *Host) Domain() string {
	if h.Name == "" {
		return "localhost"
	}
	return h.Name
}

// Deliver implements hook.Host: it records the stanza and reports that
// nobody took it.
func (h *Host) Deliver(to string, b []byte) int {
	h.mu.Lock()
	h.Delivered = append(h.Delivered, to+": "+string(b))
	h.mu.Unlock()
	return 0
}

// Sessions implements hook.Host.
func (h *Host) Sessions(string, func(hook.Session)) {}

// Session implements hook.Host.
func (h *Host) Session(string, string) hook.Session { return nil }

// Go implements hook.Host: job runs at once.
func (h *Host) Go(job func(ctx context.Context)) bool { job(context.Background()); return true }

// Logger implements hook.Host.
func (h *Host) Logger() *zap.Logger { return zap.NewNop() }

// Config implements hook.Host.
func (h *Host) Config() *config.Config {
	if h.Conf == nil {
		c := config.Default()
		h.Conf = &c
	}
	return h.Conf
}

// Ctx returns a handler context for st on conn, for modules registered in
// reg (nil: none), with sess as the sender (nil: before binding).
func Ctx(reg *hook.Registry, h hook.Host, sess hook.Session, conn *Conn, st *hook.Stanza) *hook.Ctx {
	c := &hook.Ctx{Host: h, Registry: reg, Log: zap.NewNop()}
	c.Reset(sess, conn, st)
	conn.ctx = c
	return c
}

// Parse builds the hook.Stanza the core hands a handler for raw, sent by
// the full JID from to a server for domain: the addressing, the parts of
// to, and an iq's payload.
func Parse(domain, from, raw string) (*hook.Stanza, error) {
	b := []byte(raw)
	tag, err := stanza.ParseStartTag(b)
	if err != nil {
		return nil, err
	}
	kind, ok := hook.KindOf(tag.Local())
	if !ok {
		return nil, fmt.Errorf("hooktest: not a stanza: %s", tag.Local())
	}
	st := &hook.Stanza{Kind: kind, Tag: tag, Raw: b, From: from, Addr: hook.ToNone}
	st.Type, _ = tag.AttrString("type")
	st.ID, _ = tag.AttrString("id")
	if st.To, _ = tag.AttrString("to"); st.To != "" {
		j, err := jid.Parse(st.To)
		if err != nil {
			return nil, err
		}
		st.Local, st.Domain, st.Resource = j.Localpart(), j.Domainpart(), j.Resourcepart()
		switch {
		case st.Domain != domain:
			st.Addr = hook.ToRemote
		case st.Local == "":
			st.Addr = hook.ToHost
		case st.Resource == "":
			st.Addr = hook.ToBare
		default:
			st.Addr = hook.ToFull
		}
	}
	if p, ok := stanza.FirstChild(b); ok && kind == hook.IQ {
		pt, err := stanza.ParseStartTag(p)
		if err != nil {
			return nil, err
		}
		st.Payload, st.Name = p, string(pt.Local())
		st.NS, _ = pt.AttrString("xmlns")
	}
	return st, nil
}
