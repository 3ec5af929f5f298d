"""The signaling protocol's messages: client frames read, server frames built.

The JSON of ``docs/signaling.md``, without a connection: a client's text
frame is checked and decoded into a command with :func:`parse_command`, and
a command's fields are read with :func:`field`; bad input raises
:class:`ProtocolError`, whose code the ``error`` reply carries. The server's
frames (``joined``, and those that tell a member of room events) are built
here from the room as it is and from its events. The connection that reads
and sends them is :class:`~sfu.signaling.protocol.SignalingSession`.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from ..errors import (
    DuplicateIdentity,
    InvalidOffer,
    InvalidSetting,
    NotAllowed,
    NotFound,
    ParticipantClosed,
    RoomClosed,
    RoomFull,
)
from ..events import (
    ActiveSpeakersChanged,
    DominantSpeakerChanged,
    EventStream,
    HandLowered,
    HandRaised,
    HandsChanged,
    MixerFailed,
    MuteChanged,
    ParticipantConnected,
    ParticipantJoined,
    ParticipantRemoved,
    RoleChanged,
    RoomEvent,
    RosterChanged,
    SlotInfo,
)

if TYPE_CHECKING:
    from ..participant import Participant
    from ..room import Room

__all__ = [
    "AUDIENCE_PAGE",
    "MAX_MESSAGE",
    "ProtocolError",
    "error_code",
    "Json",
    "RoomFrames",
    "audience_message",
    "encode",
    "error_message",
    "event_message",
    "field",
    "joined_message",
    "parse_command",
    "removed_message",
    "room_closed_message",
]

#: Most listeners one ``audience`` reply lists.
AUDIENCE_PAGE = 100

#: Largest text frame answered normally (bytes of UTF-8); larger ones get ``too_large``.
MAX_MESSAGE = 64 * 1024

_ERROR_CODES: list[tuple[type[BaseException], str]] = [
    (InvalidOffer, "invalid_offer"),
    (NotAllowed, "not_allowed"),
    (RoomFull, "room_full"),
    (DuplicateIdentity, "duplicate_identity"),
    (RoomClosed, "room_closed"),
    (InvalidSetting, "bad_message"),
    (NotFound, "not_found"),
    (ParticipantClosed, "session_ended"),
    (KeyError, "not_found"),
]


class ProtocolError(Exception):
    """A frame or command the protocol refuses; ``code`` is the ``error`` reply's."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def error_code(exc: BaseException) -> str:
    """The ``error`` reply's code for an error of the room's (``sfu.errors``)."""
    for kind, code in _ERROR_CODES:
        if isinstance(exc, kind):
            return code
    return "bad_message"


# -- client frames -----------------------------------------------------------------


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e400: JSON has no Infinity either
        raise ValueError(f"{text[:20]} is not a finite number")
    return value


def _no_constant(name: str) -> Any:
    """JSON's NaN and Infinity are not JSON (RFC 8259): refused, as a browser could
    not read them back (an ``id`` is echoed in the reply)."""
    raise ValueError(f"{name} is not JSON")


def parse_command(text: str) -> dict[str, Any]:
    """A client's text frame as a command: a JSON object of at most
    MAX_MESSAGE bytes whose ``id``, if any, can be echoed (not an object or
    array). Its ``type`` and other fields are the caller's to check."""
    if len(text) > MAX_MESSAGE or len(text.encode("utf-8", "surrogatepass")) > MAX_MESSAGE:
        raise ProtocolError("too_large", f"messages are limited to {MAX_MESSAGE} bytes")
    try:
        message = json.loads(text, parse_constant=_no_constant, parse_float=_finite)
    except (ValueError, RecursionError):
        raise ProtocolError("bad_json", "the message is not valid JSON") from None
    if not isinstance(message, dict):
        raise ProtocolError("bad_message", "a message must be a JSON object")
    if isinstance(message.get("id"), (dict, list)):
        raise ProtocolError("bad_message", "'id' must be a string or a number")
    return message


