// A microphone that stays busy is retried a bounded number of times, then the
// reconnect ends with the "microphone" error, as for a device that is gone.
import { check, joinedSpeaker, sleep, sockets, tracks } from "./fake_browser.mjs";
const { SfuClient } = await import(process.env.SFU_JS);
const { client, errors } = await joinedSpeaker(SfuClient);
let asked = 0;
navigator.mediaDevices.getUserMedia = async () => {
  asked++;
  throw Object.assign(new Error("Could not start audio source"), { name: "NotReadableError" });
};
tracks[0].readyState = "ended";
console.warn = () => {};
sockets[0].drop(1006);
await sleep(1500);
check(client.state === "closed", `state ${client.state} after ${asked} asks`);
check(asked === 4, `asked ${asked} times: once, then three retries`);
check(errors.includes("microphone"), `error events: ${errors}`);
await client.leave();
