package pep

import (
	"errors"
	"slices"
	"strconv"
	"strings"

	"github.com/krill-xmpp/krill/stanza"
	"github.com/krill-xmpp/krill/storage"
)

// Form types of XEP-0060's data forms.
const (
	FormPublishOptions = "http://jabber.org/protocol/pubsub#publish-options"
	FormNodeConfig     = "http://jabber.org/protocol/pubsub#node_config"
	nsData             = "jabber:x:data"
)

// Field names of the configuration PEP implements.
const (
	fieldAccess   = "pubsub#access_model"
	fieldPersist  = "pubsub#persist_items"
	fieldMaxItems = "pubsub#max_items"
	fieldSendLast = "pubsub#send_last_published_item"
	fieldRetract  = "pubsub#notify_retract"
	fieldGroups   = "pubsub#roster_groups_allowed"
)

// Values of pubsub#access_model and pubsub#send_last_published_item.
const (
	AccessOpen      = "open"
	AccessPresence  = "presence"
	AccessRoster    = "roster"
	AccessWhitelist = "whitelist"

	SendNever         = "never"
	SendOnSub         = "on_sub"
	SendOnSubPresence = "on_sub_and_presence"
)

// DefaultConfig is a node's configuration where nothing else is said: the
// defaults XEP-0163 section 5 recommends (items to contacts with a
// presence subscription, one item, the last one sent on presence).
var DefaultConfig = storage.PEPConfig{
	Access:        AccessPresence,
	PersistItems:  true,
	MaxItems:      1,
	SendLast:      SendOnSubPresence,
	NotifyRetract: true,
}

// option is one field of a submitted form, parsed.
type option struct {
	field string
	set   func(c *storage.PEPConfig)
	// match reports whether a node's configuration satisfies the field
	// as a publish precondition.
	match func(c storage.PEPConfig) bool
}

// formError is a form that cannot be used: its text says why.
type formError struct{ text string }

func (e *formError) Error() string { return e.text }

// parseForm reads a submitted data form <x/> of formType into options.
// An unknown field is an error (XEP-0060 7.1.5: publish options with an
// unknown field are refused); a form of type cancel returns nil options
// and cancel true.
func parseForm(x []byte, formType string) (opts []option, cancel bool, err error) {
	tag, err := stanza.ParseStartTag(x)
	if err != nil {
		return nil, false, err
	}
	if ns, _ := tag.AttrString("xmlns"); ns != nsData || string(tag.Local()) != "x" {
		return nil, false, &formError{"not a data form"}
	}
	switch typ, _ := tag.AttrString("type"); typ {
	case "submit":
	case "cancel":
		return nil, true, nil
	default:
		return nil, false, &formError{"the form must be of type submit"}
	}
	seenType := false
	var ferr error
	ok := stanza.Children(x, func(f []byte) bool {
		ft, err := stanza.ParseStartTag(f)
		if err != nil || string(ft.Local()) != "field" {
			return true
		}
		name, _ := ft.AttrString("var")
		var values []string
		stanza.Children(f, func(v []byte) bool {
			vt, err := stanza.ParseStartTag(v)
			if err == nil && string(vt.Local()) == "value" {
				s, err := stanza.Text(v)
				if err != nil {
					ferr = &formError{"field " + name + ": bad value"}
					return false
				}
				values = append(values, s)
			}
			return true
		})
		if ferr != nil {
			return false
		}
		if name == "FORM_TYPE" {
			if len(values) != 1 || values[0] != formType {
				ferr = &formError{"FORM_TYPE must be " + formType}
				return false
			}
			seenType = true
			return true
		}
		if len(values) != 1 && name != fieldGroups {
			ferr = &formError{"field " + name + " needs one value"}
			return false
		}
		o, err := parseOption(name, values)
		if err != nil {
			ferr = err
			return false
		}
		opts = append(opts, o)
		return true
	})
	switch {
	case !ok:
		return nil, false, &formError{"malformed form"}
	case ferr != nil:
		return nil, false, ferr
	case !seenType:
		return nil, false, &formError{"FORM_TYPE missing"}
	}
	return opts, false, nil
}

// errUnknownField marks a field this service does not implement.
var errUnknownField = errors.New("pep: unknown configuration field")

// unknownField is errUnknownField naming the field.
type unknownField struct{ name string }

func (e *unknownField) Error() string { return "unsupported field " + e.name }
func (e *unknownField) Unwrap() error { return errUnknownField }

