"""Ogg encapsulation of Opus (RFC 3533 pages, RFC 7845 Ogg Opus), no I/O.

:class:`OggWriter` turns Opus packets into pages; :func:`parse_pages`
reads them back (tests, tools). Both are plain functions of bytes, used
by the recorder (files) and the live HTTP stream.

An Ogg page (RFC 3533 section 6), all integers little-endian::

     0                   1                   2                   3
     0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |  capture_pattern: "OggS"                                      | 0-3
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    | version = 0   | header_type   | granule_position (int64) ...  | 4-7
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |                           ... granule_position                | 8-11
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |                               | bitstream_serial_number       | 12-15
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |                               | page_sequence_number          | 16-19
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |                               | CRC_checksum                  | 20-23
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |                               | page_segments | segment_table | 24-27
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    | ... segment_table (page_segments lacing values), then the data |

header_type: 0x01 the page continues a packet, 0x02 first page (BOS),
0x04 last page (EOS). A packet is cut into 255-byte segments; a lacing
value < 255 ends it. The granule position of an Ogg Opus page is the
number of 48 kHz samples (including the pre-skip) up to the end of the last
packet completed on the page, -1 when none completes (RFC 7845 section 4).
The CRC is CRC-32 with polynomial 0x04C11DB7, no reflection, initial value
0 and no final XOR, over the page with its CRC field zeroed.

The first page holds only the OpusHead packet (RFC 7845 section 5.1), the
next page(s) only OpusTags (section 5.2); audio starts on a fresh page.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

__all__ = [
    "CONTINUED",
    "FIRST_PAGE",
    "LAST_PAGE",
    "MAX_PACKET_SAMPLES",
    "MAX_PAGE_PACKET",
    "OggPage",
    "OggWriter",
    "ogg_crc",
    "opus_head",
    "opus_tags",
    "packet_samples",
    "padded_to",
    "parse_opus_head",
    "parse_pages",
    "read_packets",
    "with_pre_skip",
]

CONTINUED = 0x01
FIRST_PAGE = 0x02
LAST_PAGE = 0x04

_HEADER = struct.Struct("<4sBBqIIIB")  # up to page_segments: 27 bytes
_MAX_SEGMENTS = 255
#: The longest packet a page holds whole (255 lacing values, the last < 255):
#: a longer one continues on the next page. Every Opus packet fits (at most
#: 48 frames of 1275 bytes, RFC 6716 3.4, and a few bytes of lengths).
MAX_PAGE_PACKET = 255 * _MAX_SEGMENTS - 1

# The Ogg CRC is zlib's CRC-32 with every bit order reversed: reverse the
# bits of each input byte, run zlib's (reflected) CRC with no initial value
# and no final XOR, and reverse the 32-bit result. C speed, no table in Python.
_REVERSED_BYTES = bytes(int(f"{i:08b}"[::-1], 2) for i in range(256))


def _reverse32(value: int) -> int:
    value = ((value >> 1) & 0x55555555) | ((value & 0x55555555) << 1)
    value = ((value >> 2) & 0x33333333) | ((value & 0x33333333) << 2)
    value = ((value >> 4) & 0x0F0F0F0F) | ((value & 0x0F0F0F0F) << 4)
    value = ((value >> 8) & 0x00FF00FF) | ((value & 0x00FF00FF) << 8)
    return ((value >> 16) | (value << 16)) & 0xFFFFFFFF


def ogg_crc(data: bytes) -> int:
    """The Ogg page checksum (RFC 3533 section 6) of ``data``."""
    raw = zlib.crc32(data.translate(_REVERSED_BYTES), 0xFFFFFFFF) ^ 0xFFFFFFFF
    return _reverse32(raw)


# -- Opus headers and packets --------------------------------------------------------


def opus_head(
    channels: int = 1, pre_skip: int = 0, input_rate: int = 48000, gain: int = 0
) -> bytes:
    """The identification header, channel mapping family 0 (RFC 7845 section 5.1)::

    "OpusHead" | version=1 | channels | pre-skip u16 | input rate u32 | gain s16 | family=0
    """
    if channels not in (1, 2):
        raise ValueError(f"channel mapping family 0 has 1 or 2 channels, got {channels}")
    if not 0 <= pre_skip <= 0xFFFF:
        raise ValueError(f"pre-skip must be 0..65535 samples, got {pre_skip}")
    return b"OpusHead" + struct.pack("<BBHIhB", 1, channels, pre_skip, input_rate, gain, 0)


def parse_opus_head(data: bytes) -> tuple[int, int, int]:
    """(channels, pre_skip, input_rate) of an OpusHead packet; ValueError if malformed."""
    if len(data) < 19 or not data.startswith(b"OpusHead"):
        raise ValueError("OpusHead truncated or missing its magic")
    version, channels, pre_skip, input_rate, _gain, _family = struct.unpack_from("<BBHIhB", data, 8)
    if version >> 4 != 0 or channels == 0:
        raise ValueError(f"OpusHead version {version} / {channels} channels not supported")
    return channels, pre_skip, input_rate


def with_pre_skip(head: bytes, pre_skip: int) -> bytes:
    """OpusHead ``head`` with its pre-skip field (bytes 10-11) set to ``pre_skip``."""
    parse_opus_head(head)
    if not 0 <= pre_skip <= 0xFFFF:
        raise ValueError(f"pre-skip must be 0..65535 samples, got {pre_skip}")
    return head[:10] + struct.pack("<H", pre_skip) + head[12:]


def opus_tags(vendor: str = "sfu", comments: dict[str, str] | None = None) -> bytes:
    """The comment header (RFC 7845 section 5.2): vendor string and ``KEY=value`` comments."""
    encoded_vendor = vendor.encode()
    items = [f"{key}={value}".encode() for key, value in (comments or {}).items()]
    out = [b"OpusTags", struct.pack("<I", len(encoded_vendor)), encoded_vendor]
    out.append(struct.pack("<I", len(items)))
    for item in items:
        out += [struct.pack("<I", len(item)), item]
    return b"".join(out)


# Samples per frame at 48 kHz by TOC configuration (RFC 6716 section 3.1, table 2).
_FRAME_SAMPLES = (
    [480, 960, 1920, 2880] * 3  # 0-11 SILK-only: 10, 20, 40, 60 ms
    + [480, 960] * 2  # 12-15 hybrid: 10, 20 ms
    + [120, 240, 480, 960] * 4  # 16-31 CELT-only: 2.5, 5, 10, 20 ms
)


#: The longest Opus packet, 120 ms (RFC 6716 3.2.5): one that claims more is not Opus.
MAX_PACKET_SAMPLES = 5760


def packet_samples(packet: bytes) -> int:
    """Duration of an Opus packet in 48 kHz samples, from its TOC (RFC 6716 section 3.1).

    ::

         0 1 2 3 4 5 6 7
        +-+-+-+-+-+-+-+-+
        | config  |s| c |   c: 0 one frame, 1 and 2 two frames,
        +-+-+-+-+-+-+-+-+      3 an arbitrary count in the next byte's low 6 bits

    Raises ValueError for an empty packet or a code-3 packet without its count byte.
    """
    if not packet:
        raise ValueError("Opus packet truncated: no TOC byte")
    toc = packet[0]
    code = toc & 0x03
    if code == 0:
        frames = 1
    elif code < 3:
        frames = 2
    else:
        if len(packet) < 2:
            raise ValueError("Opus code-3 packet truncated: no frame count byte")
        frames = packet[1] & 0x3F
    return frames * _FRAME_SAMPLES[toc >> 3]


def padded_to(packet: bytes, size: int) -> bytes:
    """``packet`` made ``size`` bytes long with Opus padding (RFC 6716 section 3.2.5),
    or ``packet`` itself when it is that long already, or too close to it (the
    smallest padding adds two bytes, one to a code-3 packet).

    The padding is the code-3 kind, which any decoder skips: a code-0, 1 or 2
    packet becomes the code-3 packet of the same frames (the same TOC
    configuration, so the same duration and audio)::

        | TOC, c=3 | v p M | padding length | (code 2: first frame's length) | frames | zeros |

    ``p`` says padding follows the frame count byte: its length is coded as
    bytes of 255 (254 bytes each, and another length byte follows) and a last
    byte 0..254. A code-3 packet without padding gets some; one with padding
    already is left alone. ValueError for a packet too short to be Opus.
    """
    if not packet:
        raise ValueError("Opus packet truncated: no TOC byte")
    code = packet[0] & 0x03
    if code == 3:
        if len(packet) < 2:
            raise ValueError("Opus code-3 packet truncated: no frame count byte")
        if packet[1] & 0x40:
            return packet  # padded already
        count_byte = packet[1] | 0x40
        frames = packet[2:]
    elif code == 0:
        count_byte = 0x40 | 1  # CBR, padded, one frame
        frames = packet[1:]
    elif code == 1:
        count_byte = 0x40 | 2  # CBR, padded, two frames of equal size
        frames = packet[1:]
    else:  # code 2: two frames, the first one's length coded as in code 3 (VBR)
        count_byte = 0x80 | 0x40 | 2
        frames = packet[1:]
    # size = TOC + count byte + (n + 1) length bytes + frames + padding
    extra = size - 2 - len(frames)  # the padding and its length bytes
    if extra < 1:
        return packet
    n = -(-extra // 255) - 1  # bytes of 255: each carries 254 bytes of padding
    padding = extra - n - 1
    lengths = b"\xff" * n + bytes((padding - 254 * n,))
    toc = (packet[0] & 0xFC) | 3
    return bytes((toc, count_byte)) + lengths + frames + bytes(padding)


# -- pages -----------------------------------------------------------------------------


def _page(
    header_type: int, granule: int, serial: int, sequence: int, lacing: bytes, body: bytes
) -> bytes:
    header = _HEADER.pack(b"OggS", 0, header_type, granule, serial, sequence, 0, len(lacing))
    page = header + lacing + body
    return page[:22] + struct.pack("<I", ogg_crc(page)) + page[26:]


class OggWriter:
    """Paginates one logical Ogg stream (one serial number); returns page bytes.

    ``headers()`` gives the OpusHead and OpusTags pages. ``write(packet,
    granule)`` adds an audio packet whose end is at ``granule`` and returns
    the pages completed by it (often ``b""``): a page is closed once it holds
    ``packets_per_page`` packets, but only emitted when the next packet
    arrives, so that :meth:`close` can always put the EOS flag on a page
    that carries audio. ``flush()`` emits what is pending without EOS.

    A writer whose pages did not all reach their file (a disk that filled)
    goes back with ``rewind(mark)`` to a ``mark()`` taken when the pages
    emitted until then were written: the open page and the pages emitted
    since are forgotten, and the next page gets the next sequence number
    of the file, so the stream stays gapless (RFC 3533: a gap in the page
    sequence means lost data).
    """

    def __init__(self, serial: int, *, packets_per_page: int = 50) -> None:
        if not 1 <= packets_per_page <= 255:
            raise ValueError(f"packets_per_page must be 1..255, got {packets_per_page}")
        self.serial = serial & 0xFFFFFFFF
        self.packets_per_page = packets_per_page
        self.sequence = 0
        self.granule = 0
        self.packets = 0
        self._lacing = bytearray()
        self._body: list[bytes] = []
        self._pending = 0  # packets on the open page
        self._continued = False  # the open page starts with the rest of a packet
        self._closed = False
        self._emitted_granule = 0  # of the last page emitted that completes a packet

    def headers(self, head: bytes, tags: bytes) -> bytes:
        """The BOS page (OpusHead alone) and the OpusTags page(s)."""
        if self.sequence != 0:
            raise RuntimeError("headers() must come first")
        out = self._packet_pages(head, 0, FIRST_PAGE)
        out += self._packet_pages(tags, 0, 0)
        return out

    def _packet_pages(self, packet: bytes, granule: int, flags: int) -> bytes:
        """``packet`` alone on its own page(s) (header packets)."""
        out = b""
        position = 0
        first = True
        while True:
            chunk = packet[position : position + 255 * _MAX_SEGMENTS]
            position += len(chunk)
            full = len(chunk) // 255
            done = position >= len(packet) and len(chunk) < 255 * _MAX_SEGMENTS
            lacing = b"\xff" * full + (bytes((len(chunk) % 255,)) if done else b"")
            header_type = (flags if first else 0) | (0 if first else CONTINUED)
            out += _page(
                header_type, granule if done else -1, self.serial, self.sequence, lacing, chunk
            )
            self.sequence += 1
            first = False
            if done:
                return out

    def write(self, packet: bytes, granule: int) -> bytes:
        """Add one audio packet ending at ``granule``; the pages completed, if any."""
        if self._closed:
            raise RuntimeError("the Ogg stream is closed")
        out = b""
        if self._pending >= self.packets_per_page:
            out = self._emit(0)
        size = len(packet)
        segments = size // 255 + 1
        if len(self._lacing) + segments > _MAX_SEGMENTS and self._pending:
            out += self._emit(0)
        # A packet longer than what is left of the page continues on the next.
        position = 0
        while len(self._lacing) + (size - position) // 255 + 1 > _MAX_SEGMENTS:
            room = _MAX_SEGMENTS - len(self._lacing)
            self._lacing += b"\xff" * room
            self._body.append(packet[position : position + 255 * room])
            position += 255 * room
            out += self._emit(0, granule=-1)
            self._continued = True
        rest = size - position
        self._lacing += b"\xff" * (rest // 255) + bytes((rest % 255,))
        self._body.append(packet[position:])
        self._pending += 1
        self.granule = granule
        self.packets += 1
        return out

    def _emit(self, flags: int, granule: int | None = None) -> bytes:
        if granule is None:
            granule = self.granule
        if not any(value < 255 for value in self._lacing):
            granule = -1  # no packet completes on this page (RFC 3533 section 6)
        header_type = flags | (CONTINUED if self._continued else 0)
        page = _page(
            header_type,
            granule,
            self.serial,
            self.sequence,
            bytes(self._lacing),
            b"".join(self._body),
        )
        self.sequence += 1
        if granule != -1:
            self._emitted_granule = granule
        self._lacing.clear()
        self._body.clear()
        self._pending = 0
        self._continued = False
        return page

    def mark(self) -> tuple[int, int, int]:
        """Where the stream stands once the pages emitted so far are written:
        (next sequence number, granule position, packets on those pages),
        for :meth:`rewind`. Raises RuntimeError between the pages of a
        packet longer than :data:`MAX_PAGE_PACKET` (none can be gone back to there)."""
        if self._continued:
            raise RuntimeError("a packet continues on the open page")
        return (self.sequence, self._emitted_granule, self.packets - self._pending)

    def rewind(self, mark: tuple[int, int, int]) -> None:
        """Back to ``mark``: the open page and every page emitted after it are
        forgotten (they never reached the file); the next page emitted takes
        the marked sequence number and the granule position goes on from there."""
        self.sequence, self._emitted_granule, self.packets = mark
        self.granule = self._emitted_granule
        self._lacing.clear()
        self._body.clear()
        self._pending = 0
        self._continued = False

    def flush(self) -> bytes:
        """Emit the open page now (empty when nothing is pending)."""
        if not self._pending:
            return b""
        return self._emit(0)

    def close(self) -> bytes:
        """The last page, with the EOS flag; idempotent (``b""`` after the first call).

        The open page carries the flag. When no audio packet was ever
        written, an empty EOS page ends the stream (allowed by RFC 3533,
        though such a stream has no audio).
        """
        if self._closed:
            return b""
        self._closed = True
        return self._emit(LAST_PAGE)


# -- reading -----------------------------------------------------------------------------


@dataclass(frozen=True)
class OggPage:
    """One parsed page; ``segments`` are the lacing values."""

    header_type: int
    granule: int
    serial: int
    sequence: int
    segments: bytes
    body: bytes
    offset: int  # where the page starts in the input


def parse_pages(data: bytes) -> Iterator[OggPage]:
    """Parse consecutive pages (RFC 3533 section 6; layout in the module docstring).

    Checks the capture pattern, version, lengths and CRC. Raises
    ValueError("... truncated") for a page cut short and ValueError for
    anything else malformed; stops cleanly at the end of ``data``.
    """
    position = 0
    size = len(data)
    while position < size:
        if size - position < _HEADER.size:
            raise ValueError(f"Ogg page at {position} truncated (header)")
        magic, version, header_type, granule, serial, sequence, crc, count = _HEADER.unpack_from(
            data, position
        )
        if magic != b"OggS":
            raise ValueError(f"no Ogg capture pattern at {position}")
        if version != 0:
            raise ValueError(f"Ogg page at {position} has version {version}, not 0")
        start = position + _HEADER.size
        segments = data[start : start + count]
        if len(segments) < count:
            raise ValueError(f"Ogg page at {position} truncated (segment table)")
        length = sum(segments)
        end = start + count + length
        if end > size:
            raise ValueError(f"Ogg page at {position} truncated (body)")
        page = bytes(data[position:end])
        if ogg_crc(page[:22] + b"\0\0\0\0" + page[26:]) != crc:
            raise ValueError(f"Ogg page at {position} has a bad CRC")
        yield OggPage(
            header_type, granule, serial, sequence, segments, page[27 + count :], position
        )
        position = end


def read_packets(data: bytes) -> Iterator[tuple[bytes, OggPage]]:
    """Reassemble the packets of a single-stream Ogg file: (packet, page it ends on)."""
    partial = b""
    for page in parse_pages(data):
        if partial and not page.header_type & CONTINUED:
            raise ValueError(f"page {page.sequence} drops an unfinished packet")
        position = 0
        for lacing in page.segments:
            partial += page.body[position : position + lacing]
            position += lacing
            if lacing < 255:
                yield partial, page
                partial = b""
    if partial:
        raise ValueError("Ogg stream truncated inside a packet")
