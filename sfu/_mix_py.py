"""Pure-Python reference for :mod:`sfu._mix` (levels and slot ranking).

The compiled module has the same names and gives the same results; the
tests run both against the same cases. Everything here runs once per
incoming speaker packet, never per receiver.
"""

from __future__ import annotations

__all__ = ["NO_LEVEL", "SlotMap", "read_audio_level"]

#: Returned by :func:`read_audio_level` when the packet carries no level.
NO_LEVEL = -1

#: "Last active" of a holder that has not spoken since it took its slot.
NEVER = -1.0e18


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


class SlotMap:
    """Maps the most recently active speakers onto ``slots`` slots.

    A speaker is *active* in a packet whose level is at least as loud as
    ``threshold`` (-dBov; a packet without a level counts as active). A
    speaker with no slot gets a free one at once; when none is free, it
    takes the slot of the holder that has been quiet the longest, but only
    once that holder has been quiet for ``hold`` seconds, so a short pause
    does not lose a slot. A holder keeps its slot while it stays silent
    until someone else needs it.

    Only slot holders have state, so the cost does not grow with the
    number of speakers. Speakers are small non-negative integers.
    """

    def __init__(self, slots: int, *, threshold: int = 60, hold: float = 1.0) -> None:
        if not 1 <= slots <= 16:
            raise ValueError(f"slots must be between 1 and 16, got {slots}")
        if not 0 <= threshold <= 127:
            raise ValueError(f"threshold must be a -dBov level in 0..127, got {threshold}")
        if hold < 0:
            raise ValueError(f"hold must be >= 0 seconds, got {hold}")
        self.slots = slots
        self.threshold = threshold
        self.hold = hold
        self._holder = [-1] * slots
        self._last_active = [NEVER] * slots

    def update(self, speaker: int, level: int, now: float) -> int:
        """Account one packet of ``speaker``; return its slot, or -1 for none."""
        active = level < 0 or (level & 0x7F) <= self.threshold
        free = -1
        for slot in range(self.slots):
            holder = self._holder[slot]
            if holder == speaker:
                if active:
                    self._last_active[slot] = now
                return slot
            if holder < 0 and free < 0:
                free = slot
        if free >= 0:
            self._holder[free] = speaker
            # A silent newcomer holds a free slot but is the first to give it up.
            self._last_active[free] = now if active else NEVER
            return free
        if not active:
            return -1
        quietest = 0
        for slot in range(1, self.slots):
            if self._last_active[slot] < self._last_active[quietest]:
                quietest = slot
        if now - self._last_active[quietest] < self.hold:
            return -1
        self._holder[quietest] = speaker
        self._last_active[quietest] = now
        return quietest

    def remove(self, speaker: int) -> int:
        """Free the slot of ``speaker`` (muted, demoted, gone); return it or -1."""
        for slot in range(self.slots):
            if self._holder[slot] == speaker:
                self._holder[slot] = -1
                self._last_active[slot] = NEVER
                return slot
        return -1

    def slot_of(self, speaker: int) -> int:
        for slot in range(self.slots):
            if self._holder[slot] == speaker:
                return slot
        return -1

    def holders(self) -> list[int]:
        """The speaker in each slot, -1 where the slot is free."""
        return list(self._holder)
