"""Handshakes: the DTLS handshakes under way on the server's port.

A handshake datagram costs up to ~1 ms of CPU (ECDHE, ECDSA), so a crowd
connecting at once would stall the event loop, and with it the media of
those already in a room. The datagrams of sessions not yet connected wait
in one backlog, and at most ``HANDSHAKES_PER_TURN`` are worked on per
event-loop iteration; one session may have only a few waiting, so a client
flooding cannot starve everyone else's. The sessions in handshake also get
their timers here (DTLS retransmissions, ``Server.handshake_timeout``).
"""

from __future__ import annotations

import collections
import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .server import Server
    from .session import Session

__all__ = [
    "HANDSHAKES_PER_TURN",
    "MAX_HANDSHAKE_BACKLOG",
    "MAX_HANDSHAKE_QUEUED_PER_SESSION",
    "Handshakes",
]

logger = logging.getLogger(__name__)

#: DTLS handshake datagrams worked on per event-loop iteration, and the most that may wait.
HANDSHAKES_PER_TURN = 4
#: Handshake datagrams one session may have waiting: a whole flight, which
#: may come at once (uvloop reads a burst before a turn works on any) and be
#: many datagrams (a client certificate chain of several KB, a record per
#: datagram: 12 for 8.6 KB). Fewer, and the flight's tail is dropped at every
#: retransmission alike: the handshake never completes.
MAX_HANDSHAKE_QUEUED_PER_SESSION = 32
MAX_HANDSHAKE_BACKLOG = 8192


class Handshakes:
    """The server's sessions in handshake and their datagrams waiting a turn."""

    def __init__(self, server: Server) -> None:
        self.server = server
        #: Sessions whose address is chosen and whose handshake is not done.
        self.sessions: set[Session] = set()
        self.backlog: collections.deque[tuple[Session, bytes]] = collections.deque()
        self._pump_scheduled = False

    def started(self, session: Session) -> None:
        self.sessions.add(session)

    def done(self, session: Session) -> None:
        """Connected or closed: no more timers for it."""
        self.sessions.discard(session)

    def queue(self, session: Session, data: bytes) -> None:
        """One handshake datagram from ``session``, worked on in its turn."""
        drops = self.server.drops
        if len(self.backlog) >= MAX_HANDSHAKE_BACKLOG:
            drops["dtls handshake backlog full"] += 1  # the client retransmits
            return
        if session.handshake_queued >= MAX_HANDSHAKE_QUEUED_PER_SESSION:
            # A handshake needs a few datagrams: one client flooding cannot fill
            # the backlog and starve everyone else's.
            drops["dtls handshake datagrams over the session's share"] += 1
            return
        session.handshake_queued += 1
        self.backlog.append((session, data))
        if not self._pump_scheduled:
            self._pump_scheduled = True
            self.server.loop.call_soon(self._pump)

    def _pump(self) -> None:
        self._pump_scheduled = False
        backlog = self.backlog
        loop = self.server.loop
        now = loop.time()
        for _ in range(min(HANDSHAKES_PER_TURN, len(backlog))):
            session, data = backlog.popleft()
            session.handshake_queued -= 1
            # (One closed while this waited counts it as "dtls before ice".)
            try:
                session.receive_dtls(data, now)
            except Exception:  # a bug in one session must not stall the others' handshakes
                logger.exception("%r: error in its DTLS handshake", session)
                self.server.drops["dtls handshake error"] += 1
                session.close("internal error in the DTLS handshake")
        if backlog:
            self._pump_scheduled = True
            loop.call_soon(self._pump)

    def check_timers(self, now: float) -> None:
        """Retransmit lost flights, and close sessions past the handshake timeout."""
        timeout = self.server.handshake_timeout
        for session in list(self.sessions):
            try:
                session.handle_timeout(now)
                if session.state != "closed" and now - session.created > timeout:
                    self.server.handshakes_timed_out += 1
                    session.close("handshake timed out")
            except Exception:
                logger.exception("%r: handshake timer failed", session)
