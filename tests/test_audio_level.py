"""read_audio_level: the compiled sfu._detector and its Python twin, same cases."""

from __future__ import annotations

import struct
from types import ModuleType

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sfu import _detector_py

from .twins import NO_EXTENSIONS, compiled, implementations, resolve


@pytest.fixture(params=implementations(_detector_py, "_detector"))
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
    ],
)
def test_read_audio_level(
    twin: ModuleType, packet: bytes, extension_id: int, expected: int
) -> None:
    assert twin.read_audio_level(packet, extension_id) == expected


def test_selector_loads_compiled_module() -> None:
    from sfu import detector

    assert detector.EXTENSION_LOADED is (not NO_EXTENSIONS)


@pytest.mark.skipif(
    NO_EXTENSIONS, reason="compares with the compiled module; SFU_NO_EXTENSIONS is set"
)
@settings(max_examples=300, deadline=None)
@given(packet=st.binary(max_size=64), extension_id=st.integers(min_value=0, max_value=15))
def test_twins_agree(packet: bytes, extension_id: int) -> None:
    fast = compiled("_detector")
    prefixed = b"\x90" + packet  # X bit set, so the parser really walks the bytes
    assert fast.read_audio_level(prefixed, extension_id) == _detector_py.read_audio_level(
        prefixed, extension_id
    )
    assert fast.read_audio_level(packet, extension_id) == _detector_py.read_audio_level(
        packet, extension_id
    )
