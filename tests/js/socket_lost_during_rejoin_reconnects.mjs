// The WebSocket closes while a reconnect applies the server's answer: the
// client must not call itself joined on the dead socket; it tries again.
import { check, clientOptions, joinedReply, onClientMessage, setAnswerDelay, sleep, sockets } from "./fake_browser.mjs";

const { SfuClient } = await import(process.env.SFU_JS);

setAnswerDelay(30);
let joins = 0;
onClientMessage((socket, message) => {
  if (message.type === "join") {
    joins += 1;
    socket.reply(joinedReply(message.id, "alice", "listener"));
    if (joins === 2) setTimeout(() => socket.drop(1006), 5); // drops again, mid-answer
  } else if (message.type === "ping") {
    socket.reply({ type: "pong", id: message.id });
  }
});
const client = new SfuClient(clientOptions("alice", "listener", { backoffInitial: 50, backoffMax: 50 }));
await client.join();
sockets[0].drop(1006);
await sleep(800);
check(joins >= 3, `the client joined ${joins} times: it gave up after the second drop`);
check(client.state === "joined", `state ${client.state}`);
check(client.ws.readyState === WebSocket.OPEN, "joined on a closed WebSocket");
await client.leave();
