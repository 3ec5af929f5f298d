"""Roster batching and listing: what members' clients are told of who is in the room.

A member's client needs to know who is in the room. Telling every member
about every join costs O(joins x members) messages, which a crowd turns into
millions; :class:`RosterBatch` gathers the changes of one interval and emits
a single :class:`~sfu.events.RosterChanged`.

Batching bounds the messages, not their bytes: a roster naming all of N
members costs each client O(N) bytes, and a crowd of N O(N²) (a 5,000-member
room's snapshot alone would be ~300 KB per join). :class:`RosterListing`
names only the stage and the first ``RoomPolicy.roster_listeners`` of the
audience; past that, clients learn how many more there are (``size``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from .auth import Role
from .events import RoomEvent, RosterChanged

__all__ = ["RosterBatch", "RosterListing"]

if TYPE_CHECKING:
    from .participant import Participant


class RosterBatch:
    def __init__(
        self,
        room: str,
        interval: float,
        emit: Callable[[RoomEvent], None],
        size: Callable[[], int],
    ) -> None:
        self.room = room
        self.interval = interval
        self._emit = emit
        self._size = size
        # Per identity changed in this interval: was it in the roster the
        # clients know (the last event's), and what is it now (None: gone)?
        self._present_before: dict[str, bool] = {}
        self._now: dict[str, Role | None] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._closed = False
        # The size changed in this interval: the event says it, even when it is
        # back at the last one told (a member who joined in between holds a
        # snapshot with another size).
        self._resized = False

    def change(
        self,
        loop: asyncio.AbstractEventLoop,
        identity: str,
        role: Role,
        *,
        joined: bool = False,
        left: bool = False,
    ) -> None:
        """Note a join, a departure or a role change; the event goes out at the interval's end.

        The event says the net change since the last one: someone who leaves
        and comes back is ``updated``, and anyone gone at the interval's end
        has ``left``, also someone who joined within it (a member who joined
        in between got a snapshot that may list them; a client drops a
        ``left`` name it does not know).
        """
        if identity not in self._present_before:
            # Its first change in this interval tells what the clients know:
            # only someone absent can join; someone present left or changed.
            self._present_before[identity] = not joined
        self._now[identity] = None if left else role
        self._schedule(loop)

    def resized(self, loop: asyncio.AbstractEventLoop) -> None:
        """Note that the room's size changed (someone not named came or went):
        the interval's event tells it, with no names if nothing else changed."""
        self._resized = True
        self._schedule(loop)

    def _schedule(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._timer is None and not self._closed:
            self._timer = loop.call_later(self.interval, self.flush)

    def flush(self) -> None:
        self._timer = None
        resized, self._resized = self._resized, False
        if not self._now and not resized:
            return
        joined, left, updated = [], [], []
        for identity, role in self._now.items():
            before = self._present_before[identity]
            if role is None:
                left.append(identity)
            elif before:
                updated.append((identity, role))
            else:
                joined.append((identity, role))
        self._present_before, self._now = {}, {}
        if not (joined or left or updated or resized):
            return
        event = RosterChanged(
            self.room,
            joined=tuple(joined),
            left=tuple(sorted(left)),
            updated=tuple(updated),
            size=self._size(),
        )
        self._emit(event)

    def close(self) -> None:
        """No more events (the room is closing); idempotent."""
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


class RosterListing:
    """Which members the roster names: the stage, and at most ``limit`` of the audience.

    The stage (speakers and moderators, also a moderator seated in the
    audience) is always named. Listeners are named in the order they came
    while fewer than ``limit`` are; the others are counted in ``size`` only.
    When a named listener leaves or takes the stage, the longest-waiting
    unnamed one is named in its place (a ``joined`` entry to clients that
    never saw it). A member sent back to an audience whose named places are
    all taken is no longer named (a ``left`` entry: clients drop it from
    their list, and ``size`` still counts it) and waits behind the others;
    so however many are promoted and demoted, at most ``limit`` listeners
    are named. ``limit`` None names everyone.

    Every change is decided here, when it happens, and goes through the
    :class:`RosterBatch`, whose events carry the net change of what clients
    were told; a snapshot (the signaling's ``joined`` roster) is
    :meth:`named` at that moment. So a client that applies the events after
    its snapshot ends with the same names as one that joined later.
    """

    def __init__(self, batch: RosterBatch, limit: int | None) -> None:
        self._batch = batch
        self.limit = limit
        self._unnamed: dict[str, Participant] = {}  # in the order they came
        self._named_audience = 0

    @staticmethod
    def in_audience(participant: Participant) -> bool:
        return participant.role == "listener" and not participant.is_moderator

    def is_named(self, identity: str) -> bool:
        return identity not in self._unnamed

    @property
    def unnamed(self) -> int:
        """Members the roster does not name (counted in ``size`` only)."""
        return len(self._unnamed)

    def named(self, members: dict[str, Participant]) -> Iterator[Participant]:
        """The named ones of ``members`` (the room's), in the order they came."""
        unnamed = self._unnamed
        if not unnamed:
            return iter(members.values())
        return (p for p in members.values() if p.identity not in unnamed)

    def joined(self, loop: asyncio.AbstractEventLoop, participant: Participant) -> None:
        if self.in_audience(participant):
            if self.limit is not None and self._named_audience >= self.limit:
                self._unnamed[participant.identity] = participant
                self._batch.resized(loop)
                return
            self._named_audience += 1
        self._batch.change(loop, participant.identity, participant.role, joined=True)

    def left(self, loop: asyncio.AbstractEventLoop, participant: Participant) -> None:
        if self._unnamed.pop(participant.identity, None) is not None:
            self._batch.resized(loop)
            return
        self._batch.change(loop, participant.identity, participant.role, left=True)
        if self.in_audience(participant):
            self._named_audience -= 1
            self._name_the_next(loop)

    def role_changed(
        self, loop: asyncio.AbstractEventLoop, participant: Participant, was_in_audience: bool
    ) -> None:
        """After ``participant``'s role or grants changed (``was_in_audience``: before)."""
        now_in_audience = self.in_audience(participant)
        if participant.identity in self._unnamed:
            if now_in_audience:
                return  # still one of the audience nobody is told of
            del self._unnamed[participant.identity]
            self._batch.change(loop, participant.identity, participant.role, joined=True)
            return
        if now_in_audience and not was_in_audience:
            if self.limit is not None and self._named_audience >= self.limit:
                # No named place left: told as gone from the list, counted in the size.
                self._unnamed[participant.identity] = participant
                self._batch.change(loop, participant.identity, participant.role, left=True)
                return
            self._named_audience += 1
        self._batch.change(loop, participant.identity, participant.role)
        if was_in_audience and not now_in_audience:
            self._named_audience -= 1
            self._name_the_next(loop)

    def _name_the_next(self, loop: asyncio.AbstractEventLoop) -> None:
        while self._unnamed and self.limit is not None and self._named_audience < self.limit:
            identity = next(iter(self._unnamed))
            participant = self._unnamed.pop(identity)
            self._named_audience += 1
            self._batch.change(loop, identity, participant.role, joined=True)
