"""Mixing kernels: the compiled sfu._mix and its Python twin give the same results, never wrap."""

from __future__ import annotations

import struct
from types import ModuleType

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import sfu.mix
from sfu import _mix_py

from ..twins import NO_EXTENSIONS, compiled, implementations, resolve


@pytest.fixture(params=implementations(_mix_py, "_mix"))
def mix(request: pytest.FixtureRequest) -> ModuleType:
    return resolve(request.param)


def frame(*samples: int) -> bytes:
    return struct.pack(f"={len(samples)}h", *samples)


def ints(data: bytes | bytearray, code: str = "h") -> list[int]:
    return list(struct.unpack(f"={len(data) // struct.calcsize(code)}{code}", data))


def mixed(
    mix: ModuleType, frames: list[bytes], minus: bytes | None = None
) -> tuple[list[int], int]:
    samples = len(frames[0]) // 2
    acc = bytearray(4 * samples)
    for pcm in frames:
        mix.mix_add(acc, pcm)
    out = bytearray(2 * samples)
    energy = mix.mix_limit(acc, out, minus)
    return ints(out), energy


def test_compiled_kernels_are_the_ones_in_use() -> None:
    assert sfu.mix.EXTENSION_LOADED is (not NO_EXTENSIONS)
    if NO_EXTENSIONS:
        assert sfu.mix.mix_add is _mix_py.mix_add
        assert sfu.mix.mix_limit is _mix_py.mix_limit
    else:
        module = compiled("_mix")
        assert sfu.mix.mix_add is module.mix_add, "the compiled kernel did not load"
        assert sfu.mix.mix_limit is module.mix_limit


def test_below_the_knee_the_sum_is_exact(mix: ModuleType) -> None:
    out, energy = mixed(mix, [frame(1000, -2000, 0, 12000), frame(500, 500, -7, 12000)])
    assert out == [1500, -1500, -7, 24000]
    assert energy == sum(x * x for x in out)


@pytest.mark.parametrize("count", [2, 3, 16, 64])
def test_full_scale_inputs_never_wrap(mix: ModuleType, count: int) -> None:
    loud = frame(32767, -32768, 32767, -32768, 20000, -20000)
    out, _ = mixed(mix, [loud] * count)
    assert out[0] > 30000 and out[2] > 30000, "positive full scale must stay positive"
    assert out[1] < -30000 and out[3] < -30000, "negative full scale must stay negative"
    assert all(abs(x) <= 32766 for x in out)
    # More speakers, closer to the ceiling, never past it.
    fewer, _ = mixed(mix, [loud] * (count - 1))
    assert out[0] >= fewer[0] and out[1] <= fewer[1]


def test_mix_minus_leaves_one_speaker_out(mix: ModuleType) -> None:
    a, b, c = frame(100, 200), frame(1000, -1000), frame(7, 7)
    out, _ = mixed(mix, [a, b, c], minus=b)
    assert out == [107, 207]


def test_soft_clip_curve(mix: ModuleType) -> None:
    knee = _mix_py.LIMIT_KNEE
    assert [mix.soft_clip(x) for x in (0, 1, -1, knee, -knee)] == [0, 1, -1, knee, -knee]
    previous = knee
    for x in range(knee + 1, 200000, 997):
        y = mix.soft_clip(x)
        assert previous <= y < _mix_py.LIMIT_CEILING  # monotonic, below the ceiling
        assert mix.soft_clip(-x) == -y  # odd
        previous = y
    assert mix.soft_clip(1 << 40) == 32766
    assert mix.soft_clip(-(1 << 40)) == -32766


def test_bad_sizes(mix: ModuleType) -> None:
    with pytest.raises(ValueError):
        mix.mix_add(bytearray(8), frame(1, 2, 3))  # accumulator too small
    with pytest.raises(ValueError):
        mix.mix_add(bytearray(8), b"\x00")  # odd length
    with pytest.raises(ValueError):
        mix.mix_limit(bytes(4), bytearray(4))  # 2 samples need 8 bytes of accumulator
    with pytest.raises(ValueError):
        mix.mix_limit(bytes(8), bytearray(4), b"\x00\x00")  # minus too short
    assert mix.mix_limit(b"", bytearray()) == 0


