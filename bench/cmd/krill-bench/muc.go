package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/krill-xmpp/krill/bench"
)

// XEP-0045 namespaces the muc workload speaks.
const (
	nsMUC        = "http://jabber.org/protocol/muc"
	nsMUCOwner   = "http://jabber.org/protocol/muc#owner"
	nsRoomConfig = "http://jabber.org/protocol/muc#roomconfig"
)

// errMUC means the room could not be set up or a copy went missing.
var errMUC = errors.New("krill-bench: muc")

// mucMessage is what happened to one groupchat message.
type mucMessage struct {
	Seq int `json:"seq"`
	// Copies is how many occupants read it.
	Copies int `json:"copies"`
	// LastMs is from the sender's write to the last occupant's read.
	LastMs float64 `json:"last_copy_ms"`
}

// mucRecord is one muc run: one sender, N occupants in one room, M
// groupchat messages.
type mucRecord struct {
	Kind        string    `json:"kind"` // "muc"
	Server      string    `json:"server"`
	Time        time.Time `json:"time"`
	Room        string    `json:"room"`
	Occupants   int       `json:"occupants"`
	Messages    int       `json:"messages"`
	Rate        float64   `json:"rate_per_s"`
	Persistent  bool      `json:"persistent"`
	Broadcast   string    `json:"presence_broadcast"`
	ClientProcs int       `json:"client_procs"`
	Repeat      int       `json:"repeat"`
	JoinSeconds float64   `json:"join_s"`
	// Copies the occupants read (the sender's own echo is not counted),
	// of Messages*Occupants expected.
	Delivered  int64 `json:"delivered"`
	Expected   int64 `json:"expected"`
	OutOfOrder int64 `json:"out_of_order"`
	// Per message, from the write to the last copy read: the median, the
	// 99th percentile and the highest over the messages.
	LastP50ms float64 `json:"last_copy_p50_ms"`
	LastP99ms float64 `json:"last_copy_p99_ms"`
	LastMaxMs float64 `json:"last_copy_max_ms"`
	// Per copy, from the write to that occupant's read.
	CopyP50ms float64 `json:"copy_p50_ms"`
	CopyP99ms float64 `json:"copy_p99_ms"`
	// Server CPU (utime+stime of its processes) from just before the
	// first message until the last copy was read.
	ServerCPU     float64 `json:"server_cpu_s"`
	CPUPerCopyUs  float64 `json:"server_cpu_us_per_copy"`
	SendSeconds   float64 `json:"send_s"`
	IdleCPUPerSec float64 `json:"server_idle_cpu_ms_per_s"`
	ClientCPU     float64 `json:"client_cpu_s"`
	// Presence stanzas an occupant received, on average, from its login
	// to the end: about 3 when the room broadcasts moderators' presence
	// only (its own, the sender's, its own initial presence), N-1 more
	// when it broadcasts everyone's.
	PresencesPerOccupant float64 `json:"presences_per_occupant"`
	// The machine's 1-minute load average before and after the send phase.
	LoadBefore float64      `json:"load1_before"`
	LoadAfter  float64      `json:"load1_after"`
	PerMessage []mucMessage `json:"per_message"`
}

