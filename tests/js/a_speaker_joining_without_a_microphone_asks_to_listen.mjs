// A token that may speak, joining with publish: false, asks the server for the
// listener role (the server refuses a speaker's offer that sends nothing); with
// the microphone it asks for nothing. A listener token asks to listen too (see
// a_fresh_join_without_a_microphone_asks_to_listen_whatever_was_decided_before).
import { check, clientOptions, joinedReply, onClientMessage, setAnswerDelay } from "./fake_browser.mjs";
const { SfuClient } = await import(process.env.SFU_JS);
setAnswerDelay(5);
const joins = [];
onClientMessage((socket, m) => {
  if (m.type === "join") {
    joins.push(m);
    socket.reply(joinedReply(m.id, "sam", m.role || "speaker"));
  } else socket.reply({ type: "ok", id: m.id });
});
const quiet = new SfuClient(clientOptions("sam", "speaker", { publish: false }));
await quiet.join();
check(joins[0].role === "listener", `publish: false sent role ${joins[0].role}`);
check(!quiet.micTrack, "no microphone was opened");
await quiet.leave();
const loud = new SfuClient(clientOptions("sam", "speaker"));
await loud.join();
check(!("role" in joins[1]), `a speaker with its microphone sent role ${joins[1].role}`);
await loud.leave();
const listener = new SfuClient(clientOptions("lee", "listener"));
await listener.join();
check(joins[2].role === "listener", `a listener token sent role ${joins[2].role}`);
await listener.leave();
