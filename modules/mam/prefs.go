package mam

import (
	"context"
	"errors"
	"sync"

	"go.uber.org/zap"
	"mellium.im/xmpp/jid"

	"github.com/krill-xmpp/krill/hook"
	"github.com/krill-xmpp/krill/stanza"
	"github.com/krill-xmpp/krill/storage"
)

// Caps of one account's preferences, which are held in memory.
const (
	// MaxPrefsJIDs caps each of the always and never lists.
	MaxPrefsJIDs = 1000
	// MaxPrefsBytes caps the bytes of the JIDs of both lists together.
	MaxPrefsBytes = 32 << 10
)

// prefs are one account's stored preferences, as the loop consults them
// for every message.
type prefs struct {
	mode          storage.ArchiveMode
	always, never map[string]struct{}
	stored        storage.ArchivePrefs
}

func newPrefs(p storage.ArchivePrefs) *prefs {
	out := &prefs{mode: p.Default, stored: p, always: make(map[string]struct{}, len(p.Always)), never: make(map[string]struct{}, len(p.Never))}
	for _, j := range p.Always {
		out.always[j] = struct{}{}
	}
	for _, j := range p.Never {
		out.never[j] = struct{}{}
	}
	return out
}

// prefsCache holds the preferences of the accounts that stored some (most
// never do): archiving decides on the sender's loop, for the sender and
// for a recipient who may be offline, so it cannot wait for storage. It is
// loaded whole at start-up and kept in step by the prefs set handler. (A
// cluster of servers would need the changes of the others too.)
type prefsCache struct {
	mu sync.RWMutex
	m  map[string]*prefs
}

func (c *prefsCache) load(ctx context.Context, s Store) error {
	m := make(map[string]*prefs)
	if err := s.AllArchivePrefs(ctx, func(user string, p storage.ArchivePrefs) { m[user] = newPrefs(p) }); err != nil {
		return err
	}
	c.mu.Lock()
	c.m = m
	c.mu.Unlock()
	return nil
}

func (c *prefsCache) get(user string) *prefs {
	c.mu.RLock()
	p := c.m[user]
	c.mu.RUnlock()
	return p
}

func (c *prefsCache) set(user string, p storage.ArchivePrefs) {
	c.mu.Lock()
	if c.m == nil {
		c.m = make(map[string]*prefs)
	}
	c.m[user] = newPrefs(p)
	c.mu.Unlock()
}

func (c *prefsCache) drop(user string) {
	c.mu.Lock()
	delete(c.m, user)
	c.mu.Unlock()
}

// refresh reads user's stored preferences again, so that the cache
// follows changes made outside this server (an account removed with the
// krill command, or registered again under the same name). Runs on a
// worker.
func (c *prefsCache) refresh(ctx context.Context, s Store, user string) error {
	p, ok, err := s.ArchivePrefs(ctx, user)
	switch {
	case err != nil:
		return err
	case ok:
		c.set(user, p)
	default:
		c.drop(user)
	}
	return nil
}

// decision is whether a message goes into an archive.
type decision uint8

const (
	skip decision = iota
	store
	// ifRoster: store if the other party is in the owner's roster,
	// which the writer looks up.
	ifRoster
)

// decide applies user's preferences (or the default mode) to a message
// with peer, a bare JID (XEP-0441: the lists win over the default, never
// over always).
func (m *Module) decide(mode storage.ArchiveMode, user, peer string) decision {
	if p := m.prefs.get(user); p != nil {
		if _, ok := p.never[peer]; ok {
			return skip
		}
		if _, ok := p.always[peer]; ok {
			return store
		}
		mode = p.mode
	}
	switch mode {
	case storage.ArchiveAlways:
		return store
	case storage.ArchiveRoster:
		return ifRoster
	}
	return skip
}

// defaultMode returns the configured default mode.
func defaultMode(c *hook.Ctx) storage.ArchiveMode {
	mode, ok := storage.ParseArchiveMode(c.Host.Config().MAM.Default)
	if !ok {
		return storage.ArchiveAlways
	}
	return mode
}

