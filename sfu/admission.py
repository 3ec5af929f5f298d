"""Admission: how many joins may run in one turn of the event loop.

A join costs ~0.4 ms of CPU here (SDP, answer, session; its DTLS handshake,
~0.5 ms more, is paced by the server separately). When a crowd arrives
(1,000 offers at once), asyncio would run every ready join in one loop
iteration, and timers, STUN answers and the media of people already in the
room would wait for all of them. :class:`Admission` lets ``per_turn`` joins
run per iteration, first come first served, so one iteration stays short;
the crowd is admitted a few milliseconds apart instead of all at once.
"""

from __future__ import annotations

import asyncio
import collections

__all__ = ["Admission"]


class Admission:
    def __init__(self, per_turn: int = 4) -> None:
        if per_turn < 1:
            raise ValueError(f"per_turn must be >= 1, got {per_turn}")
        self.per_turn = per_turn
        self._used = 0  # joins running in this loop iteration
        self._woken = 0  # waiters released for the next iteration
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._scheduled = False

    def __len__(self) -> int:
        """Joins waiting for their turn."""
        return len(self._waiters)

    async def turn(self) -> None:
        """Return when this join may run (at once while the turn has room). Safe to cancel."""
        loop = asyncio.get_running_loop()
        # Joins woken for the next iteration have not run yet: one arriving
        # now waits behind them (first come, first served).
        if self._used < self.per_turn and not self._waiters and not self._woken:
            self._used += 1
            self._schedule(loop)
            return
        future: asyncio.Future[None] = loop.create_future()
        self._waiters.append(future)
        self._schedule(loop)
        await future

    def _schedule(self, loop: asyncio.AbstractEventLoop) -> None:
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._next_turn, loop)

    def _next_turn(self, loop: asyncio.AbstractEventLoop) -> None:
        """A new loop iteration: a fresh budget, spent on the oldest waiters.

        A waiter released here runs in the *next* iteration (its task wakes
        then), so it is counted there: the joins released last time are this
        iteration's first ones, and new arrivals get what they leave.
        """
        self._scheduled = False
        self._used = self._woken
        self._woken = 0
        while self._waiters and self._woken < self.per_turn:
            future = self._waiters.popleft()
            if not future.done():  # a cancelled join gives its place away
                future.set_result(None)
                self._woken += 1
        if self._waiters or self._used or self._woken:
            self._schedule(loop)