// mucCmd measures groupchat fan-out: one sender (account 0) creates and
// configures a room, N occupants (accounts 1..N, spread over client
// processes) join it, then the sender posts M messages at a bounded rate
// and every occupant timestamps each copy.
func mucCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var t target
	fs := flag.NewFlagSet("muc", flag.ContinueOnError)
	fs.SetOutput(stderr)
	t.register(fs)
	room := fs.String("room", "bench@conference.localhost", "the room's bare JID; the sender creates it")
	n := fs.Int("n", 1000, "occupants (accounts 1..n; account 0 is the sender)")
	msgs := fs.Int("messages", 50, "groupchat messages the sender posts")
	rate := fs.Float64("rate", 5, "messages per second the sender posts at, at most")
	clients := fs.Int("clients", 0, "client processes the occupants are spread over; 0: one per 5,000 occupants")
	conc := fs.Int("concurrency", 32, "logins in progress at once per client process")
	persistent := fs.Bool("persistent", false, "configure the room persistent (muc#roomconfig_persistentroom)")
	broadcast := fs.String("presence-broadcast", "moderator", "roles whose presence the room broadcasts (muc#roomconfig_presencebroadcast), comma-separated; empty: the field is not sent")
	idle := fs.Duration("idle", 2*time.Second, "quiet period before the send phase over which the server's idle CPU is read")
	wait := fs.Duration("wait", time.Minute, "how long to wait for the last copies after the last message")
	joinTimeout := fs.Duration("join-timeout", 15*time.Minute, "bound on logging in and joining all occupants")
	repeat := fs.Int("repeat", 1, "repeat number, written into the result")
	timeout := fs.Duration("timeout", 20*time.Minute, "bound on the whole run")
	if err := fs.Parse(args); err != nil {
		return errUsage
	}
	if err := t.check(); err != nil {
		return err
	}
	if *n < 1 || *msgs < 1 || *msgs > maxMUCMessages || *rate <= 0 {
		return fmt.Errorf("krill-bench: need -n >= 1, 1 <= -messages <= %d and -rate > 0", maxMUCMessages)
	}
	if *clients <= 0 {
		*clients = (*n + 4999) / 5000
	}
	if *clients > 64 {
		return fmt.Errorf("krill-bench: at most 64 client processes")
	}
	if !strings.Contains(*room, "@") || strings.ContainsAny(*room, "/'\"<>&") {
		return fmt.Errorf("krill-bench: -room %q: want a bare JID", *room)
	}
	o, err := t.options(bench.StageAuth)
	if err != nil {
		return err
	}
	o.Timeout = time.Minute
	out, err := openJSON(t.jsonPath)
	if err != nil {
		return err
	}
	defer out.close()
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()

	// The sender creates the room and configures it before anyone joins.
	snd, err := bench.Dial(ctx, o, 0)
	if err != nil {
		return fmt.Errorf("%w: sender login: %w", errMUC, err)
	}
	defer bench.Abort(snd)
	if err := mucCreate(snd, *room, *persistent, *broadcast); err != nil {
		return err
	}
	// From here on the sender only drains what it is sent: occupants'
	// presence (it is a moderator) and its own messages' echoes.
	go func() { _, _ = io.Copy(io.Discard, snd) }()

	kids, err := startMUCClients(ctx, &t, *room, *n, *clients, *conc, *msgs)
	if err != nil {
		return err
	}
	defer kids.stop()
	joinStart := time.Now()
	if err := kids.join(ctx, stderr, *joinTimeout); err != nil {
		return err
	}
	joinTime := time.Since(joinStart)
	fmt.Fprintf(stderr, "%d occupants joined in %.1fs\n", *n, joinTime.Seconds())

	// The server's idle CPU, for scale: some servers spin while idle.
	i0, err := t.sample()
	if err != nil {
		return err
	}
	it := time.Now()
	select {
	case <-time.After(*idle):
	case <-ctx.Done():
		return ctx.Err()
	}
	i1, err := t.sample()
	if err != nil {
		return err
	}
	idleRate := float64((i1.CPU - i0.CPU).Milliseconds()) / time.Since(it).Seconds()

	load0 := loadAvg()
	before, err := t.sample()
	if err != nil {
		return err
	}
	sent := make([]int64, *msgs) // unix nanoseconds of each write
	epoch := time.Now()
	_ = snd.SetWriteDeadline(epoch.Add(time.Duration(float64(*msgs)/(*rate)*float64(time.Second)) + time.Minute))
	for seq := range *msgs {
		at := epoch.Add(time.Duration(float64(seq) / *rate * float64(time.Second)))
		select {
		case <-time.After(time.Until(at)):
		case <-ctx.Done():
			return ctx.Err()
		}
		now := time.Now().UnixNano()
		sent[seq] = now
		msg := "<message to='" + *room + "' type='groupchat' id='mb" + strconv.Itoa(seq) + "'><body>" +
			strconv.Itoa(seq) + ":" + strconv.FormatInt(now, 10) + "</body></message>"
		if _, err := io.WriteString(snd, msg); err != nil {
			return fmt.Errorf("%w: sender: %w", errMUC, err)
		}
	}
	last := kids.waitAll(ctx, *wait)
	sendTime := time.Since(epoch)
	after, err := t.sample()
	if err != nil {
		return err
	}
	load1 := loadAvg()
	rep, err := kids.report(ctx)
	if err != nil {
		return err
	}
	clientCPU := kids.stop()

	rec := mucRecord{
		Kind: "muc", Server: t.server, Time: time.Now().UTC(), Room: *room, Occupants: *n, Messages: *msgs,
		Rate: *rate, Persistent: *persistent, Broadcast: *broadcast, ClientProcs: len(kids.procs), Repeat: *repeat,
		JoinSeconds: joinTime.Seconds(), Delivered: rep.delivered, Expected: int64(*n) * int64(*msgs),
		OutOfOrder: rep.outOfOrder, ServerCPU: (after.CPU - before.CPU).Seconds(), SendSeconds: sendTime.Seconds(),
		IdleCPUPerSec: idleRate, ClientCPU: clientCPU.Seconds(), LoadBefore: load0, LoadAfter: load1,
		PresencesPerOccupant: float64(rep.presences) / float64(*n),
	}
	if rep.delivered > 0 {
		rec.CPUPerCopyUs = float64((after.CPU - before.CPU).Microseconds()) / float64(rep.delivered)
	}
	slices.Sort(rep.lat)
	rec.CopyP50ms, rec.CopyP99ms = ms(percentile(rep.lat, 50)), ms(percentile(rep.lat, 99))
	var lasts []time.Duration
	for seq := range *msgs {
		m := mucMessage{Seq: seq, Copies: kids.copies(seq)}
		if last[seq] > 0 {
			d := time.Duration(last[seq] - sent[seq])
			m.LastMs = ms(d)
			lasts = append(lasts, d)
		}
		rec.PerMessage = append(rec.PerMessage, m)
	}
	slices.Sort(lasts)
	rec.LastP50ms, rec.LastP99ms = ms(percentile(lasts, 50)), ms(percentile(lasts, 99))
	if len(lasts) > 0 {
		rec.LastMaxMs = ms(lasts[len(lasts)-1])
	}
	fmt.Fprintf(stdout, "%-9s muc n=%-6d rep=%d  %d msgs at %.1f/s: last copy p50 %.1f ms p99 %.1f ms max %.1f ms  per copy p50 %.1f ms p99 %.1f ms  server cpu %.2f us/copy (%.2fs; idle %.0f ms/s)  delivered %d/%d  out of order %d  presences/occupant %.1f  join %.1fs  load %.1f-%.1f\n",
		rec.Server, rec.Occupants, rec.Repeat, rec.Messages, rec.Rate, rec.LastP50ms, rec.LastP99ms, rec.LastMaxMs,
		rec.CopyP50ms, rec.CopyP99ms, rec.CPUPerCopyUs, rec.ServerCPU, rec.IdleCPUPerSec, rec.Delivered, rec.Expected,
		rec.OutOfOrder, rec.PresencesPerOccupant, rec.JoinSeconds, rec.LoadBefore, rec.LoadAfter)
	if err := out.write(rec); err != nil {
		return err
	}
	if rec.Delivered != rec.Expected || rec.OutOfOrder != 0 {
		return fmt.Errorf("%w: %d of %d copies read, %d out of order", errMUC, rec.Delivered, rec.Expected, rec.OutOfOrder)
	}
	return nil
}

