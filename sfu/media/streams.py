"""A room's RTP streams as its Router keeps them.

A :class:`Publisher` is a speaker's inbound stream; a :class:`SlotStream` is
one slot's outgoing stream, shared by every receiver of the room, whose
SSRC, sequence numbers and timestamps stay continuous while the speaker in
it changes. :func:`send_in_step` brings a receiver's SRTP context for a
stream it gets back after a while up to where the stream is now (see
:mod:`sfu.media.router`).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field

from ..relay import FanOut
from ..transport.rtp import OPUS_CLOCK_RATE, ReceiveStatistics
from ..transport.srtp import INDEX_STEP, index_steps
from .levels import SILENCE as SILENCE_LEVEL
from .levels import OpusLevelMeter
from .ogg import MAX_PACKET_SAMPLES, packet_samples
from .opus import FRAME_SAMPLES, SILENCE_MONO

__all__ = [
    "KEEP_IN_STEP",
    "PACKET_BURST",
    "PACKET_RATE",
    "SILENCE_RTP",
    "Publisher",
    "SlotStream",
    "send_in_step",
]

#: Packets of a slot a holder may miss (its own voice) before it is sent one
#: silence frame on it (every ~82 s): under the 2**15 that SRTP index
#: guessing allows even when six in a row are lost (sfu.transport.srtp).
KEEP_IN_STEP = INDEX_STEP
#: Packets a second a speaker is forwarded at most, and the burst it may send
#: above that (after a network stall): an Opus packet carries at least 2.5 ms,
#: so no voice sends more than 400 a second (WebRTC clients send 50 or 100).
#: Every packet goes on to every receiver: a flood is cut here, not multiplied.
PACKET_RATE = 400.0
PACKET_BURST = 200
#: An RTP packet carrying a 20 ms Opus silence frame; the fan-out writes the
#: header, only the payload after byte 12 is used.
SILENCE_RTP = bytes(12) + SILENCE_MONO


def send_in_step(
    fanout: FanOut,
    slot: int,
    ssrc: int,
    last: int,
    target: int,
    target_timestamp: int,
    csrc: int,
    receiver_id: int,
) -> tuple[int, int]:
    """Bring one receiver's SRTP context for the stream ``ssrc`` on ``slot``
    of ``fanout`` from ``last``, the last sequence number it was sent, to
    ``target``, the stream's last one (``target_timestamp`` its timestamp),
    with a 20 ms silence frame per :func:`~sfu.transport.srtp.index_steps`,
    stamped one frame apart up to ``target_timestamp``.

    For a stream given back to a receiver after a while without it (it
    renegotiated fewer lines, then more again; a mixed member's role changed
    there and back): both libsrtp ends, the server's and the client's, still
    hold the index of the last packet it got, and would take a sequence
    number more than 2**15 ahead of it for an old one, for up to 2**15
    packets (~11 minutes). Returns (packets sent, payload bytes sent).
    """
    sent = 0
    steps = index_steps(last, target)
    for position, sequence in enumerate(steps):
        # One frame apart, ending at the stream's last timestamp: never stamped
        # before what the receiver last got, whatever the stream's packet
        # duration (4,096 missed packets of even 2.5 ms are ~10 s of its clock,
        # at most 16 frames ~0.3 s). Stamped by sequence distance at 20 ms, a
        # stream of 10 ms packets would have gone back by up to minutes.
        behind = len(steps) - 1 - position
        sent += fanout.forward(
            slot,
            SILENCE_RTP,
            12,
            ssrc,
            sequence,
            (target_timestamp - behind * FRAME_SAMPLES) & 0xFFFFFFFF,
            False,
            csrc,
            SILENCE_LEVEL,
            -1,
            receiver_id,
        )
    return sent, sent * (len(SILENCE_RTP) - 12)


@dataclass(eq=False)
class Publisher:
    """A speaker's inbound stream, as the Router sees it."""

    number: int  # the participant's number: the detector's speaker id
    payload_type: int
    audio_level_id: int
    # The CSRC its packets carry to receivers (Participant.csrc): the room's
    # name for this voice, whatever SSRC its client sends with.
    csrc: int = 0
    receiver_id: int = -1  # its own receiver id when it also receives slots
    ssrc: int = -1
    previous_ssrc: int = -1  # the SSRC before the last change, and when it changed
    ssrc_changed_at: float = 0.0
    # A packet of another SSRC was just seen: a second one in a row is a change.
    pending_ssrc: int = -1
    muted: bool = False
    level: int = -1  # last RFC 6464 byte, -1 when the client sends none
    missing_levels: int = 0  # packets in a row without the negotiated level
    statistics: ReceiveStatistics = field(default_factory=ReceiveStatistics)
    packets: int = 0
    octets: int = 0
    # Packets it may still send now (up to PACKET_BURST, PACKET_RATE more each
    # second), and when that was worked out.
    budget: float = PACKET_BURST
    budget_time: float = float("-inf")
    # Decodes the speaker's Opus for its level when its client sends no RFC 6464 level.
    meter: OpusLevelMeter | None = None


