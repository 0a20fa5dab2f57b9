package server

import (
	"context"
	"net"
)

// SetLookupSRV swaps s's SRV resolver, for tests of the DNS path without
// DNS. Call before the first stanza to another domain.
func SetLookupSRV(s *Server, f func(ctx context.Context, service, proto, name string) (string, []*net.SRV, error)) {
	s.fed.lookupSRV = f
}

// LinkLoops returns the index of the event loop of each outbound link,
// keyed "local>remote".
func LinkLoops(s *Server) map[string]int {
	idx := make(map[*loop]int)
	if lp := s.loopsV.Load(); lp != nil {
		for i, l := range *lp {
			idx[l] = i
		}
	}
	f := s.fed
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make(map[string]int, len(f.links))
	for k, lk := range f.links {
		out[k.local+">"+k.remote] = idx[lk.loop]
	}
	return out
}
