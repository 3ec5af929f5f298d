"""Joins the signaling adapters refused: counted by way in and reason (for
``/metrics``), and logged at INFO at a bounded rate.

A refused join costs its client one request and the log one line: without a
bound, one client sending refused joins as fast as it can (no token needed)
would write the log as fast. Past :data:`LOG_BURST` lines at once, at most
:data:`LOG_PER_SECOND` a second are written; the ones left out are counted,
and the next line written is preceded by one saying how many, by reason.
``/metrics`` counts every one (``sfu_joins_refused_total{via,reason}``).
"""

from __future__ import annotations

import collections
import logging
import time
import weakref
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..transport.server import Server

__all__ = ["LOG_BURST", "LOG_PER_SECOND", "JoinRefusals", "join_refusals"]

#: Refused joins logged at once before the rate applies.
LOG_BURST = 20
#: Then at most this many a second (each server).
LOG_PER_SECOND = 2.0


class JoinRefusals:
    """One server's refused joins: ``counts[via, reason]``, and the log's budget."""

    def __init__(self) -> None:
        self.counts: collections.Counter[tuple[str, str]] = collections.Counter()
        self._tokens = float(LOG_BURST)
        self._at = time.monotonic()
        self._unlogged: collections.Counter[str] = collections.Counter()

    def refused(
        self, logger: logging.Logger, via: str, reason: str, message: str, *args: Any
    ) -> None:
        """Count a join refused (``via``: how it came; ``reason``: an error code
        or an HTTP status) and log ``message % args`` at INFO, unless over the
        rate: then it is counted, and told by the next line written."""
        self.counts[via, reason] += 1
        now = time.monotonic()
        self._tokens = min(float(LOG_BURST), self._tokens + (now - self._at) * LOG_PER_SECOND)
        self._at = now
        if self._tokens < 1.0:
            self._unlogged[reason] += 1
            return
        self._tokens -= 1.0
        if self._unlogged:
            logger.info(
                "%d refused joins were not logged (over %g a second): %s",
                sum(self._unlogged.values()),
                LOG_PER_SECOND,
                ", ".join(f"{count} {reason}" for reason, count in self._unlogged.most_common()),
            )
            self._unlogged.clear()
        logger.info(message, *args)


_of: weakref.WeakKeyDictionary[Server, JoinRefusals] = weakref.WeakKeyDictionary()


def join_refusals(server: Server) -> JoinRefusals:
    """``server``'s refused joins (made on first use)."""
    refusals = _of.get(server)
    if refusals is None:
        refusals = _of[server] = JoinRefusals()
    return refusals
