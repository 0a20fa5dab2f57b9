package server_test

import (
	"crypto/sha1"
	"encoding/base64"
	"encoding/hex"
	"strings"
	"testing"
)

// TestAvatarHashInPresence: XEP-0398 section 4 and XEP-0153. The server
// adds the vCard PHOTO's hash to available presence (broadcast and
// directed), leaves a client's <photo/> alone, fills an empty x:update;
// an avatar published with XEP-0084 takes over and is converted into the
// vCard (XEP-0398 3.1).
func TestAvatarHashInPresence(t *testing.T) {
	srv, store := startServerOpts(t, testConfig(t), serverOpts{}, "alice", "bob")
	subscribe(t, store, "alice", "bob", true)
	img := []byte("\x89PNG\r\n\x1a\n not really a png, but bytes")
	b64 := base64.StdEncoding.EncodeToString(img)
	sum := sha1.Sum(img)
	hash := hex.EncodeToString(sum[:])
	update := func(h string) string { return `<x xmlns='vcard-temp:x:update'><photo>` + h + `</photo></x>` }

	a1 := dialRaw(t, srv)
	a1.scramLogin("alice", testPassword, "a1")
	// XEP-0153 section 3.1: the client publishes its vCard with a photo.
	a1.exchange(t, `<iq type='set' id='vc1'><vCard xmlns='vcard-temp'><BDAY>1476-06-09</BDAY><PHOTO><TYPE>image/png</TYPE><BINVAL>`+b64+`</BINVAL></PHOTO></vCard></iq>`,
		`<iq type='result' id='vc1'/>`)
	bob := dialRaw(t, srv)
	bob.scramLogin("bob", testPassword, "b")
	bob.send(`<presence/>`)
	bob.expect(t, `<presence from='bob@localhost/b'/>`)
	bob.sync(t, "s0") // the broadcast to alice's (unavailable) account is over

	a1.send(`<presence/>`)
	a1.expect(t, `<presence from='alice@localhost/a1'>`+update(hash)+`</presence>`)
	a1.expect(t, `<presence from='bob@localhost/b' to='alice@localhost/a1'/>`)
	bob.expect(t, `<presence from='alice@localhost/a1' to='bob@localhost'>`+update(hash)+`</presence>`)

	// A client's own empty photo ("no avatar") is left alone.
	a1.send(`<presence><show>away</show><x xmlns='vcard-temp:x:update'><photo/></x></presence>`)
	a1.expect(t, `<presence from='alice@localhost/a1'><show>away</show><x xmlns='vcard-temp:x:update'><photo/></x></presence>`)
	bob.expect(t, `<presence from='alice@localhost/a1' to='bob@localhost'><show>away</show><x xmlns='vcard-temp:x:update'><photo/></x></presence>`)
	// An x:update without photo is overwritten.
	a1.send(`<presence><x xmlns='vcard-temp:x:update'/><show>dnd</show></presence>`)
	a1.expect(t, `<presence from='alice@localhost/a1'>`+update(hash)+`<show>dnd</show></presence>`)
	bob.expect(t, `<presence from='alice@localhost/a1' to='bob@localhost'>`+update(hash)+`<show>dnd</show></presence>`)
	// Directed presence (a MUC join) gets it too.
	a1.send(`<presence to='bob@localhost/b'/>`)
	bob.expect(t, `<presence to='bob@localhost/b' from='alice@localhost/a1'>`+update(hash)+`</presence>`)

	// XEP-0084: data, then metadata; the metadata id is the new hash.
	const id2 = "111f4b3c50d7b0df729d299bc6f8e9ef9066971f"
	a1.send(pub("d1", "urn:xmpp:avatar:data", id2, `<data xmlns='urn:xmpp:avatar:data'>aGVsbG8=</data>`, ""))
	a1.expect(t, publishResult("d1", "urn:xmpp:avatar:data", id2))
	a1.send(pub("m1", "urn:xmpp:avatar:metadata", id2, `<metadata xmlns='urn:xmpp:avatar:metadata'><info bytes='5' id='`+id2+`' height='64' type='image/png' width='64'/></metadata>`, ""))
	a1.expect(t, publishResult("m1", "urn:xmpp:avatar:metadata", id2))
	a1.send(`<presence/>`)
	a1.expect(t, `<presence from='alice@localhost/a1'>`+update(id2)+`</presence>`)
	bob.expect(t, `<presence from='alice@localhost/a1' to='bob@localhost'>`+update(id2)+`</presence>`)
	// Converted into the vCard, the rest of the vCard kept.
	bob.exchange(t, `<iq type='get' id='vc2' to='alice@localhost'><vCard xmlns='vcard-temp'/></iq>`,
		`<iq type='result' id='vc2' from='alice@localhost'><vCard xmlns='vcard-temp'><BDAY>1476-06-09</BDAY><PHOTO><TYPE>image/png</TYPE><BINVAL>aGVsbG8=</BINVAL></PHOTO></vCard></iq>`)

	// A new session of alice's, while a1 is bound, takes the hash the
	// server keeps for the account (no storage read at its login).
	a2 := dialRaw(t, srv)
	a2.scramLogin("alice", testPassword, "a2")
	a2.send(`<presence/>`)
	a2.expect(t, `<presence from='alice@localhost/a2'>`+update(id2)+`</presence>`)
	a2.expect(t, `<presence from='alice@localhost/a1' to='alice@localhost/a2'>`+update(id2)+`</presence>`)
	a2.expect(t, `<presence from='bob@localhost/b' to='alice@localhost/a2'/>`)

	// The account advertises the conversion.
	got := a2.exchange(t, `<iq type='get' id='di' to='alice@localhost'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>`,
		`<iq type='result' id='di' from='alice@localhost'><query xmlns='http://jabber.org/protocol/disco#info'>{**}</query></iq>`)
	for _, f := range []string{"urn:xmpp:pep-vcard-conversion:0", "jabber:iq:private"} {
		if !strings.Contains(got, `<feature var='`+f+`'/>`) {
			t.Errorf("account disco#info lacks %s: %s", f, got)
		}
	}
}
