package storage

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"sort"
	"time"
)

// ErrRoomNotFound reports that no persistent room has the given name.
var ErrRoomNotFound = errors.New("storage: room not found")

// MUCRoom is a persistent multi-user chat room (XEP-0045): what survives a
// restart. Occupants, history and subject live in memory only.
type MUCRoom struct {
	// Room is the room's localpart.
	Room string
	// Config is the room configuration as the module encodes it; the
	// store keeps it opaque.
	Config []byte
	// Public lists the room in the service's disco#items.
	Public bool
	// Creator is the bare JID that created the room, for the per-user
	// limit of rooms.
	Creator string
	// Affiliations maps bare JIDs to their affiliation ("owner", "admin",
	// "member", "outcast"); none is not stored.
	Affiliations map[string]string
	// Nicks maps bare JIDs to the nickname they reserved by registering
	// with the room (XEP-0045 7.10); kept with their affiliation.
	Nicks map[string]string
	// ArchiveDays is how many days the room's message archive keeps a
	// message; 0 follows the service's retention. Kept in a column of
	// its own so that the retention job finds the rooms without
	// reading every configuration.
	ArchiveDays int
}

// MUC is the store of persistent rooms. Implementations are safe for
// concurrent use; calls block.
type MUC interface {
	// MUCRoom returns a persistent room with its affiliations, or
	// ErrRoomNotFound.
	MUCRoom(ctx context.Context, room string) (MUCRoom, error)
	// SaveMUCRoom creates or replaces a room's configuration, public
	// flag and creator; affiliations are left as they are.
	SaveMUCRoom(ctx context.Context, r MUCRoom) error
	// DeleteMUCRoom removes a room and its affiliations; a room that
	// does not exist is not an error.
	DeleteMUCRoom(ctx context.Context, room string) error
	// SetMUCAffiliation sets the affiliation of a bare JID in a room;
	// "none" or "" removes it.
	SetMUCAffiliation(ctx context.Context, room, jid, affiliation, reason string) error
	// ReserveMUCNick sets the affiliation of a bare JID in a room
	// together with the nickname it reserves (XEP-0045 7.10); "" drops
	// the reservation and keeps the affiliation.
	ReserveMUCNick(ctx context.Context, room, jid, affiliation, nick string) error
	// MUCRoomsCreatedBy counts the persistent rooms creator created.
	MUCRoomsCreatedBy(ctx context.Context, creator string) (int, error)
	// PublicMUCRooms returns the names of the public persistent rooms,
	// sorted, at most limit of them.
	PublicMUCRooms(ctx context.Context, limit int) ([]string, error)
	// MUCSecret returns the service's secret (32 random bytes, hex),
	// created on first use and kept from then on.
	MUCSecret(ctx context.Context) (string, error)
	// ExpireRoomArchives deletes, from the archives of the persistent
	// rooms with a retention of their own (ArchiveDays > 0), at most
	// limit messages older than that many days: those whose archive ID
	// is below now - days*perDay. A room's archive is keyed by its bare
	// JID, the room's name followed by suffix ("@" and the service's
	// domain).
	ExpireRoomArchives(ctx context.Context, suffix string, now, perDay int64, limit int) (int, error)
}

var _ MUC = (*SQL)(nil)