// maxMUCMessages bounds -messages: each client process keeps a counter
// per message.
const maxMUCMessages = 100_000

// loadAvg is the machine's 1-minute load average, 0 if unknown.
func loadAvg() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0
	}
	v, _ := strconv.ParseFloat(f[0], 64)
	return v
}

// mucCreate joins the sender to room under the nick "sender" (creating
// it), waits for its self-presence, and submits the room configuration:
// persistent or not, and the roles whose presence is broadcast. No
// maximum size is sent: each server's own setting (raised for the bench)
// applies.
func mucCreate(c net.Conn, room string, persistent bool, broadcast string) error {
	_ = c.SetDeadline(time.Now().Add(time.Minute))
	defer func() { _ = c.SetDeadline(time.Time{}) }()
	if _, err := io.WriteString(c, "<presence to='"+room+"/sender'><x xmlns='"+nsMUC+"'><history maxstanzas='0'/></x></presence>"); err != nil {
		return err
	}
	var got []byte
	if err := readFor(c, &got, func(b []byte) (bool, error) {
		if joinedMarker(b) {
			return true, nil
		}
		if presenceError(b) {
			return false, fmt.Errorf("%w: the sender could not join: %s", errMUC, clip(b, 400))
		}
		return false, nil
	}); err != nil {
		return err
	}
	p := "0"
	if persistent {
		p = "1"
	}
	form := "<field var='FORM_TYPE'><value>" + nsRoomConfig + "</value></field>" +
		"<field var='muc#roomconfig_persistentroom'><value>" + p + "</value></field>"
	if broadcast != "" {
		form += "<field var='muc#roomconfig_presencebroadcast'>"
		for r := range strings.SplitSeq(broadcast, ",") {
			form += "<value>" + strings.TrimSpace(r) + "</value>"
		}
		form += "</field>"
	}
	if _, err := io.WriteString(c, "<iq type='set' id='mucbench-cfg' to='"+room+"'><query xmlns='"+nsMUCOwner+"'>"+
		"<x xmlns='jabber:x:data' type='submit'>"+form+"</x></query></iq>"); err != nil {
		return err
	}
	got = got[:0]
	return readFor(c, &got, func(b []byte) (bool, error) {
		i := bytes.Index(b, []byte("mucbench-cfg"))
		if i < 0 {
			return false, nil
		}
		j := bytes.LastIndex(b[:i], []byte("<iq"))
		if j < 0 {
			return false, nil
		}
		el := b[j:]
		end := bytes.Index(el, []byte("</iq>"))
		if gt := bytes.IndexByte(el, '>'); gt > 0 && el[gt-1] == '/' {
			end = gt
		}
		if end < 0 {
			return false, nil
		}
		if bytes.Contains(el[:end], []byte("'result'")) || bytes.Contains(el[:end], []byte(`"result"`)) {
			return true, nil
		}
		return false, fmt.Errorf("%w: the room configuration was refused: %s", errMUC, clip(el, 400))
	})
}

