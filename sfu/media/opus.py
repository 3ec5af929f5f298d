"""Opus through PyAV's libopus: the decoder and encoder the Mixer uses, and PLC.

48 kHz mono int16 PCM on the PCM side, 20 ms frames (RFC 7587 payloads on
the other).
"""

from __future__ import annotations

import fractions
from typing import Any

import av

__all__ = [
    "FRAME_BYTES",
    "FRAME_SAMPLES",
    "SAMPLE_RATE",
    "SILENCE_MONO",
    "SILENCE_STEREO",
    "OpusDecoder",
    "OpusEncoder",
    "padded_packet",
    "plc_packet",
]


def padded_packet(payload: bytes) -> av.Packet:
    """``payload`` as an ``av.Packet`` of its own, with FFmpeg's zeroed input
    padding after it (``av_new_packet``). ``av.Packet(bytes)`` lends the bytes'
    own buffer without it, and decoders read up to 64 bytes past the end: a
    speaker's payload was decoded with whatever memory followed it."""
    packet = av.Packet(len(payload))
    packet.update(payload)
    return packet


SAMPLE_RATE = 48000
FRAME_SAMPLES = 960  # 20 ms at 48 kHz
FRAME_BYTES = 2 * FRAME_SAMPLES  # int16 mono
#: A 20 ms CELT fullband Opus frame of digital silence (config 31, code 0),
#: mono and stereo.
SILENCE_MONO = b"\xf8\xff\xfe"
SILENCE_STEREO = b"\xfc\xff\xfe"

_TIME_BASE = fractions.Fraction(1, SAMPLE_RATE)


def plc_packet(last: bytes) -> bytes:
    """A payload-less Opus packet that makes libopus conceal one packet like ``last``.

    libopus decodes a frame of length <= 1 byte as lost (packet-loss
    concealment) for the duration the TOC byte says (RFC 6716 section 3.1):
    code 0 one frame, code 1 two (code 2 needs a length byte: sent as 1),
    code 3 the count in the second byte, with no frame data.
    """
    toc = last[0]
    code = toc & 0x03
    if code == 0:
        return bytes((toc,))
    if code < 3:
        return bytes(((toc & 0xFC) | 1,))
    return bytes((toc, last[1] & 0x3F if len(last) > 1 else 1))


class OpusDecoder:
    """libopus through PyAV: Opus packets in, 48 kHz mono int16 bytes out."""

    def __init__(self) -> None:
        context: Any = av.CodecContext.create("libopus", "r")
        context.sample_rate = SAMPLE_RATE
        context.layout = "mono"  # libopus downmixes stereo packets
        context.open()
        self._context = context
        self.errors = 0

    def decode(self, payload: bytes) -> bytes:
        """Decoded PCM (empty when libopus rejects the packet; counted in ``errors``)."""
        try:
            frames = self._context.decode(padded_packet(payload))
        except av.FFmpegError:
            self.errors += 1
            return b""
        if len(frames) == 1:
            return _pcm(frames[0])
        return b"".join(_pcm(frame) for frame in frames)


def _pcm(frame: Any) -> bytes:
    if frame.format.name == "s16" and len(frame.layout.channels) == 1:
        return bytes(frame.planes[0])[: 2 * frame.samples]
    # Not what libopus gives for a mono s16 request; convert rather than fail.
    array = frame.to_ndarray()
    if array.dtype.kind == "f":
        array = (array * 32767.0).clip(-32768, 32767)
    return bytes(array.mean(axis=0).astype("<i2").tobytes())


class OpusEncoder:
    """libopus through PyAV: 20 ms frames of 48 kHz mono int16 in, one Opus packet out."""

    def __init__(self, bitrate: int = 48000) -> None:
        context: Any = av.CodecContext.create("libopus", "w")
        context.sample_rate = SAMPLE_RATE
        context.layout = "mono"
        context.format = "s16"
        context.bit_rate = bitrate
        context.options = {"application": "audio", "frame_duration": "20"}
        context.open()
        self._context = context
        self._pts = 0
        #: The OpusHead libopus wrote (pre-skip included), for Ogg files (RFC 7845).
        self.head = bytes(context.extradata or b"")

    def encode(self, pcm: bytes) -> list[bytes]:
        frame = av.AudioFrame(format="s16", layout="mono", samples=FRAME_SAMPLES)
        frame.planes[0].update(pcm)
        frame.sample_rate = SAMPLE_RATE
        frame.time_base = _TIME_BASE
        frame.pts = self._pts
        self._pts += FRAME_SAMPLES
        return [bytes(packet) for packet in self._context.encode(frame)]
