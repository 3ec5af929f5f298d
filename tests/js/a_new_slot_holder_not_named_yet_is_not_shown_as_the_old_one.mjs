// A slot client: slot 0's packets now carry the CSRC of a new holder that the
// (debounced) active_speakers event has not named yet. The level poll must not
// credit the previous holder with the new one's voice.
import { check, clientOptions, joinedReply, onClientMessage, peers, sleep } from "./fake_browser.mjs";
const { SfuClient } = await import(process.env.SFU_JS);
onClientMessage((socket, m) => {
  if (m.type !== "join") return;
  socket.reply(joinedReply(m.id, "me", "listener", {
    roster: [
      { identity: "me", role: "listener", muted: false, hand: false },
      { identity: "old", role: "speaker", muted: false, hand: false },
      { identity: "new", role: "speaker", muted: false, hand: false },
    ],
    active_speakers: { slots: [{ identity: "old", csrc: 111, level: 127 }, null, null], dominant: "old" },
  }));
});
const client = new SfuClient(clientOptions("me", "listener", { levelInterval: 20 }));
await client.join();
const t0 = peers[0].getTransceivers()[0];
t0.receiver.getContributingSources = () => [{ source: 222, timestamp: performance.timeOrigin + performance.now() }];
peers[0].getStats = async () => new Map([["in0", { type: "inbound-rtp", kind: "audio", mid: "0", audioLevel: 0.5 }]]);
await sleep(100);
check(!client.speaking.has("old"), "'new' speaks on slot 0 (csrc 222, not named yet) but 'old' is shown speaking");
check(!client.levels.has("old"), "the old holder is credited with the new one's level");
await client.leave();
