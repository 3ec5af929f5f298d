// Self-muted AND moderator-muted speaker reconnects: the new server-side member is
// moderator-muted only (self-mute is per participant). The client must re-send its self-mute.
import { check, clientOptions, joinedReply, onClientMessage, setAnswerDelay, sleep, sockets } from "./fake_browser.mjs";
const { SfuClient } = await import(process.env.SFU_JS);
setAnswerDelay(5);
const sent = [];
let modMuted = false;
onClientMessage((socket, m) => {
  sent.push(`${sockets.indexOf(socket)}:${m.type}${m.muted !== undefined ? "=" + m.muted : ""}`);
  if (m.type === "join") socket.reply(joinedReply(m.id, "alice", "speaker", {
    roster: [{ identity: "alice", role: "speaker", muted: modMuted, hand: false }] }));
  else socket.reply({ type: "ok", id: m.id });
});
const client = new SfuClient(clientOptions("alice", "speaker", { backoffInitial: 20, backoffMax: 20 }));
await client.join();
await client.setMuted(true);
modMuted = true;
sockets[0].reply({ type: "muted", identity: "alice", muted: true, by: "mod", moderator_muted: true, self_muted: true });
sockets[0].drop(1006);
await sleep(200);
// the moderator unmutes: the server's member is now unmuted (it never heard the self-mute)
sockets[1].reply({ type: "muted", identity: "alice", muted: false, by: "mod", moderator_muted: false, self_muted: false });
check(
  sent.includes("1:mute=true"),
  "the self-mute is told to the new connection (else, once the moderator unmutes, the room shows her unmuted while she sends silence)",
);
check(client.muted && !client.micTrack.enabled, "still self-muted");
await client.leave();
