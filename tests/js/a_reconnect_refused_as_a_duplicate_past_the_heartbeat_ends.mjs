// A reconnect the server refuses with `duplicate_identity` is tried again
// while the old member may still be waiting for its heartbeat to lapse; one
// refused for longer than `duplicateIdentityTimeout` (another live client of
// the same identity holds the seat) ends with that error and releases the
// microphone, instead of retrying for ever with it open.
import { check, clientOptions, joinedReply, onClientMessage, setAnswerDelay, sleep, sockets, tracks } from "./fake_browser.mjs";
const { SfuClient } = await import(process.env.SFU_JS);
console.warn = () => {};
setAnswerDelay(5);
let joins = 0;
let refuseFrom = Infinity; // joins from this one on are refused as duplicates
onClientMessage((socket, m) => {
  if (m.type !== "join") socket.reply({ type: "ok", id: m.id });
  else if (++joins >= refuseFrom) {
    socket.reply({ type: "error", id: m.id, code: "duplicate_identity", message: "alice is already in the room" });
  } else socket.reply(joinedReply(m.id, "alice", "speaker"));
});
const client = new SfuClient(
  clientOptions("alice", "speaker", { backoffInitial: 10, backoffMax: 20, duplicateIdentityTimeout: 400 }),
);
const errors = [];
const closed = [];
client.on("error", (e) => errors.push(e.code));
client.on("closed", (detail) => closed.push(detail.reason));
await client.join();

// Refused twice, then let in: a heartbeat that lapsed in time is waited out.
refuseFrom = joins + 1;
setTimeout(() => (refuseFrom = Infinity), 60);
sockets[0].drop(1006);
await sleep(300);
check(client.state === "joined", `not back after two refusals: ${client.state}`);
check(joins >= 3 && errors.length === 0, `joins ${joins}, errors ${errors}`);

// Refused for longer than the timeout: the session ends, saying why.
refuseFrom = joins + 1;
const before = joins;
sockets[sockets.length - 1].drop(1006);
await sleep(250);
check(client.state === "reconnecting" && joins > before + 2, `gave up too soon: ${client.state} ${joins - before}`);
await sleep(600);
check(client.state === "closed", `still ${client.state} after ${joins - before} refused joins`);
check(closed.join() === "duplicate_identity", `closed: ${closed}`);
check(errors.join() === "duplicate_identity", `error events: ${errors}`);
check(tracks.every((t) => t.readyState === "ended"), "a microphone track is still open");
const refused = joins;
await sleep(200);
check(joins === refused, "joins went on after the session ended");
await client.leave();
