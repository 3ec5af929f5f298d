"""Helpers for the mixer tests: Opus tones, decoding, and what a spectrum says."""

from __future__ import annotations

import io
import math
from collections.abc import Sequence

import av
import numpy as np

from sfu.media.opus import FRAME_SAMPLES, SAMPLE_RATE, OpusDecoder, OpusEncoder
from sfu.media.router import Publisher, Router

#: A tone "is in" a signal when the band around it holds at least this share of the energy.
#: Two equal tones mixed give about 0.5 each; a tone that is absent gives < 0.01.
PRESENT = 0.2
#: ... and "is absent" below this share.
ABSENT = 0.02


def tone(frequency: float, frames: int, amplitude: float = 0.3, start: int = 0) -> list[bytes]:
    """``frames`` 20 ms frames of a sine as int16 mono PCM bytes."""
    out = []
    for index in range(start, start + frames):
        t = (np.arange(FRAME_SAMPLES) + index * FRAME_SAMPLES) / SAMPLE_RATE
        samples = amplitude * 32767 * np.sin(2 * math.pi * frequency * t)
        out.append(samples.astype("<i2").tobytes())
    return out


def opus_tone(frequency: float, frames: int, amplitude: float = 0.3) -> list[bytes]:
    """A sine encoded as ``frames`` 20 ms Opus packets."""
    encoder = OpusEncoder(48000)
    packets: list[bytes] = []
    for pcm in tone(frequency, frames, amplitude):
        packets += encoder.encode(pcm)
    return packets


def decode_payloads(payloads: list[bytes]) -> np.ndarray:
    decoder = OpusDecoder()
    pcm = b"".join(decoder.decode(payload) for payload in payloads)
    return np.frombuffer(pcm, dtype="<i2")


def decode_ogg(data: bytes) -> np.ndarray:
    """Decode an Ogg/Opus file (bytes) with PyAV/FFmpeg, mono int16."""
    with av.open(io.BytesIO(data), format="ogg") as container:
        frames = [frame.to_ndarray() for frame in container.decode(audio=0)]
    samples = np.concatenate([frame.reshape(frame.shape[0], -1) for frame in frames], axis=1)
    mono = samples.mean(axis=0)
    if mono.dtype.kind == "f" and np.abs(mono).max() <= 1.0:
        mono = mono * 32767
    return np.asarray(mono, dtype=np.float64)


def band_share(pcm: np.ndarray, frequency: float, width: float = 25.0) -> float:
    """Share of the signal's energy within ``width`` Hz of ``frequency`` (Hann window)."""
    signal = np.asarray(pcm, dtype=np.float64)
    if len(signal) < SAMPLE_RATE // 10:
        raise AssertionError(f"only {len(signal)} samples to analyse")
    signal = signal - signal.mean()
    spectrum = np.abs(np.fft.rfft(signal * np.hanning(len(signal)))) ** 2
    freqs = np.fft.rfftfreq(len(signal), 1 / SAMPLE_RATE)
    total = spectrum.sum()
    if total <= 0:
        return 0.0
    return float(spectrum[np.abs(freqs - frequency) <= width].sum() / total)


def assert_tones(pcm: np.ndarray, present: Sequence[float], absent: Sequence[float] = ()) -> None:
    shares = {f: band_share(pcm, f) for f in [*present, *absent]}
    for frequency in present:
        assert shares[frequency] >= PRESENT, f"{frequency} Hz missing from the mix: {shares}"
    for frequency in absent:
        assert shares[frequency] < ABSENT, f"{frequency} Hz should not be in the mix: {shares}"


def speak_once(router: Router, number: int, payload: bytes, now: float) -> float:
    """A speaker numbered ``number`` joins ``router``, sends three packets of
    ``payload`` 20 ms apart through its taps (a recorder's, say) and
    leaves; returns the time after them."""
    speaker = Publisher(number=number, payload_type=111, audio_level_id=1, ssrc=number)
    router.add_publisher(speaker)
    for sequence in range(3):
        packet = bytes([0x80, 111]) + bytes(10) + payload
        for tap in list(router.taps):
            tap(speaker, packet, 12, sequence, sequence * 960, 0, now)
        now += 0.02
    router.remove_publisher(speaker)  # it left
    return now