// parseOption parses one configuration field: one value, or the list of
// pubsub#roster_groups_allowed.
func parseOption(name string, values []string) (option, error) {
	if name == fieldGroups {
		groups := groupSet(values)
		return option{name, func(c *storage.PEPConfig) { c.RosterGroups = groups },
			func(c storage.PEPConfig) bool { return c.RosterGroups == groups }}, nil
	}
	v := values[0]
	bad := &formError{"field " + name + ": invalid value " + strconv.Quote(v)}
	switch name {
	case fieldAccess:
		switch v {
		case AccessOpen, AccessPresence, AccessRoster, AccessWhitelist:
		default:
			return option{}, bad
		}
		return option{name, func(c *storage.PEPConfig) { c.Access = v },
			func(c storage.PEPConfig) bool { return c.Access == v }}, nil
	case fieldSendLast:
		switch v {
		case SendNever, SendOnSub, SendOnSubPresence:
		default:
			return option{}, bad
		}
		return option{name, func(c *storage.PEPConfig) { c.SendLast = v },
			func(c storage.PEPConfig) bool { return c.SendLast == v }}, nil
	case fieldPersist, fieldRetract:
		b, ok := parseBool(v)
		if !ok {
			return option{}, bad
		}
		if name == fieldPersist {
			return option{name, func(c *storage.PEPConfig) { c.PersistItems = b },
				func(c storage.PEPConfig) bool { return c.PersistItems == b }}, nil
		}
		return option{name, func(c *storage.PEPConfig) { c.NotifyRetract = b },
			func(c storage.PEPConfig) bool { return c.NotifyRetract == b }}, nil
	case fieldMaxItems:
		n := storage.MaxItemsMax
		if v != "max" {
			var err error
			if n, err = strconv.Atoi(v); err != nil || n < 1 {
				return option{}, bad
			}
		}
		return option{name, func(c *storage.PEPConfig) { c.MaxItems = n },
			func(c storage.PEPConfig) bool { return c.MaxItems == n }}, nil
	}
	return option{}, &unknownField{name}
}

// groupSet is the stored form of a list of roster groups: sorted,
// deduplicated, one per line (a group name holds no line break once
// trimmed; empty names are dropped).
func groupSet(values []string) string {
	var out []string
	for _, v := range values {
		if v = strings.TrimSpace(v); v != "" && !strings.ContainsAny(v, "\r\n") {
			out = append(out, v)
		}
	}
	slices.Sort(out)
	return strings.Join(slices.Compact(out), "\n")
}

// parseBool reads an xs:boolean.
func parseBool(v string) (b, ok bool) {
	switch v {
	case "1", "true":
		return true, true
	case "0", "false":
		return false, true
	}
	return false, false
}

// appendConfigForm appends the node_config form of c (type form, for a
// configure get). maxItems is the server's limit, shown as the field's
// upper bound in its label.
func appendConfigForm(b []byte, c storage.PEPConfig) []byte {
	b = append(b, `<x xmlns='jabber:x:data' type='form'><field var='FORM_TYPE' type='hidden'><value>`+FormNodeConfig+`</value></field>`...)
	b = append(b, `<field var='`+fieldAccess+`' type='list-single' label='Who may subscribe and retrieve items'>`...)
	for _, o := range []string{AccessOpen, AccessPresence, AccessRoster, AccessWhitelist} {
		b = append(b, `<option><value>`+o+`</value></option>`...)
	}
	b = append(b, `<value>`+c.Access+`</value></field>`...)
	b = append(b, `<field var='`+fieldPersist+`' type='boolean' label='Persist items'><value>`...)
	b = appendBool(b, c.PersistItems)
	b = append(b, `</value></field><field var='`+fieldMaxItems+`' type='text-single' label='Maximum number of items to persist, or max'><value>`...)
	if c.MaxItems == storage.MaxItemsMax {
		b = append(b, "max"...)
	} else {
		b = strconv.AppendInt(b, int64(c.MaxItems), 10)
	}
	b = append(b, `</value></field><field var='`+fieldSendLast+`' type='list-single' label='When to send the last published item'>`...)
	for _, o := range []string{SendNever, SendOnSub, SendOnSubPresence} {
		b = append(b, `<option><value>`+o+`</value></option>`...)
	}
	b = append(b, `<value>`+c.SendLast+`</value></field>`...)
	b = append(b, `<field var='`+fieldRetract+`' type='boolean' label='Notify when items are retracted'><value>`...)
	b = appendBool(b, c.NotifyRetract)
	b = append(b, `</value></field><field var='`+fieldGroups+`' type='list-multi' label='Roster groups allowed to subscribe'>`...)
	if c.RosterGroups != "" {
		for _, g := range strings.Split(c.RosterGroups, "\n") {
			b = append(b, `<value>`...)
			b = stanza.AppendEscaped(b, g)
			b = append(b, `</value>`...)
		}
	}
	return append(b, `</field></x>`...)
}

func appendBool(b []byte, v bool) []byte {
	if v {
		return append(b, '1')
	}
	return append(b, '0')
}
