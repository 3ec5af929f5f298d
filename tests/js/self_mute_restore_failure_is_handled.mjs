// A self-muted speaker reconnects; the socket drops again right after `joined`:
// the self-mute restore (_onJoined) rejects with nobody catching it.
import { check, clientOptions, joinedReply, onClientMessage, setAnswerDelay, sleep, sockets } from "./fake_browser.mjs";
const { SfuClient } = await import(process.env.SFU_JS);
let unhandled = null;
process.on("unhandledRejection", (err) => { unhandled = err; });
setAnswerDelay(5);
onClientMessage((socket, m) => {
  if (m.type === "join") socket.reply(joinedReply(m.id, "alice", "speaker"));
  else if (m.type === "mute") { if (sockets.indexOf(socket) === 0) socket.reply({ type: "ok", id: m.id }); else socket.drop(1006); }
  else if (m.type === "leave") { socket.reply({ type: "ok", id: m.id }); socket.drop(1000); }
});
const client = new SfuClient(clientOptions("alice", "speaker", { backoffInitial: 50, backoffMax: 50 }));
await client.join();
await client.setMuted(true);
sockets[0].drop(1006);
await sleep(300);
client.leave();
await sleep(50);
check(!unhandled, `unhandled rejection: ${unhandled && unhandled.message}`);
