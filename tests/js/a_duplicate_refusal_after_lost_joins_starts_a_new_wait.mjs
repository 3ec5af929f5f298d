// The `duplicateIdentityTimeout` counts an unbroken run of `duplicate_identity`
// refusals. A reconnect refused once as a duplicate, then cut off for a while
// (joins whose `joined` is lost leave members of their own on the server),
// then refused as a duplicate of such a member, waits for that member's
// heartbeat to lapse again: it does not end at once because the first
// refusal is older than the timeout.
import { check, clientOptions, joinedReply, onClientMessage, setAnswerDelay, sleep, sockets } from "./fake_browser.mjs";
const { SfuClient } = await import(process.env.SFU_JS);
console.warn = () => {};
setAnswerDelay(5);
let plan = null; // after the first join: what each reconnect's join gets
let lostUntil = 0;
onClientMessage((socket, m) => {
  if (m.type !== "join") return socket.reply({ type: "ok", id: m.id });
  if (plan === null) return socket.reply(joinedReply(m.id, "alice", "speaker"));
  const refuse = () =>
    socket.reply({ type: "error", id: m.id, code: "duplicate_identity", message: "alice is already in the room" });
  if (plan === "first duplicate") {
    plan = "lost";
    lostUntil = performance.now() + 450;
    refuse();
  } else if (plan === "lost") {
    // The join reaches the server (a member is made) and the reply is lost.
    if (performance.now() >= lostUntil) plan = "second duplicate";
    socket.drop(1006);
  } else if (plan === "second duplicate") {
    plan = "accept";
    refuse();
  } else socket.reply(joinedReply(m.id, "alice", "speaker"));
});
const client = new SfuClient(
  clientOptions("alice", "speaker", { backoffInitial: 10, backoffMax: 20, duplicateIdentityTimeout: 300 }),
);
const closed = [];
client.on("closed", (detail) => closed.push(detail.reason));
await client.join();
plan = "first duplicate";
sockets[0].drop(1006);
await sleep(900);
check(plan === "accept", `the plan did not run through: ${plan}`);
check(closed.length === 0, `ended after one duplicate refusal past the lost joins: ${closed}`);
check(client.state === "joined", `not back: ${client.state}`);
await client.leave();
