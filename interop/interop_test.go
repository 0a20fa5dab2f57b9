package interop

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/xml"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	msasl "mellium.im/sasl"
	"mellium.im/xmlstream"
	"mellium.im/xmpp"
	"mellium.im/xmpp/jid"
	"mellium.im/xmpp/stanza"
)

const (
	domain   = "localhost"
	password = "interop secret"
	// clientTimeout bounds each client run; a client that hangs fails its
	// case instead of the whole suite.
	clientTimeout = 60 * time.Second
	// waitTimeout bounds each wait for a log line or a received message.
	waitTimeout = 30 * time.Second
)

// gate skips unless the suite was asked for (make interop).
func gate(t *testing.T) {
	t.Helper()
	if os.Getenv("KRILL_INTEROP") != "1" {
		t.Skip("the interop suite runs with KRILL_INTEROP=1 (make interop)")
	}
}

// need fails under CI=true and skips elsewhere when a client is missing:
// CI installs every client (.ci/run), so a missing one there is a broken
// set-up, not a reason to pass.
func need(t *testing.T, ok bool, format string, args ...any) {
	t.Helper()
	if ok {
		return
	}
	msg := fmt.Sprintf(format, args...)
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s (CI=true: every client must be installed; see .ci/run)", msg)
	}
	t.Skipf("%s; skipped (install it as .ci/run does)", msg)
}

// lookPath finds a client program, failing or skipping through need.
func lookPath(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	need(t, err == nil, "%s is not installed", name)
	return p
}

// debVersion is the version of a Debian package, for the log.
func debVersion(pkg string) string {
	out, err := exec.Command("dpkg-query", "-W", "-f", "${Version}", pkg).Output()
	if err != nil {
		return "not a Debian package here"
	}
	return string(out)
}

// krillBin is the binary under test: KRILL_BIN (make interop), else one
// built now.
func krillBin(t *testing.T) string {
	t.Helper()
	if b := os.Getenv("KRILL_BIN"); b != "" {
		return b
	}
	bin := filepath.Join(t.TempDir(), "krill")
	cmd := exec.Command("go", "build", "-o", bin, "../cmd/krill")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	return bin
}

func freePort(t *testing.T) string {
	t.Helper()
	portsMu.Lock()
	defer portsMu.Unlock()
	// The kernel may hand a port just closed out again: never return one
	// this process has returned before (a server given the same port for
	// two listeners refuses to start).
	for range 100 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := l.Addr().String()
		_ = l.Close()
		if !portsGiven[addr] {
			portsGiven[addr] = true
			return addr
		}
	}
	t.Fatal("no unused loopback port in 100 tries")
	return ""
}

// portsGiven are the addresses freePort returned.
var (
	portsMu    sync.Mutex
	portsGiven = map[string]bool{}
)

// server is a krill serve process with JSON logs at debug level.
type server struct {
	bin, dataDir string
	c2s, direct  string
	web          string // the web listener (wss://), or empty
	cmd          *exec.Cmd
	lines        chan string
	log          []string
}

// startServer adds users (bulk, "jid password" lines) with `krill user
// add`, as the README says, then runs `krill serve` on c2s and direct and
// waits until every listener is up.
func startServer(t *testing.T, bin, c2s, direct string, users []string) *server {
	t.Helper()
	return startServerWeb(t, bin, c2s, direct, "", users)
}

