// A join's getUserMedia prompt still open when the page leaves and joins
// again as a speaker: the new join waits on the same prompt and keeps what
// it opens (the old join's caller, resumed first, stopped its tracks: the
// new session was joined with a dead microphone). The old join's stream
// without a new taker is stopped: a_microphone_opened_for_a_session_left_...
import { check, clientOptions, joinedReply, onClientMessage, setAnswerDelay, sleep, tracks } from "./fake_browser.mjs";
const { SfuClient } = await import(process.env.SFU_JS);
setAnswerDelay(5);
let gumCalls = 0;
const gum = navigator.mediaDevices.getUserMedia;
navigator.mediaDevices.getUserMedia = async (c) => { gumCalls++; await sleep(400); return gum(c); };
onClientMessage((socket, m) => {
  if (m.type === "join") socket.reply(joinedReply(m.id, "alice", "speaker"));
  else socket.reply({ type: "ok", id: m.id });
});
const client = new SfuClient(clientOptions("alice", "speaker"));
const errors = [];
client.on("error", (e) => errors.push(e.code));
const first = client.join().catch((e) => `first join: ${e.code}`);
await sleep(50);            // the permission prompt is open
await client.leave();       // the person leaves...
const second = await client.join();   // ...and joins again at once (a speaker)
console.log("first:", await first, "| state", client.state, "| role", client.role,
  "| gum calls", gumCalls, "| micTrack", client.micTrack && client.micTrack.readyState,
  "| tracks", tracks.map((t) => t.readyState).join(","));
check(client.micTrack && client.micTrack.readyState === "live",
  `the new session's microphone is ${client.micTrack && client.micTrack.readyState}`);
await client.leave();
