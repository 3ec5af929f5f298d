// Promotion's getUserMedia (slow permission prompt) races a reconnect: two mics opened, one never stopped.
import { check, clientOptions, joinedReply, onClientMessage, setAnswerDelay, sleep, sockets, tracks } from "./fake_browser.mjs";
const { SfuClient } = await import(process.env.SFU_JS);
setAnswerDelay(5);
const gum = navigator.mediaDevices.getUserMedia;
navigator.mediaDevices.getUserMedia = async (c) => { await sleep(400); return gum(c); };
let role = "listener";
onClientMessage((socket, m) => {
  if (m.type === "join") socket.reply(joinedReply(m.id, "bob", role));
  else if (m.type === "offer") socket.reply({ type: "answer", id: m.id, sdp: "v=0\r\n" });
  else if (m.type === "leave") { socket.reply({ type: "ok", id: m.id }); socket.drop(1000); }
});
const client = new SfuClient(clientOptions("bob", "listener", { backoffInitial: 50, backoffMax: 50 }));
client.on("error", (e) => console.log("error event", e.code, e.message));
await client.join();
role = "speaker";
sockets[0].reply({ type: "role_changed", identity: "bob", role: "speaker", by: "mod", renegotiate: true, grants: ["publish", "subscribe"] });
await sleep(50);
sockets[0].drop(1006); // network drop while the permission prompt is open
await sleep(1500);
console.log("state", client.state, "tracks opened", tracks.length, tracks.map((t) => t.readyState));
await client.leave();
console.log("after leave", tracks.map((t) => t.readyState));
check(tracks.length === 1, `the promotion and the reconnect opened ${tracks.length} microphones, not one`);
check(tracks.every((t) => t.readyState === "ended"), `a microphone track is still live after leave(): ${tracks.map((t) => t.readyState)}`);
