"""Moderation: raised hands, promotions, demotions, mutes and removals in a room.

A call made on behalf of a member (``by=identity``) needs the ``moderate``
grant; ``by=None`` is the backend, always allowed. A member promoting itself
gets no grant its own token withheld (a ``moderate``-only token moderates,
it does not speak) unless someone else's promotion gave it. What a moderator decides
about an identity (its role, a mute, the ``moderate`` grant taken) is kept in
the room's decisions for the room's life, so that rejoining does not undo it
(the join reads them: :mod:`sfu.gate`). :class:`~sfu.room.Room` documents
each call; its methods delegate here.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from typing import TYPE_CHECKING

from ._values import check_identity, check_reason, shown
from .auth import Grant, Role, grants_of
from .errors import InvalidSetting, NotAllowed, NotFound, RoomClosed
from .events import HandLowered, HandRaised, HandsChanged, ParticipantRemoved
from .gate import member_identity

if TYPE_CHECKING:
    from .participant import Participant
    from .room import Room

__all__ = ["MAX_BANS", "MAX_HANDS_LISTED", "Moderation"]

logger = logging.getLogger(__name__)


def _actor(by: str | None) -> str:
    """Who did a moderator's act, as its log line names them."""
    return shown(by) if by else "the backend"


#: Identities one room keeps banned at most: a ban of someone absent stores a
#: name a moderator chose, kept for the room's life.
MAX_BANS = 1000
#: A HandsChanged event (the ``hands`` message every member is sent) names at
#: most this many hands, the oldest; ``total`` counts them all.
MAX_HANDS_LISTED = 100


