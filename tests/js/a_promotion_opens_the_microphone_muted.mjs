// Promoted by someone else (here a moderator), a listener goes on the stage
// with its microphone self-muted, and says so to the room: nothing is on the
// air until its user unmutes. With mutedOnPromotion false, it speaks at once.
import { check, clientOptions, joinedReply, onClientMessage, peers, sleep, sockets } from "./fake_browser.mjs";

const { SfuClient } = await import(process.env.SFU_JS);

const mutes = [];
onClientMessage((socket, m) => {
  if (m.type === "join") socket.reply(joinedReply(m.id, "bob", "listener"));
  else if (m.type === "offer") socket.reply({ type: "answer", id: m.id, sdp: "v=0\r\n" });
  else if (m.type === "mute") {
    mutes.push(m.muted);
    socket.reply({ type: "ok", id: m.id });
  } else if (m.type === "leave") {
    socket.reply({ type: "ok", id: m.id });
    socket.drop(1000);
  }
});
const promotion = {
  type: "role_changed",
  identity: "bob",
  role: "speaker",
  by: "mod",
  renegotiate: true,
  grants: ["publish", "subscribe"],
};

const client = new SfuClient(clientOptions("bob", "listener"));
await client.join();
sockets[0].reply(promotion);
await sleep(300);
let track = peers[0].getTransceivers()[0].sender.track;
check(track && track.readyState === "live", "no microphone after the promotion");
check(track.enabled === false, "the promoted listener's microphone is on the air unasked");
check(client.muted === true && mutes.includes(true), `self-mute not set and told (${mutes})`);
await client.setMuted(false);
check(track.enabled === true && mutes[mutes.length - 1] === false, "it cannot speak when it chooses");
await client.leave();

// A moderator seated in the audience that takes the stage itself chose to.
const itself = new SfuClient(clientOptions("bob", "listener"));
await itself.join();
sockets[sockets.length - 1].reply({ ...promotion, by: "bob" });
await sleep(300);
track = peers[peers.length - 1].getTransceivers()[0].sender.track;
check(track && track.enabled === true && itself.muted === false, "its own promotion muted it");
await itself.leave();

const eager = new SfuClient({ ...clientOptions("bob", "listener"), mutedOnPromotion: false });
await eager.join();
sockets[sockets.length - 1].reply(promotion);
await sleep(300);
track = peers[peers.length - 1].getTransceivers()[0].sender.track;
check(track && track.enabled === true && eager.muted === false, "mutedOnPromotion false: not live");
await eager.leave();
