// Promoted, then demoted before its offer with a sending line reached the server:
// the server has no sending line of its to drop and asks for no offer
// (renegotiate: false), but the microphone the client opened for the promotion must go.
import { check, clientOptions, joinedReply, onClientMessage, setAnswerDelay, sleep, sockets, tracks } from "./fake_browser.mjs";
const { SfuClient } = await import(process.env.SFU_JS);
setAnswerDelay(5);
const gum = navigator.mediaDevices.getUserMedia;
navigator.mediaDevices.getUserMedia = async (c) => { await sleep(200); return gum(c); };
const offers = [];
onClientMessage((socket, m) => {
  if (m.type === "join") socket.reply(joinedReply(m.id, "bob", "listener"));
  else if (m.type === "offer") { offers.push(m.sdp); socket.reply({ type: "answer", id: m.id, sdp: "v=0\r\n" }); }
  else if (m.type === "leave") { socket.reply({ type: "ok", id: m.id }); socket.drop(1000); }
});
const client = new SfuClient(clientOptions("bob", "listener"));
client.on("error", (e) => console.log("error event", e.code, e.message));
await client.join();
sockets[0].reply({ type: "role_changed", identity: "bob", role: "speaker", by: "mod", renegotiate: true, grants: ["publish", "subscribe"] });
await sleep(50); // the permission prompt is open
sockets[0].reply({ type: "role_changed", identity: "bob", role: "listener", by: "mod", renegotiate: false, grants: ["subscribe"] });
await sleep(800);
console.log("offers", offers.length, "tracks", tracks.map((t) => t.readyState), "publishing", client._publishing);
check(tracks.length === 1 && tracks[0].readyState === "ended", `the microphone opened for the promotion is still live: ${tracks.map((t) => t.readyState)}`);
check(!client._publishing, "a reconnect would offer a microphone to a listener");
await client.leave();