def field(
    message: dict[str, Any], name: str, kind: type, *, required: bool = True, default: Any = None
) -> Any:
    """A command's field ``name``, of type ``kind`` (a bool is no int here)."""
    value = message.get(name, default)
    if value is None:
        if required:
            raise ProtocolError("bad_message", f"{message['type']!r} needs a {name!r} field")
        return default
    if kind is bool:
        valid = isinstance(value, bool)
    else:
        valid = isinstance(value, kind) and not isinstance(value, bool)
    if not valid:
        raise ProtocolError("bad_message", f"{name!r} must be a {kind.__name__}")
    return value


# -- server frames -----------------------------------------------------------------


def error_message(code: str, message: str, message_id: Any = None) -> dict[str, Any]:
    return {"type": "error", "code": code, "message": message, "id": message_id}


def _stage(slots: tuple[SlotInfo | None, ...], dominant: str | None) -> dict[str, Any]:
    """Who is in each slot, as ``joined`` and ``active_speakers`` carry it."""
    return {
        "slots": [None if info is None else dataclasses.asdict(info) for info in slots],
        "dominant": dominant,
    }


def joined_message(
    room: Room, participant: Participant, frames: RoomFrames | None = None
) -> dict[str, Any]:
    """The reply to a ``join``: the new member's own state and the room as it is now.

    With ``frames``, the roster is its text (:class:`Json`), from entries
    kept since the previous join: :func:`encode` puts it in as it is.
    """
    hands = room.hands
    return {
        "type": "joined",
        "identity": participant.identity,
        "role": participant.role,
        "grants": sorted(participant.grants),
        "answer": participant.answer,
        "room": room.name,
        "slots": room.slots,
        "mixed": participant.mixed,
        "roster": frames.roster(room, hands)
        if frames is not None
        else [_roster_entry(p, *_roster_state(p, set(hands))) for p in _named(room)],
        "size": len(room._participants),
        "hands": room._moderation.listed_hands(),
        "hands_total": len(hands),
        "active_speakers": _stage(*room._told_stage()),
    }


_RosterState = tuple[str, bool, bool, bool, bool, bool]


def _named(room: Room) -> Iterator[Participant]:
    """The members the roster names (see :class:`sfu.roster.RosterListing`), in the order they came."""
    return room._listing.named(room._participants)


def _roster_state(p: Participant, hands: set[str]) -> _RosterState:
    return (p.role, p.muted, p.moderator_muted, p.identity in hands, p.can_speak, p.is_moderator)


def _roster_entry(
    p: Participant,
    role: str,
    muted: bool,
    moderator_muted: bool,
    hand: bool,
    can_speak: bool,
    moderates: bool,
) -> dict[str, Any]:
    entry = {
        "identity": p.identity,
        "role": role,
        "muted": muted,
        "moderator_muted": moderator_muted,
        "hand": hand,
        "can_speak": can_speak,
    }
    _say_moderates(entry, role, moderates)
    return entry


def _say_moderates(entry: dict[str, Any], role: str, moderates: bool) -> None:
    """Put ``moderates`` in a roster entry only when its role does not say it
    (a storm's rosters stay small): a "speaker" invited from the audience with
    a moderator's token moderates, a "moderator" whose token withheld the
    grant does not."""
    if moderates != (role == "moderator"):
        entry["moderates"] = moderates


def audience_message(
    room: Room, offset: int, limit: int, after: int | None = None
) -> dict[str, Any]:
    """The reply to ``audience``: ``limit`` listeners in the order they came,
    named by the roster or not, from ``offset`` or, given ``after`` (the
    ``next`` of an earlier reply), from the first who came after the last one
    that reply listed; and how many listen (a moderator seated in the
    audience is of the stage, as the roster says).

    ``next`` is a member's number: numbers grow in the order members joined
    (a member's place in ``room._participants``) and are never reused, so
    members leaving between two pages do not shift the second, as they
    shift an offset (one who came before the page's start and left would
    make the next page skip someone)."""
    raised = set(room.hands)
    in_audience = room._listing.in_audience
    audience = [p for p in room._participants.values() if in_audience(p)]
    if after is None:
        page = audience[offset : offset + limit]
        before = audience[:offset][-1:]  # the page's start, were it empty
    else:
        page = [p for p in audience if p.number > after][:limit]
        before = []
    if page:
        next_after = page[-1].number
    else:
        next_after = before[0].number if before else (after or 0)
    return {
        "type": "audience",
        "offset": offset,
        "members": [_roster_entry(p, *_roster_state(p, raised)) for p in page],
        "listeners": len(audience),
        "next": next_after,
    }


