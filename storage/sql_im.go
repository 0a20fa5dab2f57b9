package storage

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"
	"unicode/utf8"
)

// IM queries, written once with '?' parameters like the account queries.
const (
	queryRosterVersion = `SELECT version FROM roster_versions WHERE username = ?`
	// A roster's first version is the current Unix time rather than 1,
	// so that a username removed and registered again does not restart
	// at versions a client may still have cached (XEP-0237) unless its
	// old roster changed more than once a second on average.
	queryBumpVersion = `INSERT INTO roster_versions (username, version) VALUES (?, ?)
		ON CONFLICT (username) DO UPDATE SET version = roster_versions.version + 1`
	// queryRoster reads a whole roster in one statement, which sees one
	// snapshot in both dialects (SQLite runs it in one read transaction,
	// PostgreSQL takes one snapshot per statement): the version (kind 0,
	// in subscription), the items (kind 1) and the groups (kind 2, the
	// group in name). One statement instead of a transaction of three
	// saves a BEGIN, a COMMIT and two round trips on every login.
	queryRoster = `SELECT 0, '', '', version, 0, 0 FROM roster_versions WHERE username = ?
		UNION ALL SELECT 1, contact, name, subscription, ask_out, pre_approved FROM roster_items WHERE username = ?
		UNION ALL SELECT 2, contact, group_name, 0, 0, 0 FROM roster_groups WHERE username = ?`
	queryItem       = `SELECT name, subscription, ask_out, pre_approved FROM roster_items WHERE username = ? AND contact = ?`
	queryItemGroups = `SELECT group_name FROM roster_groups WHERE username = ? AND contact = ?`
	queryPutItem    = `INSERT INTO roster_items (username, contact, name, subscription, ask_out, pre_approved)
		VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (username, contact) DO UPDATE SET name = excluded.name,
		subscription = excluded.subscription, ask_out = excluded.ask_out, pre_approved = excluded.pre_approved`
	queryDeleteItem   = `DELETE FROM roster_items WHERE username = ? AND contact = ?`
	queryDeleteGroups = `DELETE FROM roster_groups WHERE username = ? AND contact = ?`
	queryInsertGroup  = `INSERT INTO roster_groups (username, contact, group_name) VALUES (?, ?, ?)`

	queryRequest    = `SELECT stanza FROM subscription_requests WHERE username = ? AND contact = ?`
	queryRequests   = `SELECT contact, stanza FROM subscription_requests WHERE username = ?`
	queryPutRequest = `INSERT INTO subscription_requests (username, contact, stanza, stored_at) VALUES (?, ?, ?, ?)
		ON CONFLICT (username, contact) DO UPDATE SET stanza = excluded.stanza, stored_at = excluded.stored_at`
	queryDeleteRequest = `DELETE FROM subscription_requests WHERE username = ? AND contact = ?`

	// The quota check and the insert are one statement (in PostgreSQL
	// under a per-user lock, see StoreOffline). The CASTs type the
	// parameters, which PostgreSQL cannot infer in a SELECT list.
	queryStoreOffline = `INSERT INTO offline_messages (username, stanza, stored_at)
		SELECT CAST(? AS TEXT), CAST(? AS TEXT), CAST(? AS BIGINT)
		WHERE (SELECT COUNT(*) FROM offline_messages WHERE username = ?) < ?`
	// The byte quota sums the stored stanzas' sizes; the count comes
	// from the (username, id) index, the sum reads the user's rows, at
	// most the byte quota's worth.
	queryStoreOfflineBytes = `INSERT INTO offline_messages (username, stanza, stored_at)
		SELECT CAST(? AS TEXT), CAST(? AS TEXT), CAST(? AS BIGINT)
		WHERE (SELECT COUNT(*) FROM offline_messages WHERE username = ?) < ?
		AND (SELECT COALESCE(SUM(OCTET_LENGTH(stanza)), 0) FROM offline_messages WHERE username = ?) + CAST(? AS BIGINT) <= CAST(? AS BIGINT)`
	queryOffline       = `SELECT id, stanza, stored_at FROM offline_messages WHERE username = ? ORDER BY id`
	queryOfflineBatch  = `SELECT id, stanza, stored_at FROM offline_messages WHERE username = ? AND id > ? ORDER BY id LIMIT ?`
	queryDeleteOffline = `DELETE FROM offline_messages WHERE username = ? AND id <= ?`

	queryBlocklist  = `SELECT jid FROM blocklist WHERE username = ?`
	queryBlock      = `INSERT INTO blocklist (username, jid) VALUES (?, ?) ON CONFLICT (username, jid) DO NOTHING`
	queryUnblock    = `DELETE FROM blocklist WHERE username = ? AND jid = ?`
	queryUnblockAll = `DELETE FROM blocklist WHERE username = ?`
	queryVCard      = `SELECT vcard FROM vcards WHERE username = ?`
	querySetVCard   = `INSERT INTO vcards (username, vcard, updated_at) VALUES (?, ?, ?)
		ON CONFLICT (username) DO UPDATE SET vcard = excluded.vcard, updated_at = excluded.updated_at`
	queryDeleteVCard = `DELETE FROM vcards WHERE username = ?`

	queryLastActivity = `SELECT at, status FROM last_activity WHERE username = ?`
	// Only for an existing account: a write racing with RemoveAccount
	// leaves no orphan row.
	querySetLastActivity = `INSERT INTO last_activity (username, at, status)
		SELECT ?, ?, ? WHERE EXISTS (SELECT 1 FROM accounts WHERE username = ?)
		ON CONFLICT (username) DO UPDATE SET at = excluded.at, status = excluded.status`
)

