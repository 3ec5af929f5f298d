"""What the ``stats()`` calls return, as typed dictionaries.

:meth:`Server.stats <sfu.Server.stats>` (totals since start),
:meth:`Participant.stats <sfu.Participant.stats>` (one member's session and
streams) and :meth:`Recorder.stats <sfu.media.recorder.Recorder.stats>` (a
recording's files). Plain ``dict`` at run time; to a type checker every
field has its type, so a backend reading them needs no casts.
"""

from __future__ import annotations

from typing import Literal, TypedDict

from .auth import Role

__all__ = [
    "InboundStats",
    "ParticipantStats",
    "RecorderStats",
    "ServerStats",
    "SessionState",
    "SlotStats",
    "SocketAddress",
    "SpeakerFileStats",
]

#: A session's state: ``new`` (answered), ``checking`` (an ICE check came),
#: ``connected`` (DTLS done), ``closed``.
SessionState = Literal["new", "checking", "connected", "closed"]
#: The client's address as the socket gives it: ``(host, port)``, or
#: ``(host, port, flowinfo, scope_id)`` on an IPv6 socket.
SocketAddress = tuple[str, int] | tuple[str, int, int, int]


class ServerStats(TypedDict):
    """:meth:`Server.stats <sfu.Server.stats>`: ``rooms``, ``sessions`` and
    ``participants`` now; the rest totals since start."""

    rooms: int
    sessions: int
    participants: int
    packets_in: int
    bytes_in: int
    packets_out: int
    packets_out_dropped: int
    payload_bytes_out: int
    #: Speakers' RTP the rooms did not forward (malformed, another codec, a
    #: stray SSRC, a sequence jump, more packets than a voice sends).
    rtp_not_forwarded: int
    #: Datagrams the server dropped, by reason (``server.drops``).
    drops: dict[str, int]


class SlotStats(TypedDict):
    """One stream sent to a member (a slot, or its mix), and what its
    receiver reports say of it."""

    slot: int
    packets_sent: int
    bytes_sent: int
    fraction_lost: float  # 0..1
    packets_lost: int
    jitter: float  # seconds
    round_trip_time: float | None  # seconds; None until a report answers a sender report


class InboundStats(TypedDict):
    """What a speaker's client sends."""

    ssrc: int | None  # its client's SSRC, None before its first packet
    packets_received: int
    bytes_received: int
    packets_lost: int
    jitter: float  # seconds
    audio_level: int | None  # the last RFC 6464 level (-dBov, 0..127)
    level_source: Literal["extension", "decoded"]
    muted: bool


class _ParticipantStats(TypedDict):
    identity: str
    role: Role
    csrc: int
    state: SessionState
    address: SocketAddress | None
    join_time: float | None  # seconds from the answer to DTLS done
    muted: bool
    rtcp_received: int
    rtp_dropped: int
    slots: list[SlotStats]


class ParticipantStats(_ParticipantStats, total=False):
    """:meth:`Participant.stats <sfu.Participant.stats>`; ``inbound`` only
    while the member publishes (it may, and its offer has a sending line; not
    once closed): read it with ``stats.get("inbound")``."""

    inbound: InboundStats


class SpeakerFileStats(TypedDict):
    """One speaker's own file of a recording made with ``per_speaker=True``.

    ``paused``: the disk refuses the file for now (full, read-only; it is
    tried again with a back-off); ``lost``: seconds the disk cost it,
    silence for its outages (the one under way included), or missing at its
    end when the disk still refused it at the stop."""

    path: str
    duration: float
    packets: int
    silence_frames: int
    late: int
    ahead: int
    paused: bool
    lost: float


class RecorderStats(TypedDict):
    """:meth:`Recorder.stats <sfu.media.recorder.Recorder.stats>`; ``paused``
    and ``lost`` are the mix file's, as :class:`SpeakerFileStats` has them."""

    path: str
    recording: bool
    duration: float
    packets: int
    paused: bool
    lost: float
    speakers: dict[str, SpeakerFileStats]
