"""Roster batching: one event per interval however many people join or leave.

A member's client needs to know who is in the room. Telling every member
about every join costs O(joins x members) messages, which a crowd turns into
millions; :class:`RosterBatch` gathers the changes of one interval and emits
a single :class:`~sfu.events.RosterChanged`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from .auth import Role
from .events import RoomEvent, RosterChanged

__all__ = ["RosterBatch"]


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
        self._joined: dict[str, Role] = {}
        self._left: set[str] = set()
        self._updated: dict[str, Role] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._closed = False

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

        Someone who joins and leaves within one interval is in neither list.
        """
        if left:
            if self._joined.pop(identity, None) is None:
                self._left.add(identity)
            self._updated.pop(identity, None)
        elif joined:
            self._left.discard(identity)
            self._joined[identity] = role
        elif identity in self._joined:
            self._joined[identity] = role
        else:
            self._updated[identity] = role
        if self._timer is None and not self._closed:
            self._timer = loop.call_later(self.interval, self.flush)

    def flush(self) -> None:
        self._timer = None
        if not (self._joined or self._left or self._updated):
            return
        event = RosterChanged(
            self.room,
            joined=tuple(self._joined.items()),
            left=tuple(sorted(self._left)),
            updated=tuple(self._updated.items()),
            size=self._size(),
        )
        self._joined, self._left, self._updated = {}, set(), {}
        self._emit(event)

    def close(self) -> None:
        """No more events (the room is closing); idempotent."""
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
