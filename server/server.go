// Package server is Krill's client-to-server core: a gnet event handler that
// negotiates RFC 6120 streams (SASL, resource binding) and routes stanzas
// between local sessions, with no goroutine per connection.
//
// Concurrency model. Each connection belongs to one gnet event loop and its
// state is touched only on that loop. Blocking work (storage, password
// hashing) runs on a bounded workpool.Pool and hands its result back with
// EventLoop.Execute; the callback first checks the connection's own closed
// flag, since gnet does not. Stanzas for a session on another loop go
// through that session's mailbox (mutex-guarded, drained on its own loop),
// which keeps per-sender order where gnet's task queues do not. Each loop has
// one timer wheel holding one deadline per connection, advanced by a single
// ticker goroutine that posts to every loop.
package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"runtime"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/panjf2000/gnet/v2"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"golang.org/x/sys/unix"
	"mellium.im/xmpp/stream"

	"github.com/krill-xmpp/krill/cluster"
	"github.com/krill-xmpp/krill/config"
	"github.com/krill-xmpp/krill/hook"
	"github.com/krill-xmpp/krill/ratelimit"
	"github.com/krill-xmpp/krill/storage"
	"github.com/krill-xmpp/krill/timerwheel"
	"github.com/krill-xmpp/krill/workpool"
)

// Errors returned by the Server's methods.
var (
	// ErrStarted means Start was called twice.
	ErrStarted = errors.New("server: already started")
	// ErrNotStarted means the server is not running.
	ErrNotStarted = errors.New("server: not started")
)

// Server is one Krill c2s endpoint. Create it with New, run it with Start,
// stop it with Stop.
type Server struct {
	// ports holds the free ports picked for port-0 listeners until
	// the engine binds them (Start).
	ports    portPicker
	cfg      config.Config                 // as started; never changes
	live     atomic.Pointer[config.Config] // the live keys, swapped by Reload
	log      *zap.Logger
	accounts storage.Accounts
	hooks    *hook.Registry
	host     host
	pool     *workpool.Pool
	sessions sessionTable
	preauth  preauthLimiter
	stats    Stats

	// cluster is this node's membership of a cluster, nil when standalone
	// (cluster.go).
	cluster      *cluster.Node
	clusterStats clusterStats
	shared       *sharedState // leases and forwarding (cluster_shared.go), nil when standalone

	// TLS: the certificate, the two configurations and the handshake cap.
	certs       *certSource
	tlsStartTLS *tls.Config
	tlsDirect   *tls.Config
	tickets     *ticketKeys // TLS session ticket keys; nil with tls.session_tickets off
	handshakes  handshakeLimiter

	fed *federation // server-to-server streams (s2s.go)

	authFailures ratelimit.Window // failed logins per address prefix; see failureLimit
	directAddr   netip.AddrPort   // the direct TLS listener, once bound
	webAddr      netip.AddrPort   // the web listener, once bound

	listen, directListen, webListen string // listener addresses with concrete ports

	web webState // the web listener's routes and prebuilt answers (ws.go)

	// Prebuilt wire bytes that depend only on the configuration.
	featuresPlain []byte // before TLS: STARTTLS, and SCRAM if plaintext auth is allowed
	featuresTLS   []byte // over TLS: every mechanism, -PLUS first, and XEP-0440
	featuresBind  []byte // after authentication: bind, session, and the modules' features
	featuresBound []byte // after SASL2 with Bind 2: the bound stream's features (no restart)

	loopsMu sync.Mutex
	loops   map[gnet.EventLoop]*loop
	loopsV  atomic.Pointer[[]*loop] // copy-on-write view for the ticker

	started  atomic.Bool
	stopped  atomic.Bool
	stopping atomic.Bool // graceful shutdown under way: refuse new clients
	moves    moveTable   // sessions handed over to other cluster nodes (cluster_resume.go)
	drain    drainState  // krill cluster drain (cluster_drain.go)

	metrics   serverMetrics
	admin     *http.Server
	adminAddr net.Addr
	booted    chan error
	done      chan struct{}
	eng       gnet.Engine
	addr      net.Addr
	runErr    error
	tickStop  chan struct{}
	// epoch is the common start of every loop's wheel and of the ticker,
	// so that ticks land on wheel tick boundaries: a deadline then fires
	// at most one tick (plus scheduling delay) after it is due.
	epoch time.Time
}

