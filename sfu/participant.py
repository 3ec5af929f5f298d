"""Participants: one member of a room with one WebRTC session.

A :class:`Speaker` publishes its voice (one inbound Opus stream) and may
receive slots too; a :class:`Listener` only receives. Both are created by
:meth:`sfu.Room.add_speaker` / :meth:`sfu.Room.add_listener`, never
directly.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any, Literal

from aiortc.rtp import RtcpPacket, RtcpRrPacket, RtcpSrPacket

from .media.router import Publisher
from .transport.rtp import OPUS_CLOCK_RATE, ntp_time
from .transport.sdp import Negotiation

if TYPE_CHECKING:
    from .room import Room
    from .transport.session import Session

__all__ = ["Listener", "Participant", "Speaker"]

logger = logging.getLogger(__name__)


class Participant:
    """A member of a room. See :class:`Speaker` and :class:`Listener`."""

    role: Literal["speaker", "listener"]

    def __init__(self, room: Room, identity: str, number: int, negotiation: Negotiation) -> None:
        self.room = room
        self.identity = identity
        self.number = number
        self.negotiation = negotiation
        self.answer = ""
        self.session: Session | None = None
        self.joined_at = time.time()
        self.connected_at: float | None = None
        self.close_reason: str | None = None
        self._connected = asyncio.Event()
        self._closed = asyncio.Event()
        # What the receiver's RTCP reports say about each slot stream.
        self._slot_reports: dict[int, dict[str, float]] = {}
        self.rtcp_received = 0
        self.rtp_dropped = 0
        self.publisher: Publisher | None = None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.identity!r} in {self.room.name!r}>"

    @property
    def receiver_id(self) -> int:
        """Id of this participant in the room's fan-out, -1 when it takes no slot."""
        return self.number if self.negotiation.slots else -1

    @property
    def slot_count(self) -> int:
        return len(self.negotiation.slots)

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    @property
    def connected(self) -> bool:
        return self._connected.is_set() and not self.closed

    async def wait_connected(self, timeout: float | None = None) -> None:
        """Wait until ICE and DTLS are done (``TimeoutError`` after ``timeout``)."""
        await asyncio.wait_for(self._connected.wait(), timeout)

    async def wait_closed(self) -> None:
        await self._closed.wait()

    async def close(self, reason: str = "left") -> None:
        """Leave the room and free the session; idempotent."""
        self._close(reason)

    def _close(self, reason: str) -> None:
        if self.closed:
            return
        self.close_reason = reason
        self._closed.set()
        if self.session is not None:
            self.session.close(reason)
        self.room._participant_closed(self, reason)

    def stats(self) -> dict[str, Any]:
        """Counters and what RTCP says about this participant's streams.

        ``slots`` lists, per slot stream sent to it: packets and payload
        bytes sent, and from its receiver reports the fraction lost (0..1),
        cumulative packets lost, jitter (seconds) and round-trip time
        (seconds, ``None`` until a report answers one of our SRs).
        """
        counters = (
            self.room.router.receiver_counters(self.receiver_id) if self.receiver_id >= 0 else []
        )
        slots = []
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
        result: dict[str, Any] = {
            "identity": self.identity,
            "role": self.role,
            "state": "closed" if self.closed else (session.state if session else "new"),
            "address": session.address if session else None,
            "join_time": (self.connected_at - self.joined_at) if self.connected_at else None,
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
                "audio_level": publisher.level if publisher.level >= 0 else None,
                "muted": publisher.muted,
            }
        return result

    # -- SessionHandler ------------------------------------------------------

    def session_connected(self, session: Session) -> None:
        self.connected_at = time.time()
        if self.receiver_id >= 0 and session.srtp_tx is not None:
            self.room.router.add_receiver(
                self.receiver_id,
                session.address,
                session.srtp_tx,
                payload_type=self.negotiation.payload_type,
                audio_level_id=self.negotiation.audio_level_id,
                slot_count=self.slot_count,
                now=self.room.server.loop.time(),
            )
        self._connected.set()
        self.room._participant_connected(self)

    def session_address_changed(self, session: Session) -> None:
        if session.state == "connected" and self.receiver_id >= 0:
            self.room.router.set_receiver_address(self.receiver_id, session.address)

    def session_rtp(self, session: Session, packet: bytes, now: float) -> None:
        publisher = self.publisher
        if publisher is None:
            # A listener (or a send-less speaker) is never forwarded.
            self.rtp_dropped += 1
            self.room.server.drops["rtp from a participant that may not send"] += 1
            return
        self.room.router.forward(publisher, packet, now)

    def session_rtcp(self, session: Session, packet: bytes, now: float) -> None:
        self.rtcp_received += 1
        try:
            packets = RtcpPacket.parse(packet)
        except ValueError as exc:
            self.room.server.drops["rtcp malformed"] += 1
            logger.debug("x %r malformed rtcp: %s", self, exc)
            return
        slot_by_ssrc = {ssrc: slot for slot, ssrc in enumerate(self.room.router.slot_ssrcs)}
        for rtcp in packets:
            if (
                isinstance(rtcp, RtcpSrPacket)
                and self.publisher is not None
                and rtcp.ssrc == self.publisher.ssrc
            ):
                statistics = self.publisher.statistics
                statistics.last_sr = (rtcp.sender_info.ntp_timestamp >> 16) & 0xFFFFFFFF
                statistics.last_sr_arrival = now
            if isinstance(rtcp, (RtcpRrPacket, RtcpSrPacket)):
                for report in rtcp.reports:
                    slot = slot_by_ssrc.get(report.ssrc)
                    if slot is None:
                        continue
                    values: dict[str, float] = {
                        "fraction_lost": report.fraction_lost / 256,
                        "packets_lost": report.packets_lost,
                        "jitter": report.jitter / OPUS_CLOCK_RATE,
                    }
                    if report.lsr:
                        middle = (ntp_time() >> 16) & 0xFFFFFFFF
                        round_trip = (middle - report.lsr - report.dlsr) & 0xFFFFFFFF
                        if round_trip < 1 << 31:  # else the clocks disagree: no estimate
                            values["round_trip_time"] = round_trip / 65536
                    self._slot_reports.setdefault(slot, {}).update(values)

    def session_closed(self, session: Session, reason: str) -> None:
        self._close(reason)


class Speaker(Participant):
    """A participant whose voice is published to the room."""

    role: Literal["speaker", "listener"] = "speaker"

    @property
    def muted(self) -> bool:
        return self.publisher is not None and self.publisher.muted


class Listener(Participant):
    """A participant that only receives the room's slots."""

    role: Literal["speaker", "listener"] = "listener"
