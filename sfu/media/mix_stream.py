"""The Mixer's encoded outputs (the room mix, mix-minus streams) and a consumer's handle on one."""

from __future__ import annotations

import collections
import math
import secrets
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..relay import FanOut
from ..transport.rtp import sdes_cnames
from .ogg import parse_opus_head, with_pre_skip
from .opus import FRAME_SAMPLES, SAMPLE_RATE, OpusEncoder

if TYPE_CHECKING:
    from .mixer import Mixer

__all__ = [
    "PREROLL_PACKETS",
    "MixOutput",
    "MixStream",
    "MixStreams",
    "OutputCallback",
    "mixed_level",
]

#: ``callback(packet, samples, now)``: an encoded Opus packet of ``samples``
#: 48 kHz samples, for the frame due at loop time ``now``.
OutputCallback = Callable[[bytes, int, float], None]

#: Packets of the stream a consumer that starts mid-stream is given first, to
#: decode and discard: 80 ms, what RFC 7845 section 4.2 asks of a stream cut
#: mid-way so that the decoder has converged when its output begins.
PREROLL_PACKETS = 4


class MixStream:
    """One encoded output: the room mix (``exclude`` -1) or a mix-minus."""

    def __init__(self, exclude: int, ssrc: int, bitrate: int, cname: str) -> None:
        self.exclude = exclude
        self.ssrc = ssrc
        self.sdes = sdes_cnames([ssrc], cname)  # its sender reports' SDES CNAME
        self.encoder = OpusEncoder(bitrate)
        #: Its last packets, for :meth:`MixOutput.preroll`.
        self.recent: collections.deque[bytes] = collections.deque(maxlen=PREROLL_PACKETS)
        self.outputs: list[MixOutput] = []
        self.fanout: FanOut | None = None
        self.receivers: set[int] = set()
        self.sequence = secrets.randbelow(1 << 16)
        self.timestamp = secrets.randbits(32)
        self.marker = True
        # The RTP timestamp of the last frame it sent and the loop time that
        # frame was due (its sender reports' clock); None before its first frame.
        self.sent_timestamp = 0
        self.sent_due: float | None = None

    @property
    def empty(self) -> bool:
        return not self.outputs and not self.receivers


class MixOutput:
    """A consumer's handle on a mixed stream (from :meth:`~sfu.media.mixer.Mixer.add_output`)."""

    def __init__(
        self,
        mixer: Mixer,
        stream: MixStream,
        callback: OutputCallback,
        on_close: Callable[[], None] | None,
        on_gap: Callable[[int], None] | None = None,
    ) -> None:
        self.mixer = mixer
        self._stream = stream
        self.callback = callback
        self.on_close = on_close
        self.on_gap = on_gap
        self.closed = False
        #: Loop time it was added at: it gets the frames due after it.
        self.since = -math.inf

    @property
    def exclude(self) -> int:
        return self._stream.exclude

    @property
    def opus_head(self) -> bytes:
        """The OpusHead of this stream's encoder (channel count, pre-skip)."""
        return self._stream.encoder.head

    def preroll(self) -> tuple[bytes, list[bytes]]:
        """What an Ogg/Opus stream that starts now begins with: its OpusHead and
        the packets to put before the next one this output gets.

        Those are the stream's last :data:`PREROLL_PACKETS` packets (fewer
        only when it has made no more: then they are its start), and the
        pre-skip covers them besides the encoder's own delay, so that a
        decoder has converged when its output begins (RFC 7845 section 4.2)
        and its first sample played is the audio of the next packet, however
        long the stream has been running.
        """
        packets = list(self._stream.recent)
        head = self._stream.encoder.head
        pre_skip = parse_opus_head(head)[1] + FRAME_SAMPLES * len(packets)
        return with_pre_skip(head, pre_skip), packets

    def close(self) -> None:
        """Stop receiving packets; idempotent."""
        self.mixer.remove_output(self)


class MixStreams:
    """A Mixer's streams by the speaker each leaves out (-1: the room mix), and their SSRCs.

    A stream is made for its first consumer and dropped after its last. Its
    SSRC is kept (until :meth:`forget`), and where it stopped (next sequence,
    next timestamp, monotonic time): a stream made again with that SSRC goes
    on from there, since its receivers' SRTP would refuse older sequence
    numbers as replays.
    """

    def __init__(self) -> None:
        #: SSRC of the room mix.
        self.room_ssrc = secrets.randbits(32)
        #: The streams by excluded speaker; the Mixer encodes each every 20 ms.
        self.by_exclude: dict[int, MixStream] = {}
        self.minus_ssrcs: dict[int, int] = {}
        self.positions: dict[int, tuple[int, int, float]] = {}

    def ssrc_for(self, exclude: int) -> int:
        if exclude < 0:
            return self.room_ssrc
        ssrc = self.minus_ssrcs.get(exclude)
        if ssrc is None:
            ssrc = self.minus_ssrcs[exclude] = secrets.randbits(32)
        return ssrc

    def forget(self, number: int) -> None:
        if number in self.by_exclude:
            return
        ssrc = self.minus_ssrcs.pop(number, None)
        if ssrc is not None:
            self.positions.pop(ssrc, None)

    def get(self, exclude: int, bitrate: int, cname: str) -> MixStream:
        """The stream without ``exclude``; made if need be, going on from
        where a stream with its SSRC stopped."""
        stream = self.by_exclude.get(exclude)
        if stream is None:
            stream = self.by_exclude[exclude] = MixStream(
                exclude, self.ssrc_for(exclude), bitrate, cname
            )
            position = self.positions.pop(stream.ssrc, None)
            if position is not None:
                sequence, timestamp, stopped = position
                # (The timestamp kept is the next packet's already: made again
                # at once, the stream goes on with no gap.)
                elapsed = max(0, int((time.monotonic() - stopped) * SAMPLE_RATE))
                stream.sequence = sequence
                stream.timestamp = (timestamp + elapsed) & 0xFFFFFFFF
        return stream

    def stopped(self, stream: MixStream) -> None:
        """``stream`` was dropped: a stream made again with its SSRC goes on from here."""
        self.positions[stream.ssrc] = (stream.sequence, stream.timestamp, time.monotonic())

    def drop_if_empty(self, stream: MixStream) -> None:
        if stream.empty and self.by_exclude.get(stream.exclude) is stream:
            del self.by_exclude[stream.exclude]
            self.stopped(stream)
            if stream.fanout is not None:
                stream.fanout.close()
        # No stream left: the Mixer's task sees it at its next frame and ends.


def mixed_level(energy: int, voiced: bool) -> int:
    """The RFC 6464 byte (V flag, level in -dBov) of a 20 ms mixed frame's energy."""
    if energy <= 0:
        level = 127
    else:
        mean = energy / FRAME_SAMPLES / (32767.0 * 32767.0)
        level = min(127, max(0, round(-10.0 * math.log10(mean))))
    return (0x80 if voiced else 0) | level
