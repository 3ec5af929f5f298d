// A reconnect whose getUserMedia is refused (microphone unplugged, permission revoked)
// must not retry for ever in silence: it ends with a "microphone" error the app can show.
import { check, joinedSpeaker, sleep, sockets, tracks } from "./fake_browser.mjs";
const { SfuClient } = await import(process.env.SFU_JS);
const { client, errors } = await joinedSpeaker(SfuClient);
tracks[0].readyState = "ended";   // device gone
navigator.mediaDevices.getUserMedia = async () => { throw Object.assign(new Error("Permission denied"), { name: "NotAllowedError" }); };
console.warn = () => {};
sockets[0].drop(1006);
await sleep(1000);
check(client.state === "closed", `state ${client.state} after ${sockets.length} sockets`);
check(errors.includes("microphone"), `error events: ${errors}`);
await client.leave();
