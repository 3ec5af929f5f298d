"""RTP header and RTCP report parsing, including malformed input."""

from __future__ import annotations

import struct

import pytest
from aiortc.rtp import (
    RtcpPacket,
    RtcpReceiverInfo,
    RtcpRrPacket,
    RtcpSdesPacket,
    RtcpSenderInfo,
    RtcpSourceInfo,
    RtcpSrPacket,
)
from hypothesis import given
from hypothesis import strategies as st

from sfu.transport.rtp import (
    ReceiveStatistics,
    is_rtcp,
    parse_rtp_header,
    read_reports,
    sdes_cnames,
    strip_padding,
    uint16_gt,
)

pytestmark = pytest.mark.compiled_and_python_alike  # see tests/alike.py


def block(ssrc: int, lost: int = -3) -> RtcpReceiverInfo:
    return RtcpReceiverInfo(
        ssrc=ssrc,
        fraction_lost=64,
        packets_lost=lost,
        highest_sequence=70000,
        jitter=123,
        lsr=0xABCD,
        dlsr=0x10000,
    )


def test_read_reports_of_a_compound_packet() -> None:
    sender_info = RtcpSenderInfo(
        ntp_timestamp=(5 << 32) | 7, rtp_timestamp=1, packet_count=2, octet_count=3
    )
    compound = (
        bytes(RtcpSrPacket(ssrc=11, sender_info=sender_info, reports=[block(1), block(2, lost=5)]))
        + bytes(RtcpSdesPacket(chunks=[RtcpSourceInfo(ssrc=11, items=[(1, b"cname")])]))
        + bytes(RtcpRrPacket(ssrc=12, reports=[block(3)]))
    )
    sender, blocks = read_reports(compound)
    assert sender == (11, (5 << 32) | 7)
    assert [b.ssrc for b in blocks] == [1, 2, 3]
    assert blocks[0].packets_lost == -3 and blocks[1].packets_lost == 5
    assert blocks[0].fraction_lost == 64 and blocks[0].jitter == 123
    assert (
        blocks[0].lsr == 0xABCD
        and blocks[0].dlsr == 0x10000
        and blocks[0].highest_sequence == 70000
    )


def test_read_reports_of_the_given_ssrcs_only() -> None:
    """Blocks on other SSRCs are skipped, no more blocks are read than SSRCs
    are given (nor anything after them), and the SR that comes first is read
    even when no block can matter."""
    sender_info = RtcpSenderInfo(ntp_timestamp=9, rtp_timestamp=1, packet_count=2, octet_count=3)
    compound = bytes(
        RtcpSrPacket(ssrc=11, sender_info=sender_info, reports=[block(5), block(1), block(6)])
    ) + bytes(RtcpRrPacket(ssrc=12, reports=[block(1, lost=4), block(2), block(3)]))
    sender, blocks = read_reports(compound, [1, 2])
    assert sender == (11, 9)
    assert [(b.ssrc, b.packets_lost) for b in blocks] == [(1, -3), (1, 4)]
    _, blocks = read_reports(compound, [3, 2, 7])
    assert [b.ssrc for b in blocks] == [2, 3]
    assert read_reports(compound, []) == ((11, 9), [])
    bad_version = b"\x41\xc9\x00\x00"
    with pytest.raises(ValueError):
        read_reports(compound + bad_version)
    assert len(read_reports(compound + bad_version, [1, 2])[1]) == 2


@pytest.mark.parametrize(
    "data",
    [
        bytes(RtcpRrPacket(ssrc=1, reports=[block(2)]))[:-4],  # block cut
        b"\x81\xc9\x00\x07" + b"\x00" * 8,  # length says more than there is
        b"\x41\xc9\x00\x01\x00\x00\x00\x01",  # version 1
        b"\x80\xc8\x00\x01\x00\x00\x00\x01",  # SR without sender info
        b"\x85\xc9\x00\x01\x00\x00\x00\x01",  # RR claiming 5 blocks
    ],
)
def test_read_reports_malformed(data: bytes) -> None:
    with pytest.raises(ValueError):
        read_reports(data)


@given(st.binary(max_size=200), st.lists(st.integers(0, 2**32 - 1), max_size=3))
def test_read_reports_only_raises_value_error(data: bytes, ssrcs: list[int]) -> None:
    for given_ssrcs in (None, ssrcs):
        try:
            read_reports(data, given_ssrcs)
        except ValueError:
            pass


