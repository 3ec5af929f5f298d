"""read_audio_level: the compiled sfu._audio_level and its Python twin, same cases."""

from __future__ import annotations

import struct
from types import ModuleType

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sfu import _audio_level_py

from .twins import NO_EXTENSIONS, compiled, implementations, resolve


@pytest.fixture(params=implementations(_audio_level_py, "_audio_level"))
def twin(request: pytest.FixtureRequest) -> ModuleType:
    return resolve(request.param)


def rtp(extension: bytes = b"", profile: int = 0xBEDE, csrcs: int = 0) -> bytes:
    first = 0x80 | (0x10 if extension else 0) | csrcs
    header = struct.pack("!BBHII", first, 111, 1, 2, 3) + b"\x00\x00\x00\x09" * csrcs
    if extension:
        padded = extension + bytes(-len(extension) % 4)
        header += struct.pack("!HH", profile, len(padded) // 4) + padded
    return header + b"opus"


@pytest.mark.parametrize(
    ("packet", "extension_id", "expected"),
    [
        (rtp(b"\x10\xaa"), 1, 0xAA),  # id 1, len 1, V=1 level 42
        (rtp(b"\x10\x2a"), 1, 42),
        (rtp(b"\x10\x2a"), 2, -1),  # other id
        (rtp(b"\x22\x01\x02\x03\x10\x05"), 1, 5),  # skips a 3-byte element
        (rtp(b"\x00\x00\x10\x07"), 1, 7),  # padding before
        (rtp(b"\xf0\x07"), 15, -1),  # reserved id 15 stops parsing
        (rtp(b"\x10\x2a", csrcs=2), 1, 42),  # after CSRCs
        (rtp(b"\x03\x01\x33", profile=0x1000), 3, 0x33),  # two-byte form
        (rtp(b"\x03\x00", profile=0x1000), 3, -1),  # two-byte, empty element
        (rtp(), 1, -1),  # no extension
        (rtp(b"\x10\x2a"), 0, -1),  # not negotiated
        (rtp(b"\x10\x2a")[:14], 1, -1),  # truncated block
        (b"\x90\x6f", 1, -1),  # truncated header
        (rtp(b"\x10\x2a")[:12] + b"\xbe\xde\x00\x09", 1, -1),  # length past the end
        (rtp(b"\x21\x05\x06\x10"), 1, -1),  # a header ends the block: no level byte
        (rtp(b"\x05\x00\x03\x01", profile=0x1000), 3, -1),  # the same, two-byte form
    ],
)
def test_read_audio_level(
    twin: ModuleType, packet: bytes, extension_id: int, expected: int
) -> None:
    assert twin.read_audio_level(packet, extension_id) == expected


def test_a_packet_that_is_not_bytes_is_refused(twin: ModuleType) -> None:
    # None is no packet: both twins refuse it rather than read "no level".
    with pytest.raises(TypeError):
        twin.read_audio_level(None, 1)


def test_selector_loads_compiled_module() -> None:
    from sfu import audio_level

    assert audio_level.EXTENSION_LOADED is (not NO_EXTENSIONS)


@pytest.mark.skipif(
    NO_EXTENSIONS, reason="compares with the compiled module; SFU_NO_EXTENSIONS is set"
)
@settings(max_examples=300, deadline=None)
@given(packet=st.binary(max_size=64), extension_id=st.integers(min_value=0, max_value=15))
def test_twins_agree(packet: bytes, extension_id: int) -> None:
    fast = compiled("_audio_level")
    prefixed = b"\x90" + packet  # X bit set, so the parser really walks the bytes
    assert fast.read_audio_level(prefixed, extension_id) == _audio_level_py.read_audio_level(
        prefixed, extension_id
    )
    assert fast.read_audio_level(packet, extension_id) == _audio_level_py.read_audio_level(
        packet, extension_id
    )


# (id, data, overrun) elements of an RFC 8285 block: padding (id 0), reserved 15,
# and some whose length says ``overrun`` bytes more than they hold (or, with no
# data, that end the block on an element header).
ELEMENTS = st.lists(
    st.tuples(
        st.one_of(st.sampled_from([0, 1, 14, 15]), st.integers(0, 15)),
        st.binary(max_size=4),
        st.sampled_from([0, 0, 1, 3]),
    ),
    min_size=1,
    max_size=5,
)


@pytest.mark.skipif(
    NO_EXTENSIONS, reason="compares with the compiled module; SFU_NO_EXTENSIONS is set"
)
@settings(max_examples=500, deadline=None)
@given(
    elements=ELEMENTS,
    two_byte=st.booleans(),
    csrcs=st.integers(0, 2),
    cut=st.sampled_from([0, 0, 0, 1, 2, 5]),
    wanted=st.integers(0, 15),
)
def test_twins_agree_on_extension_blocks(
    elements: list[tuple[int, bytes, int]], two_byte: bool, csrcs: int, cut: int, wanted: int
) -> None:
    """Blocks of elements (random bytes seldom make one), whole or cut short,
    asked mostly for an id one of their elements has."""
    if two_byte:
        block = b"".join(
            bytes([number, len(data) + over]) + data for number, data, over in elements
        )
    else:
        block = b"".join(
            bytes([number << 4 | min(max(len(data) - 1, 0) + over, 15)]) + data
            for number, data, over in elements
        )
    packet = rtp(block, profile=0x1000 if two_byte else 0xBEDE, csrcs=csrcs)
    packet = packet[: len(packet) - cut]
    extension_id = elements[wanted % len(elements)][0] if wanted < 12 else wanted
    fast = compiled("_audio_level")
    assert fast.read_audio_level(packet, extension_id) == _audio_level_py.read_audio_level(
        packet, extension_id
    )
