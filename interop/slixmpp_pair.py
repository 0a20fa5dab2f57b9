"""Two slixmpp clients exchange one message through Krill.

Usage: slixmpp_pair.py HOST PORT CAFILE SENDER RECEIVER PASSWORD BODY

Both log in over STARTTLS with slixmpp's default SASL mechanism choice (no
mechanism is forced), the receiver sends its initial presence, then the
sender sends BODY to the receiver's bare JID. Exit status 0 only if the
receiver got exactly BODY; each failure is printed on stderr.
"""

import asyncio
import os
import sys

import slixmpp

host, port, cafile, sender_jid, receiver_jid, password, body = sys.argv[1:8]
loop = asyncio.get_event_loop()
done = loop.create_future()
receiver_ready = loop.create_future()


def fail(why):
    if not done.done():
        done.set_result(why)


class Client(slixmpp.ClientXMPP):
    def __init__(self, jid, role):
        super().__init__(jid, password)
        self.role = role
        self.ca_certs = cafile
        self.add_event_handler("session_start", self.started)
        # failed_auth fires for each mechanism tried; slixmpp then tries the next.
        self.add_event_handler("failed_auth", lambda e: print(f"{role}: a SASL attempt failed: {e}", flush=True))
        self.add_event_handler("failed_all_auth", lambda _: fail(f"{role}: every SASL mechanism failed"))
        self.add_event_handler("stream_error", lambda e: fail(f"{role}: stream error {e['condition']}: {e['text']}"))
        self.add_event_handler("disconnected", lambda _: fail(f"{role}: disconnected before the message arrived"))
        self.add_event_handler("message", self.message)

    async def started(self, _):
        mech = self["feature_mechanisms"].mech
        print(f"{self.role} {self.boundjid} logged in with {mech.name if mech else '?'}", flush=True)
        if self.role == "receiver":
            self.send_presence()
            # The presence is written before the sender is told to go.
            receiver_ready.set_result(True)
        else:
            await receiver_ready
            self.send_message(mto=receiver_jid, mbody=body, mtype="chat")

    def message(self, msg):
        if self.role != "receiver" or msg["type"] not in ("chat", "normal"):
            return
        got = msg["body"]
        print(f"receiver got {got!r} from {msg['from']}", flush=True)
        if got == body and msg["from"].bare == sender_jid:
            if not done.done():
                done.set_result(None)
        else:
            fail(f"receiver: got {got!r} from {msg['from']}, want {body!r} from {sender_jid}")


print(f"slixmpp {slixmpp.__version__}", flush=True)
receiver = Client(receiver_jid, "receiver")
sender = Client(sender_jid, "sender")
receiver.connect((host, int(port)))
sender.connect((host, int(port)))
result = loop.run_until_complete(asyncio.wait_for(done, 30))
if result is not None:
    print(result, file=sys.stderr, flush=True)
print("ok" if result is None else "failed", flush=True)
# os._exit: tearing down slixmpp's connections at interpreter exit can crash
# CPython 3.11 (seen as SIGSEGV), which would hide the result.
os._exit(0 if result is None else 1)
