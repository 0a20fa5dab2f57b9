package upload

import (
	"errors"
	"io"
	"strconv"
	"strings"

	"github.com/krill-xmpp/krill/hook"
)

// corsMethods and corsHeaders answer a browser's preflight: what a page
// may send to the upload URLs.
const corsPreflight = "Access-Control-Allow-Methods: GET, HEAD, PUT, OPTIONS\r\n" +
	"Access-Control-Allow-Headers: Authorization, Content-Type\r\n" +
	"Access-Control-Max-Age: 86400\r\n"

// fileHeaders go with every file served: the browser must not guess a
// type other than the one stored, nor run what it shows as a page of the
// server's origin.
const fileHeaders = "X-Content-Type-Options: nosniff\r\n" +
	"Content-Security-Policy: default-src 'none'; sandbox\r\n"

const textPlain = "text/plain; charset=utf-8"

// serve is the route under Prefix: PUT, GET, HEAD and OPTIONS of
// Prefix<id>/<name>. It runs on the event loop.
func (m *Module) serve(r hook.WebRequest) {
	cors := r.CORS()
	id, name, ok := strings.Cut(strings.TrimPrefix(r.Path(), Prefix), "/")
	if !ok || !validID(id) || name == "" || strings.Contains(name, "/") {
		r.Respond(404, textPlain, cors, []byte("no such file\n"))
		return
	}
	switch r.Method() {
	case "OPTIONS":
		r.Respond(204, "", cors+corsPreflight, nil)
	case "PUT":
		m.put(r, id, cors)
	case "GET", "HEAD":
		m.get(r, id, name, cors)
	default:
		r.Respond(405, textPlain, "Allow: GET, HEAD, PUT, OPTIONS\r\n"+cors, []byte("GET, HEAD, PUT or OPTIONS\n"))
	}
}

// put checks a PUT against its slot on the loop (signature, expiry, size,
// type, quota), then claims the slot and receives the body on the
// transfer pool. The refusals: 403 for a bad signature or an expired
// slot, 411 without a Content-Length, 413 for a size other than the
// slot's, 415 for another content type, 507 for a quota reached since the
// slot was issued, 409 for a slot already used.
func (m *Module) put(r hook.WebRequest, id, cors string) {
	n := r.ContentLength()
	switch n {
	case -1:
		r.Respond(411, textPlain, cors, []byte("Content-Length is required\n"))
		return
	case -2:
		r.Respond(400, textPlain, cors, []byte("malformed Content-Length, or a chunked body\n"))
		return
	}
	ctype := string(r.Header("Content-Type"))
	auth := string(r.Header("Authorization"))
	owner, err := m.checkAuth(auth, r.Path(), n, ctype)
	switch {
	case errors.Is(err, errSize):
		r.Respond(413, textPlain, cors, []byte("the body is not the size of the slot\n"))
		return
	case errors.Is(err, errType):
		r.Respond(415, textPlain, cors, []byte("the Content-Type is not the slot's\n"))
		return
	case err != nil:
		r.Respond(403, textPlain, cors, []byte(err.Error()+"\n"))
		return
	}
	if !m.reserve(owner, n) {
		r.Respond(507, textPlain, cors, []byte("upload quota reached\n"))
		return
	}
	if ctype == "" {
		ctype = "application/octet-stream"
	}
	meta := Meta{ID: id, Name: nameOf(r.Path()), Owner: owner, Type: ctype, Size: n}
	m.mu.Lock()
	m.active[id] = struct{}{}
	m.mu.Unlock()
	done := func() {
		m.mu.Lock()
		delete(m.active, id)
		m.mu.Unlock()
	}
	var f File
	var cerr error
	r.Async(func() func(bool) {
		f, cerr = m.Store.Create(id)
		return func(gone bool) {
			switch {
			case gone:
				if cerr == nil {
					_ = f.Abort()
				}
				done()
				m.release(owner, n)
				return
			case errors.Is(cerr, ErrExists):
				done()
				m.release(owner, n)
				r.Respond(409, textPlain, cors, []byte("this slot was used\n"))
				return
			case cerr != nil:
				done()
				m.release(owner, n)
				r.Respond(500, textPlain, cors, []byte("cannot store the file\n"))
				return
			}
			r.Receive(n, func(p []byte) error {
				_, err := f.Write(p)
				return err
			}, func(err error) (int, string, string, []byte) {
				defer done()
				if err == nil {
					meta.Created = m.now()
					err = f.Commit(meta)
				} else {
					_ = f.Abort()
				}
				if err != nil {
					m.release(owner, n)
					return 500, textPlain, cors, []byte("cannot store the file\n")
				}
				m.puts.Add(1)
				return 201, textPlain, cors, []byte("stored\n")
			})
		}
	}, func() {
		done()
		m.release(owner, n)
	})
}

