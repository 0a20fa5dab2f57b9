#!/usr/bin/env python3
"""Independent HT-SHA-256-* vectors (draft-schmaus-kitten-sasl-ht-09) for
sasl/ht_test.go, computed with Python's hmac module, not with Krill's code.

  initiator-msg = authcid NUL HMAC(token, "Initiator" || cb-data)
  responder-msg = HMAC(token, "Responder" || cb-data)

token is the UTF-8 octets of the token string the server handed out; cb-data
is empty for -NONE. Run: python3 sasl/testdata/ht_vectors.py > sasl/testdata/ht_vectors.json
"""
import base64, hashlib, hmac, json

def b64(b):
    return base64.b64encode(b).decode()

cases = [
    ("none", "HT-SHA-256-NONE", "juliet", "WXZzciBwYmFmdmZnZiBqdmd1IGp2eXFhcmZm", b""),
    ("endp", "HT-SHA-256-ENDP", "juliet", "R3VyIHpiZmcgbnl2aXIgdmYgZ3VyIGp2eXFyZmcu",
     hashlib.sha256(b"not really a certificate").digest()),
    ("expr", "HT-SHA-256-EXPR", "r\u00e9mi", "secret-token:fast-0123456789abcdef",
     bytes(range(32))),
]
out = []
for name, mech, user, token, cb in cases:
    init = hmac.new(token.encode(), b"Initiator" + cb, hashlib.sha256).digest()
    resp = hmac.new(token.encode(), b"Responder" + cb, hashlib.sha256).digest()
    out.append({
        "name": name, "mechanism": mech, "username": user, "token": token,
        "cb_data": b64(cb),
        "initiator": b64(user.encode() + b"\x00" + init),
        "responder": b64(resp),
    })
print(json.dumps(out, indent=2))
