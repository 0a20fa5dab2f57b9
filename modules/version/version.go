// Package version implements XEP-0092 Software Version for the server.
package version

import (
	"runtime"

	"github.com/krill-xmpp/krill/hook"
	"github.com/krill-xmpp/krill/stanza"
)

// NS is the XEP-0092 namespace.
const NS = "jabber:iq:version"

// Module answers software-version queries addressed to the server. The
// zero value reports the name "Krill", version "dev" and no OS.
type Module struct {
	// Software is the name reported; "" means "Krill".
	Software string
	// Version string; "" means "dev".
	Version string
	// ShowOS adds the operating system, which XEP-0092 lets a server keep
	// private: off by default.
	ShowOS bool
}

// Name implements hook.Module.
func (Module) Name() string { return "version" }

// Register implements hook.Module. Queries to an account are not the
// server's to answer: the core refuses them, no handler being registered.
func (m Module) Register(r *hook.Registrar) error {
	r.IQ(hook.PhaseBound, hook.IQGet, hook.ToNone|hook.ToHost, NS, "query", m.handle)
	r.IQ(hook.PhaseRemote, hook.IQGet, hook.ToHost, NS, "query", m.handle)
	r.DiscoFeature(NS)
	return nil
}

func (m Module) handle(c *hook.Ctx, _ *hook.Stanza) error {
	name, ver := m.Software, m.Version
	if name == "" {
		name = "Krill"
	}
	if ver == "" {
		ver = "dev"
	}
	b := []byte(`<query xmlns='` + NS + `'><name>`)
	b = stanza.AppendEscaped(b, name)
	b = append(b, `</name><version>`...)
	b = stanza.AppendEscaped(b, ver)
	b = append(b, `</version>`...)
	if m.ShowOS {
		b = append(b, `<os>`...)
		b = stanza.AppendEscaped(b, runtime.GOOS)
		b = append(b, `</os>`...)
	}
	b = append(b, `</query>`...)
	c.ReplyResult(b)
	return nil
}
