package server

// SetHandOutHook makes s call f during each hand-over of a session to
// another node, after the session has gone here and before its state is
// sent (cluster_resume.go), on the session's loop.
func SetHandOutHook(s *Server, f func()) { s.moves.testHook = f }

// MovesBuffered returns the stanzas buffered for sessions leaving s.
func MovesBuffered(s *Server) int {
	s.moves.mu.Lock()
	defer s.moves.mu.Unlock()
	n := 0
	for _, mv := range s.moves.m {
		n += len(mv.buf)
	}
	return n
}

// HandoverCounts returns s's hand-overs out, in and failed.
func HandoverCounts(s *Server) (out, in, failed uint64) {
	return s.moves.handedOut.Load(), s.moves.handedIn.Load(), s.moves.handoverFailed.Load()
}
