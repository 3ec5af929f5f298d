"""RTP/RTCP helpers for the control side of the media path.

The receiver and sender reports the server sends are built with
:mod:`aiortc.rtp` (in :mod:`sfu.media.router`, and for the mix in
:mod:`sfu.media.mix_receivers`), the SDES CNAME packet that
goes with them here (:func:`sdes_cnames`: aiortc's writer pads chunks wrong);
the reports it receives are read here with ``struct`` (:func:`read_reports`).
This module also has: telling RTP from RTCP on a multiplexed port, reading
the fixed RTP header without copying, sequence arithmetic, NTP time, and
receive statistics.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Collection
from dataclasses import dataclass

__all__ = [
    "OPUS_CLOCK_RATE",
    "ReceiveStatistics",
    "is_rtcp",
    "ntp_time",
    "ReportBlock",
    "parse_rtp_header",
    "read_reports",
    "sdes_cnames",
    "strip_padding",
    "uint16_add",
    "uint16_gt",
    "uint32_add",
]

OPUS_CLOCK_RATE = 48000

_HEADER = struct.Struct("!BBHII")
# Seconds from 1900 (NTP epoch) to 1970 (Unix epoch).
_NTP_EPOCH_OFFSET = 2208988800


def is_rtcp(data: bytes) -> bool:
    """True when a demultiplexed SRTP datagram is RTCP (RFC 5761 section 4).

    RTCP packet types 192..223 appear as RTP payload types 64..95 once the
    marker bit is masked.
    """
    return len(data) >= 2 and 64 <= (data[1] & 0x7F) <= 95


def parse_rtp_header(data: bytes) -> tuple[int, bool, int, int, int, int]:
    """Return ``(payload_type, marker, sequence, timestamp, ssrc, payload_offset)``.

    RFC 3550 section 5.1::

        |V=2|P|X|  CC   |M|     PT      |       sequence number         |
        |                           timestamp                           |
        |           synchronization source (SSRC) identifier            |
        |            contributing source (CSRC) identifiers             |
        |        header extension (RFC 8285), when X is set             |

    The payload runs from the returned offset to the end of the packet
    less any padding (see :func:`strip_padding`). Raises ``ValueError``
    when the packet is truncated or not version 2.
    """
    if len(data) < 12:
        raise ValueError("RTP packet truncated")
    first, second, sequence, timestamp, ssrc = _HEADER.unpack_from(data)
    if first >> 6 != 2:
        raise ValueError("RTP packet has version %d, not 2" % (first >> 6))
    offset = 12 + 4 * (first & 0x0F)
    if first & 0x10:
        if offset + 4 > len(data):
            raise ValueError("RTP header extension truncated")
        offset += 4 + 4 * (data[offset + 2] << 8 | data[offset + 3])
    if offset > len(data):
        raise ValueError("RTP packet truncated")
    return second & 0x7F, bool(second & 0x80), sequence, timestamp, ssrc, offset


def strip_padding(data: bytes, payload_offset: int = 12) -> bytes:
    """Drop RTP padding (P bit; the last byte counts the padding bytes, itself included).

    Raises ``ValueError`` when the count is 0 or reaches into the header
    (RFC 3550 section 5.1: such a packet is invalid).
    """
    if not data[0] & 0x20:
        return data
    count = data[-1]
    if count == 0 or count > len(data) - payload_offset:
        raise ValueError(f"RTP padding count {count} does not fit the payload")
    return data[: len(data) - count]


_REPORT_BLOCK = struct.Struct("!IIIIII")  # ssrc, lost word, highest seq, jitter, lsr, dlsr
_SSRC = struct.Struct("!I")


@dataclass(frozen=True)
class ReportBlock:
    """One reception report block (RFC 3550 section 6.4.1)."""

    ssrc: int
    fraction_lost: int  # 8-bit fixed point: lost / 256
    packets_lost: int  # cumulative, signed 24 bits
    highest_sequence: int
    jitter: int  # RTP timestamp units
    lsr: int  # middle 32 bits of the NTP time of the last SR received
    dlsr: int  # delay since that SR, 1/65536 s


def read_reports(
    data: bytes, ssrcs: Collection[int] | None = None
) -> tuple[tuple[int, int] | None, list[ReportBlock]]:
    """Walk a compound RTCP packet; return ``((sr_ssrc, sr_ntp) | None, report blocks)``.

    Only SR (200) and RR (201) are read; other packet types are skipped by
    their length. This runs for every RTCP packet of every receiver, so it
    reads with :mod:`struct` instead of building objects per packet. With
    ``ssrcs`` (the SSRCs the server sends the client), blocks about other
    SSRCs are skipped unread, and reading stops after the packet in which
    ``len(ssrcs)`` blocks are read: a client's datagram holds up to ~60
    blocks, and no more than that many can matter::

        |V=2|P|  RC   |   PT=200/201  |             length            |
        |                     SSRC of sender                            |
        | SR only: NTP msw | NTP lsw | RTP ts | packet count | octets    |
        | RC report blocks of 24 bytes                                  |

    Raises ``ValueError`` when a packet it reads is truncated or not version 2.
    """
    sender: tuple[int, int] | None = None
    blocks: list[ReportBlock] = []
    wanted = -1 if ssrcs is None else len(ssrcs)
    position, size = 0, len(data)
    while position + 4 <= size:
        first, packet_type, length = struct.unpack_from("!BBH", data, position)
        if first >> 6 != 2:
            raise ValueError("RTCP packet has a bad version")
        end = position + 4 + 4 * length
        if end > size:
            raise ValueError("RTCP packet truncated")
        count = first & 0x1F
        if packet_type in (200, 201):
            blocks_start = position + 8
            if packet_type == 200:
                if blocks_start + 20 > end:
                    raise ValueError("RTCP sender report truncated")
                ssrc, msw, lsw = struct.unpack_from("!III", data, position + 4)
                sender = (ssrc, msw << 32 | lsw)
                blocks_start += 20
            blocks_end = blocks_start + 24 * count
            if blocks_end > end:
                raise ValueError("RTCP report blocks truncated")
            for offset in range(blocks_start, blocks_end, 24):
                if len(blocks) == wanted:
                    break
                if ssrcs is not None and _SSRC.unpack_from(data, offset)[0] not in ssrcs:
                    continue
                ssrc, lost, highest, jitter, lsr, dlsr = _REPORT_BLOCK.unpack_from(data, offset)
                packets_lost = lost & 0xFFFFFF
                if packets_lost & 0x800000:
                    packets_lost -= 1 << 24
                blocks.append(
                    ReportBlock(ssrc, lost >> 24, packets_lost, highest, jitter, lsr, dlsr)
                )
        position = end
        if len(blocks) == wanted:
            break  # (an SR comes first in a compound: read already)
    return sender, blocks


_SDES = 202


def sdes_cnames(ssrcs: list[int], cname: str) -> bytes:
    """An RTCP SDES packet with one chunk per SSRC, each with the CNAME item.

    RFC 3550 section 6.5 (6.5.1 for CNAME)::

        |V=2|P|    SC   |  PT=SDES=202  |             length            |
        |                          SSRC/CSRC_1                          |
        |    CNAME=1    |     length    | user and domain name        ...
        |  ... 0 (end of the item list), 0 to 3 more to a 32-bit boundary |
        |                          SSRC/CSRC_2 ...                      |

    Each chunk's item list ends with at least one null octet and the chunk
    is padded with nulls to a 32-bit boundary; ``length`` is the packet's
    size in 32-bit words minus one. RFC 3550 6.1: every compound RTCP packet
    carries one, after its SR or RR. Raises ``ValueError`` for more than 31
    SSRCs or a CNAME over 255 bytes.
    """
    value = cname.encode()
    if len(ssrcs) > 31 or len(value) > 255:
        raise ValueError("an SDES packet holds 31 chunks and a CNAME of 255 bytes at most")
    item = bytes((1, len(value))) + value
    end = bytes(4 - len(item) % 4)  # 1 to 4 nulls: the chunk ends on a 32-bit boundary
    body = b"".join(struct.pack("!I", ssrc) + item + end for ssrc in ssrcs)
    return struct.pack("!BBH", 0x80 | len(ssrcs), _SDES, len(body) // 4) + body


def uint16_add(a: int, b: int) -> int:
    return (a + b) & 0xFFFF


def uint16_gt(a: int, b: int) -> bool:
    """``a`` is after ``b`` in 16-bit sequence space (RFC 1982)."""
    half = 0x8000
    return (a > b and a - b < half) or (a < b and b - a > half)


def uint32_add(a: int, b: int) -> int:
    return (a + b) & 0xFFFFFFFF


def ntp_time(unix_time: float | None = None) -> int:
    """64-bit NTP timestamp of a wall-clock time (now by default)."""
    now = time.time() if unix_time is None else unix_time
    return int((now + _NTP_EPOCH_OFFSET) * (1 << 32))


#: RFC 3550 A.1's values: a sequence number this far ahead of the highest
#: seen, or more than MAX_MISORDER behind it, is not loss or reordering but a
#: stray or a sender that restarted its numbering (two in a row tell which).
MAX_DROPOUT = 3000
MAX_MISORDER = 100


@dataclass
class ReceiveStatistics:
    """What a receiver report needs about one inbound stream (RFC 3550 A.1, A.3, A.8)."""

    clock_rate: int = OPUS_CLOCK_RATE
    base_sequence: int = -1
    max_sequence: int = 0
    cycles: int = 0
    received: int = 0
    jitter: float = 0.0
    expected_prior: int = 0
    received_prior: int = 0
    last_transit: float | None = None
    last_sr: int = 0  # middle 32 bits of the last SR's NTP time
    last_sr_arrival: float = 0.0
    bad_sequence: int = -1  # after a jump: the number that would confirm a restart

    def add(self, sequence: int, timestamp: int, arrival: float) -> None:
        if self.base_sequence < 0:
            self._restart(sequence)
        else:
            step = (sequence - self.max_sequence) & 0xFFFF
            if step < MAX_DROPOUT:
                if sequence < self.max_sequence:
                    self.cycles += 1 << 16  # wrapped
                self.max_sequence = sequence
            elif step <= 0x10000 - MAX_MISORDER:
                # A.1: one packet this far off is a stray (counted nowhere: it
                # would make the reports claim thousands lost); the next one
                # in sequence after it means the sender restarted its numbering.
                if sequence != self.bad_sequence:
                    self.bad_sequence = (sequence + 1) & 0xFFFF
                    return
                self._restart(sequence)
            # (else a duplicate or reordered packet: received, nothing moves)
        self.received += 1
        transit = arrival * self.clock_rate - timestamp
        if self.last_transit is not None:
            delta = abs(transit - self.last_transit)
            # Timestamps wrap: a jump of more than half the space is a wrap, not jitter.
            if delta < 1 << 31:
                self.jitter += (delta - self.jitter) / 16
        self.last_transit = transit

    def _restart(self, sequence: int) -> None:
        """Count from ``sequence`` as a new source (A.1 ``init_seq``)."""
        self.base_sequence = self.max_sequence = sequence
        self.bad_sequence = -1
        self.cycles = self.received = self.expected_prior = self.received_prior = 0
        self.last_transit = None  # its timestamps likely restarted too: no jitter spike

    @property
    def extended_max(self) -> int:
        return self.cycles + self.max_sequence

    @property
    def expected(self) -> int:
        return self.extended_max - self.base_sequence + 1 if self.base_sequence >= 0 else 0

    @property
    def lost(self) -> int:
        return max(0, self.expected - self.received)

    def report_fraction_lost(self) -> int:
        """Fraction lost since the previous call, as the 8-bit RR field."""
        expected_interval = self.expected - self.expected_prior
        received_interval = self.received - self.received_prior
        self.expected_prior = self.expected
        self.received_prior = self.received
        lost_interval = expected_interval - received_interval
        if expected_interval <= 0 or lost_interval <= 0:
            return 0
        return min(255, (lost_interval << 8) // expected_interval)
