// The roster says whether each member's client could send (can_speak): from
// the `joined` snapshot, `joined` and `updated` entries, and an entry that does
// not say keeps what was known (a server that never says: anyone can).
import { check, clientOptions, joinedReply, onClientMessage, sleep } from "./fake_browser.mjs";

const { SfuClient } = await import(process.env.SFU_JS);

onClientMessage((socket, message) => {
  if (message.type !== "join") return;
  socket.reply(
    joinedReply(message.id, "m", "moderator", {
      roster: [
        { identity: "m", role: "moderator", muted: false, hand: false, can_speak: true },
        { identity: "p", role: "listener", muted: false, hand: false, can_speak: false },
        { identity: "old", role: "listener", muted: false, hand: false },
      ],
      hands: [],
    }),
  );
  setTimeout(() => {
    socket.reply({
      type: "roster",
      joined: [{ identity: "q", role: "listener", muted: false, can_speak: false }],
      left: [],
      updated: [
        { identity: "p", role: "listener", muted: false },
        { identity: "r", role: "listener", muted: false, can_speak: false },
      ],
      size: 5,
    });
  }, 40);
});
const client = new SfuClient(clientOptions("m", "moderator"));
await client.join();
check(client.roster.get("p").canSpeak === false, "the snapshot's WHEP player cannot speak");
check(client.roster.get("old").canSpeak === true, "an entry that does not say can");
check(client.roster.get("m").canSpeak === true, "the moderator itself can");
await sleep(100);
check(client.roster.get("q").canSpeak === false, "a joined entry says it");
check(client.roster.get("r").canSpeak === false, "an updated entry naming a newcomer says it");
check(client.roster.get("p").canSpeak === false, "an update that does not say keeps it");
await client.leave();