def event_message(event: RoomEvent, participant: Participant) -> dict[str, Any] | None:
    """What tells ``participant`` of a room event that leaves its connection
    open (a roster change, hands, a role, a mute, the stage); None for any other."""
    if isinstance(event, RosterChanged):
        room = participant.room

        def entry(identity: str, role: str) -> dict[str, Any]:
            # The mute as it is now: a `muted` event about a member this
            # client did not know yet (it joined within the batch) came before.
            member = room.get(identity)
            told: dict[str, Any] = {
                "identity": identity,
                "role": role,
                "muted": bool(member and member.muted),
                # Which of the two mutes a moderator can lift (a self-mute is not).
                "moderator_muted": bool(member and member.moderator_muted),
                "can_speak": bool(member and member.can_speak),
            }
            _say_moderates(told, role, member is not None and member.is_moderator)
            return told

        return {
            "type": "roster",
            "joined": [entry(i, r) for i, r in event.joined],
            "left": list(event.left),
            "updated": [entry(i, r) for i, r in event.updated],
            "size": event.size,
        }
    if isinstance(event, HandsChanged):
        return {"type": "hands", "hands": list(event.hands), "total": event.total}
    if isinstance(event, (HandRaised, HandLowered)):
        # A member's stream has only its own (MEMBER_SCOPED_EVENTS): the
        # others' come batched, as HandsChanged.
        if event.identity != participant.identity:
            return None
        if isinstance(event, HandRaised):
            return {"type": "hand", "raised": True, "by": None}
        return {"type": "hand", "raised": False, "by": event.by}
    if isinstance(event, RoleChanged):
        message: dict[str, Any] = {
            "type": "role_changed",
            "identity": event.identity,
            "role": event.role,
            "by": event.by,
            "renegotiate": event.renegotiate,
            "moderates": event.moderates,
        }
        if event.identity == participant.identity:
            # What the role now lets this client do (a token may have widened it).
            message["grants"] = sorted(participant.grants)
        return message
    if isinstance(event, MuteChanged):
        return {
            "type": "muted",
            "identity": event.identity,
            "muted": event.muted,
            "by": event.by,
            "moderator_muted": event.moderator_muted,
            "self_muted": event.self_muted,
        }
    if isinstance(event, ActiveSpeakersChanged):
        return {"type": "active_speakers", **_stage(event.slots, event.dominant)}
    return None


class Json(str):
    """A value already encoded as JSON: :func:`encode` puts it in as it is."""


def encode(message: dict[str, Any]) -> str:
    """A server frame's text (its :class:`Json` values last, as they are)."""
    if not any(isinstance(value, Json) for value in message.values()):
        return json.dumps(message, separators=(",", ":"))
    plain = {key: value for key, value in message.items() if not isinstance(value, Json)}
    text = json.dumps(plain, separators=(",", ":"))
    encoded = ",".join(
        f"{json.dumps(key)}:{value}" for key, value in message.items() if isinstance(value, Json)
    )
    return f"{text[:-1]},{encoded}}}" if plain else f"{{{encoded}}}"


def _may_change_an_entry(event: RoomEvent) -> bool:
    """Whether ``event`` may change the roster (who, and each one's role, mutes, hand)."""
    return not isinstance(
        event,
        (
            ParticipantConnected,
            RosterChanged,
            HandsChanged,  # (HandRaised and HandLowered say it)
            ActiveSpeakersChanged,
            DominantSpeakerChanged,
            MixerFailed,
        ),
    )


#: The events whose message is the same whoever it goes to (a role change
#: too, unless it is the receiver's own: that one carries its grants).
_SAME_FOR_ALL = (RosterChanged, HandsChanged, MuteChanged, ActiveSpeakersChanged)


