package bench

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Errors returned by Drive and the stages.
var (
	// ErrUnknownStage means Options.Stage names no stage.
	ErrUnknownStage = errors.New("bench: unknown stage")
	// ErrBadOptions means Options cannot describe a run (no address, N < 1).
	ErrBadOptions = errors.New("bench: invalid options")
	// ErrNoFeatures means the server closed the stream, or sent more than
	// maxNegotiation bytes, before its stream features were complete.
	ErrNoFeatures = errors.New("bench: no stream features from server")
	// ErrStreamError means the server answered with a stream error.
	ErrStreamError = errors.New("bench: stream error from server")
	// ErrRefused means the server answered a STARTTLS, SASL or bind
	// request with a failure or an error.
	ErrRefused = errors.New("bench: server refused the request")
)

// Stage names the point of a client's negotiation at which Drive holds a
// connection idle. Each stage is one small function (see stageFuncs); a
// later stage runs the earlier ones first.
type Stage string

// The stages Drive knows.
const (
	// StageTCP is a connection accepted by the server; the client sends
	// nothing.
	StageTCP Stage = "tcp"
	// StageStream is a stream opened by the client whose stream features
	// the server has sent in full (RFC 6120 section 4.3.2).
	StageStream Stage = "stream"
	// StageTLS is StageStream, then STARTTLS (RFC 6120 section 5), a TLS
	// handshake with Options.TLSConfig, and the stream opened again over
	// TLS with its features received.
	StageTLS Stage = "tls"
	// StageAuth is StageTLS, then a SCRAM-SHA-256 login (RFC 7677) as the
	// connection's own account, the stream restarted, a resource bound
	// (RFC 6120 section 7) and initial presence sent (RFC 6121 section
	// 4.2).
	StageAuth Stage = "auth"
	// StageParked is StageAuth, then XEP-0198 stream management enabled
	// with resumption, then the connection reset (no stream close): the
	// server keeps the session parked, without a connection, for its
	// resumption timeout. Drive holds nothing for it.
	StageParked Stage = "parked"
)

// stageFunc brings a freshly dialled connection, the i-th of a run, to a
// stage. A stage may wrap the connection (STARTTLS does), so it returns
// the one to hold. The caller has set a deadline on c that bounds the
// whole stage.
type stageFunc func(c net.Conn, o *Options, i int) (net.Conn, error)

var stageFuncs = map[Stage]stageFunc{
	StageTCP:    func(c net.Conn, _ *Options, _ int) (net.Conn, error) { return c, nil },
	StageStream: openStream,
	StageTLS:    startTLS,
	StageAuth:   login,
	StageParked: park,
}

// Stages returns the names of the stages Drive knows, in negotiation order.
// The WebSocket stages and auth-plain (ws.go) come last.
func Stages() []Stage {
	return []Stage{StageTCP, StageStream, StageTLS, StageAuth, StageParked, StageAuthPlain, StageWS, StageWSAuth, StageWSS, StageWSSAuth}
}

// Options configure Drive. The zero value of each field but Addr and N
// selects its documented default.
type Options struct {
	// Addr is the server's c2s address, host:port.
	Addr string
	// N is how many connections to open; it must be at least 1.
	N int
	// Stage is where each connection is brought; empty means StageTCP.
	Stage Stage
	// Domain is the stream's 'to' address; empty means "localhost".
	Domain string
	// LocalAddrs are the source addresses connections are dialled from,
	// in turn. Spreading connections over several loopback addresses
	// (127.0.0.2, 127.0.0.3, ...) keeps each one's ephemeral ports from
	// running out. Empty lets the system choose.
	LocalAddrs []netip.Addr
	// Concurrency is how many connections are being opened at once;
	// 0 means 64.
	Concurrency int
	// Timeout bounds dialling plus bringing one connection to its stage;
	// 0 means 30 seconds.
	Timeout time.Duration
	// Ready, if non-nil, is called once, with N, when every connection has
	// reached the stage.
	Ready func(n int)
	// Progress, if non-nil, is called each time a connection reaches the
	// stage, from the goroutine that opened it; it must be safe for
	// concurrent use and quick (a counter, for a progress bar).
	Progress func()

	// TLSConfig is the client's TLS configuration for StageTLS and
	// StageAuth, which need it. An empty ServerName means Domain. It is
	// not modified; set CurvePreferences here to choose the key share.
	TLSConfig *tls.Config
	// UserPrefix and FirstUser name the accounts of StageAuth: connection
	// i logs in as UserPrefix followed by FirstUser+i in decimal. An empty
	// UserPrefix means DefaultUserPrefix.
	UserPrefix string
	FirstUser  int
	// Password is every account's password; empty means DefaultPassword.
	Password string
	// Resource is the resource StageAuth binds; empty means
	// DefaultResource.
	Resource string
	// WebPath is the WebSocket endpoint of the WebSocket stages (ws.go),
	// whose Addr is the server's web listener; empty means
	// DefaultWebPath.
	WebPath string
}

