// A token that is not a join token (no room claim, e.g. a mistyped ?token=)
// and no `room` option: join() says the token is the problem, before it opens
// a socket or the microphone, instead of sending a join the server can only
// answer with "'join' needs a 'room' field".
import { check, clientOptions, onClientMessage, sockets, token, tracks } from "./fake_browser.mjs";

const { SfuClient } = await import(process.env.SFU_JS);

onClientMessage((socket, message) => {
  if (message.type === "join") {
    socket.reply({ type: "error", id: message.id, code: "bad_message", message: "'join' needs a 'room' field" });
  }
});
for (const bad of ["garbage", token({ sub: "alice", role: "speaker" })]) {
  const client = new SfuClient({ ...clientOptions("alice", "speaker"), token: bad });
  let refused = null;
  try {
    await client.join();
  } catch (error) {
    refused = error;
  }
  check(refused && refused.code === "not_allowed", `join() should reject with not_allowed, got ${refused && refused.code}`);
  check(/room/.test(refused.message), `the message should say the token names no room: ${refused.message}`);
  check(client.state === "closed", `state ${client.state}`);
}
check(sockets.length === 0, `${sockets.length} sockets were opened`);
check(tracks.length === 0, `${tracks.length} microphone tracks were opened`);
