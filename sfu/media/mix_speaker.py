"""The speakers a Mixer hears: the Router tap that feeds them, and each one's input.

:class:`MixSpeakers` is the tap (every forwarded speaker packet, into that
speaker's jitter buffer) and the speakers it tracks; a :class:`MixSpeaker`
is one speaker's jitter buffer, decoder and samples not yet mixed.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from .jitter import EMPTY, PACKET, JitterBuffer
from .opus import FRAME_BYTES, OpusDecoder, plc_packet

if TYPE_CHECKING:
    from .streams import Publisher

__all__ = ["JITTER_CAPACITY", "SPEAKER_TIMEOUT", "MixSpeaker", "MixSpeakers"]

#: Packets a speaker's jitter buffer holds (its depth is at most this).
JITTER_CAPACITY = 16
#: A speaker with no packet for this long is forgotten (its decoder freed).
SPEAKER_TIMEOUT = 5.0

_SILENCE = bytes(FRAME_BYTES)


class MixSpeaker:
    """One speaker's input: jitter buffer, decoder and the decoded samples not yet mixed."""

    __slots__ = (
        "decoder",
        "fifo",
        "jitter",
        "last_packet",
        "last_payload",
        "csrc",
        "level",
        "number",
        "ssrc",
    )

    def __init__(self, number: int, ssrc: int, csrc: int, depth: int) -> None:
        self.number = number
        self.ssrc = ssrc  # its client's: a new one is a new stream (restart)
        self.csrc = csrc  # the room's name for its voice (Publisher.csrc)
        self.jitter = JitterBuffer(depth=depth, capacity=JITTER_CAPACITY)
        self.decoder: OpusDecoder | None = None
        self.fifo = bytearray()
        self.last_packet = 0.0
        self.last_payload = b""
        self.level = 127

    def restart(self, ssrc: int) -> None:
        self.ssrc = ssrc
        self.jitter.reset()
        self.decoder = None  # a new stream: a fresh decoder state
        self.fifo.clear()
        self.last_payload = b""

    def pull(self, timing: list[float]) -> bytes | None:
        """One 20 ms frame, or None when the speaker has nothing to play."""
        fifo = self.fifo
        while len(fifo) < FRAME_BYTES:
            outcome, payload, _ = self.jitter.pull()
            if outcome == EMPTY:
                break
            if self.decoder is None:
                self.decoder = OpusDecoder()
            started = time.thread_time()
            pcm = self.decoder.decode(payload) if outcome == PACKET and payload else b""
            if pcm:
                self.last_payload = payload
            elif self.last_payload:
                # Lost, or a payload libopus refused: its turn is concealed
                # (not filled by pulling the next packet before its time).
                pcm = self.decoder.decode(plc_packet(self.last_payload))
            fifo += pcm or _SILENCE  # (nothing decoded yet to conceal from)
            timing[0] += time.thread_time() - started
        if not fifo:
            return None
        if len(fifo) < FRAME_BYTES:
            fifo += bytes(FRAME_BYTES - len(fifo))  # the tail of a stream that stopped
        pcm = bytes(fifo[:FRAME_BYTES])
        del fifo[:FRAME_BYTES]
        return pcm


class MixSpeakers:
    """The speakers a Mixer hears, by speaker number, fed by its Router tap."""

    def __init__(self, depth: int) -> None:
        #: Jitter buffer depth (packets) of the speakers heard from now on.
        self.depth = depth
        #: The speakers heard; the Mixer pulls a frame from each every 20 ms.
        self.by_number: dict[int, MixSpeaker] = {}
        # Jitter counters of the speakers no longer tracked.
        self.retired_concealed = 0
        self.retired_late = 0
        self.retired_trimmed = 0

    def tap(
        self,
        publisher: Publisher,
        packet: bytes,
        offset: int,
        sequence: int,
        timestamp: int,
        slot: int,
        now: float,
    ) -> None:
        """The Router tap: every forwarded packet (unmuted, holding a slot)."""
        speaker = self.by_number.get(publisher.number)
        if speaker is None:
            speaker = self.by_number[publisher.number] = MixSpeaker(
                publisher.number, publisher.ssrc, publisher.csrc, self.depth
            )
        elif speaker.ssrc != publisher.ssrc:
            speaker.restart(publisher.ssrc)
        speaker.last_packet = now
        speaker.level = publisher.level & 0x7F if publisher.level >= 0 else 127
        speaker.jitter.push(sequence, timestamp, packet[offset:])

    def drop(self, number: int) -> None:
        """Stop tracking a speaker; its jitter counters stay counted. Told by
        the Router when a speaker is muted, demoted or gone: silent from the
        next frame, not after what its jitter buffer holds and the
        concealment after it."""
        speaker = self.by_number.pop(number, None)
        if speaker is not None:
            self.retired_concealed += speaker.jitter.concealed
            self.retired_late += speaker.jitter.late
            self.retired_trimmed += speaker.jitter.trimmed

    def concealed(self) -> int:
        """Frames concealed (a packet lost or refused, or not yet come: an
        underrun, whose packet may still be played), of every speaker heard."""
        return self.retired_concealed + sum(s.jitter.concealed for s in self.by_number.values())

    def late(self) -> int:
        """Packets that came after their turn, of every speaker heard."""
        return self.retired_late + sum(s.jitter.late for s in self.by_number.values())

    def trimmed(self) -> int:
        """Packets dropped to bring a speaker's delay back to the jitter depth."""
        return self.retired_trimmed + sum(s.jitter.trimmed for s in self.by_number.values())
