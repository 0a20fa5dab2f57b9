package muc

import (
	"errors"
	"slices"
	"testing"

	"github.com/krill-xmpp/krill/config"
	"github.com/krill-xmpp/krill/hook"
)

// TestRegister: the service registers its domain (conference.<domain> by
// default, the configured one otherwise), nothing when off, and a domain
// has one handler.
func TestRegister(t *testing.T) {
	cases := []struct {
		name, domain string
		want         []string
	}{
		{"default", "", []string{"conference.localhost"}},
		{"configured", "chat.example.org", []string{"chat.example.org"}},
		{"off", "off", nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := config.Default()
			cfg.MUC.Domain = tc.domain
			m := &Module{Config: cfg}
			reg, err := hook.New(m)
			if err != nil {
				t.Fatal(err)
			}
			defer m.Stop(t.Context())
			if got := reg.Domains(); !slices.Equal(got, tc.want) {
				t.Fatalf("domains %q, want %q", got, tc.want)
			}
		})
	}
	cfg := config.Default()
	a, b := &Module{Config: cfg}, &Module{Config: cfg}
	defer a.Stop(t.Context())
	defer b.Stop(t.Context())
	if _, err := hook.New(a, b); !errors.Is(err, hook.ErrDuplicate) {
		t.Fatalf("two services on one domain: %v, want ErrDuplicate", err)
	}
}

// TestOccupantID: stable per room and bare JID, distinct otherwise, and
// not the JID.
func TestOccupantID(t *testing.T) {
	m := &Module{secret: []byte("0123456789abcdef0123456789abcdef")}
	a := m.occupantID("r@c", "alice@x")
	if a != m.occupantID("r@c", "alice@x") || len(a) != 24 {
		t.Fatalf("id %q not stable or not 24 characters", a)
	}
	for _, other := range []string{m.occupantID("r@c", "bob@x"), m.occupantID("s@c", "alice@x"), (&Module{secret: []byte("x")}).occupantID("r@c", "alice@x")} {
		if other == a {
			t.Fatalf("ids collide: %q", a)
		}
	}
}

// TestPrivileges is XEP-0045's role (5.1.1) and affiliation (5.2.1)
// privilege tables as the admin handler applies them.
func TestPrivileges(t *testing.T) {
	occ := func(a affiliation, r role) *occupant {
		o := &occupant{aff: a}
		o.role.Store(uint32(r))
		return o
	}
	roles := []struct {
		name      string
		actorAff  affiliation
		actorRole role
		target    *occupant
		to        role
		want      bool
	}{
		{"participant kicks", affNone, roleParticipant, occ(affNone, roleParticipant), roleNone, false},
		{"moderator kicks participant", affNone, roleModerator, occ(affNone, roleParticipant), roleNone, true},
		{"moderator kicks member", affNone, roleModerator, occ(affMember, roleParticipant), roleNone, true},
		{"moderator kicks admin", affNone, roleModerator, occ(affAdmin, roleModerator), roleNone, false},
		{"owner kicks admin", affOwner, roleModerator, occ(affAdmin, roleModerator), roleNone, false},
		{"moderator grants voice", affNone, roleModerator, occ(affNone, roleVisitor), roleParticipant, true},
		{"moderator revokes voice", affNone, roleModerator, occ(affNone, roleParticipant), roleVisitor, true},
		{"moderator grants moderator", affNone, roleModerator, occ(affNone, roleParticipant), roleModerator, false},
		{"admin grants moderator", affAdmin, roleModerator, occ(affNone, roleParticipant), roleModerator, true},
		{"moderator revokes moderator", affMember, roleModerator, occ(affNone, roleModerator), roleParticipant, false},
		{"admin revokes moderator", affAdmin, roleModerator, occ(affNone, roleModerator), roleParticipant, true},
		{"admin not present", affAdmin, roleNone, occ(affNone, roleParticipant), roleNone, true},
	}
	for _, tc := range roles {
		if got := mayRole(tc.actorAff, tc.actorRole, tc.target, tc.to); got != tc.want {
			t.Errorf("role: %s = %v, want %v", tc.name, got, tc.want)
		}
	}
	two := map[string]affiliation{"a": affOwner, "b": affOwner}
	one := map[string]affiliation{"a": affOwner}
	affs := []struct {
		name            string
		affs            map[string]affiliation
		actor, from, to affiliation
		want            string
	}{
		{"member grants member", one, affMember, affNone, affMember, "not-allowed"},
		{"admin grants member", one, affAdmin, affNone, affMember, ""},
		{"admin bans member", one, affAdmin, affMember, affOutcast, ""},
		{"admin bans admin", one, affAdmin, affAdmin, affOutcast, "not-allowed"},
		{"admin grants admin", one, affAdmin, affNone, affAdmin, "not-allowed"},
		{"owner grants admin", one, affOwner, affNone, affAdmin, ""},
		{"owner grants owner", one, affOwner, affMember, affOwner, ""},
		{"owner demotes owner", two, affOwner, affOwner, affAdmin, ""},
		{"owner demotes last owner", one, affOwner, affOwner, affAdmin, "conflict"},
	}
	for _, tc := range affs {
		if got, _ := mayAffiliate(tc.affs, tc.actor, tc.from, tc.to); got != tc.want {
			t.Errorf("affiliation: %s = %q, want %q", tc.name, got, tc.want)
		}
	}
}
