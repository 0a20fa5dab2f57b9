package storage

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// FastToken is the stored part of one XEP-0484 FAST token. The token the
// client holds is not stored, nor anything it can be computed from without
// a secret kept outside the database (package fast derives it from these
// fields and that secret), so reading this table lets no one log in.
type FastToken struct {
	// Username is the account's normalised localpart.
	Username string
	// ID is the token's random identifier, unique per account.
	ID string
	// Client is the XEP-0388 <user-agent id='...'/> of the client the
	// token was issued to.
	Client string
	// Mechanism is the HT mechanism the token is bound to
	// ("HT-SHA-256-EXPR", ...).
	Mechanism string
	// Created and Expires are when the token was issued and when it stops
	// working, to the second.
	Created, Expires time.Time
	// LastCount is the highest XEP-0484 count attribute accepted with the
	// token, -1 if none has been.
	LastCount int64
	// Used is when a login with the token was last recorded: its first,
	// and each one with a count or invalidate (package fast writes no
	// others); the zero Time if never.
	Used time.Time
}

// FastTokens stores XEP-0484 FAST tokens; [SQL] implements it. Accounts'
// SetCredentials (a password change) and RemoveAccount delete the
// account's tokens in their own transaction.
//
// Implementations are safe for concurrent use.
type FastTokens interface {
	// FastTokens returns the tokens of username issued to client, expired
	// ones included (so that a login with one can be told it expired),
	// oldest first.
	FastTokens(ctx context.Context, username, client string) ([]FastToken, error)

	// AddFastToken stores t in one transaction that first deletes the
	// account's expired tokens and the tokens of t.Client that have never
	// been used, except keep (the token the client is logging in with,
	// which XEP-0484 keeps until the new one is used; "" for none), then,
	// if the account still holds max tokens or more, deletes the ones
	// expiring first (never keep) so that t is at most the max-th. max <=
	// 0 means no cap. It returns ErrInvalidText for text fields that are
	// not UTF-8 or hold NUL and ErrExists if t.ID is taken.
	AddFastToken(ctx context.Context, t FastToken, max int, keep string) error

	// UseFastToken records a login with token id of username at now: if
	// count >= 0 it must exceed the token's LastCount, which becomes count;
	// otherwise the login is a replay and ErrReplayed is returned. In the
	// same transaction the tokens of the same client expiring before this
	// one are deleted (XEP-0484: a client that uses a token has received
	// it, so the older ones are obsolete), and with invalidate the token
	// itself is. It returns ErrNotFound if there is no such token.
	UseFastToken(ctx context.Context, username, id string, count int64, now time.Time, invalidate bool) error

	// DeleteFastTokens deletes every token of username and returns how
	// many there were.
	DeleteFastTokens(ctx context.Context, username string) (int64, error)

	// DeleteExpiredFastTokens deletes every token expired at now and
	// returns how many there were.
	DeleteExpiredFastTokens(ctx context.Context, now time.Time) (int64, error)
}

// ErrReplayed reports a FAST login whose count is not above the highest
// count already accepted for the token.
var ErrReplayed = errors.New("storage: FAST count replayed")

const (
	queryFastTokens = `SELECT id, mechanism, created_at, expires_at, last_count, used_at
		FROM fast_tokens WHERE username = ? AND client = ? ORDER BY created_at, id`
	queryFastInsert = `INSERT INTO fast_tokens (username, id, client, mechanism, created_at, expires_at, last_count, used_at)
		VALUES (?, ?, ?, ?, ?, ?, ?, 0) ON CONFLICT (username, id) DO NOTHING`
	queryFastPruneAccount = `DELETE FROM fast_tokens WHERE username = ? AND (expires_at <= ? OR (client = ? AND used_at = 0 AND id <> ?))`
	queryFastCount        = `SELECT COUNT(*) FROM fast_tokens WHERE username = ?`
	queryFastEvict        = `DELETE FROM fast_tokens WHERE username = ? AND id IN
		(SELECT id FROM fast_tokens WHERE username = ? AND id <> ? ORDER BY expires_at, created_at, id LIMIT ?)`
	// A compare-and-set: of two logins racing with one count, one
	// updates the row and the other finds nothing to update.
	queryFastUse = `UPDATE fast_tokens SET used_at = ?,
		last_count = CASE WHEN CAST(? AS BIGINT) >= 0 THEN CAST(? AS BIGINT) ELSE last_count END
		WHERE username = ? AND id = ? AND (CAST(? AS BIGINT) < 0 OR last_count < CAST(? AS BIGINT))`
	queryFastGet           = `SELECT client, expires_at FROM fast_tokens WHERE username = ? AND id = ?`
	queryFastObsolete      = `DELETE FROM fast_tokens WHERE username = ? AND client = ? AND expires_at < ?`
	queryFastDelete        = `DELETE FROM fast_tokens WHERE username = ? AND id = ?`
	queryFastDeleteAll     = `DELETE FROM fast_tokens WHERE username = ?`
	queryFastDeleteExpired = `DELETE FROM fast_tokens WHERE expires_at <= ?`
)

// fastStmts are the prepared statements of a token login, which runs
// once per reconnect of every FAST client: preparing them each time cost
// more than running them (modernc.org/sqlite, BenchmarkReconnect).
type fastStmts struct {
	tokens                   *sql.Stmt // on the readers
	get, use, obsolete, drop *sql.Stmt // on the writer
}

