package storage

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math"
	"strings"
)

// ArchiveMode is a user's default archiving rule (XEP-0313 / XEP-0441
// preferences): what happens to a message with a JID on neither list.
type ArchiveMode uint8

// Archiving modes, as stored (0, 1, 2).
const (
	// ArchiveAlways archives every message.
	ArchiveAlways ArchiveMode = iota
	// ArchiveRoster archives messages with JIDs in the user's roster.
	ArchiveRoster
	// ArchiveNever archives none.
	ArchiveNever
)

// String returns the prefs element's default attribute value.
func (m ArchiveMode) String() string {
	switch m {
	case ArchiveAlways:
		return "always"
	case ArchiveRoster:
		return "roster"
	case ArchiveNever:
		return "never"
	}
	return fmt.Sprintf("mode(%d)", uint8(m))
}

// ParseArchiveMode parses "always", "roster" or "never".
func ParseArchiveMode(s string) (ArchiveMode, bool) {
	switch s {
	case "always":
		return ArchiveAlways, true
	case "roster":
		return ArchiveRoster, true
	case "never":
		return ArchiveNever, true
	}
	return 0, false
}

// ArchivePrefs are a user's archiving preferences.
type ArchivePrefs struct {
	Default ArchiveMode
	// Always and Never are normalised bare JIDs (they hold no newline).
	Always, Never []string
}

// ArchiveRecord is one message to append to one user's archive.
type ArchiveRecord struct {
	// User is the archive's owner: a localpart, or, when Room is set, a
	// MUC room's bare JID (which holds an '@', so it cannot be a
	// localpart: both kinds share mam_messages without colliding).
	User string
	// Room marks the archive of a MUC room (XEP-0313 §6): appended
	// without the account check.
	Room bool
	// ID is the archive ID, unique within the archive and greater than
	// every ID appended to it before.
	ID int64
	// With is the other party's bare JID and WithResource its resource
	// ("" for none).
	With, WithResource string
	// Stanza is the message as archived.
	Stanza []byte
}

// ArchiveItem is a message read from an archive.
type ArchiveItem struct {
	ID     int64
	Stanza []byte
}

// ArchiveQuery selects a page of one user's archive.
type ArchiveQuery struct {
	User string
	// With filters on the other party's bare JID ("" for any);
	// WithResource, when With is set, on its resource too.
	With, WithResource string
	// After and Before are exclusive ID bounds; 0 means none.
	After, Before int64
	// Max is the most items returned.
	Max int
	// Backward returns the items nearest Before (newest first) rather
	// than those nearest After: RSM's <before/>.
	Backward bool
}

// Archive is the XEP-0313 message archive store. Every method honours
// its context.
type Archive interface {
	// AppendArchive appends recs in one transaction. Records of users
	// without an account, and records whose ID the archive already
	// holds, are skipped.
	AppendArchive(ctx context.Context, recs []ArchiveRecord) error
	// ArchivePage returns the items q selects, in ascending ID order
	// whatever the direction.
	ArchivePage(ctx context.Context, q ArchiveQuery) ([]ArchiveItem, error)
	// ArchiveCount counts the items q selects, ignoring Max and
	// Backward, up to limit; exact is false when it stopped there.
	ArchiveCount(ctx context.Context, q ArchiveQuery, limit int) (n int, exact bool, err error)
	// ArchiveItem returns one item of user's archive; ok is false when
	// there is none with that ID.
	ArchiveItem(ctx context.Context, user string, id int64) (it ArchiveItem, ok bool, err error)
	// ArchiveBounds returns the first and last IDs of user's archive;
	// ok is false when it is empty.
	ArchiveBounds(ctx context.Context, user string) (first, last int64, ok bool, err error)
	// ExpireArchive deletes at most limit items, of any user, with an
	// ID below before, and returns how many it deleted.
	ExpireArchive(ctx context.Context, before int64, limit int) (int, error)
	// DeleteArchive deletes at most limit items of user's archive (a
	// destroyed MUC room's) with an ID below before, and returns how
	// many it deleted. The bound spares what a new room of the same
	// name archived since.
	DeleteArchive(ctx context.Context, user string, before int64, limit int) (int, error)
	// ArchivePrefs returns user's stored preferences; ok is false when
	// none are stored.
	ArchivePrefs(ctx context.Context, user string) (p ArchivePrefs, ok bool, err error)
	// SetArchivePrefs stores user's preferences (ErrNotFound when user
	// has no account).
	SetArchivePrefs(ctx context.Context, user string, p ArchivePrefs) error
	// AllArchivePrefs calls fn for every user with stored preferences.
	AllArchivePrefs(ctx context.Context, fn func(user string, p ArchivePrefs)) error
	// InRoster reports whether user's roster has an item for contact (a
	// normalised bare JID).
	InRoster(ctx context.Context, user, contact string) (bool, error)
}

