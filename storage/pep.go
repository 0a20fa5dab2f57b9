package storage

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
)

// PEP (XEP-0163) and private XML storage (XEP-0049): per-account nodes with
// their configuration, the items published to them, and private XML
// fragments. The module (modules/pep) decides what is allowed; the store
// enforces the per-account limits inside the transaction that would exceed
// them, so that two concurrent publishes cannot both pass a check.

// Errors of the PEP store.
var (
	// ErrPEPNoNode reports a node that does not exist.
	ErrPEPNoNode = errors.New("storage: pep node not found")
	// ErrPEPNodeExists reports a create of a node that exists.
	ErrPEPNodeExists = errors.New("storage: pep node exists")
	// ErrPEPTooManyNodes reports that creating the node would exceed
	// the account's node limit (PEPLimits.MaxNodes).
	ErrPEPTooManyNodes = errors.New("storage: pep node limit reached")
	// ErrPEPQuota reports that storing the item would exceed the
	// account's byte limit (PEPLimits.MaxBytes).
	ErrPEPQuota = errors.New("storage: pep byte quota exceeded")
	// ErrPEPTooManySubscribers reports that a node has as many explicit
	// subscriptions as it may.
	ErrPEPTooManySubscribers = errors.New("storage: pep subscription limit reached")
	// ErrPrivateQuota reports that storing a private XML fragment would
	// exceed the account's private storage limit.
	ErrPrivateQuota = errors.New("storage: private storage quota exceeded")
)

// pepLockClass serialises one account's PEP writes in PostgreSQL.
const pepLockClass = 0x706570 // "pep"

// MaxItemsMax is PEPConfig.MaxItems for "max" (XEP-0060's integer-or-max):
// as many as the server allows.
const MaxItemsMax = -1

// PEPConfig is a node's configuration (XEP-0060 pubsub#node_config, the
// fields PEP clients set).
type PEPConfig struct {
	// Access is pubsub#access_model: "open", "presence", "roster" or
	// "whitelist".
	Access string
	// PersistItems is pubsub#persist_items: false stores no item.
	PersistItems bool
	// MaxItems is pubsub#max_items, or MaxItemsMax.
	MaxItems int
	// SendLast is pubsub#send_last_published_item: "never", "on_sub"
	// or "on_sub_and_presence".
	SendLast string
	// NotifyRetract is pubsub#notify_retract.
	NotifyRetract bool
	// RosterGroups is pubsub#roster_groups_allowed: the roster groups
	// whose members the roster access model admits, sorted, one per
	// line ("" admits the whole roster). A string keeps PEPConfig
	// comparable.
	RosterGroups string
}

// PEPNode is one node of an account.
type PEPNode struct {
	Name   string
	Config PEPConfig
}

// PEPItem is one published item: its id and the item's payload (the
// children of <item/>, as the client sent them).
type PEPItem struct {
	ID      string
	Payload []byte
}

// PEPLimits are an account's PEP limits; 0 means no limit.
type PEPLimits struct {
	// MaxNodes caps the nodes of an account.
	MaxNodes int
	// MaxItems caps the items of one node, and is what "max" means.
	MaxItems int
	// MaxBytes caps the payload bytes of all the account's items.
	MaxBytes int64
}

