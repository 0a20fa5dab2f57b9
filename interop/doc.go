// Package interop drives the built krill binary with XMPP clients nobody
// here wrote: go-sendxmpp, slixmpp, xmpp.js (@xmpp/client) and xmppc
// (libstrophe), installed from Debian's packages and npm by .ci/run. Each
// case logs two accounts in, sends one message and checks that the receiver
// got exactly its body. It also checks that `make run` stops with one
// SIGTERM to make.
//
// The tests run only with KRILL_INTEROP=1 (`make interop`, which sets
// KRILL_BIN to the binary it built). Under CI=true a missing client is a
// failure; elsewhere it is a skip with a message. See README.md here.
package interop
