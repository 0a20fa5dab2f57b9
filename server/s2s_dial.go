package server

import (
	"context"
	"net"
	"sync"

	"github.com/panjf2000/gnet/v2"
	"go.uber.org/zap"
)

// Outbound connects run on a dialer of their own rather than on the worker
// pool: a peer that does not answer (a dropped SYN, a resolver that does
// not reply) holds its connect for up to s2s.connect_timeout, and sixteen
// such peers would hold every worker, and storage with them. gnet v2's
// EventLoop.Register would dial for us, but with net.Dial on its own
// goroutine pool: no timeout and no way to cancel it. So DNS and the TCP
// connect run on at most s2s.max_dials goroutines, each with a context
// that ends at the link's connect deadline or when the server stops; the
// connected socket is then enrolled into the link's loop. Links beyond
// the cap wait in order; their deadline counts from their first stanza,
// so a link that waited too long fails at once when its turn comes.

// dialer runs the outbound connects.
type dialer struct {
	ctx    context.Context // ends when the server stops
	cancel context.CancelFunc

	mu      sync.Mutex // guards the fields below
	waiting []*s2sLink // links waiting for a free dial, oldest first
	running int        // goroutines dialling
	stopped bool
	wg      sync.WaitGroup
}

func (d *dialer) init() {
	d.ctx, d.cancel = context.WithCancel(context.Background())
}

// dial has the dialer connect lk: now if fewer than s2s.max_dials are
// running, else when one is done. OnOpen continues (openOutbound).
func (s *Server) dial(lk *s2sLink) {
	d := &s.fed.dialer
	d.mu.Lock()
	if d.stopped {
		d.mu.Unlock()
		s.linkGone(lk, nil, "remote-server-timeout")
		return
	}
	if d.running >= s.conf().S2S.MaxDials {
		d.waiting = append(d.waiting, lk)
		d.mu.Unlock()
		return
	}
	d.running++
	d.wg.Add(1)
	d.mu.Unlock()
	go s.dialLoop(lk)
}

// dialLoop connects lk, then the links that wait, until none does.
func (s *Server) dialLoop(lk *s2sLink) {
	d := &s.fed.dialer
	defer d.wg.Done()
	for {
		s.connect(d.ctx, lk)
		d.mu.Lock()
		if len(d.waiting) == 0 || d.stopped {
			d.running--
			d.mu.Unlock()
			return
		}
		lk = d.waiting[0]
		d.waiting[0] = nil
		d.waiting = d.waiting[1:]
		d.mu.Unlock()
	}
}

// stopDials cancels the connects in flight and fails the links that
// wait, with remote-server-timeout as for a link that never connects;
// then it waits for the dialer's goroutines, which return at once. Part of
// Stop: a peer that does not answer does not hold it.
func (s *Server) stopDials() {
	d := &s.fed.dialer
	d.mu.Lock()
	d.stopped = true
	waiting := d.waiting
	d.waiting = nil
	d.mu.Unlock()
	d.cancel()
	for _, lk := range waiting {
		s.linkGone(lk, nil, "remote-server-timeout")
	}
	d.wg.Wait()
}

// stats returns the connects in flight and the links waiting for one.
func (d *dialer) stats() (running, waiting int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.running, len(d.waiting)
}

// connect resolves lk's domain, connects, and enrolls the socket into the
// link's loop, all before lk's connect deadline and while parent (the
// server) runs. A failure ends the link (linkGone bounces what waits).
func (s *Server) connect(parent context.Context, lk *s2sLink) {
	ctx, cancel := context.WithDeadline(parent, lk.started.Add(s.conf().S2S.ConnectTimeout))
	defer cancel()
	gone := func(cond string) {
		if parent.Err() != nil || ctx.Err() != nil {
			cond = "remote-server-timeout"
		}
		s.linkGone(lk, nil, cond)
	}
	if ctx.Err() != nil {
		gone("remote-server-timeout") // waited past its deadline
		return
	}
	addrs, err := s.resolve(ctx, lk.domain)
	if err != nil || len(addrs) == 0 {
		s.log.Debug("s2s: no address", zap.String("domain", lk.domain), zap.Error(err))
		gone("remote-server-not-found")
		return
	}
	var nc net.Conn
	var direct bool
	for _, a := range addrs {
		var nd net.Dialer
		nc, err = nd.DialContext(ctx, "tcp", a.addr)
		if err == nil {
			direct = a.direct
			break
		}
		if ctx.Err() != nil {
			break
		}
	}
	if nc == nil {
		s.log.Debug("s2s: connect failed", zap.String("domain", lk.domain), zap.Error(err))
		gone("remote-server-not-found")
		return
	}
	s.fed.dialled.Add(1)
	res, err := lk.loop.el.Enroll(gnet.NewContext(context.Background(), &s2sDial{link: lk, direct: direct}), nc)
	if err != nil {
		_ = nc.Close()
		gone("remote-server-not-found")
		return
	}
	// Bounded: a loop that stops never answers.
	select {
	case r := <-res:
		if r.Err != nil {
			gone("remote-server-not-found")
		}
	case <-ctx.Done():
		gone("remote-server-timeout")
	}
}
