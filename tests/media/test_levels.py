"""Decoded levels: Opus encoded here from tones of known level, decoded and measured."""

from __future__ import annotations

import fractions

import av
import numpy as np
import pytest

from sfu.media.levels import SILENCE, OpusLevelMeter, audio_level

pytestmark = pytest.mark.compiled_and_python_alike  # see tests/alike.py

RATE = 48000
FRAME = 960  # 20 ms


def tone(dbov: float | None, seconds: float = 1.0, frequency: float = 440.0) -> np.ndarray:
    """16-bit mono samples of a sine whose RMS is ``dbov`` (None: digital silence)."""
    count = int(RATE * seconds)
    if dbov is None:
        return np.zeros(count, dtype=np.int16)
    amplitude = np.sqrt(2.0) * 10 ** (dbov / 20.0) * 32767
    time = np.arange(count) / RATE
    samples: np.ndarray = np.round(amplitude * np.sin(2 * np.pi * frequency * time)).astype(
        np.int16
    )
    return samples


def encode(samples: np.ndarray) -> list[bytes]:
    encoder = av.CodecContext.create("libopus", "w")
    encoder.sample_rate = RATE
    encoder.layout = "mono"
    encoder.format = "s16"
    encoder.bit_rate = 64000
    encoder.time_base = fractions.Fraction(1, RATE)
    payloads = []
    for start in range(0, len(samples) - FRAME + 1, FRAME):
        frame = av.AudioFrame.from_ndarray(
            samples[start : start + FRAME].reshape(1, -1), format="s16", layout="mono"
        )
        frame.sample_rate = RATE
        frame.pts = start
        payloads += [bytes(packet) for packet in encoder.encode(frame)]
    payloads += [bytes(packet) for packet in encoder.encode(None)]
    return payloads


@pytest.mark.parametrize(("dbov", "expected"), [(-10, 10), (-30, 30), (-60, 60), (None, SILENCE)])
def test_opus_level_matches_tone(dbov: float | None, expected: int) -> None:
    meter = OpusLevelMeter()
    levels = [meter.level(payload) for payload in encode(tone(dbov))]
    assert len(levels) >= 45
    settled = levels[5:-3]  # the codec's start-up and the flushed tail
    assert all(level >= 0 for level in settled)
    assert all(abs(level - expected) <= 2 for level in settled), settled
    assert meter.errors == 0


def test_formula_on_raw_frames() -> None:
    # RFC 6465 Appendix A on the samples themselves: full-scale sine is -3 dBov.
    assert audio_level(tone(-3.0103, 0.02)) == 3
    assert audio_level(tone(-40.0, 0.02)) == 40
    assert audio_level(tone(-40.0, 0.02).astype(np.float32) / 32767) == 40
    assert audio_level(np.zeros(960, dtype=np.int16)) == SILENCE
    assert audio_level(np.array([], dtype=np.int16)) == SILENCE
    assert audio_level(np.full(960, 1, dtype=np.int16)) == 90  # 1 LSB: -90.3 dBov
    assert audio_level(np.full(960, 32767, dtype=np.int16)) == 0


def test_undecodable_payload_gives_no_level() -> None:
    meter = OpusLevelMeter()
    assert meter.level(b"") == -1
    assert meter.level(b"\xff\xff\xff") == -1
    assert meter.errors >= 1
    # The meter still works afterwards.
    levels = [meter.level(payload) for payload in encode(tone(-20))]
    assert abs(levels[20] - 20) <= 2


def test_a_payload_is_decoded_without_the_memory_after_it() -> None:
    """FFmpeg's decoders read up to 64 bytes past a packet's end: the meter
    (and the mixer's decoder) hand it a padded copy, so a speaker's level does
    not depend on whatever follows its payload in memory (it did: 51, 6, 15
    or 30 for the same 3 bytes, from a memory-safety review's corpus)."""
    from pathlib import Path

    from sfu.media.levels import OpusLevelMeter
    from sfu.media.opus import OpusDecoder

    data = Path(__file__).parent.parent / "data" / "opus_overread_payloads.hex"
    *history, probe = [bytes.fromhex(line) for line in data.read_text().split()]
    levels, pcm = set(), set()
    for tail in (bytes(64), b"\xff" * 64, b"\x55" * 64, b"\xa3" * 64):
        meter, decoder = OpusLevelMeter(), OpusDecoder()
        for payload in history:
            meter.level(payload)
            decoder.decode(payload)
        view = memoryview(probe + tail)[: len(probe)]  # the same bytes, other memory after
        levels.add(meter.level(view))  # type: ignore[arg-type]
        pcm.add(bytes(decoder.decode(view)))  # type: ignore[arg-type]
    assert len(levels) == 1 and len(pcm) == 1


class CountingDecoder:
    """A meter's decoder that counts its decodes."""

    def __init__(self, decoder: object) -> None:
        self.decoder = decoder
        self.decodes = 0

    def decode(self, packet: object) -> object:
        self.decodes += 1
        return self.decoder.decode(packet)  # type: ignore[attr-defined]


def test_a_meter_decodes_at_most_a_little_over_real_time() -> None:
    """A speaker's packets are decoded for their level only as fast as audio
    comes (DECODE_RATE, after a burst of DECODE_BURST): packets that each
    claim much audio, or many at once, must not take the event loop. Past
    the budget the last level stands; a packet claiming more than 120 ms is
    not Opus."""
    from sfu.media import levels

    meter = OpusLevelMeter()
    counting = CountingDecoder(meter._decoder)
    meter._decoder = counting  # type: ignore[assignment]
    payloads = encode(tone(-20, seconds=3.0))
    first = [meter.level(payload, 10.0) for payload in payloads[:100]]  # all at one instant
    burst = int(levels.DECODE_BURST // FRAME)
    assert counting.decodes == burst
    assert first[burst:] == [first[burst - 1]] * (100 - burst), "the last level stands"
    assert first[burst - 1] == 20
    # A second later, at the pace audio comes (20 ms a packet): every one decoded.
    decodes = counting.decodes
    later = [meter.level(p, 11.0 + 0.02 * i) for i, p in enumerate(payloads[100:150])]
    assert counting.decodes == decodes + 50 and later[-1] == 20
    # Code 3, 63 frames of 20 ms: 1.26 s of "audio" in one packet.
    decodes = counting.decodes
    assert meter.level(bytes([0x78 | 3, 63]) + bytes(100), 20.0) == -1
    assert counting.decodes == decodes
