// Opened over plain http from another machine, a page gets no microphone
// from the browser: "allow it in the browser" would send the person looking
// for a permission that does not exist. The page says to open it over https.
import assert from "node:assert/strict";
const { refusalText, errorText, moderatingFromTheAudience } = await import(process.env.DEMO_WORDING_JS);
const microphone = Object.assign(new Error("the microphone cannot be opened: this browser gives the page none"), { code: "microphone" });

globalThis.isSecureContext = true;
assert.match(refusalText(microphone, "speaker"), /allow it in the browser/);
assert.doesNotMatch(errorText(microphone), /https/);
globalThis.isSecureContext = false;
for (const text of [refusalText(microphone, "speaker"), refusalText(microphone, "moderator"), errorText(microphone), moderatingFromTheAudience()]) {
  assert.match(text, /https/, text);
  assert.doesNotMatch(text, /allow it in the browser|allow the microphone/, text);
}
assert.match(refusalText(microphone, "speaker"), /listener/);
assert.match(moderatingFromTheAudience(), /moderate from the audience/);
