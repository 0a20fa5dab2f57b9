package server

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"
)

// The admin listener: Prometheus metrics, liveness and readiness, on plain
// net/http (a goroutine per admin request is fine: operators, not
// clients). Metrics read the server's atomic counters at scrape time, so
// the hot paths pay nothing for them beyond the counters themselves.

// Pinger is an optional Store ability used by /readyz.
type Pinger interface {
	Ping(ctx context.Context) error
}

// startAdmin opens the admin listener when configured.
func (s *Server) startAdmin() error {
	if s.cfg.Admin.Listen == "" {
		return nil
	}
	l, err := net.Listen("tcp", s.cfg.Admin.Listen)
	if err != nil {
		return err
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		s.metrics.poolWait, s.metrics.loopLag,
		(*statsCollector)(s),
	)
	reg.MustRegister(s.metrics.extra...)
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, r *http.Request) {
		if err := s.ready(r.Context()); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ready\n"))
	})
	mux.HandleFunc("/cluster/drain", s.serveDrain)
	if s.cfg.Admin.Pprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	s.admin = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	s.adminAddr = l.Addr()
	// One goroutine for the admin listener (net/http serves each admin
	// request on its own): operators, never clients.
	go func() {
		if err := s.admin.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("admin listener failed", zap.Error(err))
		}
	}()
	s.log.Info("listening", zap.String("listener", "admin"), zap.Stringer("addr", l.Addr()))
	return nil
}

// AdminAddr returns the admin listener's address, or nil when disabled.
func (s *Server) AdminAddr() net.Addr { return s.adminAddr }

// ready reports why the server cannot take clients, or nil.
func (s *Server) ready(ctx context.Context) error {
	if s.stopping.Load() {
		return errors.New("shutting down")
	}
	if s.drain.on.Load() {
		return errors.New("draining")
	}
	if s.addr == nil {
		return errors.New("listeners not up")
	}
	if p, ok := s.accounts.(Pinger); ok {
		ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		if err := p.Ping(ctx); err != nil {
			return errors.New("storage unreachable: " + err.Error())
		}
	}
	return nil
}

// AddMetrics adds collectors to the admin listener's /metrics, for what the
// process measures outside the server (krill serve: the log lines left out
// by sampling). Call it before Start.
func (s *Server) AddMetrics(cs ...prometheus.Collector) {
	s.metrics.extra = append(s.metrics.extra, cs...)
}

// serverMetrics are the metrics observed on hot paths; the rest are read
// from Stats at scrape time.
type serverMetrics struct {
	poolWait prometheus.Histogram
	loopLag  prometheus.Histogram
	extra    []prometheus.Collector // from AddMetrics
}

func newServerMetrics() serverMetrics {
	return serverMetrics{
		poolWait: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "krill_worker_wait_seconds",
			Help:    "Time blocking work waited in the worker pool's queue before a worker took it.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 4, 9),
		}),
		loopLag: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "krill_event_loop_lag_seconds",
			Help:    "Delay between a timer tick being posted to an event loop and the loop running it.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 4, 9),
		}),
	}
}

// statsCollector exposes Stats as Prometheus metrics.
type statsCollector Server

