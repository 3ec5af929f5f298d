"""Room: a named audio room, its members, roles, moderation and Router.

Created by :meth:`sfu.Server.room`. Permissions are the server's to
enforce: a join is checked (token, ban, capacity) before any state is
created; a participant without the ``publish`` grant is never forwarded;
moderation calls made on behalf of a participant (``by=identity``) need
the ``moderate`` grant. Calls with ``by=None`` come from the backend itself
and are always allowed.

Closing a room closes its members; closing a member frees its session;
both are idempotent.

A Room holds what its parts share (members, moderators' decisions, bans,
rejoin graces) and owns the parts, which its methods delegate to: the join's
checks and admission (:mod:`sfu.gate`), moderation and raised hands
(:mod:`sfu.moderation`), the stage (:mod:`sfu.stage`), roster batching
(:mod:`sfu.roster`) and its closing (:mod:`sfu.closing`); bans and graces are
:mod:`sfu.rejoin`'s.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from ._values import check_identity, check_reason, shown
from .auth import MAX_NAME_LENGTH, Role
from .closing import Closing
from .errors import InvalidSetting, NotFound, RoomClosed
from .events import (
    EventStream,
    MixerFailed,
    MuteChanged,
    ParticipantConnected,
    ParticipantLeft,
    RoomEvent,
    SlotInfo,
    Subscribers,
)
from .events import RoomClosed as RoomClosedEvent
from .gate import MAX_IDENTITY_LENGTH as MAX_IDENTITY_LENGTH
from .gate import Gate
from .media.router import SENDER_REPORT_INTERVAL, Router
from .moderation import MAX_BANS as MAX_BANS
from .moderation import Moderation
from .participant import Participant
from .policy import RoomPolicy
from .rejoin import MAX_DECISIONS as MAX_DECISIONS
from .rejoin import Bans, Decisions, Grace
from .roster import RosterBatch, RosterListing
from .stage import Stage
from .transport.answer import AnswerTemplate, AnswerValues, Negotiation, answer_template
from .transport.port import Shown
from .transport.sdp import Offer

if TYPE_CHECKING:
    from .media.mixer import Mixer
    from .media.recorder import Recorder
    from .transport.server import Server

__all__ = ["Room"]

logger = logging.getLogger(__name__)

#: Seconds after a member a moderator demoted dropped during which it may come
#: back past max_listeners (a reconnect: consent timeout plus the client's backoff).
DEMOTED_REJOIN_GRACE = 60.0
#: Seconds after a moderator on the stage dropped during which it comes back on
#: the stage past max_speakers (a reconnect: its seat may have been given away
#: meanwhile). Later, to a full stage, it joins the audience, still a moderator.
MODERATOR_REJOIN_GRACE = 60.0


def check_policy_for(server: Server, policy: RoomPolicy) -> None:
    """InvalidSetting if ``server`` cannot hold a room of ``policy``: a
    private room needs join tokens, so a ``token_secret``."""
    if policy.private and server.token_secret is None:
        raise InvalidSetting("a private room needs tokens: create the Server with token_secret=...")


class Room:
    """A named audio room: its members, their roles, moderation, events.

    Get one with ``server.room(name, **settings)`` (made on first use) or
    ``server.get_room(name)``, not by calling the class. ``name`` is its
    name, ``policy`` its :class:`~sfu.policy.RoomPolicy` (the settings it
    was made with), ``server`` the :class:`~sfu.Server` holding it.
    Members come in through :meth:`join` (or :meth:`add_speaker`,
    :meth:`add_listener`), which answers their offer; :meth:`events`
    tells what happens; ``by=None`` on a moderation call is the backend
    itself, ``by=identity`` a member acting (it needs the ``moderate``
    grant). The README's API table lists the rest.
    """

    def __init__(self, server: Server, name: str, policy: RoomPolicy) -> None:
        if getattr(server, "_making_room", None) != name:
            # Made by hand, the server would not know it: server.room(name)
            # would make another, and closing the server would leave it open.
            raise InvalidSetting(
                f"make a room with server.room({name!r:.60}, **settings), not sfu.Room(...)"
            )
        if not isinstance(name, str) or not name or len(name) > MAX_NAME_LENGTH:
            raise InvalidSetting(
                f"a room name must be a non-empty string of at most {MAX_NAME_LENGTH} characters, "
                f"got {name!r:.60}"
            )
        check_policy_for(server, policy)
        self.server = server
        self.name = name
        self.policy = policy
        self.router = Router(server.socket, policy.slots, **policy.detector_settings())
        self.created_at = time.time()
        self._participants: dict[str, Participant] = {}
        self._by_number: dict[int, Participant] = {}
        # Members allowed to publish (True) and the others (False), for capacity checks in O(1).
        self._counts = {True: 0, False: 0}
        # Weakly held: a stream its subscriber dropped without close() goes away.
        self._subscribers = Subscribers()
        # Moderators' decisions per identity, so that rejoining does not undo them.
        self._decisions = Decisions(name, self._participants.__contains__)
        self._roster = RosterBatch(
            name, policy.roster_interval, self._emit, lambda: len(self._participants)
        )
        self._listing = RosterListing(self._roster, policy.roster_listeners)
        self._bans = Bans()
        # Members a moderator demoted that dropped, and until when their
        # reconnect may come back past max_listeners (as demote() let them stay).
        self._demoted_rejoin = Grace()
        # Members demoted that have not left since: the first departure of
        # each (not a removal) opens its grace above, once per demotion.
        self._demoted_present: set[str] = set()
        # Moderators that dropped from the stage, and until when their reconnect
        # comes back on it past max_speakers.
        self._moderator_rejoin = Grace()
        self._stage = Stage(name, self.router, self._by_number, policy, self._emit)
        self._gate = Gate(self)
        self._moderation = Moderation(self)
        self._closing = Closing(self)
        # A random CNAME per room (the one its RTCP carries): nothing
        # identifying the room goes on the wire.
        self._cname = self.router.cname

    def __repr__(self) -> str:
        return f"<Room {self.name!r} {len(self._participants)} members>"

    @property
    def slots(self) -> int:
        """Slot streams each receiver gets (the ``slots`` setting)."""
        return self.policy.slots

    @property
    def closed(self) -> bool:
        """True once the room is closing or closed (see :attr:`close_reason`)."""
        return self._closing.closed

    @property
    def close_reason(self) -> str | None:
        """Why the room closed (None while open)."""
        return self._closing.reason

    # -- members ---------------------------------------------------------------

    @property
    def participants(self) -> dict[str, Participant]:
        """Every member by identity, in join order (a copy)."""
        return dict(self._participants)

    @property
    def speakers(self) -> list[Participant]:
        """Members allowed to publish (speakers and moderators)."""
        return [p for p in self._participants.values() if p.can_publish]

    @property
    def listeners(self) -> list[Participant]:
        """Members not allowed to publish (the audience)."""
        return [p for p in self._participants.values() if not p.can_publish]

    def get(self, identity: str) -> Participant | None:
        """The member called ``identity``, or None. Raises
        :class:`~sfu.errors.InvalidSetting` for an ``identity`` that is not a
        string (any string is looked up: one no member can have is absent)."""
        check_identity(identity)
        return self._participants.get(identity)

    def __getitem__(self, identity: str) -> Participant:
        """The member called ``identity``; :class:`~sfu.errors.NotFound` (a ``KeyError``) if absent."""
        check_identity(identity)
        participant = self._participants.get(identity)
        if participant is None:
            raise NotFound(f"{identity!r} is not in room {self.name!r}")
        return participant

    async def join(
        self,
        offer: str,
        *,
        token: str | None = None,
        identity: str | None = None,
        role: Role | None = None,
        mixed: bool | None = None,
    ) -> Participant:
        """Answer an offer for a new member.

        ``mixed=True``: the member receives the room mix (without its own
        voice) on its first receiving audio line instead of the slots
        (:mod:`sfu.media.mixer`); it is a Mixer consumer while connected.
        ``mixed=None`` (the default) gives the mix to a client that offers
        fewer receiving audio lines than the room has slots (but at least
        one), such as a one-line WHEP player: slots stay with their speakers,
        so its first slots could hold someone silent while a later one
        carries the talker. ``mixed=False``: slots, however few lines. It is
        decided at the join and kept through renegotiations.

        With a ``token`` (required in a private room), identity and role
        come from it; ``identity``/``role`` may be given too but must agree
        (a token's holder may always join with fewer rights: a speaker
        token can join as listener). Without a token the backend vouches
        for ``identity`` and ``role`` (default ``listener``). A moderator's
        earlier promotion or demotion of this identity in this room decides
        the role over the token's, unless ``role`` asks for less; a demotion's
        removal of the ``moderate`` grant also holds over the token.

        Capacity: a member holding the ``moderate`` grant is never refused
        for it. One that left the stage less than
        :data:`MODERATOR_REJOIN_GRACE` seconds ago (a reconnect) comes back
        on it past ``max_speakers``; otherwise, to a full stage, it joins as
        a listener that keeps ``moderate`` (past ``max_listeners`` too) and
        takes the stage back with ``promote(identity, role="moderator")``
        once a seat is free. A member promoted earlier that comes back to a
        full stage gets the role it has without the promotion; a demoted one
        comes back past ``max_listeners`` within :data:`DEMOTED_REJOIN_GRACE`.

        Raises :class:`~sfu.errors.NotAllowed` (bad token, banned, role
        not granted), :class:`~sfu.errors.RoomFull` (also for a moderator
        whose offer only sends, which cannot be seated in the audience),
        :class:`~sfu.errors.DuplicateIdentity` (the identity is in the
        room: this API never replaces a member; only an adapter's join under
        :func:`sfu.gate.replacing` can, as the signaling's reconnect with
        its resume key does, and a WHIP/WHEP POST for a session of its
        endpoint whose client no longer answers),
        :class:`~sfu.errors.InvalidOffer`,
        :class:`~sfu.errors.InvalidSetting` (no identity, or an unknown
        ``role``, a ``mixed`` that is not a bool) or
        :class:`~sfu.errors.RoomClosed`; nothing is registered when it raises.
        """
        self._closing.join_started()
        joined = False
        try:
            participant = await self._gate.join(offer, token, identity, role, mixed)
            joined = True
            return participant
        finally:
            self._closing.join_ended(joined)

    async def add_speaker(
        self,
        offer: str,
        identity: str | None = None,
        *,
        token: str | None = None,
        mixed: bool | None = None,
    ) -> Participant:
        """Answer a speaker's offer: it publishes its voice and receives slots
        (or the room mix without its own voice: see :meth:`join` for ``mixed``).
        Raises what :meth:`join` raises."""
        return await self.join(offer, token=token, identity=identity, role="speaker", mixed=mixed)

    async def add_listener(
        self,
        offer: str,
        identity: str | None = None,
        *,
        token: str | None = None,
        mixed: bool | None = None,
    ) -> Participant:
        """Answer a listener's offer: it receives up to ``slots`` slot streams
        (or the room mix on its first audio line: see :meth:`join` for ``mixed``).
        Raises what :meth:`join` raises."""
        return await self.join(offer, token=token, identity=identity, role="listener", mixed=mixed)

    def _answer(
        self,
        offer: Offer,
        negotiation: Negotiation,
        values: AnswerValues,
        slot_ssrcs: list[int] | None,
    ) -> AnswerTemplate:
        """The template of a member's answer (its values filled in by
        :attr:`Participant.answer <sfu.Participant.answer>`)."""
        return answer_template(
            offer,
            negotiation,
            fingerprint=self.server.certificate.fingerprint,
            address=self.server.announce,
            port=self.server.port,
            slot_ssrcs=self.router.slot_ssrcs if slot_ssrcs is None else slot_ssrcs,
            cname=self._cname,
            values=values,
            other_addresses=self.server.announce_addresses[1:],
        )

    # -- moderation (sfu.moderation) ------------------------------------------------

    @property
    def hands(self) -> list[str]:
        """Identities with a raised hand, first raised first."""
        return self._moderation.hands

    def raise_hand(self, identity: str) -> None:
        """Raise a listener's hand: it asks to speak (idempotent; a moderator's
        :meth:`promote` lowers it).

        Raises :class:`~sfu.errors.NotAllowed` for a member that may speak
        already (a :class:`~sfu.participant.Speaker`: it has no hand to
        raise), :class:`~sfu.errors.NotFound` (no such member),
        :class:`~sfu.errors.InvalidSetting` (not an identity) or
        :class:`~sfu.errors.RoomClosed`.
        """
        self._moderation.raise_hand(identity)

    def lower_hand(self, identity: str, *, by: str | None = None) -> None:
        """Lower ``identity``'s hand if it is raised (nothing happens otherwise,
        also for a member that may speak: it has none).

        Raises :class:`~sfu.errors.NotAllowed` for a ``by`` other than
        ``identity`` without the ``moderate`` grant, and
        :class:`~sfu.errors.InvalidSetting` for an ``identity`` or ``by``
        that is not one.
        """
        self._moderation.lower_hand(identity, by)

    async def promote(
        self, identity: str, *, role: Role = "speaker", by: str | None = None
    ) -> Participant:
        """Let a listener speak (or make a member a moderator).

        The participant keeps its session, identity and slots; a client
        without a sending audio line must renegotiate with an offer that
        adds one (:class:`~sfu.events.RoleChanged` with ``renegotiate=True``
        tells it). A member that has the role already, or is asked for
        ``speaker`` while it may publish (a moderator stays one), is
        returned as it is: nothing changes, no event, no log line.

        A moderator may promote anyone, itself too (one seated in the
        audience takes the stage back so), but not itself past its own
        token: ``by=identity`` is refused when the role needs a grant that
        neither the member's token (or, joined without one, the role the
        backend gave it) nor an earlier promotion by someone else gave it,
        such as a token granting ``moderate`` without ``publish`` asking
        for ``speaker``. Another moderator (or the backend) may promote it.
        (This bounds the member's own step only: a member it promoted to
        moderator may promote it in turn.)

        Raises :class:`~sfu.errors.RoomFull` when a listener
        would pass ``max_speakers``, :class:`~sfu.errors.NotAllowed` for a
        ``by`` without the ``moderate`` grant, a member promoting itself past
        its token, or a member that cannot speak
        (``can_speak`` False: a WHEP player), :class:`~sfu.errors.NotFound`,
        :class:`~sfu.errors.RoomClosed` once the room is closed, and
        :class:`~sfu.errors.InvalidSetting` for ``role="listener"`` (see
        :meth:`demote`).
        """
        return self._moderation.promote(identity, role, by)

    async def demote(
        self, identity: str, *, role: Role = "listener", by: str | None = None
    ) -> Participant:
        """Send a speaker back to the audience: silent from its next packet on.

        ``role="speaker"`` takes only a moderator's ``moderate`` grant: it
        stays on the stage, speaking, with no renegotiation (its
        :class:`~sfu.events.RoleChanged` says ``speaker``,
        ``renegotiate=False``). The grant stays gone across its rejoins, as
        a demotion's; a rejoin otherwise gets what its token (or an earlier
        promotion, now to ``speaker``) gives, as a speaker's would: a
        moderator's token comes back a speaker, refused by a full stage
        like one. A member without the grant is returned as it is, with no
        event; a moderator that cannot publish (seated in the audience, or
        its token does not grant ``publish``) raises
        :class:`~sfu.errors.InvalidSetting`: demote it to ``listener`` to
        take the grant.

        Never refused for capacity: the audience may go past ``max_listeners``
        by the people taken off the stage. A moderator demoted loses the
        ``moderate`` grant, also across its rejoins in this room (whatever
        token they carry), until ``promote(identity, role="moderator")``.
        The :class:`~sfu.events.RoleChanged` asks the client to renegotiate
        only when it has a sending line to drop: a member promoted that never
        renegotiated (it never took its speaker line) is not asked. A plain
        listener (no ``moderate`` grant) is returned as it is: no event.

        Raises :class:`~sfu.errors.NotAllowed` for a ``by`` without the
        ``moderate`` grant, :class:`~sfu.errors.NotFound`,
        :class:`~sfu.errors.InvalidSetting` (not an identity, a ``role``
        other than ``listener`` or ``speaker``) and
        :class:`~sfu.errors.RoomClosed`.
        """
        return self._moderation.demote(identity, by, role)

    async def mute(self, identity: str, *, by: str | None = None) -> None:
        """Server-side mute: the speaker's packets are not forwarded and do not rank.

        Kept for the identity's rejoins in this room. Raises
        :class:`~sfu.errors.NotAllowed` for a ``by`` without the ``moderate``
        grant, :class:`~sfu.errors.NotFound`,
        :class:`~sfu.errors.InvalidSetting` (not an identity) and
        :class:`~sfu.errors.RoomClosed`.
        """
        self._moderation.set_muted(identity, True, by)

    async def unmute(self, identity: str, *, by: str | None = None) -> None:
        """Lift a moderator's mute (never a self-mute); raises what :meth:`mute` raises."""
        self._moderation.set_muted(identity, False, by)

    async def remove(
        self,
        identity: str,
        reason: str = "removed by a moderator",
        *,
        by: str | None = None,
        ban: bool = False,
    ) -> None:
        """Close the participant's session, telling it why; ``ban`` keeps it (and its token) out.

        Banning someone who is not in the room (their connection just
        dropped) still keeps them out, up to ``MAX_BANS`` (1,000) bans of a
        room (past it, :class:`~sfu.errors.InvalidSetting`: unban someone
        first; a member present is banned whatever the count, so that its
        removal never fails, and each such ban is a moderator's act); removing them without a ban raises
        :class:`~sfu.errors.NotFound`; on a closed room it raises
        :class:`~sfu.errors.RoomClosed`. ``by`` names the moderator acting
        (:class:`~sfu.errors.NotAllowed` unless it is a member holding
        ``moderate``); a malformed ``identity`` or ``reason``, or a ``ban``
        that is not a bool, raises :class:`~sfu.errors.InvalidSetting`.

        A removed member's promotion ends: back, it has the role its token
        (or the backend) gives; a demotion and a moderator's mute stay.

        A ban lasts as long as the room, also an empty one: a room that
        closes itself (``close_when_empty``) forgets its bans with it. A
        backend that wants a ban to outlast the room keeps its own list (it
        issues the tokens), or does not let the room close.
        """
        self._moderation.remove(identity, reason, by, ban)

    def is_banned(self, identity: str, token_id: str | None = None) -> bool:
        """True if ``identity`` (or the token with id ``token_id``) was removed with a ban.

        Raises :class:`~sfu.errors.InvalidSetting` for an ``identity`` that is
        not one, or a ``token_id`` that is neither None nor a str.
        """
        check_identity(identity)
        if token_id is not None and not isinstance(token_id, str):
            raise InvalidSetting(
                f"token_id must be a token's id (str) or None, got {type(token_id).__name__}"
            )
        return self._bans.keeps_out(identity, token_id)

    def unban(self, identity: str) -> None:
        """Let ``identity`` join again, with the token it was removed with too.

        Raises :class:`~sfu.errors.InvalidSetting` for an ``identity`` that is not one.
        """
        check_identity(identity)
        self._bans.discard(identity)

    # -- events -------------------------------------------------------------------

    def events(
        self,
        maxsize: int = 1024,
        *,
        accept: Callable[[RoomEvent], bool] | None = None,
        member: str | None = None,
    ) -> EventStream:
        """A new subscription to this room's events (see :class:`EventStream`);
        ``accept``: only the events it returns True for are queued (if it
        raises, the stream is closed and the error logged: the room goes on);
        ``member``: of the joins, connections, leaves, removals and hands
        (``MEMBER_SCOPED_EVENTS``) only those of this identity are queued,
        and the others cost the stream nothing (a member's own signaling,
        which learns of the others from ``RosterChanged`` and
        ``HandsChanged``: in a crowd of N such streams a join or a hand is
        then not N calls). Raises :class:`~sfu.errors.InvalidSetting` for a
        ``maxsize`` below 1, an ``accept`` that is not callable or a
        ``member`` that is not a str."""
        stream = EventStream(maxsize, accept, member=member)
        if self.closed:
            stream._put(RoomClosedEvent(self.name, self.close_reason or "closed"))
        else:
            self._subscribers.add(stream)
        return stream

    def _emit(self, event: RoomEvent) -> None:
        self._subscribers.emit(event)

    def roster(self) -> list[tuple[str, Role]]:
        """Every member's identity and role, in join order. Never raises."""
        return [(p.identity, p.role) for p in self._participants.values()]

    # -- the stage (sfu.stage) -----------------------------------------------------

    def stage(self) -> tuple[SlotInfo | None, ...]:
        """Who is in each slot right now (``None``: a free slot). Never raises."""
        return self._stage.current()

    def active_speakers(self) -> list[tuple[SlotInfo, float]]:
        """The ranked speakers with their score (0..1), best first; the dominant one leads.

        Never raises.
        """
        return self._stage.active_speakers()

    @property
    def dominant_speaker(self) -> str | None:
        """The identity of the dominant speaker right now, or None (the
        events tell its changes: :class:`~sfu.events.DominantSpeakerChanged`)."""
        return self._stage.dominant

    def _told_stage(self) -> tuple[tuple[SlotInfo | None, ...], str | None]:
        """The stage as last emitted, for a newcomer's snapshot (:meth:`Stage.told`)."""
        return self._stage.told()

    def _check_stage(self, now: float) -> None:
        self._stage.check(now)

    # -- callbacks from participants ---------------------------------------------

    def _participant_connected(self, participant: Participant) -> None:
        if participant.join_seconds is not None:
            self.server._observe_join(participant.join_seconds)
        logger.info(
            "%s connected to room %r from %s",
            shown(participant.identity),
            self.name,
            Shown(participant.session.address if participant.session else None),
        )
        self._emit(ParticipantConnected(self.name, participant.identity))

    def _emit_mute(self, participant: Participant, by: str | None) -> None:
        self._emit(
            MuteChanged(
                self.name,
                participant.identity,
                participant.muted,
                by,
                participant.moderator_muted,
                participant.self_muted,
            )
        )

    def _participant_closed(self, participant: Participant, reason: str) -> None:
        if self._participants.get(participant.identity) is not participant:
            return
        del self._participants[participant.identity]
        self._by_number.pop(participant.number, None)
        self._counts[participant.can_publish] -= 1
        demoted = participant.identity in self._demoted_present
        self._demoted_present.discard(participant.identity)
        # A departure that may be a reconnect opens a grace past the caps; a
        # removal is not one.
        if not reason.startswith("removed") and not self.closed:
            now = self.server.loop.time()
            if demoted:
                self._demoted_rejoin.open(participant.identity, now, DEMOTED_REJOIN_GRACE)
            elif participant.can_publish and participant.is_moderator:
                self._moderator_rejoin.open(participant.identity, now, MODERATOR_REJOIN_GRACE)
        participant._detach()
        if self._mixer is not None:
            self._mixer.forget(participant.number)
        self._moderation.drop_hand(participant.identity, None)
        self._closing.empty_since = None  # counted from the next tick, not from before this member
        logger.info("%s left room %r: %r", shown(participant.identity), self.name, reason)
        self._emit(ParticipantLeft(self.name, participant.identity, reason))
        self._listing.left(self.server.loop, participant)

    # -- timers ---------------------------------------------------------------------

    def _tick(self, now: float) -> None:
        """Once a second: receiver reports to speakers, due sender reports to
        receivers; an empty room past ``close_when_empty`` closes."""
        if self.policy.close_when_empty is not None:
            self._closing.check_empty(now)
        router = self.router
        for participant in self._participants.values():
            publisher = participant.publisher
            session = participant.session
            if publisher is None or session is None or session.state != "connected":
                continue
            report = router.receiver_report(publisher, now)
            if report is not None:
                session.send_rtcp(report)
        due = router.due_sender_reports(now)
        if due:
            unix_time = time.time()
            by_receiver = {p.receiver_id: p for p in self._participants.values()}
            for receiver_id in due:
                receiver = by_receiver.get(receiver_id)
                compound = router.sender_reports(receiver_id, now, unix_time)
                if receiver is not None and receiver.session is not None and compound:
                    receiver.session.send_rtcp(compound)
        mixer = self._mixer
        if mixer is not None and mixer.running:
            for participant in self._participants.values():
                session = participant.session
                if not participant.mixed or session is None or now < participant._next_mix_report:
                    continue
                report = mixer.sender_report(participant, now, time.time())
                if report is not None:
                    participant._next_mix_report = now + SENDER_REPORT_INTERVAL
                    session.send_rtcp(report)

    def _out_counts(self) -> tuple[int, int, int]:
        """(packets, dropped, payload bytes) sent: slot streams, and the mix to mixed listeners."""
        fanout, mixer = self.router.fanout, self._mixer
        if mixer is None:
            return fanout.sent, fanout.dropped, self.router.payload_bytes_out
        return (
            fanout.sent + mixer.packets_out,
            fanout.dropped + mixer.packets_out_dropped,
            self.router.payload_bytes_out + mixer.payload_bytes_out,
        )

    # -- mixing: recordings, live streams, mixed listeners (sfu.media.mixer) ----------

    _mixer: Mixer | None = None

    @property
    def mixer(self) -> Mixer:
        """The room's :class:`~sfu.media.mixer.Mixer`, made on first use.

        It runs only while something consumes it (a recording, a live
        stream, a mixed listener); forwarding never depends on it.
        """
        if self._mixer is None:
            from .media.mixer import Mixer

            if self.closed:
                raise RoomClosed(f"room {self.name!r} is closed")
            self._mixer = Mixer(
                self.router,
                loop=self.server.loop,
                sock=self.server.socket,
                name=self.name,
                max_speakers=self.slots,
                on_failure=self._mixer_failed,
            )
        return self._mixer

    def _mixer_failed(self, error: BaseException, receivers: list[int]) -> None:
        """The mixer stopped on an error (logged; its recordings and live
        streams ended): say so, and close the mixed members it dropped,
        which would otherwise wait for a mix that does not come (their
        clients join again, which starts the mixer again)."""
        self._emit(MixerFailed(self.name, f"{type(error).__name__}: {error}"[:200]))
        for number in receivers:
            participant = self._by_number.get(number)
            if participant is not None:
                participant._receiving = False  # the mixer has let it go already
                participant._close("the room mix failed: join again")

    def _mix_ssrcs(self, exclude: int) -> list[int]:
        """For a mixed member's answer (a=ssrc): the SSRC of the mix without
        participant ``exclude``'s voice (-1: the room mix)."""
        return [self.mixer.ssrc_for(exclude)]

    async def record(self, path: str | os.PathLike[str], *, per_speaker: bool = False) -> Recorder:
        """Record the room mix to ``path`` as Ogg/Opus until ``await recorder.stop()``.

        ``per_speaker=True`` also writes each speaker's own packets, not
        transcoded, to ``<stem>-<identity><suffix>`` beside it
        (:mod:`sfu.media.recorder`). Raises :class:`~sfu.errors.RoomClosed`,
        :class:`~sfu.errors.InvalidSetting` for a ``path`` that is not a file
        path or that a recording not stopped yet writes (in any room), or
        ``OSError`` when the file cannot be created. A disk that refuses a
        file later pauses that file until it takes it again (see the module).
        """
        from .media.recorder import Recorder

        if self.closed:
            raise RoomClosed(f"room {self.name!r} is closed")

        def identity_of(number: int) -> str | None:
            participant = self._by_number.get(number)
            return participant.identity if participant is not None else None

        recorder = Recorder(
            self.mixer, path, per_speaker=per_speaker, identity_of=identity_of, title=self.name
        )
        recorder.start(self.server.loop.time())
        return recorder

    # -- end ------------------------------------------------------------------------

    async def close(self, reason: str = "closed") -> None:
        """Close every member (telling each why), then the room; idempotent.

        A second call returns when the first has finished. The room leaves
        ``server.rooms`` at once, so the name can be used for a new room
        while this one still stops its mixer. Raises
        :class:`~sfu.errors.InvalidSetting` for a ``reason`` that is not a str.
        """
        check_reason(reason)
        await self._closing.close(reason)
