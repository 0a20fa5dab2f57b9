package offline

import "testing"

func TestWorthy(t *testing.T) {
	tests := []struct {
		name, msg string
		want      bool
	}{
		{"body", `<message to='b@localhost' type='chat'><body>hi</body></message>`, true},
		{"body and chat state", `<message to='b@localhost' type='chat'><active xmlns='http://jabber.org/protocol/chatstates'/><body>hi</body></message>`, true},
		// profanity's typing notification.
		{"chat state only", `<message id='1' to='b@localhost' type='chat'><composing xmlns='http://jabber.org/protocol/chatstates'/></message>`, false},
		{"receipt only", `<message id='2' to='b@localhost'><received xmlns='urn:xmpp:receipts' id='x'/></message>`, false},
		{"marker only", `<message id='3' to='b@localhost'><displayed xmlns='urn:xmpp:chat-markers:0' id='x'/></message>`, false},
		{"empty", `<message to='b@localhost'/>`, false},
		{"text only", `<message to='b@localhost'>hi</message>`, false},
		{"body in another namespace", `<message to='b@localhost'><body xmlns='urn:example'>x</body></message>`, false},
		{"body nested deeper", `<message to='b@localhost'><x xmlns='urn:example'><body>x</body></x></message>`, false},
		{"omemo", `<message to='b@localhost' type='chat'><encrypted xmlns='eu.siacs.conversations.axolotl'><header sid='1'/></encrypted><store xmlns='urn:xmpp:hints'/></message>`, true},
		{"omemo 2", `<message to='b@localhost' type='chat'><encrypted xmlns='urn:xmpp:omemo:2'><header sid='1'/></encrypted></message>`, true},
		{"legacy pgp", `<message to='b@localhost'><x xmlns='jabber:x:encrypted'>AAAA</x></message>`, true},
		{"openpgp for xmpp", `<message to='b@localhost'><openpgp xmlns='urn:xmpp:openpgp:0'>AAAA</openpgp></message>`, true},
		{"store hint", `<message to='b@localhost'><received xmlns='urn:xmpp:receipts' id='x'/><store xmlns='urn:xmpp:hints'/></message>`, true},
		{"no-store hint", `<message to='b@localhost'><body>otr</body><no-store xmlns='urn:xmpp:hints'/></message>`, false},
		{"no-permanent-store hint", `<message to='b@localhost'><no-permanent-store xmlns='urn:xmpp:hints'/><body>x</body></message>`, false},
		{"prefixed body", `<message to='b@localhost'><c:body xmlns:c='jabber:client'>x</c:body></message>`, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := worthy([]byte(tt.msg)); got != tt.want {
				t.Fatalf("worthy(%s) = %v, want %v", tt.msg, got, tt.want)
			}
		})
	}
}
