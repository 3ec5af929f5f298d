// A member who left and came back within one roster interval is named in
// "updated" only, to a client that joined in between and never saw it join:
// the client adds it, with the raised hand the "hands" frame told it of.
import { check, clientOptions, joinedReply, onClientMessage, sleep } from "./fake_browser.mjs";

const { SfuClient } = await import(process.env.SFU_JS);

onClientMessage((socket, message) => {
  if (message.type !== "join") return;
  socket.reply(
    joinedReply(message.id, "s", "listener", {
      roster: [{ identity: "s", role: "listener", muted: false, hand: false }],
      hands: [],
    }),
  );
  setTimeout(() => {
    socket.reply({ type: "hands", hands: ["x"] });
    socket.reply({
      type: "roster",
      joined: [{ identity: "s", role: "listener", muted: false }],
      left: [],
      updated: [{ identity: "x", role: "listener", muted: false }],
      size: 2,
    });
  }, 40);
});
const client = new SfuClient(clientOptions("s", "listener"));
await client.join();
await sleep(100);
const x = client.roster.get("x");
check(x !== undefined, "x is in the roster");
check(x.hand === true, "x's hand is up, as the hands frame said");
await client.leave();
