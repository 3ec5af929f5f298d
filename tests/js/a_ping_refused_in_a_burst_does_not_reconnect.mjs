// Past the server's frame budget a command is answered `rate_limited`
// without its id (docs/signaling.md): a periodic ping refused so, while the
// server goes on talking, is no sign of a dead connection, and must not
// tear down the media to rejoin.
import { check, clientOptions, joinedReply, onClientMessage, sleep } from "./fake_browser.mjs";

const { SfuClient } = await import(process.env.SFU_JS);

let joins = 0;
onClientMessage((socket, message) => {
  if (message.type === "join") {
    joins += 1;
    socket.reply(joinedReply(message.id, "alice", "listener"));
  } else if (message.type === "ping") {
    socket.reply({ type: "error", code: "rate_limited", message: "too many messages" });
  }
});
const client = new SfuClient(
  clientOptions("alice", "listener", { pingInterval: 40, requestTimeout: 60, backoffInitial: 10 }),
);
await client.join();
await sleep(400); // several pings, each refused and timing out
check(joins === 1, `the client rejoined ${joins - 1} times over refused pings`);
check(client.state === "joined", `state ${client.state}`);

// A server that says nothing at all is still lost: the client rejoins.
onClientMessage((socket, message) => {
  if (message.type === "join") {
    joins += 1;
    socket.reply(joinedReply(message.id, "alice", "listener"));
  }
});
await sleep(400);
check(joins > 1, "an unanswered ping from a silent server did not reconnect");
await client.leave();