// PEP is the store of PEP nodes and items; SQL implements it. Owners are
// localparts.
type PEP interface {
	// PEPNodes returns the account's nodes, sorted by name.
	PEPNodes(ctx context.Context, owner string) ([]PEPNode, error)
	// PEPNode returns one node; ok is false when it does not exist.
	PEPNode(ctx context.Context, owner, node string) (n PEPNode, ok bool, err error)
	// PEPCreate creates a node: ErrPEPNodeExists, ErrPEPTooManyNodes.
	PEPCreate(ctx context.Context, owner string, n PEPNode, lim PEPLimits) error
	// PEPConfigure replaces a node's configuration and drops the oldest
	// items beyond its new maximum (all of them when it does not
	// persist items): ErrPEPNoNode.
	PEPConfigure(ctx context.Context, owner string, n PEPNode, lim PEPLimits) error
	// PEPPublish stores item in node, creating the node with create's
	// configuration when it does not exist (ErrPEPTooManyNodes). For an
	// existing node, check (nil: none) sees its configuration first and
	// an error it returns is returned as is. The item replaces one of
	// the same id, becomes the newest, and the oldest beyond the node's
	// maximum are dropped; a node that does not persist items stores
	// nothing. It returns the configuration in force.
	PEPPublish(ctx context.Context, owner string, node string, create PEPConfig, check func(PEPConfig) error, item PEPItem, lim PEPLimits) (PEPConfig, error)
	// PEPItems returns a node's items, oldest first: those with the
	// given ids (nil: all), at most the newest max (0: all).
	PEPItems(ctx context.Context, owner, node string, ids []string, max int) ([]PEPItem, error)
	// PEPRetract deletes an item; it reports whether it existed.
	PEPRetract(ctx context.Context, owner, node, id string) (bool, error)
	// PEPDelete deletes a node, its items and subscriptions; it reports
	// whether it existed.
	PEPDelete(ctx context.Context, owner, node string) (bool, error)
	// PEPSubscribe records an explicit subscription of jid to an
	// existing node (ErrPEPNoNode), at most max per node (0: no limit;
	// ErrPEPTooManySubscribers). Subscribing again is no change.
	PEPSubscribe(ctx context.Context, owner, node, jid string, max int) error
	// PEPUnsubscribe removes one; it reports whether it existed.
	PEPUnsubscribe(ctx context.Context, owner, node, jid string) (bool, error)
	// PEPSubscribers returns the JIDs subscribed to a node.
	PEPSubscribers(ctx context.Context, owner, node string) ([]string, error)
}

// Private is the XEP-0049 store; SQL implements it. A fragment is keyed by
// its root element's namespace and name.
type Private interface {
	// PrivateXML returns the stored fragment, nil when none.
	PrivateXML(ctx context.Context, owner, ns, local string) ([]byte, error)
	// SetPrivateXML stores (replaces) a fragment, refusing with
	// ErrPrivateQuota when the account's fragments would exceed maxBytes
	// (0: no limit).
	SetPrivateXML(ctx context.Context, owner, ns, local string, xml []byte, maxBytes int64) error
}

