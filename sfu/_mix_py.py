"""Pure-Python reference for :mod:`sfu._mix`: the Mixer's arithmetic.

The compiled module has the same names and gives the same results; the
tests run both against the same cases. :class:`~sfu.media.mixer.Mixer`
calls them on every 20 ms frame it mixes.

Frames are native-endian int16 mono PCM in bytes objects (as PyAV decodes
them; any C-contiguous buffer is taken, its size counted in bytes); the
accumulator is a bytearray of native int32, so a sum of up to
65536 full-scale frames cannot overflow. mix_limit() maps the sum back to
int16 through soft_clip(): never a wrap, whatever the number of speakers.
"""

from __future__ import annotations

from typing import Any

__all__ = ["LIMIT_CEILING", "LIMIT_KNEE", "mix_add", "mix_limit", "soft_clip"]

#: Below this magnitude the limiter passes samples through unchanged (0.75 full scale).
LIMIT_KNEE = 24576
#: What the limiter's curve approaches and never reaches (int16 maximum).
LIMIT_CEILING = 32767
_LIMIT_RANGE = LIMIT_CEILING - LIMIT_KNEE


def soft_clip(value: int) -> int:
    """Map a sum of int16 samples into int16 without wrapping: the limiter's curve.

    The identity up to :data:`LIMIT_KNEE`; above it, with ``d = |x| - knee``
    and ``r = ceiling - knee``, ``|y| = knee + d * r // (d + r)``: slope 1 at
    the knee, approaching :data:`LIMIT_CEILING` without reaching it, so the
    result is in -32766..32766 for any input. Integer arithmetic on
    magnitudes (floor = truncation there), so the compiled kernel gives
    bit-identical results.
    """
    magnitude = -value if value < 0 else value
    if magnitude > LIMIT_KNEE:
        excess = magnitude - LIMIT_KNEE
        magnitude = LIMIT_KNEE + excess * _LIMIT_RANGE // (excess + _LIMIT_RANGE)
    return -magnitude if value < 0 else magnitude


def _bytes_of(buffer: Any, writable: bool, name: str) -> memoryview:
    """``buffer`` (bytes, bytearray, an int16 or int32 array, a memoryview)
    viewed as its bytes: sizes are in bytes, whatever its item type."""
    view = memoryview(buffer)
    if writable and view.readonly:
        raise ValueError(f"{name}: the buffer written to must be writable, got a read-only one")
    return view.cast("B") if view.format != "B" or view.ndim != 1 else view


def mix_add(acc: Any, frame: Any) -> None:
    """``acc[i] += frame[i]``: add an int16 frame into the int32 accumulator.

    Any C-contiguous buffers (bytes, bytearray, numpy or ``array`` arrays);
    their sizes count in bytes. ``acc`` must hold at least as many samples
    as ``frame``; ValueError otherwise, or when ``acc`` is read-only.
    """
    total_bytes = _bytes_of(acc, True, "mix_add")
    pcm_bytes = _bytes_of(frame, False, "mix_add")
    samples = len(pcm_bytes) // 2
    if len(pcm_bytes) % 2 or len(total_bytes) < 4 * samples:
        raise ValueError(
            f"mix_add: frame of {len(pcm_bytes)} bytes needs an int32 accumulator of "
            f"{4 * samples} bytes, got {len(total_bytes)}"
        )
    # Only the samples used are viewed: longer buffers of any size are
    # accepted, as by the compiled kernel.
    total = total_bytes[: 4 * samples].cast("i")
    pcm = pcm_bytes.cast("h")
    for i in range(samples):
        total[i] += pcm[i]


def mix_limit(acc: Any, out: Any, minus: Any = None) -> int:
    """``out[i] = soft_clip(acc[i] - minus[i])``; returns the sum of ``out[i] ** 2``.

    ``out`` (int16, writable) sets the number of samples; ``minus`` (int16,
    optional) is one speaker's own frame, for mix-minus. The returned energy
    gives the mix's RFC 6464 level without another pass. Buffers as for
    :func:`mix_add`.
    """
    acc_bytes = _bytes_of(acc, False, "mix_limit")
    out_bytes = _bytes_of(out, True, "mix_limit")
    minus_bytes = None if minus is None else _bytes_of(minus, False, "mix_limit")
    samples = len(out_bytes) // 2
    if (
        len(out_bytes) % 2
        or len(acc_bytes) < 4 * samples
        or (minus_bytes is not None and len(minus_bytes) < 2 * samples)
    ):
        raise ValueError(
            f"mix_limit: {samples} samples need an accumulator of {4 * samples} bytes "
            f"and a minus frame of {2 * samples} bytes"
        )
    total = acc_bytes[: 4 * samples].cast("i")
    pcm = out_bytes.cast("h")
    energy = 0
    if minus_bytes is None:
        for i in range(samples):
            value = soft_clip(total[i])
            pcm[i] = value
            energy += value * value
    else:
        own = minus_bytes[: 2 * samples].cast("h")
        for i in range(samples):
            value = soft_clip(total[i] - own[i])
            pcm[i] = value
            energy += value * value
    return energy
