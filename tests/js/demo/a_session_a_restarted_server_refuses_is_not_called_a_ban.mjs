// After the demo server restarts (a new random token secret), a reconnect is
// refused not_allowed. Where the page can get a new demo token it joins again
// by itself; should that fail, it says the server no longer accepts the
// session, not that a moderator may have removed the person for good.
import assert from "node:assert/strict";
const { restartedText, closedText } = await import(process.env.DEMO_WORDING_JS);
const refused = (code, message) => Object.assign(new Error(message), { code });

for (const text of [restartedText(), restartedText(refused("closed", "Failed to fetch"))]) {
  assert.match(text, /no longer accepts this session \(it may have restarted\)/, text);
  assert.doesNotMatch(text, /removed|signature/, text);
}
assert.match(restartedText(), /join the room again\.$/);
assert.match(restartedText(refused("closed", "Failed to fetch")), /cannot be reached/);
// A ban (refused again with a fresh token) keeps its own words.
assert.match(closedText({ reason: "not_allowed" }), /removed you for good/);