var _ Archive = (*SQL)(nil)

const (
	// The CASTs type the parameters, which PostgreSQL cannot infer in a
	// SELECT list; the WHERE also lets SQLite parse ON CONFLICT after a
	// SELECT.
	queryArchiveAppend = `INSERT INTO mam_messages (username, id, with_jid, with_res, stanza)
		SELECT CAST(? AS TEXT), CAST(? AS BIGINT), CAST(? AS TEXT), CAST(? AS TEXT), CAST(? AS TEXT)
		WHERE EXISTS (SELECT 1 FROM accounts WHERE username = ?)
		ON CONFLICT (username, id) DO NOTHING`
	// A room's archive (ArchiveRecord.Room) has no account to check.
	queryRoomArchiveAppend = `INSERT INTO mam_messages (username, id, with_jid, with_res, stanza)
		VALUES (?, ?, ?, ?, ?) ON CONFLICT (username, id) DO NOTHING`
	queryArchiveDelete = `DELETE FROM mam_messages WHERE (username, id) IN
		(SELECT username, id FROM mam_messages WHERE username = ? AND id < ? LIMIT ?)`
	queryArchiveItem  = `SELECT stanza FROM mam_messages WHERE username = ? AND id = ?`
	queryArchiveFirst = `SELECT id FROM mam_messages WHERE username = ? ORDER BY id LIMIT 1`
	queryArchiveLast  = `SELECT id FROM mam_messages WHERE username = ? ORDER BY id DESC LIMIT 1`
	// Row values select the batch: the same id may, in principle, be in
	// two archives.
	queryArchiveExpire = `DELETE FROM mam_messages WHERE (username, id) IN
		(SELECT username, id FROM mam_messages WHERE id < ? LIMIT ?)`
	queryArchivePrefs    = `SELECT default_mode, always_jids, never_jids FROM mam_prefs WHERE username = ?`
	queryAllArchivePrefs = `SELECT username, default_mode, always_jids, never_jids FROM mam_prefs`
	querySetArchivePrefs = `INSERT INTO mam_prefs (username, default_mode, always_jids, never_jids)
		SELECT CAST(? AS TEXT), CAST(? AS BIGINT), CAST(? AS TEXT), CAST(? AS TEXT)
		WHERE EXISTS (SELECT 1 FROM accounts WHERE username = ?)
		ON CONFLICT (username) DO UPDATE SET default_mode = excluded.default_mode,
		always_jids = excluded.always_jids, never_jids = excluded.never_jids`
	queryInRoster = `SELECT 1 FROM roster_items WHERE username = ? AND contact = ?`
)

// Page query shapes: the 'with' filter (none, bare, full) by direction.
const (
	withNone = iota
	withBare
	withFull
	numWith
)

