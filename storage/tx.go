package storage

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"
)

// Retry policy of transactions that conflict with others. Under
// PostgreSQL's SERIALIZABLE isolation a conflict aborts all but one of the
// transactions involved; they run again after a random pause (full jitter)
// that doubles from txBackoff up to txMaxBackoff, so that they spread out
// instead of conflicting again in step. With 8 writers on one pair of
// rosters, the test suite's worst case, a few attempts suffice; the bound
// only stops a livelock from becoming a hang.
const (
	maxTxAttempts = 50
	txBackoff     = time.Millisecond
	txMaxBackoff  = 64 * time.Millisecond
)

// inTx runs fn in a transaction of db with opts and commits it, running it
// again while it fails on a conflict that [Dialect.retryable] recognises
// (up to maxTxAttempts times, and while ctx lasts). The error of fn is
// returned as is; other errors are returned unwrapped too, for the caller
// to wrap with what it was doing.
func (s *SQL) inTx(ctx context.Context, db *sql.DB, opts *sql.TxOptions, fn func(*sql.Tx) error) error {
	backoff := txBackoff
	for attempt := 1; ; attempt++ {
		err := runTx(ctx, db, opts, fn)
		if err == nil || !s.dialect.retryable(err) {
			return err
		}
		if attempt == maxTxAttempts {
			return fmt.Errorf("transaction still conflicting after %d attempts: %w", attempt, err)
		}
		t := time.NewTimer(rand.N(backoff) + 1)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%w (retrying after: %w)", ctx.Err(), err)
		case <-t.C:
		}
		backoff = min(2*backoff, txMaxBackoff)
	}
}

// runTx runs fn in one transaction: it commits if fn returns nil and rolls
// back otherwise, and also if fn panics, so that a panic cannot leave
// SQLite's only writer connection inside a transaction.
func runTx(ctx context.Context, db *sql.DB, opts *sql.TxOptions, fn func(*sql.Tx) error) (err error) {
	tx, err := db.BeginTx(ctx, opts)
	if err != nil {
		return err
	}
	ended := false
	defer func() {
		if !ended {
			tx.Rollback() // fn panicked; the panic goes on
		}
	}()
	err = fn(tx)
	ended = true
	if err != nil {
		if rerr := ignoreDone(tx.Rollback()); rerr != nil {
			return errors.Join(err, rerr)
		}
		return err
	}
	return tx.Commit()
}
