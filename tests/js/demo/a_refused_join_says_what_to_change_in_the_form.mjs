// The lobby words a refusal for the form (which field, what is allowed), not
// in the API's terms the server's message uses (that one stays for developers).
import assert from "node:assert/strict";
const { refusalText } = await import(process.env.DEMO_WORDING_JS);
const refused = (code, message) => Object.assign(new Error(message), { code });

// The demo token endpoint's refusals of the room and name fields.
const room = refusalText(refused("bad_room", "room must be 1 to 64 visible characters, in composed form (...)"));
assert.match(room, /^Pick another room name: 1 to 64 characters/);
assert.doesNotMatch(room, /composed form|\bidentity\b/);
const name = refusalText(refused("bad_identity", "identity must be 1 to 64 visible characters, in composed form (...)"));
assert.match(name, /^Pick another name: 1 to 64 characters/);
assert.doesNotMatch(name, /composed form|\bidentity\b/);
assert.equal(
  refusalText(refused("room_moderated", "this room has a moderator already: join and ask to be promoted"), "moderator"),
  "This room already has a moderator: join as a speaker or listener, and ask to be promoted.",
);

// The library's codes (sfu.js SfuError.code).
const taken = refusalText(refused("duplicate_identity", "'ada' is already in room 'hall'; pick another identity or close the other one"));
assert.match(taken, /pick another name\.$/);
assert.doesNotMatch(taken, /identity/);
assert.equal(
  refusalText(refused("room_full", "room 'hall' is full: it holds at most 4 speakers"), "speaker"),
  "The stage is full: join as a listener, and raise your hand to speak.",
);
assert.match(refusalText(refused("room_full", "room 'hall' is full: it holds at most 9 listeners")), /^The room is full/);
assert.match(refusalText(refused("not_allowed", "'eve' was removed from room 'hall' and may not rejoin")), /may not join this room/);
assert.match(refusalText(refused("microphone", "the microphone cannot be opened: NotAllowedError: ...")), /join as a listener\.$/);

// A code the page does not know keeps the message it came with.
assert.equal(refusalText(refused("internal", "internal error (logged on the server)")), "internal error (logged on the server)");
assert.equal(refusalText(new Error("The token request failed (502).")), "The token request failed (502).");
