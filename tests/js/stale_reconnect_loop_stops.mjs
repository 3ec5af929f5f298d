// leave() while a reconnect waits out its backoff, then join() again on the
// same client: the old loop must not connect a second time over the new join.
import { check, clientOptions, joinedReply, onClientMessage, peers, setAnswerDelay, sleep, sockets } from "./fake_browser.mjs";

const { SfuClient } = await import(process.env.SFU_JS);

setAnswerDelay(5);
const members = new Set(); // one live connection per identity, as the server keeps
onClientMessage((socket, message) => {
  if (message.type === "join") {
    for (const held of members) if (held.readyState !== WebSocket.OPEN) members.delete(held);
    if (members.size) {
      socket.reply({ type: "error", id: message.id, code: "duplicate_identity", message: "taken" });
      return;
    }
    members.add(socket);
    socket.reply(joinedReply(message.id, "alice", "listener"));
  } else if (message.type === "leave") {
    socket.reply({ type: "ok", id: message.id });
    socket.drop(1000);
  }
});
const client = new SfuClient(clientOptions("alice", "listener", { backoffInitial: 300, backoffMax: 300 }));
await client.join();
sockets[0].drop(1006); // the network drops: a reconnect is scheduled
await sleep(30);
check(client.state === "reconnecting", `state ${client.state} after the drop`);
await client.leave();
await client.join();
const current = client.ws;
await sleep(1000); // past the old loop's backoff
check(client.state === "joined", `state ${client.state}: the new join was taken over`);
check(client.ws === current && current.readyState === WebSocket.OPEN, "the new connection was replaced");
check(sockets.length === 2, `${sockets.length} sockets were opened, expected 2`);
check(!peers[peers.length - 1].closed, "the new peer connection was closed");
await client.leave();
