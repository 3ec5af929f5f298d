// A speaker whose reconnect is refused with room_full lost its seat on the
// stage (a listener's page plays the live stream instead, and a moderator is
// never refused so): the page says the stage is full and listening is open,
// not that the room is full and another room name should be picked.
import assert from "node:assert/strict";
const { closedText } = await import(process.env.DEMO_WORDING_JS);

const speaker = closedText({ reason: "room_full", code: 0 }, "speaker");
assert.match(speaker, /stage is full/, speaker);
assert.doesNotMatch(speaker, /pick another room name/, speaker);
assert.match(closedText({ reason: "room_full", code: 0 }, "listener"), /The room is full/);
