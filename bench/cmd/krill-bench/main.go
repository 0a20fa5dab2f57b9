// Command krill-bench measures an XMPP server from outside: what its idle
// connections cost at each stage of a session, how fast it logs clients
// in, how fast it moves messages between sessions, how fast it fans a
// groupchat message out to a room's occupants, and how it holds up
// while hostile pre-authentication connections linger. It drives any
// server by address (Krill, Prosody, ejabberd) and reads the server's
// memory from /proc by process id, so it runs on the server's machine.
//
// Usage:
//
//	krill-bench [idle] -addr 127.0.0.1:5222 -pgrep 'krill serve' -stage auth -n 5000
//	krill-bench login-rate -addr ... -pids 123 -logins 3000
//	krill-bench throughput -addr ... -pids 123 -pairs 50 -duration 10s
//	krill-bench attack -addr ... -pids 123 -hostile 1000 -duration 90s [-hostile-profile sasl2]
//	krill-bench muc -addr ... -pids 123 -room bench@conference.localhost -n 1000 -messages 50 -rate 5
//	krill-bench provision-prosody -dir DATA/localhost/accounts -n 5000
//	krill-bench report -dir bench/results/DATE-MACHINE
//
// Traffic goes to loopback addresses (127.0.0.0/8, ::1) only; any other
// address is refused. Results are JSON lines (-json FILE, appended); the
// report subcommand turns a directory of them into a Markdown table and
// SVG charts. See bench/README.md.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

// Errors of the command line.
var (
	// errUsage means the command line could not be understood; the flag
	// package has printed why.
	errUsage = errors.New("krill-bench: usage")
	// errNotLoopback means an address outside 127.0.0.0/8 and ::1 was
	// given as a target or a source.
	errNotLoopback = errors.New("krill-bench: not a loopback address")
	// errNoPids means no server process was named or found.
	errNoPids = errors.New("krill-bench: no server process")
	// errLost means the server closed connections that should have stayed
	// open during a measurement.
	errLost = errors.New("krill-bench: server closed connections")
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	if err != nil {
		if !errors.Is(err, errUsage) {
			fmt.Fprintln(os.Stderr, err)
		}
		os.Exit(1)
	}
}

// run dispatches a subcommand; the first argument names it unless it is a
// flag, in which case the subcommand is idle.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	sub := "idle"
	if len(args) > 0 && len(args[0]) > 0 && args[0][0] != '-' {
		sub, args = args[0], args[1:]
	}
	switch sub {
	case "idle":
		return idleCmd(ctx, args, stdout, stderr)
	case "client":
		return clientCmd(ctx, args, stdin, stdout, stderr)
	case "login-rate":
		return loginRateCmd(ctx, args, stdout, stderr)
	case "throughput":
		return throughputCmd(ctx, args, stdout, stderr)
	case "attack":
		return attackCmd(ctx, args, stdout, stderr)
	case "muc":
		return mucCmd(ctx, args, stdout, stderr)
	case "muc-client":
		return mucClientCmd(ctx, args, stdin, stdout, stderr)
	case "provision-prosody":
		return provisionProsodyCmd(args, stderr)
	case "provision-ejabberd":
		return provisionEjabberdCmd(ctx, args, stderr)
	case "report":
		return reportCmd(args, stdout, stderr)
	default:
		fmt.Fprintf(stderr, "krill-bench: unknown subcommand %q (idle, login-rate, throughput, attack, muc, provision-prosody, provision-ejabberd, report)\n", sub)
		return errUsage
	}
}
