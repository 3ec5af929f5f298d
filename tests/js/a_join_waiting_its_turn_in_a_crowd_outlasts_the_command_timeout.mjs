// In a crowd a join waits its turn at the server longer than a command's
// reply would take. The join must wait for `joined` (joinTimeout), not give
// up after requestTimeout and join again at the back of the queue.
import { check, clientOptions, joinedReply, onClientMessage, sleep, sockets } from "./fake_browser.mjs";
const { SfuClient } = await import(process.env.SFU_JS);
console.warn = () => {};
onClientMessage((socket, m) => {
  if (m.type === "join") setTimeout(() => socket.reply(joinedReply(m.id, "lou", "listener")), 300);
  else socket.reply({ type: "ok", id: m.id });
});
const client = new SfuClient(clientOptions("lou", "listener", { requestTimeout: 50 }));
await client.join();
check(client.state === "joined", `not joined: ${client.state}`);
check(sockets.length === 1, `joined again on ${sockets.length} sockets`);
await client.leave();

// A join whose reply never comes still ends, after joinTimeout.
onClientMessage(() => {});
const stuck = new SfuClient(clientOptions("lou", "listener", { joinTimeout: 100, reconnect: false }));
let error = null;
await stuck.join().catch((err) => (error = err));
await sleep(10);
check(error && error.code === "timeout", `no timeout: ${error && error.code}`);
