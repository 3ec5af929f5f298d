// A reconnect whose microphone is busy for a moment (another program holds it:
// NotReadableError) tries again instead of ending the session: once the device
// is free the speaker is back, and the app was not told the microphone is gone.
import { check, joinedSpeaker, sleep, sockets, tracks } from "./fake_browser.mjs";
const { SfuClient } = await import(process.env.SFU_JS);
const { client, errors } = await joinedSpeaker(SfuClient);
const open = navigator.mediaDevices.getUserMedia;
let busy = 2;
let asked = 0;
navigator.mediaDevices.getUserMedia = async (constraints) => {
  asked++;
  if (busy-- > 0) throw Object.assign(new Error("Could not start audio source"), { name: "NotReadableError" });
  return open(constraints);
};
tracks[0].readyState = "ended";   // the device was taken away
console.warn = () => {};
sockets[0].drop(1006);
await sleep(1000);
check(client.state === "joined", `state ${client.state} after ${sockets.length} sockets, ${asked} asks`);
check(asked === 3, `the microphone asked for ${asked} times`);
check(!errors.includes("microphone"), `error events: ${errors}`);
check(client.micTrack && client.micTrack.readyState === "live", "a live microphone again");
await client.leave();
