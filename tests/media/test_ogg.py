"""Ogg pages and Ogg Opus headers (sfu.media.ogg): round trips, malformed input, FFmpeg reads them."""

from __future__ import annotations

import io
import struct

import av
import numpy as np
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
    padded_to,
    parse_opus_head,
    parse_pages,
    read_packets,
    with_pre_skip,
)

from .mixing import decode_ogg, decode_payloads, opus_tone

pytestmark = pytest.mark.compiled_and_python_alike  # see tests/alike.py


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


def _with_code(frames: list[bytes], code: int) -> bytes:
    """Opus packets of ``frames`` (20 ms CELT frames of one stream) coded as
    ``code`` (RFC 6716 section 3.2): 0 one frame; 1 two of equal size; 2 two
    (VBR); 3 several (CBR when all sizes are equal, else VBR)."""
    toc = frames[0][0] & 0xFC
    bodies = [frame[1:] for frame in frames]
    if code == 0:
        return bytes((toc,)) + bodies[0]
    if code == 1:
        return bytes((toc | 1,)) + bodies[0] + bodies[0]  # the same frame twice
    if code == 2:
        assert len(bodies[0]) < 252
        return bytes((toc | 2, len(bodies[0]))) + bodies[0] + bodies[1]
    assert all(len(body) < 252 for body in bodies)
    lengths = bytes(len(body) for body in bodies[:-1])
    return bytes((toc | 3, 0x80 | len(bodies))) + lengths + b"".join(bodies)


@pytest.mark.parametrize("code", [0, 1, 2, 3])
@pytest.mark.parametrize("more", [2, 200, 255, 256, 257, 510, 511, 512, 1000])
def test_padding_keeps_the_audio_and_the_duration(code: int, more: int) -> None:
    """RFC 6716 section 3.2.5: code-3 padding, skipped by the decoder. The padded
    packets are exactly the size asked for (every padding length coding: one
    byte, a 255 and a 0, several 255s) and decode (libopus) to the same samples."""
    frames = opus_tone(440, 12)
    packets = [_with_code(frames[i : i + 3], code) for i in range(0, 12, 3)]
    padded = [padded_to(packet, len(packet) + more) for packet in packets]
    assert [len(p) - len(q) for p, q in zip(padded, packets, strict=True)] == [more] * 4
    assert all(p[0] & 3 == 3 and p[1] & 0x40 for p in padded)
    assert [packet_samples(p) for p in padded] == [packet_samples(p) for p in packets]
    assert np.array_equal(decode_payloads(padded), decode_payloads(packets))


def test_padding_leaves_long_and_padded_packets_alone() -> None:
    packet = opus_tone(440, 1)[0]
    assert padded_to(packet, len(packet)) is packet
    assert padded_to(packet, len(packet) + 1) is packet, "padding costs two bytes at least"
    code_3 = _with_code(opus_tone(440, 2), 3)
    assert len(padded_to(code_3, len(code_3) + 1)) == len(code_3) + 1, "one for code 3"
    assert len(padded_to(packet, len(packet) + 2)) == len(packet) + 2
    padded = padded_to(packet, len(packet) + 50)
    assert padded_to(padded, len(packet) + 400) is padded
    assert padded_to(b"\xf8", 100)[:3] == b"\xfb\x41\x61" and len(padded_to(b"\xf8", 100)) == 100
    with pytest.raises(ValueError):
        padded_to(b"", 100)
    with pytest.raises(ValueError):
        padded_to(b"\xfb", 100)


def test_ffmpeg_reads_padded_packets_in_ogg() -> None:
    """FFmpeg's Ogg demuxer takes a padded packet's duration from its TOC and
    frame count byte, as for any code-3 packet."""
    packets = opus_tone(440, 50)
    padded = [padded_to(p, 300) for p in packets]
    assert np.array_equal(decode_ogg(write_stream(padded)), decode_ogg(write_stream(packets)))


def test_a_rewound_writer_goes_on_from_the_pages_written_without_a_gap() -> None:
    """Pages a disk refused are forgotten (rewind to the mark taken when the
    pages before them were written): the stream read back has gapless page
    numbers, and its granule positions go on from the last page written."""
    packets = opus_tone(440, 120)
    writer = OggWriter(9, packets_per_page=10)
    written = writer.headers(opus_head(1, 0), opus_tags())
    granule = 0
    for packet in packets[:35]:
        granule += 960
        written += writer.write(packet, granule)
    mark = writer.mark()  # 30 packets on pages written, 5 on the open page
    assert mark == (5, 30 * 960, 30)
    for packet in packets[35:70]:  # refused by the disk: never in the file
        granule += 960
        writer.write(packet, granule)
    writer.rewind(mark)
    assert (writer.sequence, writer.granule, writer.packets) == mark
    granule = mark[1]
    for packet in packets[70:]:
        granule += 960
        written += writer.write(packet, granule)
    written += writer.close()
    pages = list(parse_pages(written))
    assert [page.sequence for page in pages] == list(range(len(pages)))
    audio = [packet for packet, _ in read_packets(written)][2:]
    assert audio == packets[:30] + packets[70:]
    assert pages[-1].granule == len(audio) * 960
    assert len(decode_ogg(written)) == len(audio) * 960


def test_an_empty_end_of_stream_page_after_a_flush_has_no_granule_position() -> None:
    """RFC 3533 section 6 (and this module's docstring): -1 when no packet
    completes on a page. The live stream flushes every read, so the EOS page
    its clients get at the end is always such an empty page."""
    silence = b"\xf8\xff\xfe"
    writer = OggWriter(7, packets_per_page=255)
    data = writer.headers(opus_head(1, 312), opus_tags())
    granule = 0
    for _ in range(10):
        granule += 960
        data += writer.write(silence, granule)
    data += writer.flush()
    data += writer.close()
    pages = list(parse_pages(data))
    last = pages[-1]
    assert last.header_type & LAST_PAGE and last.segments == b""
    assert last.granule == -1, f"empty EOS page carries granule {last.granule}"
    assert pages[-2].granule == 9600  # the last page a packet completes on
    # FFmpeg still reads the stream and its length from the last real page.
    with av.open(io.BytesIO(data), format="ogg") as container:
        samples = sum(frame.samples for frame in container.decode(audio=0))
    assert samples == 9600 - 312
