// A toast says what happened in the page's words, never the server's message
// in the API's terms ("'L3' is not in room 'r3'"), which goes to the console.
// A command's not_found is about a person, not a room (the lobby's refusal
// of a join speaks of rooms).
import assert from "node:assert/strict";
const { errorText, refusalText } = await import(process.env.DEMO_WORDING_JS);
const refused = (code, message) => Object.assign(new Error(message), { code });

const gone = errorText(refused("not_found", "'L3' is not in room 'r3'"));
assert.equal(gone, "That person is no longer in the room.");
assert.notEqual(gone, refusalText(refused("not_found", "")));
for (const code of ["not_allowed", "room_full", "rate_limited", "timeout", "closed", "microphone", "internal", "something_new"]) {
  const text = errorText(refused(code, `raw ${code} message from the server`));
  assert.doesNotMatch(text, /raw|server's message|\b[a-z]+_[a-z_]+\b/, `${code}: ${text}`);
  assert.match(text, /[.]$/, `${code}: ${text}`);
}
assert.match(errorText(refused("rate_limited", "")), /wait a moment/);
