# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Compiled levels and slot ranking; same API and results as :mod:`sfu._mix_py`.

Runs once per incoming speaker packet. See the Python reference for the
documentation of each name.
"""

__all__ = ["NO_LEVEL", "SlotMap", "read_audio_level"]

cdef enum:
    MAX_SLOTS = 16

NO_LEVEL = -1
NEVER = -1.0e18
cdef double _NEVER = -1.0e18


cpdef int read_audio_level(const unsigned char[:] packet, int extension_id) noexcept:
    cdef Py_ssize_t size = packet.shape[0]
    cdef Py_ssize_t position, end
    cdef int profile, header, element_id, length
    if extension_id <= 0 or size < 12 or not (packet[0] & 0x10):
        return -1
    position = 12 + 4 * (packet[0] & 0x0F)
    if position + 4 > size:
        return -1
    profile = packet[position] << 8 | packet[position + 1]
    end = position + 4 + 4 * (packet[position + 2] << 8 | packet[position + 3])
    if end > size:
        return -1
    position += 4
    if profile == 0xBEDE:
        while position < end:
            header = packet[position]
            if header == 0:
                position += 1
                continue
            element_id = header >> 4
            length = (header & 0x0F) + 1
            if element_id == 15:
                return -1
            if element_id == extension_id:
                if position + 1 < end:
                    return packet[position + 1]
                return -1
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
                return -1
            position += 2 + length
    return -1


cdef class SlotMap:
    cdef readonly int slots
    cdef readonly int threshold
    cdef readonly double hold
    cdef long _holder[MAX_SLOTS]
    cdef double _last_active[MAX_SLOTS]

    def __init__(self, int slots, *, int threshold=60, double hold=1.0):
        if not 1 <= slots <= MAX_SLOTS:
            raise ValueError(f"slots must be between 1 and 16, got {slots}")
        if not 0 <= threshold <= 127:
            raise ValueError(f"threshold must be a -dBov level in 0..127, got {threshold}")
        if hold < 0:
            raise ValueError(f"hold must be >= 0 seconds, got {hold}")
        self.slots = slots
        self.threshold = threshold
        self.hold = hold
        cdef int slot
        for slot in range(MAX_SLOTS):
            self._holder[slot] = -1
            self._last_active[slot] = _NEVER

    cpdef int update(self, long speaker, int level, double now):
        cdef bint active = level < 0 or (level & 0x7F) <= self.threshold
        cdef int free = -1
        cdef int slot, quietest
        cdef long holder
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
            self._last_active[free] = now if active else _NEVER
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

    cpdef int remove(self, long speaker):
        cdef int slot
        for slot in range(self.slots):
            if self._holder[slot] == speaker:
                self._holder[slot] = -1
                self._last_active[slot] = _NEVER
                return slot
        return -1

    cpdef int slot_of(self, long speaker):
        cdef int slot
        for slot in range(self.slots):
            if self._holder[slot] == speaker:
                return slot
        return -1

    def holders(self):
        return [self._holder[slot] for slot in range(self.slots)]
