// Package avatar implements XEP-0398, user avatar to vCard-based avatars
// conversion, and keeps XEP-0153 working: the server adds the SHA-1 of the
// account's avatar, from its XEP-0084 metadata node or else from the PHOTO
// of its vCard, to every available presence that does not carry its own
// <photo/> (XEP-0398 section 4), and converts an avatar published with
// XEP-0084 into the vCard's PHOTO (section 3.1), so that vCard-only
// clients see it.
//
// The hash of each account with a bound session is kept in one map for the
// server; a session costs a flag bit (its account's hash was loaded), set
// by a job at resource binding that reads storage while the client waits,
// unless the map holds the account's avatar hash already (another session
// of it is bound, or is being replaced by this one; standalone only).
package avatar

import (
	"bytes"
	"context"
	"crypto/sha1"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"strings"
	"sync"

	"go.uber.org/zap"

	"github.com/krill-xmpp/krill/hook"
	"github.com/krill-xmpp/krill/stanza"
	"github.com/krill-xmpp/krill/storage"
)

// Namespaces.
const (
	NSUpdate     = "vcard-temp:x:update"
	NSConversion = "urn:xmpp:pep-vcard-conversion:0"
	NodeMetadata = "urn:xmpp:avatar:metadata"
	NodeData     = "urn:xmpp:avatar:data"
)

// Store reads the avatar's sources and writes the converted vCard;
// storage.SQL implements it.
type Store interface {
	PEPItems(ctx context.Context, owner, node string, ids []string, max int) ([]storage.PEPItem, error)
	VCard(ctx context.Context, user string) ([]byte, error)
	SetVCard(ctx context.Context, user string, vcard []byte) error
}

// Module adds avatar hashes to presence. Store must be set. Use it by
// pointer; wire Published to the pep module's OnPublish and VCardSet to
// the vcard module's OnSet.
type Module struct {
	Store Store

	loaded hook.Flag
	mu     sync.RWMutex
	hashes map[string]string // localpart → hex SHA-1; absent: none, or not loaded
}

// Name implements hook.Module.
func (*Module) Name() string { return "avatar" }

// Register implements hook.Module.
func (m *Module) Register(r *hook.Registrar) error {
	if m.Store == nil {
		return errors.New("avatar: Store must be set")
	}
	m.hashes = make(map[string]string)
	m.loaded = r.Flag()
	r.On(hook.Bound, m.bound)
	r.On(hook.Closed, m.closed)
	r.Stanza(hook.Presence, hook.ToNone|hook.ToBare|hook.ToFull, hook.Pre, m.presence)
	r.AccountFeature(NSConversion)
	return nil
}

// hash returns the account's avatar hash, "" for none.
func (m *Module) hash(user string) string {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.hashes[user]
}

func (m *Module) setHash(user, h string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if h == "" {
		delete(m.hashes, user)
	} else {
		m.hashes[user] = h
	}
}

// known reports whether the account's avatar hash is held: loaded by a
// session of this node and kept up to date since. An account without an
// avatar holds no entry (an entry per account would be memory per
// session), so its logins read storage each time.
func (m *Module) known(user string) bool {
	m.mu.RLock()
	defer m.mu.RUnlock()
	_, ok := m.hashes[user]
	return ok
}

// bound loads the account's hash before the session's first stanza is
// read (the job pauses its input).
func (m *Module) bound(c *hook.Ctx, _ hook.Event) hook.Verdict {
	if c.Conn == nil {
		return hook.Continue
	}
	sess, log := c.Session, c.Log
	user := sess.Local()
	if m.known(user) && c.Host.Config().Cluster.NATSURL == "" {
		// Held for another session of the account, and kept up to
		// date while one is bound (Published, VCardSet; closed drops it
		// with the last session): the read is not repeated, which a
		// reconnecting client would pay at each login (its previous
		// session, replaced, is still closing). In a cluster another
		// node may have changed the avatar: there the login reads.
		sess.Set(m.loaded, true)
		return hook.Continue
	}
	c.Conn.Async(func(ctx context.Context) func(*hook.Ctx) {
		h, err := m.load(ctx, user)
		if err != nil {
			log.Warn("avatar hash not loaded", zap.String("user", user), zap.Error(err))
			return nil
		}
		m.setHash(user, h)
		sess.Set(m.loaded, true)
		return nil
	}, nil)
	return hook.Continue
}

// closed drops the hash of an account whose last session went.
func (m *Module) closed(c *hook.Ctx, _ hook.Event) hook.Verdict {
	user, others := c.Session.Local(), false
	c.Host.Sessions(user, func(s hook.Session) { others = others || s != c.Session })
	if !others {
		m.setHash(user, "")
	}
	return hook.Continue
}

// load reads the hash: the newest XEP-0084 metadata's first info without a
// url, else the vCard PHOTO's SHA-1.
func (m *Module) load(ctx context.Context, user string) (string, error) {
	items, err := m.Store.PEPItems(ctx, user, NodeMetadata, nil, 1)
	if err != nil {
		return "", err
	}
	if len(items) == 1 {
		h, _ := metadataHash(items[0].Payload)
		return h, nil // an empty metadata disables the avatar
	}
	card, err := m.Store.VCard(ctx, user)
	if err != nil {
		return "", err
	}
	return photoHash(card), nil
}

// metadataHash returns the id of the first <info/> of a XEP-0084 metadata
// payload that does not point to a URL, and the info itself.
func metadataHash(payload []byte) (id string, info []byte) {
	stanza.Children(payload, func(ch []byte) bool {
		t, err := stanza.ParseStartTag(ch)
		if err != nil || string(t.Local()) != "info" {
			return true
		}
		if _, url := t.AttrString("url"); url {
			return true
		}
		id, _ = t.AttrString("id")
		info = ch
		return false
	})
	return id, info
}

