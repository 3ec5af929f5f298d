import { check, clientOptions, joinedReply, onClientMessage, setAnswerDelay, sleep } from "./fake_browser.mjs";
const { SfuClient } = await import(process.env.SFU_JS);
setAnswerDelay(30);
onClientMessage((socket, m) => {
  if (m.type !== "join") return;
  socket.reply(joinedReply(m.id, "bob", "listener"));
  setTimeout(() => socket.reply({ type: "room_closed", reason: "ended" }), 5);
});
const client = new SfuClient(clientOptions("bob", "listener"));
let r;
try { r = await client.join(); } catch (e) { r = e; }
console.log("join ->", r && (r.type || r.code), "state", client.state);
check(!(r && r.type === "joined" && client.state === "closed"), "join() resolved although the session is closed");