// imStmts are the prepared statements of [IM]. Those used inside write
// transactions are prepared on the writer pool: a transaction can only use
// statements of its own pool.
type imStmts struct {
	// Roster's one statement, on the readers.
	roster *sql.Stmt
	// RosterTx, on the writer.
	version, bump, item, itemGroups, putItem, deleteItem, deleteGroups, insertGroup *sql.Stmt
	request, putRequest, deleteRequest                                              *sql.Stmt

	requests, offline, offlineBatch, blocklist, vcard *sql.Stmt
	storeOffline, storeOfflineBytes, deleteOffline    *sql.Stmt
	block, unblock, unblockAll, setVCard, delVCard    *sql.Stmt
	lastActivity, setLastActivity                     *sql.Stmt
}

func (m *imStmts) statements() []stmtSpec {
	return []stmtSpec{
		{&m.roster, false, queryRoster},
		{&m.requests, false, queryRequests},
		{&m.offline, false, queryOffline},
		{&m.offlineBatch, false, queryOfflineBatch},
		{&m.blocklist, false, queryBlocklist},
		{&m.vcard, false, queryVCard},

		{&m.version, true, queryRosterVersion},
		{&m.bump, true, queryBumpVersion},
		{&m.item, true, queryItem},
		{&m.itemGroups, true, queryItemGroups},
		{&m.putItem, true, queryPutItem},
		{&m.deleteItem, true, queryDeleteItem},
		{&m.deleteGroups, true, queryDeleteGroups},
		{&m.insertGroup, true, queryInsertGroup},
		{&m.request, true, queryRequest},
		{&m.putRequest, true, queryPutRequest},
		{&m.deleteRequest, true, queryDeleteRequest},
		{&m.storeOffline, true, queryStoreOffline},
		{&m.storeOfflineBytes, true, queryStoreOfflineBytes},
		{&m.deleteOffline, true, queryDeleteOffline},
		{&m.block, true, queryBlock},
		{&m.unblock, true, queryUnblock},
		{&m.unblockAll, true, queryUnblockAll},
		{&m.setVCard, true, querySetVCard},
		{&m.delVCard, true, queryDeleteVCard},
		{&m.lastActivity, false, queryLastActivity},
		{&m.setLastActivity, true, querySetLastActivity},
	}
}

// Roster implements [IM.Roster]. The version, the items and their groups
// come from one statement (queryRoster), so they agree.
func (s *SQL) Roster(ctx context.Context, user string) ([]RosterItem, uint64, error) {
	items, version, err := s.roster(ctx, user)
	if err != nil {
		return nil, 0, fmt.Errorf("storage: roster of %q: %w", user, err)
	}
	return items, version, nil
}

