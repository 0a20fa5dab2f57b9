"""A slixmpp client joins a Krill multi-user chat room with slixmpp's own
XEP-0045 plugin, sends a groupchat message and waits for one from another
occupant.

Usage: slixmpp_muc.py HOST PORT CAFILE JID PASSWORD ROOM NICK SAY EXPECT_NICK EXPECT_BODY

It logs in over STARTTLS with PLAIN (slixmpp 1.8.3's default order tries
SCRAM-*-PLUS with tls-unique first, issue 9 defect 7), joins ROOM as NICK
with join_muc_wait (which waits for its own presence, status 110), sends
SAY to the room, and exits 0 once a groupchat message EXPECT_BODY from
ROOM/EXPECT_NICK arrives; each failure is printed on stderr.
"""

import asyncio
import sys

import slixmpp

host, port, cafile, jid, password, room, nick, say, expect_nick, expect_body = sys.argv[1:11]
loop = asyncio.get_event_loop()
done = loop.create_future()


def fail(why):
    if not done.done():
        done.set_result(why)


class Client(slixmpp.ClientXMPP):
    def __init__(self):
        super().__init__(jid, password, sasl_mech="PLAIN")
        self.ca_certs = cafile
        self.register_plugin("xep_0045")
        self.add_event_handler("session_start", self.started)
        self.add_event_handler("stream_error", lambda e: fail(f"stream error {e['condition']}: {e['text']}"))
        self.add_event_handler("disconnected", lambda _: fail("disconnected before the message arrived"))
        self.add_event_handler("groupchat_message", self.groupchat)

    async def started(self, _):
        try:
            result = await self["xep_0045"].join_muc_wait(slixmpp.JID(room), nick, maxstanzas=0, timeout=30)
        except Exception as e:  # a presence error or a timeout
            fail(f"join failed: {e!r}")
            return
        print(f"joined {room} as {nick}; occupants {sorted(self['xep_0045'].get_roster(room))}", flush=True)
        self.send_message(mto=room, mbody=say, mtype="groupchat")

    def groupchat(self, msg):
        print(f"got {msg['body']!r} from {msg['from']}", flush=True)
        if msg["from"] == slixmpp.JID(f"{room}/{expect_nick}") and msg["body"] == expect_body:
            if not done.done():
                done.set_result(None)


c = Client()
c.connect((host, int(port)))
try:
    why = loop.run_until_complete(asyncio.wait_for(done, 45))
except asyncio.TimeoutError:
    why = "timed out"
c.disconnect()
if why:
    print(why, file=sys.stderr)
    sys.exit(1)
print("ok", flush=True)
