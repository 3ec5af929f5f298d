"""Participants: one member of a room with one WebRTC session.

A :class:`Speaker` may publish its voice (it holds the ``publish`` grant:
roles ``speaker`` and ``moderator``); a :class:`Listener` only receives.
Both are created by :meth:`sfu.Room.join` and friends, never directly.
Promotion and demotion change the object's class in place (a promoted
listener *is* a :class:`Speaker` from then on) and keep its session,
identity and slots.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from typing import TYPE_CHECKING, cast

from ._values import check_reason, shown, timeout_seconds
from .auth import Grant, Role
from .errors import InvalidOffer, InvalidSetting, ParticipantClosed
from .events import RoleChanged
from .media.streams import Publisher
from .stats import ParticipantStats, SlotStats, SocketAddress
from .transport.answer import (
    AnswerTemplate,
    AnswerValues,
    Negotiation,
    fill_answer,
    negotiate_or_listen,
)
from .transport.ice import IceCredentials
from .transport.rtp import OPUS_CLOCK_RATE, ntp_time, read_reports
from .transport.sdp import parse_offer

if TYPE_CHECKING:
    from .room import Room
    from .transport.session import Session

__all__ = ["Listener", "Participant", "Speaker"]

logger = logging.getLogger(__name__)


class Participant:
    """A member of a room. See :class:`Speaker` and :class:`Listener`.

    Made by :meth:`Room.join <sfu.Room.join>` (and ``add_speaker``,
    ``add_listener``); a promotion or demotion changes its class in place
    (same object). Its plain attributes, beside the properties below
    (:attr:`answer` among them): ``identity``, ``room``, ``role``
    (``"moderator"``, ``"speaker"`` or ``"listener"``), ``grants`` (a
    frozenset of :data:`sfu.auth.Grant`), ``own_grants`` (what its token,
    or the role the backend gave a join without one, granted: it may not
    promote itself past them), ``csrc`` (the CSRC its voice carries to
    receivers, unique in the room), ``mixed`` (it receives the room mix,
    not slots), ``moderator_muted`` and ``self_muted`` (the two causes of
    :attr:`muted`), ``renegotiates`` (its client answers a
    ``RoleChanged(renegotiate=True)`` with a new offer; set it False as
    soon as the join returns for a client that cannot), ``close_reason``
    (why it left; None while in), ``joined_at`` and ``connected_at``
    (wall-clock ``time.time()``; None before it connects) and
    ``join_seconds`` (answer to DTLS done).
    """

    # Slots, not a __dict__: a room holds thousands of these (bench: bytes per listener).
    __slots__ = (
        "__weakref__",
        "_answer_template",
        "_answer_version",
        "_answered",
        "_closed",
        "_closed_event",
        "_connected",
        "_connected_event",
        "_mix_exclude",
        "_offer_asked_as_listener",
        "_receiving",
        "_session_id",
        "_next_mix_report",
        "_slot_reports",
        "close_reason",
        "connected_at",
        "csrc",
        "credentials",
        "grants",
        "identity",
        "join_seconds",
        "joined_at",
        "mixed",
        "moderator_muted",
        "negotiation",
        "number",
        "own_grants",
        "publisher",
        "_renegotiates",
        "role",
        "room",
        "rtcp_received",
        "rtp_dropped",
        "self_muted",
        "session",
        "token_id",
    )

    def __init__(
        self,
        room: Room,
        identity: str,
        number: int,
        negotiation: Negotiation,
        role: Role,
        grants: frozenset[Grant],
        credentials: IceCredentials,
    ) -> None:
        self.room = room
        self.identity = identity
        self.number = number
        #: The CSRC its voice carries to every receiver, in a slot or the mix:
        #: the room's name for it (unique in the room while it is a member; 0
        #: until the room gives it one, as it admits the member), not its
        #: client's SSRC. ``active_speakers`` events map it to the identity.
        self.csrc = 0
        self.negotiation = negotiation
        self.role: Role = role
        self.grants = grants
        self.credentials = credentials
        self.token_id: str | None = None
        #: What its join was entitled to by itself, before any moderator's
        #: decision: its token's grants, or (a join without a token, on the
        #: backend's word) those of the role the backend gave. A member may
        #: not promote itself past them (:meth:`sfu.Room.promote`).
        self.own_grants: frozenset[Grant] = grants
        # Its last answer without its own values (see the answer property):
        # shared with every member answered alike.
        self._answer_template: AnswerTemplate = ("", ())
        self.session: Session | None = None
        self.publisher: Publisher | None = None
        self.moderator_muted = False
        self.self_muted = False
        self.joined_at = time.time()
        self.connected_at: float | None = None
        #: Seconds from the answer to DTLS done, on the monotonic clock (a wall
        #: clock stepped meanwhile must not make it negative).
        self.join_seconds: float | None = None
        self._answered = time.monotonic()
        self.close_reason: str | None = None
        # Plain flags; the events exist only while somebody waits (they cost ~1 KB each).
        self._connected = False
        self._closed = False
        self._connected_event: asyncio.Event | None = None
        self._closed_event: asyncio.Event | None = None
        self._receiving = False  # registered in the Router's fan-out
        # A demotion asked its client for an offer without a sending line (see
        # renegotiate(): a promotion may come before that offer does).
        self._offer_asked_as_listener = False
        # Receives the room mix instead of slots (Room.join: asked for, or fewer
        # lines than slots): registered with the room's Mixer instead of the
        # Router while connected.
        self.mixed = False
        # The mix stream its last answer announced, which it gets until the next
        # answer whatever its role meanwhile: without this number's voice (-1: the room mix).
        self._mix_exclude = -1
        # What the client's RTCP reports say about each slot stream.
        self._slot_reports: dict[int, dict[str, float]] = {}
        # The answers' o= line: one session id, its version counted up per answer.
        self._session_id = secrets.randbits(62)
        self._answer_version = 1
        # When a mixed receiver's next sender report is due (the Router keeps
        # this for slot receivers).
        self._next_mix_report = 0.0
        self.rtcp_received = 0
        self.rtp_dropped = 0
        self._renegotiates = True

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.identity!r} ({self.role}) in {self.room.name!r}>"

    @property
    def answer(self) -> str:
        """The SDP answer to send its client: its join's, or its last
        :meth:`renegotiate`'s (which returns it too). Written out at each
        read from a template shared by the members answered alike."""
        return fill_answer(self._answer_template, self._answer_values(self._answer_version))

    def _answer_values(self, version: int) -> AnswerValues:
        return AnswerValues(self.credentials.ufrag, self.credentials.pwd, self._session_id, version)

    # -- state ---------------------------------------------------------------

    @property
    def renegotiates(self) -> bool:
        """Whether its client answers a ``RoleChanged(renegotiate=True)`` with a
        new offer (sfu.signaling's WebSocket, a backend's own signaling). The
        WHIP/WHEP adapter sets it False: its media lines are fixed at the POST.
        True or False only (:class:`~sfu.errors.InvalidSetting` otherwise)."""
        return self._renegotiates

    @renegotiates.setter
    def renegotiates(self, value: bool) -> None:
        if not isinstance(value, bool):
            raise InvalidSetting(f"renegotiates must be True or False, got {value!r:.60}")
        self._renegotiates = value

    @property
    def can_publish(self) -> bool:
        """It holds the ``publish`` grant: its voice may be forwarded (a
        speaker or moderator; see :attr:`can_speak` for whether it can send)."""
        return "publish" in self.grants

    @property
    def can_speak(self) -> bool:
        """Whether it could send its voice if allowed: it has a sending line,
        or its client adds one when asked. False for a WHEP player, which
        :meth:`Room.promote <sfu.Room.promote>` refuses."""
        return self.negotiation.publish is not None or self.renegotiates

    @property
    def is_moderator(self) -> bool:
        """It holds the ``moderate`` grant (a moderator, on the stage or seated
        in the audience)."""
        return "moderate" in self.grants

    @property
    def muted(self) -> bool:
        """Muted by a moderator or by itself: nothing it sends is forwarded."""
        return self.moderator_muted or self.self_muted

    @property
    def receiver_id(self) -> int:
        """Id of this participant in the room's fan-out (its number)."""
        return self.number

    @property
    def slot_count(self) -> int:
        """How many of its client's receiving audio lines were answered (at
        most the room's ``slots``): its slot streams, or for a mixed member
        the lines whose first carries the mix."""
        return len(self.negotiation.slots)

    @property
    def closed(self) -> bool:
        """True once it has left (see :attr:`close_reason`)."""
        return self._closed

    @property
    def connected(self) -> bool:
        """ICE and DTLS are done and it has not left (see :meth:`wait_connected`)."""
        return self._connected and not self._closed

    async def wait_connected(self, timeout: float | None = None) -> None:
        """Wait until ICE and DTLS are done (``asyncio.TimeoutError`` after ``timeout``).

        Raises :class:`~sfu.errors.ParticipantClosed` if the participant
        closes first (it left, was removed, its handshake failed), and
        :class:`~sfu.errors.InvalidSetting` for a ``timeout`` that is not
        None or a number.
        """
        timeout = timeout_seconds(timeout)
        if self._connected and not self._closed:
            return
        self._check_open()
        if self._connected_event is None:
            self._connected_event = asyncio.Event()
        try:
            await asyncio.wait_for(self._connected_event.wait(), timeout)
        except asyncio.TimeoutError:
            raise asyncio.TimeoutError(
                f"{self.identity!r} in room {self.room.name!r} did not connect"
                f" (ICE and DTLS) within {timeout:g} s"
            ) from None
        self._check_open()

    def _check_open(self) -> None:
        if self._closed:
            raise ParticipantClosed(
                f"{self.identity!r} has left room {self.room.name!r}: {self.close_reason}"
            )

    async def wait_closed(self) -> None:
        """Wait until it has left (at once if it has). Never raises."""
        if self._closed:
            return
        if self._closed_event is None:
            self._closed_event = asyncio.Event()
        await self._closed_event.wait()

    # -- what the participant itself may do ----------------------------------

    async def close(self, reason: str = "left") -> None:
        """Leave the room and free the session; idempotent.

        Raises :class:`~sfu.errors.InvalidSetting` for a ``reason`` that is not a str.
        """
        check_reason(reason)
        self._close(reason)

    def raise_hand(self) -> None:
        """Raise its hand: a listener asks to speak (see :meth:`Room.raise_hand <sfu.Room.raise_hand>`).

        Raises :class:`~sfu.errors.NotAllowed` for a :class:`Speaker`, which
        may speak already and has no hand to raise (a promotion lowers the
        hand that asked for it), :class:`~sfu.errors.ParticipantClosed` once
        it has left.
        """
        self._check_open()  # a late message must not touch a rejoined namesake
        self.room.raise_hand(self.identity)

    def lower_hand(self) -> None:
        """Lower its hand, if raised (nothing happens otherwise, also for a
        :class:`Speaker`). Raises :class:`~sfu.errors.ParticipantClosed` once it has left."""
        self._check_open()
        self.room.lower_hand(self.identity)

    def set_self_muted(self, muted: bool) -> None:
        """The participant's own mute; it cannot undo a moderator's mute.

        Raises :class:`~sfu.errors.InvalidSetting` for a ``muted`` that is
        not a bool, :class:`~sfu.errors.ParticipantClosed` once it has left.
        """
        if not isinstance(muted, bool):
            raise InvalidSetting(f"muted must be True or False, got {muted!r}")
        self._check_open()
        if self.self_muted == muted:
            return
        was_muted = self.muted
        self.self_muted = muted
        self._apply_mute(was_muted)
        self.room._emit_mute(self, self.identity)

    async def renegotiate(self, offer_sdp: str) -> str:
        """Answer a new offer on the same session (after promotion or demotion).

        ICE credentials and DTLS fingerprint must stay the same: ICE and DTLS
        stay up, only the media lines change. A participant allowed to
        publish should offer a sending audio line; an offer without one (made
        for a demotion that a promotion undid meanwhile) is answered as a
        listener's and a :class:`~sfu.events.RoleChanged` with
        ``renegotiate=True`` asks for another. One that may not publish is
        answered so that the server never receives on any line. Raises
        :class:`~sfu.errors.InvalidOffer` (the previous state is kept then),
        or :class:`~sfu.errors.ParticipantClosed` once it has left.
        """
        self._check_open()
        if self.session is None:
            raise ParticipantClosed(f"{self.identity!r} has no session in room {self.room.name!r}")
        offer = parse_offer(offer_sdp)
        if offer.ice_ufrag != self.session.remote_ufrag or offer.ice_pwd != self.session.remote_pwd:
            raise InvalidOffer(
                "the new offer changes the ICE credentials; ICE restarts are not supported: "
                "renegotiate on the same connection"
            )
        if set(offer.fingerprints) != set(self.session.dtls_fingerprints):
            raise InvalidOffer(
                "the new offer changes the DTLS fingerprint; keep the same connection"
            )
        max_slots = 1 if self.mixed else self.room.slots
        # Promoted again before this offer, made for the demotion, arrived: it
        # is answered as a listener's and one with a sending line asked for, as
        # at a promotion (else the client would wait, silent, for nothing).
        negotiation, must_offer = negotiate_or_listen(
            offer,
            publish=self.can_publish,
            max_slots=max_slots,
            listen_instead=self._offer_asked_as_listener,
        )
        exclude = self._own_mix_exclude() if self.mixed else -1
        mix_ssrcs = self.room._mix_ssrcs(exclude) if self.mixed else None
        # The same session, its next version (RFC 3264 8: the o= line's id stays).
        version = self._answer_version + 1
        template = self.room._answer(offer, negotiation, self._answer_values(version), mix_ssrcs)
        connected = self.session.state == "connected"
        announced = self._mix_exclude
        changed_stream = self.mixed and exclude != announced
        if changed_stream:
            # A role change since the last answer: mix-minus now, or no longer.
            # (Else it stays registered: its stream and counts go on.) What it
            # was sent on the stream it leaves is kept: it may come back to it.
            self._stop_receiving(keep_counts=True)
            self._mix_exclude = exclude
        try:
            self._apply_negotiation(negotiation, connected=connected)
        except BaseException:
            self._mix_exclude = announced
            if connected:
                self._start_receiving()  # the previous stream again
            raise
        self._answer_template = template
        self._answer_version = version
        logger.info(
            "%s renegotiated in room %r (%s, %s)",
            shown(self.identity),
            self.room.name,
            self.role,
            "the mix" if self.mixed else f"{self.slot_count} slots",
        )
        self._offer_asked_as_listener = False
        if must_offer:
            self.room._emit(self._role_changed(None, renegotiate=True))
        return self.answer

    def _role_changed(self, by: str | None, *, renegotiate: bool) -> RoleChanged:
        """The event that tells the room this member's role and grant as they are now."""
        return RoleChanged(
            self.room.name,
            self.identity,
            self.role,
            by,
            renegotiate=renegotiate,
            moderates=self.is_moderator,
        )

    # -- changes made by the room ----------------------------------------------

    def _apply_negotiation(self, negotiation: Negotiation, *, connected: bool) -> None:
        router = self.room.router
        previous = self.negotiation
        self.negotiation = negotiation
        try:
            # Each step below leaves things as they were if it raises (no decoder
            # for the levels of a client that sends no level extension).
            publisher = self.publisher
            if publisher is not None and self.can_publish and negotiation.publish is not None:
                router.set_audio_level_id(publisher, negotiation.audio_level_id)
                publisher.payload_type = negotiation.payload_type
            self._sync_publisher()
        except BaseException:
            self.negotiation = previous
            raise
        # Receiving side: re-register when what the fan-out writes changed.
        if connected and (
            not self._receiving
            or previous.slots != negotiation.slots
            or previous.payload_type != negotiation.payload_type
            or previous.audio_level_id != negotiation.audio_level_id
        ):
            # Kept also when it now has nothing to receive: lines it gets back
            # later go on where they were, for its SRTP context as for its counts.
            self._stop_receiving(keep_counts=True)
            self._start_receiving()

    def _start_receiving(self) -> None:
        session = self.session
        if (
            self._receiving
            or not self.negotiation.slots
            or session is None
            or session.srtp_tx is None
        ):
            return
        if self.mixed:
            self.room.mixer.add_receiver(self)
            self._receiving = True
            return
        self.room.router.add_receiver(
            self.receiver_id,
            session.address,
            session.srtp_tx,
            payload_type=self.negotiation.payload_type,
            audio_level_id=self.negotiation.audio_level_id,
            slot_count=self.slot_count,
            now=self.room.server.loop.time(),
        )
        self._receiving = True

    def _stop_receiving(self, *, keep_counts: bool = False) -> None:
        """``keep_counts``: a renegotiation, it may receive again on this
        session; else it is gone for good (see Router.remove_receiver)."""
        if self._receiving and self.mixed:
            self.room.mixer.remove_receiver(self, keep_counts=keep_counts)
            self._receiving = False
        if self._receiving:
            self.room.router.remove_receiver(self.receiver_id, keep_counts=keep_counts)
            self._receiving = False
        if not keep_counts:
            self.room.router.forget_receiver(self.receiver_id)
            if self.room._mixer is not None:
                self.room._mixer.forget_receiver(self.receiver_id)

    def _own_mix_exclude(self) -> int:
        """Whose voice the mix it gets leaves out: its own if it may publish."""
        return self.number if self.can_publish else -1

    def _set_role(self, role: Role, grants: frozenset[Grant]) -> None:
        """Change role and grants; if the publisher cannot be made, nothing changes."""
        previous = self.role, self.grants, self.__class__
        self.role = role
        self.grants = grants
        self.__class__ = Speaker if self.can_publish else Listener
        # Demoted: silent from the next packet, whatever the client does.
        # Promoted while its sending line is still negotiated (demoted, then
        # promoted back before renegotiating): heard again at once.
        try:
            self._sync_publisher()
        except BaseException:
            self.role, self.grants, self.__class__ = previous
            raise

    def _sync_publisher(self) -> None:
        """A router publisher exactly when the role may send and a sending line is negotiated."""
        router = self.room.router
        negotiation = self.negotiation
        if self.can_publish and negotiation.publish is not None:
            if self.publisher is None:
                publisher = Publisher(
                    number=self.number,
                    csrc=self.csrc,
                    payload_type=negotiation.payload_type,
                    audio_level_id=negotiation.audio_level_id,
                    receiver_id=self.receiver_id,
                    muted=self.muted,
                )
                router.add_publisher(publisher)  # may raise: nothing is kept then
                self.publisher = publisher
        elif self.publisher is not None:
            router.remove_publisher(self.publisher)
            self.publisher = None

    def _set_muted(self, muted: bool) -> bool:
        """Moderator mute; True when it changed."""
        if self.moderator_muted == muted:
            return False
        was_muted = self.muted
        self.moderator_muted = muted
        self._apply_mute(was_muted)
        return True

    def _apply_mute(self, was_muted: bool) -> None:
        publisher = self.publisher
        if publisher is None or was_muted == self.muted:
            return
        publisher.muted = self.muted
        if self.muted:
            self.room.router.release(publisher)
        else:
            self.room.router.restore(publisher)

    def _detach(self) -> None:
        """Leave the Router (called by the room once the participant is gone)."""
        if self.publisher is not None:
            self.room.router.remove_publisher(self.publisher)
            self.publisher = None
        self.room.router.release_csrc(self.csrc)
        self._stop_receiving()

    def _close(self, reason: str) -> None:
        if self.closed:
            return
        self.close_reason = reason
        self._closed = True
        if self._closed_event is not None:
            self._closed_event.set()
        if self._connected_event is not None:
            self._connected_event.set()  # a waiter learns it will never connect
        if self.session is not None:
            self.session.close(reason)
        self.room._participant_closed(self, reason)

    # -- statistics ------------------------------------------------------------

    def stats(self) -> ParticipantStats:
        """Counters and what RTCP says about this participant's streams.

        ``slots`` lists, per slot stream sent to it: packets and payload
        bytes sent, and from its receiver reports the fraction lost (0..1),
        cumulative packets lost, jitter (seconds) and round-trip time
        (seconds, ``None`` until a report answers one of our SRs). ``csrc``
        is the CSRC its voice carries to receivers (:attr:`csrc`);
        ``inbound``, for a speaker, what it sends, with its client's SSRC.
        See :class:`~sfu.stats.ParticipantStats`. Never raises.
        """
        counters = self.room.router.receiver_counters(self.receiver_id) if self._receiving else []
        if self.mixed and self._receiving:
            counters = self.room.mixer.receiver_counters(self)
        slots: list[SlotStats] = []
        for slot, (packets, octets) in enumerate(counters):
            report = self._slot_reports.get(slot, {})
            slots.append(
                {
                    "slot": slot,
                    "packets_sent": packets,
                    "bytes_sent": octets,
                    "fraction_lost": report.get("fraction_lost", 0.0),
                    "packets_lost": int(report.get("packets_lost", 0)),
                    "jitter": report.get("jitter", 0.0),
                    "round_trip_time": report.get("round_trip_time"),
                }
            )
        session = self.session
        result: ParticipantStats = {
            "identity": self.identity,
            "role": self.role,
            "csrc": self.csrc,
            "state": "closed" if self.closed else (session.state if session else "new"),
            "address": cast("SocketAddress", session.address) if session else None,
            "join_time": self.join_seconds,
            "muted": self.muted,
            "rtcp_received": self.rtcp_received,
            "rtp_dropped": self.rtp_dropped,
            "slots": slots,
        }
        publisher = self.publisher
        if publisher is not None:
            statistics = publisher.statistics
            result["inbound"] = {
                "ssrc": publisher.ssrc if publisher.ssrc >= 0 else None,
                "packets_received": publisher.packets,
                "bytes_received": publisher.octets,
                "packets_lost": statistics.lost,
                "jitter": statistics.jitter / OPUS_CLOCK_RATE,
                "audio_level": publisher.level & 0x7F if publisher.level >= 0 else None,
                "level_source": "extension" if publisher.meter is None else "decoded",
                "muted": publisher.muted,
            }
        return result

    # -- SessionHandler ----------------------------------------------------------
    # Called by its media session (sfu.transport.session), not by applications.

    def session_connected(self, session: Session) -> None:
        """Its session's DTLS handshake is done: media starts (for the session)."""
        self.connected_at = time.time()
        if self.join_seconds is None:
            self.join_seconds = time.monotonic() - self._answered
        self._start_receiving()
        self._connected = True
        if self._connected_event is not None:
            self._connected_event.set()
        self.room._participant_connected(self)

    def session_address_changed(self, session: Session) -> None:
        """Its client's address moved (a proven NAT rebinding; for the session)."""
        if self._receiving and self.mixed:
            self.room.mixer.set_receiver_address(self)
        elif self._receiving:
            self.room.router.set_receiver_address(self.receiver_id, session.address)

    def session_rtp(self, session: Session, packet: bytes, now: float) -> None:
        """One decrypted RTP packet from its client (for the session)."""
        publisher = self.publisher
        if publisher is None:
            # A listener (or a demoted speaker) is never forwarded.
            self.rtp_dropped += 1
            self.room.server.drops["rtp from a participant that may not send"] += 1
            return
        self.room.router.forward(publisher, packet, now)

    def session_rtcp(self, session: Session, packet: bytes, now: float) -> None:
        """One decrypted RTCP compound from its client (for the session)."""
        self.rtcp_received += 1
        router = self.room.router
        # Only reports on streams the server sends it are read: a datagram
        # may carry ~60 blocks, and reading them all cost 10 to 15 times as
        # much. A mixed receiver's one stream is the mix: its reports go to slot 0.
        if self.mixed:
            mixer = self.room._mixer
            mix_ssrc = mixer.receiver_ssrc(self) if mixer is not None else None
            ours = [] if mix_ssrc is None else [mix_ssrc]
        else:
            ours = router.slot_ssrcs
        try:
            sender, blocks = read_reports(packet, ours)
        except ValueError as exc:
            self.room.server.drops["rtcp malformed"] += 1
            logger.debug("x %r malformed rtcp: %s", self, exc)
            return
        publisher = self.publisher
        if sender is not None and publisher is not None and sender[0] == publisher.ssrc:
            publisher.statistics.last_sr = (sender[1] >> 16) & 0xFFFFFFFF
            publisher.statistics.last_sr_arrival = now
        for block in blocks:
            slot = 0 if self.mixed else router.slot_of_ssrc(block.ssrc)
            if slot < 0:  # (read_reports kept only these SSRCs' blocks)
                continue
            values: dict[str, float] = {
                "fraction_lost": block.fraction_lost / 256,
                "packets_lost": block.packets_lost,
                "jitter": block.jitter / OPUS_CLOCK_RATE,
            }
            if block.lsr:
                middle = (ntp_time() >> 16) & 0xFFFFFFFF
                round_trip = (middle - block.lsr - block.dlsr) & 0xFFFFFFFF
                if round_trip < 1 << 31:  # else the clocks disagree: no estimate
                    values["round_trip_time"] = round_trip / 65536
            self._slot_reports.setdefault(slot, {}).update(values)

    def session_closed(self, session: Session, reason: str) -> None:
        """Its session ended (consent expired, handshake failed...): it leaves."""
        self._close(reason)


class Speaker(Participant):
    """A participant allowed to publish its voice: it holds the ``publish``
    grant (a speaker or moderator, or any role whose token's ``grants`` add
    ``publish``: ``role`` may then say ``"listener"``)."""

    __slots__ = ()


class Listener(Participant):
    """A participant that only receives the room's slots: it lacks the
    ``publish`` grant (a listener, or any role whose token's ``grants``
    leave ``publish`` out: ``role`` may then say ``"speaker"``)."""

    __slots__ = ()
