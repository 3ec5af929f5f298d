"""What a room keeps about identities for when they come back.

:class:`Bans` keeps out those removed with a ban (and the tokens they were
removed with); :class:`Decisions` keeps what moderators decided about an
identity (its role, a moderator's mute); a :class:`Grace` lets a member that
dropped reconnect past a cap for a while, as the room had it. A join
(:mod:`sfu.gate`) checks all three; moderators ban and decide
(:mod:`sfu.moderation`), a member's departure opens a grace
(:class:`~sfu.room.Room`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

__all__ = ["MAX_DECISIONS", "Bans", "Decisions", "Grace"]

logger = logging.getLogger(__name__)

#: Identities not in the room whose moderation decisions a room keeps; past
#: that, the one decided longest ago is forgotten (its next join is as its
#: token says). Members in the room keep theirs, however many.
MAX_DECISIONS = 10_000


class Bans:
    def __init__(self) -> None:
        self._identities: set[str] = set()
        self._tokens: dict[str, str] = {}  # token id -> the identity it was for

    def __len__(self) -> int:
        """Identities banned (a token is only kept with its identity)."""
        return len(self._identities)

    def __contains__(self, identity: object) -> bool:
        return identity in self._identities

    def add(self, identity: str, token_id: str | None = None) -> None:
        """Keep ``identity`` out, and the token with id ``token_id`` whoever holds it."""
        self._identities.add(identity)
        if token_id is not None:
            self._tokens[token_id] = identity

    def keeps_out(self, identity: str, token_id: str | None = None) -> bool:
        return identity in self._identities or (token_id is not None and token_id in self._tokens)

    def discard(self, identity: str) -> None:
        """Let ``identity`` in again, with the tokens it was banned with too."""
        self._identities.discard(identity)
        for token_id in [t for t, who in self._tokens.items() if who == identity]:
            del self._tokens[token_id]


class Decisions:
    """Moderators' decisions per identity, kept so that a rejoin does not undo them.

    Each is a dict: ``role`` (a promotion or demotion), ``role_by_itself``
    (the member took that step itself), ``role_given`` (the promotion another
    moderator or the backend gave it last, which a step of its own does not
    undo), ``moderate`` (False: the grant was taken), ``moderator_muted``. The most recently decided come
    last; past :data:`MAX_DECISIONS`, the oldest about an identity not in the
    room (``present`` says who is) is dropped, so that a long-lived room
    moderating a stream of passing members does not grow without bound.
    """

    def __init__(self, room: str, present: Callable[[str], bool]) -> None:
        self._room = room
        self._present = present
        self._by_identity: dict[str, dict[str, Any]] = {}

    def __len__(self) -> int:
        return len(self._by_identity)

    def get(self, identity: str) -> dict[str, Any] | None:
        """What was decided about ``identity``, or None (a change through it
        does not make it the most recent: :meth:`of` does)."""
        return self._by_identity.get(identity)

    def of(self, identity: str) -> dict[str, Any]:
        """The decision to change about ``identity``, made the most recent."""
        decision = self._by_identity.pop(identity, None)
        if decision is None:
            decision = {}
        self._by_identity[identity] = decision
        if len(self._by_identity) > MAX_DECISIONS:
            self._forget_oldest_absent(len(self._by_identity) - MAX_DECISIONS)
        return decision

    def _forget_oldest_absent(self, excess: int) -> None:
        # (More than one when members present had pushed the count past the
        # bound and have left since.)
        gone: list[str] = []
        for identity in self._by_identity:
            if not self._present(identity):
                gone.append(identity)
                if len(gone) == excess:
                    break
        for identity in gone:
            del self._by_identity[identity]
        if gone:
            logger.info(
                "room %r forgot what moderators decided about %d identities not in it "
                "(the first: %r); it keeps %d",
                self._room,
                len(gone),
                gone[0],
                MAX_DECISIONS,
            )


class Grace:
    """Identities that may come back past a cap, each until a time (the loop's clock)."""

    def __init__(self) -> None:
        self._until: dict[str, float] = {}

    def open(self, identity: str, now: float, seconds: float) -> None:
        """``identity`` may come back until ``now + seconds``; past graces go."""
        for stale in [name for name, until in self._until.items() if until <= now]:
            del self._until[stale]
        self._until[identity] = now + seconds

    def holds(self, identity: str, now: float) -> bool:
        until = self._until.get(identity)
        return until is not None and now <= until

    def end(self, identity: str) -> None:
        self._until.pop(identity, None)
