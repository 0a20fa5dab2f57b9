// XEP-0484 FAST with xmpp.js (@xmpp/client, its @xmpp/sasl2 and
// @xmpp/sasl-ht-sha-256-none): the first connection logs in with the
// password and asks for a token (xmpp.js does so whenever it holds none),
// which xmpp.js hands to fast.saveToken; the second connection, as the
// same device (user-agent id) and with a wrong password, can only log in
// with that token (xmpp.js falls back to the password when the token
// fails, which would then be refused).
//
// Usage: node fast.mjs SERVICE DOMAIN JID PASSWORD
//
// Exit status 0 only if both connections came online, the second one
// with the token.
import { readFileSync } from "node:fs";

import { client, xml } from "@xmpp/client";

const [service, domain, jid, password] = process.argv.slice(2);
const pkg = JSON.parse(readFileSync(new URL("./node_modules/@xmpp/client/package.json", import.meta.url)));
console.log(`@xmpp/client ${pkg.version}, node ${process.version}`);

let current;
function finish(code, why) {
  if (why) console.error(why);
  console.log(code === 0 ? "ok" : "failed");
  current?.stop().catch(() => {});
  process.exit(code);
}
setTimeout(() => finish(1, "timeout: not done within 30s"), 30000).unref();

// One device: the token is bound to its user-agent id.
const id = globalThis.crypto.randomUUID();
const username = jid.split("@")[0];

function start(pw) {
  const c = client({ service, domain, username, password: pw, resource: "fast", userAgent: xml("user-agent", { id }) });
  c.on("error", (err) => console.error(`${err.condition || ""} ${err.message}`));
  current = c;
  return c;
}

let token;
const first = start(password);
first.fast.saveToken = async (t) => {
  token = t;
};
const a1 = await first.start();
if (!token) finish(1, "no token after the password login");
console.log(`first login ${a1} with the password; token for ${token.mechanism} until ${token.expiry}`);
await first.stop();

const second = start("not the password");
second.fast.fetchToken = async () => token;
second.fast.saveToken = async (t) => {
  token = t;
};
const a2 = await second.start();
console.log(`second login ${a2} with the token`);
finish(0);