const (
	queryPEPNodes = `SELECT node, access_model, persist_items, max_items, send_last, notify_retract, roster_groups
		FROM pep_nodes WHERE username = ? ORDER BY node`
	queryPEPNode = `SELECT node, access_model, persist_items, max_items, send_last, notify_retract, roster_groups
		FROM pep_nodes WHERE username = ? AND node = ?`
	queryPEPInsertNode = `INSERT INTO pep_nodes (username, node, access_model, persist_items, max_items, send_last, notify_retract, roster_groups)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?)`
	queryPEPUpdateNode = `UPDATE pep_nodes SET access_model = ?, persist_items = ?, max_items = ?, send_last = ?, notify_retract = ?, roster_groups = ?
		WHERE username = ? AND node = ?`
	queryPEPCountNodes = `SELECT COUNT(*) FROM pep_nodes WHERE username = ?`
	queryPEPNextSeq    = `SELECT COALESCE(MAX(seq), 0) + 1 FROM pep_items WHERE username = ? AND node = ?`
	queryPEPPutItem    = `INSERT INTO pep_items (username, node, item_id, seq, payload) VALUES (?, ?, ?, ?, ?)
		ON CONFLICT (username, node, item_id) DO UPDATE SET seq = excluded.seq, payload = excluded.payload`
	// The seq of the keep-th newest item: everything older goes.
	queryPEPTrim = `DELETE FROM pep_items WHERE username = ? AND node = ? AND seq <= (
		SELECT seq FROM pep_items WHERE username = ? AND node = ? ORDER BY seq DESC LIMIT 1 OFFSET ?)`
	queryPEPBytes     = `SELECT COALESCE(SUM(OCTET_LENGTH(payload)), 0) FROM pep_items WHERE username = ?`
	queryPEPItems     = `SELECT item_id, payload FROM pep_items WHERE username = ? AND node = ? ORDER BY seq`
	queryPEPLastItems = `SELECT item_id, payload FROM (SELECT item_id, payload, seq FROM pep_items
		WHERE username = ? AND node = ? ORDER BY seq DESC LIMIT ?) AS newest ORDER BY seq`
	queryPEPItem        = `SELECT item_id, payload FROM pep_items WHERE username = ? AND node = ? AND item_id = ?`
	queryPEPRetract     = `DELETE FROM pep_items WHERE username = ? AND node = ? AND item_id = ?`
	queryPEPDeleteItems = `DELETE FROM pep_items WHERE username = ? AND node = ?`
	queryPEPDeleteNode  = `DELETE FROM pep_nodes WHERE username = ? AND node = ?`

	queryPEPSubscribers  = `SELECT jid FROM pep_subscriptions WHERE username = ? AND node = ? ORDER BY jid`
	queryPEPCountSubs    = `SELECT COUNT(*) FROM pep_subscriptions WHERE username = ? AND node = ?`
	queryPEPSubscribe    = `INSERT INTO pep_subscriptions (username, node, jid) VALUES (?, ?, ?) ON CONFLICT (username, node, jid) DO NOTHING`
	queryPEPUnsubscribe  = `DELETE FROM pep_subscriptions WHERE username = ? AND node = ? AND jid = ?`
	queryPEPDeleteSubs   = `DELETE FROM pep_subscriptions WHERE username = ? AND node = ?`
	queryPEPIsSubscribed = `SELECT COUNT(*) FROM pep_subscriptions WHERE username = ? AND node = ? AND jid = ?`

	queryPrivate    = `SELECT xml FROM private_xml WHERE username = ? AND name = ?`
	queryPutPrivate = `INSERT INTO private_xml (username, name, xml) VALUES (?, ?, ?)
		ON CONFLICT (username, name) DO UPDATE SET xml = excluded.xml`
	queryPrivateBytes = `SELECT COALESCE(SUM(OCTET_LENGTH(xml)), 0) FROM private_xml WHERE username = ? AND name <> ?`
)

// pepStmts are the prepared statements of [PEP] and [Private]: a publish
// runs six, and parsing them each time cost more than running them.
type pepStmts struct {
	nodes, node, items, lastItems, item, private                       *sql.Stmt
	txNode, insertNode, updateNode, countNodes, nextSeq, putItem, trim *sql.Stmt
	bytes, retract, deleteItems, deleteNode, putPrivate, privateBytes  *sql.Stmt
	subscribers, countSubs, subscribe, unsubscribe, deleteSubs, isSub  *sql.Stmt
}

func (m *pepStmts) statements() []stmtSpec {
	return []stmtSpec{
		{&m.nodes, false, queryPEPNodes},
		{&m.node, false, queryPEPNode},
		{&m.items, false, queryPEPItems},
		{&m.lastItems, false, queryPEPLastItems},
		{&m.item, false, queryPEPItem},
		{&m.private, false, queryPrivate},
		{&m.txNode, true, queryPEPNode},
		{&m.insertNode, true, queryPEPInsertNode},
		{&m.updateNode, true, queryPEPUpdateNode},
		{&m.countNodes, true, queryPEPCountNodes},
		{&m.nextSeq, true, queryPEPNextSeq},
		{&m.putItem, true, queryPEPPutItem},
		{&m.trim, true, queryPEPTrim},
		{&m.bytes, true, queryPEPBytes},
		{&m.retract, true, queryPEPRetract},
		{&m.deleteItems, true, queryPEPDeleteItems},
		{&m.deleteNode, true, queryPEPDeleteNode},
		{&m.putPrivate, true, queryPutPrivate},
		{&m.privateBytes, true, queryPrivateBytes},
		{&m.subscribers, false, queryPEPSubscribers},
		{&m.countSubs, true, queryPEPCountSubs},
		{&m.subscribe, true, queryPEPSubscribe},
		{&m.unsubscribe, true, queryPEPUnsubscribe},
		{&m.deleteSubs, true, queryPEPDeleteSubs},
		{&m.isSub, true, queryPEPIsSubscribed},
	}
}

