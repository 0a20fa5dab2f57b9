package roster

import (
	"testing"

	"github.com/krill-xmpp/krill/storage"
)

// memTx is an in-memory storage.RosterTx for testing the subscription
// state machine against RFC 6121's tables without a database.
type memTx struct {
	items map[[2]string]storage.RosterItem
	reqs  map[[2]string]storage.SubscriptionRequest
	ver   map[string]uint64
}

func newMemTx() *memTx {
	return &memTx{items: map[[2]string]storage.RosterItem{}, reqs: map[[2]string]storage.SubscriptionRequest{}, ver: map[string]uint64{}}
}

func (m *memTx) Item(user, contact string) (storage.RosterItem, bool, error) {
	it, ok := m.items[[2]string{user, contact}]
	return it, ok, nil
}
func (m *memTx) PutItem(user string, it storage.RosterItem) error {
	m.items[[2]string{user, it.Contact}] = it
	m.ver[user]++
	return nil
}
func (m *memTx) DeleteItem(user, contact string) (bool, error) {
	_, ok := m.items[[2]string{user, contact}]
	delete(m.items, [2]string{user, contact})
	if ok {
		m.ver[user]++
	}
	return ok, nil
}
func (m *memTx) Version(user string) (uint64, error) { return m.ver[user], nil }
func (m *memTx) Request(user, from string) (storage.SubscriptionRequest, bool, error) {
	r, ok := m.reqs[[2]string{user, from}]
	return r, ok, nil
}
func (m *memTx) PutRequest(user string, r storage.SubscriptionRequest) error {
	m.reqs[[2]string{user, r.From}] = r
	return nil
}
func (m *memTx) DeleteRequest(user, from string) (bool, error) {
	_, ok := m.reqs[[2]string{user, from}]
	delete(m.reqs, [2]string{user, from})
	return ok, nil
}

// The nine subscription states of RFC 6121 appendix A, from the user's
// side, and how each looks in storage on both sides.
var subStates = map[string]struct {
	u, c            storage.Subscription
	pendOut, pendIn bool
}{
	"None":               {storage.SubNone, storage.SubNone, false, false},
	"None+PendingOut":    {storage.SubNone, storage.SubNone, true, false},
	"None+PendingIn":     {storage.SubNone, storage.SubNone, false, true},
	"None+PendingOut+In": {storage.SubNone, storage.SubNone, true, true},
	"To":                 {storage.SubTo, storage.SubFrom, false, false},
	"To+PendingIn":       {storage.SubTo, storage.SubFrom, false, true},
	"From":               {storage.SubFrom, storage.SubTo, false, false},
	"From+PendingOut":    {storage.SubFrom, storage.SubTo, true, false},
	"Both":               {storage.SubBoth, storage.SubBoth, false, false},
}

const (
	tUser    = "user"
	tContact = "contact"
)

// setState writes a state into tx: the user's item, the contact's item,
// and the pending requests on each side.
func setState(tx *memTx, sm machine, name string) {
	st := subStates[name]
	tx.items[[2]string{tUser, sm.bare(tContact)}] = storage.RosterItem{Contact: sm.bare(tContact), Subscription: st.u, AskOut: st.pendOut}
	tx.items[[2]string{tContact, sm.bare(tUser)}] = storage.RosterItem{Contact: sm.bare(tUser), Subscription: st.c, AskOut: st.pendIn}
	if st.pendOut {
		tx.reqs[[2]string{tContact, sm.bare(tUser)}] = storage.SubscriptionRequest{From: sm.bare(tUser)}
	}
	if st.pendIn {
		tx.reqs[[2]string{tUser, sm.bare(tContact)}] = storage.SubscriptionRequest{From: sm.bare(tContact)}
	}
}

// stateOf reads the user's state back, checking that the contact's side
// mirrors it.
func stateOf(t *testing.T, tx *memTx, sm machine) string {
	t.Helper()
	u := tx.items[[2]string{tUser, sm.bare(tContact)}]
	c := tx.items[[2]string{tContact, sm.bare(tUser)}]
	_, reqAtContact := tx.reqs[[2]string{tContact, sm.bare(tUser)}]
	_, reqAtUser := tx.reqs[[2]string{tUser, sm.bare(tContact)}]
	if u.AskOut != reqAtContact {
		t.Errorf("user ask=%v but request stored at contact=%v", u.AskOut, reqAtContact)
	}
	if c.AskOut != reqAtUser {
		t.Errorf("contact ask=%v but request stored at user=%v", c.AskOut, reqAtUser)
	}
	for name, st := range subStates {
		if st.u == u.Subscription && st.c == c.Subscription && st.pendOut == u.AskOut && st.pendIn == c.AskOut {
			return name
		}
	}
	t.Fatalf("inconsistent pair: user %+v, contact %+v", u, c)
	return ""
}

