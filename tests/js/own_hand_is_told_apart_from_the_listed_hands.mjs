// The server's `hands` list names the oldest hands only (and `total` counts
// them all); a client's own hand comes in `hand` messages. A list that does
// not name this client must not lower its hand, and a moderator lowering it
// must.
import { check, clientOptions, joinedReply, onClientMessage, sleep } from "./fake_browser.mjs";

const { SfuClient } = await import(process.env.SFU_JS);

onClientMessage((socket, message) => {
  if (message.type === "join") {
    socket.reply(
      joinedReply(message.id, "alice", "listener", {
        roster: [{ identity: "alice", role: "listener", muted: false, hand: false }],
        hands: ["h0", "h1"],
        hands_total: 2,
      }),
    );
  }
  if (message.type === "raise_hand") {
    socket.reply({ type: "ok", id: message.id });
    socket.reply({ type: "hand", raised: true, by: null });
    socket.reply({ type: "hands", hands: ["h0", "h1"], total: 3 });
  }
});
const client = new SfuClient(clientOptions("alice", "listener"));
await client.join();
check(client.handsTotal === 2, `handsTotal ${client.handsTotal} after joined`);
check(client.handRaised === false, "a hand raised before asking");
await client.raiseHand();
await sleep(30);
check(client.handRaised === true, "the own hand, not in the list, was taken as lowered");
check(client.handsTotal === 3 && client.hands.length === 2, `hands ${client.hands} / ${client.handsTotal}`);
check(client.roster.get("alice").hand === true, "the roster shows the own hand lowered");
client._dispatch({ type: "hand", raised: false, by: "mod" });
check(client.handRaised === false, "a moderator lowered the hand, the client did not hear it");
await client.leave();
