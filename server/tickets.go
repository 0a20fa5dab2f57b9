package server

import (
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"sync/atomic"
)

// TLS session resumption (tls.session_tickets). A reconnecting client
// offers the ticket of its last session and the server skips its
// certificate and CertificateVerify (an ECDSA or RSA signature); the
// key exchange is fresh all the same: crypto/tls resumes only in
// psk_dhe_ke mode (RFC 8446 4.2.9), so a resumed session keeps forward
// secrecy, and it takes no early data outside QUIC, so 0-RTT stays off.
//
// Tickets are stateless: crypto/tls seals the session state (version,
// suite, resumption secret, creation time) under keys of one Config that
// serves as the server-wide key ring (ticketKeys): its automatic keys,
// random, held in memory only, rotate every 24 hours and are dropped
// after 7 days, which bounds a ticket's life with RFC 8446's own maximum.
// A restart makes every ticket useless (a full handshake follows). STARTTLS,
// direct TLS and the web listener share the ring, so a ticket from one
// resumes on another.
//
// Each ticket carries, in SessionState.Extra, the SHA-256 of the leaf
// certificate of the session it came from. tls-server-end-point channel
// binding (RFC 5929) hashes the certificate the client saw, which a
// resumed handshake does not send again; a ticket resumes only while the
// server still uses that certificate, and the connection then binds to it.
// After a certificate reload the ticket is ignored and the client gets a
// full handshake with the new certificate. tls-exporter (RFC 9266) needs
// nothing: a resumed handshake has its own exporter secret.
//
// The lean record layer (tls13.go) takes over at the server's first
// application record, and crypto/tls writes its NewSessionTicket under
// that key before the lean layer exists: the per-connection WrapSession
// (withKeyLog) counts the tickets written, and the lean layer starts its
// sequence number after them. That count lives in the handshake pipe,
// which the connection drops with the handshake: nothing stays per
// connection.

// ticketTagLen is the length of the certificate tag in a ticket.
const ticketTagLen = sha256.Size

// ticketKeys seals and opens session tickets for every listener. keys is
// a Config used only for its automatically rotated ticket keys.
type ticketKeys struct {
	keys  *tls.Config
	certs *certSource
	last  atomic.Pointer[certTag] // the tag of the certificate last seen
}

// certTag is a certificate's tag in tickets, kept for the current
// certificate so that a handshake does not hash it again.
type certTag struct {
	leaf *x509.Certificate
	tag  [ticketTagLen]byte
}

// tagOf returns leaf's tag.
func (k *ticketKeys) tagOf(leaf *x509.Certificate) *[ticketTagLen]byte {
	if t := k.last.Load(); t != nil && t.leaf == leaf {
		return &t.tag
	}
	t := &certTag{leaf: leaf, tag: sha256.Sum256(leaf.Raw)}
	k.last.Store(t)
	return &t.tag
}

func newTicketKeys(certs *certSource) *ticketKeys {
	return &ticketKeys{keys: &tls.Config{}, certs: certs}
}

// wrap seals ss for a session whose certificate was leaf (nil: the
// current one). It is tls.Config.WrapSession.
func (k *ticketKeys) wrap(cs tls.ConnectionState, ss *tls.SessionState, leaf *x509.Certificate) ([]byte, error) {
	if leaf == nil {
		leaf = k.certs.cert.Load().Leaf
	}
	ss.Extra = append(ss.Extra, k.tagOf(leaf)[:])
	return k.keys.EncryptTicket(cs, ss)
}

// unwrap opens a ticket and returns its state with the certificate it was
// issued under, or nil (a full handshake follows) if it does not open,
// carries no tag, or the certificate is no longer the server's. It is
// tls.Config.UnwrapSession.
func (k *ticketKeys) unwrap(identity []byte, cs tls.ConnectionState) (*tls.SessionState, *x509.Certificate, error) {
	ss, err := k.keys.DecryptTicket(identity, cs)
	if err != nil || ss == nil {
		return nil, nil, err
	}
	if len(ss.Extra) == 0 {
		return nil, nil, nil
	}
	tag := ss.Extra[len(ss.Extra)-1]
	leaf := k.certs.cert.Load().Leaf
	if len(tag) != ticketTagLen || subtle.ConstantTimeCompare(tag, k.tagOf(leaf)[:]) != 1 {
		return nil, nil, nil
	}
	ss.Extra = ss.Extra[:len(ss.Extra)-1]
	return ss, leaf, nil
}

// withTickets enables session tickets on base through k. A handshake
// over a tlsPipe gets per-connection hooks instead (withKeyLog), which
// count the tickets and record the certificate; this one serves the
// stock path, where the certificate is the current one.
func withTickets(base *tls.Config, k *ticketKeys) {
	base.SessionTicketsDisabled = false
	base.WrapSession = func(cs tls.ConnectionState, ss *tls.SessionState) ([]byte, error) {
		return k.wrap(cs, ss, nil)
	}
	base.UnwrapSession = func(identity []byte, cs tls.ConnectionState) (*tls.SessionState, error) {
		ss, _, err := k.unwrap(identity, cs)
		return ss, err
	}
}

// pipeTickets gives cfg, a configuration made for the handshake over p,
// ticket hooks that keep what the connection needs in p: the number of
// tickets written (the lean layer's first sequence number) and, on a
// resumption, the certificate to bind tls-server-end-point to.
func pipeTickets(cfg *tls.Config, p *tlsPipe, k *ticketKeys) {
	cfg.WrapSession = func(cs tls.ConnectionState, ss *tls.SessionState) ([]byte, error) {
		b, err := k.wrap(cs, ss, p.leaf)
		if err == nil {
			p.tickets++
		}
		return b, err
	}
	cfg.UnwrapSession = func(identity []byte, cs tls.ConnectionState) (*tls.SessionState, error) {
		ss, leaf, err := k.unwrap(identity, cs)
		if ss != nil {
			// If crypto/tls declines the session after all (another
			// suite's hash), GetCertificate sets the leaf again.
			p.leaf = leaf
		}
		return ss, err
	}
}
