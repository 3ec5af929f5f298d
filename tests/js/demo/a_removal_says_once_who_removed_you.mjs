// A removed person's page says who removed it once ("Mod removed you: removed
// by a moderator" said it twice): the library's reason for a removal that gave
// none only restates who did it, and is left out; a reason given is kept.
import assert from "node:assert/strict";
const { removalText } = await import(process.env.DEMO_WORDING_JS);

assert.equal(
  removalText({ by: "Mod", reason: "removed by a moderator", banned: false }),
  "A moderator (Mod) removed you from the room.",
);
assert.equal(
  removalText({ by: "Mod", reason: "spam", banned: true }),
  "A moderator (Mod) removed you from the room. Reason: spam. You may not join it again.",
);
assert.equal(removalText({ by: "Mod", reason: "Off topic!", banned: false }), "A moderator (Mod) removed you from the room. Reason: Off topic!");
// The application's own Room.remove (no moderator named): nobody is said to be one.
assert.equal(removalText({ by: null, reason: "removed by a moderator", banned: false }), "The service running this room removed you.");
// The socket closed before the message came.
assert.equal(removalText(null), "You were removed from the room.");
