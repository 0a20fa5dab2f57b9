package sm

import (
	"crypto/subtle"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/krill-xmpp/krill/hook"
)

// Stream management in a cluster: a client may resume on any node; the
// node that holds the session exports its state (counters, token, queue)
// and the resuming node imports it (hook.Migrator).

var _ hook.Migrator = (*Module)(nil)

// stateVersion is the first byte of an exported state: nodes of a rolling
// upgrade refuse a form they do not read (item-not-found, the client logs
// in again) rather than misread it.
const stateVersion = 1

// errState is an exported state this node cannot read.
var errState = errors.New("sm: malformed exported state")

// Resumes implements hook.Migrator.
func (m *Module) Resumes(s hook.Session) bool {
	st := m.get(s)
	return st != nil && st.resumable && !st.overflow
}

// Resumable implements hook.Migrator.
func (m *Module) Resumable(local, previd string) hook.Session {
	var tok token
	if n, err := base64.RawURLEncoding.Decode(tok[:], []byte(previd)); err != nil || n != len(tok) || len(previd) != tokenLen {
		return nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for e := m.accounts[local]; e != nil; e = e.anext {
		if subtle.ConstantTimeCompare(e.tok[:], tok[:]) == 1 {
			return e.sess
		}
	}
	return nil
}

// Export implements hook.Migrator: [version][in][acked][timeout][token]
// [stanzas] then per stanza [length][queued at], then the queue's bytes.
// The session's state stays until Forget (or its end) but is parked: what
// is written to it from now is queued only.
func (m *Module) Export(s hook.Session) []byte {
	st := m.get(s)
	if st == nil || !st.resumable {
		return nil
	}
	if !st.parked {
		st.parked, st.unreq = true, 0
		m.parkedNow.Add(1)
		m.parkedBytes.Add(int64(len(st.buf)))
	}
	return encodeState(st)
}

// encodeState is Export's form of st.
func encodeState(st *state) []byte {
	b := make([]byte, 0, 1+12+len(st.tok)+4+8*len(st.ents)+len(st.buf))
	b = append(b, stateVersion)
	b = binary.BigEndian.AppendUint32(b, st.in)
	b = binary.BigEndian.AppendUint32(b, st.acked)
	b = binary.BigEndian.AppendUint32(b, st.timeout)
	b = append(b, st.tok[:]...)
	b = binary.BigEndian.AppendUint32(b, uint32(len(st.ents)))
	for _, e := range st.ents {
		b = binary.BigEndian.AppendUint32(b, e.n)
		b = binary.BigEndian.AppendUint32(b, e.at)
	}
	return append(b, st.buf...)
}

// Forget implements hook.Migrator.
func (m *Module) Forget(s hook.Session) {
	st := m.get(s)
	if st == nil {
		return
	}
	s.SetSlot(m.slot, nil)
	m.mu.Lock()
	m.unparkLocked(st)
	if st.sess == s {
		m.leaveLocked(st)
	}
	m.mu.Unlock()
	if st.parked {
		m.parkedNow.Add(-1)
		m.parkedBytes.Add(-int64(len(st.buf)))
	}
	m.migratedOut.Add(1)
}

// Import implements hook.Migrator: the state is kept as a parked
// session's until the resumption's continuation takes it.
func (m *Module) Import(c *hook.Ctx, b []byte) error {
	st, err := decodeState(b)
	if err != nil {
		return err
	}
	if m.host.Load() == nil {
		m.host.Store(&hostRef{c.Host})
	}
	c.Session.SetSlot(m.slot, st)
	m.mu.Lock()
	st.sess = c.Session
	m.parkLocked(st)
	m.mu.Unlock()
	m.parkedNow.Add(1)
	m.parkedBytes.Add(int64(len(st.buf)))
	m.migratedIn.Add(1)
	return nil
}

// decodeState reads Export's form.
func decodeState(b []byte) (*state, error) {
	const head = 1 + 12 + len(token{}) + 4
	if len(b) < head || b[0] != stateVersion {
		return nil, errState
	}
	st := &state{parked: true, resumable: true}
	st.in = binary.BigEndian.Uint32(b[1:])
	st.acked = binary.BigEndian.Uint32(b[5:])
	st.timeout = binary.BigEndian.Uint32(b[9:])
	copy(st.tok[:], b[13:])
	n := binary.BigEndian.Uint32(b[13+len(st.tok):])
	rest := b[head:]
	if uint64(n)*8 > uint64(len(rest)) {
		return nil, errState
	}
	total := 0
	if n > 0 {
		st.ents = make([]ent, n)
	}
	for i := range st.ents {
		st.ents[i] = ent{n: binary.BigEndian.Uint32(rest[8*i:]), at: binary.BigEndian.Uint32(rest[8*i+4:])}
		total += int(st.ents[i].n)
	}
	rest = rest[8*n:]
	if total != len(rest) {
		return nil, fmt.Errorf("%w: queue of %d bytes, entries of %d", errState, len(rest), total)
	}
	if len(rest) > 0 {
		st.buf = append([]byte(nil), rest...)
	}
	return st, nil
}