def rtp(
    first: int = 0x80, payload: bytes = b"opus", extension: bytes = b"", csrcs: int = 0
) -> bytes:
    header = struct.pack(
        "!BBHII", first | csrcs | (0x10 if extension else 0), 0x80 | 111, 65535, 4000, 99
    )
    header += b"\x00\x00\x00\x01" * csrcs
    if extension:
        header += struct.pack("!HH", 0xBEDE, len(extension) // 4) + extension
    return header + payload


def test_parse_rtp_header() -> None:
    assert parse_rtp_header(rtp()) == (111, True, 65535, 4000, 99, 12)
    assert parse_rtp_header(rtp(csrcs=2, extension=b"\x10\x2a\x00\x00"))[5] == 12 + 8 + 8


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x80\x6f",
        rtp()[:11],
        rtp(first=0x40),
        rtp(csrcs=3)[:20],
        rtp(extension=b"\x10\x2a\x00\x00")[:14],
    ],
)
def test_parse_rtp_header_malformed(data: bytes) -> None:
    with pytest.raises(ValueError):
        parse_rtp_header(data)


def test_padding_and_demux() -> None:
    padded = rtp(first=0xA0, payload=b"opus\x00\x00\x03")
    assert strip_padding(padded).endswith(b"opus")
    assert strip_padding(rtp()) == rtp()
    assert is_rtcp(bytes(RtcpRrPacket(ssrc=1)))
    assert not is_rtcp(rtp())
    assert uint16_gt(1, 65535) and not uint16_gt(65535, 1) and uint16_gt(5, 4)


def test_receive_statistics_loss_wrap_and_jitter() -> None:
    statistics = ReceiveStatistics()
    sequences = [65530 + i for i in range(6)] + [0, 1, 3, 4]  # wraps, loses seq 2
    for index, sequence in enumerate(sequences):
        statistics.add(sequence & 0xFFFF, 960 * index, 0.02 * index)
    assert statistics.extended_max == (1 << 16) + 4
    assert statistics.expected == 11 and statistics.received == 10 and statistics.lost == 1
    assert statistics.report_fraction_lost() == 256 // 11
    assert statistics.report_fraction_lost() == 0  # nothing new since
    assert statistics.jitter < 1  # perfectly paced


def test_receive_statistics_ignore_a_stray_and_follow_a_restart() -> None:
    """RFC 3550 A.1: one packet far off counts nowhere (else every later
    report would claim thousands lost); two in sequence there are a
    restarted numbering, counted afresh, its losses included."""
    statistics = ReceiveStatistics()
    for index in range(100):
        statistics.add(1000 + index, 960 * index, 0.02 * index)
    statistics.report_fraction_lost()
    statistics.add(1100 + 20000, 960 * 100, 2.0)  # a stray, far ahead
    for index in range(100, 200):
        statistics.add(1000 + index, 960 * index, 0.02 * index)
    assert statistics.lost == 0 and statistics.extended_max == 1199
    assert statistics.report_fraction_lost() == 0
    # The sender restarts lower (two in a row), then loses every other packet.
    statistics.add(100, 0, 4.0)
    statistics.add(101, 960, 4.02)
    for sequence in range(103, 303, 2):
        statistics.add(sequence, 960 * (sequence - 100), 4.0 + 0.02 * (sequence - 100))
    assert statistics.extended_max == 301
    assert statistics.expected == 201 and statistics.received == 101  # from the second one
    assert statistics.lost == 100
    assert 120 <= statistics.report_fraction_lost() <= 130  # ~half of the interval
    assert statistics.jitter < 1  # the restart is no jitter spike


@given(
    ssrcs=st.lists(st.integers(0, 0xFFFFFFFF), min_size=1, max_size=31),
    cname=st.text(st.characters(min_codepoint=33, max_codepoint=126), max_size=255),
)
def test_sdes_cnames_follows_rfc_3550_6_5(ssrcs: list[int], cname: str) -> None:
    """Read back by the RFC's rules, not by the writer's: each chunk on a
    32-bit boundary, its items ended by one to four nulls."""
    data = sdes_cnames(ssrcs, cname)
    first, packet_type, length = struct.unpack_from("!BBH", data)
    assert (first >> 6, first & 0x1F, packet_type) == (2, len(ssrcs), 202)
    assert len(data) == 4 * (length + 1)
    position = 4
    for ssrc in ssrcs:
        assert position % 4 == 0
        assert struct.unpack_from("!I", data, position)[0] == ssrc
        item, size = data[position + 4], data[position + 5]
        assert (item, data[position + 6 : position + 6 + size]) == (1, cname.encode())
        position += 6 + size
        nulls = 4 - (position % 4)
        assert data[position : position + nulls] == bytes(nulls)
        position += nulls
    assert position == len(data)
    # ... and read by aiortc's parser (a real client's) for the usual 16 characters.
    if len(cname) == 16:
        (packet,) = RtcpPacket.parse(data)
        assert isinstance(packet, RtcpSdesPacket)
        assert [(c.ssrc, c.items) for c in packet.chunks] == [
            (ssrc, [(1, cname.encode())]) for ssrc in ssrcs
        ]


def test_sdes_cnames_refuses_what_does_not_fit() -> None:
    with pytest.raises(ValueError):
        sdes_cnames(list(range(32)), "cname")
    with pytest.raises(ValueError):
        sdes_cnames([1], "x" * 256)