type rowScanner interface{ Scan(dest ...any) error }

func scanNode(r rowScanner) (PEPNode, error) {
	var (
		n                          PEPNode
		persist, retract, maxItems int64
	)
	err := r.Scan(&n.Name, &n.Config.Access, &persist, &maxItems, &n.Config.SendLast, &retract, &n.Config.RosterGroups)
	n.Config.PersistItems, n.Config.MaxItems, n.Config.NotifyRetract = persist != 0, int(maxItems), retract != 0
	return n, err
}

// PEPNodes implements [PEP.PEPNodes].
func (s *SQL) PEPNodes(ctx context.Context, owner string) ([]PEPNode, error) {
	rows, err := s.pep.nodes.QueryContext(ctx, owner)
	if err != nil {
		return nil, fmt.Errorf("storage: pep nodes of %q: %w", owner, err)
	}
	defer rows.Close()
	var out []PEPNode
	for rows.Next() {
		n, err := scanNode(rows)
		if err != nil {
			return nil, fmt.Errorf("storage: pep nodes of %q: %w", owner, err)
		}
		out = append(out, n)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("storage: pep nodes of %q: %w", owner, err)
	}
	return out, nil
}

// PEPNode implements [PEP.PEPNode].
func (s *SQL) PEPNode(ctx context.Context, owner, node string) (PEPNode, bool, error) {
	n, err := scanNode(s.pep.node.QueryRowContext(ctx, owner, node))
	if errors.Is(err, sql.ErrNoRows) {
		return PEPNode{}, false, nil
	}
	if err != nil {
		return PEPNode{}, false, fmt.Errorf("storage: pep node %q of %q: %w", node, owner, err)
	}
	return n, true, nil
}

// pepTx runs fn in a write transaction holding the account's PEP lock.
func (s *SQL) pepTx(ctx context.Context, owner string, fn func(tx *sql.Tx) error) error {
	return s.inTx(ctx, s.write, nil, func(tx *sql.Tx) error {
		if err := s.dialect.lockUser(ctx, tx, pepLockClass, owner); err != nil {
			return err
		}
		return fn(tx)
	})
}

func (s *SQL) txNode(ctx context.Context, tx *sql.Tx, owner, node string) (PEPNode, bool, error) {
	n, err := scanNode(tx.StmtContext(ctx, s.pep.txNode).QueryRowContext(ctx, owner, node))
	if errors.Is(err, sql.ErrNoRows) {
		return PEPNode{}, false, nil
	}
	return n, err == nil, err
}

func (s *SQL) insertNode(ctx context.Context, tx *sql.Tx, owner string, n PEPNode, lim PEPLimits) error {
	if lim.MaxNodes > 0 {
		var count int
		if err := tx.StmtContext(ctx, s.pep.countNodes).QueryRowContext(ctx, owner).Scan(&count); err != nil {
			return err
		}
		if count >= lim.MaxNodes {
			return ErrPEPTooManyNodes
		}
	}
	c := n.Config
	_, err := tx.StmtContext(ctx, s.pep.insertNode).ExecContext(ctx, owner, n.Name, c.Access,
		boolInt(c.PersistItems), int64(c.MaxItems), c.SendLast, boolInt(c.NotifyRetract), c.RosterGroups)
	return err
}