// readFor reads from c into *got until done says so or fails, or the
// read fails; at most 1 MiB.
func readFor(c net.Conn, got *[]byte, done func([]byte) (bool, error)) error {
	var chunk [4096]byte
	for len(*got) < 1<<20 {
		n, err := c.Read(chunk[:])
		*got = append(*got, chunk[:n]...)
		if ok, derr := done(*got); ok || derr != nil {
			return derr
		}
		if i := bytes.Index(*got, []byte("<stream:error")); i >= 0 {
			return fmt.Errorf("%w: stream error: %s", errMUC, clip((*got)[i:], 300))
		}
		if err != nil {
			return fmt.Errorf("%w: reading: %w (got %s)", errMUC, err, clip(*got, 300))
		}
	}
	return fmt.Errorf("%w: no answer in the first MiB", errMUC)
}

// joinedMarker reports whether b holds a self-presence (status 110) or the
// room subject, which XEP-0045 7.2 sends after the occupant list and the
// history: either means the join is complete.
func joinedMarker(b []byte) bool {
	return bytes.Contains(b, []byte("code='110'")) || bytes.Contains(b, []byte(`code="110"`)) ||
		bytes.Contains(b, []byte("<subject"))
}

// presenceError reports whether b holds a presence of type error.
func presenceError(b []byte) bool {
	i := bytes.Index(b, []byte("<presence"))
	if i < 0 {
		return false
	}
	gt := bytes.IndexByte(b[i:], '>')
	if gt < 0 {
		return false
	}
	tag := b[i : i+gt]
	return bytes.Contains(tag, []byte("type='error'")) || bytes.Contains(tag, []byte(`type="error"`))
}

// mucKids are the client processes holding the occupants.
type mucKids struct {
	procs []*exec.Cmd
	ins   []io.WriteCloser
	lines []chan string
	errs  []*strings.Builder
	n     int
	msgs  int
	// done[seq] counts the processes all of whose occupants read seq.
	done   []int
	counts []int // copies of seq read, from the report
	once   sync.Once
	cpu    time.Duration
}