// startServerWeb is startServer with the web listener on web (over TLS:
// wss://), unless web is empty.
func startServerWeb(t *testing.T, bin, c2s, direct, web string, users []string) *server {
	t.Helper()
	s := &server{bin: bin, dataDir: t.TempDir(), c2s: c2s, direct: direct, web: web, lines: make(chan string, 1024)}
	var bulk strings.Builder
	for _, u := range users {
		fmt.Fprintf(&bulk, "%s@%s %s\n", u, domain, password)
	}
	add := exec.Command(bin, "user", "add")
	add.Env = s.env()
	add.Stdin = strings.NewReader(bulk.String())
	if out, err := add.CombinedOutput(); err != nil {
		t.Fatalf("krill user add: %v\n%s", err, out)
	}
	s.cmd = exec.Command(bin, "serve")
	s.cmd.Env = s.env()
	stderr, err := s.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = s.cmd.Process.Kill()
		_ = s.cmd.Wait()
		if t.Failed() {
			t.Logf("server log:\n%s", strings.Join(s.log, "\n"))
		}
	})
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			s.lines <- sc.Text()
		}
		close(s.lines)
	}()
	n := 2
	if direct != "" {
		n++
	}
	if web != "" {
		n++
	}
	s.waitCount(t, `"msg":"listening"`, n)
	return s
}

// env is cleanEnv plus this server's configuration.
func (s *server) env() []string {
	return append(cleanEnv(), "KRILL_DOMAIN="+domain, "KRILL_DATA_DIR="+s.dataDir,
		"KRILL_C2S_LISTEN="+s.c2s, "KRILL_C2S_DIRECT_TLS_LISTEN="+s.direct, "KRILL_WEB_LISTEN="+s.web, "KRILL_WEB_TLS=true", "KRILL_S2S_LISTEN=", "KRILL_ADMIN_LISTEN=127.0.0.1:0",
		"KRILL_LOG_FORMAT=json", "KRILL_LOG_LEVEL=debug")
}

// cleanEnv is the environment without the caller's KRILL_ variables: the
// suite's own KRILL_INTEROP and KRILL_BIN are no configuration keys, which
// krill refuses.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "KRILL_") {
			env = append(env, kv)
		}
	}
	return env
}

// cert is the generated development certificate, which the clients are
// told to trust (SSL_CERT_FILE, NODE_EXTRA_CA_CERTS, slixmpp's ca_certs).
func (s *server) cert() string { return filepath.Join(s.dataDir, "dev-cert.pem") }

// waitCount reads the log until n lines contain all of want.
func (s *server) waitCount(t *testing.T, want string, n int) {
	t.Helper()
	count := func() int {
		c := 0
		for _, l := range s.log {
			if strings.Contains(l, want) {
				c++
			}
		}
		return c
	}
	deadline := time.After(waitTimeout)
	for count() < n {
		select {
		case l, ok := <-s.lines:
			if !ok {
				t.Fatalf("krill exited waiting for %s:\n%s", want, strings.Join(s.log, "\n"))
			}
			s.log = append(s.log, l)
		case <-deadline:
			t.Fatalf("no %s in the server log", want)
		}
	}
}

// runClient runs a client to its end within clientTimeout and returns its
// combined output.
func runClient(t *testing.T, env []string, dir string, name string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), clientTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Dir = dir
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	t.Logf("$ %s %s\n%s", filepath.Base(name), strings.Join(args, " "), out)
	return string(out), err
}

// knownIssue names, on failure, the Krill defect that breaks a case until
// its fix is merged (issue 9), so a red case reads as expected or not.
func knownIssue(t *testing.T, issue string) {
	t.Helper()
	if issue == "" {
		return
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("known to fail until fixed: %s", issue)
		}
	})
}

