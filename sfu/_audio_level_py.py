"""Pure-Python reference for :mod:`sfu._audio_level`: the RFC 6464 level of an RTP packet.

The compiled module has the same names and gives the same results; the
tests run both against the same cases. It runs once per incoming speaker
packet, never per receiver.
"""

from __future__ import annotations

__all__ = ["NO_LEVEL", "read_audio_level"]

#: Returned by :func:`read_audio_level` when the packet carries no level.
NO_LEVEL = -1


def read_audio_level(packet: bytes, extension_id: int) -> int:
    """Return the RFC 6464 audio-level byte of an RTP packet, or ``NO_LEVEL``.

    The byte is ``V << 7 | level`` where ``level`` is the level in -dBov
    (0 loudest, 127 silence) and ``V`` the voice-activity flag. The
    extension is found in an RFC 8285 header extension block, one-byte
    (profile ``0xBEDE``) or two-byte (profile ``0x100x``) form::

         0                   1                   2                   3
        |V=2|P|X|  CC   |M|     PT      |       sequence number         |
        |                           timestamp                           |
        |                             SSRC                              |
        |                       CSRC list (CC x 32 bits)                |
        |      profile (0xBEDE)         |     length (32-bit words)     |
        |  ID   |  len  |  level byte   | ... more elements, padding    |

    Malformed or truncated extension blocks give ``NO_LEVEL``: a level is
    advisory, so a bad one must never stop the packet from being forwarded.
    """
    size = len(packet)
    if extension_id <= 0 or size < 12 or not packet[0] & 0x10:
        return NO_LEVEL
    position = 12 + 4 * (packet[0] & 0x0F)
    if position + 4 > size:
        return NO_LEVEL
    profile = packet[position] << 8 | packet[position + 1]
    end = position + 4 + 4 * (packet[position + 2] << 8 | packet[position + 3])
    if end > size:
        return NO_LEVEL
    position += 4
    if profile == 0xBEDE:
        while position < end:
            header = packet[position]
            if header == 0:  # padding
                position += 1
                continue
            element_id = header >> 4
            length = (header & 0x0F) + 1
            if element_id == 15:  # reserved: stop parsing (RFC 8285 section 4.2)
                return NO_LEVEL
            if element_id == extension_id:
                if position + 1 < end:
                    return packet[position + 1]
                return NO_LEVEL
            position += 1 + length
    elif profile & 0xFFF0 == 0x1000:
        while position + 1 < end:
            element_id = packet[position]
            if element_id == 0:
                position += 1
                continue
            length = packet[position + 1]
            if element_id == extension_id:
                if length >= 1 and position + 2 < end:
                    return packet[position + 2]
                return NO_LEVEL
            position += 2 + length
    return NO_LEVEL
