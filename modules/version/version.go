// Package version implements XEP-0092 Software Version for the server.
package version

import (
	"runtime"

	"github.com/krill-xmpp/krill/router"
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

// Name implements router.Module.
func (Module) Name() string { return "version" }

// Routes implements router.Module.
func (Module) Routes() []router.Route {
	return []router.Route{{Kind: router.IQGet, NS: NS, Local: "query"}}
}

// Features implements router.Module.
func (Module) Features() []string { return []string{NS} }

// HandleIQ implements router.Module. Queries to an account are not the
// server's to answer.
func (m Module) HandleIQ(c *router.Ctx, iq router.IQ) error {
	if iq.To.Localpart() != "" {
		c.ReplyError(iq, "cancel", "service-unavailable")
		return nil
	}
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
	c.ReplyResult(iq, b)
	return nil
}
