"""Ogg pages and Ogg Opus headers (sfu.media.ogg): round trips, malformed input, FFmpeg reads them."""

from __future__ import annotations

import io
import struct

import av
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sfu.media.ogg import (
    CONTINUED,
    FIRST_PAGE,
    LAST_PAGE,
    OggWriter,
    ogg_crc,
    opus_head,
    opus_tags,
    packet_samples,
    parse_opus_head,
    parse_pages,
    read_packets,
    with_pre_skip,
)

from .mixing import decode_ogg, opus_tone


def reference_crc(data: bytes) -> int:
    """Bit-by-bit CRC-32, polynomial 0x04C11DB7, no reflection, init 0, no final XOR."""
    crc = 0
    for byte in data:
        crc ^= byte << 24
        for _ in range(8):
            crc = ((crc << 1) ^ 0x04C11DB7 if crc & 0x80000000 else crc << 1) & 0xFFFFFFFF
    return crc


@given(st.binary(max_size=600))
@settings(max_examples=200)
def test_crc_matches_the_bitwise_reference(data: bytes) -> None:
    assert ogg_crc(data) == reference_crc(data)


def test_crc_known_values() -> None:
    assert ogg_crc(b"") == 0
    # CRC-32/MPEG-2 without its init and final XOR: "123456789" -> 0x89A1897F.
    assert ogg_crc(b"123456789") == 0x89A1897F


def test_opus_head_layout_and_parse() -> None:
    head = opus_head(2, 312)
    assert head == b"OpusHead" + bytes([1, 2]) + struct.pack("<HIhB", 312, 48000, 0, 0)
    assert parse_opus_head(head) == (2, 312, 48000)
    with pytest.raises(ValueError):
        opus_head(3)
    with pytest.raises(ValueError):
        opus_head(1, 70000)
    for bad in (b"", b"OpusHead", b"OpusTags" + head[8:], b"OpusHead\x10" + head[9:]):
        with pytest.raises(ValueError):
            parse_opus_head(bad)


def test_with_pre_skip_changes_that_field_only() -> None:
    head = opus_head(2, 312, input_rate=44100, gain=-256)
    assert with_pre_skip(head, 4152) == opus_head(2, 4152, input_rate=44100, gain=-256)
    with pytest.raises(ValueError, match="pre-skip"):
        with_pre_skip(head, 70000)
    with pytest.raises(ValueError, match="OpusHead"):
        with_pre_skip(b"OpusTags" + head[8:], 0)


def test_opus_tags_layout() -> None:
    tags = opus_tags("me", {"TITLE": "x"})
    assert (
        tags == b"OpusTags" + struct.pack("<I", 2) + b"me" + struct.pack("<II", 1, 7) + b"TITLE=x"
    )


@pytest.mark.parametrize(
    ("packet", "samples"),
    [
        (bytes([0xF8, 0xFF, 0xFE]), 960),  # CELT FB 20 ms, one frame
        (bytes([0xF0]), 480),  # CELT 10 ms
        (bytes([0xF1, 1, 2]), 960),  # two 10 ms frames (code 1)
        (bytes([0xF2, 1, 2]), 960),  # two 10 ms frames (code 2)
        (bytes([0xFB, 0x03]), 2880),  # code 3: three 20 ms frames
        (bytes([0x18]), 2880),  # SILK 60 ms
        (bytes([0x78]), 960),  # hybrid 20 ms
        (bytes([0x80]), 120),  # CELT 2.5 ms
    ],
)
def test_packet_samples(packet: bytes, samples: int) -> None:
    assert packet_samples(packet) == samples


@pytest.mark.parametrize("packet", [b"", bytes([0xFB])])
def test_packet_samples_truncated(packet: bytes) -> None:
    with pytest.raises(ValueError, match="truncated"):
        packet_samples(packet)


def write_stream(packets: list[bytes], per_page: int = 50) -> bytes:
    writer = OggWriter(0x1234, packets_per_page=per_page)
    out = writer.headers(opus_head(1, 0), opus_tags())
    granule = 0
    for packet in packets:
        granule += 960
        out += writer.write(packet, granule)
    return out + writer.close()