func (f *fastStmts) statements() []stmtSpec {
	return []stmtSpec{
		{&f.tokens, false, queryFastTokens},
		{&f.get, true, queryFastGet},
		{&f.use, true, queryFastUse},
		{&f.obsolete, true, queryFastObsolete},
		{&f.drop, true, queryFastDelete},
	}
}

// fastLockClass is the advisory lock class that serialises the token
// writes of one account in PostgreSQL ("fst"), so that two logins of one
// account cannot both pass the cap.
const fastLockClass = 0x667374

// FastTokens implements [FastTokens.FastTokens].
func (s *SQL) FastTokens(ctx context.Context, username, client string) ([]FastToken, error) {
	rows, err := s.fast.tokens.QueryContext(ctx, username, client)
	if err != nil {
		return nil, fmt.Errorf("storage: FAST tokens of %q: %w", username, err)
	}
	defer rows.Close()
	var out []FastToken
	for rows.Next() {
		t := FastToken{Username: username, Client: client}
		var created, expires, used int64
		if err := rows.Scan(&t.ID, &t.Mechanism, &created, &expires, &t.LastCount, &used); err != nil {
			return nil, fmt.Errorf("storage: FAST tokens of %q: %w", username, err)
		}
		t.Created, t.Expires = time.Unix(created, 0), time.Unix(expires, 0)
		if used != 0 {
			t.Used = time.Unix(used, 0)
		}
		out = append(out, t)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("storage: FAST tokens of %q: %w", username, err)
	}
	return out, nil
}

// AddFastToken implements [FastTokens.AddFastToken].
func (s *SQL) AddFastToken(ctx context.Context, t FastToken, max int, keep string) error {
	switch {
	case t.Username == "":
		return ErrEmptyUsername
	case t.ID == "":
		return fmt.Errorf("storage: FAST token of %q: empty id", t.Username)
	case !validText(t.Username) || !validText(t.ID) || !validText(t.Client) || !validText(t.Mechanism) || !validText(keep):
		return fmt.Errorf("%w: FAST token of %q", ErrInvalidText, t.Username)
	}
	err := s.inTx(ctx, s.write, nil, func(tx *sql.Tx) error {
		if err := s.dialect.lockUser(ctx, tx, fastLockClass, t.Username); err != nil {
			return err
		}
		d := s.dialect
		if _, err := tx.ExecContext(ctx, d.rebind(queryFastPruneAccount), t.Username, t.Created.Unix(), t.Client, keep); err != nil {
			return err
		}
		if max > 0 {
			var n int
			if err := tx.QueryRowContext(ctx, d.rebind(queryFastCount), t.Username).Scan(&n); err != nil {
				return err
			}
			if n >= max {
				if _, err := tx.ExecContext(ctx, d.rebind(queryFastEvict), t.Username, t.Username, keep, n-max+1); err != nil {
					return err
				}
			}
		}
		res, err := tx.ExecContext(ctx, d.rebind(queryFastInsert), t.Username, t.ID, t.Client, t.Mechanism,
			t.Created.Unix(), t.Expires.Unix(), int64(-1))
		if err != nil {
			return err
		}
		return wantOneRow(res, ErrExists, t.Username)
	})
	if err != nil {
		return fmt.Errorf("storage: add FAST token of %q: %w", t.Username, err)
	}
	return nil
}

// UseFastToken implements [FastTokens.UseFastToken].
func (s *SQL) UseFastToken(ctx context.Context, username, id string, count int64, now time.Time, invalidate bool) error {
	err := s.inTx(ctx, s.write, nil, func(tx *sql.Tx) error {
		var client string
		var expires int64
		err := tx.StmtContext(ctx, s.fast.get).QueryRowContext(ctx, username, id).Scan(&client, &expires)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("%w: FAST token %s", ErrNotFound, id)
		}
		if err != nil {
			return err
		}
		res, err := tx.StmtContext(ctx, s.fast.use).ExecContext(ctx, now.Unix(), count, count, username, id, count, count)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil {
			return err
		} else if n == 0 {
			return fmt.Errorf("%w: count %d", ErrReplayed, count)
		}
		if _, err := tx.StmtContext(ctx, s.fast.obsolete).ExecContext(ctx, username, client, expires); err != nil {
			return err
		}
		if invalidate {
			if _, err := tx.StmtContext(ctx, s.fast.drop).ExecContext(ctx, username, id); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("storage: use FAST token of %q: %w", username, err)
	}
	return nil
}

// DeleteFastTokens implements [FastTokens.DeleteFastTokens].
func (s *SQL) DeleteFastTokens(ctx context.Context, username string) (int64, error) {
	res, err := s.write.ExecContext(ctx, s.dialect.rebind(queryFastDeleteAll), username)
	if err != nil {
		return 0, fmt.Errorf("storage: delete FAST tokens of %q: %w", username, err)
	}
	return res.RowsAffected()
}

// DeleteExpiredFastTokens implements [FastTokens.DeleteExpiredFastTokens].
func (s *SQL) DeleteExpiredFastTokens(ctx context.Context, now time.Time) (int64, error) {
	res, err := s.write.ExecContext(ctx, s.dialect.rebind(queryFastDeleteExpired), now.Unix())
	if err != nil {
		return 0, fmt.Errorf("storage: delete expired FAST tokens: %w", err)
	}
	return res.RowsAffected()
}
