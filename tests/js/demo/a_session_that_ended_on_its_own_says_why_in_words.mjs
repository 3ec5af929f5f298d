// A session that ended without the person leaving says why in the page's
// words, not with sfu.js's reason code: a reconnect refused because another
// tab holds the name, a connection another tab took over, a lost network.
import assert from "node:assert/strict";
const { closedText, refusalText } = await import(process.env.DEMO_WORDING_JS);

const codes = (text) => text.match(/\b[a-z]+_[a-z_]+\b/g);
for (const reason of ["duplicate_identity", "replaced", "disconnected", "not_allowed", "room_full", "microphone"]) {
  const text = closedText({ reason, code: 0 });
  assert.equal(codes(text), null, `${reason}: ${text}`);
  assert.match(text, /\.$/, `${reason}: ${text}`);
}
assert.match(closedText({ reason: "duplicate_identity" }), /someone with your name is in the room now/);
assert.match(closedText({ reason: "replaced" }), /another tab or device/);
assert.equal(closedText({ reason: "disconnected", code: 1006 }), "The connection to the room was lost.");
assert.ok(closedText({ reason: "not_allowed" }).endsWith(refusalText({ code: "not_allowed" })));
assert.match(closedText({ reason: "room_full" }), /The room is full/);
// The room it was in is gone: no room name to check, as a lobby refusal says.
assert.match(closedText({ reason: "not_found" }), /room has ended/);
// A reason the page has no words for is still named, for whoever debugs it.
assert.match(closedText({ reason: "something_new" }), /\(something_new\)\.$/);
