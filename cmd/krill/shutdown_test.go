package main

import (
	"bufio"
	"context"
	"encoding/xml"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	msasl "mellium.im/sasl"
	"mellium.im/xmlstream"
	"mellium.im/xmpp"
	"mellium.im/xmpp/jid"
	"mellium.im/xmpp/stanza"
)

// krillProcess is a running krill binary.
type krillProcess struct {
	cmd   *exec.Cmd
	lines chan string
	log   strings.Builder
}

// startKrill runs bin serve with env and waits for n "listening" lines.
func startKrill(t *testing.T, bin string, env []string, n int, args ...string) *krillProcess {
	t.Helper()
	p := &krillProcess{cmd: exec.Command(bin, append([]string{"serve"}, args...)...), lines: make(chan string, 256)}
	p.cmd.Env = append(os.Environ(), env...)
	stderr, err := p.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.cmd.Process.Kill(); _ = p.cmd.Wait() })
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			p.lines <- sc.Text()
		}
		close(p.lines)
	}()
	p.waitLog(t, `"listening"`, n)
	return p
}

// waitLog reads log lines until want has appeared n times in all.
func (p *krillProcess) waitLog(t *testing.T, want string, n int) {
	t.Helper()
	deadline := time.After(30 * time.Second)
	for strings.Count(p.log.String(), want) < n {
		select {
		case l, ok := <-p.lines:
			if !ok {
				t.Fatalf("krill exited waiting for %s:\n%s", want, p.log.String())
			}
			p.log.WriteString(l + "\n")
		case <-deadline:
			t.Fatalf("no %s in the log:\n%s", want, p.log.String())
		}
	}
}

// stop sends sig and waits for a clean exit.
func (p *krillProcess) stop(t *testing.T, sig os.Signal) {
	t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		for range p.lines { // drain so the process never blocks on stderr
		}
		done <- p.cmd.Wait()
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("exit after %v: %v\n%s", sig, err, p.log.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("no exit after %v", sig)
	}
}

func buildKrill(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "krill")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	return bin
}