// New returns a server for cfg that checks logins against accounts and
// hands every stanza, feature and lifecycle event to the modules in reg
// (nil: none, a bare XMPP router). cfg is validated.
func New(cfg config.Config, log *zap.Logger, accounts storage.Accounts, reg *hook.Registry) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("server: invalid configuration:\n%w", err)
	}
	if log == nil {
		log = zap.NewNop()
	}
	if reg == nil {
		reg, _ = hook.New()
	}
	s := &Server{
		cfg:      cfg,
		log:      log,
		accounts: accounts,
		hooks:    reg,
		loops:    make(map[gnet.EventLoop]*loop),
		booted:   make(chan error, 1),
		done:     make(chan struct{}),
		tickStop: make(chan struct{}),
	}
	s.live.Store(&cfg)
	s.metrics = newServerMetrics()
	s.preauth.init(cfg.Preauth.MaxPerIP, cfg.Preauth.MaxTotal, prefixes(&cfg))
	s.sessions.init()
	s.handshakes = handshakeLimiter{srv: s, max: cfg.TLS.MaxHandshakes, maxQueue: cfg.TLS.MaxHandshakeQueue}
	certs, err := newCertSource(cfg.TLS.Cert, cfg.TLS.Key, cfg.Domain, cfg.DataDir, hostedDomains(&cfg)...)
	if err != nil {
		return nil, err
	}
	if certs.generated {
		log.Warn("using a self-signed development certificate; set tls.cert and tls.key for production",
			zap.String("cert", certs.certFile))
	}
	s.certs = certs
	if cfg.TLS.SessionTickets {
		s.tickets = newTicketKeys(certs)
	}
	s.tlsStartTLS, s.tlsDirect = tlsConfigs(certs, cfg.TLS.Lean, s.tickets)
	if err := s.initFederation(); err != nil {
		return nil, err
	}
	s.host = host{s}
	s.featuresPlain = s.buildFeatures(false)
	s.featuresTLS = s.buildFeatures(true)
	s.featuresBind = append([]byte(`<stream:features><bind xmlns='`+nsBind+`'/><session xmlns='`+nsSession+`'><optional/></session>`),
		reg.StreamFeatures(nil, hook.PhaseBind, true)...)
	s.featuresBind = append(s.featuresBind, `</stream:features>`...)
	s.featuresBound = append([]byte(`<stream:features>`), reg.StreamFeatures(nil, hook.PhaseBound, true)...)
	s.featuresBound = append(s.featuresBound, `</stream:features>`...)
	s.initWeb()
	return s, nil
}

// Start begins listening and returns once the listener is up.
func (s *Server) Start() error {
	if !s.started.CompareAndSwap(false, true) {
		return ErrStarted
	}
	s.pool = workpool.New(s.cfg.Server.Workers, s.cfg.Server.WorkQueue)
	if err := s.startCluster(); err != nil {
		s.pool.Close()
		return err
	}
	loops := s.cfg.Server.EventLoops
	if loops == 0 {
		loops = runtime.GOMAXPROCS(0)
	}
	s.epoch = time.Now()
	ticker := time.NewTicker(s.cfg.Server.Tick)
	h := &handler{srv: s}
	// gnet tells listeners apart by their configured address, so port 0
	// (tests) is resolved to a free port first.
	var err error
	defer s.ports.release() // on every return; before gnet binds below too
	if s.listen, err = s.ports.concrete(s.cfg.C2S.Listen); err != nil {
		return err
	}
	addrs := []string{"tcp://" + s.listen}
	if s.cfg.C2S.DirectTLSListen != "" {
		if s.directListen, err = s.ports.concrete(s.cfg.C2S.DirectTLSListen); err != nil {
			return err
		}
		addrs = append(addrs, "tcp://"+s.directListen)
	}
	if s.cfg.Web.Listen != "" {
		if s.webListen, err = s.ports.concrete(s.cfg.Web.Listen); err != nil {
			return err
		}
		addrs = append(addrs, "tcp://"+s.webListen)
		s.startTransfers()
	}
	s2s, err := s.s2sListen()
	if err != nil {
		return err
	}
	addrs = append(addrs, s2s...)
	s.ports.release()
	// gnet.Rotate blocks for the engine's life; its event loops are the
	// only goroutines that serve clients.
	go func() {
		err := gnet.Rotate(h, addrs,
			gnet.WithMulticore(true),
			gnet.WithNumEventLoop(loops),
			gnet.WithReuseAddr(true),
			gnet.WithTCPNoDelay(gnet.TCPNoDelay),
			gnet.WithLogger(s.log.Named("gnet").WithOptions(zap.IncreaseLevel(zap.LevelEnablerFunc(func(l zapcore.Level) bool { return l >= zap.InfoLevel && s.log.Core().Enabled(l) }))).Sugar()), // gnet's debug lines (its own default level, loops exiting) say nothing to an operator
		)
		s.runErr = err
		select {
		case s.booted <- fmt.Errorf("server: listen %v: %w", addrs, err):
		default:
		}
		close(s.done)
	}()
	if err := <-s.booted; err != nil {
		ticker.Stop()
		s.pool.Close()
		if s.cluster != nil {
			s.closeShared()
			s.cluster.Close()
		}
		return err
	}
	// One ticker goroutine for the whole server drives every loop's wheel.
	go s.tick(ticker)
	if err := s.startAdmin(); err != nil {
		_ = s.Stop(context.Background())
		return fmt.Errorf("server: admin listener %s: %w", s.cfg.Admin.Listen, err)
	}
	s.log.Info("listening", zap.String("listener", "c2s"), zap.Stringer("addr", s.addr),
		zap.String("domain", s.cfg.Domain), zap.Bool("allow_plaintext", s.cfg.C2S.AllowPlaintext))
	if s.directAddr.IsValid() {
		s.log.Info("listening", zap.String("listener", "c2s direct tls"), zap.Stringer("addr", s.directAddr),
			zap.String("domain", s.cfg.Domain))
	}
	s.logWeb()
	s.logS2SListeners()
	return nil
}

