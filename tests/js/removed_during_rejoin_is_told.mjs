// Removed by a moderator while a reconnect applies its answer: the server's `removed`
// message is held, the 4001 close follows, teardown drops the held message: no "removed" event.
import { check, clientOptions, joinedReply, onClientMessage, setAnswerDelay, sleep, sockets } from "./fake_browser.mjs";
const { SfuClient } = await import(process.env.SFU_JS);
setAnswerDelay(30);
onClientMessage((socket, m) => {
  if (m.type !== "join") return;
  socket.reply(joinedReply(m.id, "bob", "listener"));
  if (sockets.indexOf(socket) === 1) setTimeout(() => {
    socket.reply({ type: "removed", reason: "spam", by: "mod", banned: false });
    socket.drop(4001);
  }, 5);
});
const client = new SfuClient(clientOptions("bob", "listener", { backoffInitial: 20, backoffMax: 20 }));
const log = [];
client.on("removed", (d) => log.push(`removed:${d.by}`));
client.on("closed", (d) => log.push(`closed:${d.reason}`));
await client.join();
sockets[0].drop(1006);
await sleep(300);
console.log(log.join(","), "state", client.state);
check(log.includes("removed:mod"), `the removed event was lost (${log})`);
