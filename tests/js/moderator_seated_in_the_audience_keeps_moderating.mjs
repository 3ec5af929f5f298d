// A moderator that the server seats in the audience (the stage was full: role
// "listener", grants with "moderate") is still a moderator to the app, gives its
// microphone back, and offers one again when it reconnects (a seat may be free by then).
import { check, clientOptions, joinedReply, onClientMessage, peers, setAnswerDelay, sleep, sockets, tracks } from "./fake_browser.mjs";
const { SfuClient } = await import(process.env.SFU_JS);
setAnswerDelay(5);
let joins = 0;
onClientMessage((socket, m) => {
  if (m.type === "join") {
    joins += 1;
    const reply = joins === 1
      ? joinedReply(m.id, "mo", "listener", { grants: ["moderate", "subscribe"] })
      : joinedReply(m.id, "mo", "moderator", { grants: ["moderate", "publish", "subscribe"] });
    socket.reply(reply);
  } else if (m.type === "leave") { socket.reply({ type: "ok", id: m.id }); socket.drop(1000); }
});
const client = new SfuClient(clientOptions("mo", "moderator", { backoffInitial: 20, backoffMax: 20 }));
client.on("error", (e) => console.log("error event", e.code, e.message));
const roles = [];
client.on("role", (r) => roles.push(r));
await client.join();
check(roles.length === 1 && roles[0].role === "listener" && roles[0].moderates === true,
  `the join's role event does not say it moderates: ${JSON.stringify(roles)}`);
console.log("role", client.role, "moderator", client.isModerator, "tracks", tracks.map((t) => t.readyState));
check(client.isModerator, "a moderator seated in the audience is no moderator to the app");
check(!client.canPublish, "it may not publish from the audience");
check(tracks.length === 1 && tracks[0].readyState === "ended", "the microphone it cannot use is still open");
sockets[0].drop(1006);
await sleep(300);
console.log("state", client.state, "joins", joins, "directions", peers.map((p) => p.transceivers[0].direction));
check(joins === 2 && client.state === "joined", "it did not join again");
check(peers[1].transceivers[0].direction === "sendrecv", "the reconnect offers no microphone");
check(client.role === "moderator" && client.canPublish, "back on the stage");
await client.leave();