// trim drops the oldest items of a node beyond what its configuration
// keeps.
func (s *SQL) trim(ctx context.Context, tx *sql.Tx, owner, node string, c PEPConfig, lim PEPLimits) error {
	keep := c.MaxItems
	if keep == MaxItemsMax || (lim.MaxItems > 0 && keep > lim.MaxItems) {
		keep = lim.MaxItems
	}
	if !c.PersistItems {
		keep = 0
	}
	if keep <= 0 && c.PersistItems {
		return nil // no limit at all
	}
	if keep == 0 {
		_, err := tx.StmtContext(ctx, s.pep.deleteItems).ExecContext(ctx, owner, node)
		return err
	}
	_, err := tx.StmtContext(ctx, s.pep.trim).ExecContext(ctx, owner, node, owner, node, keep)
	return err
}

// PEPCreate implements [PEP.PEPCreate].
func (s *SQL) PEPCreate(ctx context.Context, owner string, n PEPNode, lim PEPLimits) error {
	if !validText(owner) || !validText(n.Name) || !validText(n.Config.RosterGroups) {
		return fmt.Errorf("%w: pep node of %q", ErrInvalidText, owner)
	}
	err := s.pepTx(ctx, owner, func(tx *sql.Tx) error {
		if _, ok, err := s.txNode(ctx, tx, owner, n.Name); err != nil {
			return err
		} else if ok {
			return ErrPEPNodeExists
		}
		return s.insertNode(ctx, tx, owner, n, lim)
	})
	if err != nil {
		return fmt.Errorf("storage: create pep node %q of %q: %w", n.Name, owner, err)
	}
	return nil
}

// PEPConfigure implements [PEP.PEPConfigure].
func (s *SQL) PEPConfigure(ctx context.Context, owner string, n PEPNode, lim PEPLimits) error {
	if !validText(n.Config.RosterGroups) {
		return fmt.Errorf("%w: pep node of %q", ErrInvalidText, owner)
	}
	err := s.pepTx(ctx, owner, func(tx *sql.Tx) error {
		c := n.Config
		res, err := tx.StmtContext(ctx, s.pep.updateNode).ExecContext(ctx, c.Access, boolInt(c.PersistItems),
			int64(c.MaxItems), c.SendLast, boolInt(c.NotifyRetract), c.RosterGroups, owner, n.Name)
		if err != nil {
			return err
		}
		if k, err := res.RowsAffected(); err != nil {
			return err
		} else if k == 0 {
			return ErrPEPNoNode
		}
		return s.trim(ctx, tx, owner, n.Name, c, lim)
	})
	if err != nil {
		return fmt.Errorf("storage: configure pep node %q of %q: %w", n.Name, owner, err)
	}
	return nil
}

// PEPPublish implements [PEP.PEPPublish].
func (s *SQL) PEPPublish(ctx context.Context, owner, node string, create PEPConfig, check func(PEPConfig) error, item PEPItem, lim PEPLimits) (PEPConfig, error) {
	if !validText(owner) || !validText(node) || !validText(item.ID) || !validBytes(item.Payload) || !validText(create.RosterGroups) {
		return PEPConfig{}, fmt.Errorf("%w: pep item of %q", ErrInvalidText, owner)
	}
	var cfg PEPConfig
	err := s.pepTx(ctx, owner, func(tx *sql.Tx) error {
		n, ok, err := s.txNode(ctx, tx, owner, node)
		if err != nil {
			return err
		}
		if ok {
			if check != nil {
				if err := check(n.Config); err != nil {
					return err
				}
			}
			cfg = n.Config
		} else {
			cfg = create
			if err := s.insertNode(ctx, tx, owner, PEPNode{Name: node, Config: create}, lim); err != nil {
				return err
			}
		}
		if !cfg.PersistItems {
			return nil
		}
		var seq int64
		if err := tx.StmtContext(ctx, s.pep.nextSeq).QueryRowContext(ctx, owner, node).Scan(&seq); err != nil {
			return err
		}
		if _, err := tx.StmtContext(ctx, s.pep.putItem).ExecContext(ctx, owner, node, item.ID, seq, string(item.Payload)); err != nil {
			return err
		}
		if err := s.trim(ctx, tx, owner, node, cfg, lim); err != nil {
			return err
		}
		if lim.MaxBytes > 0 {
			var total int64
			if err := tx.StmtContext(ctx, s.pep.bytes).QueryRowContext(ctx, owner).Scan(&total); err != nil {
				return err
			}
			if total > lim.MaxBytes {
				return ErrPEPQuota // rolls the whole publish back
			}
		}
		return nil
	})
	if err != nil {
		return PEPConfig{}, fmt.Errorf("storage: publish to pep node %q of %q: %w", node, owner, err)
	}
	return cfg, nil
}

