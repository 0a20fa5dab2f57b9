package storage

import (
	"context"
	"slices"
	"strconv"
	"time"
)

// Subscription is a roster item's subscription state (RFC 6121 2.1.2.5).
// The zero Subscription is SubNone.
type Subscription uint8

// Subscription states, from the user's point of view.
const (
	// SubNone: neither the user nor the contact receives the other's
	// presence.
	SubNone Subscription = iota
	// SubTo: the user receives the contact's presence.
	SubTo
	// SubFrom: the contact receives the user's presence.
	SubFrom
	// SubBoth: each receives the other's presence.
	SubBoth
)

// String returns the value of the roster item's subscription attribute:
// "none", "to", "from" or "both".
func (s Subscription) String() string {
	switch s {
	case SubNone:
		return "none"
	case SubTo:
		return "to"
	case SubFrom:
		return "from"
	case SubBoth:
		return "both"
	}
	return "subscription(" + strconv.Itoa(int(s)) + ")"
}

// valid reports whether s is one of the four declared states.
func (s Subscription) valid() bool { return s <= SubBoth }

// RosterItem is one contact in a user's roster.
type RosterItem struct {
	// Contact is the contact's bare JID, normalised (e.g. "bob@localhost"
	// or "example.org"). The store compares it byte for byte.
	Contact string
	// Name is the handle the user gave the contact; it may be "".
	Name string
	// Subscription is the subscription state.
	Subscription Subscription
	// AskOut reports that the user sent "subscribe" and awaits the
	// contact's answer (ask='subscribe' on the wire).
	AskOut bool
	// PreApproved reports that the user pre-approved the contact's
	// subscription request (RFC 6121 3.4).
	PreApproved bool
	// Groups are the roster groups, sorted and deduplicated when read.
	// Any order and duplicates are accepted when written.
	Groups []string
}

// SubscriptionRequest is an inbound subscription request the user has not
// answered yet. RFC 6121 3.1.3 has the server store it and deliver it at
// each login until it is answered.
type SubscriptionRequest struct {
	// From is the requester's bare JID.
	From string
	// Stanza is the presence stanza of the request, as received.
	Stanza []byte
}

// OfflineMessage is a message stored for a user who was offline (XEP-0160).
type OfflineMessage struct {
	// ID orders the messages and names them to [IM.DeleteOffline]. IDs
	// only grow: one is never reused, even after deletion.
	ID int64
	// Stanza is the message stanza as it was to be delivered.
	Stanza []byte
	// Stored is when the message was stored, to the second; the server
	// puts it in the XEP-0203 delay element.
	Stored time.Time
}

// RosterTx is a view of the roster tables inside one transaction: every
// change made through it is committed together or not at all. It is valid
// only during the function given to [IM.UpdateRosters], and only on that
// function's goroutine.
//
// Methods take usernames (normalised localparts) and contacts (normalised
// bare JIDs) and compare them byte for byte.
type RosterTx interface {
	// Item returns user's item for contact, and whether there is one.
	Item(user, contact string) (RosterItem, bool, error)
	// PutItem inserts or replaces the item for item.Contact in user's
	// roster and bumps user's roster version.
	PutItem(user string, item RosterItem) error
	// DeleteItem removes user's item for contact, reporting whether there
	// was one; it bumps user's roster version if there was.
	DeleteItem(user, contact string) (bool, error)
	// Version returns user's current roster version, 0 for a roster that
	// has never changed.
	Version(user string) (uint64, error)
	// Request returns the pending subscription request from the bare JID
	// from to user, and whether there is one.
	Request(user, from string) (SubscriptionRequest, bool, error)
	// PutRequest stores r for user, replacing any earlier request from the
	// same JID.
	PutRequest(user string, r SubscriptionRequest) error
	// DeleteRequest removes the pending request from the bare JID from to
	// user, reporting whether there was one.
	DeleteRequest(user, from string) (bool, error)
}

