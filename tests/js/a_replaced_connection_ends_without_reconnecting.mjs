// The server closes the connection with 4004 (another connection took the
// member over with its resume key): the client ends with reason "replaced",
// and does not join again to take the member back.
import { check, clientOptions, joinedReply, onClientMessage, sleep, sockets } from "./fake_browser.mjs";

const { SfuClient } = await import(process.env.SFU_JS);

let joins = 0;
onClientMessage((socket, message) => {
  if (message.type === "join") {
    joins += 1;
    socket.reply(joinedReply(message.id, "alice", "listener", { resume_key: "k" }));
  } else socket.reply({ type: "ok", id: message.id });
});
const client = new SfuClient(clientOptions("alice", "listener", { backoffInitial: 10, backoffMax: 20 }));
const errors = [];
client.on("error", (e) => errors.push(e.code));
const closed = client.once("closed");
await client.join();
sockets[0].reply({ type: "error", code: "replaced", message: "a new connection took your place" });
sockets[0].drop(4004);
const detail = await closed;
await sleep(200);
check(detail.reason === "replaced" && detail.code === 4004, `closed with ${JSON.stringify(detail)}`);
check(client.state === "closed", `state ${client.state}`);
check(joins === 1, `the client joined ${joins} times`);
check(errors.join() === "replaced", `errors ${errors}`);