class RoomFrames:
    """What a room's members are sent alike, encoded once rather than per member.

    In a crowd of N members the same frame goes to each: built and encoded
    per member, a join storm of N cost N²/2 of each (at N = 1,000, ~1.5 ms
    of CPU per join for the roster batches and ~1 ms for the ``joined``
    snapshots' rosters).

    * :meth:`event_text`: the text of an event that tells every member the
      same thing (a roster batch, hands, a mute, the stage), built for the
      first member's relay and sent to the others as it is. Each is the room
      as it was then; a change after that is an event of its own, behind it
      in every queue, so every member ends at the same state. Keyed by the
      event object, not its value: two equal ``HandRaised`` are two moments.
    * :meth:`roster`: the ``joined`` roster, from each member's entry
      encoded when it joined. The room's events since the previous roster
      say what may have changed: when they are only joins of new members
      (a join storm), their entries are added and nothing else is looked
      at; after any other change (a leave, a role, a mute, a hand) every
      entry is checked against its member and re-encoded if it changed.
      Every such change is an event (it is how members already in the room
      learn of it), so the first way misses none. The one field without an
      event of its own, ``can_speak`` (from ``Participant.renegotiates``),
      must be set before the join yields to the loop, as the WHIP/WHEP
      adapter does and the README says; later, the entry keeps the old value
      until the next full check, as members told by a roster batch do.
    """

    #: Events remembered; a relay that falls this far behind builds its own.
    #: (A join storm's roster batch is ~30 KB: a room holds at most ~1 MB.)
    SIZE = 32
    #: Room events kept between two rosters; past that, every entry is checked.
    CHANGES = 4096

    def __init__(self) -> None:
        self._texts: dict[int, tuple[RoomEvent, str | None]] = {}
        self._entries: dict[str, tuple[_RosterState, str]] = {}
        self._changes: EventStream | None = None

    def roster(self, room: Room, hands: list[str]) -> Json:
        """The roster entry of every member it names, as a JSON array."""
        if not self._only_joins_since(room, hands):
            self._check_every_entry(room, hands)
        return Json("[" + ",".join(text for _, text in self._entries.values()) + "]")

    def _only_joins_since(self, room: Room, hands: list[str]) -> bool:
        """Add the members who joined since the last roster, if the room's
        events since are only their joins; False if anything else happened."""
        changes = self._changes
        if changes is None:
            self._changes = room.events(self.CHANGES, accept=_may_change_an_entry)
            return False
        queued = changes._events
        joined = []
        only_joins = changes.dropped == 0
        changes.dropped = 0
        while queued:
            event = queued.popleft()
            if (
                only_joins
                and isinstance(event, ParticipantJoined)
                and event.identity not in self._entries
            ):
                joined.append(event.identity)
            else:
                only_joins = False
        if not only_joins:
            return False
        raised = set(hands)
        listing = room._listing
        for identity in joined:
            member = room.get(identity)
            if member is None:
                return False
            if not listing.is_named(identity):
                continue  # counted in the size only
            state = _roster_state(member, raised)
            self._entries[identity] = (state, encode(_roster_entry(member, *state)))
        # The same members: those named before, and the new ones named.
        return len(self._entries) == len(room._participants) - listing.unnamed

    def _check_every_entry(self, room: Room, hands: list[str]) -> None:
        raised = set(hands)
        kept = self._entries
        entries: dict[str, tuple[_RosterState, str]] = {}
        for p in _named(room):
            state = _roster_state(p, raised)
            entry = kept.get(p.identity)
            if entry is None or entry[0] != state:
                entry = (state, encode(_roster_entry(p, *state)))
            entries[p.identity] = entry
        self._entries = entries  # those who left are forgotten

    def event_text(self, event: RoomEvent, participant: Participant) -> str | None:
        """``event_message(event, participant)`` encoded; None when it tells nothing."""
        if not isinstance(event, _SAME_FOR_ALL) and not (
            isinstance(event, RoleChanged) and event.identity != participant.identity
        ):
            message = event_message(event, participant)
            return None if message is None else encode(message)
        kept = self._texts.get(id(event))
        if kept is not None and kept[0] is event:
            return kept[1]
        message = event_message(event, participant)
        text = None if message is None else encode(message)
        if len(self._texts) >= self.SIZE:
            del self._texts[next(iter(self._texts))]  # the oldest
        self._texts[id(event)] = (event, text)  # held: its id is not reused meanwhile
        return text


def removed_message(event: ParticipantRemoved) -> dict[str, Any]:
    return {"type": "removed", "reason": event.reason, "by": event.by, "banned": event.banned}


def room_closed_message(reason: str) -> dict[str, Any]:
    return {"type": "room_closed", "reason": reason}
