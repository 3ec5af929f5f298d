// Who speaks is told while audio comes in: once the connection ends (the room
// closed, or the network dropped and the client reconnects), nobody is shown
// speaking or holding a slot from what was heard before, and a page that
// renders on "speaking" and "slots" is told so.
import { check, clientOptions, joinedReply, onClientMessage, peers, sleep, sockets } from "./fake_browser.mjs";
const { SfuClient } = await import(process.env.SFU_JS);
let joins = 0;
onClientMessage((socket, m) => {
  if (m.type === "join") {
    joins += 1;
    // The second join is held: the client stays "reconnecting" meanwhile.
    if (joins === 2) return;
    socket.reply(joinedReply(m.id, "me", "listener", {
      roster: [
        { identity: "me", role: "listener", muted: false, hand: false },
        { identity: "alice", role: "speaker", muted: false, hand: false },
      ],
      active_speakers: { slots: [{ identity: "alice", csrc: 111, level: 127 }, null, null], dominant: "alice" },
    }));
  } else if (m.type === "leave") {
    socket.reply({ type: "ok", id: m.id });
  }
});

function speak(pc) {
  const t0 = pc.getTransceivers()[0];
  t0.receiver.getContributingSources = () => [{ source: 111, timestamp: performance.timeOrigin + performance.now() }];
  pc.getStats = async () => new Map([["in0", { type: "inbound-rtp", kind: "audio", mid: "0", audioLevel: 0.5 }]]);
}

// A network drop: reconnecting, nothing heard.
const client = new SfuClient(clientOptions("me", "listener", { levelInterval: 20, backoffInitial: 10, backoffMax: 10 }));
await client.join();
speak(peers[0]);
await sleep(80);
check(client.speaking.has("alice"), "alice is heard speaking");
let told = null;
client.on("speaking", (speaking) => (told = speaking));
let toldActive = null;
client.on("active_speakers", (active) => (toldActive = active));
sockets[0].drop(1006);
await sleep(80);
check(client.state === "reconnecting", `state ${client.state}`);
check(told !== null && told.size === 0, "the page was not told that nobody speaks any more");
check(!client.speaking.has("alice"), "alice is shown speaking while the client reconnects");
check(!client.slotParticipants.includes("alice"), "alice is shown on a slot while the client reconnects");
check(client.dominant === null, `${client.dominant} is dominant while the client reconnects`);
check(
  toldActive !== null && toldActive.dominant === null && !toldActive.slots.some(Boolean),
  "a page rendering on active_speakers was not told that nobody speaks any more",
);
await client.leave();

// The room closes: "closed" comes after the page was told.
joins = 0;
const closing = new SfuClient(clientOptions("me", "listener", { levelInterval: 20 }));
await closing.join();
speak(peers[peers.length - 1]);
await sleep(80);
check(closing.speaking.has("alice"), "alice is heard speaking");
const order = [];
closing.on("speaking", (speaking) => order.push(`speaking ${speaking.size}`));
closing.on("slots", (slots) => order.push(`slots ${slots.filter(Boolean).length}`));
closing.on("active_speakers", (active) => order.push(`active ${active.dominant}`));
closing.on("closed", () => order.push("closed"));
sockets[sockets.length - 1].drop(4002);
await sleep(60);
check(closing.state === "closed", `state ${closing.state}`);
check(closing.speaking.size === 0, "alice is shown speaking in a room that closed");
check(!closing.slotParticipants.includes("alice"), "alice holds a slot in a room that closed");
check(order.join(",") === "active null,speaking 0,slots 0,closed", `events: ${order.join(",")}`);
