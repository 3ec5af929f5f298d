// `audience({after})` asks the server for the page after its cursor (the
// `next` of the reply before), and sends no offset with it: a cursor, unlike
// an offset, is not shifted by listeners who leave between pages.
import { check, clientOptions, joinedReply, onClientMessage } from "./fake_browser.mjs";

const { SfuClient } = await import(process.env.SFU_JS);

const asked = [];
onClientMessage((socket, message) => {
  if (message.type === "join") {
    socket.reply(joinedReply(message.id, "host", "moderator"));
  } else if (message.type === "audience") {
    asked.push(message);
    const next = message.after === undefined ? 7 : message.after + 5;
    socket.reply({
      type: "audience",
      id: message.id,
      offset: message.offset || 0,
      members: [{ identity: `after-${message.after}`, role: "listener" }],
      listeners: 9,
      next,
    });
  }
});
const client = new SfuClient(clientOptions("host", "moderator"));
await client.join();
const first = await client.audience({ limit: 3 });
check(first.next === 7, `no cursor in the first page: ${JSON.stringify(first)}`);
const second = await client.audience({ after: first.next, limit: 3 });
check(second.next === 12, `the second page's cursor: ${second.next}`);
check(second.members[0].identity === "after-7", `asked after ${second.members[0].identity}`);
check(asked[0].offset === 0 && asked[0].after === undefined, `first asked ${JSON.stringify(asked[0])}`);
check(asked[1].after === 7 && !("offset" in asked[1]), `second asked ${JSON.stringify(asked[1])}`);
await client.leave();