// DirectTLSAddr returns the direct TLS listener's address, or nil when it
// is disabled.
func (s *Server) DirectTLSAddr() net.Addr {
	if !s.directAddr.IsValid() {
		return nil
	}
	return net.TCPAddrFromAddrPort(s.directAddr)
}

// ReloadCertificates reads the certificate and key files again; new
// handshakes use them, established connections are not touched.
func (s *Server) ReloadCertificates() error {
	if err := s.certs.Reload(); err != nil {
		return err
	}
	s.log.Info("certificates reloaded", zap.String("cert", s.certs.certFile))
	return nil
}

// listener tells the listeners apart.
type listener uint8

const (
	listenerC2S       listener = iota // c2s.listen
	listenerDirectTLS                 // c2s.direct_tls_listen
	listenerWeb                       // web.listen (ws.go)
)

// listenerOf reports which listener accepted gc. gnet reports the
// listener's configured address as the local address, which is ambiguous
// with port 0, so ask the socket (once, and only when there is more than
// one listener).
func (s *Server) listenerOf(gc gnet.Conn) listener {
	if !s.directAddr.IsValid() && !s.webAddr.IsValid() {
		return listenerC2S
	}
	sa, err := unix.Getsockname(gc.Fd())
	if err != nil {
		return listenerC2S
	}
	var port int
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		port = a.Port
	case *unix.SockaddrInet6:
		port = a.Port
	}
	switch {
	case port == int(s.addr.(*net.TCPAddr).Port):
		return listenerC2S
	case s.directAddr.IsValid() && port == int(s.directAddr.Port()):
		return listenerDirectTLS
	case s.webAddr.IsValid() && port == int(s.webAddr.Port()):
		return listenerWeb
	}
	return listenerC2S
}

// Addr returns the c2s listener's address once Start has returned.
func (s *Server) Addr() net.Addr { return s.addr }

// Stop closes the listener and every connection and waits for the event
// loops and workers to finish, or for ctx.
func (s *Server) Stop(ctx context.Context) error {
	if !s.started.Load() {
		return ErrNotStarted
	}
	if !s.stopped.CompareAndSwap(false, true) {
		return nil
	}
	s.stopping.Store(true)
	// Connects in flight end now: a peer that does not answer does not
	// hold Stop for s2s.connect_timeout.
	s.stopDials()
	if s.admin != nil {
		_ = s.admin.Shutdown(ctx)
	}
	close(s.tickStop)
	err := s.eng.Stop(ctx)
	select {
	case <-s.done:
	case <-ctx.Done():
		return ctx.Err()
	}
	if s.cluster != nil {
		// After the sessions, before the workers: their directory
		// entries are deleted, then what other nodes sent meanwhile is
		// taken (offline storage runs on the workers).
		s.closeShared()
		s.cluster.Close()
	}
	// Modules finish what they batch (last activity), then jobs already
	// queued (offline messages being stored, say) finish.
	for _, m := range s.hooks.Modules() {
		if st, ok := m.(hook.Stopper); ok {
			st.Stop(ctx)
		}
	}
	s.pool.Close()
	if s.web.xfer != nil {
		s.web.xfer.Close()
	}
	return err
}

