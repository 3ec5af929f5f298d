// A speaker's join that the server refuses gives the microphone back.
import { check, clientOptions, onClientMessage, tracks } from "./fake_browser.mjs";

const { SfuClient } = await import(process.env.SFU_JS);

onClientMessage((socket, message) => {
  if (message.type === "join") {
    socket.reply({ type: "error", id: message.id, code: "duplicate_identity", message: "taken" });
  }
});
const client = new SfuClient(clientOptions("alice", "speaker"));
let refused = null;
try {
  await client.join();
} catch (error) {
  refused = error.code;
}
check(refused === "duplicate_identity", `join() should reject with duplicate_identity, got ${refused}`);
check(client.state === "closed", `state ${client.state}`);
check(tracks.length === 1, `${tracks.length} microphone tracks were opened`);
check(tracks[0].readyState === "ended", "the microphone is still captured after the refused join");
check(client.micStream === null, "the client still holds the microphone stream");
