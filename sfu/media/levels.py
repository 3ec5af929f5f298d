"""Audio levels for speakers whose packets carry none: decode the Opus and measure.

Browsers put the RFC 6464 ``ssrc-audio-level`` extension on every packet;
some clients (GStreamer webrtcbin, SIP gateways) do not. For those speakers
only, the Router decodes the Opus payload with PyAV and computes the level
the way a browser would, with the RFC 6465 Appendix A formula, so the
:class:`~sfu.detector.ActiveSpeakerDetector` ranks every speaker alike.

Decoding costs a few tens of microseconds per 20 ms packet, which is why it
is never done for speakers that send levels.
"""

from __future__ import annotations

import logging
import math

import av
import numpy as np
import numpy.typing as npt

from .._values import take_token
from .ogg import MAX_PACKET_SAMPLES, packet_samples
from .opus import padded_packet

__all__ = ["SILENCE", "OpusLevelMeter", "audio_level"]

logger = logging.getLogger(__name__)

#: The level of digital silence (and the quietest level there is), in -dBov.
SILENCE = 127


def audio_level(samples: npt.NDArray[np.floating] | npt.NDArray[np.integer]) -> int:
    """The RFC 6464 level of one frame of samples, in -dBov (0 loud .. 127 silent).

    RFC 6465 Appendix A: the root mean square of the samples, normalised to
    full scale (``1.0`` for float samples, ``32767`` for 16-bit ones), in
    dB, clamped to -127..0 and negated; all-zero samples (digital
    silence) give 127. A full-scale sine has an RMS of -3 dBov, so its
    level is 3. Every channel's samples count alike.
    """
    if samples.size == 0:
        return SILENCE
    values = samples.astype(np.float64, copy=False)
    if np.issubdtype(samples.dtype, np.integer):
        values = values / 32767.0
    rms = math.sqrt(float(np.mean(values * values)))
    if rms <= 0.0:
        return SILENCE
    dbov = 20.0 * math.log10(rms)
    return int(round(-min(max(dbov, -127.0), 0.0)))


#: Audio a meter decodes per second of the clock, in 48 kHz samples: a little
#: over real time (a speaker's packets bunch up), and the burst allowed (0.5
#: s of audio). Past it the last level stands: a speaker's packets that each
#: claim 120 ms of audio cost up to ~1.6 ms each to decode, and at the
#: packet rate limit one speaker would take half of the event loop.
DECODE_RATE = 1.25 * 48_000
DECODE_BURST = 24_000.0


class OpusLevelMeter:
    """Decodes one speaker's Opus stream and gives each packet's level.

    Keep one meter per speaker (the decoder carries state from packet to
    packet) and feed it every payload in arrival order. Packets that do not
    decode give :data:`sfu.audio_level.NO_LEVEL` (-1), which the detector ignores.
    """

    def __init__(self) -> None:
        self._decoder = av.CodecContext.create("opus", "r")
        self.errors = 0
        self._last = -1  # the last level decoded
        self._tokens = DECODE_BURST  # audio it may decode now (DECODE_RATE)
        self._tokens_at = 0.0  # (a bucket starts full: refilled from any time, it stays so)

    def level(self, payload: bytes, now: float | None = None) -> int:
        """The level of one Opus payload (RFC 7587), or -1 if it does not
        decode. With ``now`` (seconds), decoding keeps to DECODE_RATE: past
        it the last level is given again."""
        if not payload:  # an empty packet would flush (end) the decoder
            self.errors += 1
            return -1
        try:
            samples = packet_samples(payload)
        except ValueError:
            samples = 0
        if not 0 < samples <= MAX_PACKET_SAMPLES:
            self.errors += 1
            return -1
        if now is not None:
            taken, self._tokens = take_token(
                self._tokens, self._tokens_at, now, DECODE_RATE, DECODE_BURST, samples
            )
            self._tokens_at = now
            if not taken:
                return self._last
        try:
            frames = self._decoder.decode(padded_packet(payload))
        except av.FFmpegError as exc:
            self.errors += 1
            if self.errors == 1:  # once per speaker, not per packet
                logger.debug("x Opus payload does not decode: %s", exc)
            return -1
        if not frames:
            return -1
        if len(frames) == 1:
            self._last = audio_level(frames[0].to_ndarray())
        else:
            pcm = np.concatenate([frame.to_ndarray() for frame in frames], axis=-1)
            self._last = audio_level(pcm)
        return self._last
