package storage

import (
	"bufio"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// killChildEnv tells the test binary, re-executed by TestSQLiteKillMidWrite,
// to be the writer that gets killed: its value is the database path.
const killChildEnv = "STORAGE_TEST_KILL_CHILD_DB"

// killChildWrites bounds the child's loop; the parent kills it long before.
const killChildWrites = 5000

// TestSQLiteKillChild is the child's side: it commits, in a bounded loop,
// a two-sided roster change (user i and "hub" add each other) and an
// offline message, and reports each on stdout once its commit returned.
func TestSQLiteKillChild(t *testing.T) {
	path := os.Getenv(killChildEnv)
	if path == "" {
		t.Skip("the child of TestSQLiteKillMidWrite")
	}
	start, err := strconv.Atoi(os.Getenv(killChildEnv + "_START"))
	if err != nil {
		t.Fatal(err)
	}
	s, err := OpenSQLite(path)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	w := bufio.NewWriterSize(os.Stdout, 64)
	for i := start; i < start+killChildWrites; i++ {
		user := "u" + strconv.Itoa(i)
		err := s.UpdateRosters(ctx, func(tx RosterTx) error {
			if err := tx.PutItem("hub", RosterItem{Contact: user + "@localhost", Subscription: SubFrom}); err != nil {
				return err
			}
			return tx.PutItem(user, RosterItem{Contact: "hub@localhost", Subscription: SubTo, Groups: []string{"g"}})
		})
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(w, "roster %d\n", i)
		w.Flush()
		if err := s.StoreOffline(ctx, "hub", []byte("<message id='"+strconv.Itoa(i)+"'/>"), 0); err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(w, "offline %d\n", i)
		w.Flush()
	}
}

// TestSQLiteKillMidWrite SIGKILLs a writer (the test binary re-executed as
// TestSQLiteKillChild) at a random point of its loop, three times on one
// database, and checks after each kill that every roster change is whole
// (both sides or neither), none acknowledged is lost, the offline count is
// the number of acknowledged stores or one more (the one in flight), and
// SQLite's integrity check passes.
func TestSQLiteKillMidWrite(t *testing.T) {
	if testing.Short() {
		t.Skip("re-executes the test binary")
	}
	path := filepath.Join(t.TempDir(), "krill.db")
	var st killState
	for round := range 3 {
		t.Run("round"+strconv.Itoa(round), func(t *testing.T) {
			acked := runKilledChild(t, path, st.next)
			checkAfterKill(t, path, &st, acked)
		})
		if t.Failed() {
			return
		}
	}
}

// childAcks are what a killed child acknowledged: the highest roster and
// offline indexes it reported, -1 for none, and how many stores.
type childAcks struct {
	roster, offline, stores int
}

// runKilledChild starts a child writing from index start, kills it after a
// random number of acknowledgements, and returns what it acknowledged.
func runKilledChild(t *testing.T, path string, start int) childAcks {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestSQLiteKillChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), killChildEnv+"="+path, killChildEnv+"_START="+strconv.Itoa(start))
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	killAfter := 20 + rand.IntN(200) // acknowledgements, of 2*killChildWrites
	acks := childAcks{roster: -1, offline: -1}
	sc := bufio.NewScanner(out)
	seen, killed := 0, false
	for sc.Scan() {
		kind, n, ok := strings.Cut(sc.Text(), " ")
		if !ok {
			continue // test framework output
		}
		i, err := strconv.Atoi(n)
		if err != nil {
			continue
		}
		switch kind {
		case "roster":
			acks.roster = i
		case "offline":
			acks.offline = i
			acks.stores++
		default:
			continue
		}
		seen++
		if seen == killAfter && !killed {
			// Lines already in the pipe are acknowledged too: keep
			// reading until the child's end closes it.
			if err := cmd.Process.Kill(); err != nil {
				t.Fatal(err)
			}
			killed = true
		}
	}
	err = cmd.Wait()
	if !killed {
		t.Fatalf("child finished before it was killed (%v); raise killChildWrites", err)
	}
	t.Logf("killed after %d acknowledgements: roster %d, offline %d", seen, acks.roster, acks.offline)
	return acks
}

// killState is what the database held after the previous round.
type killState struct {
	next     int // the index the next child starts at
	hubItems int // items in hub's roster
	offline  int // hub's offline messages
}

// checkAfterKill reopens the database and checks it against what the child
// that wrote from st.next acknowledged, then advances st.
func checkAfterKill(t *testing.T, path string, st *killState, acks childAcks) {
	t.Helper()
	ctx := context.Background()
	s, err := OpenSQLite(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var integrity string
	if err := s.write.QueryRow(`PRAGMA integrity_check`).Scan(&integrity); err != nil {
		t.Fatal(err)
	}
	if integrity != "ok" {
		t.Fatalf("integrity_check = %q", integrity)
	}
	hub, _ := roster(t, s, "hub")
	onHub := make(map[string]bool, len(hub))
	for _, it := range hub {
		onHub[it.Contact] = true
	}
	// Every index up to the last acknowledged one is there; the one after
	// may be (committed, not yet reported); none beyond.
	start := st.next
	last := start - 1
	for i := start; i <= acks.roster+1; i++ {
		user := "u" + strconv.Itoa(i)
		items, _ := roster(t, s, user)
		mine := len(items) == 1 && items[0].Contact == "hub@localhost" && items[0].Subscription == SubTo && slices0(items[0].Groups) == "g"
		theirs := onHub[user+"@localhost"]
		if mine != theirs {
			t.Fatalf("change %d is half applied: %s's side %v, hub's side %v", i, user, mine, theirs)
		}
		if mine {
			last = i
		} else if i <= acks.roster {
			t.Fatalf("acknowledged change %d is lost", i)
		}
	}
	if want := st.hubItems + last - start + 1; len(hub) != want {
		t.Fatalf("hub has %d items, want %d (changes beyond the in-flight one)", len(hub), want)
	}
	msgs, err := s.Offline(ctx, "hub")
	if err != nil {
		t.Fatal(err)
	}
	stored := st.offline + acks.stores
	if len(msgs) != stored && len(msgs) != stored+1 {
		t.Fatalf("%d offline messages after %d acknowledged stores, want %d or %d", len(msgs), stored, stored, stored+1)
	}
	for k, m := range msgs[st.offline:] {
		if want := "<message id='" + strconv.Itoa(start+k) + "'/>"; string(m.Stanza) != want {
			t.Fatalf("offline message %d of this round = %q, want %q", k, m.Stanza, want)
		}
	}
	*st = killState{next: start + killChildWrites, hubItems: len(hub), offline: len(msgs)}
}

func slices0(s []string) string {
	if len(s) != 1 {
		return ""
	}
	return s[0]
}