@given(
    st.lists(st.binary(min_size=1, max_size=70000), max_size=6)
    | st.lists(st.binary(min_size=1, max_size=600), max_size=120),
    st.integers(1, 255),
)
@settings(max_examples=60, deadline=None)
def test_packets_round_trip(packets: list[bytes], per_page: int) -> None:
    data = write_stream(packets, per_page)
    pages = list(parse_pages(data))
    read = [packet for packet, _ in read_packets(data)]
    assert read[2:] == packets
    assert read[0].startswith(b"OpusHead") and read[1].startswith(b"OpusTags")
    assert [p.sequence for p in pages] == list(range(len(pages)))
    assert pages[0].header_type == FIRST_PAGE and len(pages[0].segments) == 1
    assert pages[-1].header_type & LAST_PAGE
    assert all(not p.header_type & FIRST_PAGE for p in pages[1:])
    assert all(len(p.segments) <= 255 for p in pages)
    # Granule: samples up to the last packet completed on the page, -1 if none.
    finished = {}
    for index, (_, page) in enumerate(list(read_packets(data))[2:], 1):
        finished[page.sequence] = index * 960
    if packets:
        for page in pages[2:]:
            assert page.granule == finished.get(page.sequence, -1)
    for before, page in zip(pages, pages[1:]):
        # A page continues a packet exactly when the one before ends in a 255 lacing value.
        assert bool(page.header_type & CONTINUED) == (before.segments[-1:] == b"\xff")


def test_page_holds_packets_until_the_next_one_so_eos_carries_audio() -> None:
    writer = OggWriter(1, packets_per_page=2)
    writer.headers(opus_head(), opus_tags())
    assert writer.write(b"a", 960) == b""
    assert writer.write(b"b", 1920) == b""  # page full, held
    page = writer.write(b"c", 2880)  # emitted now, without c
    assert [p.granule for p in parse_pages(page)] == [1920]
    last = list(parse_pages(writer.close()))
    assert last[0].header_type == LAST_PAGE and last[0].granule == 2880 and last[0].body == b"c"
    assert writer.close() == b""


def test_flush_emits_the_open_page() -> None:
    writer = OggWriter(1, packets_per_page=50)
    writer.headers(opus_head(), opus_tags())
    writer.write(b"xy", 960)
    pages = list(parse_pages(writer.flush()))
    assert len(pages) == 1 and pages[0].body == b"xy" and pages[0].granule == 960
    assert writer.flush() == b""


def test_malformed_pages() -> None:
    good = write_stream([b"abc"] * 3)
    first = next(parse_pages(good))
    end = 27 + len(first.segments) + len(first.body)
    cases = [
        ("truncated", good[:10]),
        ("capture pattern", b"OggX" + good[4:]),
        ("version", good[:4] + b"\x01" + good[5:]),
        ("bad CRC", good[:30] + bytes([good[30] ^ 1]) + good[31:]),
        ("truncated", good[:27]),  # page_segments says 1, the table is missing
        ("truncated", good[: end - 1]),
    ]
    for message, data in cases:
        with pytest.raises(ValueError, match=message):
            list(parse_pages(data))
    with pytest.raises(ValueError, match="truncated inside a packet"):
        writer = OggWriter(1)
        data = writer.headers(opus_head(), opus_tags()) + writer.write(b"x" * 70000, 960)
        list(read_packets(data))


def test_ffmpeg_decodes_what_the_writer_writes() -> None:
    packets = opus_tone(440, 100)  # 2 s
    data = write_stream(packets)
    with av.open(io.BytesIO(data), format="ogg") as container:
        stream = container.streams.audio[0]
        assert stream.codec_context.name == "opus"
        samples = sum(frame.samples for frame in container.decode(stream))
    assert samples == 100 * 960
    assert len(decode_ogg(data)) == 100 * 960
