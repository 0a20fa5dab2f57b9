// Package bench measures what an idle connection costs a server.
//
// The headline figure is user-space bytes per idle connection: N clients
// are brought to a stage of the XMPP negotiation (TCP accepted, stream
// opened with features sent, and later STARTTLS and authenticated) and
// left idle, and the server process's growth is divided by N. BenchmarkIdle
// runs a Krill server in the benchmark process and the clients in child
// processes, so that the server's figures contain no client state and no
// process holds more sockets than its open-file limit allows.
//
// The client side is reusable on its own: Drive opens N connections to any
// XMPP server and holds them at a Stage, and ServeClient wraps Drive in the
// small line protocol a parent process uses to run it in a child. The
// measuring side reads /proc: ReadProcMemory for a process's RSS and PSS,
// ReadKernelMemory for the system-wide socket and slab memory that the
// kernel spends on the same connections.
//
// The standalone program bench/cmd/krill-bench builds on these to measure
// any server by address (Krill, Prosody, ejabberd): idle stages, login
// rate, message throughput and a pre-auth attack; bench/scripts/compare.sh
// runs it side by side.
//
// See README.md for the commands and the figures measured.
package bench