// IM is the instant-messaging store: rosters and subscription requests
// (RFC 6121), offline messages (XEP-0160), blocklists (XEP-0191) and vCards
// (XEP-0054). Users are normalised localparts, compared byte for byte;
// other JIDs are normalised bare JIDs. Text (stanzas, names, JIDs, groups)
// must be valid UTF-8 without NUL, as XML is; anything else is refused.
//
// Implementations are safe for concurrent use. Every method honours its
// context's cancellation and deadline.
type IM interface {
	// Roster returns the user's items sorted byte-wise by contact, and
	// the roster version, both from one consistent snapshot.
	Roster(ctx context.Context, user string) ([]RosterItem, uint64, error)
	// UpdateRosters runs fn in one transaction and commits it if fn
	// returns nil; if fn returns an error, nothing fn did is kept and the
	// error is returned as is. Transactions that fail on a conflict with
	// another (a serialization failure, a busy database) are retried, so
	// fn may run more than once and must have no effect other than
	// through tx. Subscription changes update the user's and the
	// contact's rosters at once through it.
	UpdateRosters(ctx context.Context, fn func(tx RosterTx) error) error
	// Requests returns the pending inbound subscription requests for
	// user, sorted byte-wise by From.
	Requests(ctx context.Context, user string) ([]SubscriptionRequest, error)

	// StoreOffline appends a message for user unless user already has
	// quota messages stored, in which case it returns ErrQuota. quota <= 0
	// means no limit.
	StoreOffline(ctx context.Context, user string, stanza []byte, quota int) error
	// StoreOfflineWithin is StoreOffline with a quota in bytes as well: it
	// returns ErrQuota when user already has maxMessages messages stored,
	// or when the stored stanzas and this one would exceed maxBytes bytes
	// together. A quota <= 0 means no limit of that kind.
	StoreOfflineWithin(ctx context.Context, user string, stanza []byte, maxMessages int, maxBytes int64) error
	// Offline returns the user's stored messages, oldest first.
	Offline(ctx context.Context, user string) ([]OfflineMessage, error)
	// OfflineBatch returns at most limit of the user's stored messages
	// with an ID greater than afterID, oldest first, so that a large
	// store is read in bounded pieces: pass the last ID of one batch to
	// get the next. limit <= 0 returns none.
	OfflineBatch(ctx context.Context, user string, afterID int64, limit int) ([]OfflineMessage, error)
	// DeleteOffline removes the user's messages with ID <= upTo, once they
	// have been delivered. Messages stored since they were read have
	// greater IDs and stay.
	DeleteOffline(ctx context.Context, user string, upTo int64) error

	// Blocklist returns the JIDs user blocks (XEP-0191), sorted
	// byte-wise.
	Blocklist(ctx context.Context, user string) ([]string, error)
	// Block adds jids to user's blocklist; blocking a JID twice is not an
	// error.
	Block(ctx context.Context, user string, jids []string) error
	// Unblock removes jids from user's blocklist; an empty jids unblocks
	// all. Unblocking a JID that is not blocked is not an error.
	Unblock(ctx context.Context, user string, jids []string) error

	// VCard returns user's stored vCard XML (XEP-0054), nil if none.
	VCard(ctx context.Context, user string) ([]byte, error)
	// SetVCard replaces user's vCard; a nil or empty vcard deletes it.
	SetVCard(ctx context.Context, user string, vcard []byte) error

	// LastActivity returns when user's last resource went unavailable
	// and the status it gave (XEP-0012); ok is false if never recorded.
	LastActivity(ctx context.Context, user string) (a Activity, ok bool, err error)
	// SetLastActivity records user's last activity, replacing the
	// previous one. It returns ErrNotFound if user has no account.
	SetLastActivity(ctx context.Context, user string, a Activity) error
	// SetLastActivities records the last activity of several accounts in
	// one transaction, one commit instead of one per logout. Accounts that
	// no longer exist are skipped; an invalid status is reported and the
	// others are still written.
	SetLastActivities(ctx context.Context, acts map[string]Activity) error
}

// Activity is when an account's last available resource went away
// (XEP-0012), and the status text of its unavailable presence.
type Activity struct {
	// At is stored to the second.
	At time.Time
	// Status is the text of <status/>, unescaped; "" if none.
	Status string
}

// normalGroups returns groups sorted and deduplicated, in a new slice so
// that the caller's is left alone; nil for none.
func normalGroups(groups []string) []string {
	if len(groups) == 0 {
		return nil
	}
	g := slices.Clone(groups)
	slices.Sort(g)
	return slices.Compact(g)
}