// Shutdown stops gracefully: new connections are refused, every session
// gets the system-shutdown stream error after what was queued for it is
// written, and storage work in flight finishes; then Stop. Sessions still
// open when ctx ends are closed by Stop.
func (s *Server) Shutdown(ctx context.Context) error {
	if !s.started.Load() {
		return ErrNotStarted
	}
	s.stopping.Store(true)
	s.log.Info("shutting down", zap.Int("sessions", s.sessions.count()), zap.Int("preauth", s.preauth.count()))
	// Modules speak to the sessions while they are open: what they
	// deliver is queued before the stream error closeWith queues.
	for _, m := range s.hooks.Modules() {
		if d, ok := m.(hook.Drainer); ok {
			d.Drain(ctx)
		}
	}
	s.sessions.all(func(sess *session) { sess.closeWith(stream.SystemShutdown.Err) })
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for s.sessions.count() > 0 {
		select {
		case <-ctx.Done():
			s.log.Warn("shutdown timeout: closing the remaining sessions", zap.Int("sessions", s.sessions.count()))
			return s.Stop(context.Background())
		case <-t.C:
		}
	}
	return s.Stop(ctx)
}

// Stats returns a snapshot of the server's counters.
func (s *Server) Stats() StatsSnapshot {
	snap := s.stats.snapshot()
	snap.Preauth = s.preauth.count()
	snap.Sessions = s.sessions.count()
	snap.TLSActive, snap.TLSWaiting = s.handshakes.inFlight()
	snap.Modules = make(map[string]uint64)
	s.moduleCounters(func(mod, event string, n uint64) { snap.Modules[mod+"."+event] = n })
	return snap
}

// tick advances every loop's timer wheel once per configured tick, on the
// loop itself. A loop that has not run its previous tick is skipped, so a
// busy loop never accumulates tick tasks.
func (s *Server) tick(t *time.Ticker) {
	defer t.Stop()
	for {
		select {
		case <-s.tickStop:
			return
		case <-t.C:
		}
		lp := s.loopsV.Load()
		if lp == nil {
			continue
		}
		for _, l := range *lp {
			if l.tickPending.CompareAndSwap(false, true) {
				l.tickPosted.Store(time.Now().UnixNano())
				if err := l.el.Execute(context.Background(), l.tickTask); err != nil {
					l.tickPending.Store(false)
				}
			}
		}
	}
}

// loopFor returns the state of an event loop, creating it on first use.
// Called on that loop.
func (s *Server) loopFor(el gnet.EventLoop) *loop {
	s.loopsMu.Lock()
	defer s.loopsMu.Unlock()
	if l, ok := s.loops[el]; ok {
		return l
	}
	l := newLoop(s, el)
	s.loops[el] = l
	view := make([]*loop, 0, len(s.loops))
	for _, v := range s.loops {
		view = append(view, v)
	}
	s.loopsV.Store(&view)
	return l
}

// loop is the per-event-loop state: its timer wheel, a scratch buffer and
// the hook context its handlers get. Only its own event loop touches it,
// except tickPending.
type loop struct {
	srv         *Server
	ctx         hook.Ctx    // reused for every event on the loop
	stanza      hook.Stanza // the stanza being dispatched
	el          gnet.EventLoop
	wheel       *timerwheel.Wheel[*conn]
	swheel      *timerwheel.Wheel[*sessTimer] // deadlines of sessions (hook.Timers), usually empty
	now         time.Time                     // wheel time, refreshed every tick
	scratch     []byte
	plainBuf    []byte // decrypted records, allocated on first TLS read
	wsOut       []byte // WebSocket frames being assembled (ws.go), allocated on first use
	hot         leanHot
	tickPending atomic.Bool
	tickPosted  atomic.Int64 // when the pending tick was posted, Unix ns
	tickTask    gnet.RunnableFunc

	// corked is the connection whose writes are being gathered into
	// cork, to go out as one write (conn.cork); nil when none.
	corked *conn
	cork   []byte

	// Federation state of the loop's s2s streams (s2s.go); nil until one
	// exists. s2sPeerCerts holds an inbound stream's certificates from
	// its TLS handshake until its restarted header names the domain.
	s2s          map[*conn]*s2sStream
	s2sPeerCerts map[*conn][]*x509.Certificate
	// links counts the outbound links enrolled into (or dialling for)
	// this loop, which linkLoop balances.
	links atomic.Int32
}

