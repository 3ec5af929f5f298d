// The `hands` list names the oldest hands only (`total` counts all): a
// member's hand the list leaves out stays as the client knew it (from the
// `joined` roster), until a whole list says it is down, or until the list,
// having named it, no longer does (the oldest leave the list only so).
import { check, clientOptions, joinedReply, onClientMessage, sleep } from "./fake_browser.mjs";

const { SfuClient } = await import(process.env.SFU_JS);

let socketOf = null;
onClientMessage((socket, message) => {
  socketOf = socket;
  if (message.type === "join") {
    socket.reply(
      joinedReply(message.id, "alice", "listener", {
        roster: [
          { identity: "alice", role: "listener", muted: false, hand: false },
          { identity: "old", role: "listener", muted: false, hand: true },
          { identity: "bob", role: "listener", muted: false, hand: true },
        ],
        hands: ["old"],
        hands_total: 2,
      }),
    );
  }
});
const client = new SfuClient(clientOptions("alice", "listener"));
await client.join();
check(client.roster.get("bob").hand === true, "bob's hand, past the list, read as lowered at joined");
socketOf.reply({ type: "hands", hands: ["old"], total: 3 });
await sleep(20);
check(client.roster.get("bob").hand === true, "bob's hand, past the list, lowered by a batch");
socketOf.reply({ type: "hands", hands: ["x"], total: 2 });
await sleep(20);
check(client.roster.get("old").hand === false, "old left the list: its hand is down");
check(client.roster.get("bob").hand === true, "bob was never listed: nothing is known");
socketOf.reply({ type: "hands", hands: ["x"], total: 1 });
await sleep(20);
check(client.roster.get("bob").hand === false, "a whole list without bob: its hand is down");
await client.leave();