// startMUCClients starts k copies of this program as "muc-client", each
// with its share of the n occupants (accounts 1..n) and of the source
// addresses.
func startMUCClients(ctx context.Context, t *target, room string, n, k, conc, msgs int) (*mucKids, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	src, err := t.sourceAddrs()
	if err != nil {
		return nil, err
	}
	ks := &mucKids{n: n, msgs: msgs, done: make([]int, msgs), counts: make([]int, msgs)}
	first := 1
	for i := range k {
		share := shareOf(n, k, i)
		if share == 0 {
			continue
		}
		mine := sourcesOf(src, k, i)
		cmd := exec.CommandContext(ctx, exe, "muc-client",
			"-addr", t.addr, "-domain", t.domain, "-users", t.users, "-password", t.password,
			"-curves", t.curves, "-verify="+strconv.FormatBool(t.verify),
			"-sources", mine, "-room", room, "-messages", strconv.Itoa(msgs),
			"-n", strconv.Itoa(share), "-first", strconv.Itoa(first), "-concurrency", strconv.Itoa(conc))
		first += share
		in, err := cmd.StdinPipe()
		if err != nil {
			ks.stop()
			return nil, err
		}
		outPipe, err := cmd.StdoutPipe()
		if err != nil {
			ks.stop()
			return nil, err
		}
		var eb strings.Builder
		cmd.Stderr = &limitedWriter{w: &eb, n: 4096}
		if err := cmd.Start(); err != nil {
			ks.stop()
			return nil, err
		}
		lines := make(chan string, 4096)
		go func() {
			// Bounded by the child's output, which ends when it exits.
			sc := bufio.NewScanner(outPipe)
			sc.Buffer(make([]byte, 64<<10), 16<<20)
			for sc.Scan() {
				lines <- sc.Text()
			}
			close(lines)
		}()
		ks.procs = append(ks.procs, cmd)
		ks.ins = append(ks.ins, in)
		ks.lines = append(ks.lines, lines)
		ks.errs = append(ks.errs, &eb)
	}
	return ks, nil
}

// childErr describes why client process i stopped.
func (ks *mucKids) childErr(i int) error {
	return fmt.Errorf("%w: client process %d exited: %s", errMUC, i, strings.TrimSpace(ks.errs[i].String()))
}

// join tells every client to log in and join, and waits until all are in
// the room, drawing a progress bar on w, for at most timeout.
func (ks *mucKids) join(ctx context.Context, w io.Writer, timeout time.Duration) error {
	for _, in := range ks.ins {
		if _, err := io.WriteString(in, "go\n"); err != nil {
			return err
		}
	}
	type update struct {
		i, n  int
		ready bool
		gone  bool
	}
	updates := make(chan update, 64)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	defer func() { close(stop); wg.Wait() }()
	for i := range ks.procs {
		// Reads client i's lines up to its ready line, no further: what
		// follows is waitAll's.
		wg.Go(func() {
			for {
				var u update
				select {
				case line, ok := <-ks.lines[i]:
					if !ok {
						u = update{i: i, gone: true}
					} else if f, ok := strings.CutPrefix(line, "progress "); ok {
						n, _ := strconv.Atoi(f)
						u = update{i: i, n: n}
					} else if f, ok := strings.CutPrefix(line, "ready "); ok {
						n, _ := strconv.Atoi(f)
						u = update{i: i, n: n, ready: true}
					} else {
						continue
					}
				case <-stop:
					return
				}
				select {
				case updates <- u:
				case <-stop:
					return
				}
				if u.ready || u.gone {
					return
				}
			}
		})
	}
	done := make([]int, len(ks.procs))
	total := func() int {
		t := 0
		for _, d := range done {
			t += d
		}
		return t
	}
	start := time.Now()
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	limit := time.NewTimer(timeout)
	defer limit.Stop()
	for pending := len(ks.procs); pending > 0; {
		select {
		case u := <-updates:
			if u.gone {
				fmt.Fprintln(w)
				return ks.childErr(u.i)
			}
			done[u.i] = u.n
			if u.ready {
				pending--
			}
		case <-tick.C:
			progress(w, "join", total(), ks.n, start)
		case <-limit.C:
			fmt.Fprintln(w)
			return fmt.Errorf("%w: %d of %d occupants joined within %v", errMUC, total(), ks.n, timeout)
		case <-ctx.Done():
			fmt.Fprintln(w)
			return ctx.Err()
		}
	}
	progress(w, "join", total(), ks.n, start)
	fmt.Fprintln(w)
	return nil
}

