package server

import (
	"context"
	"encoding/base64"
	"errors"

	"go.uber.org/zap"
	"mellium.im/xmpp/stream"

	"github.com/krill-xmpp/krill/sasl"
	"github.com/krill-xmpp/krill/stanza"
	"github.com/krill-xmpp/krill/storage"
)

// XEP-0480 SASL upgrade tasks: a SASL2 password login that asks for
// <upgrade>UPGR-SCRAM-SHA-256</upgrade> on an account without SCRAM-SHA-256
// keys (created with SCRAM-SHA-1 only, imported from another server) gets
// <continue/> instead of <success/>, a salt in <task-data/>, and gives the
// SaltedPassword back: the server adds the keys (never replaces them) and
// then succeeds. The account's other hashes and FAST tokens stay.

// upgradeHashes are the upgrades offered, in <authentication/>: to the
// hashes newer than SHA-1.
var upgradeHashes = []sasl.Hash{sasl.SHA256, sasl.SHA512}

// credentialAdder is the storage that can add a hash's keys to an
// account (storage.SQL); the upgrade is offered only with one.
type credentialAdder interface {
	AddCredential(ctx context.Context, username string, h sasl.Hash, c sasl.Credential) error
}

// appendUpgrades appends the <upgrade/> elements of SASL2's
// <authentication/>.
func (s *Server) appendUpgrades(b []byte) []byte {
	if _, ok := s.accounts.(credentialAdder); !ok {
		return b
	}
	for _, h := range upgradeHashes {
		b = append(b, `<upgrade xmlns='`+sasl.NSUpgrade+`'>`+sasl.UpgradeTask(h)+`</upgrade>`...)
	}
	return b
}

// parseUpgrade adds the task of an <upgrade/> of <authenticate/> to x,
// if it is one offered; others are ignored (XEP-0388: unknown tasks the
// server does not offer are not performed).
func (s *Server) parseUpgrade(x *sasl2Exchange, elem []byte) {
	if _, ok := s.accounts.(credentialAdder); !ok {
		return
	}
	task, err := stanza.Text(elem)
	if err != nil {
		return
	}
	h, ok := sasl.UpgradeHash(task)
	if !ok || h == sasl.SHA1 {
		return
	}
	for _, have := range x.upgrades {
		if have == h {
			return
		}
	}
	x.upgrades = append(x.upgrades, h)
}

// lacking returns the hashes of x's requested upgrades that creds has no
// keys for. It runs on the worker that looked creds up.
func lacking(x *sasl2Exchange, creds *sasl.Credentials) []sasl.Hash {
	var out []sasl.Hash
	for _, h := range x.upgrades {
		if creds.For(h).IsZero() {
			out = append(out, h)
		}
	}
	return out
}

// sasl2Continue sends <continue/> for the first pending upgrade, with the
// mechanism's success data: the client is authenticated, the account not
// yet upgraded.
func (s *Server) sasl2Continue(c *conn, x *sasl2Exchange) {
	b := append(c.loop.scratch[:0], `<continue xmlns='`+nsSASL2+`'>`...)
	if len(x.additional) > 0 {
		b = append(b, `<additional-data>`...)
		b = base64.StdEncoding.AppendEncode(b, x.additional)
		b = append(b, `</additional-data>`...)
		x.additional = nil // sent; <success/> does not repeat it
	}
	b = append(b, `<tasks><task>`+sasl.UpgradeTask(x.lacks[0])+`</task></tasks>`...)
	b = append(b, `<text>this account has no `+sasl.UpgradeTask(x.lacks[0])[len("UPGR-"):]+` keys yet</text></continue>`...)
	c.write(b)
	c.loop.scratch = b[:0]
}

// sasl2Next answers <next task/> with the salt of the pending upgrade.
func (s *Server) sasl2Next(c *conn, x *sasl2Exchange, tag stanza.StartTag) {
	if len(x.lacks) == 0 || x.upgrade != nil {
		s.authFail(c, true, "malformed-request", "no task is pending", false)
		return
	}
	task, _ := tag.AttrString("task")
	if task != sasl.UpgradeTask(x.lacks[0]) {
		s.authFail(c, true, "malformed-request", "that task was not offered", false)
		return
	}
	u, err := sasl.NewScramUpgrade(x.lacks[0], 0)
	if err != nil {
		s.authFail(c, true, "temporary-auth-failure", "", false)
		return
	}
	x.upgrade = u
	b := append(c.loop.scratch[:0], `<task-data xmlns='`+nsSASL2+`'>`...)
	b = u.AppendSalt(b)
	b = append(b, `</task-data>`...)
	c.write(b)
	c.loop.scratch = b[:0]
}

// sasl2TaskData takes the client's SaltedPassword, stores the keys on a
// worker, and goes on with the next upgrade or <success/>.
func (s *Server) sasl2TaskData(c *conn, x *sasl2Exchange, unit []byte) {
	if x.upgrade == nil {
		s.authFail(c, true, "malformed-request", "no task data was asked for", false)
		return
	}
	var salted []byte
	found := false
	stanza.Children(unit, func(child []byte) bool {
		ct, err := stanza.ParseStartTag(child)
		if err != nil || string(ct.Local()) != "hash" {
			return true
		}
		if ns, _ := ct.AttrString("xmlns"); ns != sasl.NSScramUpgrade {
			return true
		}
		found = true
		salted, err = sasl2Payload(child)
		if err != nil {
			salted = nil
		}
		return false
	})
	if !found || salted == nil {
		s.authFail(c, true, "malformed-request", "the task data needs a base64 <hash xmlns='"+sasl.NSScramUpgrade+"'/>", false)
		return
	}
	h := x.lacks[0]
	cred, err := x.upgrade.Finish(salted)
	if err != nil {
		s.authFail(c, true, "malformed-request", "the SaltedPassword has the wrong length", false)
		return
	}
	x.upgrade = nil
	x.lacks = x.lacks[1:]
	adder := s.accounts.(credentialAdder)
	local := c.sess.local
	s.async(c, func(ctx context.Context) func() {
		err := adder.AddCredential(ctx, local, h, cred)
		return func() {
			switch {
			case err == nil:
				s.stats.upgraded.Add(1)
			case errors.Is(err, storage.ErrExists):
				// Another login added them meanwhile: nothing replaced.
			default:
				// The login stands; the upgrade is tried again next time.
				s.log.Warn("SCRAM upgrade not stored", zap.String("user", local), zap.Stringer("hash", h), zap.Error(err))
			}
			if len(x.lacks) > 0 {
				s.sasl2Continue(c, x)
				return
			}
			s.sasl2Succeed(c, x, nil)
		}
	}, func() { s.fail(c, stream.ResourceConstraint.Err, "the server is busy") })
}