// roster runs queryRoster. Group rows are kept aside and attached once
// every item is known: the order of a UNION ALL's rows is not promised.
func (s *SQL) roster(ctx context.Context, user string) (items []RosterItem, version uint64, err error) {
	rows, err := s.im.roster.QueryContext(ctx, user, user, user)
	if err != nil {
		return nil, 0, err
	}
	defer rows.Close()
	type group struct{ contact, name string }
	var groups []group
	for rows.Next() {
		var (
			kind, sub, ask, preA int64
			contact, name        string
		)
		if err := rows.Scan(&kind, &contact, &name, &sub, &ask, &preA); err != nil {
			return nil, 0, err
		}
		switch kind {
		case 0:
			version = uint64(sub)
		case 1:
			it := RosterItem{Contact: contact, Name: name, AskOut: ask != 0, PreApproved: preA != 0}
			if it.Subscription, err = storedSubscription(sub); err != nil {
				return nil, 0, fmt.Errorf("contact %q: %w", contact, err)
			}
			items = append(items, it)
		default:
			groups = append(groups, group{contact, name})
		}
	}
	if err := rows.Err(); err != nil {
		return nil, 0, err
	}
	slices.SortFunc(items, func(a, b RosterItem) int { return strings.Compare(a.Contact, b.Contact) })
	for _, g := range groups {
		i, ok := slices.BinarySearchFunc(items, g.contact, func(it RosterItem, c string) int { return strings.Compare(it.Contact, c) })
		if !ok {
			continue // a group row without its item; not reachable through this package
		}
		items[i].Groups = append(items[i].Groups, g.name)
	}
	if len(groups) > 0 {
		for i := range items {
			slices.Sort(items[i].Groups)
		}
	}
	return items, version, nil
}

// readVersion returns the roster version of user, 0 if it has none.
func readVersion(ctx context.Context, stmt *sql.Stmt, user string) (uint64, error) {
	var v int64
	err := stmt.QueryRowContext(ctx, user).Scan(&v)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	return uint64(v), nil
}

// storedSubscription converts a subscription column.
func storedSubscription(v int64) (Subscription, error) {
	if v < 0 || v > int64(SubBoth) {
		return 0, fmt.Errorf("stored subscription %d is none of the four states", v)
	}
	return Subscription(v), nil
}

// UpdateRosters implements [IM.UpdateRosters].
//
// In SQLite, write transactions run one at a time (one writer connection,
// IMMEDIATE transactions), so fn always sees and changes rosters alone.
//
// In PostgreSQL, the transaction takes a transaction-level advisory lock
// per user before its first read or write of that user's roster, and holds
// it until commit or rollback, so two transactions that touch a common
// roster never overlap. fn picks the rosters as it runs, so the locks
// cannot be taken in one fixed order; waiting for them could deadlock, and
// PostgreSQL detects deadlocks only after deadlock_timeout (1 s by
// default). So the locks are tried without waiting: a lock held elsewhere
// aborts the attempt, which runs again after a random pause. SERIALIZABLE
// would be correct too, but two sessions changing a pair in opposite orders
// deadlock on the row locks first, and that measured 11 s for the suite's
// 80 contended transactions against well under a second with try-locks.
func (s *SQL) UpdateRosters(ctx context.Context, fn func(tx RosterTx) error) error {
	var fnErr error
	err := s.inTx(ctx, s.write, nil, func(tx *sql.Tx) error {
		fnErr = fn(&rosterTx{ctx: ctx, tx: tx, s: &s.im, d: s.dialect})
		return fnErr
	})
	if err != nil && (fnErr == nil || errors.Is(fnErr, errRosterBusy)) {
		return fmt.Errorf("storage: update rosters: %w", err)
	}
	return err
}

// rosterTx implements [RosterTx] on one transaction.
type rosterTx struct {
	ctx context.Context
	tx  *sql.Tx
	s   *imStmts
	d   Dialect
	// locked are the users whose roster lock the transaction holds; a
	// transaction touches few.
	locked []string
}

// stmt returns the transaction's copy of a writer statement; the
// transaction closes it when it ends.
func (t *rosterTx) stmt(st *sql.Stmt) *sql.Stmt { return t.tx.StmtContext(t.ctx, st) }

// lock takes user's roster lock unless the transaction holds it already.
func (t *rosterTx) lock(user string) error {
	if t.d != PostgreSQL || slices.Contains(t.locked, user) {
		return nil
	}
	if err := t.d.tryLockUser(t.ctx, t.tx, rosterLockClass, user); err != nil {
		return fmt.Errorf("storage: roster of %q: %w", user, err)
	}
	t.locked = append(t.locked, user)
	return nil
}