// PEPItems implements [PEP.PEPItems].
func (s *SQL) PEPItems(ctx context.Context, owner, node string, ids []string, max int) ([]PEPItem, error) {
	var out []PEPItem
	scan := func(rows *sql.Rows) error {
		defer rows.Close()
		for rows.Next() {
			var it PEPItem
			var payload string
			if err := rows.Scan(&it.ID, &payload); err != nil {
				return err
			}
			it.Payload = []byte(payload)
			out = append(out, it)
		}
		return rows.Err()
	}
	var err error
	switch {
	case ids != nil:
		for _, id := range ids {
			var rows *sql.Rows
			if rows, err = s.pep.item.QueryContext(ctx, owner, node, id); err != nil {
				break
			}
			if err = scan(rows); err != nil {
				break
			}
		}
	case max > 0:
		var rows *sql.Rows
		if rows, err = s.pep.lastItems.QueryContext(ctx, owner, node, max); err == nil {
			err = scan(rows)
		}
	default:
		var rows *sql.Rows
		if rows, err = s.pep.items.QueryContext(ctx, owner, node); err == nil {
			err = scan(rows)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("storage: items of pep node %q of %q: %w", node, owner, err)
	}
	return out, nil
}

// PEPRetract implements [PEP.PEPRetract].
func (s *SQL) PEPRetract(ctx context.Context, owner, node, id string) (bool, error) {
	var found bool
	err := s.pepTx(ctx, owner, func(tx *sql.Tx) error {
		res, err := tx.StmtContext(ctx, s.pep.retract).ExecContext(ctx, owner, node, id)
		if err != nil {
			return err
		}
		k, err := res.RowsAffected()
		found = k > 0
		return err
	})
	if err != nil {
		return false, fmt.Errorf("storage: retract from pep node %q of %q: %w", node, owner, err)
	}
	return found, nil
}

// PEPDelete implements [PEP.PEPDelete].
func (s *SQL) PEPDelete(ctx context.Context, owner, node string) (bool, error) {
	var found bool
	err := s.pepTx(ctx, owner, func(tx *sql.Tx) error {
		if _, err := tx.StmtContext(ctx, s.pep.deleteItems).ExecContext(ctx, owner, node); err != nil {
			return err
		}
		if _, err := tx.StmtContext(ctx, s.pep.deleteSubs).ExecContext(ctx, owner, node); err != nil {
			return err
		}
		res, err := tx.StmtContext(ctx, s.pep.deleteNode).ExecContext(ctx, owner, node)
		if err != nil {
			return err
		}
		k, err := res.RowsAffected()
		found = k > 0
		return err
	})
	if err != nil {
		return false, fmt.Errorf("storage: delete pep node %q of %q: %w", node, owner, err)
	}
	return found, nil
}

// PEPSubscribe implements [PEP.PEPSubscribe].
func (s *SQL) PEPSubscribe(ctx context.Context, owner, node, jid string, max int) error {
	if !validText(owner) || !validText(node) || !validText(jid) {
		return fmt.Errorf("%w: pep subscription of %q", ErrInvalidText, owner)
	}
	err := s.pepTx(ctx, owner, func(tx *sql.Tx) error {
		if _, ok, err := s.txNode(ctx, tx, owner, node); err != nil {
			return err
		} else if !ok {
			return ErrPEPNoNode
		}
		if max > 0 {
			var already, count int
			if err := tx.StmtContext(ctx, s.pep.isSub).QueryRowContext(ctx, owner, node, jid).Scan(&already); err != nil {
				return err
			}
			if err := tx.StmtContext(ctx, s.pep.countSubs).QueryRowContext(ctx, owner, node).Scan(&count); err != nil {
				return err
			}
			if already == 0 && count >= max {
				return ErrPEPTooManySubscribers
			}
		}
		_, err := tx.StmtContext(ctx, s.pep.subscribe).ExecContext(ctx, owner, node, jid)
		return err
	})
	if err != nil {
		return fmt.Errorf("storage: subscribe to pep node %q of %q: %w", node, owner, err)
	}
	return nil
}

// PEPUnsubscribe implements [PEP.PEPUnsubscribe].
func (s *SQL) PEPUnsubscribe(ctx context.Context, owner, node, jid string) (bool, error) {
	var found bool
	err := s.pepTx(ctx, owner, func(tx *sql.Tx) error {
		res, err := tx.StmtContext(ctx, s.pep.unsubscribe).ExecContext(ctx, owner, node, jid)
		if err != nil {
			return err
		}
		k, err := res.RowsAffected()
		found = k > 0
		return err
	})
	if err != nil {
		return false, fmt.Errorf("storage: unsubscribe from pep node %q of %q: %w", node, owner, err)
	}
	return found, nil
}

// PEPSubscribers implements [PEP.PEPSubscribers].
func (s *SQL) PEPSubscribers(ctx context.Context, owner, node string) ([]string, error) {
	rows, err := s.pep.subscribers.QueryContext(ctx, owner, node)
	if err != nil {
		return nil, fmt.Errorf("storage: subscribers of pep node %q of %q: %w", node, owner, err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var j string
		if err := rows.Scan(&j); err != nil {
			return nil, fmt.Errorf("storage: subscribers of pep node %q of %q: %w", node, owner, err)
		}
		out = append(out, j)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("storage: subscribers of pep node %q of %q: %w", node, owner, err)
	}
	return out, nil
}

// privateName is the key of a private fragment: its root's {ns}local.
func privateName(ns, local string) string { return "{" + ns + "}" + local }

// PrivateXML implements [Private.PrivateXML].
func (s *SQL) PrivateXML(ctx context.Context, owner, ns, local string) ([]byte, error) {
	var v string
	err := s.pep.private.QueryRowContext(ctx, owner, privateName(ns, local)).Scan(&v)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("storage: private xml of %q: %w", owner, err)
	}
	return []byte(v), nil
}

// SetPrivateXML implements [Private.SetPrivateXML].
func (s *SQL) SetPrivateXML(ctx context.Context, owner, ns, local string, xml []byte, maxBytes int64) error {
	name := privateName(ns, local)
	if !validText(owner) || !validText(name) || !validBytes(xml) {
		return fmt.Errorf("%w: private xml of %q", ErrInvalidText, owner)
	}
	err := s.pepTx(ctx, owner, func(tx *sql.Tx) error {
		if maxBytes > 0 {
			var others int64
			if err := tx.StmtContext(ctx, s.pep.privateBytes).QueryRowContext(ctx, owner, name).Scan(&others); err != nil {
				return err
			}
			if others+int64(len(xml)) > maxBytes {
				return ErrPrivateQuota
			}
		}
		_, err := tx.StmtContext(ctx, s.pep.putPrivate).ExecContext(ctx, owner, name, string(xml))
		return err
	})
	if err != nil {
		return fmt.Errorf("storage: set private xml of %q: %w", owner, err)
	}
	return nil
}

var (
	_ PEP     = (*SQL)(nil)
	_ Private = (*SQL)(nil)
)