// Defaults for the zero fields of Options.
const (
	DefaultDomain      = "localhost"
	DefaultConcurrency = 64
	DefaultTimeout     = 30 * time.Second
	DefaultUserPrefix  = "bench"
	DefaultPassword    = "bench password"
	DefaultResource    = "bench"
)

// maxNegotiation bounds what a stage reads while waiting for one answer,
// so that a server that never sends what a stage waits for cannot make it
// read forever.
const maxNegotiation = 64 << 10

func (o *Options) setDefaults() error {
	if o.Addr == "" || o.N < 1 {
		return fmt.Errorf("%w: need an address and N >= 1, got %q and %d", ErrBadOptions, o.Addr, o.N)
	}
	if o.Stage == "" {
		o.Stage = StageTCP
	}
	if _, ok := stageFuncs[o.Stage]; !ok {
		return fmt.Errorf("%w: %q", ErrUnknownStage, o.Stage)
	}
	if o.Domain == "" {
		o.Domain = DefaultDomain
	}
	if o.Concurrency <= 0 {
		o.Concurrency = DefaultConcurrency
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	if o.WebPath == "" {
		o.WebPath = DefaultWebPath
	}
	if needsTLS(o.Stage) {
		if o.TLSConfig == nil {
			return fmt.Errorf("%w: stage %q needs a TLS configuration", ErrBadOptions, o.Stage)
		}
		if o.TLSConfig.ServerName == "" {
			o.TLSConfig = o.TLSConfig.Clone()
			o.TLSConfig.ServerName = o.Domain
		}
	}
	if o.UserPrefix == "" {
		o.UserPrefix = DefaultUserPrefix
	}
	if o.Password == "" {
		o.Password = DefaultPassword
	}
	if o.Resource == "" {
		o.Resource = DefaultResource
	}
	return nil
}

// Drive opens o.N connections to o.Addr, at most o.Concurrency at a time,
// brings each to o.Stage, calls o.Ready, and then holds them, idle, until
// ctx is done. It closes every connection before it returns, with a reset
// (SO_LINGER 0) so that no source port is left in TIME_WAIT.
//
// Drive returns nil when ctx ends after all connections reached the stage,
// the first connection's error if any failed (the others are then
// abandoned), and ctx's error if ctx ended before they were ready.
func Drive(ctx context.Context, o Options) error {
	if err := o.setDefaults(); err != nil {
		return err
	}
	stage := stageFuncs[o.Stage]
	conns := make([]net.Conn, o.N)
	defer func() {
		for _, c := range conns {
			if c != nil {
				abort(c)
			}
		}
	}()

	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		next     atomic.Int64 // index of the next connection to open
		firstErr error
		errOnce  sync.Once
		wg       sync.WaitGroup
	)
	workers := min(o.Concurrency, o.N)
	for range workers {
		wg.Go(func() {
			// Each index is taken by exactly one worker, so conns[i] has
			// one writer, and the loop ends after at most N iterations
			// overall.
			for i := int(next.Add(1) - 1); i < o.N; i = int(next.Add(1) - 1) {
				if runCtx.Err() != nil {
					return
				}
				c, err := open(runCtx, &o, i, stage)
				if err != nil {
					errOnce.Do(func() {
						firstErr = fmt.Errorf("bench: connection %d of %d to %s: %w", i+1, o.N, o.Addr, err)
						cancel()
					})
					return
				}
				conns[i] = c
				if o.Progress != nil {
					o.Progress()
				}
			}
		})
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		// Failures after ctx ended are its consequence.
		return err
	}
	if firstErr != nil {
		return firstErr
	}
	if o.Ready != nil {
		o.Ready(o.N)
	}
	<-ctx.Done()
	return nil
}

