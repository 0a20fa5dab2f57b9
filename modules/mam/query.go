package mam

import (
	"context"
	"math"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"
	"mellium.im/xmpp/jid"

	"github.com/krill-xmpp/krill/hook"
	"github.com/krill-xmpp/krill/stanza"
	"github.com/krill-xmpp/krill/storage"
)

var parseTag = stanza.ParseStartTag

// Limits of one query.
const (
	// CountLimit bounds the RSM <count/> of a result set: counting walks
	// the index, so a larger set gets no <count/> (XEP-0313 §4.3.2: a
	// server MAY include it) and the query stays O(log n + page).
	CountLimit = 1000
	// MaxPageBytes bounds the stanza bytes of one page; a page that would
	// pass it ends early, incomplete, and the client asks for the next.
	MaxPageBytes = 1 << 20
	// MaxIDs bounds the ids field.
	MaxIDs = 50
)

// request is a parsed archive query.
type request struct {
	queryID                  string
	with, withRes            string
	after, before            int64 // exclusive bounds from start, end, after-id, before-id
	checkIDs                 []int64
	ids                      []int64
	max                      int
	rsmAfter, rsmBefore      string
	hasRSMBefore, flip, hasM bool
}

// qerr is a query refused: an error type and condition, and text.
type qerr struct{ typ, cond, text string }

func badRequest(text string) *qerr { return &qerr{"modify", "bad-request", text} }

// parseTime parses an XEP-0082 DateTime.
func parseTime(s string) (time.Time, bool) {
	t, err := time.Parse(time.RFC3339Nano, strings.TrimSpace(s))
	return t, err == nil
}

// fieldValues returns the texts of a form field's <value/> children.
func fieldValues(field []byte) ([]string, bool) {
	var vals []string
	ok := stanza.Children(field, func(v []byte) bool {
		tag, err := stanza.ParseStartTag(v)
		if err != nil {
			return false
		}
		if string(tag.Local()) != "value" {
			return true
		}
		text, err := stanza.Text(v)
		if err != nil {
			return false
		}
		vals = append(vals, text)
		return true
	})
	return vals, ok
}

// parseQuery parses <query/>: its form (XEP-0313 §4.1), RSM set
// (XEP-0059) and <flip-page/>.
func parseQuery(q []byte, maxPage int) (*request, *qerr) {
	tag, err := stanza.ParseStartTag(q)
	if err != nil {
		return nil, badRequest("malformed query")
	}
	r := &request{max: maxPage, before: math.MaxInt64}
	r.queryID, _ = tag.AttrString("queryid")
	var e *qerr
	ok := stanza.Children(q, func(child []byte) bool {
		ct, err := stanza.ParseStartTag(child)
		if err != nil {
			e = badRequest("malformed query")
			return false
		}
		switch ns, local := childNS(ct), string(ct.Local()); {
		case ns == nsData && local == "x":
			e = r.parseForm(child)
		case ns == nsRSM && local == "set":
			e = r.parseRSM(child, maxPage)
		case local == "flip-page":
			r.flip = true
		}
		return e == nil
	})
	if e != nil {
		return nil, e
	}
	if !ok {
		return nil, badRequest("malformed query")
	}
	return r, nil
}