// nameOf returns the last element of a path, still percent-encoded.
func nameOf(path string) string {
	return path[strings.LastIndexByte(path, '/')+1:]
}

// get serves a stored file, whole or one byte range (RFC 9110 section
// 14): 206 with Content-Range for a satisfiable single range, 416 for
// an unsatisfiable one; several ranges or a malformed Range are ignored
// (the whole file, 200), as RFC 9110 allows.
func (m *Module) get(r hook.WebRequest, id, name, cors string) {
	rng := string(r.Header("Range"))
	var meta Meta
	var body io.ReadCloser
	var oerr error
	var start, end int64
	var ranged, bad bool
	r.Async(func() func(bool) {
		meta, body, oerr = m.Store.Open(id)
		if oerr == nil && meta.Name != name {
			_ = body.Close()
			oerr = ErrNotFound
		}
		if oerr == nil {
			if start, end, ranged, bad = parseRange(rng, meta.Size); bad {
				_ = body.Close()
			}
		}
		return func(gone bool) {
			hdr := cors + fileHeaders + "Accept-Ranges: bytes\r\n"
			size := strconv.FormatInt(meta.Size, 10)
			switch {
			case gone:
				if oerr == nil && !bad {
					_ = body.Close()
				}
			case errors.Is(oerr, ErrNotFound):
				r.Respond(404, textPlain, cors, []byte("no such file\n"))
			case oerr != nil:
				r.Respond(500, textPlain, cors, []byte("cannot read the file\n"))
			case bad:
				r.Respond(416, textPlain, hdr+"Content-Range: bytes */"+size+"\r\n", []byte("range not satisfiable\n"))
			case ranged:
				m.gets.Add(1)
				hdr += "Content-Range: bytes " + strconv.FormatInt(start, 10) + "-" + strconv.FormatInt(end, 10) + "/" + size + "\r\n"
				r.Send(206, meta.Type, hdr, end-start+1, &section{rc: body, off: start})
			default:
				m.gets.Add(1)
				r.Send(200, meta.Type, hdr, meta.Size, body)
			}
		}
	}, nil)
}

// section reads body from off: the seek happens on the first Read, which
// runs on the transfer pool.
type section struct {
	rc     io.ReadCloser
	off    int64
	seeked bool
}

func (s *section) Read(p []byte) (int, error) {
	if !s.seeked {
		s.seeked = true
		sk, ok := s.rc.(io.Seeker)
		if !ok {
			if _, err := io.CopyN(io.Discard, s.rc, s.off); err != nil {
				return 0, err
			}
		} else if _, err := sk.Seek(s.off, io.SeekStart); err != nil {
			return 0, err
		}
	}
	return s.rc.Read(p)
}

func (s *section) Close() error { return s.rc.Close() }

// parseRange reads a Range header for a file of size bytes: one range
// gives its first and last byte and ok; an unsatisfiable one gives bad
// (RFC 9110 section 14.1.2: a first byte beyond the end, or a suffix of
// zero); anything else (none, several ranges, malformed, another unit)
// gives neither, and the whole file is served.
func parseRange(h string, size int64) (start, end int64, ok, bad bool) {
	spec, found := strings.CutPrefix(h, "bytes=")
	if !found || strings.Contains(spec, ",") {
		return 0, 0, false, false
	}
	first, last, found := strings.Cut(strings.TrimSpace(spec), "-")
	if !found {
		return 0, 0, false, false
	}
	if first == "" { // suffix: the last n bytes
		n, err := strconv.ParseInt(last, 10, 64)
		if err != nil || n < 0 {
			return 0, 0, false, false
		}
		if n == 0 {
			return 0, 0, false, true
		}
		return max(size-n, 0), size - 1, true, false
	}
	a, err := strconv.ParseInt(first, 10, 64)
	if err != nil || a < 0 {
		return 0, 0, false, false
	}
	b := size - 1
	if last != "" {
		if b, err = strconv.ParseInt(last, 10, 64); err != nil || b < a {
			return 0, 0, false, false
		}
		b = min(b, size-1)
	}
	if a >= size {
		return 0, 0, false, true
	}
	return a, b, true, false
}
