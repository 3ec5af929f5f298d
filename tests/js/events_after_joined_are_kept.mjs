// Room events the server sends right after `joined` (while the client still
// applies the answer) are applied after the joined snapshot, not lost under it.
import { check, clientOptions, joinedReply, onClientMessage, setAnswerDelay, sleep } from "./fake_browser.mjs";

const { SfuClient } = await import(process.env.SFU_JS);

setAnswerDelay(30);
onClientMessage((socket, message) => {
  if (message.type !== "join") return;
  socket.reply(
    joinedReply(message.id, "alice", "speaker", {
      roster: [
        { identity: "mod", role: "moderator", muted: false, hand: false },
        { identity: "bob", role: "listener", muted: false, hand: false },
        { identity: "alice", role: "speaker", muted: false, hand: false },
      ],
    }),
  );
  setTimeout(() => {
    socket.reply({ type: "roster", joined: [], left: ["bob"], updated: [], size: 2 });
    socket.reply({ type: "hands", hands: ["carol"] });
    socket.reply({
      type: "muted",
      identity: "alice",
      muted: true,
      by: "mod",
      moderator_muted: true,
      self_muted: false,
    });
  }, 5);
});
const client = new SfuClient(clientOptions("alice", "speaker"));
await client.join();
await sleep(60);
check(client.state === "joined", `state ${client.state}`);
check(!client.roster.has("bob"), "bob left, yet stays in the roster");
check(client.hands.includes("carol"), "carol's raised hand was lost");
check(client.mutedBy === "mod", `the moderator's mute was lost (mutedBy ${client.mutedBy})`);
check(client.micTrack && client.micTrack.enabled === false, "the muted microphone is sending");
await client.leave();