// abort closes c with a reset rather than a FIN, so that its source port
// does not linger in TIME_WAIT: runs back to back from the same source
// addresses would otherwise run out of ephemeral ports.
func abort(c net.Conn) {
	nc := c
	// Unwrap stages that wrap the TCP connection, as *tls.Conn does.
	for range 4 {
		u, ok := nc.(interface{ NetConn() net.Conn })
		if !ok {
			break
		}
		nc = u.NetConn()
	}
	if tc, ok := nc.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = c.Close()
}

// Dial opens one connection, the i-th of a run (which names its account
// in StageAuth), and brings it to o.Stage within o.Timeout; o.N and
// o.Ready are ignored. The caller closes the connection it returns; Abort
// closes it with a reset.
func Dial(ctx context.Context, o Options, i int) (net.Conn, error) {
	if o.N < 1 {
		o.N = 1
	}
	if err := o.setDefaults(); err != nil {
		return nil, err
	}
	return open(ctx, &o, i, stageFuncs[o.Stage])
}

// Abort closes c, a connection from Dial, with a reset rather than a FIN,
// so that its source port does not linger in TIME_WAIT.
func Abort(c net.Conn) { abort(c) }

// open dials connection i and brings it to its stage within o.Timeout.
func open(ctx context.Context, o *Options, i int, stage stageFunc) (net.Conn, error) {
	d := net.Dialer{Timeout: o.Timeout}
	if len(o.LocalAddrs) > 0 {
		d.LocalAddr = net.TCPAddrFromAddrPort(netip.AddrPortFrom(o.LocalAddrs[i%len(o.LocalAddrs)], 0))
	}
	c, err := d.DialContext(ctx, "tcp", o.Addr)
	if err != nil {
		return nil, err
	}
	if err := c.SetDeadline(time.Now().Add(o.Timeout)); err != nil {
		_ = c.Close()
		return nil, err
	}
	// Ending ctx interrupts the stage's reads and writes at once.
	stop := context.AfterFunc(ctx, func() { _ = c.SetDeadline(time.Now()) })
	held, err := stage(c, o, i)
	if !stop() {
		err = errors.Join(err, ctx.Err())
	}
	if err != nil {
		abort(c)
		return nil, err
	}
	// Idle from here on: no deadline.
	if err := held.SetDeadline(time.Time{}); err != nil {
		abort(held)
		return nil, err
	}
	return held, nil
}

// openStream sends an RFC 6120 stream header and waits for the end of the
// server's stream features.
func openStream(c net.Conn, o *Options, _ int) (net.Conn, error) {
	header := `<?xml version='1.0'?><stream:stream to='` + escapeAttr(o.Domain) +
		`' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>`
	if _, err := io.WriteString(c, header); err != nil {
		return nil, err
	}
	if _, err := readUntil(c, "</stream:features>"); err != nil {
		return nil, err
	}
	return c, nil
}

const (
	nsTLS  = "urn:ietf:params:xml:ns:xmpp-tls"
	nsSASL = "urn:ietf:params:xml:ns:xmpp-sasl"
	nsBind = "urn:ietf:params:xml:ns:xmpp-bind"
)

// startTLS opens the stream, upgrades it with STARTTLS and opens it again
// over TLS.
func startTLS(c net.Conn, o *Options, i int) (net.Conn, error) {
	if _, err := openStream(c, o, i); err != nil {
		return nil, err
	}
	if _, err := io.WriteString(c, `<starttls xmlns='`+nsTLS+`'/>`); err != nil {
		return nil, err
	}
	// The whole <proceed/> must be read here: a byte of it left in the
	// socket would reach the TLS handshake.
	got, err := readUntil(c, nsTLS+"'/>", nsTLS+`"/>`)
	if err != nil {
		return nil, err
	}
	if !bytes.Contains(got, []byte("<proceed")) {
		return nil, fmt.Errorf("%w: STARTTLS answered with %s", ErrRefused, clip(got, 200))
	}
	tc := tls.Client(c, o.TLSConfig)
	if err := tc.Handshake(); err != nil {
		return nil, fmt.Errorf("bench: TLS handshake: %w", err)
	}
	return openStream(tc, o, i)
}

