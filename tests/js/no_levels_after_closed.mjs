// A level poll whose getStats() is in flight when the client leaves emits "levels" after "closed".
import { check, clientOptions, joinedReply, onClientMessage, peers, setAnswerDelay, sleep, sockets } from "./fake_browser.mjs";
const { SfuClient } = await import(process.env.SFU_JS);
setAnswerDelay(5);
onClientMessage((socket, m) => {
  if (m.type === "join") socket.reply(joinedReply(m.id, "bob", "listener"));
});
const client = new SfuClient(clientOptions("bob", "listener", { levelInterval: 20 }));
const log = [];
client.on("closed", () => log.push("closed"));
client.on("levels", () => log.push("levels"));
await client.join();
peers[0].getStats = async () => { await sleep(15); return new Map(); }; // getStats takes a few ms, as in browsers
await sleep(25);
sockets[0].drop(4002); // room closed by the server
await sleep(100);
console.log(log.join(","));
const i = log.indexOf("closed");
check(i >= 0 && !log.slice(i + 1).includes("levels"), "levels emitted after closed");
