// A reconnect's join carries the resume_key of the last `joined` (so the
// server may replace the member of a half-open connection at once); a
// refused reconnect keeps it for the next try; a page's own join() sends none.
import { check, clientOptions, joinedReply, onClientMessage, sleep, sockets } from "./fake_browser.mjs";

const { SfuClient } = await import(process.env.SFU_JS);

const joins = []; // the `resume` of each join the server got
let keys = 0;
let refuse = 0; // joins still to refuse with duplicate_identity
onClientMessage((socket, message) => {
  if (message.type !== "join") return socket.reply({ type: "ok", id: message.id });
  joins.push(message.resume);
  if (refuse > 0) {
    refuse -= 1;
    socket.reply({ type: "error", id: message.id, code: "duplicate_identity", message: "already in" });
    return;
  }
  keys += 1;
  socket.reply(joinedReply(message.id, "alice", "listener", { resume_key: `key${keys}` }));
});
const client = new SfuClient(clientOptions("alice", "listener", { backoffInitial: 10, backoffMax: 20 }));
const waitJoined = async (count) => {
  for (let i = 0; i < 200 && joins.length < count; i++) await sleep(10);
  for (let i = 0; i < 200 && client.state !== "joined"; i++) await sleep(10);
  check(client.state === "joined", `state ${client.state} after ${joins.length} joins`);
};

await client.join();
check(joins.length === 1 && joins[0] === undefined, `the page's join sent resume ${joins[0]}`);

sockets.at(-1).drop(1006); // the network changes
await waitJoined(2);
check(joins[1] === "key1", `the reconnect sent resume ${joins[1]}, not the joined's key1`);

refuse = 1; // the server refuses the next join once
sockets.at(-1).drop(1006);
await waitJoined(4);
check(joins[2] === "key2" && joins[3] === "key2", `the reconnects sent ${joins.slice(2)}, not key2 twice`);

await client.leave();
await client.join(); // the page joins again: no reconnect, no key
check(joins.length === 5 && joins[4] === undefined, `the page's second join sent resume ${joins[4]}`);

sockets.at(-1).drop(1006);
await waitJoined(6);
check(joins[5] === "key4", `the reconnect after it sent ${joins[5]}, not key4`);
await client.leave();