func newLoop(s *Server, el gnet.EventLoop) *loop {
	now := time.Now()
	l := &loop{srv: s, el: el, now: now}
	l.ctx = hook.Ctx{Host: s.host, Registry: s.hooks, Log: s.log}
	l.wheel = timerwheel.New(s.cfg.Server.Tick, s.epoch, s.onDeadline)
	l.wheel.Advance(now)
	l.swheel = timerwheel.New(s.cfg.Server.Tick, s.epoch, s.onSessionTimer)
	l.swheel.Advance(now)
	l.tickTask = func(context.Context) error {
		l.tickPending.Store(false)
		l.now = time.Now()
		s.metrics.loopLag.Observe(float64(l.now.UnixNano()-l.tickPosted.Load()) / 1e9)
		l.wheel.Advance(l.now)
		l.swheel.Advance(l.now)
		if n := l.hot.sweep(l.now.UnixNano(), s.conf().TLS.IdleRelease); n > 0 {
			s.stats.tlsCooled.Add(uint64(n))
		}
		return nil
	}
	return l
}

// since returns the loop's time as an offset from the server's epoch.
func (l *loop) since() time.Duration { return l.now.Sub(l.srv.epoch) }

// handler adapts the Server to gnet's callbacks.
type handler struct {
	gnet.BuiltinEventEngine
	srv *Server
}

func (h *handler) OnBoot(eng gnet.Engine) gnet.Action {
	s := h.srv
	s.eng = eng
	s.addr = net.TCPAddrFromAddrPort(boundAddr(eng, s.listen))
	if s.directListen != "" {
		s.directAddr = boundAddr(eng, s.directListen)
	}
	if s.webListen != "" {
		s.webAddr = boundAddr(eng, s.webListen)
	}
	s.booted <- nil
	return gnet.None
}

// portPicker resolves port 0 in listen addresses to free ports (gnet
// tells listeners apart by their configured address). It holds each port
// it picked open until release, so that two listeners of one server
// never get the same port, as they could if each were closed at once.
type portPicker struct{ held []net.Listener }

// concrete returns addr, with port 0 replaced by a port free now and held
// until release.
func (p *portPicker) concrete(addr string) (string, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil || port != "0" {
		return addr, err
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return "", fmt.Errorf("server: finding a free port on %s: %w", host, err)
	}
	p.held = append(p.held, l)
	return l.Addr().String(), nil
}

// release closes the held ports, for the listeners to bind them.
func (p *portPicker) release() {
	for _, l := range p.held {
		_ = l.Close()
	}
	p.held = nil
}

// boundAddr returns the address a listener is bound to (the real port
// when configured with port 0).
func boundAddr(eng gnet.Engine, addr string) netip.AddrPort {
	fd, err := eng.DupListener("tcp", addr)
	if err != nil {
		return netip.AddrPort{}
	}
	defer unix.Close(fd)
	sa, err := unix.Getsockname(fd)
	if err != nil {
		return netip.AddrPort{}
	}
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4(a.Addr), uint16(a.Port))
	case *unix.SockaddrInet6:
		return netip.AddrPortFrom(netip.AddrFrom16(a.Addr).Unmap(), uint16(a.Port))
	}
	return netip.AddrPort{}
}

func (h *handler) OnOpen(gc gnet.Conn) ([]byte, gnet.Action) { return h.srv.open(gc) }

func (h *handler) OnTraffic(gc gnet.Conn) gnet.Action { return h.srv.traffic(gc) }

func (h *handler) OnClose(gc gnet.Conn, err error) gnet.Action {
	h.srv.closed(gc, err)
	return gnet.None
}

// TuneRuntime applies the process-wide runtime settings of cfg (the GC
// target). krill serve and the bench call it, so that what the bench
// measures is what an operator runs.
func TuneRuntime(cfg config.Config) {
	debug.SetGCPercent(cfg.Server.GCPercent)
}

// moduleCounters calls fn with each counter of the modules that keep any.
func (s *Server) moduleCounters(fn func(module, event string, n uint64)) {
	for _, m := range s.hooks.Modules() {
		if c, ok := m.(hook.Counter); ok {
			name := m.Name()
			c.Counters(func(event string, n uint64) { fn(name, event, n) })
		}
	}
}