// TestSubscriptionStates checks every outbound subscription stanza from
// every state against RFC 6121 appendix A.2 (the user's side), with the
// contact's side (appendix A.3) applied at once, as both are local.
func TestSubscriptionStates(t *testing.T) {
	sm := machine{domain: "localhost"}
	cases := []struct{ from, op, to string }{
		// A.2.1 subscribe. A local contact answers at once where it has
		// already approved: To+PendingIn stays (the contact's request is
		// still pending), From+PendingOut is the contact's view pending.
		{"None", "subscribe", "None+PendingOut"},
		{"None+PendingOut", "subscribe", "None+PendingOut"},
		{"None+PendingIn", "subscribe", "None+PendingOut+In"},
		{"None+PendingOut+In", "subscribe", "None+PendingOut+In"},
		{"To", "subscribe", "To"},
		{"To+PendingIn", "subscribe", "To+PendingIn"},
		{"From", "subscribe", "From+PendingOut"},
		{"From+PendingOut", "subscribe", "From+PendingOut"},
		{"Both", "subscribe", "Both"},
		// A.2.2 subscribed.
		{"None", "subscribed", "None"}, // a pre-approval, not a state change
		{"None+PendingOut", "subscribed", "None+PendingOut"},
		{"None+PendingIn", "subscribed", "From"},
		{"None+PendingOut+In", "subscribed", "From+PendingOut"},
		{"To", "subscribed", "To"},
		{"To+PendingIn", "subscribed", "Both"},
		{"From", "subscribed", "From"},
		{"From+PendingOut", "subscribed", "From+PendingOut"},
		{"Both", "subscribed", "Both"},
		// A.2.3 unsubscribe.
		{"None", "unsubscribe", "None"},
		{"None+PendingOut", "unsubscribe", "None"},
		{"None+PendingIn", "unsubscribe", "None+PendingIn"},
		{"None+PendingOut+In", "unsubscribe", "None+PendingIn"},
		{"To", "unsubscribe", "None"},
		{"To+PendingIn", "unsubscribe", "None+PendingIn"},
		{"From", "unsubscribe", "From"},
		{"From+PendingOut", "unsubscribe", "From"},
		{"Both", "unsubscribe", "From"},
		// A.2.4 unsubscribed.
		{"None", "unsubscribed", "None"},
		{"None+PendingOut", "unsubscribed", "None+PendingOut"},
		{"None+PendingIn", "unsubscribed", "None"},
		{"None+PendingOut+In", "unsubscribed", "None+PendingOut"},
		{"To", "unsubscribed", "To"},
		{"To+PendingIn", "unsubscribed", "To"},
		{"From", "unsubscribed", "None"},
		{"From+PendingOut", "unsubscribed", "None+PendingOut"},
		{"Both", "unsubscribed", "To"},
	}
	for _, tc := range cases {
		t.Run(tc.from+" "+tc.op, func(t *testing.T) {
			tx := newMemTx()
			setState(tx, sm, tc.from)
			var fx effects
			if err := sm.run(tx, &fx, tc.op, tUser, tContact); err != nil {
				t.Fatal(err)
			}
			if got := stateOf(t, tx, sm); got != tc.to {
				t.Fatalf("%s after %s = %s, want %s", tc.from, tc.op, got, tc.to)
			}
		})
	}
}

// TestPreApproval: RFC 6121 3.4, a pre-approved contact's request is
// approved at once, and the pre-approval is consumed.
func TestPreApproval(t *testing.T) {
	sm := machine{domain: "localhost"}
	tx := newMemTx()
	setState(tx, sm, "None")
	var fx effects
	// The contact pre-approves the user, then the user subscribes.
	if err := sm.subscribed(tx, &fx, tContact, tUser); err != nil {
		t.Fatal(err)
	}
	if it := tx.items[[2]string{tContact, sm.bare(tUser)}]; !it.PreApproved {
		t.Fatalf("no pre-approval recorded: %+v", it)
	}
	if err := sm.subscribe(tx, &fx, tUser, tContact); err != nil {
		t.Fatal(err)
	}
	if got := stateOf(t, tx, sm); got != "To" {
		t.Fatalf("state %s, want To", got)
	}
	if it := tx.items[[2]string{tContact, sm.bare(tUser)}]; it.PreApproved {
		t.Fatal("pre-approval not consumed")
	}
}
