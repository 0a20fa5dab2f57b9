package server

import (
	"testing"
	"unsafe"

	"github.com/krill-xmpp/krill/websocket"
)

// TestWSConnSize keeps an idle WebSocket's layer in the 32-byte size
// class: what it adds to a TCP or TLS connection (BenchmarkIdle's ws
// stages against stream, tls and auth).
func TestWSConnSize(t *testing.T) {
	if got := unsafe.Sizeof(wsConn{}); got > 32 {
		t.Fatalf("unsafe.Sizeof(wsConn{}) = %d, want <= 32", got)
	}
}

// TestOutUnit splits the core's output into the top-level units sent as
// WebSocket messages.
func TestOutUnit(t *testing.T) {
	out := "<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' id='ab' from='localhost' version='1.0' xml:lang='en'>" +
		"<stream:features><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></stream:features>" +
		"<message to='a@b' note='x>y'><body><![CDATA[<not a tag>]]></body></message>\n" +
		"<presence xmlns='jabber:client'/></stream:stream>"
	want := []string{
		"<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' id='ab' from='localhost' version='1.0' xml:lang='en'/>",
		"<stream:features xmlns:stream='http://etherx.jabber.org/streams'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></stream:features>",
		"<message xmlns='jabber:client' to='a@b' note='x>y'><body><![CDATA[<not a tag>]]></body></message>",
		"<presence xmlns='jabber:client'/>",
		"<close xmlns='urn:ietf:params:xml:ns:xmpp-framing'/>",
	}
	var frames []byte
	for b := []byte(out); len(b) > 0; {
		n, kind := outUnit(b)
		if n == 0 {
			t.Fatalf("no unit at %q", b)
		}
		frames = appendMessage(frames, kind, b[:n])
		b = b[n:]
	}
	var got []string
	for len(frames) > 0 {
		h, ok, err := websocket.ParseHeader(frames)
		if !ok || err != nil || h.Op != websocket.OpText || !h.Fin {
			t.Fatalf("frame %+v %v %v", h, ok, err)
		}
		got = append(got, string(frames[h.Size:h.Size+int(h.Len)]))
		frames = frames[h.Size+int(h.Len):]
	}
	if len(got) != len(want) {
		t.Fatalf("got %q\nwant %q", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("message %d: got %q, want %q", i, got[i], want[i])
		}
	}
	if n, _ := outUnit([]byte("<message><body>half")); n != 0 {
		t.Fatalf("a partial element gave a unit of %d bytes", n)
	}
}

// recorder is a transport that keeps what is written.
type recorder struct {
	plainTCP
	got []byte
}

func (r *recorder) write(_ *conn, b []byte) { r.got = append(r.got, b...) }

// TestWSWritePartial: an element the core writes in two parts goes out as
// one message once complete, and the layer keeps nothing after.
func TestWSWritePartial(t *testing.T) {
	r := &recorder{}
	w := &wsConn{under: r, stage: wsOpen}
	c := &conn{loop: &loop{}, tr: w}
	w.write(c, []byte("<presence/><message to='a@b'><bo"))
	w.write(c, []byte("dy>hi</body></message>"))
	want := string(websocket.AppendFrame(nil, websocket.OpText, []byte("<presence xmlns='jabber:client'/>"))) +
		string(websocket.AppendFrame(nil, websocket.OpText, []byte("<message xmlns='jabber:client' to='a@b'><body>hi</body></message>")))
	if string(r.got) != want {
		t.Fatalf("got %q\nwant %q", r.got, want)
	}
	if w.part != nil {
		t.Fatalf("the layer keeps %+v", w.part)
	}
}
