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
  if (err && err.code === "microphone" && !secureContext()) {
    return role === "moderator" ? INSECURE_PAGE : `${INSECURE_PAGE} Join as a listener meanwhile.`;
  }
  if (err && err.code === "microphone" && role === "moderator") {
    // (The page then enters again without it: a moderator moderates from the audience.)
    return "Your microphone could not be opened: allow it in the browser, then join again.";
  }
  return (err && REFUSALS[err.code]) || (err && err.message) || String(err);
}

// A browser gives a page a microphone only in a secure context: over https,
// or at localhost (a demo opened at http://192.0.2.10:8080 has none).
const INSECURE_PAGE =
  "This page is not on https (nor at localhost), so the browser gives it no microphone: " +
  "open it at an https:// address to speak.";
const secureContext = () => globalThis.isSecureContext !== false;

/**
 * A moderator's microphone could not be opened, so the page entered again
 * without it (sfu.js `publish: false`): seated in the audience, still moderating.
 */
export function moderatingFromTheAudience() {
  const remedy = secureContext()
    ? "allow the microphone in the browser, then use Take the stage on your own card"
    : "the browser gives a page not on https (nor at localhost) no microphone: open it at an https:// address to speak";
  return `Your microphone could not be opened, so you moderate from the audience: ${remedy}.`;
}

/**
 * The room remembers a moderator's demotion by name: a join that asked for
 * more (the lobby's `asked` role) lands where the room put it. Said, so that
 * the choice made in the lobby is not silently overruled; null when it was not.
 * `role` and `moderates` are what the join got (SfuClient role, isModerator).
 */
export function overruledText(asked, role, moderates) {
  if (moderates || (asked !== "speaker" && asked !== "moderator")) return null;
  if (role === "listener") return "A moderator moved you to the audience earlier: raise your hand to speak.";
  if (asked === "moderator") return "A moderator took your moderator rights earlier.";
  return null;
}

// Commands refused in the room (moderation, hands, mutes): the server's
// message names identities and rooms in the API's terms ("'ada' is not in
// room 'hall'"); the toast says what happened.
const COMMAND_ERRORS = {
  not_found: "That person is no longer in the room.",
  not_allowed: "You may not do that now: your role in the room may have changed.",
  room_full: "The stage is full: wait for a seat to free up.",
  rate_limited: "Too many actions in a short time: wait a moment, then try again.",
  timeout: "The server did not answer in time: try again.",
  closed: "The connection to the room is down: try again once it is back.",
  session_ended: "The server ended this connection: the page joins again.",
  microphone: "Your microphone could not be opened: allow it in the browser to speak.",
  negotiation: "The audio connection could not be updated: leave the room and join again.",
  internal: "The server failed to do that (a bug, logged on the server).",
};

/**
 * The toast for sfu.js's "error" event (a refused command, a microphone that
 * could not be opened...): worded for the person; the page puts the server's
 * own message in the console.
 */
export function errorText(err) {
  if (err && err.code === "microphone" && !secureContext()) return INSECURE_PAGE;
  return (err && COMMAND_ERRORS[err.code]) || "That did not work (the browser's console says why).";
}

/**
 * The notice when the server refused a reconnect with `not_allowed` and the
 * page, which can ask for demo tokens, could not enter again with a fresh
 * one: the server no longer takes this session's token (a restart gives it
 * a new secret). `err` is why entering again failed (null: not tried).
 */
export function restartedText(err = null, role = "listener") {
  const why = "The server no longer accepts this session (it may have restarted)";
  return err ? `${why}, and joining again did not work. ${refusalText(err, role)}` : `${why}: join the room again.`;
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