// photoHash is the hex SHA-1 of a vCard's PHOTO/BINVAL, "" without one.
func photoHash(card []byte) string {
	bin := element(element(card, "PHOTO"), "BINVAL")
	if bin == nil {
		return ""
	}
	text, err := stanza.Text(bin)
	if err != nil {
		return ""
	}
	raw, err := base64.StdEncoding.DecodeString(strings.Join(strings.Fields(text), ""))
	if err != nil || len(raw) == 0 {
		return ""
	}
	sum := sha1.Sum(raw)
	return hex.EncodeToString(sum[:])
}

// element returns the first child of elem named local, nil when none.
func element(elem []byte, local string) []byte {
	if elem == nil {
		return nil
	}
	var out []byte
	stanza.Children(elem, func(ch []byte) bool {
		if t, err := stanza.ParseStartTag(ch); err == nil && string(t.Local()) == local {
			out = ch
			return false
		}
		return true
	})
	return out
}

// presence adds the hash to an available presence (XEP-0398 section 4):
// one without an x:update gets one, an x:update without <photo/> is
// replaced, a <photo/> the client set is left alone.
func (m *Module) presence(c *hook.Ctx, st *hook.Stanza) hook.Verdict {
	if st.Type != "" || !c.Session.Has(m.loaded) {
		return hook.Continue
	}
	h := m.hash(c.Session.Local())
	if h == "" {
		return hook.Continue
	}
	raw := st.Raw
	var update []byte
	if bytes.Contains(raw, []byte(NSUpdate)) {
		stanza.Children(raw, func(ch []byte) bool {
			t, err := stanza.ParseStartTag(ch)
			if err == nil && string(t.Local()) == "x" {
				if ns, _ := t.AttrString("xmlns"); ns == NSUpdate {
					update = ch
					return false
				}
			}
			return true
		})
	}
	if update != nil && element(update, "photo") != nil {
		return hook.Continue
	}
	x := `<x xmlns='` + NSUpdate + `'><photo>` + h + `</photo></x>`
	var b []byte
	if update != nil {
		i := bytes.Index(raw, update)
		b = make([]byte, 0, len(raw)+len(x))
		b = append(append(append(b, raw[:i]...), x...), raw[i+len(update):]...)
	} else if st.Tag.SelfClosing() {
		b = make([]byte, 0, len(raw)+len(x)+16)
		b = append(b, raw[:len(raw)-2]...)
		b = append(b, '>')
		b = append(b, x...)
		b = append(b, `</presence>`...)
	} else {
		end := bytes.LastIndexByte(raw, '<')
		b = make([]byte, 0, len(raw)+len(x))
		b = append(append(append(b, raw[:end]...), x...), raw[end:]...)
	}
	tag, err := stanza.ParseStartTag(b)
	if err != nil {
		return hook.Continue
	}
	st.Raw, st.Tag = b, tag
	return hook.Continue
}

// Published follows a publish to the account's metadata node: the new
// hash for presence, and the image into the vCard (XEP-0398 3.1). It runs
// on a worker (the pep module's OnPublish).
func (m *Module) Published(ctx context.Context, log *zap.Logger, user, node string, payload []byte) {
	if node != NodeMetadata {
		return
	}
	id, info := metadataHash(payload)
	m.setHash(user, id)
	if id == "" {
		return
	}
	items, err := m.Store.PEPItems(ctx, user, NodeData, []string{id}, 0)
	if err != nil || len(items) == 0 {
		return
	}
	data, err := stanza.Text(items[0].Payload)
	if err != nil {
		return
	}
	typ := ""
	if t, err := stanza.ParseStartTag(info); err == nil {
		typ, _ = t.AttrString("type")
	}
	card, err := m.Store.VCard(ctx, user)
	if err != nil {
		log.Warn("vcard read for avatar conversion failed", zap.String("user", user), zap.Error(err))
		return
	}
	if err := m.Store.SetVCard(ctx, user, withPhoto(card, typ, data)); err != nil {
		log.Warn("avatar conversion to vcard failed", zap.String("user", user), zap.Error(err))
	}
}

// withPhoto returns card with its PHOTO replaced by one of type typ and
// base64 data.
func withPhoto(card []byte, typ, data string) []byte {
	photo := append([]byte(`<PHOTO><TYPE>`), stanza.AppendEscaped(nil, typ)...)
	photo = append(photo, `</TYPE><BINVAL>`...)
	photo = append(photo, stanza.AppendEscaped(nil, data)...)
	photo = append(photo, `</BINVAL></PHOTO>`...)
	if len(card) == 0 {
		return append(append([]byte(`<vCard xmlns='vcard-temp'>`), photo...), `</vCard>`...)
	}
	if old := element(card, "PHOTO"); old != nil {
		i := bytes.Index(card, old)
		return append(append(append([]byte(nil), card[:i]...), photo...), card[i+len(old):]...)
	}
	if t, err := stanza.ParseStartTag(card); err == nil && t.SelfClosing() {
		out := append([]byte(nil), card[:len(card)-2]...)
		out = append(append(append(out, '>'), photo...), `</vCard>`...)
		return out
	}
	end := bytes.LastIndexByte(card, '<')
	return append(append(append([]byte(nil), card[:end]...), photo...), card[end:]...)
}

// VCardSet follows a vCard set: its PHOTO is the hash unless a XEP-0084
// avatar is published. It runs on a worker (the vcard module's OnSet).
func (m *Module) VCardSet(ctx context.Context, user string, card []byte) {
	items, err := m.Store.PEPItems(ctx, user, NodeMetadata, nil, 1)
	if err != nil || len(items) > 0 {
		return
	}
	m.setHash(user, photoHash(card))
}