var (
	descConns     = prometheus.NewDesc("krill_connections", "Open connections by kind (c2s, s2s) and state.", []string{"kind", "state"}, nil)
	descAccepted  = prometheus.NewDesc("krill_connections_accepted_total", "Connections accepted, by kind (c2s, s2s).", []string{"kind"}, nil)
	descClosed    = prometheus.NewDesc("krill_connections_closed_total", "Connections closed, by kind (c2s, s2s) and reason.", []string{"kind", "reason"}, nil)
	descAuth      = prometheus.NewDesc("krill_logins_total", "SASL authentications by result.", []string{"result"}, nil)
	descHandshake = prometheus.NewDesc("krill_tls_handshakes", "TLS handshakes now, running or waiting for a slot.", []string{"state"}, nil)
	descTLS       = prometheus.NewDesc("krill_tls_handshakes_total", "TLS handshakes started, failed and timed out.", []string{"result"}, nil)
	descTLSFail   = prometheus.NewDesc("krill_tls_handshake_failures_total", "TLS handshakes that failed, by cause (client_alert, client_closed, timeout, not_tls, other, queue_full).", []string{"cause"}, nil)
	descTLSResume = prometheus.NewDesc("krill_tls_resumed_total", "Finished TLS handshakes that resumed a session with a ticket (tls.session_tickets): no certificate or signature, a fresh key exchange.", nil, nil)
	descTLSLayer  = prometheus.NewDesc("krill_tls_record_layer_total", "Finished TLS handshakes by the record layer that carries the session: lean (tls.lean, TLS 1.3) or stock (crypto/tls: tls.lean off, TLS 1.2, FIPS mode).", []string{"layer"}, nil)
	descTLSRecErr = prometheus.NewDesc("krill_tls_record_errors_total", "Connections the lean TLS record layer closed for a bad record or a fatal alert from the client.", nil, nil)
	descTLSKeyUpd = prometheus.NewDesc("krill_tls_key_updates_total", "KeyUpdates lean TLS sessions sent on their own after tls.key_update_records records.", nil, nil)
	descTLSAEAD   = prometheus.NewDesc("krill_tls_lean_aead_total", "Lean TLS sessions whose AEADs were dropped after tls.idle_release (cooled), and directions expanded again by a later record (rewarmed).", []string{"event"}, nil)
	descQueue     = prometheus.NewDesc("krill_worker_queue_depth", "Jobs waiting for a worker.", nil, nil)
	descRejected  = prometheus.NewDesc("krill_worker_rejected_total", "Jobs refused because the worker queue was full.", nil, nil)
	descStanzas   = prometheus.NewDesc("krill_stanzas_total", "Stanzas received from and delivered to sessions, by direction and kind.", []string{"direction", "kind"}, nil)
	descModule    = prometheus.NewDesc("krill_module_events_total", "What modules counted (offline messages stored and delivered, accounts registered, ...).", []string{"module", "event"}, nil)
	descLate      = prometheus.NewDesc("krill_preauth_deadline_lateness_max_seconds", "Most a pre-auth deadline fired after it was due.", nil, nil)
	descDropped   = prometheus.NewDesc("krill_stanzas_dropped_total", "Stanzas a session could not take: its mailbox was full (the session is closed, the stanza routed as if it were gone) or it has no connection and no module took them.", []string{"reason"}, nil)
	descPanics    = prometheus.NewDesc("krill_panics_total", "Panics contained to the connection that raised them; each is a bug.", nil, nil)
	descAuthProf  = prometheus.NewDesc("krill_logins_by_profile_total", "Successful logins by SASL profile: sasl (RFC 6120), sasl2 (XEP-0388, with a password) or fast (SASL2 with a XEP-0484 token).", []string{"profile"}, nil)
	descAuthFail  = prometheus.NewDesc("krill_auth_failures_total", "Failed SASL exchanges: kind=credential after a password or proof was compared, kind=exchange before any credential was checked.", []string{"kind"}, nil)
	descBytesConn = prometheus.NewDesc("krill_process_resident_bytes_per_connection", "Process resident memory divided by open connections (0 without connections).", nil, nil)
)

