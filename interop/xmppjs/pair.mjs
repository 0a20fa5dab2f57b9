// Two xmpp.js (@xmpp/client) clients exchange one message through Krill.
//
// Usage: node pair.mjs SERVICE DOMAIN SENDER RECEIVER PASSWORD BODY
//
// SERVICE is xmpp://HOST:PORT (TCP, STARTTLS) or xmpps://HOST:PORT (direct
// TLS). The development certificate is trusted through NODE_EXTRA_CA_CERTS.
// The receiver sends its initial presence, then the sender sends BODY to the
// receiver's bare JID. Exit status 0 only if the receiver got exactly BODY.
import { readFileSync } from "node:fs";

import { client, xml } from "@xmpp/client";

const [service, domain, senderJID, receiverJID, password, body] = process.argv.slice(2);
const pkg = JSON.parse(readFileSync(new URL("./node_modules/@xmpp/client/package.json", import.meta.url)));
console.log(`@xmpp/client ${pkg.version}, node ${process.version}`);

const clients = [];
function finish(code, why) {
  if (why) console.error(why);
  console.log(code === 0 ? "ok" : "failed");
  for (const c of clients) c.stop().catch(() => {});
  process.exit(code);
}
setTimeout(() => finish(1, "timeout: no message within 30s"), 30000).unref();

function start(jid, role) {
  const c = client({ service, domain, username: jid.split("@")[0], password, resource: role });
  clients.push(c);
  c.on("error", (err) => finish(1, `${role}: ${err.condition || ""} ${err.message}`));
  return c;
}

const receiver = start(receiverJID, "receiver");
const sender = start(senderJID, "sender");

receiver.on("stanza", (st) => {
  if (!st.is("message")) return;
  const got = st.getChildText("body");
  const from = st.attrs.from || "";
  console.log(`receiver got ${JSON.stringify(got)} from ${from}`);
  if (got === body && from.split("/")[0] === senderJID) finish(0);
  finish(1, `receiver: got ${JSON.stringify(got)} from ${from}, want ${JSON.stringify(body)} from ${senderJID}`);
});

receiver.on("online", async (address) => {
  console.log(`receiver ${address} online`);
  await receiver.send(xml("presence"));
  // The presence is written before the sender logs in.
  sender.on("online", async (a) => {
    console.log(`sender ${a} online`);
    await sender.send(xml("message", { to: receiverJID, type: "chat" }, xml("body", {}, body)));
  });
  await sender.start();
});

await receiver.start();
