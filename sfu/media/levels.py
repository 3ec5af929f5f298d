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


class OpusLevelMeter:
    """Decodes one speaker's Opus stream and gives each packet's level.

    Keep one meter per speaker (the decoder carries state from packet to
    packet) and feed it every payload in arrival order. Packets that do not
    decode give :data:`sfu.audio_level.NO_LEVEL` (-1), which the detector ignores.
    """

    def __init__(self) -> None:
        self._decoder = av.CodecContext.create("opus", "r")
        self.errors = 0

    def level(self, payload: bytes) -> int:
        """The level of one Opus payload (RFC 7587), or -1 if it does not decode."""
        if not payload:  # an empty packet would flush (end) the decoder
            self.errors += 1
            return -1
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
            return audio_level(frames[0].to_ndarray())
        return audio_level(np.concatenate([frame.to_ndarray() for frame in frames], axis=-1))