func (r *request) parseForm(x []byte) *qerr {
	var e *qerr
	ok := stanza.Children(x, func(field []byte) bool {
		ft, err := stanza.ParseStartTag(field)
		if err != nil {
			e = badRequest("malformed form")
			return false
		}
		if string(ft.Local()) != "field" {
			return true
		}
		name, _ := ft.AttrString("var")
		vals, ok := fieldValues(field)
		if !ok {
			e = badRequest("malformed field " + name)
			return false
		}
		if len(vals) == 0 {
			return true // an empty field filters nothing
		}
		v := vals[0]
		switch name {
		case "FORM_TYPE":
			if v != NS {
				e = badRequest("FORM_TYPE must be " + NS)
			}
		case "with":
			j, err := jid.Parse(v)
			if err != nil {
				e = &qerr{"modify", "jid-malformed", "bad with"}
				break
			}
			r.with, r.withRes = j.Bare().String(), j.Resourcepart()
		case "start", "end":
			t, ok := parseTime(v)
			if !ok {
				e = badRequest("bad " + name + " timestamp")
				break
			}
			if name == "start" {
				r.after = max(r.after, idAt(t)-1)
			} else if t.Before(idEpoch) {
				r.before = 1 // nothing can match
			} else {
				r.before = min(r.before, idAt(t.Add(time.Millisecond)))
			}
		case "after-id", "before-id":
			id, ok := parseID(v)
			if !ok {
				e = &qerr{"cancel", "item-not-found", "no message " + v}
				break
			}
			r.checkIDs = append(r.checkIDs, id)
			if name == "after-id" {
				r.after = max(r.after, id)
			} else {
				r.before = min(r.before, id)
			}
		case "ids":
			if len(vals) > MaxIDs {
				e = &qerr{"modify", "policy-violation", "at most " + strconv.Itoa(MaxIDs) + " ids"}
				break
			}
			for _, v := range vals {
				id, ok := parseID(v)
				if !ok {
					e = &qerr{"cancel", "item-not-found", "no message " + v}
					break
				}
				r.ids = append(r.ids, id)
			}
		default:
			// XEP-0313 §4.1.5: a field the server does not know.
			e = &qerr{"cancel", "feature-not-implemented", "unknown field " + name}
		}
		return e == nil
	})
	if e == nil && !ok {
		e = badRequest("malformed form")
	}
	return e
}

func (r *request) parseRSM(set []byte, maxPage int) *qerr {
	var e *qerr
	ok := stanza.Children(set, func(el []byte) bool {
		t, err := stanza.ParseStartTag(el)
		if err != nil {
			e = badRequest("malformed set")
			return false
		}
		text, err := stanza.Text(el)
		if err != nil {
			e = badRequest("malformed set")
			return false
		}
		text = strings.TrimSpace(text)
		switch string(t.Local()) {
		case "max":
			n, err := strconv.Atoi(text)
			if err != nil || n < 0 {
				e = badRequest("bad max")
				return false
			}
			r.max, r.hasM = min(n, maxPage), true
		case "after":
			r.rsmAfter = text
		case "before":
			r.hasRSMBefore, r.rsmBefore = true, text
		}
		return true
	})
	if e == nil && !ok {
		e = badRequest("malformed set")
	}
	if e == nil && r.rsmAfter != "" && r.hasRSMBefore {
		// XEP-0313 §4.3: before-id and after-id select a range.
		e = badRequest("after and before together: use the after-id and before-id fields")
	}
	return e
}

// query answers an archive query (XEP-0313 §4): the matching messages,
// each in its own <message/>, then the iq result with <fin/>.
func (m *Module) query(c *hook.Ctx, st *hook.Stanza) error {
	if !own(c, st) {
		return nil
	}
	r, e := parseQuery(st.Payload, c.Host.Config().MAM.MaxPage)
	if e != nil {
		c.ReplyError(e.typ, e.cond, e.text)
		return nil
	}
	sess, h, log := c.Session, c.Host, c.Log
	sess.Set(m.queried, true)
	m.queries.Add(1)
	user := sess.Local()
	to := sess.Full()
	from := ""
	if st.Addr == hook.ToBare {
		from = st.To
	}
	c.Conn.Async(func(ctx context.Context) func(*hook.Ctx) {
		m.drain(ctx, log)
		m.maybeExpire(ctx, h)
		out, fin, e := m.run(ctx, user, from, to, r)
		if e != nil {
			return func(c *hook.Ctx) { c.ReplyError(e.typ, e.cond, e.text) }
		}
		return func(c *hook.Ctx) {
			for _, b := range out {
				c.Conn.Write(b)
			}
			c.ReplyResult(fin)
		}
	}, nil)
	return nil
}

