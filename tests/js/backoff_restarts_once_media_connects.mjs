// The reconnect backoff grows while attempts fail, and starts over once the
// media of a rejoin connects (not at `joined`: a network that lets signaling
// through but not UDP must not make the client retry fast for ever).
import { check, clientOptions, joinedReply, onClientMessage, peers, setAnswerDelay, sleep, sockets } from "./fake_browser.mjs";

const { SfuClient } = await import(process.env.SFU_JS);

setAnswerDelay(1);
let refuse = 0; // joins to refuse (the server still holds the old session)
onClientMessage((socket, message) => {
  if (message.type !== "join") return;
  if (refuse > 0) {
    refuse -= 1;
    socket.reply({ type: "error", id: message.id, code: "duplicate_identity", message: "taken" });
    return;
  }
  socket.reply(joinedReply(message.id, "alice", "listener"));
});
const client = new SfuClient(clientOptions("alice", "listener", { backoffInitial: 40, backoffMax: 10_000 }));
await client.join();

function connectMedia() {
  const pc = peers[peers.length - 1];
  pc.connectionState = "connected";
  pc.dispatchEvent(new Event("connectionstatechange"));
}

async function timeToRejoin() {
  const before = sockets.length;
  const started = performance.now();
  sockets[sockets.length - 1].drop(1006);
  while (client.state !== "joined" || sockets.length === before) await sleep(5);
  return performance.now() - started;
}

refuse = 4; // four attempts fail: the delays grow 40, 80, 160, 320, then 640 ms
const slow = await timeToRejoin();
check(slow > 900, `five attempts took ${slow.toFixed(0)} ms: the backoff did not grow`);
const again = await timeToRejoin(); // joined, but the media never connected: still backing off
check(again > 900, `the backoff restarted at "joined" (${again.toFixed(0)} ms), before media connected`);
connectMedia();
const fast = await timeToRejoin();
check(fast < 200, `after media connected, a drop took ${fast.toFixed(0)} ms to rejoin`);
await client.leave();