// Item implements [RosterTx.Item].
func (t *rosterTx) Item(user, contact string) (RosterItem, bool, error) {
	if err := t.lock(user); err != nil {
		return RosterItem{}, false, err
	}
	it := RosterItem{Contact: contact}
	var sub, ask, preA int64
	err := t.stmt(t.s.item).QueryRowContext(t.ctx, user, contact).Scan(&it.Name, &sub, &ask, &preA)
	if errors.Is(err, sql.ErrNoRows) {
		return RosterItem{}, false, nil
	}
	if err != nil {
		return RosterItem{}, false, fmt.Errorf("storage: roster of %q: item %q: %w", user, contact, err)
	}
	if it.Subscription, err = storedSubscription(sub); err != nil {
		return RosterItem{}, false, fmt.Errorf("storage: roster of %q: item %q: %w", user, contact, err)
	}
	it.AskOut, it.PreApproved = ask != 0, preA != 0
	rows, err := t.stmt(t.s.itemGroups).QueryContext(t.ctx, user, contact)
	if err != nil {
		return RosterItem{}, false, fmt.Errorf("storage: roster of %q: item %q: %w", user, contact, err)
	}
	defer rows.Close()
	for rows.Next() {
		var g string
		if err := rows.Scan(&g); err != nil {
			return RosterItem{}, false, fmt.Errorf("storage: roster of %q: item %q: %w", user, contact, err)
		}
		it.Groups = append(it.Groups, g)
	}
	if err := rows.Err(); err != nil {
		return RosterItem{}, false, fmt.Errorf("storage: roster of %q: item %q: %w", user, contact, err)
	}
	slices.Sort(it.Groups)
	return it, true, nil
}

// PutItem implements [RosterTx.PutItem].
func (t *rosterTx) PutItem(user string, item RosterItem) error {
	if err := checkItem(user, item); err != nil {
		return err
	}
	if err := t.lock(user); err != nil {
		return err
	}
	wrap := func(err error) error {
		return fmt.Errorf("storage: roster of %q: put %q: %w", user, item.Contact, err)
	}
	if _, err := t.stmt(t.s.putItem).ExecContext(t.ctx, user, item.Contact, item.Name,
		int64(item.Subscription), boolInt(item.AskOut), boolInt(item.PreApproved)); err != nil {
		return wrap(err)
	}
	if _, err := t.stmt(t.s.deleteGroups).ExecContext(t.ctx, user, item.Contact); err != nil {
		return wrap(err)
	}
	if groups := normalGroups(item.Groups); len(groups) > 0 {
		insert := t.stmt(t.s.insertGroup)
		for _, g := range groups {
			if _, err := insert.ExecContext(t.ctx, user, item.Contact, g); err != nil {
				return wrap(err)
			}
		}
	}
	if err := t.bump(user); err != nil {
		return wrap(err)
	}
	return nil
}

// checkItem validates what PutItem would store.
func checkItem(user string, item RosterItem) error {
	if user == "" {
		return ErrEmptyUsername
	}
	if item.Contact == "" {
		return fmt.Errorf("%w: roster of %q: empty contact", ErrInvalidItem, user)
	}
	if !item.Subscription.valid() {
		return fmt.Errorf("%w: roster of %q, contact %q: %v", ErrInvalidItem, user, item.Contact, item.Subscription)
	}
	if !validText(user) || !validText(item.Contact) || !validText(item.Name) {
		return fmt.Errorf("%w: roster of %q, contact %q", ErrInvalidText, user, item.Contact)
	}
	for _, g := range item.Groups {
		if !validText(g) {
			return fmt.Errorf("%w: roster of %q, contact %q: group %q", ErrInvalidText, user, item.Contact, g)
		}
	}
	return nil
}

// bump increments user's roster version.
func (t *rosterTx) bump(user string) error {
	_, err := t.stmt(t.s.bump).ExecContext(t.ctx, user, time.Now().Unix())
	return err
}

