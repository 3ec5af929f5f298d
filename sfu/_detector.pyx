# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Compiled active-speaker detector; same API and results as :mod:`sfu._detector_py`.

Runs once per incoming speaker packet. See the Python reference for the
documentation of each name.
"""

__all__ = ["ActiveSpeakerDetector"]

cdef enum:
    MAX_SLOTS = 16

NEVER = -1.0e18
cdef double _NEVER = -1.0e18

from libc.math cimport sqrt
from libc.stdlib cimport free, malloc, realloc
from libc.string cimport memcpy, memset

from ._detector_py import (
    FRAME as _FRAME_PY,
    IDLE_FRAMES as _IDLE_FRAMES_PY,
    LAMBDAS,
    MAX_SPEAKER as _MAX_SPEAKER_PY,
    UNKNOWN_FLOOR as _UNKNOWN_FLOOR_PY,
    activity_scores,
    check_speaker,
    speaker_key,
    relative_scores,
    validate_detector,
)

cdef double FRAME = _FRAME_PY
cdef long long IDLE_FRAMES = _IDLE_FRAMES_PY
cdef int UNKNOWN_FLOOR = _UNKNOWN_FLOOR_PY
cdef long long MAX_SPEAKER = _MAX_SPEAKER_PY
cdef long long EMPTY = -1


cdef int _resize(void** block, size_t size) except -1:
    """``block[0] = realloc(block[0], size)``; MemoryError (the old block kept) on failure."""
    cdef void* memory = realloc(block[0], size)
    if memory == NULL:
        raise MemoryError()
    block[0] = memory
    return 0


cdef double* _table(list rows) except NULL:
    """Copy a square table of Python floats into C (same doubles, bit for bit)."""
    cdef Py_ssize_t size = len(rows), a, b
    cdef double* table = <double*>malloc(size * size * sizeof(double))
    if table == NULL:
        raise MemoryError()
    for a in range(size):
        for b in range(size):
            table[a * size + b] = rows[a][b]
    return table


cdef class ActiveSpeakerDetector:
    """Compiled twin of :class:`sfu._detector_py.ActiveSpeakerDetector` (same results).

    Per speaker state lives in C arrays indexed densely (swap-removed); the
    speaker id to index map is an open-addressing hash table, so
    :meth:`level` is O(1) and allocates nothing.
    """

    cdef readonly int slots
    cdef readonly double interval, c1, c2, c3, hold, floor_window
    cdef readonly int n1, n2, n3, medium_threshold, long_threshold, margin
    cdef readonly long long dominant
    cdef int _bin, _top, _history, _floor_frames, _dominant_index
    cdef int _w1, _w2, _w3
    cdef double* _relative1
    cdef double* _relative2
    cdef double* _relative3
    cdef double _last_decision
    cdef bint _dirty
    # Per speaker.
    cdef int _count, _capacity
    cdef long long* _ids
    cdef unsigned char* _levels
    cdef int* _position
    cdef double* _last_time
    cdef long long* _credited
    cdef int* _floor
    cdef int* _next_floor
    cdef int* _next_count
    cdef double* _last_active
    cdef int* _slot
    cdef unsigned char* _pending
    cdef int* _requests
    cdef int _request_count
    cdef int* _immediate
    cdef int* _medium
    cdef int* _long
    cdef int* _total
    # Per slot.
    cdef long long _holder[MAX_SLOTS]
    cdef int _holder_index[MAX_SLOTS]
    # Ranking of the last decision.
    cdef long long _ranked[MAX_SLOTS]
    cdef double _scores[MAX_SLOTS]
    cdef int _ranked_count
    # Speaker id -> index.
    cdef long long* _keys
    cdef int* _values
    cdef unsigned long long _mask
    cdef int _shift

    def __cinit__(self):
        self._relative1 = self._relative2 = self._relative3 = NULL
        self._ids = NULL
        self._levels = NULL
        self._keys = NULL
        self._values = NULL
        self._capacity = 0
        self._count = 0

    def __init__(
        self,
        slots=3,
        *,
        double interval=0.1,
        double c1=3,
        double c2=2,
        double c3=0,
        double hold=1.0,
        n1=13,
        n2=3,
        n3=8,
        medium_threshold=7,
        long_threshold=2,
        double floor_window=15.0,
        margin=15,
    ):
        # (The counts untyped here: validate_detector refuses a float, which
        # a C int argument would have truncated.)
        validate_detector(
            slots, interval, c1, c2, c3, hold, n1, n2, n3,
            medium_threshold, long_threshold, floor_window, margin,
        )
        if self._relative1 != NULL:
            raise RuntimeError("ActiveSpeakerDetector is already initialised")
        self.slots = slots
        self.interval = interval
        self.c1, self.c2, self.c3 = c1, c2, c3
        self.hold = hold
        self.n1, self.n2, self.n3 = n1, n2, n3
        self.medium_threshold = medium_threshold
        self.long_threshold = long_threshold
        self.floor_window = floor_window
        self.margin = margin
        self._bin = (127 + n1 - 1) // n1
        self._top = 127 // self._bin
        self._history = n2 * n3
        self._floor_frames = max(1, int(floor_window / FRAME))
        self._w1, self._w2, self._w3 = n1 + 1, n2 + 1, n3 + 1
        self._relative1 = _table(relative_scores(activity_scores(n1, LAMBDAS[0])))
        self._relative2 = _table(relative_scores(activity_scores(n2, LAMBDAS[1])))
        self._relative3 = _table(relative_scores(activity_scores(n3, LAMBDAS[2])))
        self.dominant = -1
        self._dominant_index = -1
        self._last_decision = _NEVER
        self._dirty = False
        self._request_count = 0
        self._ranked_count = 0
        cdef int slot
        for slot in range(MAX_SLOTS):
            self._holder[slot] = -1
            self._holder_index[slot] = -1
        self._grow(8)

    def __dealloc__(self):
        free(self._relative1)
        free(self._relative2)
        free(self._relative3)
        self._free_speakers()

    cdef void _free_speakers(self) noexcept:
        free(self._ids)
        free(self._levels)
        free(self._position)
        free(self._last_time)
        free(self._credited)
        free(self._floor)
        free(self._next_floor)
        free(self._next_count)
        free(self._last_active)
        free(self._slot)
        free(self._pending)
        free(self._requests)
        free(self._immediate)
        free(self._medium)
        free(self._long)
        free(self._total)
        free(self._keys)
        free(self._values)

    cdef int _grow(self, int capacity) except -1:
        """Room for ``capacity`` speakers (arrays and a hash table at most half full)."""
        cdef int old = self._capacity
        cdef int bits = 4
        cdef Py_ssize_t index, size
        while (1 << bits) < 2 * capacity:
            bits += 1
        size = 1 << bits
        # On failure the old block is kept, and freed with the others.
        _resize(<void**>&self._ids, capacity * sizeof(long long))
        _resize(<void**>&self._levels, capacity * self._history)
        _resize(<void**>&self._position, capacity * sizeof(int))
        _resize(<void**>&self._last_time, capacity * sizeof(double))
        _resize(<void**>&self._credited, capacity * sizeof(long long))
        _resize(<void**>&self._floor, capacity * sizeof(int))
        _resize(<void**>&self._next_floor, capacity * sizeof(int))
        _resize(<void**>&self._next_count, capacity * sizeof(int))
        _resize(<void**>&self._last_active, capacity * sizeof(double))
        _resize(<void**>&self._slot, capacity * sizeof(int))
        _resize(<void**>&self._pending, capacity)
        _resize(<void**>&self._requests, capacity * sizeof(int))
        _resize(<void**>&self._immediate, capacity * sizeof(int))
        _resize(<void**>&self._medium, capacity * sizeof(int))
        _resize(<void**>&self._long, capacity * sizeof(int))
        _resize(<void**>&self._total, capacity * sizeof(int))
        self._capacity = capacity
        # A new hash table, refilled from the dense ids.
        free(self._keys)
        free(self._values)
        self._keys = <long long*>malloc(size * sizeof(long long))
        self._values = <int*>malloc(size * sizeof(int))
        if self._keys == NULL or self._values == NULL:
            raise MemoryError()
        for index in range(size):
            self._keys[index] = EMPTY
        self._mask = size - 1
        self._shift = 64 - bits
        for index in range(self._count):
            self._insert(self._ids[index], <int>index)
        return 0

    # -- the id -> index table (open addressing, linear probing) ---------------------

    cdef inline unsigned long long _home(self, long long key) noexcept:
        return (<unsigned long long>key * 0x9E3779B97F4A7C15ULL) >> self._shift

    cdef inline int _find(self, long long key) noexcept:
        cdef unsigned long long position = self._home(key)
        cdef long long found
        if key < 0 or self._keys == NULL:
            # No speaker has a negative id (EMPTY, -1, marks a free bucket);
            # no table: __init__ never ran (a subclass that skipped it).
            return -1
        while True:
            found = self._keys[position]
            if found == key:
                return self._values[position]
            if found == EMPTY:
                return -1
            position = (position + 1) & self._mask

    cdef void _insert(self, long long key, int value) noexcept:
        cdef unsigned long long position = self._home(key)
        while self._keys[position] != EMPTY and self._keys[position] != key:
            position = (position + 1) & self._mask
        self._keys[position] = key
        self._values[position] = value

    cdef void _delete(self, long long key) noexcept:
        cdef unsigned long long hole = self._home(key), position, home
        while self._keys[hole] != key:
            if self._keys[hole] == EMPTY:
                return
            hole = (hole + 1) & self._mask
        # Backward-shift deletion: pull later entries of the run into the hole.
        position = hole
        while True:
            position = (position + 1) & self._mask
            if self._keys[position] == EMPTY:
                break
            home = self._home(self._keys[position])
            if hole <= position:
                if hole < home <= position:
                    continue
            elif hole < home or home <= position:
                continue
            self._keys[hole] = self._keys[position]
            self._values[hole] = self._values[position]
            hole = position
        self._keys[hole] = EMPTY

    # -- membership -----------------------------------------------------------------

    def add(self, speaker_id):
        cdef long long speaker = check_speaker(speaker_id)
        if self._keys == NULL:
            raise RuntimeError("ActiveSpeakerDetector.__init__ was not called")
        if self._find(speaker) >= 0:
            return
        if self._count == self._capacity:
            self._grow(2 * self._capacity)
        cdef int index = self._count
        self._count += 1
        self._ids[index] = speaker
        self._insert(speaker, index)
        memset(&self._levels[index * self._history], 0, self._history)
        self._position[index] = 0
        self._last_time[index] = _NEVER
        self._credited[index] = 0
        self._floor[index] = UNKNOWN_FLOOR
        self._next_floor[index] = UNKNOWN_FLOOR
        self._next_count[index] = 0
        self._last_active[index] = _NEVER
        self._slot[index] = -1
        self._pending[index] = 0

    def remove(self, speaker_id):
        cdef long long speaker = speaker_key(speaker_id)
        cdef int index = self._find(speaker)
        cdef int slot, position, last, request
        if index < 0:
            return
        self._delete(speaker)
        self._dirty = True
        slot = self._slot[index]
        if slot >= 0:
            self._holder[slot] = -1
            self._holder_index[slot] = -1
        if self.dominant == speaker:
            self.dominant = -1
            self._dominant_index = -1
        for position in range(self._ranked_count):
            if self._ranked[position] == speaker:
                self._ranked_count -= 1
                while position < self._ranked_count:
                    self._ranked[position] = self._ranked[position + 1]
                    self._scores[position] = self._scores[position + 1]
                    position += 1
                break
        if self._pending[index]:
            for request in range(self._request_count):
                if self._requests[request] == index:
                    self._request_count -= 1
                    while request < self._request_count:
                        self._requests[request] = self._requests[request + 1]
                        request += 1
                    break
        last = self._count - 1
        if index != last:
            self._ids[index] = self._ids[last]
            self._insert(self._ids[index], index)
            memcpy(
                &self._levels[index * self._history],
                &self._levels[last * self._history],
                self._history,
            )
            self._position[index] = self._position[last]
            self._last_time[index] = self._last_time[last]
            self._credited[index] = self._credited[last]
            self._floor[index] = self._floor[last]
            self._next_floor[index] = self._next_floor[last]
            self._next_count[index] = self._next_count[last]
            self._last_active[index] = self._last_active[last]
            self._slot[index] = self._slot[last]
            self._pending[index] = self._pending[last]
            if self._slot[index] >= 0:
                self._holder_index[self._slot[index]] = index
            if self._dominant_index == last:
                self._dominant_index = index
            if self._pending[index]:
                for request in range(self._request_count):
                    if self._requests[request] == last:
                        self._requests[request] = index
                        break
        self._count = last

    # -- per packet ---------------------------------------------------------------------

    cpdef void level(self, long long speaker, int level, double now):
        cdef int index = self._find(speaker)
        cdef int loudness, position
        if index < 0 or level < 0 or now < self._last_time[index]:
            return
        self._last_time[index] = now
        self._credited[index] = 0
        loudness = 127 - (level & 0x7F)
        position = self._position[index]
        self._levels[index * self._history + position] = <unsigned char>loudness
        position += 1
        self._position[index] = 0 if position == self._history else position
        self._track_floor(index, loudness)
        if (
            loudness >= self._floor[index] + self.margin
            and loudness // self._bin > self.medium_threshold
        ):
            self._last_active[index] = now
            if self._slot[index] < 0 and not self._pending[index]:
                self._pending[index] = 1
                self._requests[self._request_count] = index
                self._request_count += 1
        elif self._slot[index] < 0 and not self._pending[index] and self._free_slot() >= 0:
            # Not talking, but a slot is free: take it (it is the first to go).
            self._pending[index] = 1
            self._requests[self._request_count] = index
            self._request_count += 1

    cdef inline int _free_slot(self) noexcept:
        cdef int slot
        for slot in range(self.slots):
            if self._holder_index[slot] < 0:
                return slot
        return -1

    cdef bint _take_free(self, int index) noexcept:
        cdef int slot = self._free_slot()
        if slot < 0:
            return False
        self._holder[slot] = self._ids[index]
        self._holder_index[slot] = index
        self._slot[index] = slot
        return True

    cdef inline void _track_floor(self, int index, int loudness) noexcept:
        cdef int floor = self._floor[index]
        if loudness < floor:
            self._floor[index] = loudness
            self._next_floor[index] = UNKNOWN_FLOOR
            self._next_count[index] = 0
            return
        if loudness < self._next_floor[index]:
            self._next_floor[index] = loudness
        self._next_count[index] += 1
        if self._next_count[index] >= self._floor_frames:
            self._floor[index] = <int>sqrt(
                <double>(max(floor, 1) * self._next_floor[index])
            )
            self._next_floor[index] = UNKNOWN_FLOOR
            self._next_count[index] = 0

    cpdef bint update(self, double now):
        cdef bint changed = self._dirty
        cdef int request, index
        self._dirty = False
        if self._request_count:
            for request in range(self._request_count):
                index = self._requests[request]
                self._pending[index] = 0
                if self._slot[index] >= 0:
                    continue
                if self._last_active[index] == self._last_time[index]:  # talking now
                    if self._grab(index, now, False):
                        changed = True
                elif self._take_free(index):
                    changed = True
            self._request_count = 0
        if now - self._last_decision >= self.interval:
            self._last_decision = now
            if self._decide(now):
                changed = True
        return changed

    cpdef int observe(self, long long speaker, int level, double now):
        self.level(speaker, level, now)
        self.update(now)
        return self.slot_of(speaker)

    cpdef int slot_of(self, long long speaker) noexcept:
        cdef int slot
        if speaker < 0:
            return -1  # a free slot's holder is -1: it is nobody's
        for slot in range(self.slots):
            if self._holder[slot] == speaker:
                return slot
        return -1

    def holders(self):
        return [self._holder[slot] for slot in range(self.slots)]

    def ranking(self):
        return [(self._ranked[position], self._scores[position])
                for position in range(self._ranked_count)]

    # -- decisions -------------------------------------------------------------------------

    cdef bint _grab(self, int index, double now, bint force) noexcept:
        cdef int victim = -1, slot, holder
        for slot in range(self.slots):
            holder = self._holder_index[slot]
            if holder < 0:
                victim = slot
                break
            if holder == self._dominant_index:
                continue
            if victim < 0 or self._last_active[holder] < self._last_active[
                self._holder_index[victim]
            ]:
                victim = slot
        if victim < 0:
            return False
        holder = self._holder_index[victim]
        if holder >= 0:
            if not force and now - self._last_active[holder] < self.hold:
                return False
            self._slot[holder] = -1
        self._holder[victim] = self._ids[index]
        self._holder_index[victim] = index
        self._slot[index] = victim
        return True

    cdef inline bint _better(self, int a, int b) noexcept:
        """Ranking order: more sound first, then the lower id."""
        return self._total[a] > self._total[b] or (
            self._total[a] == self._total[b] and self._ids[a] < self._ids[b]
        )

    cdef bint _decide(self, double now) noexcept:
        cdef int count = self._count, history = self._history, step = self._bin
        cdef int n2 = self.n2, medium_threshold = self.medium_threshold
        cdef int long_threshold = self.long_threshold
        cdef int index, position, threshold, total, active, group, longs
        cdef int age, loudness, value, dominant, immediate, medium, long_
        cdef int best, previous, chosen, slot
        cdef long long due, missing, fill
        cdef double c2, best_c2, scale, idle
        cdef unsigned char* levels
        cdef bint changed = False
        for index in range(count):
            levels = &self._levels[index * history]
            if self._last_time[index] != _NEVER:
                idle = now - self._last_time[index]
                if idle > 1.0e6:
                    idle = 1.0e6
                elif not idle >= 0:  # (a clock gone back: no frames due; a double
                    idle = 0         # past long long's range would be undefined)
                due = <long long>(idle / FRAME) - IDLE_FRAMES
                missing = due - self._credited[index]
                if missing > 0:
                    self._credited[index] = due
                    position = self._position[index]
                    fill = missing if missing < history else history
                    while fill > 0:
                        levels[position] = 0
                        position += 1
                        if position == history:
                            position = 0
                        fill -= 1
                    self._position[index] = position
            threshold = self._floor[index] + self.margin
            position = self._position[index]
            total = active = group = longs = 0
            for age in range(history):
                position = history - 1 if position == 0 else position - 1
                loudness = levels[position]
                value = 0 if loudness < threshold else loudness // step
                total += value
                if age == 0:
                    self._immediate[index] = value
                if value > medium_threshold:
                    active += 1
                group += 1
                if group == n2:
                    if age < n2:
                        self._medium[index] = active
                    if active > long_threshold:
                        longs += 1
                    active = group = 0
            self._long[index] = longs
            self._total[index] = total

        dominant = self._dominant_index
        immediate = medium = long_ = 0
        if dominant >= 0:
            immediate = self._immediate[dominant]
            medium = self._medium[dominant]
            long_ = self._long[dominant]
        best = -1
        best_c2 = self.c2
        for index in range(count):
            if index == dominant:
                continue
            if self._relative1[self._immediate[index] * self._w1 + immediate] <= self.c1:
                continue
            c2 = self._relative2[self._medium[index] * self._w2 + medium]
            if c2 <= self.c2 or self._relative3[self._long[index] * self._w3 + long_] <= self.c3:
                continue
            if c2 > best_c2 or (
                best >= 0 and c2 == best_c2 and self._ids[index] < self._ids[best]
            ):
                best = index
                best_c2 = c2
        if best >= 0:
            self.dominant = self._ids[best]
            self._dominant_index = best
            dominant = best
            changed = True

        # Ranking by selection (slots is small): dominant, then by _better.
        scale = <double>(history * self._top)
        chosen = 0
        previous = -1
        if dominant >= 0:
            changed |= chosen >= self._ranked_count or self._ranked[chosen] != self._ids[dominant]
            self._ranked[chosen] = self._ids[dominant]
            self._scores[chosen] = self._total[dominant] / scale
            chosen += 1
        while chosen < self.slots:
            best = -1
            for index in range(count):
                if index == dominant or self._total[index] <= 0:
                    continue
                if previous >= 0 and not self._better(previous, index):
                    continue
                if best < 0 or self._better(index, best):
                    best = index
            if best < 0:
                break
            changed |= chosen >= self._ranked_count or self._ranked[chosen] != self._ids[best]
            self._ranked[chosen] = self._ids[best]
            self._scores[chosen] = self._total[best] / scale
            chosen += 1
            previous = best
        if chosen != self._ranked_count:
            changed = True
        self._ranked_count = chosen

        if dominant >= 0 and self._slot[dominant] < 0:
            self._grab(dominant, now, True)
            changed = True
        return changed
