"""OMEMO device list through Krill's PEP, between two slixmpp clients.

Usage: slixmpp_pep.py HOST PORT CAFILE OWNER CONTACT PASSWORD DEVICE

CONTACT announces interest in the legacy OMEMO device list
(eu.siacs.conversations.axolotl.devicelist+notify in its XEP-0115 caps) and
subscribes to OWNER's presence; OWNER approves (slixmpp's default), then
publishes its device list with the publish-options form OMEMO clients send
(pubsub#access_model open, XEP-0060 publish-options). CONTACT must get the
notification (XEP-0163: from caps, without a pubsub subscription) and then
fetch the same list with a pubsub items request. Exit status 0 only if both
carry DEVICE; each failure is printed on stderr.
"""

import asyncio
import os
import sys
import xml.etree.ElementTree as ET

import slixmpp

host, port, cafile, owner_jid, contact_jid, password, device = sys.argv[1:8]
NODE = "eu.siacs.conversations.axolotl.devicelist"
NS = "eu.siacs.conversations.axolotl"
loop = asyncio.get_event_loop()
done = loop.create_future()
contact_ready = loop.create_future()
owner_ready = loop.create_future()


def fail(why):
    if not done.done():
        done.set_result(why)


def devices(payload):
    return [d.get("id") for d in payload.iter("{%s}device" % NS)]


class Client(slixmpp.ClientXMPP):
    def __init__(self, jid, role):
        super().__init__(jid, password)
        self.role = role
        self.ca_certs = cafile
        for p in ("xep_0030", "xep_0004", "xep_0060", "xep_0115", "xep_0163"):
            self.register_plugin(p)
        self.add_event_handler("session_start", self.started)
        self.add_event_handler("failed_all_auth", lambda _: fail(f"{role}: every SASL mechanism failed"))
        self.add_event_handler("stream_error", lambda e: fail(f"{role}: stream error {e['condition']}: {e['text']}"))
        self.add_event_handler("disconnected", lambda _: fail(f"{role}: disconnected"))
        self.add_event_handler("pubsub_publish", self.published)
        self.add_event_handler("presence_available", self.available)
        self.notified = False

    async def started(self, _):
        print(f"{self.role} {self.boundjid} logged in", flush=True)
        await self.get_roster()
        if self.role == "contact":
            self["xep_0030"].add_feature(NODE + "+notify")
            await self["xep_0115"].update_caps(broadcast=False)
            self.send_presence()
            await owner_ready
            self.send_presence_subscription(pto=owner_jid)
        else:
            self.send_presence()
            owner_ready.set_result(True)
            await contact_ready
            form = self["xep_0004"].make_form("submit")
            form.add_field(var="FORM_TYPE", ftype="hidden", value="http://jabber.org/protocol/pubsub#publish-options")
            form.add_field(var="pubsub#access_model", value="open")
            payload = ET.fromstring(f"<list xmlns='{NS}'><device id='{device}'/></list>")
            try:
                await self["xep_0060"].publish(self.boundjid.bare, NODE, id="current", payload=payload, options=form, timeout=10)
                print("owner published", flush=True)
            except Exception as e:  # noqa: BLE001 - any failure is the result
                fail(f"owner: publish failed: {e!r}")

    def available(self, pres):
        # The contact sees the owner's presence once subscribed.
        if self.role == "contact" and pres["from"].bare == owner_jid and not contact_ready.done():
            contact_ready.set_result(True)

    def published(self, msg):
        if self.role != "contact":
            return
        items = msg["pubsub_event"]["items"]
        got = devices(items["item"]["payload"]) if items["node"] == NODE else []
        print(f"contact notified of {items['node']} from {msg['from']}: {got}", flush=True)
        if msg["from"].bare != owner_jid or got != [device]:
            fail(f"contact: notification {got} from {msg['from']}, want [{device}] from {owner_jid}")
            return
        if not self.notified:
            self.notified = True
            asyncio.ensure_future(self.fetch())

    async def fetch(self):
        try:
            res = await self["xep_0060"].get_items(owner_jid, NODE, timeout=10)
        except Exception as e:  # noqa: BLE001
            fail(f"contact: fetch failed: {e!r}")
            return
        got = [devices(it["payload"]) for it in res["pubsub"]["items"]]
        print(f"contact fetched {got}", flush=True)
        if got == [[device]]:
            if not done.done():
                done.set_result(None)
        else:
            fail(f"contact: fetched {got}, want [[{device}]]")


print(f"slixmpp {slixmpp.__version__}", flush=True)
owner = Client(owner_jid, "owner")
contact = Client(contact_jid, "contact")
owner.connect((host, int(port)))
contact.connect((host, int(port)))
result = loop.run_until_complete(asyncio.wait_for(done, 30))
if result is not None:
    print(result, file=sys.stderr, flush=True)
print("ok" if result is None else "failed", flush=True)
os._exit(0 if result is None else 1)
