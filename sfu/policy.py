"""Room settings, checked once when the room is created."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, TypedDict

from ._values import is_int, is_number
from .detector import ActiveSpeakerDetector
from .errors import InvalidSetting

__all__ = ["MAX_SLOTS", "RoomPolicy", "RoomSettings"]

#: The most slot streams a room may give each receiver.
MAX_SLOTS = 16


@dataclass(frozen=True)
class RoomPolicy:
    """What a room allows.

    ``slots``: slot streams per receiver (1..:data:`MAX_SLOTS`, 16). ``max_speakers`` /
    ``max_listeners``: capacity (``None``: unlimited); a join past it raises
    :class:`~sfu.errors.RoomFull`, except a moderator's (seated in the
    audience when the stage is full: see :meth:`sfu.Room.join`). ``private``: every join needs a valid
    token signed with the server's ``token_secret``. ``roster_interval``:
    roster changes are batched into one :class:`~sfu.events.RosterChanged`
    per interval (seconds), so a join storm costs O(joins) events, not
    O(joins x members). ``roster_listeners``: how many listeners the roster
    names to members' clients (the stage is always named; the first to come
    are, and one that leaves is replaced by the longest-waiting other); past
    it, clients are told only the room's ``size``, so in a crowd of N each
    client's roster names at most this many listeners rather than N
    (``None``: everyone is named; see :class:`~sfu.roster.RosterListing`). ``hold``: seconds a quiet slot holder keeps its slot
    before an active speaker may take it. ``decision_interval`` and
    ``thresholds`` (C1, C2, C3 on the immediate, medium and long time
    scales): the dominant-speaker decision of
    :class:`~sfu.detector.ActiveSpeakerDetector` (see ``bench/DETECTOR.md`` for
    how the defaults were chosen; ``None`` keeps them). ``stage_interval``:
    :class:`~sfu.events.ActiveSpeakersChanged` is emitted at most this often.
    ``close_when_empty``: seconds after which a room with no members, no
    join under way and nothing consuming its mix (recording, live stream)
    closes itself with the reason ``"empty"`` and frees its name (``None``,
    the default: it stays until closed). Bans, moderators' promotions and
    mutes end with it, as with any close: bans do not keep a room, or any
    moderator could keep one for ever. Rooms that clients create by name
    (:mod:`sfu.signaling`) should set it, or they add up for as long as the
    server runs (~17 KB each). Once closed, the name is made
    again by whoever asks for it next, with the settings they give: set it
    on a room made by the backend with settings of its own (``private``,
    capacity) only if whatever may re-create it by name (the signaling's
    ``room_settings``) gives the same.
    """

    slots: int = 3
    max_speakers: int | None = None
    max_listeners: int | None = None
    private: bool = False
    roster_interval: float = 0.5
    roster_listeners: int | None = 100
    hold: float = 1.0
    decision_interval: float | None = None
    thresholds: tuple[float, float, float] | None = None
    stage_interval: float = 0.25
    close_when_empty: float | None = None

    def __post_init__(self) -> None:
        # bool is an int to Python: True slots or False max_speakers is a mistake.
        if not is_int(self.slots) or not 1 <= self.slots <= MAX_SLOTS:
            raise InvalidSetting(
                f"slots must be an integer between 1 and {MAX_SLOTS}, got {self.slots!r}"
            )
        for name in ("max_speakers", "max_listeners", "roster_listeners"):
            value = getattr(self, name)
            if value is not None and (not is_int(value) or value < 0):
                raise InvalidSetting(f"{name} must be None or an integer >= 0, got {value!r}")
        if not isinstance(self.private, bool):
            raise InvalidSetting(f"private must be True or False, got {self.private!r}")
        for name in ("roster_interval", "stage_interval", "hold", "decision_interval"):
            value = getattr(self, name)
            if value is None and name == "decision_interval":
                continue
            if not is_number(value):
                raise InvalidSetting(
                    f"{name} must be a number of seconds (an int or float), got {value!r}"
                )
        if not 0 < self.roster_interval <= 60:
            raise InvalidSetting(
                f"roster_interval must be in (0, 60] seconds, got {self.roster_interval!r}"
            )
        if not 0.05 <= self.stage_interval <= 60:
            raise InvalidSetting(
                f"stage_interval must be in [0.05, 60] seconds, got {self.stage_interval!r}"
            )
        if self.close_when_empty is not None and not (
            is_number(self.close_when_empty) and 0 < self.close_when_empty <= 86400
        ):
            raise InvalidSetting(
                "close_when_empty must be None or a number of seconds in (0, 86400], "
                f"got {self.close_when_empty!r}"
            )
        if not 0 <= self.hold <= 60:
            raise InvalidSetting(f"hold must be in [0, 60] seconds, got {self.hold!r}")
        if self.thresholds is not None and not (
            isinstance(self.thresholds, tuple)
            and len(self.thresholds) == 3
            and all(is_number(value) for value in self.thresholds)
        ):
            raise InvalidSetting(
                f"thresholds must be a tuple (c1, c2, c3) of finite numbers, got {self.thresholds!r}"
            )
        try:
            ActiveSpeakerDetector(self.slots, **self.detector_settings())
        except (ValueError, TypeError) as exc:
            raise InvalidSetting(f"invalid active-speaker setting: {exc}") from None

    def detector_settings(self) -> dict[str, Any]:
        """Keyword arguments for :class:`~sfu.detector.ActiveSpeakerDetector` (its defaults where unset)."""
        settings: dict[str, Any] = {"hold": self.hold}
        if self.decision_interval is not None:
            settings["interval"] = self.decision_interval
        if self.thresholds is not None:
            settings["c1"], settings["c2"], settings["c3"] = self.thresholds
        return settings


def policy_of(settings: Mapping[str, object]) -> RoomPolicy:
    """The :class:`RoomPolicy` of ``settings`` (:class:`RoomSettings`), checked.

    Raises :class:`~sfu.errors.InvalidSetting` for a value ``RoomPolicy``
    refuses, and for a name it does not have, saying which names it has
    (a misspelt ``slot`` is not taken for ``slots``).
    """
    if not isinstance(settings, Mapping):
        raise InvalidSetting(
            f"room settings must be a mapping of RoomPolicy fields, got {type(settings).__name__}"
        )
    known = [field.name for field in fields(RoomPolicy)]
    unknown = [name for name in settings if name not in known]
    if unknown:
        raise InvalidSetting(
            f"unknown room setting {', '.join(f'{name!r:.40}' for name in unknown)}; "
            f"the settings are {', '.join(known)}"
        )
    return RoomPolicy(**settings)  # type: ignore[arg-type]  # (the values are checked there)


class RoomSettings(TypedDict, total=False):
    """The settings ``server.room(name, **settings)`` and the signaling
    adapters' ``room_settings`` take: :class:`RoomPolicy`'s fields, each
    optional (left out: its default), so that a type checker sees a
    misspelt or mistyped one. ``tests/test_typing.py`` keeps the two alike."""

    slots: int
    max_speakers: int | None
    max_listeners: int | None
    private: bool
    roster_interval: float
    roster_listeners: int | None
    hold: float
    decision_interval: float | None
    thresholds: tuple[float, float, float] | None
    stage_interval: float
    close_when_empty: float | None