class Moderation:
    def __init__(self, room: Room) -> None:
        self.room = room
        self._hands: dict[str, float] = {}  # identity -> when raised (insertion order = queue)
        # The pending HandsChanged (one per roster_interval while hands change).
        self._hands_timer: asyncio.TimerHandle | None = None
        self._hands_closed = False

    def check_open(self) -> None:
        """Moderation of a closed room: RoomClosed, not "not in room" (nobody is)."""
        if self.room.closed:
            raise RoomClosed(f"room {self.room.name!r} is closed")

    def check_actor(self, by: str | None) -> None:
        """Check that ``by`` (a member acting through signaling) may moderate."""
        if by is None:
            return
        check_identity(by, "by")
        actor = self.room._participants.get(by)
        if actor is None or "moderate" not in actor.grants:
            raise NotAllowed(f"{by!r} is not a moderator of room {self.room.name!r}")

    # -- hands -------------------------------------------------------------------------

    @property
    def hands(self) -> list[str]:
        return list(self._hands)

    def listed_hands(self) -> list[str]:
        """The hands a ``hands`` message names: the oldest MAX_HANDS_LISTED."""
        return list(itertools.islice(self._hands, MAX_HANDS_LISTED))

    def _hands_changed(self) -> None:
        """Tell the room's hands at the end of this ``roster_interval``: each
        member is sent one message per interval, not one per hand."""
        if self._hands_timer is not None or self._hands_closed:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # (no loop: nobody to wait for)
            self.flush_hands()
            return
        self._hands_timer = loop.call_later(self.room.policy.roster_interval, self.flush_hands)

    def flush_hands(self) -> None:
        """Emit HandsChanged now (also when the hands are back as last told:
        a member who joined in between was given them as they were then)."""
        self._hands_timer = None
        if self._hands_closed:
            return
        self.room._emit(HandsChanged(self.room.name, tuple(self.listed_hands()), len(self._hands)))

    def close(self) -> None:
        """No more HandsChanged (the room is closing); idempotent."""
        self._hands_closed = True
        if self._hands_timer is not None:
            self._hands_timer.cancel()
            self._hands_timer = None

    def raise_hand(self, identity: str) -> None:
        self.check_open()
        participant = self.room[identity]
        if participant.can_publish:
            # Ignored, its caller would wait for a turn to speak it has.
            raise NotAllowed(
                f"{identity!r} may already speak in room {self.room.name!r} "
                f"({participant.role}): a hand is raised to ask to speak"
            )
        if identity in self._hands:
            return
        self._hands[identity] = time.time()
        self.room._emit(HandRaised(self.room.name, identity))
        self._hands_changed()

    def lower_hand(self, identity: str, by: str | None) -> None:
        check_identity(identity)
        if by == identity:
            by = None  # the participant's own hand (HandLowered.by is None then)
        if by is not None:
            self.check_actor(by)
        self.drop_hand(identity, by)

    def drop_hand(self, identity: str, by: str | None) -> None:
        """Lower ``identity``'s hand if it is raised (answered, or its member left)."""
        if self._hands.pop(identity, None) is not None:
            self.room._emit(HandLowered(self.room.name, identity, by))
            self._hands_changed()

    # -- roles -------------------------------------------------------------------------

    def promote(self, identity: str, role: Role, by: str | None) -> Participant:
        self.check_open()
        self.check_actor(by)
        if role == "listener":
            raise InvalidSetting("promote to 'speaker' or 'moderator'; use demote() for 'listener'")
        room = self.room
        participant = room[identity]
        if role == "speaker" and participant.can_publish:
            self._given_again(identity, role, by)
            return participant
        # A listener holding the moderate grant (a moderator token joined as
        # listener) keeps it, as a join with such a token does.
        grants = grants_of(role) | (participant.grants & {"moderate"})
        if role == participant.role and grants == participant.grants:
            self._given_again(identity, role, by)
            return participant  # a moderator made moderator: nothing changes, nothing to tell
        if by is not None and by == identity:
            self._check_self_promotion(participant, role)
        needs_offer = participant.negotiation.publish is None
        if needs_offer and not participant.renegotiates:
            raise NotAllowed(
                f"{identity!r} cannot speak: its client (e.g. a WHEP player) has no sending line "
                "and cannot add one; it can only listen"
            )
        if not participant.can_publish and role in ("speaker", "moderator"):
            room._gate.check_capacity(publish=True)
        was_in_audience = room._listing.in_audience(participant)
        self._change_role(participant, role, grants)
        decision = room._decisions.of(identity)
        decision["role"] = role
        # Whose step it was: one a member took for itself gives it, when it
        # comes back, no more than its token then allows (sfu.gate); the role
        # another moderator (or the backend) gave it last stands under it.
        by_itself = by is not None and by == identity
        decision["role_by_itself"] = by_itself
        if not by_itself:
            decision["role_given"] = role
        room._demoted_present.discard(identity)  # on the stage again: no demoted grace
        if role == "moderator":
            decision.pop("moderate", None)  # a demotion's revocation ends
        # The hand was answered: everyone watching the hands sees it go down.
        self.drop_hand(identity, by)
        self._announce(participant, f"promoted to {role}", by, needs_offer, was_in_audience)
        return participant

    def _given_again(self, identity: str, role: Role, by: str | None) -> None:
        """Another moderator (or the backend) promotes a member to what it had
        made itself: nothing changes now, but the step is theirs from here on,
        for its rejoins (sfu.gate)."""
        decision = self.room._decisions.get(identity)
        if (
            (by is None or by != identity)
            and decision is not None
            and decision.get("role_by_itself")
            and decision.get("role") == role
        ):
            decision["role_by_itself"] = False
            decision["role_given"] = role

    def _check_self_promotion(self, participant: Participant, role: Role) -> None:
        """A member promoting itself gets no grant that its own token (or
        the backend's join without one) withheld, nor another's decision
        gave: a token granting ``moderate`` but not ``publish`` moderates,
        it does not speak. (Promoting others is what moderators do; this
        limits only the step a member takes for itself.)"""
        allowed = participant.own_grants | participant.grants | {"subscribe"}
        decision = self.room._decisions.get(participant.identity) or {}
        given = decision.get("role_given")
        if given is not None:
            allowed |= grants_of(given)  # another moderator, or the backend, gave it
        missing = grants_of(role) - allowed
        if missing:
            raise NotAllowed(
                f"{participant.identity!r} may not promote itself to {role!r}: its token does "
                f"not grant {', '.join(repr(g) for g in sorted(missing))}; another moderator "
                "(or the backend) may promote it"
            )

    def _change_role(self, participant: Participant, role: Role, grants: frozenset[Grant]) -> None:
        counts = self.room._counts
        counts[participant.can_publish] -= 1
        try:
            participant._set_role(role, grants)  # unchanged if it raises
        finally:
            counts[participant.can_publish] += 1

    def demote(self, identity: str, by: str | None, role: Role = "listener") -> Participant:
        if role not in ("listener", "speaker"):
            raise InvalidSetting(
                f"demote to 'listener' or 'speaker', got {shown(role)}; use promote() for 'moderator'"
            )
        self.check_open()
        self.check_actor(by)
        room = self.room
        participant = room[identity]
        if role == "speaker":
            return self._step_down(participant, by)
        # Anyone but a plain listener: a listener with `moderate` (a moderator
        # listening, e.g. through WHEP) only loses the grant, keeping its media.
        if not participant.can_publish and participant.role == "listener":
            if not participant.is_moderator:
                return participant
        # Its client drops its sending line only if it has one: one promoted
        # that never renegotiated (never took its speaker line) has nothing to drop.
        renegotiate = participant.negotiation.publish is not None
        # (A listener token widened with publish can speak: demoting it takes that away.)
        was_in_audience = room._listing.in_audience(participant)
        self._change_role(participant, "listener", grants_of("listener"))
        # The `moderate` grant goes too, and stays gone when the same token
        # comes back; promote(role="moderator") gives it again.
        decision = room._decisions.of(identity)
        decision.update(role="listener", moderate=False, role_by_itself=False)
        decision.pop("role_given", None)
        room._demoted_present.add(identity)
        if renegotiate:
            participant._offer_asked_as_listener = True
        self._announce(participant, "demoted", by, renegotiate, was_in_audience)
        return participant

    def _step_down(self, participant: Participant, by: str | None) -> Participant:
        """A moderator on the stage made a speaker: it loses ``moderate`` (for
        its rejoins too, as a demotion's) and keeps its seat and sending line."""
        room = self.room
        identity = participant.identity
        if not participant.is_moderator:
            return participant  # a speaker already, or a plain listener: nothing to take
        if not participant.can_publish:
            raise InvalidSetting(
                f"{identity!r} moderates without speaking (seated in the audience, or its token "
                "does not grant 'publish'): demote it to 'listener' to take its 'moderate' grant"
            )
        was_in_audience = room._listing.in_audience(participant)
        self._change_role(participant, "speaker", grants_of("speaker"))
        decision = room._decisions.of(identity)
        # Only the grant is taken: a rejoin gets what its token (or an earlier
        # promotion, now to speaker, whoever made it) gives, less `moderate`.
        # Recording a role here would seat it on the stage with a token that
        # does not let it speak.
        decision["moderate"] = False
        if decision.get("role") is not None:
            decision["role"] = "speaker"
        if decision.get("role_given") is not None:
            decision["role_given"] = "speaker"
        self._announce(participant, "stepped down to speaker", by, False, was_in_audience)
        return participant

    def _announce(
        self,
        participant: Participant,
        change: str,
        by: str | None,
        renegotiate: bool,
        was_in_audience: bool,
    ) -> None:
        """Log a role change, tell the room, and update the roster's listing."""
        room = self.room
        logger.info(
            "%s %s in room %r by %s", shown(participant.identity), change, room.name, _actor(by)
        )
        room._emit(participant._role_changed(by, renegotiate=renegotiate))
        room._listing.role_changed(room.server.loop, participant, was_in_audience)

    # -- mutes and removals ------------------------------------------------------------

    def set_muted(self, identity: str, muted: bool, by: str | None) -> None:
        """A moderator's mute (or its end): kept for the identity's rejoins."""
        self.check_open()
        self.check_actor(by)
        participant = self.room[identity]
        self.room._decisions.of(identity)["moderator_muted"] = muted
        logger.info(
            "%s %s in room %r by %s",
            shown(identity),
            "muted" if muted else "unmuted",
            self.room.name,
            _actor(by),
        )
        if participant._set_muted(muted):
            self.room._emit_mute(participant, by)

    def remove(self, identity: str, reason: str, by: str | None, ban: bool) -> None:
        self.check_actor(by)
        check_identity(identity)
        check_reason(reason)
        if not isinstance(ban, bool):
            raise InvalidSetting(f"ban must be True or False, got {ban!r:.40}")
        room = self.room
        if room.closed:
            # A ban kept on a closed room would bind nothing: a new room has the name.
            raise RoomClosed(f"room {room.name!r} is closed")
        participant = room._participants.get(identity)
        if participant is None:
            if not ban:
                raise NotFound(f"{identity!r} is not in room {room.name!r}")
            member_identity(identity)
            if identity not in room._bans and len(room._bans) >= MAX_BANS:
                raise InvalidSetting(
                    f"room {room.name!r} holds {MAX_BANS} bans already: unban someone first"
                )
        # Checked: from here the removal happens, and it ends a promotion.
        decision = room._decisions.get(identity)
        if decision is not None:
            if decision.get("role") in ("speaker", "moderator"):
                del decision["role"]
                decision.pop("role_by_itself", None)
            decision.pop("role_given", None)
        if participant is None:
            room._bans.add(identity)
            logger.info(
                "%s banned from room %r while absent, by %s",
                shown(identity),
                room.name,
                _actor(by),
            )
            return
        if ban:
            room._bans.add(identity, participant.token_id)
        logger.info(
            "%s %s from room %r by %s: %r",
            shown(identity),
            "removed and banned" if ban else "removed",
            room.name,
            _actor(by),
            reason,
        )
        room._emit(ParticipantRemoved(room.name, identity, reason, by, ban))
        participant._close(f"removed: {reason}")
