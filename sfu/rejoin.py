"""What a room keeps about identities for when they come back.

:class:`Bans` keeps out those removed with a ban (and the tokens they were
removed with); a :class:`Grace` lets a member that dropped reconnect past a
cap for a while, as the room had it. A join (:mod:`sfu.gate`) checks
both; moderators ban (:mod:`sfu.moderation`), a member's departure opens a
grace (:class:`~sfu.room.Room`).
"""

from __future__ import annotations

__all__ = ["Bans", "Grace"]


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
