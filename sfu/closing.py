"""Closing: how a room ends, in one place.

A room closes when

- the backend calls ``room.close(reason)``, or ``server.close()`` (every room);
- nothing has held it (members, joins under way, a running mixer) for the
  ``close_when_empty`` seconds of its policy: reason ``"empty"`` (bans do not
  hold it: they end with it, as promotions and mutes do);
- a signaling adapter made it for a join that then failed, and nothing holds
  it and nothing was decided in it: reason ``"unused"`` (a refused request
  must not leave a room behind).

A close has two steps. :meth:`Closing.begin` cannot wait: the room is closed
at once (the name is free, a join raises RoomClosed), the mixer mixes what it
owes, every member is closed (which frees its session) with the reason.
:meth:`Closing.finish` awaits the mixer's close (recordings and live streams
end), closes the Router and emits :class:`~sfu.events.RoomClosed`. Both are
idempotent; :meth:`Closing.finish_now` ends a close whose finish was cancelled.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from .events import RoomClosed as RoomClosedEvent

if TYPE_CHECKING:
    from .room import Room

__all__ = ["Closing"]

logger = logging.getLogger(__name__)


class Closing:
    def __init__(self, room: Room) -> None:
        self.room = room
        self.reason: str | None = None
        self.done: asyncio.Event | None = None  # made when the close begins
        self.task: asyncio.Task[None] | None = None  # a close the room began itself
        # For close_when_empty: joins between their start and their answer, and
        # since when (housekeeping clock) nothing has held the room.
        self.joining = 0
        self.empty_since: float | None = None
        # Made by a signaling adapter for a join (not by the backend): closed
        # again when the joins under way for it all fail, until one succeeds.
        self.made_for_join = False

    @property
    def closed(self) -> bool:
        return self.done is not None

    # -- when --------------------------------------------------------------------------

    def join_started(self) -> None:
        self.joining += 1  # an empty room does not close under a join
        self.empty_since = None

    def join_ended(self, joined: bool) -> None:
        if joined:
            self.made_for_join = False  # it had a member: it stays as any room does
        self.joining -= 1
        if self.joining == 0 and self.made_for_join:
            # The joins it was made for (they may overlap) all failed:
            # the last one closes it. Decided once: later joins are not its.
            self.made_for_join = False
            if not joined:
                self.drop_if_unused()

    def join_undone(self) -> None:
        """A join into a room made for it succeeded, but its client left before
        its answer (its member closed): as if it had failed. The room is one
        made for joins again, closed now if nothing holds it, or when the last
        of those still waiting their turn fails too. (Another member in it:
        it stays, as any room does.)"""
        if self.room._participants:
            return
        self.made_for_join = True
        self.drop_if_unused()

    def held(self) -> bool:
        """Whether anything keeps the room: members, joins or a live mix. Not
        bans: they end with the room, or any moderator could keep one for ever."""
        room = self.room
        return bool(
            room._participants or self.joining or (room._mixer is not None and room._mixer.running)
        )

    def check_empty(self, now: float) -> None:
        if self.held() or self.closed:
            self.empty_since = None
            return
        if self.empty_since is None:
            self.empty_since = now
            return
        room = self.room
        assert room.policy.close_when_empty is not None
        if now - self.empty_since >= room.policy.close_when_empty:
            logger.info("room %r empty for %.0f s: closing", room.name, now - self.empty_since)
            self.close_soon("empty")

    def drop_if_unused(self) -> None:
        """Close a room that a request made for a join that then failed (or
        whose client left before its answer), if nothing holds it and nothing
        was decided in it: a refused request must not leave a room behind."""
        decided = self.room._decisions or self.room._bans
        if not self.closed and not self.held() and not decided:
            # (Logged once, by the close: "room ... closed: unused".)
            logger.debug("room %r closing: the join it was made for failed", self.room.name)
            self.close_soon("unused")

    def close_soon(self, reason: str) -> None:
        # Closed now (the name is free, a join raises RoomClosed); the mixer,
        # if one was ever made, stops in a task.
        if self.begin(reason):
            self.task = self.room.server.loop.create_task(self.finish())
            self.task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            if self.done is not None and not self.done.is_set():
                # Cancelled before it ran (its finally never did): the
                # bookkeeping now, or server.close() would wait for ever.
                self.room.router.close()
                self._bookkeeping(self.reason or "closed")
            return
        if task.exception() is not None:
            logger.error("room %r: closing failed", self.room.name, exc_info=task.exception())

    # -- how ---------------------------------------------------------------------------

    async def close(self, reason: str) -> None:
        """Both steps; a second call returns when the first has finished."""
        if not self.begin(reason):
            if self.done is not None:
                await self.done.wait()
            return
        await self.finish()

    def begin(self, reason: str) -> bool:
        """The part of closing that cannot wait: False if already closed."""
        if self.closed:
            return False
        room = self.room
        self.done = asyncio.Event()
        self.reason = reason
        if room._mixer is not None:
            # What the mixer owes up to now (its task lags under load) is mixed
            # before the speakers go, as recorder.stop() has it: a recording
            # ends at the close, as its speaker files do.
            try:
                room._mixer.catch_up(room.server.loop.time())
            except Exception:
                logger.exception("room %r: mixing the last frames before closing failed", room.name)
        room.server._forget_room(room)
        room._roster.close()
        room._moderation.close()
        for participant in list(room._participants.values()):
            participant._close(f"room closed: {reason}")
        return True

    async def finish(self) -> None:
        assert self.done is not None and self.reason is not None
        reason = self.reason
        room = self.room
        try:
            if room._mixer is not None:
                await room._mixer.close()  # ends recordings and live streams
        finally:
            # Whatever failed above, the room is gone and nobody waits for ever.
            try:
                room.router.close()
            finally:
                self._bookkeeping(reason)

    def finish_now(self) -> None:
        """End a close begun but not finished (the server's close was cancelled
        before it reached this room): the mixer's outputs end now (recordings
        finished), its task at its next frame (the server's close waits for it)."""
        if self.done is None or self.done.is_set():
            return
        assert self.reason is not None
        room = self.room
        try:
            if room._mixer is not None:
                room._mixer._close_now()
            room.router.close()
        finally:
            self._bookkeeping(self.reason)

    def _bookkeeping(self, reason: str) -> None:
        assert self.done is not None
        room = self.room
        room.server._room_closed(room)
        self.done.set()
        logger.info("room %r closed: %s", room.name, reason)
        room._emit(RoomClosedEvent(room.name, reason))
        room._subscribers.clear()
