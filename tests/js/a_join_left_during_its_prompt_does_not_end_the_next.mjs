// leave() while join() waits for the microphone prompt, then join() again: the first
// join's failure must not tear down the second one.
import { check, clientOptions, joinedReply, onClientMessage, peers, setAnswerDelay, sleep } from "./fake_browser.mjs";
const { SfuClient } = await import(process.env.SFU_JS);
setAnswerDelay(5);
const gum = navigator.mediaDevices.getUserMedia;
navigator.mediaDevices.getUserMedia = async (c) => { await sleep(200); return gum(c); };
onClientMessage((socket, m) => {
  if (m.type === "join") socket.reply(joinedReply(m.id, "alice", "speaker"));
  else socket.reply({ type: "ok", id: m.id });
});
const client = new SfuClient(clientOptions("alice", "speaker"));
const first = client.join().then(() => "joined", (e) => `rejected ${e.code}`);
await sleep(50); // the permission prompt is open
await client.leave();
const second = client.join().then(() => "joined", (e) => `rejected ${e.code}: ${e.message}`);
check((await first) !== "joined", "the left join does not resolve");
check((await second) === "joined", `the second join: ${await second}`);
await sleep(50);
check(client.state === "joined", `the second join ended in state ${client.state}`);
check(!peers[peers.length - 1].closed, "the second join's peer connection is open");
await client.leave();