// mellium logs in over plaintext (the server allows it in this test);
// mellium refuses SASL on streams it does not think secure, so the session
// starts Secure.
func melliumLogin(t *testing.T, addr, user, password string) *xmpp.Session {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	origin := jid.MustParse(user + "@localhost")
	s, err := xmpp.NewSession(ctx, origin.Domain(), origin, conn, xmpp.Secure,
		xmpp.NewNegotiator(func(*xmpp.Session, *xmpp.StreamConfig) xmpp.StreamConfig {
			return xmpp.StreamConfig{Features: []xmpp.StreamFeature{xmpp.SASL("", password, msasl.ScramSha256), xmpp.BindResource()}}
		}))
	if err != nil {
		t.Fatalf("login %s: %v", user, err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return s
}

// TestSIGTERMKeepsMessages: SIGTERM while messages to an offline user are in
// flight; after a restart the user gets every one. Also the health command.
func TestSIGTERMKeepsMessages(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := buildKrill(t)
	data := t.TempDir()
	addr, admin := freePort(t), freePort(t)
	env := []string{"KRILL_C2S_LISTEN=" + addr, "KRILL_C2S_DIRECT_TLS_LISTEN=", "KRILL_S2S_LISTEN=", "KRILL_ADMIN_LISTEN=" + admin,
		"KRILL_DATA_DIR=" + data, "KRILL_LOG_FORMAT=json", "KRILL_C2S_ALLOW_PLAINTEXT=true"}
	for _, u := range []string{"alice", "bob"} {
		if out, err := exec.Command(bin, "user", "add", u, "--password", "pw-"+u, "--data_dir="+data).CombinedOutput(); err != nil {
			t.Fatalf("user add: %v %s", err, out)
		}
	}
	p := startKrill(t, bin, env, 2)
	if out, err := exec.Command(bin, "health", "--addr", admin).CombinedOutput(); err != nil || string(out) != "ok\n" {
		t.Fatalf("krill health: %v %q", err, out)
	}

	alice := melliumLogin(t, addr, "alice", "pw-alice")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	const n = 30
	for i := range n {
		msg := stanza.Message{To: jid.MustParse("bob@localhost"), Type: stanza.ChatMessage}
		body := xmlstream.Wrap(xmlstream.Token(xml.CharData("msg-"+strconv.Itoa(i))), xml.StartElement{Name: xml.Name{Local: "body"}})
		if err := alice.Send(ctx, msg.Wrap(body)); err != nil {
			t.Fatal(err)
		}
	}
	// SIGTERM once the server has read them all, while the last are still
	// being stored.
	want := `krill_stanzas_total{direction="in",kind="message"} ` + strconv.Itoa(n)
	for i := 0; ; i++ {
		resp, err := http.Get("http://" + admin + "/metrics")
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if strings.Contains(string(b), want) {
				break
			}
		}
		if i == 500 {
			t.Fatalf("the server never read the %d messages", n)
		}
		time.Sleep(10 * time.Millisecond)
	}
	p.stop(t, syscall.SIGTERM)
	if out, err := exec.Command(bin, "health", "--addr", admin).CombinedOutput(); err == nil {
		t.Fatalf("health after stop succeeded: %q", out)
	}

	startKrill(t, bin, env, 2)
	bob := melliumLogin(t, addr, "bob", "pw-bob")
	got := make(chan string, n)
	go func() {
		_ = bob.Serve(xmpp.HandlerFunc(func(r xmlstream.TokenReadEncoder, start *xml.StartElement) error {
			if start.Name.Local == "message" {
				var m struct {
					Body string `xml:"body"`
				}
				_ = xml.NewTokenDecoder(xmlstream.MultiReader(xmlstream.Token(*start), r)).Decode(&m)
				got <- m.Body
			}
			return nil
		}))
	}()
	if err := bob.Send(ctx, stanza.Presence{}.Wrap(nil)); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		select {
		case b := <-got:
			if b != "msg-"+strconv.Itoa(i) {
				t.Fatalf("message %d is %q", i, b)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("only %d of %d messages survived the restart", i, n)
		}
	}
}

// TestReloadCommand: krill reload re-reads the file; live keys apply to new
// connections, the others are reported as needing a restart.
func TestReloadCommand(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := buildKrill(t)
	dir := t.TempDir()
	file := filepath.Join(dir, "krill.toml")
	addr := freePort(t)
	write := func(domain, timeout string) {
		conf := "domain = \"" + domain + "\"\ndata_dir = \"" + filepath.Join(dir, "data") + "\"\n" +
			"[c2s]\nlisten = \"" + addr + "\"\ndirect_tls_listen = \"\"\n[s2s]\nlisten = \"\"\n" +
			"[admin]\nlisten = \"\"\n[log]\nformat = \"json\"\n[preauth]\ntimeout = \"" + timeout + "\"\n"
		if err := os.WriteFile(file, []byte(conf), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("localhost", "30s")
	p := startKrill(t, bin, nil, 1, "--config", file)

	write("example.org", "1s")
	if out, err := exec.Command(bin, "reload", "--config", file).CombinedOutput(); err != nil {
		t.Fatalf("krill reload: %v %s", err, out)
	}
	p.waitLog(t, `"configuration reloaded"`, 1)
	if !strings.Contains(p.log.String(), `"changed":["domain","preauth.timeout"],"needs_restart":["domain"]`) {
		t.Fatalf("reload log:\n%s", p.log.String())
	}
	// A new connection gets the new pre-auth deadline.
	start := time.Now()
	conn, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetReadDeadline(time.Now().Add(20 * time.Second))
	buf := make([]byte, 4096)
	var got strings.Builder
	for {
		n, err := conn.Read(buf)
		got.Write(buf[:n])
		if err != nil {
			break
		}
	}
	if !strings.Contains(got.String(), "<connection-timeout") || time.Since(start) > 15*time.Second {
		t.Fatalf("after reload got %q after %v, want connection-timeout at the new 1s deadline", got.String(), time.Since(start))
	}
	p.stop(t, syscall.SIGTERM)
}
