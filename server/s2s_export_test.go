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
