// A speaker that joined with publish:false gets its microphone opened by a reconnect.
import { check, clientOptions, joinedReply, onClientMessage, setAnswerDelay, sleep, sockets, tracks } from "./fake_browser.mjs";
const { SfuClient } = await import(process.env.SFU_JS);
setAnswerDelay(5);
onClientMessage((socket, m) => {
  if (m.type === "join") socket.reply(joinedReply(m.id, "alice", "speaker"));
  else if (m.type === "leave") { socket.reply({ type: "ok", id: m.id }); socket.drop(1000); }
});
const client = new SfuClient(clientOptions("alice", "speaker", { publish: false, backoffInitial: 20, backoffMax: 20 }));
await client.join();
check(tracks.length === 0, "mic opened at join");
sockets[0].drop(1006);
await sleep(200);
console.log("state", client.state, "mic tracks", tracks.length);
check(tracks.length === 0, "publish:false, yet the reconnect opened the microphone");
await client.leave();