// login brings a connection to StageTLS, then logs in with SCRAM-SHA-256
// as account i, restarts the stream, binds o.Resource and sends initial
// presence.
func login(c net.Conn, o *Options, i int) (net.Conn, error) {
	tc, err := startTLS(c, o, i)
	if err != nil {
		return nil, err
	}
	if err := Authenticate(tc, o.UserPrefix+strconv.Itoa(o.FirstUser+i), o.Password); err != nil {
		return nil, err
	}
	if _, err := openStream(tc, o, i); err != nil {
		return nil, err
	}
	if _, err := io.WriteString(tc, `<iq type='set' id='bind'><bind xmlns='`+nsBind+`'><resource>`+
		escapeAttr(o.Resource)+`</resource></bind></iq>`); err != nil {
		return nil, err
	}
	got, err := readUntil(tc, "</iq>", "/>")
	if err != nil {
		return nil, err
	}
	if !bytes.Contains(got, []byte("<jid>")) {
		return nil, fmt.Errorf("%w: bind answered with %s", ErrRefused, clip(got, 200))
	}
	if _, err := io.WriteString(tc, `<presence/>`); err != nil {
		return nil, err
	}
	return tc, nil
}

// park brings a connection to StageAuth, enables stream management with
// resumption, and resets the connection.
func park(c net.Conn, o *Options, i int) (net.Conn, error) {
	tc, err := login(c, o, i)
	if err != nil {
		return nil, err
	}
	if _, err := io.WriteString(tc, `<enable xmlns='urn:xmpp:sm:3' resume='true'/>`); err != nil {
		return nil, err
	}
	got, err := readUntil(tc, "<enabled", "<failed")
	if err != nil {
		return nil, err
	}
	if !bytes.Contains(got, []byte("<enabled")) {
		return nil, fmt.Errorf("%w: enable answered with %s", ErrRefused, clip(got, 200))
	}
	abort(tc)
	return parked{tc}, nil
}

// parked stands for a connection StageParked has reset: there is nothing
// left to hold or close.
type parked struct{ net.Conn }

func (parked) SetDeadline(time.Time) error { return nil }
func (parked) Close() error                { return nil }

// Authenticate logs in as user with SCRAM-SHA-256 (RFC 7677) on c, a
// stream whose features the server has just sent (after STARTTLS, for
// servers that require it), and checks the server's signature. A <failure>
// from the server is ErrRefused. The client's PBKDF2 keys are cached per
// password, salt and iteration count, so repeated logins, failing ones
// included, cost little client CPU. The stream must be restarted after a
// nil return, as RFC 6120 section 6.4.6 requires.
func Authenticate(c net.Conn, user, password string) error {
	sc, first := newSCRAM(user, password)
	if _, err := io.WriteString(c, `<auth xmlns='`+nsSASL+`' mechanism='SCRAM-SHA-256'>`+
		base64.StdEncoding.EncodeToString(first)+`</auth>`); err != nil {
		return err
	}
	challenge, err := readSASL(c, "challenge")
	if err != nil {
		return err
	}
	final, err := sc.final(challenge)
	if err != nil {
		return err
	}
	if _, err := io.WriteString(c, `<response xmlns='`+nsSASL+`'>`+
		base64.StdEncoding.EncodeToString(final)+`</response>`); err != nil {
		return err
	}
	success, err := readSASL(c, "success")
	if err != nil {
		return err
	}
	return sc.verify(success)
}

// readSASL reads one SASL element, <name>, and returns its decoded
// content. A <failure> instead is ErrRefused.
func readSASL(r io.Reader, name string) ([]byte, error) {
	got, err := readUntil(r, "</"+name+">", "</failure>")
	if err != nil {
		return nil, err
	}
	start := bytes.Index(got, []byte("<"+name))
	if start < 0 {
		return nil, fmt.Errorf("%w: SASL answered with %s", ErrRefused, clip(got, 200))
	}
	body := got[start:]
	open := bytes.IndexByte(body, '>')
	end := bytes.Index(body, []byte("</"+name+">"))
	if open < 0 || end < open {
		return nil, fmt.Errorf("%w: malformed <%s>: %s", ErrRefused, name, clip(body, 200))
	}
	dec, err := base64.StdEncoding.DecodeString(string(bytes.TrimSpace(body[open+1 : end])))
	if err != nil {
		return nil, fmt.Errorf("%w: <%s> content: %w", ErrSCRAM, name, err)
	}
	return dec, nil
}

