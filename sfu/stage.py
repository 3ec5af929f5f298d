"""Stage: who holds each slot of a room, who is dominant, and the events that tell it.

The Router's ActiveSpeakerDetector decides the holders many times a second;
:class:`Stage` reads them as members (:class:`~sfu.events.SlotInfo`) and
emits :class:`~sfu.events.ActiveSpeakersChanged` (and
:class:`~sfu.events.DominantSpeakerChanged`) when they changed, at most once
per ``stage_interval`` of the room's policy.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from .events import ActiveSpeakersChanged, DominantSpeakerChanged, RoomEvent, SlotInfo

if TYPE_CHECKING:
    from .media.router import Router
    from .participant import Participant
    from .policy import RoomPolicy

__all__ = ["Stage"]


class Stage:
    def __init__(
        self,
        room: str,
        router: Router,
        members: dict[int, Participant],
        policy: RoomPolicy,
        emit: Callable[[RoomEvent], None],
    ) -> None:
        self.room = room
        self._router = router
        self._members = members  # the room's members by number (its own dict, kept current)
        self._policy = policy
        self._emit = emit
        # Holders and dominant as last emitted: an empty stage is not news. (A
        # holder's CSRC is its member's for life: a change of holder is all
        # that can change what receivers map a slot's CSRC to.)
        self._told: tuple[tuple[int, ...], int] = ((-1,) * policy.slots, -1)
        self._emitted = 0.0

    def slot_info(self, number: int) -> SlotInfo | None:
        participant = self._members.get(number)
        if participant is None:
            return None
        publisher = participant.publisher
        level = publisher.level & 0x7F if publisher is not None and publisher.level >= 0 else None
        return SlotInfo(participant.identity, participant.csrc, level)

    def told(self) -> tuple[tuple[SlotInfo | None, ...], str | None]:
        """The stage and dominant speaker as last emitted: a newcomer's snapshot
        must be what the others were told, or a change back before the next
        emission (which then emits nothing) would leave it wrong."""
        holders, dominant = self._told
        return self._slots_of(holders), self._identity_of(dominant)

    def current(self) -> tuple[SlotInfo | None, ...]:
        """Who is in each slot right now (``None``: a free slot)."""
        return self._slots_of(self._router.detector.holders())

    def _slots_of(self, holders: Iterable[int]) -> tuple[SlotInfo | None, ...]:
        return tuple(self.slot_info(number) if number >= 0 else None for number in holders)

    def _identity_of(self, number: int) -> str | None:
        participant = self._members.get(number)
        return participant.identity if participant is not None else None

    def active_speakers(self) -> list[tuple[SlotInfo, float]]:
        """The ranked speakers with their score (0..1), best first; the dominant one leads."""
        ranked = []
        for number, score in self._router.detector.ranking():
            info = self.slot_info(number)
            if info is not None:
                ranked.append((info, score))
        return ranked

    @property
    def dominant(self) -> str | None:
        return self._identity_of(self._router.detector.dominant)

    def check(self, now: float) -> None:
        """Emit stage events when the stage changed, at most once per ``stage_interval``."""
        if now - self._emitted < self._policy.stage_interval:
            return
        detector = self._router.detector
        key = (tuple(detector.holders()), detector.dominant)
        if key == self._told:
            return
        dominant_changed = key[1] != self._told[1]
        self._told = key
        self._emitted = now
        self._emit(ActiveSpeakersChanged(self.room, self.current(), self.dominant))
        if dominant_changed:
            self._emit(DominantSpeakerChanged(self.room, self.dominant))
