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
        # Per identity changed in this interval: was it in the roster the
        # clients know (the last event's), and what is it now (None: gone)?
        self._present_before: dict[str, bool] = {}
        self._now: dict[str, Role | None] = {}
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
        if self._timer is None and not self._closed:
            self._timer = loop.call_later(self.interval, self.flush)

    def flush(self) -> None:
        self._timer = None
        if not self._now:
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
        if not (joined or left or updated):
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
