// A promotion that arrives while leave() waits for the server's "ok": the
// microphone is opened (getUserMedia, a permission prompt in a real browser)
// for a client that is leaving.
import { check, clientOptions, joinedReply, onClientMessage, setAnswerDelay, setAnswerLeave, sleep, sockets, tracks } from "./fake_browser.mjs";
const { SfuClient } = await import(process.env.SFU_JS);
setAnswerDelay(5);
setAnswerLeave(false);
let gumCalls = 0;
const gum = navigator.mediaDevices.getUserMedia;
navigator.mediaDevices.getUserMedia = async (c) => { gumCalls++; return gum(c); };
let leaveSocket = null, leaveId = null;
onClientMessage((socket, m) => {
  if (m.type === "join") socket.reply(joinedReply(m.id, "bob", "listener"));
  else if (m.type === "leave") { leaveSocket = socket; leaveId = m.id; } // answered later
  else if (m.type === "offer") socket.reply({ type: "answer", id: m.id, sdp: "v=0\r\n" });
  else socket.reply({ type: "ok", id: m.id });
});
const client = new SfuClient(clientOptions("bob", "listener"));
const events = [];
for (const t of ["role", "roster", "error", "closed", "state"]) client.on(t, (v) => events.push(t));
await client.join();
events.length = 0;
const leaving = client.leave();
await sleep(10);
// The server promoted bob just before it read the leave.
sockets[0].reply({ type: "role_changed", identity: "bob", role: "speaker", by: "mod", renegotiate: true, grants: ["publish", "subscribe"] });
await sleep(50);
leaveSocket.reply({ type: "ok", id: leaveId });
leaveSocket.drop(1000);
await leaving;
await sleep(50);
console.log("events after leave() was called:", events.join(","), "| getUserMedia calls:", gumCalls, "| tracks:", tracks.map((t) => t.readyState));
check(gumCalls === 0, `getUserMedia was called ${gumCalls} time(s) after leave() was called`);
check(!events.includes("error"), `leaving told the app of an error: ${events.join(",")}`);