// DeleteItem implements [RosterTx.DeleteItem].
func (t *rosterTx) DeleteItem(user, contact string) (bool, error) {
	if err := t.lock(user); err != nil {
		return false, err
	}
	wrap := func(err error) error {
		return fmt.Errorf("storage: roster of %q: delete %q: %w", user, contact, err)
	}
	res, err := t.stmt(t.s.deleteItem).ExecContext(t.ctx, user, contact)
	if err != nil {
		return false, wrap(err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, wrap(err)
	}
	if n == 0 {
		return false, nil
	}
	if _, err := t.stmt(t.s.deleteGroups).ExecContext(t.ctx, user, contact); err != nil {
		return false, wrap(err)
	}
	if err := t.bump(user); err != nil {
		return false, wrap(err)
	}
	return true, nil
}

// Version implements [RosterTx.Version].
func (t *rosterTx) Version(user string) (uint64, error) {
	if err := t.lock(user); err != nil {
		return 0, err
	}
	v, err := readVersion(t.ctx, t.stmt(t.s.version), user)
	if err != nil {
		return 0, fmt.Errorf("storage: roster version of %q: %w", user, err)
	}
	return v, nil
}

// Request implements [RosterTx.Request].
func (t *rosterTx) Request(user, from string) (SubscriptionRequest, bool, error) {
	if err := t.lock(user); err != nil {
		return SubscriptionRequest{}, false, err
	}
	r := SubscriptionRequest{From: from}
	err := t.stmt(t.s.request).QueryRowContext(t.ctx, user, from).Scan(&r.Stanza)
	if errors.Is(err, sql.ErrNoRows) {
		return SubscriptionRequest{}, false, nil
	}
	if err != nil {
		return SubscriptionRequest{}, false, fmt.Errorf("storage: request from %q to %q: %w", from, user, err)
	}
	return r, true, nil
}

// PutRequest implements [RosterTx.PutRequest].
func (t *rosterTx) PutRequest(user string, r SubscriptionRequest) error {
	switch {
	case user == "":
		return ErrEmptyUsername
	case r.From == "":
		return fmt.Errorf("%w: request to %q: empty from", ErrInvalidItem, user)
	case !validText(user) || !validText(r.From) || !validBytes(r.Stanza):
		return fmt.Errorf("%w: request from %q to %q", ErrInvalidText, r.From, user)
	}
	if err := t.lock(user); err != nil {
		return err
	}
	if _, err := t.stmt(t.s.putRequest).ExecContext(t.ctx, user, r.From, string(r.Stanza), time.Now().Unix()); err != nil {
		return fmt.Errorf("storage: request from %q to %q: %w", r.From, user, err)
	}
	return nil
}

// DeleteRequest implements [RosterTx.DeleteRequest].
func (t *rosterTx) DeleteRequest(user, from string) (bool, error) {
	if err := t.lock(user); err != nil {
		return false, err
	}
	res, err := t.stmt(t.s.deleteRequest).ExecContext(t.ctx, user, from)
	if err != nil {
		return false, fmt.Errorf("storage: delete request from %q to %q: %w", from, user, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, fmt.Errorf("storage: delete request from %q to %q: %w", from, user, err)
	}
	return n > 0, nil
}

// Requests implements [IM.Requests].
func (s *SQL) Requests(ctx context.Context, user string) ([]SubscriptionRequest, error) {
	rows, err := s.im.requests.QueryContext(ctx, user)
	if err != nil {
		return nil, fmt.Errorf("storage: requests to %q: %w", user, err)
	}
	defer rows.Close()
	var reqs []SubscriptionRequest
	for rows.Next() {
		var r SubscriptionRequest
		if err := rows.Scan(&r.From, &r.Stanza); err != nil {
			return nil, fmt.Errorf("storage: requests to %q: %w", user, err)
		}
		reqs = append(reqs, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("storage: requests to %q: %w", user, err)
	}
	slices.SortFunc(reqs, func(a, b SubscriptionRequest) int { return strings.Compare(a.From, b.From) })
	return reqs, nil
}

// StoreOffline implements [IM.StoreOffline].
func (s *SQL) StoreOffline(ctx context.Context, user string, stanza []byte, quota int) error {
	return s.StoreOfflineWithin(ctx, user, stanza, quota, 0)
}

// StoreOfflineWithin implements [IM.StoreOfflineWithin].
func (s *SQL) StoreOfflineWithin(ctx context.Context, user string, stanza []byte, maxMessages int, maxBytes int64) error {
	switch {
	case user == "":
		return ErrEmptyUsername
	case !validText(user) || !validBytes(stanza):
		return fmt.Errorf("%w: offline message for %q", ErrInvalidText, user)
	}
	limit := int64(math.MaxInt64)
	if maxMessages > 0 {
		limit = int64(maxMessages)
	}
	now := time.Now().Unix()
	err := s.inTx(ctx, s.write, nil, func(tx *sql.Tx) error {
		if maxMessages > 0 || maxBytes > 0 {
			// Concurrent stores for one user queue on a lock, so that
			// two cannot both see room for one message.
			if err := s.dialect.lockUser(ctx, tx, offlineLockClass, user); err != nil {
				return err
			}
		}
		var (
			res sql.Result
			err error
		)
		if maxBytes > 0 {
			res, err = tx.StmtContext(ctx, s.im.storeOfflineBytes).ExecContext(ctx, user, string(stanza), now, user, limit,
				user, int64(len(stanza)), maxBytes)
		} else {
			res, err = tx.StmtContext(ctx, s.im.storeOffline).ExecContext(ctx, user, string(stanza), now, user, limit)
		}
		if err != nil {
			return err
		}
		n, err := res.RowsAffected()
		if err != nil {
			return err
		}
		if n == 0 {
			return fmt.Errorf("%w: %q has %d messages or %d bytes stored", ErrQuota, user, maxMessages, maxBytes)
		}
		return nil
	})
	if err != nil && !errors.Is(err, ErrQuota) {
		return fmt.Errorf("storage: store offline message for %q: %w", user, err)
	}
	return err
}

// Offline implements [IM.Offline].
func (s *SQL) Offline(ctx context.Context, user string) ([]OfflineMessage, error) {
	rows, err := s.im.offline.QueryContext(ctx, user)
	if err != nil {
		return nil, fmt.Errorf("storage: offline messages of %q: %w", user, err)
	}
	defer rows.Close()
	var msgs []OfflineMessage
	for rows.Next() {
		var (
			m      OfflineMessage
			stored int64
		)
		if err := rows.Scan(&m.ID, &m.Stanza, &stored); err != nil {
			return nil, fmt.Errorf("storage: offline messages of %q: %w", user, err)
		}
		m.Stored = time.Unix(stored, 0)
		msgs = append(msgs, m)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("storage: offline messages of %q: %w", user, err)
	}
	return msgs, nil
}

// OfflineBatch implements [IM.OfflineBatch].
func (s *SQL) OfflineBatch(ctx context.Context, user string, afterID int64, limit int) ([]OfflineMessage, error) {
	if limit <= 0 {
		return nil, nil
	}
	rows, err := s.im.offlineBatch.QueryContext(ctx, user, afterID, limit)
	if err != nil {
		return nil, fmt.Errorf("storage: offline messages of %q: %w", user, err)
	}
	defer rows.Close()
	msgs := make([]OfflineMessage, 0, min(limit, 16))
	for rows.Next() {
		var (
			m      OfflineMessage
			stored int64
		)
		if err := rows.Scan(&m.ID, &m.Stanza, &stored); err != nil {
			return nil, fmt.Errorf("storage: offline messages of %q: %w", user, err)
		}
		m.Stored = time.Unix(stored, 0)
		msgs = append(msgs, m)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("storage: offline messages of %q: %w", user, err)
	}
	return msgs, nil
}

// DeleteOffline implements [IM.DeleteOffline].
func (s *SQL) DeleteOffline(ctx context.Context, user string, upTo int64) error {
	if _, err := s.im.deleteOffline.ExecContext(ctx, user, upTo); err != nil {
		return fmt.Errorf("storage: delete offline messages of %q: %w", user, err)
	}
	return nil
}

// Blocklist implements [IM.Blocklist].
func (s *SQL) Blocklist(ctx context.Context, user string) ([]string, error) {
	rows, err := s.im.blocklist.QueryContext(ctx, user)
	if err != nil {
		return nil, fmt.Errorf("storage: blocklist of %q: %w", user, err)
	}
	defer rows.Close()
	var jids []string
	for rows.Next() {
		var j string
		if err := rows.Scan(&j); err != nil {
			return nil, fmt.Errorf("storage: blocklist of %q: %w", user, err)
		}
		jids = append(jids, j)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("storage: blocklist of %q: %w", user, err)
	}
	slices.Sort(jids)
	return jids, nil
}

// Block implements [IM.Block], in one transaction.
func (s *SQL) Block(ctx context.Context, user string, jids []string) error {
	if user == "" {
		return ErrEmptyUsername
	}
	for _, j := range jids {
		if j == "" || !validText(j) {
			return fmt.Errorf("%w: blocklist of %q: JID %q", ErrInvalidText, user, j)
		}
	}
	if len(jids) == 0 {
		return nil
	}
	err := s.inTx(ctx, s.write, nil, func(tx *sql.Tx) error {
		block := tx.StmtContext(ctx, s.im.block)
		for _, j := range jids {
			if _, err := block.ExecContext(ctx, user, j); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("storage: block for %q: %w", user, err)
	}
	return nil
}

// Unblock implements [IM.Unblock], in one transaction.
func (s *SQL) Unblock(ctx context.Context, user string, jids []string) error {
	var err error
	if len(jids) == 0 {
		_, err = s.im.unblockAll.ExecContext(ctx, user)
	} else {
		err = s.inTx(ctx, s.write, nil, func(tx *sql.Tx) error {
			unblock := tx.StmtContext(ctx, s.im.unblock)
			for _, j := range jids {
				if _, err := unblock.ExecContext(ctx, user, j); err != nil {
					return err
				}
			}
			return nil
		})
	}
	if err != nil {
		return fmt.Errorf("storage: unblock for %q: %w", user, err)
	}
	return nil
}

// VCard implements [IM.VCard].
func (s *SQL) VCard(ctx context.Context, user string) ([]byte, error) {
	var v []byte
	err := s.im.vcard.QueryRowContext(ctx, user).Scan(&v)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("storage: vcard of %q: %w", user, err)
	}
	return v, nil
}

// SetVCard implements [IM.SetVCard].
func (s *SQL) SetVCard(ctx context.Context, user string, vcard []byte) error {
	var err error
	switch {
	case user == "":
		return ErrEmptyUsername
	case len(vcard) == 0:
		_, err = s.im.delVCard.ExecContext(ctx, user)
	case !validText(user) || !validBytes(vcard):
		return fmt.Errorf("%w: vcard of %q", ErrInvalidText, user)
	default:
		_, err = s.im.setVCard.ExecContext(ctx, user, string(vcard), time.Now().Unix())
	}
	if err != nil {
		return fmt.Errorf("storage: set vcard of %q: %w", user, err)
	}
	return nil
}

// LastActivity implements [IM.LastActivity].
func (s *SQL) LastActivity(ctx context.Context, user string) (Activity, bool, error) {
	var (
		at     int64
		status string
	)
	err := s.im.lastActivity.QueryRowContext(ctx, user).Scan(&at, &status)
	if errors.Is(err, sql.ErrNoRows) {
		return Activity{}, false, nil
	}
	if err != nil {
		return Activity{}, false, fmt.Errorf("storage: last activity of %q: %w", user, err)
	}
	return Activity{At: time.Unix(at, 0), Status: status}, true, nil
}

// SetLastActivity implements [IM.SetLastActivity].
func (s *SQL) SetLastActivity(ctx context.Context, user string, a Activity) error {
	switch {
	case user == "":
		return ErrEmptyUsername
	case !validText(user) || !validText(a.Status):
		return fmt.Errorf("%w: last activity of %q", ErrInvalidText, user)
	}
	res, err := s.im.setLastActivity.ExecContext(ctx, user, a.At.Unix(), a.Status, user)
	if err != nil {
		return fmt.Errorf("storage: set last activity of %q: %w", user, err)
	}
	return wantOneRow(res, ErrNotFound, user)
}

// SetLastActivities implements [IM.SetLastActivities].
func (s *SQL) SetLastActivities(ctx context.Context, acts map[string]Activity) error {
	var bad []error
	err := s.inTx(ctx, s.write, nil, func(tx *sql.Tx) error {
		bad = bad[:0]
		st := tx.StmtContext(ctx, s.im.setLastActivity)
		for user, a := range acts {
			if user == "" || !validText(user) || !validText(a.Status) {
				bad = append(bad, fmt.Errorf("%w: last activity of %q", ErrInvalidText, user))
				continue
			}
			if _, err := st.ExecContext(ctx, user, a.At.Unix(), a.Status, user); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("storage: set the last activity of %d accounts: %w", len(acts), err)
	}
	return errors.Join(bad...)
}

// validText reports whether s can be stored as TEXT by every dialect.
func validText(s string) bool {
	return utf8.ValidString(s) && strings.IndexByte(s, 0) < 0
}

// validBytes is validText for a byte slice.
func validBytes(b []byte) bool {
	return utf8.Valid(b) && bytes.IndexByte(b, 0) < 0
}

func boolInt(b bool) int64 {
	if b {
		return 1
	}
	return 0
}

// Compile-time checks that SQL implements both stores.
var (
	_ Accounts = (*SQL)(nil)
	_ IM       = (*SQL)(nil)
)