// archiveWhere returns the WHERE clause of a page or count query of shape
// w in dialect d. For PostgreSQL the bounds are row values over the
// index's columns, alone (with an equality on username beside them, the
// btree starts from the equality and filters the row bound: half the
// archive read for a page in its middle), and the order is the index's
// (orderBy): written as username = ? AND id > ?, the id range bounds the
// id index (retention's) too, which a plan made without statistics, or a
// generic plan, may walk instead, filtering on username, through every
// archive on the server (seen: 0.3 s a page at a million messages). SQLite does not use a row-value range together with
// the username equality, but it prefers the equality and range of the
// primary key to a range of the id index, and the with statements name
// their index.
func archiveWhere(d Dialect, w int) string {
	if d == PostgreSQL {
		switch w {
		case withBare:
			return `(username, with_jid, id) > (?, ?, ?) AND (username, with_jid, id) < (?, ?, ?)`
		case withFull:
			return `(username, with_jid, id) > (?, ?, ?) AND (username, with_jid, id) < (?, ?, ?) AND with_res = ?`
		}
		return `(username, id) > (?, ?) AND (username, id) < (?, ?)`
	}
	switch w {
	case withBare:
		return `username = ? AND with_jid = ? AND id > ? AND id < ?`
	case withFull:
		return `username = ? AND with_jid = ? AND id > ? AND id < ? AND with_res = ?`
	}
	return `username = ? AND id > ? AND id < ?`
}

// mamStmts are the archive's prepared statements. Every page query walks
// the (username, id) or (username, with_jid, id) index from a bound: its
// cost is a descent of the index plus the page (O(log n + page)).
type mamStmts struct {
	appendRec, appendRoom, del          *sql.Stmt
	item, first, last, expire           *sql.Stmt
	prefs, allPrefs, setPrefs, inRoster *sql.Stmt
	pageAsc, pageDesc, count            [numWith]*sql.Stmt
}

func (m *mamStmts) statements(d Dialect) []stmtSpec {
	specs := []stmtSpec{
		{&m.appendRec, true, queryArchiveAppend},
		{&m.appendRoom, true, queryRoomArchiveAppend},
		{&m.del, true, queryArchiveDelete},
		{&m.item, false, queryArchiveItem},
		{&m.first, false, queryArchiveFirst},
		{&m.last, false, queryArchiveLast},
		{&m.expire, true, queryArchiveExpire},
		{&m.prefs, false, queryArchivePrefs},
		{&m.allPrefs, false, queryAllArchivePrefs},
		{&m.setPrefs, true, querySetArchivePrefs},
		{&m.inRoster, false, queryInRoster},
	}
	for w := 0; w < numWith; w++ {
		from := `mam_messages`
		if w != withNone && d == SQLite {
			// Without statistics (no ANALYZE) SQLite walks the
			// primary key's id range and filters on with_jid, which
			// for a rare contact reads the whole archive.
			from += ` INDEXED BY mam_messages_with`
		}
		where := archiveWhere(d, w)
		asc, desc := `id`, `id DESC`
		if d == PostgreSQL {
			asc, desc = `username, id`, `username DESC, id DESC`
			if w != withNone {
				asc, desc = `username, with_jid, id`, `username DESC, with_jid DESC, id DESC`
			}
		}
		specs = append(specs,
			stmtSpec{&m.pageAsc[w], false, `SELECT id, stanza FROM ` + from + ` WHERE ` + where + ` ORDER BY ` + asc + ` LIMIT ?`},
			stmtSpec{&m.pageDesc[w], false, `SELECT id, stanza FROM ` + from + ` WHERE ` + where + ` ORDER BY ` + desc + ` LIMIT ?`},
			// In the index's order, so that the count walks the index
			// from the bound too.
			stmtSpec{&m.count[w], false, `SELECT COUNT(*) FROM (SELECT 1 FROM ` + from + ` WHERE ` + where + ` ORDER BY ` + asc + ` LIMIT ?) t`},
		)
	}
	return specs
}

// archiveArgs returns the shape and the WHERE arguments of q in dialect d
// (see archiveWhere).
func archiveArgs(d Dialect, q ArchiveQuery) (int, []any) {
	after, before := q.After, q.Before
	if before <= 0 {
		before = math.MaxInt64
	}
	if d == PostgreSQL {
		switch {
		case q.With == "":
			return withNone, []any{q.User, after, q.User, before}
		case q.WithResource == "":
			return withBare, []any{q.User, q.With, after, q.User, q.With, before}
		}
		return withFull, []any{q.User, q.With, after, q.User, q.With, before, q.WithResource}
	}
	switch {
	case q.With == "":
		return withNone, []any{q.User, after, before}
	case q.WithResource == "":
		return withBare, []any{q.User, q.With, after, before}
	}
	return withFull, []any{q.User, q.With, after, before, q.WithResource}
}

