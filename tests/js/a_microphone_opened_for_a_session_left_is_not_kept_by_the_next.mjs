// A promotion's getUserMedia (a permission prompt) still open when the page
// leaves and joins again as a listener: the microphone it then opens stays
// live for the whole new session (nothing stops it), although the member
// does not publish.
import { check, clientOptions, joinedReply, onClientMessage, setAnswerDelay, sleep, sockets, tracks } from "./fake_browser.mjs";
const { SfuClient } = await import(process.env.SFU_JS);
setAnswerDelay(5);
const gum = navigator.mediaDevices.getUserMedia;
navigator.mediaDevices.getUserMedia = async (c) => { await sleep(400); return gum(c); };
onClientMessage((socket, m) => {
  if (m.type === "join") socket.reply(joinedReply(m.id, "bob", "listener"));
  else if (m.type === "offer") socket.reply({ type: "answer", id: m.id, sdp: "v=0\r\n" });
  else if (m.type === "leave") { socket.reply({ type: "ok", id: m.id }); socket.drop(1000); }
  else socket.reply({ type: "ok", id: m.id });
});
const client = new SfuClient(clientOptions("bob", "listener"));
client.on("error", (e) => console.log("error event:", e.code, e.message));
await client.join();
sockets[0].reply({ type: "role_changed", identity: "bob", role: "speaker", by: "mod", renegotiate: true, grants: ["publish", "subscribe"] });
await sleep(50);           // the permission prompt is open
await client.leave();      // the person leaves...
await client.join();       // ...and comes back (a listener token: no microphone asked)
await sleep(800);          // the prompt is answered meanwhile
console.log("state", client.state, "role", client.role, "micTrack", client.micTrack && client.micTrack.readyState,
  "tracks", tracks.map((t) => t.readyState));
check(tracks.every((t) => t.readyState === "ended"),
  `a listener's session holds a live microphone opened for the session it left: ${tracks.map((t) => t.readyState)}`);
await client.leave();