// TestClients runs every client against one server (xmppc, which can only
// reach DOMAIN:5222, gets its own).
func TestClients(t *testing.T) {
	gate(t)
	bin := krillBin(t)
	users := []string{"gs-starttls-a", "gs-starttls-b", "gs-tls-a", "gs-tls-b", "slix-a", "slix-b",
		"xjs-a", "xjs-b", "xjs-tls-a", "xjs-tls-b", "xjs-sm-a", "xjs-sm-b", "slix-pep-a", "slix-pep-b", "slix-mam-a", "slix-mam-b", "xjs-fast", "xjs-ws-a", "xjs-ws-b",
		"slix-mm-a", "slix-mm-b"}
	srv := startServerWeb(t, bin, freePort(t), freePort(t), freePort(t), users)

	t.Run("go-sendxmpp/starttls", func(t *testing.T) {
		knownIssue(t, "issue 9 defect 1: go-sendxmpp writes a newline after <starttls/>, which Krill takes "+
			"as the first TLS byte (client: \"starttls handshake: EOF\")")
		goSendxmpp(t, srv, "gs-starttls", srv.c2s)
	})
	t.Run("go-sendxmpp/direct-tls", func(t *testing.T) {
		knownIssue(t, "issue 9 defect 2: after SASL go-sendxmpp restarts the stream with \"\\n<?xml version='1.0'?>\", "+
			"which Krill refuses with restricted-xml")
		goSendxmpp(t, srv, "gs-tls", srv.direct, "--tls")
	})
	t.Run("slixmpp/starttls-default-mechanisms", func(t *testing.T) {
		knownIssue(t, "issue 9 defect 7: slixmpp 1.8.3 tries SCRAM-*-PLUS with tls-unique first; three "+
			"malformed-request failures end in policy-violation before it reaches PLAIN")
		py := "/usr/bin/python3" // Debian's python3-slixmpp is for Debian's Python
		_, err := os.Stat(py)
		need(t, err == nil, "%s is not installed", py)
		_, err = exec.Command(py, "-c", "import slixmpp").CombinedOutput()
		need(t, err == nil, "python3-slixmpp is not installed")
		t.Logf("python3-slixmpp %s", debVersion("python3-slixmpp"))
		host, port, _ := net.SplitHostPort(srv.c2s)
		out, err := runClient(t, nil, "", py, "slixmpp_pair.py", host, port, srv.cert(),
			"slix-a@"+domain, "slix-b@"+domain, password, "hello from slixmpp")
		if err != nil || !strings.Contains(out, `receiver got 'hello from slixmpp' from slix-a@`+domain+"/") {
			t.Fatalf("slixmpp: %v", err)
		}
	})
	t.Run("slixmpp/pep-omemo-devicelist", func(t *testing.T) {
		py := "/usr/bin/python3"
		_, err := exec.Command(py, "-c", "import slixmpp").CombinedOutput()
		need(t, err == nil, "python3-slixmpp is not installed")
		host, port, _ := net.SplitHostPort(srv.c2s)
		out, err := runClient(t, nil, "", py, "slixmpp_pep.py", host, port, srv.cert(),
			"slix-pep-a@"+domain, "slix-pep-b@"+domain, password, "31415")
		if err != nil || !strings.Contains(out, "contact fetched [['31415']]") {
			t.Fatalf("slixmpp pep: %v", err)
		}
	})
	t.Run("slixmpp/mam-paging", func(t *testing.T) {
		py := "/usr/bin/python3"
		_, err := exec.Command(py, "-c", "import slixmpp").CombinedOutput()
		need(t, err == nil, "python3-slixmpp is not installed")
		host, port, _ := net.SplitHostPort(srv.c2s)
		out, err := runClient(t, nil, "", py, "slixmpp_mam.py", host, port, srv.cert(),
			"slix-mam-a@"+domain, "slix-mam-b@"+domain, password, "7")
		if err != nil || !strings.Contains(out, "archive paged: 3 pages forwards, 3 backwards") {
			t.Fatalf("slixmpp MAM: %v", err)
		}
	})
	t.Run("slixmpp/muc-mam", func(t *testing.T) {
		// XEP-0313 on a room JID with slixmpp's own MUC and MAM plugins:
		// the stanza-ids by the room, then the room archive paged.
		py := "/usr/bin/python3"
		_, err := exec.Command(py, "-c", "import slixmpp").CombinedOutput()
		need(t, err == nil, "python3-slixmpp is not installed")
		host, port, _ := net.SplitHostPort(srv.c2s)
		out, err := runClient(t, nil, "", py, "slixmpp_mucmam.py", host, port, srv.cert(),
			"slix-mm-a@"+domain, "slix-mm-b@"+domain, password, "archived@conference."+domain, "5")
		if err != nil || !strings.Contains(out, "room archive paged: 3 pages") {
			t.Fatalf("slixmpp MUC MAM: %v", err)
		}
	})
	t.Run("xmpp.js/sm-resume", func(t *testing.T) { smResume(t, srv) })
	t.Run("xmpp.js/fast", func(t *testing.T) { fastToken(t, srv) })
	for _, tc := range []struct{ name, service, user string }{
		{"xmpp.js/starttls", "xmpp://" + srv.c2s, "xjs"},
		// Direct TLS checks the certificate against the host in the
		// service address, so it is dialled by name.
		{"xmpp.js/direct-tls", "xmpps://localhost:" + port(srv.direct), "xjs-tls"},
		// RFC 7395 over wss://, through @xmpp/websocket.
		{"xmpp.js/websocket", "wss://localhost:" + port(srv.web) + "/xmpp-websocket", "xjs-ws"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			node := lookPath(t, "node")
			_, err := os.Stat("xmppjs/node_modules/@xmpp/client/package.json")
			need(t, err == nil, "@xmpp/client is not installed in interop/xmppjs (npm ci --prefix interop/xmppjs)")
			body := "hello from xmpp.js over " + tc.name
			args := []string{"pair.mjs", tc.service, domain, tc.user + "-a@" + domain, tc.user + "-b@" + domain, password, body}
			if strings.HasPrefix(tc.service, "wss:") && !nodeHasWebSocket(node) {
				// Node 20 has its WebSocket client behind a flag; 22 has it on.
				args = append([]string{"--experimental-websocket"}, args...)
			}
			out, err := runClient(t, []string{"NODE_EXTRA_CA_CERTS=" + srv.cert()}, "xmppjs", node, args...)
			want := fmt.Sprintf("receiver got %q from %s-a@%s/sender", body, tc.user, domain)
			if err != nil || !strings.Contains(out, want) {
				t.Fatalf("xmpp.js: %v; want %s", err, want)
			}
			// xmpp.js 0.14 logs in with SASL2 and Bind 2 when offered
			// (XEP-0388, XEP-0386): its resource option is the Bind 2
			// tag, which the server's resource starts with, followed by
			// "/" and the part derived from its user-agent id; a legacy
			// bind would have bound exactly "receiver".
			bound := fmt.Sprintf("receiver %s-b@%s/receiver/", tc.user, domain)
			if !strings.Contains(out, bound) {
				t.Fatalf("xmpp.js did not bind with Bind 2: want %q in its output", bound)
			}
		})
	}
}

