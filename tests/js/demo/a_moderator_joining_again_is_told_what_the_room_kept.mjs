// The room remembers a moderator's demotion by name: a join that asked for
// the stage or for moderation and did not get it says so, instead of
// overruling the lobby's choice in silence. A moderator seated in the
// audience (a full stage, no microphone) still moderates: nothing to explain.
import assert from "node:assert/strict";
const { overruledText } = await import(process.env.DEMO_WORDING_JS);

const audience = "A moderator moved you to the audience earlier: raise your hand to speak.";
assert.equal(overruledText("speaker", "listener", false), audience);
assert.equal(overruledText("moderator", "listener", false), audience);
assert.equal(overruledText("moderator", "speaker", false), "A moderator took your moderator rights earlier.");
assert.equal(overruledText("moderator", "moderator", true), null);
assert.equal(overruledText("moderator", "listener", true), null);
assert.equal(overruledText("speaker", "speaker", false), null);
assert.equal(overruledText("speaker", "moderator", true), null);
assert.equal(overruledText("listener", "listener", false), null);
