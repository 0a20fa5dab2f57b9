"""slixmpp's XEP-0313 client pages through a Krill room's archive.

Usage: slixmpp_mucmam.py HOST PORT CAFILE OWNER MEMBER PASSWORD ROOM N

Both log in over STARTTLS with PLAIN (see slixmpp_mam.py). The owner
joins ROOM with slixmpp's XEP-0045 plugin, which creates it locked, and
submits the room configuration form with muc#roomconfig_enablearchiving
on; the member joins, and the owner sends N groupchat messages "muc 1"
... "muc N". The member checks that each copy carries an XEP-0359
stanza-id by the room's JID, then pages through the room's archive with
slixmpp's own MAM iterator (queries to the room JID, 2 messages a page)
and checks that it gets the N messages in order, from ROOM/owner, each
under the archive ID its stanza-id named. Exit status 0 only if all of
that holds; each failure is printed on stderr.
"""

import asyncio
import os
import sys
import xml.etree.ElementTree as ET

import slixmpp

host, port, cafile, owner_jid, member_jid, password, room, n = sys.argv[1:9]
n = int(n)
bodies = [f"muc {i}" for i in range(1, n + 1)]
loop = asyncio.get_event_loop()
done = loop.create_future()
room_ready = loop.create_future()
member_joined = loop.create_future()
PAGE = 2

CONFIG = (
    "<query xmlns='http://jabber.org/protocol/muc#owner'><x xmlns='jabber:x:data' type='submit'>"
    "<field var='FORM_TYPE'><value>http://jabber.org/protocol/muc#roomconfig</value></field>"
    "<field var='muc#roomconfig_enablearchiving'><value>1</value></field></x></query>"
)


def fail(why):
    if not done.done():
        done.set_result(why)


class Client(slixmpp.ClientXMPP):
    def __init__(self, jid, role):
        super().__init__(jid, password, sasl_mech="PLAIN")
        self.role = role
        self.ca_certs = cafile
        for p in ("xep_0045", "xep_0059", "xep_0297", "xep_0313", "xep_0359"):
            self.register_plugin(p)
        self.got = []  # (body, stanza-id) as received
        self.add_event_handler("session_start", self.started)
        self.add_event_handler("failed_all_auth", lambda _: fail(f"{role}: every SASL mechanism failed"))
        self.add_event_handler("stream_error", lambda e: fail(f"{role}: stream error {e['condition']}: {e['text']}"))
        self.add_event_handler("groupchat_message", self.groupchat)

    async def started(self, _):
        try:
            if self.role == "owner":
                await self["xep_0045"].join_muc_wait(slixmpp.JID(room), "owner", maxstanzas=0, timeout=20)
                iq = self.make_iq_set(ito=room)
                iq.append(ET.fromstring(CONFIG))
                await iq.send(timeout=20)
                print(f"owner configured {room} with archiving", flush=True)
                room_ready.set_result(True)
                await member_joined
                for body in bodies:
                    self.send_message(mto=room, mbody=body, mtype="groupchat")
            else:
                await room_ready
                await self["xep_0045"].join_muc_wait(slixmpp.JID(room), "member", maxstanzas=0, timeout=20)
                print(f"member joined {room}", flush=True)
                member_joined.set_result(True)
        except Exception as e:  # noqa: BLE001 - report whatever went wrong
            fail(f"{self.role}: {type(e).__name__}: {e}")

    def groupchat(self, msg):
        if self.role != "member" or not msg["body"]:
            return
        sid = msg["stanza_id"]
        if sid["by"] != slixmpp.JID(room) or not sid["id"]:
            fail(f"member: {msg['body']!r} has no stanza-id by {room}: {msg}")
            return
        self.got.append((msg["body"], sid["id"]))
        print(f"member got {msg['body']!r} with stanza-id {sid['id']}", flush=True)
        if len(self.got) == n:
            asyncio.ensure_future(self.page_through())

    async def page_through(self):
        try:
            if [b for b, _ in self.got] != bodies:
                return fail(f"member: got {self.got}, want {bodies} in order")
            pages = []
            it = self["xep_0313"].retrieve(jid=slixmpp.JID(room), iterator=True, rsm={"max": PAGE})
            async for page in it:
                results = page["mam"]["results"]
                rows = []
                for m in results:
                    fwd = m["mam_result"]["forwarded"]["stanza"]
                    if fwd["from"] != slixmpp.JID(f"{room}/owner") or fwd["type"] != "groupchat":
                        return fail(f"member: archived message from {fwd['from']} type {fwd['type']}")
                    rows.append((fwd["body"], m["mam_result"]["id"]))
                pages.append(rows)
                print(f"page: {rows}", flush=True)
                if len(pages) > n + 2:
                    return fail("member: the iterator does not end")
            flat = [x for p in pages for x in p]
            if flat != self.got:
                return fail(f"member: archive {flat}, want {self.got}")
            print(f"room archive paged: {len(pages)} pages", flush=True)
            if not done.done():
                done.set_result(None)
        except Exception as e:  # noqa: BLE001 - report whatever went wrong
            fail(f"member: {type(e).__name__}: {e}")


print(f"slixmpp {slixmpp.__version__}", flush=True)
owner = Client(owner_jid, "owner")
member = Client(member_jid, "member")
owner.connect((host, int(port)))
member.connect((host, int(port)))
try:
    result = loop.run_until_complete(asyncio.wait_for(done, 40))
except asyncio.TimeoutError:
    result = "timed out"
if result is not None:
    print(result, file=sys.stderr, flush=True)
print("ok" if result is None else "failed", flush=True)
os._exit(0 if result is None else 1)
