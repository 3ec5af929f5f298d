// A page on plain http at an address other than localhost has no
// navigator.mediaDevices: a speaker's join, and a listener's promotion, fail
// with the "microphone" error saying why (not a TypeError), and the error
// stays in microphoneError for the app to show.
import { check, clientOptions, joinedReply, onClientMessage, setAnswerDelay, sleep, sockets } from "./fake_browser.mjs";
const { SfuClient } = await import(process.env.SFU_JS);
setAnswerDelay(5);
const devices = navigator.mediaDevices;
delete navigator.mediaDevices;
Object.defineProperty(navigator, "mediaDevices", { value: undefined, configurable: true });
console.warn = () => {}; console.error = () => {};
onClientMessage((socket, m) => {
  if (m.type === "join") socket.reply(joinedReply(m.id, m.role === "listener" ? "lee" : "sam", m.role || "listener"));
  else if (m.type === "offer") socket.reply({ type: "answer", id: m.id, sdp: "v=0\r\n" });
  else socket.reply({ type: "ok", id: m.id });
});
const speaker = new SfuClient(clientOptions("sam", "speaker"));
let refused = null;
try {
  await speaker.join();
} catch (error) {
  refused = error;
}
check(refused && refused.code === "microphone", `a speaker's join failed with ${refused && (refused.code || refused.name)}: ${refused && refused.message}`);
check(/https/.test(refused.message), `the message does not say why: ${refused.message}`);
check(speaker.microphoneError === refused, "microphoneError is not the failure");
check(speaker.state === "closed", `state ${speaker.state}`);

const listener = new SfuClient(clientOptions("lee", "listener", { backoffInitial: 10, backoffMax: 20 }));
const errors = [];
listener.on("error", (e) => errors.push(e));
await listener.join();
sockets[sockets.length - 1].reply({ type: "role_changed", identity: "lee", role: "speaker", by: "mod", renegotiate: true, grants: ["publish", "subscribe"] });
await sleep(100);
check(errors.length > 0 && errors.every((e) => e.code === "microphone"), `the promotion's errors: ${errors.map((e) => `${e.code || e.name}: ${e.message}`)}`);
check(listener.microphoneError && listener.microphoneError.code === "microphone", "a promoted listener's microphoneError is not set");
check(listener.state === "joined", `state ${listener.state}`);
await listener.leave();
Object.defineProperty(navigator, "mediaDevices", { value: devices, configurable: true });