// appendPrefs appends the <prefs/> element of p.
func appendPrefs(b []byte, p storage.ArchivePrefs) []byte {
	b = append(b, `<prefs xmlns='`+NS+`' default='`...)
	b = append(b, p.Default.String()...)
	b = append(b, `'>`...)
	for _, list := range []struct {
		name string
		jids []string
	}{{"always", p.Always}, {"never", p.Never}} {
		b = append(b, '<')
		b = append(b, list.name...)
		b = append(b, '>')
		for _, j := range list.jids {
			b = append(b, `<jid>`...)
			b = stanza.AppendEscaped(b, j)
			b = append(b, `</jid>`...)
		}
		b = append(b, `</`...)
		b = append(b, list.name...)
		b = append(b, '>')
	}
	return append(b, `</prefs>`...)
}

// prefsGet answers a preferences request (XEP-0441 §3.1, formerly
// XEP-0313 §6).
func (m *Module) prefsGet(c *hook.Ctx, st *hook.Stanza) error {
	if !own(c, st) {
		return nil
	}
	p := storage.ArchivePrefs{Default: defaultMode(c)}
	if cached := m.prefs.get(c.Session.Local()); cached != nil {
		p = cached.stored
	}
	c.ReplyResult(appendPrefs(nil, p))
	return nil
}

// errPrefs is a malformed preferences set.
var errPrefs = errors.New("mam: bad prefs")

// parsePrefs parses a <prefs/> set: a default and two lists of JIDs,
// normalised and reduced to bare JIDs (the lists match the other party's
// bare JID).
func parsePrefs(el []byte) (storage.ArchivePrefs, string, error) {
	tag, err := stanza.ParseStartTag(el)
	if err != nil {
		return storage.ArchivePrefs{}, "malformed prefs", errPrefs
	}
	def, _ := tag.AttrString("default")
	mode, ok := storage.ParseArchiveMode(def)
	if !ok {
		return storage.ArchivePrefs{}, "default must be always, roster or never", errPrefs
	}
	p := storage.ArchivePrefs{Default: mode}
	var why string
	size := 0
	ok = stanza.Children(el, func(list []byte) bool {
		lt, err := stanza.ParseStartTag(list)
		if err != nil {
			why = "malformed list"
			return false
		}
		var dst *[]string
		switch string(lt.Local()) {
		case "always":
			dst = &p.Always
		case "never":
			dst = &p.Never
		default:
			return true
		}
		seen := map[string]bool{}
		return stanza.Children(list, func(item []byte) bool {
			it, err := stanza.ParseStartTag(item)
			if err != nil || string(it.Local()) != "jid" {
				return true
			}
			text, err := stanza.Text(item)
			if err != nil {
				why = "malformed jid"
				return false
			}
			j, err := jid.Parse(text)
			if err != nil {
				why = "bad jid " + text
				return false
			}
			bare := j.Bare().String()
			if seen[bare] {
				return true
			}
			seen[bare] = true
			if len(*dst) == MaxPrefsJIDs {
				why = "too many jids"
				return false
			}
			if size += len(bare); size > MaxPrefsBytes {
				why = "jids too long in all"
				return false
			}
			*dst = append(*dst, bare)
			return true
		}) && why == ""
	})
	if !ok || why != "" {
		if why == "" {
			why = "malformed prefs"
		}
		return storage.ArchivePrefs{}, why, errPrefs
	}
	return p, "", nil
}

// prefsSet stores new preferences and answers with them (XEP-0441 §3.2).
func (m *Module) prefsSet(c *hook.Ctx, st *hook.Stanza) error {
	if !own(c, st) {
		return nil
	}
	p, why, err := parsePrefs(st.Payload)
	if err != nil {
		c.ReplyError("modify", "bad-request", why)
		return nil
	}
	user, store, log := c.Session.Local(), m.Store, c.Log
	c.Conn.Async(func(ctx context.Context) func(*hook.Ctx) {
		if err := store.SetArchivePrefs(ctx, user, p); err != nil {
			log.Error("archive preferences not stored", zap.String("user", user), zap.Error(err))
			return func(c *hook.Ctx) { c.ReplyError("wait", "internal-server-error", "") }
		}
		m.prefs.set(user, p)
		return func(c *hook.Ctx) { c.ReplyResult(appendPrefs(nil, p)) }
	}, nil)
	return nil
}
