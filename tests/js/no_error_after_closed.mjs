// leave() while a promotion's offer waits for its answer: "error" is emitted after "closed".
import { check, clientOptions, joinedReply, onClientMessage, setAnswerDelay, sleep, sockets, tracks } from "./fake_browser.mjs";
const { SfuClient } = await import(process.env.SFU_JS);
setAnswerDelay(5);
onClientMessage((socket, m) => {
  if (m.type === "join") socket.reply(joinedReply(m.id, "bob", "listener"));
  else if (m.type === "offer") {/* the answer is slow */}
  else if (m.type === "leave") { socket.reply({ type: "ok", id: m.id }); socket.drop(1000); }
});
const client = new SfuClient(clientOptions("bob", "listener"));
const log = [];
for (const t of ["closed", "error", "state"]) client.on(t, (v) => log.push(`${t}:${v && (v.code || v.reason || v)}`));
await client.join();
sockets[0].reply({ type: "role_changed", identity: "bob", role: "speaker", by: "mod", renegotiate: true, grants: ["publish", "subscribe"] });
await sleep(30); // the offer is in flight
await client.leave();
await sleep(50);
console.log(log.join(" | "));
const closedAt = log.findIndex((e) => e.startsWith("closed:"));
check(!log.slice(closedAt + 1).some((e) => e.startsWith("error:")), "an error event came after closed");