// readUntil reads from r until what it received contains one of wants,
// and returns what it received. It stops with ErrStreamError at a stream
// error and with ErrNoFeatures at EOF or after maxNegotiation bytes. It
// reads nothing past the read that completed a want; the stages only
// wait for an answer when the server has nothing else to send.
func readUntil(r io.Reader, wants ...string) ([]byte, error) {
	var (
		got   []byte
		chunk [2048]byte
	)
	for len(got) < maxNegotiation {
		n, err := r.Read(chunk[:])
		got = append(got, chunk[:n]...)
		for _, w := range wants {
			if bytes.Contains(got, []byte(w)) {
				return got, nil
			}
		}
		if i := bytes.Index(got, []byte("<stream:error")); i >= 0 {
			return got, fmt.Errorf("%w: %s", ErrStreamError, clip(got[i:], 200))
		}
		if errors.Is(err, io.EOF) {
			return got, fmt.Errorf("%w: connection closed after %d bytes: %s", ErrNoFeatures, len(got), clip(got, 200))
		}
		if err != nil {
			return got, err
		}
	}
	return got, fmt.Errorf("%w: no %s in the first %d bytes", ErrNoFeatures, wants[0], len(got))
}

func clip(b []byte, n int) string {
	if len(b) > n {
		return string(b[:n]) + "..."
	}
	return string(b)
}

var attrEscaper = strings.NewReplacer("&", "&amp;", "<", "&lt;", "'", "&apos;", `"`, "&quot;")

func escapeAttr(s string) string { return attrEscaper.Replace(s) }

// EnableResume enables XEP-0198 stream management with resumption on c, a
// stream at StageAuth, and returns the session's resumption id.
func EnableResume(c net.Conn) (string, error) {
	if _, err := io.WriteString(c, `<enable xmlns='urn:xmpp:sm:3' resume='true'/>`); err != nil {
		return "", err
	}
	got, err := readUntil(c, "<enabled", "<failed")
	if err != nil {
		return "", err
	}
	i := bytes.Index(got, []byte("<enabled"))
	if i < 0 {
		return "", fmt.Errorf("%w: enable answered with %s", ErrRefused, clip(got, 200))
	}
	_, rest, ok := bytes.Cut(got[i:], []byte(" id='"))
	id, _, ok2 := bytes.Cut(rest, []byte("'"))
	if !ok || !ok2 {
		return "", fmt.Errorf("%w: no id in %s", ErrRefused, clip(got[i:], 200))
	}
	return string(id), nil
}

// Resume dials a new connection for account i and takes the session
// previd back on it: STARTTLS, TLS handshake, SCRAM-SHA-256, stream
// restart, <resume previd h='0'/> (XEP-0198 5), until <resumed/>, instead
// of binding and sending presence. The client is taken to have received
// nothing since: anything the server resends is read or left unread.
func Resume(ctx context.Context, o Options, i int, previd string) (net.Conn, error) {
	if o.N < 1 {
		o.N = 1
	}
	if err := o.setDefaults(); err != nil {
		return nil, err
	}
	return open(ctx, &o, i, func(c net.Conn, o *Options, i int) (net.Conn, error) {
		tc, err := startTLS(c, o, i)
		if err != nil {
			return nil, err
		}
		if err := Authenticate(tc, o.UserPrefix+strconv.Itoa(o.FirstUser+i), o.Password); err != nil {
			return nil, err
		}
		if _, err := openStream(tc, o, i); err != nil {
			return nil, err
		}
		if _, err := io.WriteString(tc, `<resume xmlns='urn:xmpp:sm:3' previd='`+escapeAttr(previd)+`' h='0'/>`); err != nil {
			return nil, err
		}
		got, err := readUntil(tc, "<resumed", "<failed")
		if err != nil {
			return nil, err
		}
		if !bytes.Contains(got, []byte("<resumed")) {
			return nil, fmt.Errorf("%w: resume answered with %s", ErrRefused, clip(got, 200))
		}
		return tc, nil
	})
}
