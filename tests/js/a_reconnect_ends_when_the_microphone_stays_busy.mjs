// A microphone that stays busy is retried a bounded number of times, then the
// reconnect ends with the "microphone" error, as for a device that is gone.
import { check, clientOptions, joinedReply, onClientMessage, setAnswerDelay, sleep, sockets, tracks } from "./fake_browser.mjs";
const { SfuClient } = await import(process.env.SFU_JS);
setAnswerDelay(5);
onClientMessage((socket, m) => {
  if (m.type === "join") socket.reply(joinedReply(m.id, "alice", "speaker"));
  else socket.reply({ type: "ok", id: m.id });
});
const client = new SfuClient(clientOptions("alice", "speaker", { backoffInitial: 10, backoffMax: 20 }));
const errors = [];
client.on("error", (e) => errors.push(e.code));
await client.join();
let asked = 0;
navigator.mediaDevices.getUserMedia = async () => {
  asked++;
  throw Object.assign(new Error("Could not start audio source"), { name: "NotReadableError" });
};
tracks[0].readyState = "ended";
console.warn = () => {};
sockets[0].drop(1006);
await sleep(1500);
check(client.state === "closed", `state ${client.state} after ${asked} asks`);
check(asked === 4, `asked ${asked} times: once, then three retries`);
check(errors.includes("microphone"), `error events: ${errors}`);
await client.leave();
