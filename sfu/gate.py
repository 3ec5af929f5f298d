"""Gate: how a join gets into a room.

A join is checked before any state is created: its token (required in a
private room), a ban, an identity already in, the role the room's earlier
decisions give it, capacity (with the graces of :mod:`sfu.rejoin`). Then the
member is made, with its answer and session, and registered in the room.
:meth:`Room.join <sfu.room.Room.join>` documents the rules.

An identity already in the room is refused (DuplicateIdentity), unless the
adapter that runs the join says, with :func:`replacing`, that the join may
replace that member: the signaling's reconnect that proves it is the same
client (its resume key), or a WHIP/WHEP POST for a session of the same
endpoint whose client no longer answers
(:func:`sfu.signaling.aiohttp.add_whip_whep`). The member replaced then
leaves, as a member that dropped (:data:`REPLACED`: its graces open, the
decisions about it stay), once nothing can refuse the join (its offer
negotiated, a seat found), just before the new member is registered: in the
same admission turn with no await in between, so the room never holds two
members of one identity nor counts one seat twice, and a refused join ends
nobody.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from ._values import shown
from .auth import MAX_NAME_LENGTH, Claims, Grant, Role, grants_of, verify_token
from .errors import (
    DuplicateIdentity,
    InvalidOffer,
    InvalidSetting,
    NotAllowed,
    RoomClosed,
    RoomFull,
    ServerClosed,
)
from .events import ParticipantJoined
from .participant import Listener, Participant, Speaker
from .transport.answer import negotiate_or_listen
from .transport.sdp import parse_offer
from .transport.session import Session

if TYPE_CHECKING:
    from .room import Room

__all__ = [
    "MAX_IDENTITY_LENGTH",
    "REPLACED",
    "Gate",
    "check_claims_before_room",
    "check_role_granted",
    "joining_via",
    "member_identity",
    "replacing",
    "without_renegotiation",
]

logger = logging.getLogger(__name__)

MAX_IDENTITY_LENGTH = MAX_NAME_LENGTH

#: Roles from fewer to more rights (a rejoin may ask for less than a decision gave).
_RANK: dict[str, int] = {"listener": 0, "speaker": 1, "moderator": 2}
_participant_numbers = itertools.count(1)

#: Why a member replaced by a join of the same client left (its ParticipantLeft's reason).
REPLACED = "replaced"

# How the join under way came in, for its log line (see joining_via).
_joining_via: ContextVar[str] = ContextVar("sfu_joining_via", default="the Python API")
# Whether the join under way may replace the member of its identity (see replacing).
_replacing: ContextVar[Callable[[Participant], bool] | None] = ContextVar(
    "sfu_replacing", default=None
)
# Whether the join under way is of a client that never renegotiates (see without_renegotiation).
_fixed_lines: ContextVar[bool] = ContextVar("sfu_fixed_lines", default=False)


@contextmanager
def joining_via(how: str) -> Iterator[None]:
    """Name how the joins awaited inside came in ("WebSocket from 192.0.2.1",
    "WHIP from ..."): the room's one INFO line about a join says it, so an
    adapter does not log the join a second time."""
    token = _joining_via.set(how)
    try:
        yield
    finally:
        _joining_via.reset(token)


@contextmanager
def replacing(may_replace: Callable[[Participant], bool] | None) -> Iterator[None]:
    """Let the joins awaited inside replace a member of their identity.

    Where a join would be refused with DuplicateIdentity, the gate asks
    ``may_replace(member)`` (in the join's admission turn, once the token was
    checked in full and no ban keeps the identity out); True: the join goes
    on as a rejoin, and that member leaves (reason :data:`REPLACED`) once
    nothing can refuse the join.
    For an adapter that can tell a reconnect of the same client (the
    signaling's resume key; WHIP/WHEP, whose earlier client stopped
    answering); the Python API never replaces anyone. None:
    nobody is replaced (as outside).
    """
    token = _replacing.set(may_replace)
    try:
        yield
    finally:
        _replacing.reset(token)


@contextmanager
def without_renegotiation() -> Iterator[None]:
    """The joins awaited inside are of clients whose media lines are fixed at
    the join (WHIP/WHEP: ``participant.renegotiates`` is set False): such a
    member can never add a sending line, so a moderator's join that asks to
    publish is refused by a full stage (RoomFull) rather than seated in the
    audience, from where it could never take the stage back."""
    token = _fixed_lines.set(True)
    try:
        yield
    finally:
        _fixed_lines.reset(token)


def member_identity(identity: object) -> str:
    """``identity`` if it could be a member's (a join's, or a ban's of someone
    absent: no member can have another); InvalidSetting otherwise."""
    if not isinstance(identity, str) or not identity or len(identity) > MAX_IDENTITY_LENGTH:
        raise InvalidSetting(
            f"identity must be a non-empty string of at most {MAX_IDENTITY_LENGTH} characters"
        )
    return identity


def check_role_granted(claims: Claims, role: Role) -> None:
    """NotAllowed unless the token of ``claims`` grants ``role`` by itself
    (``subscribe`` is implied): what :meth:`Gate.join` asks of a join with a
    token that asks for a role no decision of the room gives it."""
    if not grants_of(role) <= claims.grants | {"subscribe"}:
        raise NotAllowed(f"the token does not grant the {role!r} role")


def check_claims_before_room(claims: Claims, role: Role | None) -> None:
    """Refuse, before its room exists, a join with a verified token that
    :meth:`Gate.join` would refuse in a room that has nothing: the checks it
    makes of the token alone, in its order (an identity no member can have:
    InvalidSetting; a ``role`` the token does not grant: NotAllowed; with
    ``role`` None the join takes the token's own, whatever its grants, as
    the gate does).

    Only for a room that does not exist (yet): in one that does, a
    moderator's earlier promotion may let this identity take a role its
    token does not grant, which only the gate, in the join's turn, can tell.
    A signaling adapter calls it before it makes a room for a join, so that a
    join bound to be refused makes none (see
    :func:`sfu.signaling.aiohttp.add_whip_whep`).
    """
    member_identity(claims.identity)
    if role is not None:
        check_role_granted(claims, role)


def _without_taken_moderate(
    decision: dict[str, Any], role: Role, grants: frozenset[Grant]
) -> tuple[Role, frozenset[Grant]]:
    """``role`` and ``grants`` less the `moderate` grant a demotion took: a
    token does not give it back (and a moderator without it is a speaker)."""
    if decision.get("moderate") is False:
        grants = grants - {"moderate"}
        if role == "moderator":
            role = "speaker" if "publish" in grants else "listener"
    return role, grants


class Gate:
    def __init__(self, room: Room) -> None:
        self.room = room

    async def join(
        self,
        offer: str,
        token: str | None,
        identity: str | None,
        role: Role | None,
        mixed: bool | None,
    ) -> Participant:
        """A new member for ``offer``, or an error and nothing registered (see Room.join)."""
        room = self.room
        room.server._check_loop()
        await room.server.admission.turn()
        if room.server.closed:
            raise ServerClosed("the server is closed")
        if room.closed:
            raise RoomClosed(f"room {room.name!r} is closed")
        if role is not None:
            grants_of(role)  # InvalidSetting for anything but a role's name ("" too)
        if mixed is not None and not isinstance(mixed, bool):
            raise InvalidSetting(f"mixed must be True, False or None, got {mixed!r}")
        asked = role  # what the caller asked for (None: the token's role)
        if identity is not None:
            member_identity(identity)  # a bad one is InvalidSetting, token or not
        claims = self.check_token(token)
        if claims is not None:
            if identity is not None and identity != claims.identity:
                raise NotAllowed(f"the token is for {claims.identity!r}, not {identity!r}")
            identity = claims.identity
        elif identity is None:
            raise InvalidSetting(
                "a join needs an identity: pass identity=, or a token that names one"
            )
        identity = member_identity(identity)
        decision = room._decisions.get(identity) or {}
        decided: Role | None = decision.get("role")
        # What this join is entitled to by itself (no decision of anyone's):
        # its token's grants, or the role the backend gave a join without one.
        # A member may not promote itself past it (Moderation.promote).
        own_grants = claims.grants if claims is not None else grants_of(role or "listener")
        if (
            decided is not None
            and decision.get("role_by_itself")
            and not grants_of(decided) <= own_grants | {"subscribe"}
        ):
            # A promotion the member gave itself stands only as far as this
            # join's own grants would let it take that step again: what
            # another moderator (or the backend) gave it stands instead.
            decided = decision.get("role_given")
        if claims is not None:
            grants = claims.grants
            if role is None:
                role = claims.role
            elif decided is not None and _RANK[role] <= _RANK[decided]:
                # A moderator's promotion covers it: a promoted member may
                # rejoin with its token asking for that role or less.
                grants = grants_of(role) | (claims.grants & {"moderate"})
            else:
                check_role_granted(claims, role)
                grants = grants_of(role) | (claims.grants & {"moderate"})
        else:
            role = role or "listener"
            grants = grants_of(role)
        if room.is_banned(identity, claims.token_id if claims is not None else None):
            raise NotAllowed(f"{identity!r} was removed from room {room.name!r} and may not rejoin")
        present = room._participants.get(identity)
        if present is not None:
            may_replace = _replacing.get()
            if may_replace is None or not may_replace(present):
                raise DuplicateIdentity(
                    f"{identity!r} is already in room {room.name!r}; pick another identity or close the other one"
                )
            # The same client again (its old connection is gone, or going): the
            # member leaves, as one that dropped, and this join is its rejoin.
            # It leaves only once nothing can refuse this join (in admit(), in
            # this turn, with no await in between): until then its seat counts
            # as free and its graces as open, as they would be once it left.
        now = room.server.loop.time()
        freed = present.can_publish if present is not None else None
        # The graces its leaving will open (Room._participant_closed), open already.
        replaced_demoted = present is not None and identity in room._demoted_present
        demoted_grace = room._demoted_rejoin.holds(identity, now) or replaced_demoted
        moderator_grace = room._moderator_rejoin.holds(identity, now) or (
            present is not None
            and not replaced_demoted
            and present.can_publish
            and present.is_moderator
        )
        # A moderator promoted or demoted this identity earlier in this room:
        # that role stands over the token when it comes back (a reconnect),
        # unless the caller asks for less (one may always join with fewer rights).
        base_role, base_grants = role, grants
        promoted = decided is not None and (asked is None or _RANK[asked] >= _RANK[decided])
        if decided is not None and promoted:
            role = decided
            # The `moderate` grant is the token's to give, not a former one's.
            grants = grants_of(role) | (claims.grants & {"moderate"} if claims else frozenset())
        role, grants = _without_taken_moderate(decision, role, grants)
        publish = "publish" in grants
        # A moderator is never refused for capacity: the room is its to run.
        moderating = "moderate" in grants
        seated_in_audience = False
        if publish and not self.has_place(True, freed):
            if moderating and moderator_grace:
                pass  # dropped from the stage a moment ago: back on it, past max_speakers
            elif moderating and _fixed_lines.get():
                # Seated in the audience it could never take the stage back
                # (promote() needs an offer its client never sends): refused.
                self.check_capacity(True, freed)
            elif moderating:
                # The stage filled up: in the audience, still moderating; it
                # takes the stage back with promote(itself, role="moderator")
                # once a seat is free (a promotion stays decided).
                role, grants = "listener", grants_of("listener") | {"moderate"}
                publish = promoted = False
                seated_in_audience = True
            elif promoted and "publish" not in base_grants:
                # Promoted before, and the stage filled up meanwhile: it comes back
                # with the role it has without the promotion (which stays decided).
                role, grants = _without_taken_moderate(decision, base_role, base_grants)
                publish = "publish" in grants
                promoted = False
        if not moderating and (publish or not demoted_grace):
            # (A member a moderator demoted that dropped comes back past
            # max_listeners for a while, as demote() let it stay: a reconnect.)
            self.check_capacity(publish, freed)
        try:
            participant = self.admit(
                offer,
                identity,
                role,
                grants,
                publish,
                claims.token_id if claims else None,
                mixed,
                moderator_muted=bool(decision.get("moderator_muted")),
                promoted=promoted,
                own_grants=own_grants,
                replacing=present,
            )
        except InvalidOffer:
            if seated_in_audience:
                # It can only send (a WHIP publisher): not "a bad offer", a full stage.
                self.check_capacity(True, freed)
            raise
        room._demoted_rejoin.end(identity)
        room._moderator_rejoin.end(identity)
        return participant

    def check_token(self, token: str | None) -> Claims | None:
        room = self.room
        secret = room.server.token_secret
        if token is None:
            if room.policy.private:
                raise NotAllowed(f"room {room.name!r} is private: a join token is required")
            return None
        if secret is None:
            raise NotAllowed("this server does not accept tokens (no token_secret configured)")
        return verify_token(secret, token, room=room.name)

    def has_place(self, publish: bool, freed: bool | None = None) -> bool:
        """Whether a seat of that kind is free; ``freed``: the kind of a seat
        counted as free already (that of a member this join replaces)."""
        room = self.room
        limit = room.policy.max_speakers if publish else room.policy.max_listeners
        return limit is None or room._counts[publish] - (1 if freed == publish else 0) < limit

    def check_capacity(self, publish: bool, freed: bool | None = None) -> None:
        if not self.has_place(publish, freed):
            if publish:
                limit, what = self.room.policy.max_speakers, "speakers"
            else:
                limit, what = self.room.policy.max_listeners, "listeners"
            if limit == 1:
                what = what[:-1]  # "1 speaker"
            raise RoomFull(f"room {self.room.name!r} is full: it holds at most {limit} {what}")

    def admit(
        self,
        offer_sdp: str,
        identity: str,
        role: Role,
        grants: frozenset[Grant],
        publish: bool,
        token_id: str | None,
        mixed: bool | None = None,
        *,
        moderator_muted: bool = False,
        promoted: bool = False,
        own_grants: frozenset[Grant] | None = None,
        replacing: Participant | None = None,
    ) -> Participant:
        room = self.room
        offer = parse_offer(offer_sdp)
        # Promoted before a reconnect, its client may offer as a listener:
        # answer that, and ask it for a sending line like at promotion.
        negotiation, must_offer = negotiate_or_listen(
            offer, publish=publish, max_slots=1 if mixed else room.slots, listen_instead=promoted
        )
        if mixed is None:
            # Fewer lines than slots: the mix, or it may hear only someone silent.
            mixed = 0 < len(negotiation.slots) < room.slots
            if mixed:
                negotiation, must_offer = negotiate_or_listen(
                    offer, publish=publish, max_slots=1, listen_instead=promoted
                )
        credentials = room.server._new_credentials()  # registered below, no await between
        cls = Speaker if publish else Listener
        participant: Participant = cls(
            room, identity, next(_participant_numbers), negotiation, role, grants, credentials
        )
        participant.token_id = token_id
        if own_grants is not None:
            participant.own_grants = own_grants
        participant.mixed = mixed
        participant.moderator_muted = moderator_muted
        if mixed:
            participant._mix_exclude = participant._own_mix_exclude()
        participant._answer_template = room._answer(
            offer,
            negotiation,
            participant._answer_values(participant._answer_version),
            room._mix_ssrcs(participant._mix_exclude) if mixed else None,
        )
        session = Session(
            room.server,
            credentials,
            offer.ice_ufrag,
            offer.fingerprints,
            participant,
            room.server.loop.time(),
            offer.ice_pwd,
        )
        participant.session = session
        participant.csrc = room.router.new_csrc()  # before a publisher is made with it
        try:
            participant._apply_negotiation(negotiation, connected=False)  # may add a publisher
            if replacing is not None:
                # Nothing can refuse this join now: the member it replaces leaves
                # (its ParticipantLeft before this one's ParticipantJoined).
                replacing._close(REPLACED)
            room.server._register(session)
        except BaseException:
            if participant.publisher is not None:
                room.router.remove_publisher(participant.publisher)
                participant.publisher = None
            room.router.release_csrc(participant.csrc)
            if room._mixer is not None:
                room._mixer.forget(participant.number)  # its mix-minus SSRC, if one was made
            raise
        # Nothing after this can fail: the member is in.
        room._counts[participant.can_publish] += 1
        room._participants[identity] = participant
        room._by_number[participant.number] = participant
        logger.info(
            "%s joined room %r as %s (%s) via %s",
            shown(identity),
            room.name,
            role,
            "the mix" if mixed else f"{participant.slot_count} slots",
            _joining_via.get(),
        )
        room._emit(ParticipantJoined(room.name, identity, role))
        if participant.moderator_muted:
            # A moderator's mute that outlived a reconnect: everyone sees it again.
            room._emit_mute(participant, None)
        room._listing.joined(room.server.loop, participant)
        if must_offer:
            room._emit(participant._role_changed(None, renegotiate=True))
        return participant