// TestClients/xmpp.js/sm-resume is in smResume: xmpp.js's own stream
// management resumes a session whose socket was destroyed.
func smResume(t *testing.T, srv *server) {
	node := lookPath(t, "node")
	_, err := os.Stat("xmppjs/node_modules/@xmpp/client/package.json")
	need(t, err == nil, "@xmpp/client is not installed in interop/xmppjs (npm ci --prefix interop/xmppjs)")
	out, err := runClient(t, []string{"NODE_EXTRA_CA_CERTS=" + srv.cert()}, "xmppjs", node, "sm.mjs",
		"xmpp://"+srv.c2s, domain, "xjs-sm-a@"+domain, "xjs-sm-b@"+domain, password, "5")
	if err != nil || !strings.Contains(out, "receiver got each of 5 exactly once, in order") {
		t.Fatalf("xmpp.js stream management: %v", err)
	}
}

// TestClients/xmpp.js/fast is in fastToken: xmpp.js gets a XEP-0484 token
// with its password login and logs in with it (HT-SHA-256-NONE) on its
// next connection, which the server's log confirms.
func fastToken(t *testing.T, srv *server) {
	node := lookPath(t, "node")
	_, err := os.Stat("xmppjs/node_modules/@xmpp/client/package.json")
	need(t, err == nil, "@xmpp/client is not installed in interop/xmppjs (npm ci --prefix interop/xmppjs)")
	out, err := runClient(t, []string{"NODE_EXTRA_CA_CERTS=" + srv.cert()}, "xmppjs", node, "fast.mjs",
		"xmpp://"+srv.c2s, domain, "xjs-fast@"+domain, password)
	if err != nil || !strings.Contains(out, "token for HT-SHA-256-NONE") || !strings.Contains(out, "second login xjs-fast@"+domain+"/fast/") {
		t.Fatalf("xmpp.js FAST: %v", err)
	}
	srv.waitCount(t, `"msg":"token login","user":"xjs-fast","mechanism":"HT-SHA-256-NONE"`, 1)
}