// AppendArchive implements [Archive.AppendArchive].
func (s *SQL) AppendArchive(ctx context.Context, recs []ArchiveRecord) error {
	if len(recs) == 0 {
		return nil
	}
	err := s.inTx(ctx, s.write, nil, func(tx *sql.Tx) error {
		var st, room *sql.Stmt
		for i := range recs {
			r := &recs[i]
			var err error
			if r.Room {
				if room == nil {
					room = tx.StmtContext(ctx, s.mam.appendRoom)
				}
				_, err = room.ExecContext(ctx, r.User, r.ID, r.With, r.WithResource, string(r.Stanza))
			} else {
				if st == nil {
					st = tx.StmtContext(ctx, s.mam.appendRec)
				}
				_, err = st.ExecContext(ctx, r.User, r.ID, r.With, r.WithResource, string(r.Stanza), r.User)
			}
			if err != nil {
				return fmt.Errorf("%q id %d: %w", r.User, r.ID, err)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("storage: append %d archived messages: %w", len(recs), err)
	}
	return nil
}

// ArchivePage implements [Archive.ArchivePage].
func (s *SQL) ArchivePage(ctx context.Context, q ArchiveQuery) ([]ArchiveItem, error) {
	if q.Max <= 0 {
		return nil, nil
	}
	w, args := archiveArgs(s.dialect, q)
	st := s.mam.pageAsc[w]
	if q.Backward {
		st = s.mam.pageDesc[w]
	}
	rows, err := st.QueryContext(ctx, append(args, q.Max)...)
	if err != nil {
		return nil, fmt.Errorf("storage: archive page of %q: %w", q.User, err)
	}
	defer rows.Close()
	items := make([]ArchiveItem, 0, min(q.Max, 64))
	for rows.Next() {
		var it ArchiveItem
		var stanza string
		if err := rows.Scan(&it.ID, &stanza); err != nil {
			return nil, fmt.Errorf("storage: archive page of %q: %w", q.User, err)
		}
		it.Stanza = []byte(stanza)
		items = append(items, it)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("storage: archive page of %q: %w", q.User, err)
	}
	if q.Backward {
		for i, j := 0, len(items)-1; i < j; i, j = i+1, j-1 {
			items[i], items[j] = items[j], items[i]
		}
	}
	return items, nil
}

// ArchiveCount implements [Archive.ArchiveCount].
func (s *SQL) ArchiveCount(ctx context.Context, q ArchiveQuery, limit int) (int, bool, error) {
	w, args := archiveArgs(s.dialect, q)
	var n int
	if err := s.mam.count[w].QueryRowContext(ctx, append(args, limit+1)...).Scan(&n); err != nil {
		return 0, false, fmt.Errorf("storage: archive count of %q: %w", q.User, err)
	}
	if n > limit {
		return limit, false, nil
	}
	return n, true, nil
}

// ArchiveItem implements [Archive.ArchiveItem].
func (s *SQL) ArchiveItem(ctx context.Context, user string, id int64) (ArchiveItem, bool, error) {
	var stanza string
	err := s.mam.item.QueryRowContext(ctx, user, id).Scan(&stanza)
	if errors.Is(err, sql.ErrNoRows) {
		return ArchiveItem{}, false, nil
	}
	if err != nil {
		return ArchiveItem{}, false, fmt.Errorf("storage: archive item %d of %q: %w", id, user, err)
	}
	return ArchiveItem{ID: id, Stanza: []byte(stanza)}, true, nil
}

// ArchiveBounds implements [Archive.ArchiveBounds]. Two statements rather
// than MIN and MAX in one: SQLite answers a lone MIN or MAX from the index
// but scans for both together.
func (s *SQL) ArchiveBounds(ctx context.Context, user string) (first, last int64, ok bool, err error) {
	err = s.mam.first.QueryRowContext(ctx, user).Scan(&first)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, 0, false, nil
	}
	if err == nil {
		err = s.mam.last.QueryRowContext(ctx, user).Scan(&last)
	}
	if err != nil {
		return 0, 0, false, fmt.Errorf("storage: archive bounds of %q: %w", user, err)
	}
	return first, last, true, nil
}

// ExpireArchive implements [Archive.ExpireArchive].
func (s *SQL) ExpireArchive(ctx context.Context, before int64, limit int) (int, error) {
	res, err := s.mam.expire.ExecContext(ctx, before, limit)
	if err != nil {
		return 0, fmt.Errorf("storage: expire archive: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, fmt.Errorf("storage: expire archive: %w", err)
	}
	return int(n), nil
}

// DeleteArchive implements [Archive.DeleteArchive].
func (s *SQL) DeleteArchive(ctx context.Context, user string, before int64, limit int) (int, error) {
	res, err := s.mam.del.ExecContext(ctx, user, before, limit)
	if err != nil {
		return 0, fmt.Errorf("storage: delete archive of %q: %w", user, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, fmt.Errorf("storage: delete archive of %q: %w", user, err)
	}
	return int(n), nil
}

// splitJIDs and joinJIDs store a list of JIDs, one a line.
func splitJIDs(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}

func joinJIDs(list []string) (string, error) {
	for _, j := range list {
		if j == "" || strings.ContainsAny(j, "\n\x00") {
			return "", fmt.Errorf("storage: archive preferences: bad JID %q", j)
		}
	}
	return strings.Join(list, "\n"), nil
}

// ArchivePrefs implements [Archive.ArchivePrefs].
func (s *SQL) ArchivePrefs(ctx context.Context, user string) (ArchivePrefs, bool, error) {
	var mode int64
	var always, never string
	err := s.mam.prefs.QueryRowContext(ctx, user).Scan(&mode, &always, &never)
	if errors.Is(err, sql.ErrNoRows) {
		return ArchivePrefs{}, false, nil
	}
	if err != nil {
		return ArchivePrefs{}, false, fmt.Errorf("storage: archive preferences of %q: %w", user, err)
	}
	return ArchivePrefs{Default: ArchiveMode(mode), Always: splitJIDs(always), Never: splitJIDs(never)}, true, nil
}

// SetArchivePrefs implements [Archive.SetArchivePrefs].
func (s *SQL) SetArchivePrefs(ctx context.Context, user string, p ArchivePrefs) error {
	if p.Default > ArchiveNever {
		return fmt.Errorf("storage: archive preferences of %q: bad mode %d", user, p.Default)
	}
	always, err := joinJIDs(p.Always)
	if err != nil {
		return err
	}
	never, err := joinJIDs(p.Never)
	if err != nil {
		return err
	}
	res, err := s.mam.setPrefs.ExecContext(ctx, user, int64(p.Default), always, never, user)
	if err != nil {
		return fmt.Errorf("storage: set archive preferences of %q: %w", user, err)
	}
	return wantOneRow(res, ErrNotFound, user)
}

// AllArchivePrefs implements [Archive.AllArchivePrefs].
func (s *SQL) AllArchivePrefs(ctx context.Context, fn func(user string, p ArchivePrefs)) error {
	rows, err := s.mam.allPrefs.QueryContext(ctx)
	if err != nil {
		return fmt.Errorf("storage: archive preferences: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var user, always, never string
		var mode int64
		if err := rows.Scan(&user, &mode, &always, &never); err != nil {
			return fmt.Errorf("storage: archive preferences: %w", err)
		}
		fn(user, ArchivePrefs{Default: ArchiveMode(mode), Always: splitJIDs(always), Never: splitJIDs(never)})
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("storage: archive preferences: %w", err)
	}
	return nil
}

// InRoster implements [Archive.InRoster].
func (s *SQL) InRoster(ctx context.Context, user, contact string) (bool, error) {
	var one int
	err := s.mam.inRoster.QueryRowContext(ctx, user, contact).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("storage: roster of %q: %w", user, err)
	}
	return true, nil
}
