"""slixmpp's XEP-0313 client pages through a Krill message archive.

Usage: slixmpp_mam.py HOST PORT CAFILE SENDER RECEIVER PASSWORD N

Both log in over STARTTLS with PLAIN: slixmpp's default choice meets a
known issue (interop_test.go), and its SCRAM without -PLUS sends the gs2
flag 'y' to a server that offers -PLUS, which RFC 5802 has the server
refuse as a downgrade. The receiver sends its initial
presence; the sender sends N chat messages "mam 1" ... "mam N" to the
receiver's bare JID. The receiver checks that each carries an XEP-0359
stanza-id by its bare JID, then pages through its archive with slixmpp's
own MAM iterator (XEP-0313 with XEP-0059 RSM, 3 messages a page), forwards
and then backwards, and checks that it gets the N messages in order, each
under the archive ID its stanza-id named, and the pages it expects. Exit
status 0 only if all of that holds; each failure is printed on stderr.
"""

import asyncio
import os
import sys

import slixmpp

host, port, cafile, sender_jid, receiver_jid, password, n = sys.argv[1:8]
n = int(n)
bodies = [f"mam {i}" for i in range(1, n + 1)]
loop = asyncio.get_event_loop()
done = loop.create_future()
receiver_ready = loop.create_future()
PAGE = 3


def fail(why):
    if not done.done():
        done.set_result(why)


class Client(slixmpp.ClientXMPP):
    def __init__(self, jid, role):
        super().__init__(jid, password, sasl_mech="PLAIN")
        self.role = role
        self.ca_certs = cafile
        self.register_plugin("xep_0059")
        self.register_plugin("xep_0297")
        self.register_plugin("xep_0313")
        self.register_plugin("xep_0359")
        self.got = []  # (body, stanza-id) as received
        self.add_event_handler("session_start", self.started)
        self.add_event_handler("failed_all_auth", lambda _: fail(f"{role}: every SASL mechanism failed"))
        self.add_event_handler("stream_error", lambda e: fail(f"{role}: stream error {e['condition']}: {e['text']}"))
        self.add_event_handler("message", self.message)

    async def started(self, _):
        print(f"{self.role} {self.boundjid} logged in", flush=True)
        if self.role == "receiver":
            self.send_presence()
            # A round trip: once answered, the presence before it has been
            # handled, and the messages find an available resource.
            await self.get_roster()
            receiver_ready.set_result(True)
        else:
            await receiver_ready
            for body in bodies:
                self.send_message(mto=receiver_jid, mbody=body, mtype="chat")

    def message(self, msg):
        if self.role != "receiver" or msg["type"] != "chat" or not msg["body"]:
            return
        sid = msg["stanza_id"]
        if sid["by"] != receiver_jid or not sid["id"]:
            fail(f"receiver: {msg['body']!r} has no stanza-id by {receiver_jid}: {msg}")
            return
        self.got.append((msg["body"], sid["id"]))
        print(f"receiver got {msg['body']!r} with stanza-id {sid['id']}", flush=True)
        if len(self.got) == n:
            asyncio.ensure_future(self.page_through())

    async def pages(self, reverse):
        """The archive as slixmpp's iterator pages it: a list of pages,
        each a list of (body, result id)."""
        out = []
        it = self["xep_0313"].retrieve(jid=slixmpp.JID(receiver_jid), with_jid=slixmpp.JID(sender_jid),
                                       iterator=True, reverse=reverse, rsm={"max": PAGE})
        async for page in it:
            results = page["mam"]["results"]
            out.append([(m["mam_result"]["forwarded"]["stanza"]["body"], m["mam_result"]["id"]) for m in results])
            fin = page["mam_fin"]
            print(f"page ({'backwards' if reverse else 'forwards'}): {out[-1]} first={fin['rsm']['first']} "
                  f"last={fin['rsm']['last']} count={fin['rsm']['count']}", flush=True)
            if len(out) > n + 2:
                raise RuntimeError("the iterator does not end")
        return out

    async def page_through(self):
        try:
            if [b for b, _ in self.got] != bodies:
                return fail(f"receiver: got {self.got}, want {bodies} in order")
            want = self.got
            fwd = await self.pages(False)
            flat = [x for p in fwd for x in p]
            if flat != want:
                return fail(f"forwards: archive {flat}, want {want}")
            sizes = [len(p) for p in fwd]
            want_sizes = [PAGE] * (n // PAGE) + ([n % PAGE] if n % PAGE else [])
            if sizes != want_sizes:
                return fail(f"forwards: pages of {sizes}, want {want_sizes}")
            back = await self.pages(True)
            flat = [x for p in reversed(back) for x in p]
            if flat != want:
                return fail(f"backwards: archive {flat}, want {want}")
            # Backwards, the last page is full and the short one is first.
            if [len(p) for p in back] != want_sizes:
                return fail(f"backwards: pages of {[len(p) for p in back]}, want {want_sizes}")
            print(f"archive paged: {len(fwd)} pages forwards, {len(back)} backwards", flush=True)
            if not done.done():
                done.set_result(None)
        except Exception as e:  # noqa: BLE001 - report whatever went wrong
            fail(f"receiver: {type(e).__name__}: {e}")


print(f"slixmpp {slixmpp.__version__}", flush=True)
receiver = Client(receiver_jid, "receiver")
sender = Client(sender_jid, "sender")
receiver.connect((host, int(port)))
sender.connect((host, int(port)))
result = loop.run_until_complete(asyncio.wait_for(done, 30))
if result is not None:
    print(result, file=sys.stderr, flush=True)
print("ok" if result is None else "failed", flush=True)
os._exit(0 if result is None else 1)