// waitAll waits until every client has reported every message complete,
// or until wait has passed since the last report, and returns the time
// of each message's last copy (unix ns; 0 where some copy is missing).
func (ks *mucKids) waitAll(ctx context.Context, wait time.Duration) []int64 {
	got := make(chan [2]int64, 1024)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i := range ks.procs {
		wg.Go(func() {
			for {
				select {
				case line, ok := <-ks.lines[i]:
					if !ok {
						return
					}
					f := strings.Fields(line)
					if len(f) == 3 && f[0] == "got" {
						seq, err1 := strconv.Atoi(f[1])
						at, err2 := strconv.ParseInt(f[2], 10, 64)
						if err1 == nil && err2 == nil && seq >= 0 && seq < ks.msgs {
							got <- [2]int64{int64(seq), at}
						}
					}
				case <-stop:
					return
				}
			}
		})
	}
	defer func() { close(stop); wg.Wait() }()
	last := make([]int64, ks.msgs)
	need := len(ks.procs) * ks.msgs
	timer := time.NewTimer(wait)
	defer timer.Stop()
	for need > 0 {
		select {
		case g := <-got:
			need--
			ks.done[g[0]]++
			last[g[0]] = max(last[g[0]], g[1])
			timer.Reset(wait)
		case <-timer.C:
			need = 0
		case <-ctx.Done():
			need = 0
		}
	}
	for seq := range last {
		if ks.done[seq] < len(ks.procs) {
			last[seq] = 0
		}
	}
	return last
}

// mucReport is what the clients read, summed.
type mucReport struct {
	delivered, outOfOrder, presences int64
	lat                              []time.Duration
}

// report asks every client for its latencies and counts.
func (ks *mucKids) report(ctx context.Context) (mucReport, error) {
	var r mucReport
	for _, in := range ks.ins {
		if _, err := io.WriteString(in, "report\n"); err != nil {
			return r, err
		}
	}
	deadline := time.After(time.Minute)
	for i := range ks.procs {
		for end := false; !end; {
			select {
			case line, ok := <-ks.lines[i]:
				if !ok {
					return r, ks.childErr(i)
				}
				f := strings.Fields(line)
				if len(f) == 0 {
					continue
				}
				switch f[0] {
				case "lat":
					for _, v := range f[1:] {
						us, err := strconv.ParseInt(v, 10, 64)
						if err == nil {
							r.lat = append(r.lat, time.Duration(us)*time.Microsecond)
						}
					}
				case "count":
					if len(f) == 4 {
						d, _ := strconv.ParseInt(f[1], 10, 64)
						o, _ := strconv.ParseInt(f[2], 10, 64)
						p, _ := strconv.ParseInt(f[3], 10, 64)
						r.delivered += d
						r.outOfOrder += o
						r.presences += p
					}
				case "copies":
					// copies SEQ COUNT
					if len(f) == 3 {
						seq, _ := strconv.Atoi(f[1])
						c, _ := strconv.Atoi(f[2])
						if seq >= 0 && seq < ks.msgs {
							ks.counts[seq] += c
						}
					}
				case "end":
					end = true
				}
			case <-deadline:
				return r, fmt.Errorf("%w: client process %d did not report within a minute", errMUC, i)
			case <-ctx.Done():
				return r, ctx.Err()
			}
		}
	}
	return r, nil
}

// copies is how many occupants read message seq, from the report.
func (ks *mucKids) copies(seq int) int { return ks.counts[seq] }

// stop closes the clients' stdin, which makes them close their
// connections and exit, waits for them, and returns their CPU time.
func (ks *mucKids) stop() time.Duration {
	ks.once.Do(func() { ks.cpu = stopChildren(ks.ins, ks.procs) })
	return ks.cpu
}

// occupant is one joined connection of a muc-client process.
type occupant struct {
	c          net.Conn
	mu         sync.Mutex
	next       int   // the sequence number expected next
	outOfOrder int64 // copies that did not carry next
	lat        []int64
	presences  atomic.Int64 // <presence elements read
}