// MUCRoom implements [MUC.MUCRoom].
func (s *SQL) MUCRoom(ctx context.Context, room string) (MUCRoom, error) {
	r := MUCRoom{Room: room, Affiliations: map[string]string{}, Nicks: map[string]string{}}
	var public int64
	var days int64
	err := s.read.QueryRowContext(ctx, s.dialect.rebind(`SELECT config, public, creator, archive_days FROM muc_rooms WHERE room = ?`), room).
		Scan(&r.Config, &public, &r.Creator, &days)
	r.ArchiveDays = int(days)
	if errors.Is(err, sql.ErrNoRows) {
		return MUCRoom{}, fmt.Errorf("%w: %q", ErrRoomNotFound, room)
	}
	if err != nil {
		return MUCRoom{}, fmt.Errorf("storage: room %q: %w", room, err)
	}
	r.Public = public != 0
	rows, err := s.read.QueryContext(ctx, s.dialect.rebind(`SELECT jid, affiliation, nick FROM muc_affiliations WHERE room = ?`), room)
	if err != nil {
		return MUCRoom{}, fmt.Errorf("storage: affiliations of room %q: %w", room, err)
	}
	defer rows.Close()
	for rows.Next() {
		var j, a, n string
		if err := rows.Scan(&j, &a, &n); err != nil {
			return MUCRoom{}, fmt.Errorf("storage: affiliations of room %q: %w", room, err)
		}
		r.Affiliations[j] = a
		if n != "" {
			r.Nicks[j] = n
		}
	}
	if err := rows.Err(); err != nil {
		return MUCRoom{}, fmt.Errorf("storage: affiliations of room %q: %w", room, err)
	}
	return r, nil
}

// SaveMUCRoom implements [MUC.SaveMUCRoom].
func (s *SQL) SaveMUCRoom(ctx context.Context, r MUCRoom) error {
	if !validText(r.Room) || !validBytes(r.Config) || !validText(r.Creator) || r.Room == "" {
		return fmt.Errorf("%w: room %q", ErrInvalidText, r.Room)
	}
	public := int64(0)
	if r.Public {
		public = 1
	}
	_, err := s.write.ExecContext(ctx, s.dialect.rebind(`INSERT INTO muc_rooms (room, config, public, creator, updated_at, archive_days) VALUES (?, ?, ?, ?, ?, ?)
		ON CONFLICT (room) DO UPDATE SET config = excluded.config, public = excluded.public, creator = excluded.creator,
		updated_at = excluded.updated_at, archive_days = excluded.archive_days`),
		r.Room, string(r.Config), public, r.Creator, time.Now().Unix(), int64(max(r.ArchiveDays, 0)))
	if err != nil {
		return fmt.Errorf("storage: save room %q: %w", r.Room, err)
	}
	return nil
}

// DeleteMUCRoom implements [MUC.DeleteMUCRoom].
func (s *SQL) DeleteMUCRoom(ctx context.Context, room string) error {
	err := s.inTx(ctx, s.write, nil, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, s.dialect.rebind(`DELETE FROM muc_affiliations WHERE room = ?`), room); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, s.dialect.rebind(`DELETE FROM muc_rooms WHERE room = ?`), room)
		return err
	})
	if err != nil {
		return fmt.Errorf("storage: delete room %q: %w", room, err)
	}
	return nil
}

// SetMUCAffiliation implements [MUC.SetMUCAffiliation].
func (s *SQL) SetMUCAffiliation(ctx context.Context, room, jid, affiliation, reason string) error {
	if !validText(room) || !validText(jid) || !validText(reason) || !validText(affiliation) {
		return fmt.Errorf("%w: affiliation of %q in %q", ErrInvalidText, jid, room)
	}
	var err error
	if affiliation == "" || affiliation == "none" {
		_, err = s.write.ExecContext(ctx, s.dialect.rebind(`DELETE FROM muc_affiliations WHERE room = ? AND jid = ?`), room, jid)
	} else {
		_, err = s.write.ExecContext(ctx, s.dialect.rebind(`INSERT INTO muc_affiliations (room, jid, affiliation, reason) VALUES (?, ?, ?, ?)
			ON CONFLICT (room, jid) DO UPDATE SET affiliation = excluded.affiliation, reason = excluded.reason,
			nick = CASE WHEN excluded.affiliation = 'outcast' THEN '' ELSE muc_affiliations.nick END`), room, jid, affiliation, reason)
	}
	if err != nil {
		return fmt.Errorf("storage: affiliation of %q in %q: %w", jid, room, err)
	}
	return nil
}