func port(addr string) string {
	_, p, _ := net.SplitHostPort(addr)
	return p
}

// goSendxmpp runs go-sendxmpp -l as <user>-b, and go-sendxmpp as <user>-a
// sending it one message; the listener must print exactly that body from
// <user>-a.
func goSendxmpp(t *testing.T, srv *server, user, addr string, flags ...string) {
	t.Helper()
	gs := lookPath(t, "go-sendxmpp")
	ver, _ := exec.Command(gs, "--version").CombinedOutput()
	t.Logf("go-sendxmpp: %s (Debian %s)", strings.SplitN(string(ver), "\n", 2)[0], debVersion("go-sendxmpp"))
	// go-sendxmpp checks the certificate against the JID's domain with Go's
	// crypto/x509, which reads SSL_CERT_FILE.
	env := append(os.Environ(), "SSL_CERT_FILE="+srv.cert(), "HOME="+t.TempDir())
	sender, receiver := user+"-a@"+domain, user+"-b@"+domain
	body := "hello from go-sendxmpp " + strings.Join(append([]string{addr}, flags...), " ")

	ctx, cancel := context.WithTimeout(context.Background(), clientTimeout)
	defer cancel()
	listen := exec.CommandContext(ctx, gs, append([]string{"-l", "-u", receiver, "-p", password, "-j", addr}, flags...)...)
	listen.Env = env
	listen.WaitDelay = 5 * time.Second
	stdout, err := listen.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	listen.Stderr = &stderr
	if err := listen.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	lines := make(chan string, 64)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
		exited <- listen.Wait()
	}()
	defer func() {
		cancel()
		for range lines {
		}
	}()
	// The listener is logged in once the server has bound its resource; a
	// message that arrives before its presence is kept offline and
	// delivered with it.
	boundOrExit(t, srv, receiver, exited, &stderr)

	send := exec.CommandContext(ctx, gs, append([]string{"-u", sender, "-p", password, "-j", addr}, append(flags, receiver)...)...)
	send.Env = env
	send.Stdin = strings.NewReader(body + "\n")
	send.WaitDelay = 5 * time.Second
	if out, err := send.CombinedOutput(); err != nil {
		t.Fatalf("go-sendxmpp send: %v\n%s", err, out)
	}
	deadline := time.After(waitTimeout)
	var got []string
	for {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("go-sendxmpp -l ended without the message: %v\nstdout: %q\nstderr: %s", <-exited, got, stderr.String())
			}
			got = append(got, l)
			// go-sendxmpp -l prints the sender's JID and the body on one
			// line, the body last after a space (not checked against a
			// working Krill yet: both transports fail before login today).
			if strings.Contains(l, sender) && strings.HasSuffix(l, " "+body) {
				t.Logf("go-sendxmpp -l printed %q", l)
				return
			}
		case <-deadline:
			t.Fatalf("go-sendxmpp -l did not print %q within %v; printed %q\nstderr: %s", body, waitTimeout, got, stderr.String())
		}
	}
}

// boundOrExit waits for a session of bare to be bound, failing early if
// the client exits first (it could not log in).
func boundOrExit(t *testing.T, srv *server, bare string, exited <-chan error, stderr fmt.Stringer) {
	t.Helper()
	want := `"session bound","jid":"` + bare + `/`
	deadline := time.After(waitTimeout)
	for {
		for _, l := range srv.log {
			if strings.Contains(l, want) {
				return
			}
		}
		select {
		case l, ok := <-srv.lines:
			if !ok {
				t.Fatal("krill exited")
			}
			srv.log = append(srv.log, l)
		case err := <-exited:
			t.Fatalf("%s could not log in: %v\n%s", bare, err, stderr.String())
		case <-deadline:
			t.Fatalf("%s never bound a resource\n%s", bare, stderr.String())
		}
	}
}