class SlotStream:
    """The state of one slot's outgoing RTP stream (shared by all receivers)."""

    __slots__ = (
        "bad_sequence",
        "csrc",
        "holder_last_sequence",
        "holder_receiver",
        "last_offset",
        "last_packet",
        "last_sequence",
        "last_time",
        "last_timestamp",
        "marker_pending",
        "publisher",
        "sequence_offset",
        "source_ssrc",
        "ssrc",
        "switch_guard",
        "switch_sequence",
        "timestamp_offset",
    )

    def __init__(self, ssrc: int) -> None:
        self.ssrc = ssrc
        self.publisher: Publisher | None = None
        self.source_ssrc = -1
        self.csrc = 0  # the CSRC of the voice it carries, or last carried
        self.sequence_offset = 0
        self.timestamp_offset = 0
        self.switch_sequence = 0
        self.switch_guard = False
        self.marker_pending = False
        self.bad_sequence = -1  # the sequence that would confirm a restart (MAX_DROPOUT)
        self.last_sequence = secrets.randbelow(1 << 15)
        self.last_timestamp = secrets.randbelow(1 << 31)
        self.last_time: float | None = None
        # The packet sent with last_timestamp and where its Opus payload
        # starts (a reference, no copy): how long it lasts on the receivers' clock.
        self.last_packet = b""
        self.last_offset = 0
        # The last sequence number the holder's own receiver got on this slot,
        # and whose receiver that is (kept while the slot is released: the same
        # speaker taking it back has still missed everything since).
        self.holder_last_sequence = self.last_sequence
        self.holder_receiver = -1

    def switch(
        self, publisher: Publisher, ssrc: int, sequence: int, timestamp: int, now: float
    ) -> None:
        """Start carrying ``publisher``'s stream from this packet on."""
        if self.last_time is None:
            next_timestamp = self.last_timestamp
        else:
            # Not before the end of the last packet sent: a receiver's jitter
            # buffer drops a packet stamped inside a frame it already played
            # (40, 60, 120 ms packets: a new speaker's first words cut).
            try:
                lasts = packet_samples(self.last_packet[self.last_offset : self.last_offset + 2])
            except ValueError:
                lasts = FRAME_SAMPLES
            lasts = min(max(lasts, FRAME_SAMPLES), MAX_PACKET_SAMPLES)
            elapsed = int(max(now - self.last_time, 0.0) * OPUS_CLOCK_RATE)
            next_timestamp = self.last_timestamp + max(elapsed, lasts)
        self.publisher = publisher
        self.source_ssrc = ssrc
        self.csrc = publisher.csrc
        if publisher.receiver_id != self.holder_receiver:
            # A new holder received everything up to now (its own voice aside).
            self.holder_last_sequence = self.last_sequence
            self.holder_receiver = publisher.receiver_id
        self.sequence_offset = (self.last_sequence + 1 - sequence) & 0xFFFF
        self.timestamp_offset = (next_timestamp - timestamp) & 0xFFFFFFFF
        self.switch_sequence = sequence
        self.switch_guard = True
        self.marker_pending = True
        self.bad_sequence = -1

    def rtp_timestamp_at(self, now: float) -> int:
        """The slot's RTP clock at ``now`` (a sender report's mapping). A slot
        that never carried audio starts its clock at its first report, so
        later reports, and the first packet after them, keep to it."""
        if self.last_time is None:
            self.last_time = now
        return (self.last_timestamp + int((now - self.last_time) * OPUS_CLOCK_RATE)) & 0xFFFFFFFF
