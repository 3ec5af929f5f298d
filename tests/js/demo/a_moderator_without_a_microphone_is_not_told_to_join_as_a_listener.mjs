// A moderator joining as a listener would lose the room (a listener token
// does not moderate, and the room is this browser's: nobody else may). The
// page enters again without the microphone and says so; its lobby words
// for a moderator do not send it to the listeners.
import assert from "node:assert/strict";
const { refusalText, moderatingFromTheAudience } = await import(process.env.DEMO_WORDING_JS);
const microphone = Object.assign(new Error("the microphone cannot be opened: NotAllowedError: ..."), { code: "microphone" });

const text = refusalText(microphone, "moderator");
assert.match(text, /^Your microphone could not be opened: allow it/, text);
assert.doesNotMatch(text, /listener/, text);
assert.match(refusalText(microphone, "speaker"), /join as a listener\.$/);
assert.match(moderatingFromTheAudience(), /moderate from the audience/);
assert.match(moderatingFromTheAudience(), /Take the stage/);