// run reads the page of r and builds the result messages and <fin/>.
// It runs on a worker.
func (m *Module) run(ctx context.Context, user, from, to string, r *request) ([][]byte, []byte, *qerr) {
	internal := &qerr{"wait", "internal-server-error", ""}
	check := func(s string) (int64, *qerr) {
		id, ok := parseID(s)
		if !ok {
			return 0, &qerr{"cancel", "item-not-found", "no message " + s}
		}
		if _, found, err := m.Store.ArchiveItem(ctx, user, id); err != nil {
			return 0, internal
		} else if !found {
			return 0, &qerr{"cancel", "item-not-found", "no message " + s}
		}
		return id, nil
	}
	for _, id := range r.checkIDs {
		if _, e := check(formatID(id)); e != nil {
			return nil, nil, e
		}
	}
	var items []storage.ArchiveItem
	complete := true
	count, exact := -1, false
	if len(r.ids) > 0 {
		for _, id := range r.ids {
			it, found, err := m.Store.ArchiveItem(ctx, user, id)
			if err != nil {
				return nil, nil, internal
			}
			if !found {
				return nil, nil, &qerr{"cancel", "item-not-found", "no message " + formatID(id)}
			}
			items = append(items, it)
		}
		count, exact = len(items), true
	} else {
		q := storage.ArchiveQuery{User: user, With: r.with, WithResource: r.withRes, After: r.after, Before: r.before}
		if q.Before == math.MaxInt64 {
			q.Before = 0
		}
		// The set's count ignores the RSM position (XEP-0059 §2.6).
		var err error
		if count, exact, err = m.Store.ArchiveCount(ctx, q, CountLimit); err != nil {
			return nil, nil, internal
		}
		if r.rsmAfter != "" {
			id, e := check(r.rsmAfter)
			if e != nil {
				return nil, nil, e
			}
			q.After = max(q.After, id)
		}
		if r.hasRSMBefore {
			q.Backward = true
			if r.rsmBefore != "" {
				id, e := check(r.rsmBefore)
				if e != nil {
					return nil, nil, e
				}
				if q.Before == 0 || id < q.Before {
					q.Before = id
				}
			}
		}
		if r.max > 0 && r.before > r.after+1 {
			q.Max = r.max + 1
			if items, err = m.Store.ArchivePage(ctx, q); err != nil {
				return nil, nil, internal
			}
			if len(items) > r.max {
				complete = false
				if q.Backward {
					items = items[1:]
				} else {
					items = items[:r.max]
				}
			}
		} else if r.max == 0 && count > 0 {
			complete = false
		}
	}
	// Bound the bytes of the page, dropping from the far end.
	size := 0
	for i, it := range items {
		size += len(it.Stanza)
		if size > MaxPageBytes && i > 0 {
			if r.hasRSMBefore {
				items = items[len(items)-i:]
			} else {
				items = items[:i]
			}
			complete = false
			break
		}
	}
	out := make([][]byte, 0, len(items))
	for _, it := range items {
		out = append(out, resultMessage(from, to, r.queryID, it))
	}
	if r.flip {
		for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
			out[i], out[j] = out[j], out[i]
		}
	}
	fin := []byte(`<fin xmlns='` + NS + `'`)
	if complete {
		fin = append(fin, ` complete='true'`...)
	}
	fin = append(fin, `><set xmlns='`+nsRSM+`'>`...)
	if len(items) > 0 {
		fin = append(fin, `<first>`...)
		fin = append(fin, formatID(items[0].ID)...)
		fin = append(fin, `</first><last>`...)
		fin = append(fin, formatID(items[len(items)-1].ID)...)
		fin = append(fin, `</last>`...)
	}
	if exact {
		fin = append(fin, `<count>`...)
		fin = strconv.AppendInt(fin, int64(count), 10)
		fin = append(fin, `</count>`...)
	}
	fin = append(fin, `</set></fin>`...)
	return out, fin, nil
}