// mucClientCmd is a child process of muc. On "go" it logs its n
// occupants in and joins them to the room (nick o<account>, no history),
// printing "progress K" lines and then "ready N". Then it prints
// "got SEQ UNIXNS" once every one of its occupants has read message SEQ
// (UNIXNS: the last read). On "report" it prints "lat" lines (per-copy
// latencies in microseconds), "copies SEQ K" lines, "count DELIVERED
// OUTOFORDER PRESENCES" and "end". End of stdin closes everything.
func mucClientCmd(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	var t target
	fs := flag.NewFlagSet("muc-client", flag.ContinueOnError)
	fs.SetOutput(stderr)
	t.register(fs)
	room := fs.String("room", "", "room bare JID")
	n := fs.Int("n", 1, "occupants")
	first := fs.Int("first", 1, "account number of the first occupant")
	msgs := fs.Int("messages", 1, "messages the sender posts")
	conc := fs.Int("concurrency", 32, "logins in progress at once")
	if err := fs.Parse(args); err != nil {
		return errUsage
	}
	if err := t.check(); err != nil {
		return err
	}
	if *msgs < 1 || *msgs > maxMUCMessages || *n < 1 {
		return errUsage
	}
	o, err := t.options(bench.StageAuth)
	if err != nil {
		return err
	}
	o.Timeout = 2 * time.Minute
	o.FirstUser += *first
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	in := bufio.NewReader(stdin)
	cmds := make(chan string, 4)
	go func() {
		defer close(cmds)
		for {
			line, err := in.ReadString('\n')
			if line = strings.TrimSpace(line); line != "" {
				cmds <- line
			}
			if err != nil {
				return
			}
		}
	}()
	select {
	case c, ok := <-cmds:
		if !ok || c != "go" {
			return context.Canceled
		}
	case <-ctx.Done():
		return ctx.Err()
	}

	w := &lockedWriter{w: stdout}
	var (
		joined atomic.Int64
		counts = make([]atomic.Int32, *msgs)
		lastAt = make([]atomic.Int64, *msgs)
		occs   = make([]*occupant, *n)
		failed = make(chan error, 1)
		next   atomic.Int64
		wg     sync.WaitGroup
	)
	defer func() {
		for _, oc := range occs {
			if oc != nil {
				bench.Abort(oc.c)
			}
		}
	}()
	fail := func(err error) {
		select {
		case failed <- err:
		default:
		}
		cancel()
	}
	onCopy := func(seq int, at int64) {
		for {
			old := lastAt[seq].Load()
			if at <= old || lastAt[seq].CompareAndSwap(old, at) {
				break
			}
		}
		if int(counts[seq].Add(1)) == *n {
			fmt.Fprintf(w, "got %d %d\n", seq, lastAt[seq].Load())
		}
	}
	// Log in and join, conc at a time; each index is taken once.
	for range min(*conc, *n) {
		wg.Go(func() {
			for i := int(next.Add(1) - 1); i < *n; i = int(next.Add(1) - 1) {
				if ctx.Err() != nil {
					return
				}
				c, err := bench.Dial(ctx, o, i)
				if err != nil {
					fail(fmt.Errorf("occupant %d: %w", *first+i, err))
					return
				}
				oc := &occupant{c: c}
				occs[i] = oc
				nick := "o" + strconv.Itoa(*first+i)
				if _, err := io.WriteString(c, "<presence to='"+*room+"/"+nick+"'><x xmlns='"+nsMUC+"'><history maxstanzas='0'/></x></presence>"); err != nil {
					fail(fmt.Errorf("occupant %d: %w", *first+i, err))
					return
				}
				joinedCh := make(chan error, 1)
				go oc.read(*msgs, joinedCh, onCopy)
				select {
				case err := <-joinedCh:
					if err != nil {
						fail(fmt.Errorf("occupant %d: %w", *first+i, err))
						return
					}
				case <-time.After(o.Timeout):
					fail(fmt.Errorf("occupant %d: no self-presence within %v", *first+i, o.Timeout))
					return
				case <-ctx.Done():
					return
				}
				joined.Add(1)
			}
		})
	}
	allIn := make(chan struct{})
	go func() { wg.Wait(); close(allIn) }()
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for waiting := true; waiting; {
		select {
		case <-allIn:
			waiting = false
		case <-tick.C:
			fmt.Fprintf(w, "progress %d\n", joined.Load())
		case _, ok := <-cmds:
			if !ok { // the parent gave up
				cancel()
				<-allIn
				return context.Canceled
			}
		}
	}
	select {
	case err := <-failed:
		return err
	default:
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	fmt.Fprintf(w, "ready %d\n", joined.Load())

	for {
		select {
		case c, ok := <-cmds:
			if !ok {
				return nil
			}
			if c != "report" {
				continue
			}
			var delivered, ooo, pres int64
			line := []byte("lat")
			for _, oc := range occs {
				oc.mu.Lock()
				delivered += int64(len(oc.lat))
				ooo += oc.outOfOrder
				pres += oc.presences.Load()
				for _, l := range oc.lat {
					line = append(line, ' ')
					line = strconv.AppendInt(line, l/1000, 10)
					if len(line) > 32<<10 {
						fmt.Fprintf(w, "%s\n", line)
						line = append(line[:0], "lat"...)
					}
				}
				oc.mu.Unlock()
			}
			fmt.Fprintf(w, "%s\n", line)
			for seq := range counts {
				fmt.Fprintf(w, "copies %d %d\n", seq, counts[seq].Load())
			}
			fmt.Fprintf(w, "count %d %d %d\nend\n", delivered, ooo, pres)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// read reads the occupant's stream until it fails: first until the join
// is complete (reported on joined), then groupchat bodies "SEQ:UNIXNS",
// each timed on arrival and checked to come in order.
func (oc *occupant) read(msgs int, joined chan<- error, onCopy func(seq int, at int64)) {
	var (
		buf      []byte
		chunk    = make([]byte, 4096+8)
		isJoined bool
		carry    int // bytes of the last read kept before chunk's new ones
	)
	for {
		k, err := oc.c.Read(chunk[carry:])
		now := time.Now().UnixNano()
		// A <presence split between two reads is counted once: an
		// occurrence starting in the kept 8 bytes ends in the new ones.
		oc.presences.Add(int64(bytes.Count(chunk[:carry+k], []byte("<presence"))))
		buf = append(buf, chunk[carry:carry+k]...)
		carry = copy(chunk, chunk[max(0, carry+k-8):carry+k])
		if !isJoined {
			switch {
			case joinedMarker(buf):
				isJoined = true
				joined <- nil
				// Bodies come after the join; nothing before it matters.
				if i := bytes.LastIndex(buf, []byte("<subject")); i >= 0 {
					buf = buf[i:]
				}
			case presenceError(buf):
				joined <- fmt.Errorf("join refused: %s", clip(buf, 400))
				return
			case bytes.Contains(buf, []byte("<stream:error")):
				joined <- fmt.Errorf("stream error: %s", clip(buf, 400))
				return
			case err != nil:
				joined <- fmt.Errorf("before the join completed: %w", err)
				return
			}
			if len(buf) > 1<<20 {
				buf = buf[len(buf)-4096:]
			}
		}
		if isJoined {
			for {
				i := bytes.Index(buf, []byte("<body>"))
				if i < 0 {
					// Keep a tail that may hold the start of a <body>.
					if len(buf) > 8 {
						buf = buf[len(buf)-8:]
					}
					break
				}
				j := bytes.Index(buf[i:], []byte("</body>"))
				if j < 0 {
					buf = buf[i:]
					if len(buf) > 64<<10 {
						buf = buf[:0] // not one of ours
					}
					break
				}
				body := buf[i+6 : i+j]
				buf = buf[i+j+7:]
				s, ts, ok := bytes.Cut(body, []byte(":"))
				if !ok {
					continue
				}
				seq, err1 := strconv.Atoi(string(s))
				at, err2 := strconv.ParseInt(string(ts), 10, 64)
				if err1 != nil || err2 != nil || seq < 0 || seq >= msgs {
					continue
				}
				oc.mu.Lock()
				if seq != oc.next {
					oc.outOfOrder++
				}
				oc.next = seq + 1
				oc.lat = append(oc.lat, now-at)
				oc.mu.Unlock()
				onCopy(seq, now)
			}
		}
		if err != nil {
			return
		}
	}
}

// clip returns b as a string, cut to n bytes, for error messages.
func clip(b []byte, n int) string {
	if len(b) > n {
		return string(b[:n]) + "..."
	}
	return string(b)
}
