"""Room: a named audio room, its members and its Router.

Created by :meth:`sfu.Server.room`. Closing a room closes its members;
closing a member frees its session; both are idempotent.
"""

from __future__ import annotations

import itertools
import logging
import secrets
import time
from typing import TYPE_CHECKING

from .errors import DuplicateIdentity, InvalidSetting, RoomClosed
from .events import EventStream, ParticipantConnected, ParticipantJoined, ParticipantLeft, RoomEvent
from .events import RoomClosed as RoomClosedEvent
from .media.router import Publisher, Router
from .participant import Listener, Participant, Speaker
from .transport.ice import IceCredentials
from .transport.sdp import build_answer, negotiate, parse_offer
from .transport.session import Session

if TYPE_CHECKING:
    from .transport.server import Server

__all__ = ["Room"]

logger = logging.getLogger(__name__)

MAX_IDENTITY_LENGTH = 256
_participant_numbers = itertools.count(1)


class Room:
    """A named audio room; see the package documentation for the API."""

    def __init__(self, server: Server, name: str, *, slots: int = 3) -> None:
        if not isinstance(name, str) or not name or len(name) > 256:
            raise InvalidSetting(
                f"a room name must be a non-empty string of at most 256 characters, got {name!r}"
            )
        if not isinstance(slots, int) or not 1 <= slots <= 16:
            raise InvalidSetting(f"slots must be an integer between 1 and 16, got {slots!r}")
        self.server = server
        self.name = name
        self.slots = slots
        self.router = Router(server.socket, slots)
        self.created_at = time.time()
        self._participants: dict[str, Participant] = {}
        self._subscribers: list[EventStream] = []
        self._closed = False
        self.close_reason: str | None = None
        # A random CNAME per room: nothing identifying the room goes on the wire.
        self._cname = secrets.token_hex(8)

    def __repr__(self) -> str:
        return f"<Room {self.name!r} {len(self._participants)} members>"

    # -- members ---------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def participants(self) -> dict[str, Participant]:
        return dict(self._participants)

    @property
    def speakers(self) -> list[Speaker]:
        return [p for p in self._participants.values() if isinstance(p, Speaker)]

    @property
    def listeners(self) -> list[Listener]:
        return [p for p in self._participants.values() if isinstance(p, Listener)]

    def get(self, identity: str) -> Participant | None:
        return self._participants.get(identity)

    async def add_speaker(self, offer: str, identity: str) -> Speaker:
        """Answer a speaker's offer: it publishes its voice and receives slots.

        Raises :class:`~sfu.errors.InvalidOffer` for an unusable offer,
        :class:`~sfu.errors.DuplicateIdentity` when ``identity`` is taken and
        :class:`~sfu.errors.RoomClosed` when the room is closed. Nothing is
        registered when it raises.
        """
        participant = self._admit(offer, identity, publish=True)
        assert isinstance(participant, Speaker)
        return participant

    async def add_listener(self, offer: str, identity: str) -> Listener:
        """Answer a listener's offer: it receives up to ``slots`` slot streams."""
        participant = self._admit(offer, identity, publish=False)
        assert isinstance(participant, Listener)
        return participant

    def _admit(self, offer_sdp: str, identity: str, *, publish: bool) -> Participant:
        if self._closed:
            raise RoomClosed(f"room {self.name!r} is closed")
        if not isinstance(identity, str) or not identity or len(identity) > MAX_IDENTITY_LENGTH:
            raise InvalidSetting(
                f"identity must be a non-empty string of at most {MAX_IDENTITY_LENGTH} characters"
            )
        if identity in self._participants:
            raise DuplicateIdentity(
                f"{identity!r} is already in room {self.name!r}; pick another identity or close the other one"
            )
        offer = parse_offer(offer_sdp)
        negotiation = negotiate(offer, publish=publish, max_slots=self.slots)
        number = next(_participant_numbers)
        participant: Participant = (Speaker if publish else Listener)(
            self, identity, number, negotiation
        )
        credentials = IceCredentials.generate()
        participant.answer = build_answer(
            offer,
            negotiation,
            ice_ufrag=credentials.ufrag,
            ice_pwd=credentials.pwd,
            fingerprint=self.server.certificate.fingerprint,
            address=self.server.announce,
            port=self.server.port,
            slot_ssrcs=self.router.slot_ssrcs,
            cname=self._cname,
            session_id=secrets.randbits(62),
        )
        # Everything that can fail has run: register.
        session = Session(
            self.server,
            credentials,
            offer.ice_ufrag,
            offer.fingerprints,
            participant,
            self.server.loop.time(),
        )
        self.server._register(session)
        participant.session = session
        if publish and negotiation.publish is not None:
            publisher = Publisher(
                number=number,
                payload_type=negotiation.payload_type,
                audio_level_id=negotiation.audio_level_id,
                receiver_id=participant.receiver_id,
            )
            participant.publisher = publisher
            self.router.add_publisher(publisher)
        self._participants[identity] = participant
        logger.info(
            "%s joined room %r as %s (%d slots)",
            identity,
            self.name,
            participant.role,
            participant.slot_count,
        )
        self._emit(ParticipantJoined(self.name, identity, participant.role))
        return participant

    # -- events ---------------------------------------------------------------

    def events(self, maxsize: int = 1024) -> EventStream:
        """A new subscription to this room's events (see :class:`EventStream`)."""
        stream = EventStream(maxsize)
        if self._closed:
            stream._put(RoomClosedEvent(self.name, self.close_reason or "closed"))
        else:
            self._subscribers.append(stream)
        return stream

    def _emit(self, event: RoomEvent) -> None:
        for stream in self._subscribers:
            stream._put(event)

    # -- callbacks from participants ------------------------------------------------

    def _participant_connected(self, participant: Participant) -> None:
        logger.info(
            "%s connected to room %r from %s",
            participant.identity,
            self.name,
            participant.stats()["address"],
        )
        self._emit(ParticipantConnected(self.name, participant.identity))

    def _participant_closed(self, participant: Participant, reason: str) -> None:
        if self._participants.get(participant.identity) is not participant:
            return
        del self._participants[participant.identity]
        if participant.publisher is not None:
            self.router.remove_publisher(participant.publisher)
        if participant.receiver_id >= 0:
            self.router.remove_receiver(participant.receiver_id)
        logger.info("%s left room %r: %s", participant.identity, self.name, reason)
        self._emit(ParticipantLeft(self.name, participant.identity, reason))

    # -- timers ----------------------------------------------------------------------

    def _tick(self, now: float) -> None:
        """Once a second: receiver reports to speakers, due sender reports to receivers."""
        router = self.router
        for participant in list(self._participants.values()):
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

    # -- end -----------------------------------------------------------------------

    async def close(self, reason: str = "closed") -> None:
        """Close every member, then the room; idempotent."""
        if self._closed:
            return
        self._closed = True
        self.close_reason = reason
        for participant in list(self._participants.values()):
            participant._close(f"room closed: {reason}")
        self.router.close()
        self.server._room_closed(self)
        logger.info("room %r closed: %s", self.name, reason)
        self._emit(RoomClosedEvent(self.name, reason))
        self._subscribers.clear()
