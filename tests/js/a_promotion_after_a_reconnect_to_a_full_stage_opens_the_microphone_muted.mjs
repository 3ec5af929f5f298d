// A listener promoted by a moderator unmutes and speaks; its connection drops
// and it comes back to a full stage, seated in the audience (the room gives a
// member promoted earlier the role it has without the promotion). Promoted
// again by a moderator, its microphone must open self-muted as at the first
// promotion, not on the air unasked.
import { check, clientOptions, joinedReply, onClientMessage, peers, setAnswerDelay, sleep, sockets } from "./fake_browser.mjs";
const { SfuClient } = await import(process.env.SFU_JS);
setAnswerDelay(5);
console.warn = () => {};
onClientMessage((socket, m) => {
  if (m.type === "join") socket.reply(joinedReply(m.id, "bob", "listener"));
  else if (m.type === "offer") socket.reply({ type: "answer", id: m.id, sdp: "v=0\r\n" });
  else if (m.type === "leave") { socket.reply({ type: "ok", id: m.id }); socket.drop(1000); }
  else socket.reply({ type: "ok", id: m.id });
});
const promotion = { type: "role_changed", identity: "bob", role: "speaker", by: "mod", renegotiate: true, grants: ["publish", "subscribe"] };
const client = new SfuClient(clientOptions("bob", "listener", { backoffInitial: 10, backoffMax: 20 }));
await client.join();
sockets[0].reply(promotion);
await sleep(100);
await client.setMuted(false); // it chose to speak
sockets[0].drop(1006);
await sleep(300);
check(client.state === "joined" && client.role === "listener", `not back in the audience: ${client.state} ${client.role}`);
sockets[sockets.length - 1].reply(promotion);
await sleep(200);
const track = peers[peers.length - 1].getTransceivers()[0].sender.track;
check(track && track.readyState === "live", "no microphone after the second promotion");
check(track.enabled === false && client.muted === true, "promoted again, its microphone is on the air unasked");
await client.leave();

// (As before: demoted, then promoted again before the demotion's offer was
// answered; the server asks for a sending line when that offer comes.)
const again = new SfuClient(clientOptions("bob", "listener", { backoffInitial: 10, backoffMax: 20 }));
await again.join();
const socket = sockets[sockets.length - 1];
socket.reply(promotion);
await sleep(100);
await again.setMuted(false);
socket.reply({ type: "role_changed", identity: "bob", role: "listener", by: "mod", renegotiate: true, grants: ["subscribe"] });
socket.reply({ ...promotion, renegotiate: false });
await sleep(100);
socket.reply({ ...promotion, by: null });
await sleep(200);
const line = peers[peers.length - 1].getTransceivers()[0].sender.track;
check(line && line.readyState === "live" && line.enabled === false && again.muted === true, "promoted back during a demotion: on the air unasked");
await again.leave();
