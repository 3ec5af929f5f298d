// What the demo page tells people when a join is refused or they are removed,
// apart from the DOM so that it can be checked under Node (tests/js/demo/).
// The refusal codes are the library's (SfuError.code in /sfu.js, the error
// codes of docs/signaling.md) and the demo token endpoint's (`code` in the
// JSON of a refused POST /api/token, examples/demo_server.py); their own
// messages speak of API fields and stay available to developers (the page
// puts them in the error's title and the console).

const NAME_RULE =
  "1 to 64 characters that show (letters, digits, punctuation, emoji), with single spaces " +
  "and no invisible or control characters";

const REFUSALS = {
  // The demo token endpoint's.
  bad_room: `Pick another room name: ${NAME_RULE}, and not just dots.`,
  bad_identity: `Pick another name: ${NAME_RULE}.`,
  name_taken: "Someone else uses this name in this room: pick another name.",
  room_moderated: "This room already has a moderator: join as a speaker or listener, and ask to be promoted.",
  room_owned:
    "Someone else opened this room and moderates it: join as a speaker or listener, or pick another room name.",
  too_many_rooms: "You opened many rooms in a short time: join one of them, or wait a minute before opening another.",
  busy: "The server is busy: try again later.",
  // The library's.
  duplicate_identity:
    "Someone in this room already has that name (you, in another tab?): leave there first, or pick another name.",
  not_allowed:
    "You may not join this room: a moderator may have removed you for good, or the link you came by " +
    "is no longer valid.",
  room_closed: "This room has just closed: try again in a moment, or pick another room name.",
  not_found: "There is no room of that name: check the room name.",
  microphone: "Your microphone could not be opened: allow it in the browser, or join as a listener.",
  invalid_offer: "The server cannot use this browser's audio: try another browser.",
  rate_limited: "Too many tries in a short time: wait a moment, then try again.",
  timeout: "The server did not answer in time: try again.",
  closed: "The server cannot be reached: check your connection, then try again.",
};

/**
 * The lobby's words for a refused join: what to change in the form, where
 * there is something to change. `role` is the role the join asked for.
 * An error with no code the page knows keeps its own message.
 */
export function refusalText(err, role = "listener") {
  if (err && err.code === "room_full") {
    // (A moderator is never turned away for capacity; a listener is offered the live stream.)
    return role === "speaker"
      ? "The stage is full: join as a listener, and raise your hand to speak."
      : "The room is full: try again later, or pick another room name.";
  }
  return (err && REFUSALS[err.code]) || (err && err.message) || String(err);
}

/**
 * The library's reason for a removal that gave none (Room.remove, the
 * signaling's `remove`): it says no more than who did it.
 */
const UNSTATED_REASON = "removed by a moderator";

/**
 * What a removed person's page says, from sfu.js's "removed" event:
 * `by` is the moderator who removed it (null: the application did, through
 * the server's API), `reason` what the remover gave, `banned` whether it
 * may come back. Without the event (the socket closed before it came), null.
 */
export function removalText(detail) {
  if (!detail) return "You were removed from the room.";
  const { by = null, reason = "", banned = false } = detail;
  const who = by ? `A moderator (${by}) removed you from the room.` : "The service running this room removed you.";
  const said = (reason || "").trim();
  const why = said && said !== UNSTATED_REASON ? ` Reason: ${said}${/[.!?…]$/.test(said) ? "" : "."}` : "";
  const again = banned ? " You may not join it again." : "";
  return who + why + again;
}

/**
 * What the page says when the session ended without the person leaving, the
 * room closing or a removal (each of which has its own notice): sfu.js's
 * "closed" event's `reason` is "disconnected", "replaced", or the code of
 * the error that refused its reconnect. `role` is the role it had (a
 * speaker refused with room_full lost its seat on the stage).
 */
export function closedText(detail, role = "listener") {
  const reason = (detail && detail.reason) || "disconnected";
  if (reason === "disconnected") return "The connection to the room was lost.";
  if (reason === "replaced") {
    return "You joined this room again from another tab or device, so this page left it.";
  }
  if (reason === "duplicate_identity") {
    return (
      "The connection was lost, and someone with your name is in the room now (you, in another tab?): " +
      "leave there first, then join again."
    );
  }
  if (reason === "not_found") return "The connection was lost, and the room has ended meanwhile.";
  if (reason === "room_full" || REFUSALS[reason]) {
    return `The connection was lost, and joining again did not work. ${refusalText({ code: reason }, role)}`;
  }
  return `The connection to the room was lost (${reason}).`;
}