// resultMessage wraps an archived message for the client (XEP-0313 §4.2).
func resultMessage(from, to, queryID string, it storage.ArchiveItem) []byte {
	b := make([]byte, 0, len(it.Stanza)+256)
	b = append(b, `<message`...)
	if from != "" {
		b = append(b, ` from='`...)
		b = stanza.AppendEscaped(b, from)
		b = append(b, '\'')
	}
	b = append(b, ` to='`...)
	b = stanza.AppendEscaped(b, to)
	b = append(b, `'><result xmlns='`+NS+`'`...)
	if queryID != "" {
		b = append(b, ` queryid='`...)
		b = stanza.AppendEscaped(b, queryID)
		b = append(b, '\'')
	}
	b = append(b, ` id='`...)
	b = append(b, formatID(it.ID)...)
	b = append(b, `'><forwarded xmlns='`+nsForward+`'><delay xmlns='`+nsDelay+`' stamp='`...)
	b = appendStamp(b, timeOf(it.ID))
	b = append(b, `'/>`...)
	b = append(b, it.Stanza...)
	return append(b, `</forwarded></result></message>`...)
}

// queryForm is the form of the fields a query may use (XEP-0313 §4.1.5).
const queryForm = `<query xmlns='` + NS + `'><x xmlns='` + nsData + `' type='form'>` +
	`<field type='hidden' var='FORM_TYPE'><value>` + NS + `</value></field>` +
	`<field type='jid-single' var='with'/>` +
	`<field type='text-single' var='start'/>` +
	`<field type='text-single' var='end'/>` +
	`<field type='text-single' var='before-id'/>` +
	`<field type='text-single' var='after-id'/>` +
	`<field type='list-multi' var='ids'><validate xmlns='http://jabber.org/protocol/xdata-validate' datatype='xs:string'><open/></validate></field>` +
	`</x></query>`

// form answers the form request.
func (m *Module) form(c *hook.Ctx, st *hook.Stanza) error {
	if own(c, st) {
		c.ReplyResult([]byte(queryForm))
	}
	return nil
}

// metadata answers the archive metadata request (XEP-0313 §5): the first
// and last messages' IDs and times; an empty <metadata/> for an empty
// archive.
func (m *Module) metadata(c *hook.Ctx, st *hook.Stanza) error {
	if !own(c, st) {
		return nil
	}
	user, log := c.Session.Local(), c.Log
	c.Conn.Async(func(ctx context.Context) func(*hook.Ctx) {
		m.drain(ctx, log)
		b, err := m.metadataOf(ctx, user)
		if err != nil {
			log.Error("archive metadata failed", zap.String("user", user), zap.Error(err))
			return func(c *hook.Ctx) { c.ReplyError("wait", "internal-server-error", "") }
		}
		return func(c *hook.Ctx) { c.ReplyResult(b) }
	}, nil)
	return nil
}

// metadataOf builds the <metadata/> of an archive (a user's or a room's).
// It runs on a worker.
func (m *Module) metadataOf(ctx context.Context, user string) ([]byte, error) {
	first, last, ok, err := m.Store.ArchiveBounds(ctx, user)
	if err != nil {
		return nil, err
	}
	b := []byte(`<metadata xmlns='` + NS + `'>`)
	if ok {
		for _, e := range []struct {
			name string
			id   int64
		}{{"start", first}, {"end", last}} {
			b = append(b, '<')
			b = append(b, e.name...)
			b = append(b, ` id='`...)
			b = append(b, formatID(e.id)...)
			b = append(b, `' timestamp='`...)
			b = appendStamp(b, timeOf(e.id))
			b = append(b, `'/>`...)
		}
	}
	return append(b, `</metadata>`...), nil
}
