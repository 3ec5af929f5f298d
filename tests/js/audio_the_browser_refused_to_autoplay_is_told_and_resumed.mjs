// A page that joins from a link (nothing clicked yet): the browser's autoplay
// policy refuses audio.play() with NotAllowedError. The client must say so
// ("autoplay" {blocked: true}, client.audioBlocked) rather than show the room
// as live while nothing plays, and resumeAudio() (called from a click) must
// start every slot and say it is unblocked.
import { check, clientOptions, joinedReply, onClientMessage, peers, sleep } from "./fake_browser.mjs";
const { SfuClient } = await import(process.env.SFU_JS);
console.warn = () => {};
let allowed = false; // until the user clicks
const made = [];
globalThis.document.createElement = () => {
  const audio = {
    dataset: {},
    paused: true,
    remove() {},
    async play() {
      if (!allowed) {
        const err = new Error("play() failed because the user didn't interact with the document first");
        err.name = "NotAllowedError";
        throw err;
      }
      audio.paused = false;
    },
  };
  made.push(audio);
  return audio;
};
onClientMessage((socket, m) => {
  if (m.type === "join") socket.reply(joinedReply(m.id, "lou", "listener"));
  else socket.reply({ type: "ok", id: m.id });
});
const client = new SfuClient(clientOptions("lou", "listener"));
const told = [];
client.on("autoplay", (detail) => told.push(detail.blocked));
await client.join();
const pc = peers[peers.length - 1];
for (const transceiver of pc.getTransceivers()) {
  const event = new Event("track");
  event.transceiver = transceiver;
  event.track = { kind: "audio" };
  pc.dispatchEvent(event);
}
await sleep(20);
check(made.length === 3, `expected 3 slot audio elements, got ${made.length}`);
check(client.audioBlocked === true, "autoplay refused, but the client does not say so");
check(told.join() === "true", `"autoplay" events: ${told.join()}`);
check(made.every((a) => a.paused), "an element plays although the browser refused it");
check((await client.resumeAudio()) === false, "resumeAudio() said it played while still refused");
check(client.audioBlocked === true && told.join() === "true", "told unblocked while still refused");
allowed = true; // the user clicked
check((await client.resumeAudio()) === true, "resumeAudio() after a click did not play");
check(made.every((a) => !a.paused), "a slot still does not play after the click");
check(client.audioBlocked === false && told.join() === "true,false", `after the click: ${told.join()}`);
await client.leave();
