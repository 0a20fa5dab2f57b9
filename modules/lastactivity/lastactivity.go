// Package lastactivity implements XEP-0012 Last Activity for the server
// itself: a query to the domain is answered with the server's uptime in
// seconds. Queries to an account (how long ago its last resource went
// away) need presence and rosters and are answered by the core.
package lastactivity

import (
	"strconv"
	"time"

	"github.com/krill-xmpp/krill/hook"
)

// NS is the XEP-0012 namespace.
const NS = "jabber:iq:last"

// processStart is when this package was initialised: the default start.
var processStart = time.Now()

// Module answers last-activity queries to the server.
type Module struct {
	// Started is when the server started; the zero value means when the
	// process started.
	Started time.Time
	// Now returns the current time; nil means time.Now (tests set it).
	Now func() time.Time
}

// Name implements hook.Module.
func (Module) Name() string { return "lastactivity" }

// Register implements hook.Module.
func (m Module) Register(r *hook.Registrar) error {
	r.IQ(hook.PhaseBound, hook.IQGet, hook.ToHost, NS, "query", m.uptime)
	r.DiscoFeature(NS)
	return nil
}

// uptime answers with the server's uptime, in whole seconds (XEP-0012 §5).
func (m Module) uptime(c *hook.Ctx, _ *hook.Stanza) error {
	start, now := m.Started, time.Now
	if start.IsZero() {
		start = processStart
	}
	if m.Now != nil {
		now = m.Now
	}
	seconds := max(0, int64(now().Sub(start)/time.Second))
	b := append([]byte(`<query xmlns='`+NS+`' seconds='`), strconv.AppendInt(nil, seconds, 10)...)
	c.ReplyResult(append(b, `'/>`...))
	return nil
}