// Describe implements prometheus.Collector.
func (c *statsCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descConns, descAccepted, descClosed, descAuth, descHandshake, descTLS, descTLSFail,
		descTLSLayer, descTLSResume, descTLSRecErr, descTLSAEAD, descTLSKeyUpd, descQueue, descRejected, descStanzas, descModule, descLate, descPanics, descBytesConn, descAuthFail, descAuthProf, descDropped, descWebConns, descWebReqs, descWSCloses} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *statsCollector) Collect(ch chan<- prometheus.Metric) {
	s := (*Server)(c)
	st := s.Stats()
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge(descConns, float64(st.PreauthPlain), "c2s", "preauth_plain")
	gauge(descConns, float64(st.PreauthTLS), "c2s", "preauth_tls")
	gauge(descConns, float64(st.PreauthWeb), "c2s", "preauth_web")
	s.collectWeb(st, gauge, counter)
	gauge(descConns, float64(st.Authenticated), "c2s", "authenticated")
	counter(descAccepted, st.Accepted, "c2s")
	for r := reasonNone + 1; r < numCloseReasons; r++ {
		counter(descClosed, s.stats.closedBy[r].Load(), "c2s", closeReasonNames[r])
	}
	f := s.fed
	gauge(descConns, float64(f.preauthN.Load()), "s2s", "preauth")
	gauge(descConns, float64(f.authedN.Load()), "s2s", "authenticated")
	gauge(descConns, float64(f.outbound.Load()), "s2s", "outbound")
	dialling, _ := f.dialer.stats()
	gauge(descConns, float64(dialling), "s2s", "dialling")
	counter(descAccepted, f.accepted.Load(), "s2s")
	for r := reasonNone + 1; r < numCloseReasons; r++ {
		counter(descClosed, f.closedBy[r].Load(), "s2s", closeReasonNames[r])
	}
	counter(descAuth, st.AuthSucceeded, "success")
	counter(descAuth, st.AuthFailed, "failure")
	counter(descAuth, st.AuthThrottled, "throttled")
	counter(descAuthProf, st.AuthSucceeded-st.AuthSASL2, "sasl")
	counter(descAuthProf, st.AuthSASL2-st.AuthFAST, "sasl2")
	counter(descAuthProf, st.AuthFAST, "fast")
	counter(descAuthFail, st.AuthFailedCredential, "credential")
	counter(descAuthFail, st.AuthFailedExchange, "exchange")
	gauge(descHandshake, float64(st.TLSActive), "running")
	gauge(descHandshake, float64(st.TLSWaiting), "waiting")
	counter(descTLS, st.TLSHandshakes, "started")
	counter(descTLS, st.TLSFailed, "failed")
	counter(descTLS, st.TLSTimeouts, "timeout")
	for cause := range numTLSCauses {
		counter(descTLSFail, s.stats.tlsFailed[cause].Load(), tlsCauseNames[cause])
	}
	counter(descTLSLayer, s.stats.tlsLean.Load(), "lean")
	counter(descTLSLayer, s.stats.tlsStock.Load(), "stock")
	counter(descTLSResume, s.stats.tlsResumed.Load())
	counter(descTLSRecErr, s.stats.tlsRecordErrors.Load())
	counter(descTLSAEAD, s.stats.tlsCooled.Load(), "cooled")
	counter(descTLSAEAD, s.stats.tlsRewarmed.Load(), "rewarmed")
	counter(descTLSKeyUpd, s.stats.tlsKeyUpdates.Load())
	if s.pool != nil {
		gauge(descQueue, float64(s.pool.Queued()))
	}
	counter(descRejected, st.WorkRejected)
	for i, kind := range stanzaKinds {
		counter(descStanzas, s.stats.in[i].Load(), "in", kind)
		counter(descStanzas, s.stats.out[i].Load(), "out", kind)
	}
	s.moduleCounters(func(mod, event string, n uint64) { counter(descModule, n, mod, event) })
	gauge(descLate, st.DeadlineLateMax.Seconds())
	counter(descPanics, st.Panics)
	counter(descDropped, st.InboxOverflow, "inbox_full")
	counter(descDropped, st.DroppedNoConn, "no_connection")
	open := st.Accepted - st.Closed
	if rss := residentBytes(); rss > 0 && open > 0 {
		gauge(descBytesConn, float64(rss)/float64(open))
	} else {
		gauge(descBytesConn, 0)
	}
}

// residentBytes reads the process's resident set size from /proc.
func residentBytes() uint64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) < 2 {
		return 0
	}
	pages, err := strconv.ParseUint(f[1], 10, 64)
	if err != nil {
		return 0
	}
	return pages * uint64(os.Getpagesize())
}
