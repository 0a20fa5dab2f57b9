package storage

import (
	"context"
	"database/sql"
	"fmt"
)

// PushRegistration is one XEP-0357 registration: an account asked that
// its app server jid be notified on node when a message waits for it.
// Options is the client's publish-options form, passed on with each
// notification (it usually holds the device's secret).
type PushRegistration struct {
	Account, JID, Node string
	Options            []byte
	// Created orders an account's registrations: the oldest goes first
	// when the account has too many.
	Created int64
}

// Push is the store of XEP-0357 registrations; SQL implements it. They are
// kept so that a device whose app is asleep is still woken after the
// server restarts, and, in a cluster, by whichever node the message
// reaches.
type Push interface {
	// PutPushRegistration stores r, replacing the account's
	// registration with the same JID and node, and deletes the
	// account's oldest ones beyond max (0: no limit).
	PutPushRegistration(ctx context.Context, r PushRegistration, max int) error
	// DeletePushRegistrations deletes an account's registrations with
	// app server jid, only the one with node unless anyNode, and
	// reports how many went.
	DeletePushRegistrations(ctx context.Context, account, jid, node string, anyNode bool) (int64, error)
	// PushRegistrations returns an account's registrations, oldest
	// first.
	PushRegistrations(ctx context.Context, account string) ([]PushRegistration, error)
	// EachPushRegistration calls fn for every registration of every
	// account, oldest first within an account, stopping at fn's first
	// error.
	EachPushRegistration(ctx context.Context, fn func(PushRegistration) error) error
}

const (
	queryPushPut = `INSERT INTO push_registrations (username, jid, node, options, created_at) VALUES (?, ?, ?, ?, ?)
		ON CONFLICT (username, jid, node) DO UPDATE SET options = excluded.options, created_at = excluded.created_at`
	// Everything older than the max-th newest goes.
	queryPushTrim = `DELETE FROM push_registrations WHERE username = ? AND (created_at, jid, node) IN (
		SELECT created_at, jid, node FROM push_registrations WHERE username = ?
		ORDER BY created_at DESC, jid DESC, node DESC LIMIT -1 OFFSET ?)`
	queryPushTrimPG = `DELETE FROM push_registrations WHERE username = ? AND (created_at, jid, node) IN (
		SELECT created_at, jid, node FROM push_registrations WHERE username = ?
		ORDER BY created_at DESC, jid DESC, node DESC OFFSET ?)`
	queryPushDeleteNode = `DELETE FROM push_registrations WHERE username = ? AND jid = ? AND node = ?`
	queryPushDeleteJID  = `DELETE FROM push_registrations WHERE username = ? AND jid = ?`
	queryPushAccount    = `SELECT username, jid, node, options, created_at FROM push_registrations
		WHERE username = ? ORDER BY created_at, jid, node`
	queryPushAll = `SELECT username, jid, node, options, created_at FROM push_registrations
		ORDER BY username, created_at, jid, node`
)

// PutPushRegistration implements [Push.PutPushRegistration].
func (s *SQL) PutPushRegistration(ctx context.Context, r PushRegistration, max int) error {
	trim := queryPushTrim
	if s.dialect == PostgreSQL {
		trim = queryPushTrimPG
	}
	err := s.inTx(ctx, s.write, nil, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, s.dialect.rebind(queryPushPut), r.Account, r.JID, r.Node, string(r.Options), r.Created); err != nil {
			return err
		}
		if max <= 0 {
			return nil
		}
		_, err := tx.ExecContext(ctx, s.dialect.rebind(trim), r.Account, r.Account, max)
		return err
	})
	if err != nil {
		return fmt.Errorf("storage: push registration of %q: %w", r.Account, err)
	}
	return nil
}

// DeletePushRegistrations implements [Push.DeletePushRegistrations].
func (s *SQL) DeletePushRegistrations(ctx context.Context, account, jid, node string, anyNode bool) (int64, error) {
	q, args := queryPushDeleteNode, []any{account, jid, node}
	if anyNode {
		q, args = queryPushDeleteJID, []any{account, jid}
	}
	res, err := s.write.ExecContext(ctx, s.dialect.rebind(q), args...)
	if err != nil {
		return 0, fmt.Errorf("storage: delete push registrations of %q: %w", account, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, fmt.Errorf("storage: delete push registrations of %q: %w", account, err)
	}
	return n, nil
}

// PushRegistrations implements [Push.PushRegistrations].
func (s *SQL) PushRegistrations(ctx context.Context, account string) ([]PushRegistration, error) {
	var out []PushRegistration
	err := s.eachPush(ctx, queryPushAccount, []any{account}, func(r PushRegistration) error {
		out = append(out, r)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("storage: push registrations of %q: %w", account, err)
	}
	return out, nil
}

// EachPushRegistration implements [Push.EachPushRegistration].
func (s *SQL) EachPushRegistration(ctx context.Context, fn func(PushRegistration) error) error {
	if err := s.eachPush(ctx, queryPushAll, nil, fn); err != nil {
		return fmt.Errorf("storage: push registrations: %w", err)
	}
	return nil
}

func (s *SQL) eachPush(ctx context.Context, q string, args []any, fn func(PushRegistration) error) error {
	rows, err := s.read.QueryContext(ctx, s.dialect.rebind(q), args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var (
			r       PushRegistration
			options string
		)
		if err := rows.Scan(&r.Account, &r.JID, &r.Node, &options, &r.Created); err != nil {
			return err
		}
		if options != "" {
			r.Options = []byte(options)
		}
		if err := fn(r); err != nil {
			return err
		}
	}
	return rows.Err()
}
