// Joining with publish:false asks to listen even with a listener token: a
// promotion the room kept from an earlier visit must not open the microphone
// unasked. Its reconnects ask the same.
import { check, clientOptions, joinedReply, onClientMessage, setAnswerDelay, sleep, sockets, tracks } from "./fake_browser.mjs";
const { SfuClient } = await import(process.env.SFU_JS);
setAnswerDelay(5);
const joins = [];
onClientMessage((socket, m) => {
  if (m.type === "join") {
    joins.push(m);
    socket.reply(joinedReply(m.id, "lou", "listener"));
  } else if (m.type === "leave") { socket.reply({ type: "ok", id: m.id }); socket.drop(1000); }
});
const client = new SfuClient(clientOptions("lou", "listener", { publish: false, backoffInitial: 20, backoffMax: 20 }));
await client.join();
check(joins[0].role === "listener", `a join without a microphone asked role ${joins[0].role}`);
sockets[0].drop(1006);
await sleep(200);
console.log("joins", joins.map((m) => m.role), "state", client.state);
check(joins.length === 2 && joins[1].role === "listener", "the reconnect did not ask to listen");
check(tracks.length === 0, "the microphone was opened");
await client.leave();
