# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Compiled mixing arithmetic; same API and results as :mod:`sfu._mix_py`.

See the Python reference for the documentation of each name.
"""

__all__ = ["LIMIT_CEILING", "LIMIT_KNEE", "mix_add", "mix_limit", "soft_clip"]

from ._mix_py import LIMIT_CEILING, LIMIT_KNEE

cdef long long _LIMIT_KNEE = LIMIT_KNEE
cdef long long _LIMIT_RANGE = LIMIT_CEILING - LIMIT_KNEE
# From this excess on, the curve's floor is ceiling - 1 for good (excess * r
# // (excess + r) == r - 1 exactly at r * (r - 1)): larger ones are clamped to
# it, so that excess * r never overflows and the result stays exact.
cdef long long _LIMIT_SATURATED = (LIMIT_CEILING - LIMIT_KNEE) * (LIMIT_CEILING - LIMIT_KNEE - 1)


cdef inline long long _soft_clip(long long value) noexcept nogil:
    # (Callers pass int32 sums, or values soft_clip() clamped: -value is safe.)
    cdef long long magnitude = -value if value < 0 else value
    cdef long long excess
    if magnitude > _LIMIT_KNEE:
        excess = magnitude - _LIMIT_KNEE
        if excess > _LIMIT_SATURATED:
            excess = _LIMIT_SATURATED
        # Positive operands: C division truncates as Python's // floors.
        magnitude = _LIMIT_KNEE + excess * _LIMIT_RANGE / (excess + _LIMIT_RANGE)
    return -magnitude if value < 0 else magnitude


def soft_clip(value):
    # Any Python int, as the twin: past the saturation point every value
    # gives the same result, so a huge one is clamped before the C call.
    cdef object bound = _LIMIT_KNEE + _LIMIT_SATURATED
    if value > bound:
        value = bound
    elif value < -bound:
        value = -bound
    return _soft_clip(value)


cdef object _bytes_of(object buffer, bint writable, str name):
    """As sfu._mix_py._bytes_of: any buffer, viewed as its bytes."""
    if type(buffer) is bytearray or (type(buffer) is bytes and not writable):
        return buffer  # (the usual case: no view to make)
    cdef object view = memoryview(buffer)
    if writable and view.readonly:
        raise ValueError(f"{name}: the buffer written to must be writable, got a read-only one")
    return view.cast("B") if view.format != "B" or view.ndim != 1 else view


def mix_add(acc, frame):
    cdef unsigned char[::1] acc_view = _bytes_of(acc, True, "mix_add")
    cdef const unsigned char[::1] frame_view = _bytes_of(frame, False, "mix_add")
    cdef Py_ssize_t samples = frame_view.shape[0] // 2
    cdef Py_ssize_t i
    if frame_view.shape[0] % 2 or acc_view.shape[0] < 4 * samples:
        raise ValueError(
            f"mix_add: frame of {frame_view.shape[0]} bytes needs an int32 accumulator of "
            f"{4 * samples} bytes, got {acc_view.shape[0]}"
        )
    if samples == 0:
        return
    cdef int* total = <int*>&acc_view[0]
    cdef const short* pcm = <const short*>&frame_view[0]
    with nogil:
        for i in range(samples):
            total[i] += pcm[i]


def mix_limit(acc, out, minus=None):
    cdef const unsigned char[::1] acc_view = _bytes_of(acc, False, "mix_limit")
    cdef unsigned char[::1] out_view = _bytes_of(out, True, "mix_limit")
    cdef Py_ssize_t samples = out_view.shape[0] // 2
    cdef Py_ssize_t i
    cdef const unsigned char[::1] own_view
    cdef const short* own = NULL
    cdef long long value, energy = 0
    if minus is not None:
        own_view = _bytes_of(minus, False, "mix_limit")
    if (
        out_view.shape[0] % 2
        or acc_view.shape[0] < 4 * samples
        or (minus is not None and own_view.shape[0] < 2 * samples)
    ):
        raise ValueError(
            f"mix_limit: {samples} samples need an accumulator of {4 * samples} bytes "
            f"and a minus frame of {2 * samples} bytes"
        )
    if samples == 0:
        return 0
    if minus is not None:
        own = <const short*>&own_view[0]
    cdef const int* total = <const int*>&acc_view[0]
    cdef short* pcm = <short*>&out_view[0]
    with nogil:
        for i in range(samples):
            value = total[i]
            if own != NULL:
                value -= own[i]
            value = _soft_clip(value)
            pcm[i] = <short>value
            energy += value * value
    return energy
