// Slot 0's holder 'old' leaves the room: the roster says so and the stage
// empties, while the CSRC of its last packets is still fresh at the browser
// (RTCRtpReceiver keeps it for a while). Neither the slot, nor the levels,
// nor stats() may name a member who is gone.
import { check, clientOptions, joinedReply, onClientMessage, peers, sleep, sockets } from "./fake_browser.mjs";
const { SfuClient } = await import(process.env.SFU_JS);
onClientMessage((socket, m) => {
  if (m.type !== "join") return;
  socket.reply(joinedReply(m.id, "me", "listener", {
    roster: [
      { identity: "me", role: "listener", muted: false, hand: false },
      { identity: "old", role: "speaker", muted: false, hand: false },
    ],
    active_speakers: { slots: [{ identity: "old", csrc: 111, level: 127 }, null, null], dominant: "old" },
  }));
});
const client = new SfuClient(clientOptions("me", "listener", { levelInterval: 20 }));
await client.join();
const t0 = peers[0].getTransceivers()[0];
t0.receiver.getContributingSources = () => [{ source: 111, timestamp: performance.timeOrigin + performance.now() - 100 }];
peers[0].getStats = async () => new Map([["in0", { type: "inbound-rtp", kind: "audio", mid: "0", audioLevel: 0.5 }]]);
await sleep(60);
check(client.slotParticipants[0] === "old", `'old' holds slot 0 while in the room, not ${client.slotParticipants[0]}`);
sockets[0].reply({ type: "roster", joined: [], left: ["old"], updated: [], size: 1 });
sockets[0].reply({ type: "active_speakers", slots: [null, null, null], dominant: null });
await sleep(60);
check(!client.roster.has("old"), "'old' left the roster");
check(client.slotParticipants[0] !== "old", "slot 0 still names 'old', who left the room");
check(!client.levels.has("old"), "'old', who left the room, still has a level");
const { slots } = await client.stats();
check(slots[0].identity !== "old", "stats() names 'old', who left the room, on slot 0");
await client.leave();