def test_longer_buffers_of_any_size_are_accepted_alike(mix: ModuleType) -> None:
    """Only the samples used are read: an accumulator or a minus frame longer
    than needed, by a size that is not a whole sample, is fine in both twins."""
    acc = bytearray(4 * 2 + 2)  # 2 samples and half of one more
    mix.mix_add(acc, frame(1000, -1000))
    out = bytearray(4)
    assert mix.mix_limit(acc, out, frame(10, 10) + b"\x07") >= 0
    assert ints(out) == [990, -1010]


int16 = st.integers(-32768, 32767)


@given(
    st.integers(1, 64).flatmap(
        lambda n: st.lists(st.lists(int16, min_size=n, max_size=n), min_size=1, max_size=20)
    ),
    st.booleans(),
)
@settings(max_examples=300, deadline=None)
def test_compiled_and_python_agree(frames: list[list[int]], use_minus: bool) -> None:
    module = compiled("_mix")
    pcm = [frame(*samples) for samples in frames]
    minus = pcm[0] if use_minus else None
    assert mixed(module, pcm, minus) == mixed(_mix_py, pcm, minus)


@given(st.integers(-(1 << 40), 1 << 40))
def test_soft_clip_agrees(value: int) -> None:
    assert compiled("_mix").soft_clip(value) == _mix_py.soft_clip(value)
    assert -32766 <= _mix_py.soft_clip(value) <= 32766


@given(st.integers(-(1 << 80), 1 << 80))
def test_soft_clip_agrees_for_any_int(value: int) -> None:
    """The twin takes any int and promises -32766..32766 "for any input": so
    does the compiled one (it overflowed past ~2**50 and refused 2**63)."""
    assert compiled("_mix").soft_clip(value) == _mix_py.soft_clip(value)


@pytest.mark.parametrize("value", [10**16, 1 << 62, (1 << 63) - 1, 1 << 63, 1 << 70])
def test_soft_clip_saturates_far_past_the_knee(mix: ModuleType, value: int) -> None:
    assert mix.soft_clip(value) == 32766
    assert mix.soft_clip(-value) == -32766


def buffers(samples: list[int]) -> list[object]:
    """One int16 frame as every kind of buffer a caller may hold it in."""
    import array

    import numpy as np

    raw = frame(*samples)
    return [
        raw,
        bytearray(raw),
        memoryview(raw),
        memoryview(raw).cast("h"),
        array.array("h", samples),
        np.array(samples, dtype=np.int16),
    ]


@pytest.mark.parametrize("kind", range(6))
def test_typed_buffers_are_measured_in_bytes(mix: ModuleType, kind: int) -> None:
    """A frame in an int16 buffer (numpy, array, a cast memoryview) is all
    mixed, in both twins: the Python one took its length in items for bytes
    (half the frame mixed, silently) and the compiled one refused it."""
    import numpy as np

    samples = [1000, -2000, 300, 4]
    pcm = buffers(samples)[kind]
    acc = np.zeros(4, dtype=np.int32)  # an int32 accumulator of the right size
    mix.mix_add(acc, pcm)
    mix.mix_add(acc, pcm)
    assert acc.tolist() == [2 * x for x in samples]
    out = np.zeros(4, dtype=np.int16)
    energy = mix.mix_limit(acc, out, buffers(samples)[kind])
    assert out.tolist() == samples
    assert energy == sum(x * x for x in samples)


def test_a_read_only_accumulator_or_output_is_refused_alike(mix: ModuleType) -> None:
    with pytest.raises(ValueError, match="writable"):
        mix.mix_add(bytes(8), frame(1, 2))
    with pytest.raises(ValueError, match="writable"):
        mix.mix_limit(bytes(8), bytes(4))