// TestXmppc: xmppc (libstrophe) connects to DOMAIN:5222 only, so it gets a
// server of its own there, or the case is skipped when 5222 is taken. It
// sends one message; the receiver is a mellium.im/xmpp session.
func TestXmppc(t *testing.T) {
	gate(t)
	xmppc := lookPath(t, "xmppc")
	t.Logf("xmppc %s, libstrophe %s", debVersion("xmppc"), debVersion("libstrophe0"))
	l, err := net.Listen("tcp", "127.0.0.1:5222")
	if err != nil {
		t.Skipf("127.0.0.1:5222 is in use (%v); xmppc can only connect to %s:5222, skipped", err, domain)
	}
	l.Close()
	srv := startServer(t, krillBin(t), "127.0.0.1:5222", "", []string{"xmppc-a", "xmppc-b"})
	sender, receiver := "xmppc-a@"+domain, "xmppc-b@"+domain
	got := melliumReceiver(t, srv, receiver)

	// xmppc reads ~/.config/xmppc.conf and exits if it is missing; libstrophe
	// (OpenSSL) trusts the development certificate through SSL_CERT_FILE.
	home := t.TempDir()
	if err := os.MkdirAll(filepath.Join(home, ".config"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(home, ".config", "xmppc.conf"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	const body = "hello from xmppc"
	if _, err := runClient(t, []string{"HOME=" + home, "SSL_CERT_FILE=" + srv.cert()}, "", xmppc,
		"--jid", sender, "--pwd", password, "--mode", "message", "chat", receiver, body); err != nil {
		t.Fatalf("xmppc: %v", err)
	}
	select {
	case m := <-got:
		if m.body != body || !strings.HasPrefix(m.from, sender+"/") {
			t.Fatalf("received %q from %s, want %q from %s", m.body, m.from, body, sender)
		}
	case <-time.After(waitTimeout):
		t.Fatalf("no message within %v", waitTimeout)
	}
}

type message struct{ from, body string }

// melliumReceiver logs bare in over STARTTLS with mellium.im/xmpp, sends
// its initial presence and returns the messages it receives.
func melliumReceiver(t *testing.T, srv *server, bare string) <-chan message {
	t.Helper()
	_, got := melliumSession(t, srv, bare)
	return got
}

// melliumLogin logs bare in over STARTTLS (SCRAM-SHA-256, resource
// binding) with mellium.im/xmpp, an independent client.
func melliumLogin(t *testing.T, srv *server, bare string) *xmpp.Session {
	t.Helper()
	pem, err := os.ReadFile(srv.cert())
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(pem)
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	conn, err := net.DialTimeout("tcp", srv.c2s, waitTimeout)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	origin := jid.MustParse(bare)
	s, err := xmpp.NewSession(ctx, origin.Domain(), origin, conn, 0, xmpp.NewNegotiator(
		func(*xmpp.Session, *xmpp.StreamConfig) xmpp.StreamConfig {
			return xmpp.StreamConfig{Features: []xmpp.StreamFeature{
				xmpp.StartTLS(&tls.Config{ServerName: domain, RootCAs: roots, MinVersion: tls.VersionTLS12}),
				xmpp.SASL("", password, msasl.ScramSha256), xmpp.BindResource()}}
		}))
	if err != nil {
		t.Fatalf("mellium login %s: %v", bare, err)
	}
	return s
}

// melliumSession is melliumReceiver that also returns the session, to
// send with.
func melliumSession(t *testing.T, srv *server, bare string) (*xmpp.Session, <-chan message) {
	t.Helper()
	s := melliumLogin(t, srv, bare)
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	got := make(chan message, 8)
	go func() {
		_ = s.Serve(xmpp.HandlerFunc(func(r xmlstream.TokenReadEncoder, start *xml.StartElement) error {
			if start.Name.Local != "message" {
				return nil
			}
			var m struct {
				From string `xml:"from,attr"`
				Body string `xml:"body"`
			}
			_ = xml.NewTokenDecoder(xmlstream.MultiReader(xmlstream.Token(*start), r)).Decode(&m)
			got <- message{from: m.From, body: m.Body}
			return nil
		}))
	}()
	if err := s.Send(ctx, stanza.Presence{}.Wrap(nil)); err != nil {
		t.Fatal(err)
	}
	return s, got
}

// TestMakeRunStopsOnSIGTERM: `make run` builds bin/krill and execs it, so one
// SIGTERM to make's pid (which make passes on to its child) stops the
// server and frees its ports; with `go run` the server was left orphaned
// holding them.
func TestMakeRunStopsOnSIGTERM(t *testing.T) {
	gate(t)
	mk := lookPath(t, "make")
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	data := t.TempDir()
	ports := []string{freePort(t), freePort(t), freePort(t)}
	cmd := exec.Command(mk, "-C", root, "run")
	cmd.Env = append(cleanEnv(), "KRILL_DATA_DIR="+data, "KRILL_C2S_LISTEN="+ports[0],
		"KRILL_C2S_DIRECT_TLS_LISTEN="+ports[1], "KRILL_S2S_LISTEN=", "KRILL_ADMIN_LISTEN="+ports[2], "KRILL_LOG_FORMAT=json")
	// Its own process group, so that a failed test can still kill the server.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL); _ = cmd.Wait() })
	srv := &server{lines: make(chan string, 256)}
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			srv.lines <- sc.Text()
		}
		close(srv.lines)
	}()
	srv.waitCount(t, `"msg":"listening"`, 3)
	// make's one child is the server (exec, not a shell or go run).
	mp := strconv.Itoa(cmd.Process.Pid)
	children, err := os.ReadFile("/proc/" + mp + "/task/" + mp + "/children")
	if err != nil {
		t.Skipf("cannot list make's children: %v", err)
	}
	kids := strings.Fields(string(children))
	if len(kids) != 1 {
		t.Fatalf("make has children %q, want one: the server", kids)
	}
	pid, err := strconv.Atoi(kids[0])
	if err != nil {
		t.Fatal(err)
	}
	if comm, _ := os.ReadFile("/proc/" + kids[0] + "/comm"); strings.TrimSpace(string(comm)) != "krill" {
		t.Fatalf("make's child is %q, want krill", comm)
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		for range srv.lines {
		}
		done <- cmd.Wait()
	}()
	select {
	case <-done: // make reports the signal; its status does not matter
	case <-time.After(waitTimeout):
		t.Fatalf("make did not exit within %v of SIGTERM", waitTimeout)
	}
	// make may return before its child has finished shutting down: wait,
	// bounded, for the server process to be gone.
	for i := 0; syscall.Kill(pid, 0) == nil; i++ {
		if i == 300 {
			t.Fatalf("krill (pid %d) still runs 30s after SIGTERM to make", pid)
		}
		time.Sleep(100 * time.Millisecond)
	}
	for _, p := range ports {
		l, err := net.Listen("tcp", p)
		if err != nil {
			t.Fatalf("port %s still held after make run stopped: %v", p, err)
		}
		l.Close()
	}
}

// TestSlixmppMUC: slixmpp's XEP-0045 plugin joins a room a Go client
// (mellium.im/xmpp) created, and the two exchange groupchat messages
// through Krill's multi-user chat service.
func TestSlixmppMUC(t *testing.T) {
	gate(t)
	py := "/usr/bin/python3"
	_, err := os.Stat(py)
	need(t, err == nil, "%s is not installed", py)
	_, err = exec.Command(py, "-c", "import slixmpp").CombinedOutput()
	need(t, err == nil, "python3-slixmpp is not installed")
	t.Logf("python3-slixmpp %s", debVersion("python3-slixmpp"))
	srv := startServer(t, krillBin(t), freePort(t), "", []string{"muc-go", "muc-slix"})
	const room = "lobby@conference." + domain
	goClient := melliumStanzas(t, srv, "muc-go@"+domain)
	send := func(raw string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
		defer cancel()
		if err := goClient.s.Send(ctx, xml.NewDecoder(strings.NewReader(raw))); err != nil {
			t.Fatal(err)
		}
	}
	wait := func(what string, ok func(e received) bool) {
		t.Helper()
		deadline := time.After(waitTimeout)
		for {
			select {
			case e := <-goClient.got:
				t.Logf("go client got %s", e.raw)
				if ok(e) {
					return
				}
			case <-deadline:
				t.Fatalf("no %s within %v", what, waitTimeout)
			}
		}
	}
	send(`<presence to='` + room + `/gopher'><x xmlns='http://jabber.org/protocol/muc'/></presence>`)
	wait("own presence", func(e received) bool { return e.name == "presence" && strings.Contains(e.raw, `code="110"`) })
	send(`<iq type='set' id='inst' to='` + room + `'><query xmlns='http://jabber.org/protocol/muc#owner'><x xmlns='jabber:x:data' type='submit'/></query></iq>`)
	wait("instant room", func(e received) bool { return e.name == "iq" && e.from == room })

	host, port, _ := net.SplitHostPort(srv.c2s)
	res := make(chan error, 1)
	go func() {
		out, err := runClient(t, nil, "", py, "slixmpp_muc.py", host, port, srv.cert(), "muc-slix@"+domain, password,
			room, "slix", "hello from slixmpp", "gopher", "hello from go")
		if err == nil && !strings.Contains(out, "joined "+room+" as slix") {
			err = fmt.Errorf("no join in the output")
		}
		res <- err
	}()
	wait("slixmpp's message", func(e received) bool {
		return e.name == "message" && e.from == room+"/slix" && e.body == "hello from slixmpp"
	})
	send(`<message to='` + room + `' type='groupchat' id='g1'><body>hello from go</body></message>`)
	select {
	case err := <-res:
		if err != nil {
			t.Fatalf("slixmpp: %v", err)
		}
	case <-time.After(clientTimeout):
		t.Fatal("slixmpp did not finish")
	}
}

// received is a top-level element a mellium session received.
type received struct{ name, from, body, raw string }

type melliumClient struct {
	s   *xmpp.Session
	got chan received
}

// melliumStanzas logs bare in over STARTTLS with mellium.im/xmpp and
// returns what it receives, each element with its raw XML re-encoded.
func melliumStanzas(t *testing.T, srv *server, bare string) *melliumClient {
	t.Helper()
	s := melliumLogin(t, srv, bare)
	c := &melliumClient{s: s, got: make(chan received, 64)}
	go func() {
		_ = s.Serve(xmpp.HandlerFunc(func(r xmlstream.TokenReadEncoder, start *xml.StartElement) error {
			var raw strings.Builder
			enc := xml.NewEncoder(&raw)
			if _, err := xmlstream.Copy(enc, xmlstream.MultiReader(xmlstream.Token(*start), r)); err != nil {
				c.got <- received{name: "copy-error", raw: err.Error()}
				return nil
			}
			_ = enc.Flush()
			var m struct {
				From string `xml:"from,attr"`
				Body string `xml:"body"`
			}
			_ = xml.Unmarshal([]byte(raw.String()), &m)
			c.got <- received{name: start.Name.Local, from: m.From, body: m.Body, raw: raw.String()}
			return nil
		}))
	}()
	return c
}

// nodeHasWebSocket reports whether node has the WebSocket global without
// a flag.
func nodeHasWebSocket(node string) bool {
	out, err := exec.Command(node, "-e", "process.stdout.write(typeof WebSocket)").Output()
	return err == nil && string(out) == "function"
}