// ReserveMUCNick implements [MUC.ReserveMUCNick]. An outcast reserves
// nothing: a ban drops the reservation (SetMUCAffiliation), and so does
// giving up the affiliation (its row is deleted).
func (s *SQL) ReserveMUCNick(ctx context.Context, room, jid, affiliation, nick string) error {
	if !validText(room) || !validText(jid) || !validText(affiliation) || !validText(nick) ||
		affiliation == "" || affiliation == "none" || (affiliation == "outcast" && nick != "") {
		return fmt.Errorf("%w: nickname of %q in %q", ErrInvalidText, jid, room)
	}
	_, err := s.write.ExecContext(ctx, s.dialect.rebind(`INSERT INTO muc_affiliations (room, jid, affiliation, reason, nick) VALUES (?, ?, ?, '', ?)
		ON CONFLICT (room, jid) DO UPDATE SET affiliation = excluded.affiliation, nick = excluded.nick`), room, jid, affiliation, nick)
	if err != nil {
		return fmt.Errorf("storage: nickname of %q in %q: %w", jid, room, err)
	}
	return nil
}

// MUCRoomsCreatedBy implements [MUC.MUCRoomsCreatedBy].
func (s *SQL) MUCRoomsCreatedBy(ctx context.Context, creator string) (int, error) {
	var n int
	if err := s.read.QueryRowContext(ctx, s.dialect.rebind(`SELECT COUNT(*) FROM muc_rooms WHERE creator = ?`), creator).Scan(&n); err != nil {
		return 0, fmt.Errorf("storage: rooms of %q: %w", creator, err)
	}
	return n, nil
}

// PublicMUCRooms implements [MUC.PublicMUCRooms].
func (s *SQL) PublicMUCRooms(ctx context.Context, limit int) ([]string, error) {
	rows, err := s.read.QueryContext(ctx, s.dialect.rebind(`SELECT room FROM muc_rooms WHERE public = 1 ORDER BY room LIMIT ?`), limit)
	if err != nil {
		return nil, fmt.Errorf("storage: public rooms: %w", err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var r string
		if err := rows.Scan(&r); err != nil {
			return nil, fmt.Errorf("storage: public rooms: %w", err)
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("storage: public rooms: %w", err)
	}
	sort.Strings(out) // byte order whatever the collation
	return out, nil
}

// MUCSecret implements [MUC.MUCSecret]: the first caller's random value
// wins, and every later call returns it.
func (s *SQL) MUCSecret(ctx context.Context) (string, error) {
	var b [32]byte
	_, _ = rand.Read(b[:])
	if _, err := s.write.ExecContext(ctx, s.dialect.rebind(`INSERT INTO muc_service (name, value) VALUES ('occupant_id_secret', ?) ON CONFLICT (name) DO NOTHING`),
		hex.EncodeToString(b[:])); err != nil {
		return "", fmt.Errorf("storage: muc secret: %w", err)
	}
	var v string
	if err := s.write.QueryRowContext(ctx, `SELECT value FROM muc_service WHERE name = 'occupant_id_secret'`).Scan(&v); err != nil {
		return "", fmt.Errorf("storage: muc secret: %w", err)
	}
	return v, nil
}

// ExpireRoomArchives implements [MUC.ExpireRoomArchives]: one statement
// for every room, so that many rooms with a retention cost one bounded
// delete per run, not one per room.
func (s *SQL) ExpireRoomArchives(ctx context.Context, suffix string, now, perDay int64, limit int) (int, error) {
	res, err := s.write.ExecContext(ctx, s.dialect.rebind(`DELETE FROM mam_messages WHERE (username, id) IN
		(SELECT m.username, m.id FROM mam_messages m JOIN muc_rooms r ON m.username = r.room || ?
		WHERE r.archive_days > 0 AND m.id < ? - r.archive_days * ? LIMIT ?)`), suffix, now, perDay, limit)
	if err != nil {
		return 0, fmt.Errorf("storage: expire room archives: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, fmt.Errorf("storage: expire room archives: %w", err)
	}
	return int(n), nil
}
