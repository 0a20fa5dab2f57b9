"""Log in with slixmpp's default mechanism choice and report the bound JID.

Usage: python3 slixmpp_login.py JID PASSWORD HOST PORT [--debug]

Connects over STARTTLS (slixmpp's default), with certificate verification
off because the test server uses a self-signed development certificate.
Prints "BOUND <full JID>" and exits 0 once a resource is bound; exits 1 when
every mechanism failed or the stream closed first, 2 on timeout. With
--debug, slixmpp's own log (every byte it sends and receives) goes to stderr.
"""
import asyncio
import logging
import ssl
import sys

import slixmpp


class Login(slixmpp.ClientXMPP):
    def __init__(self, jid, password):
        super().__init__(jid, password)
        # A self-signed development certificate: trust it without checking.
        self.ssl_context.check_hostname = False
        self.ssl_context.verify_mode = ssl.CERT_NONE
        self.result = 1
        self.add_event_handler("session_bind", self.on_bind)
        self.add_event_handler("failed_all_auth", self.on_failed)
        self.add_event_handler("failed_auth", self.on_failed_auth)
        self.add_event_handler("disconnected", self.on_disconnected)

    def on_bind(self, jid):
        print("BOUND", jid, flush=True)
        self.result = 0
        self.disconnect()

    def on_failed_auth(self, stanza):
        print("FAILED", stanza["condition"], flush=True)

    def on_failed(self, _):
        print("FAILED ALL", flush=True)

    def on_disconnected(self, _):
        self.loop.stop()


def main():
    jid, password, host, port = sys.argv[1:5]
    if "--debug" in sys.argv[5:]:
        logging.basicConfig(level=logging.DEBUG, stream=sys.stderr)
    print("SLIXMPP", slixmpp.__version__, flush=True)
    xmpp = Login(jid, password)
    xmpp.connect(address=(host, int(port)))
    xmpp.loop.call_later(20, lambda: (print("TIMEOUT", flush=True), setattr(xmpp, "result", 2), xmpp.loop.stop()))
    xmpp.loop.run_forever()
    sys.exit(xmpp.result)


if __name__ == "__main__":
    main()
