// A client whose first line carries the room mix (`joined.mixed`) must not
// name the slot-0 holder as who it hears when the mix names nobody.
import { check, clientOptions, joinedReply, onClientMessage, sleep } from "./fake_browser.mjs";

const { SfuClient } = await import(process.env.SFU_JS);

onClientMessage((socket, message) => {
  if (message.type !== "join") return;
  socket.reply(
    joinedReply(message.id, "s", "listener", {
      mixed: true,
      roster: [
        { identity: "s", role: "listener", muted: false, hand: false },
        { identity: "quiet", role: "speaker", muted: false, hand: false },
      ],
      active_speakers: {
        slots: [{ identity: "quiet", csrc: 1234 }, null, null],
        dominant: null,
      },
    }),
  );
});
const client = new SfuClient(clientOptions("s", "listener"));
await client.join();
await sleep(20);
check(client.mixed === true, "joined said the first line carries the mix");
const { slots } = await client.stats();
check(slots.length > 0, "the client has lines");
check(slots[0].identity === null, `the mix names nobody, not ${slots[0].identity}`);
await client.leave();
