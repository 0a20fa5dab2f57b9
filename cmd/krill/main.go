// Command krill runs the Krill XMPP server and manages its accounts.
//
//	krill serve [--config FILE] [--KEY=VALUE ...]
//	krill user add JID [--password P]      (password from stdin when omitted)
//	krill user add                         (bulk: "jid password" lines on stdin)
//	krill user passwd JID [--password P]
//	krill user remove JID
//	krill user list
//	krill config check [--config FILE]
//	krill health [--addr HOST:PORT]
//	krill reload [--config FILE]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/mattn/go-isatty"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/krill-xmpp/krill/config"
	"github.com/krill-xmpp/krill/fast"
	"github.com/krill-xmpp/krill/modules"
	"github.com/krill-xmpp/krill/server"
	"github.com/krill-xmpp/krill/storage"
)

const usage = `usage:
  krill serve [--config FILE] [--KEY=VALUE ...]
  krill user add JID [--password P] [--config FILE]
  krill user add [--config FILE]          (bulk: "jid password" per line on stdin)
  krill user passwd JID [--password P] [--config FILE]
  krill user remove JID [--config FILE]
  krill user list [--config FILE]
  krill config check [--config FILE]
  krill health [--addr HOST:PORT] [--config FILE]   (exit 0 when /healthz answers)
  krill reload [--config FILE]            (SIGHUP to the running server: configuration and certificates)
  krill cluster status [--config FILE]    (the cluster's live nodes and their sessions, heard on NATS)
  krill cluster drain [--config FILE]     (this node lets its clients resume on the others, then exits)
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

// run is main without the process: it returns the exit status.
func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	var err error
	switch args[0] {
	case "serve":
		err = serve(args[1:], stderr)
	case "user":
		err = userCmd(args[1:], stdin, stdout, stderr)
	case "config":
		if len(args) < 2 || args[1] != "check" {
			fmt.Fprint(stderr, usage)
			return 2
		}
		var cfg config.Config
		if cfg, err = loadConfig("config check", args[2:], stderr); err == nil {
			fmt.Fprintf(stdout, "configuration OK (domain %s)\n", cfg.Domain)
		}
	case "health":
		err = health(args[1:], stdout, stderr)
	case "reload":
		err = reloadCmd(args[1:], stdout, stderr)
	case "cluster":
		err = clusterCmd(args[1:], stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprint(stderr, usage)
		return 2
	}
	if err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(stderr, "krill:", err)
		}
		return 1
	}
	return 0
}

// loadConfig parses --config and per-key flags from args and loads the
// configuration. Positional arguments are not allowed.
func loadConfig(name string, args []string, stderr io.Writer) (config.Config, error) {
	cfg, _, err := configLoader(name, args, stderr)
	return cfg, err
}

// configLoader is loadConfig that also returns a function loading the same
// sources (file, environment, flags) again, for reloads.
func configLoader(name string, args []string, stderr io.Writer) (config.Config, func() (config.Config, error), error) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "", "TOML configuration file (default: embedded defaults)")
	config.RegisterFlags(fs)
	if err := fs.Parse(args); err != nil {
		return config.Config{}, nil, err
	}
	if fs.NArg() > 0 {
		return config.Config{}, nil, fmt.Errorf("%s: unexpected argument %q", name, fs.Arg(0))
	}
	load := func() (config.Config, error) { return config.Load(*path, environ(), fs) }
	cfg, err := load()
	return cfg, load, err
}

// serverLog is krill serve's logger with what serve needs besides it.
type serverLog struct {
	*zap.Logger
	level   zap.AtomicLevel
	dropped *atomic.Uint64               // lines left out by sampling
	buf     *zapcore.BufferedWriteSyncer // nil when log.buffer is 0
}

// logSampleInitial and logSampleThereafter: per message and level, the
// first logSampleInitial lines of each second are written, then one in
// logSampleThereafter.
const (
	logSampleInitial    = 100
	logSampleThereafter = 100
)

// newLogger builds the server's logger on w (stderr). colour asks for ANSI
// colours on the console format's levels: only for a terminal, so that a log
// redirected to a file or a journal has no escape sequences in it.
//
// The event loops log, so a write must not cost a system call per line
// when an attack repeats one event per connection: lines are sampled
// (log.sampling) and buffered (log.buffer, flushed every
// log.flush_interval). close flushes the buffer; call it before exit.
func newLogger(cfg config.Log, colour bool, w zapcore.WriteSyncer) (*serverLog, error) {
	zc, err := loggerConfig(cfg, colour)
	if err != nil {
		return nil, err
	}
	l := &serverLog{level: zc.Level, dropped: new(atomic.Uint64)}
	ws := zapcore.Lock(w)
	if cfg.Buffer > 0 {
		l.buf = &zapcore.BufferedWriteSyncer{WS: ws, Size: cfg.Buffer, FlushInterval: cfg.FlushInterval}
		ws = l.buf
	}
	var enc zapcore.Encoder
	if zc.Encoding == "json" {
		enc = zapcore.NewJSONEncoder(zc.EncoderConfig)
	} else {
		enc = zapcore.NewConsoleEncoder(zc.EncoderConfig)
	}
	core := zapcore.NewCore(enc, ws, zc.Level)
	if cfg.Sampling {
		dropped := l.dropped
		core = zapcore.NewSamplerWithOptions(core, time.Second, logSampleInitial, logSampleThereafter,
			zapcore.SamplerHook(func(_ zapcore.Entry, d zapcore.SamplingDecision) {
				if d&zapcore.LogDropped != 0 {
					dropped.Add(1)
				}
			}))
	}
	// What zap.Config.Build would add; zap's own errors go straight to w.
	opts := []zap.Option{zap.AddCaller(), zap.ErrorOutput(zapcore.Lock(w))}
	if zc.Development {
		opts = append(opts, zap.Development())
	}
	if !zc.DisableStacktrace {
		opts = append(opts, zap.AddStacktrace(zapcore.ErrorLevel))
	}
	l.Logger = zap.New(core, opts...)
	return l, nil
}

// flush writes the buffered lines now: after start-up and after a reload,
// so that an operator sees them without waiting for the interval.
func (l *serverLog) flush() { _ = l.Sync() }

// close flushes the buffered lines and stops the flushing goroutine.
func (l *serverLog) close() {
	_ = l.Sync()
	if l.buf != nil {
		_ = l.buf.Stop()
	}
}

// droppedMetric is krill_log_dropped_total, read at scrape time.
func (l *serverLog) droppedMetric() prometheus.Collector {
	return prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "krill_log_dropped_total",
		Help: "Log lines left out by sampling (log.sampling): per message and level, beyond the first 100 a second, 99 in 100.",
	}, func() float64 { return float64(l.dropped.Load()) })
}

// loggerConfig is newLogger's configuration, separate so that tests can
// check the encoder without writing to stderr.
func loggerConfig(cfg config.Log, colour bool) (zap.Config, error) {
	var zc zap.Config
	if cfg.Format == "json" {
		zc = zap.NewProductionConfig()
	} else {
		zc = zap.NewDevelopmentConfig()
		zc.DisableStacktrace = true
		zc.EncoderConfig.EncodeLevel = zapcore.CapitalLevelEncoder
		if colour {
			zc.EncoderConfig.EncodeLevel = zapcore.CapitalColorLevelEncoder
		}
	}
	lvl, err := zapcore.ParseLevel(cfg.Level)
	if err != nil {
		return zap.Config{}, fmt.Errorf("log.level: %w", err)
	}
	zc.Level = zap.NewAtomicLevelAt(lvl)
	return zc, nil
}

func openStore(cfg config.Config) (*storage.SQL, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return storage.Open(ctx, cfg.Storage.Driver, cfg.Storage.DSN, cfg.DataDir)
}

func serve(args []string, stderr io.Writer) error {
	cfg, reload, err := configLoader("serve", args, stderr)
	if err != nil {
		return err
	}
	log, err := newLogger(cfg.Log, isatty.IsTerminal(os.Stderr.Fd()), os.Stderr)
	if err != nil {
		return err
	}
	// Before run prints a start-up error: the lines logged before it come
	// first, and none is lost.
	defer log.close()
	store, err := openStore(cfg)
	if err != nil {
		return err
	}
	defer store.Close()
	// XEP-0484: the tokens' secret lives outside the database (created
	// on first start); without fast.enabled it is not even read.
	var tokens *fast.Tokens
	if cfg.FAST.Enabled {
		secret, err := fast.LoadSecret(cfg.FASTSecretFile())
		if err != nil {
			return err
		}
		opts := fast.Options{TTL: cfg.FAST.TokenTTL, MaxTokens: cfg.FAST.MaxTokens}
		if cfg.Cluster.NATSURL != "" {
			// The nodes share the database, not their memory: replay
			// counts are checked and written there at each login.
			opts.CountFlush = -1
		}
		if tokens, err = fast.New(store, secret, opts); err != nil {
			return err
		}
	}
	// The feature modules are chosen in one place, modules.Standard.
	r, err := modules.Registry(store, modules.Options{Config: cfg, Started: time.Now(), FAST: tokens})
	if err != nil {
		return err
	}
	srv, err := server.New(cfg, log.Logger, store, r)
	if err != nil {
		return err
	}
	srv.AddMetrics(log.droppedMetric())
	server.TuneRuntime(cfg)
	abs, _ := filepath.Abs(cfg.DataDir)
	log.Info("starting krill", zap.String("domain", cfg.Domain), zap.String("data_dir", abs),
		zap.String("storage", cfg.Storage.Driver))
	// Signals are caught before the listeners open: a SIGHUP that arrives
	// during start-up must reload, not kill.
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	// The pid file exists before the listeners say they are up, so that
	// whoever waits for "listening" can reload at once; a SIGHUP that
	// arrives meanwhile is taken after Start.
	pidFile := filepath.Join(cfg.DataDir, pidFileName)
	if err := os.WriteFile(pidFile, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
		log.Warn("no pid file: krill reload will not find this process", zap.Error(err))
	}
	defer os.Remove(pidFile)
	if err := srv.Start(); err != nil {
		return err
	}
	log.flush()
	var s os.Signal
	select {
	case s = <-sig:
	case <-srv.Drained():
		// krill cluster drain: the server has stopped.
		log.Info("drained: exiting")
		return srv.DrainErr()
	}
	for s == syscall.SIGHUP {
		// SIGHUP: configuration and certificates again; what cannot
		// change live is logged as needing a restart.
		next, err := reload()
		if err != nil {
			log.Error("reload: configuration refused; keeping the current one", zap.Error(err))
			if err := srv.ReloadCertificates(); err != nil {
				log.Error("certificate reload failed; keeping the current certificate", zap.Error(err))
			}
			log.flush()
			continue
		}
		if _, _, err := srv.Reload(next); err != nil {
			log.Error("reload failed", zap.Error(err))
		}
		if l, err := zapcore.ParseLevel(next.Log.Level); err == nil {
			log.level.SetLevel(l)
		}
		log.flush()
		select {
		case s = <-sig:
		case <-srv.Drained():
			log.Info("drained: exiting")
			return srv.DrainErr()
		}
	}
	log.Info("stopping", zap.Stringer("signal", s))
	ctx, cancel := context.WithTimeout(context.Background(), cfg.Server.ShutdownTimeout)
	defer cancel()
	return srv.Shutdown(ctx)
}

// pidFileName is written in the data directory while krill serve runs, for
// krill reload.
const pidFileName = "krill.pid"

// reloadCmd signals a running krill serve (found by its pid file in the
// data directory) to reload its configuration and certificates.
func reloadCmd(args []string, stdout, stderr io.Writer) error {
	cfg, err := loadConfig("reload", args, stderr)
	if err != nil {
		return err
	}
	b, err := os.ReadFile(filepath.Join(cfg.DataDir, pidFileName))
	if err != nil {
		return fmt.Errorf("reload: is krill serve running with data_dir %s? %w", cfg.DataDir, err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return fmt.Errorf("reload: bad pid file %s", filepath.Join(cfg.DataDir, pidFileName))
	}
	if err := syscall.Kill(pid, syscall.SIGHUP); err != nil {
		return fmt.Errorf("reload: signalling pid %d: %w", pid, err)
	}
	fmt.Fprintf(stdout, "asked krill (pid %d) to reload\n", pid)
	return nil
}

// environ is os.Environ, a seam for tests.
var environ = os.Environ

// health asks a running server's admin listener for /healthz: the
// container image's health check.
func health(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("health", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("addr", "", "admin listener (default: admin.listen from the configuration)")
	path := fs.String("config", "", "TOML configuration file")
	config.RegisterFlags(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *addr == "" {
		cfg, err := config.Load(*path, environ(), fs)
		if err != nil {
			return err
		}
		*addr = cfg.Admin.Listen
	}
	if *addr == "" {
		return errors.New("health: no admin listener configured")
	}
	client := http.Client{Timeout: 5 * time.Second}
	resp, err := client.Get("http://" + *addr + "/healthz")
	if err != nil {
		return fmt.Errorf("health: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("health: %s answered %s", *addr, resp.Status)
	}
	fmt.Fprintln(stdout, "ok")
	return nil
}
