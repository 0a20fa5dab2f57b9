package timerwheel_test

import (
	"fmt"
	"time"

	"github.com/krill-xmpp/krill/timerwheel"
)

// conn stands for a connection's state: its one deadline is embedded in
// it, so arming costs no allocation.
type conn struct {
	name     string
	deadline timerwheel.Timer[*conn]
}

func Example() {
	start := time.Now()
	w := timerwheel.New(100*time.Millisecond, start, func(c *conn) {
		fmt.Println("deadline passed:", c.name)
	})

	a := &conn{name: "a"}
	b := &conn{name: "b"}
	w.ArmAfter(&a.deadline, a, 60*time.Second) // pre-auth deadline
	w.ArmAfter(&b.deadline, b, 60*time.Second)

	// b authenticates: its deadline becomes an idle timer.
	w.ArmAfter(&b.deadline, b, 5*time.Minute)

	// The event loop calls Advance on every tick; a long gap is fine too.
	fmt.Println("fired:", w.Advance(start.Add(59*time.Second)))
	fmt.Println("fired:", w.Advance(start.Add(60*time.Second)))

	// b disconnects before its idle deadline.
	fmt.Println("cancelled:", w.Cancel(&b.deadline), "armed:", w.Len())
	// Output:
	// fired: 0
	// deadline passed: a
	// fired: 1
	// cancelled: true armed: 0
}
