// A mixed client (line 0 = room mix): the level poll must not credit the mix's level to the slot-0 holder.
import { check, clientOptions, joinedReply, onClientMessage, peers, sleep } from "./fake_browser.mjs";
const { SfuClient } = await import(process.env.SFU_JS);
onClientMessage((socket, m) => {
  if (m.type !== "join") return;
  socket.reply(joinedReply(m.id, "s", "listener", {
    mixed: true,
    roster: [
      { identity: "s", role: "listener", muted: false, hand: false },
      { identity: "quiet", role: "speaker", muted: false, hand: false },
    ],
    active_speakers: { slots: [{ identity: "quiet", csrc: 1234, level: 127 }, null, null], dominant: null },
  }));
});
const client = new SfuClient(clientOptions("s", "listener", { levelInterval: 20 }));
await client.join();
// the mix line plays someone else loudly; no fresh CSRC (e.g. a talker with no slot yet)
peers[0].getStats = async () => new Map([["in0", { type: "inbound-rtp", kind: "audio", mid: "0", audioLevel: 0.5 }]]);
await sleep(100);
const stats = await client.stats();
check(!client.levels.has("quiet") && !client.speaking.has("quiet"), "the mix's level is credited to the silent slot-0 holder 'quiet'");
await client.leave();
