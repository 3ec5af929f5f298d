// The roster says who may moderate (moderates), whatever the role: from the
// `joined` snapshot, `joined` and `updated` entries and `role_changed`. The
// server says it only when the role does not: an entry that does not say
// moderates if its role is "moderator" (a token may withhold the grant from one).
import { check, clientOptions, joinedReply, onClientMessage, sleep } from "./fake_browser.mjs";

const { SfuClient } = await import(process.env.SFU_JS);

onClientMessage((socket, message) => {
  if (message.type !== "join") return;
  socket.reply(
    joinedReply(message.id, "m", "moderator", {
      roster: [
        { identity: "m", role: "moderator", muted: false, hand: false, moderates: true },
        { identity: "seated", role: "listener", muted: false, hand: false, moderates: true },
        { identity: "old", role: "moderator", muted: false, hand: false },
        { identity: "sam", role: "speaker", muted: false, hand: false },
        { identity: "held", role: "moderator", muted: false, hand: false, moderates: false },
      ],
      hands: [],
    }),
  );
  setTimeout(() => {
    socket.reply({
      type: "role_changed", identity: "seated", role: "speaker", by: "m", renegotiate: true, moderates: true,
    });
    socket.reply({
      type: "roster",
      joined: [{ identity: "q", role: "speaker", muted: false, moderates: true }],
      left: [],
      updated: [{ identity: "old", role: "speaker", muted: false }],
      size: 4,
    });
  }, 40);
  setTimeout(() => {
    socket.reply({
      type: "role_changed", identity: "seated", role: "speaker", by: "m", renegotiate: false, moderates: false,
    });
  }, 400);
});
const client = new SfuClient(clientOptions("m", "moderator"));
const roles = [];
client.on("role", (message) => roles.push(message));
await client.join();
check(client.roster.get("seated").moderates === true, "a moderator seated in the audience moderates");
check(client.roster.get("old").moderates === true, "not said: a moderator moderates");
check(client.roster.get("m").moderates === true, "the moderator itself moderates");
check(client.roster.get("sam").moderates === false, "a speaker the server does not say moderates does not");
check(client.roster.get("held").moderates === false, "a moderator whose token withheld the grant does not");
await sleep(60);
check(client.roster.get("seated").role === "speaker", "invited on the stage as a speaker");
check(client.roster.get("seated").moderates === true, "invited on the stage, it still moderates");
check(client.roster.get("q").moderates === true, "a joined entry says it");
check(client.roster.get("old").moderates === false, "an updated entry's role says it");
await sleep(500);
check(client.roster.get("seated").moderates === false, "a step-down ends it");
check(roles.at(-1).identity === "seated" && roles.at(-1).moderates === false, "the role event says it too");
await client.leave();
