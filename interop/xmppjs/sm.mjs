// XEP-0198 resumption with xmpp.js (@xmpp/client and its
// stream-management): the receiver enables stream management, its socket
// is destroyed (no stream close), the sender sends COUNT messages to the
// receiver's full JID meanwhile, and xmpp.js reconnects and resumes.
//
// Usage: node sm.mjs SERVICE DOMAIN SENDER RECEIVER PASSWORD COUNT
//
// Exit status 0 only if the session was resumed (not re-bound) and the
// receiver got each message exactly once, in order.
import { readFileSync } from "node:fs";

import { client, xml } from "@xmpp/client";

const [service, domain, senderJID, receiverJID, password, countArg] = process.argv.slice(2);
const count = Number(countArg);
const pkg = JSON.parse(readFileSync(new URL("./node_modules/@xmpp/client/package.json", import.meta.url)));
console.log(`@xmpp/client ${pkg.version}, node ${process.version}`);

const clients = [];
function finish(code, why) {
  if (why) console.error(why);
  console.log(code === 0 ? "ok" : "failed");
  for (const c of clients) c.stop().catch(() => {});
  process.exit(code);
}
setTimeout(() => finish(1, "timeout: not done within 30s"), 30000).unref();

function start(jid, role) {
  const c = client({ service, domain, username: jid.split("@")[0], password, resource: role });
  clients.push(c);
  c.on("error", (err) => console.error(`${role}: ${err.condition || ""} ${err.message}`));
  return c;
}

const receiver = start(receiverJID, "receiver");
const sender = start(senderJID, "sender");
const got = [];
let resumed = false;
let cut = false;
let address = "";

receiver.streamManagement.on("resumed", () => {
  resumed = true;
  console.log(`receiver resumed (h=${receiver.streamManagement.inbound})`);
});

receiver.on("stanza", async (st) => {
  if (!st.is("message")) return;
  const body = st.getChildText("body");
  const delayed = st.getChild("delay", "urn:xmpp:delay") ? " (delayed)" : "";
  console.log(`receiver got ${JSON.stringify(body)}${delayed}`);
  got.push(body);
  if (got.length < count) return;
  // Anything sent twice would follow in the same burst: a round trip to
  // the server first.
  await receiver.iqCaller.request(xml("iq", { type: "get", to: domain }, xml("ping", "urn:xmpp:ping")));
  const want = Array.from({ length: count }, (_, i) => `message ${i + 1}`);
  // Since FAST (XEP-0484), xmpp.js reconnects with its token, and its
  // HT-SHA-256-NONE checks the server's <additional-data/> with an awaited
  // crypto.subtle.verify before it handles <resumed/>, while the resent
  // stanzas that follow in the same record are dispatched at once: the
  // "resumed" event may come after them and after this round trip. Wait
  // for it (bounded); a session re-bound instead never emits it.
  for (let i = 0; i < 250 && !resumed; i++) await new Promise((r) => setTimeout(r, 20));
  if (!resumed) finish(1, "the receiver was not resumed");
  if (JSON.stringify(got) !== JSON.stringify(want)) finish(1, `receiver got ${JSON.stringify(got)}, want ${JSON.stringify(want)}`);
  console.log(`receiver got each of ${count} exactly once, in order`);
  finish(0);
});

receiver.on("online", async (a) => {
  if (cut) return; // online again after the resumption
  address = a.toString();
  // "online" comes before <enabled/> is answered: wait for it (bounded).
  for (let i = 0; i < 250 && !receiver.streamManagement.enabled; i++) await new Promise((r) => setTimeout(r, 20));
  console.log(`receiver ${address} online, stream management id ${receiver.streamManagement.id ? "set" : "missing"}`);
  if (!receiver.streamManagement.id) finish(1, "stream management was not enabled with resumption");
  sender.on("online", async (s) => {
    console.log(`sender ${s} online; cutting the receiver's connection`);
    cut = true;
    // The TLS wrapper's Node socket: destroyed, no </stream:stream>.
    (receiver.socket.socket ?? receiver.socket).destroy();
    for (let i = 1; i <= count; i++) {
      await sender.send(xml("message", { to: address, type: "chat" }, xml("body", {}, `message ${i}`)));
    }
  });
  await sender.start();
});

await receiver.start();
