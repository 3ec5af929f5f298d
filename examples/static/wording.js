// What the demo page tells people when they are removed, apart from the DOM
// so that it can be checked under Node (tests/js/demo/).

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
