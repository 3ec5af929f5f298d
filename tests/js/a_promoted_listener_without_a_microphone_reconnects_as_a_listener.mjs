// A listener promoted whose microphone is denied keeps listening; after a network
// drop its reconnect (which offers to publish) is denied the microphone again: it
// must come back in as a listener, not be closed for good.
import { check, clientOptions, joinedReply, onClientMessage, setAnswerDelay, sleep, sockets } from "./fake_browser.mjs";
const { SfuClient } = await import(process.env.SFU_JS);
setAnswerDelay(5);
navigator.mediaDevices.getUserMedia = async () => { throw Object.assign(new Error("Permission denied"), { name: "NotAllowedError" }); };
let role = "listener";
onClientMessage((socket, m) => {
  if (m.type === "join") socket.reply(joinedReply(m.id, "bob", role));
  else if (m.type === "offer") socket.reply({ type: "answer", id: m.id, sdp: "v=0\r\n" });
  else socket.reply({ type: "ok", id: m.id });
});
console.warn = () => {}; console.error = () => {};
const client = new SfuClient(clientOptions("bob", "listener", { backoffInitial: 10, backoffMax: 20 }));
const errors = []; const states = [];
client.on("error", (e) => errors.push(`${e.code}: ${e.message}`));
client.on("closed", (d) => states.push(`closed:${d.reason}`));
await client.join();
role = "speaker";  // the server's decision outlives the reconnect (it answers a listen-only offer too)
sockets[0].reply({ type: "role_changed", identity: "bob", role: "speaker", by: "mod", renegotiate: true, grants: ["publish", "subscribe"] });
await sleep(100);
sockets[0].drop(1006);
await sleep(800);
check(client.state === "joined", `state ${client.state} after a reconnect without a microphone (${states})`);
check(errors.some((e) => e.startsWith("microphone")), "the app is told the microphone failed");
check(!errors.some((e) => e.includes("no microphone: ")), "one message, not wrapped twice");
await client.leave();
