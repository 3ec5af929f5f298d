// leave() on a server that never answers it (gone, or too busy): the server
// is told on the open socket, and once the leave's timeout is out the client
// closes its socket and peer connection all the same, and says it left.
import { check, clientOptions, joinedReply, onClientMessage, peers, setAnswerLeave, sockets } from "./fake_browser.mjs";

const { SfuClient } = await import(process.env.SFU_JS);

setAnswerLeave(false);
let leaveOnOpenSocket = false;
onClientMessage((socket, message) => {
  if (message.type === "join") socket.reply(joinedReply(message.id, "alice", "listener"));
  if (message.type === "leave") leaveOnOpenSocket = socket.readyState === WebSocket.OPEN;
});
const client = new SfuClient(clientOptions("alice", "listener"));
const closed = [];
client.on("closed", (detail) => closed.push(detail.reason));
await client.join();
await client.leave();
check(leaveOnOpenSocket, "the socket closed before the server got the leave");
check(client.state === "closed", `state ${client.state}`);
check(closed.join(",") === "left", `closed events: ${closed}`);
check(sockets[0].readyState === WebSocket.CLOSED, "the socket is still open");
check(peers[0].closed, "the peer connection is still open");
