"""Pure-Python reference for :mod:`sfu._detector`: the active-speaker detector.

The compiled module has the same names and gives the same results; the
tests run both against the same cases. Everything here runs once per
incoming speaker packet, never per receiver.
"""

from __future__ import annotations

import math
import operator
from typing import Any

__all__ = ["ActiveSpeakerDetector"]

#: "Last active" of a holder that has not spoken since it took its slot.
NEVER = -1.0e18


FRAME = 0.02

#: Lowest activity score: scores are divided by one another and logged.
MIN_SCORE = 1.0e-10

#: Poisson rates of the activity model for the immediate, medium and long scales
#: (Volfin & Cohen 2013, the values used by Jitsi and mediasoup).
LAMBDAS = (0.78, 24.0, 47.0)

#: A speaker that sent no level for this many frames is fed silence from then on
#: (it stopped sending: muted at the client, DTX, or lost).
IDLE_FRAMES = 2

#: Noise floor of a speaker that sent no level yet (above any loudness).
UNKNOWN_FLOOR = 255

#: Upper bounds of the tunables, so the per-speaker history stays small.
MAX_HISTORY = 255
MAX_SPEAKER = (1 << 62) - 1


def activity_scores(bins: int, rate: float) -> list[float]:
    """Speech activity score of ``v`` active bins out of ``bins``, for every ``v``.

    The log-likelihood ratio of Volfin & Cohen (2013), eq. 5: speech is
    modelled as a binomial over the ``bins`` (p = 0.5) against an
    exponential prior of rate ``rate`` on the number of active bins::

        score(v) = log C(bins, v) + v log p + (bins - v) log (1 - p) - log rate + rate v

    clamped below at :data:`MIN_SCORE`. Computed once per detector with
    Python floats, so both implementations share the exact same table.
    """
    half = math.log(0.5)
    table = []
    for active in range(bins + 1):
        score = (
            math.log(math.comb(bins, active))
            + active * half
            + (bins - active) * half
            - math.log(rate)
            + rate * active
        )
        table.append(score if score > MIN_SCORE else MIN_SCORE)
    return table


def relative_scores(table: list[float]) -> list[list[float]]:
    """``log(table[a] / table[b])``: how much ``a`` active bins beat ``b``."""
    return [[math.log(a / b) for b in table] for a in table]


def validate_detector(
    slots: int,
    interval: float,
    c1: float,
    c2: float,
    c3: float,
    hold: float,
    n1: int,
    n2: int,
    n3: int,
    medium_threshold: int,
    long_threshold: int,
    floor_window: float,
    margin: int = 10,
) -> None:
    """Raise ``ValueError`` naming the first bad detector setting."""
    for name, count in (
        ("slots", slots),
        ("n1", n1),
        ("n2", n2),
        ("n3", n3),
        ("medium_threshold", medium_threshold),
        ("long_threshold", long_threshold),
        ("margin", margin),
    ):
        if not isinstance(count, int) or isinstance(count, bool):
            raise ValueError(f"{name} must be an integer, got {count!r}")
    if not 1 <= slots <= 16:
        raise ValueError(f"slots must be between 1 and 16, got {slots}")
    if not 0.005 <= interval <= 5.0:
        raise ValueError(f"interval must be between 0.005 and 5 seconds, got {interval}")
    for name, value in (("c1", c1), ("c2", c2), ("c3", c3)):
        if not math.isfinite(value):
            raise ValueError(f"{name} must be a finite number, got {value}")
    if not 0.0 <= hold <= 3600.0:
        raise ValueError(f"hold must be between 0 and 3600 seconds, got {hold}")
    if not 2 <= n1 <= 127:
        raise ValueError(f"n1 (level bins) must be between 2 and 127, got {n1}")
    if n2 < 1 or n3 < 1 or n2 * n3 > MAX_HISTORY:
        raise ValueError(
            f"n2 and n3 must be >= 1 with n2 * n3 <= {MAX_HISTORY} frames, got {n2} and {n3}"
        )
    top = 127 // ((127 + n1 - 1) // n1)
    if not 0 <= medium_threshold < top:
        raise ValueError(
            f"medium_threshold must be a level bin in 0..{top - 1} for n1={n1}, "
            f"got {medium_threshold}"
        )
    if not 0 <= long_threshold < n2:
        raise ValueError(f"long_threshold must be in 0..{n2 - 1} for n2={n2}, got {long_threshold}")
    if not 0 <= margin <= 127:
        raise ValueError(f"margin must be a level difference in 0..127 dB, got {margin}")
    if not 0.1 <= floor_window <= 600.0:
        raise ValueError(f"floor_window must be between 0.1 and 600 seconds, got {floor_window}")


def speaker_key(speaker: object) -> int:
    """``speaker`` as an id the detector can track, -1 when it is not one
    (not an integer, or outside 0..:data:`MAX_SPEAKER`)."""
    try:
        key = operator.index(speaker)  # type: ignore[arg-type]
    except TypeError:
        return -1
    return key if 0 <= key <= MAX_SPEAKER else -1


def check_speaker(speaker: object) -> int:
    """``speaker`` as an id to track; ValueError when it cannot be one."""
    key = speaker_key(speaker)
    if key < 0:
        raise ValueError(f"speaker must be an integer in 0..2**62-1, got {speaker!r}")
    return key


class ActiveSpeakerDetector:
    """Dominant speaker, ranked top speakers and their slots, from audio levels.

    The dominant speaker follows Volfin & Cohen, *Dominant Speaker
    Identification for Multipoint Videoconferencing* (2013), over RFC 6464
    levels as Jitsi's ``DominantSpeakerIdentification`` and mediasoup's
    ``ActiveSpeakerObserver`` apply it:

    * every packet's level (-dBov, the V bit ignored) becomes a loudness
      ``127 - level`` in a history of ``n2 * n3`` frames (one per packet,
      20 ms; a speaker that stops sending is fed silence);
    * a per-speaker noise floor is the lowest loudness received, raised
      slowly (geometric mean with the lowest of each ``floor_window``
      seconds); a frame less than ``margin`` dB above it counts as
      silence, so constant background noise never looks like speech.
      Unlike Jitsi, digital silence (127 -dBov) is a floor like any other:
      otherwise a client that sends 127 between words gets its quietest
      *speech* as floor and half its speech is ignored;
    * *immediate*: the newest frame's loudness in ``n1`` bins; *medium*:
      how many of the last ``n2`` frames are above ``medium_threshold``
      bins; *long*: how many of the last ``n3`` groups of ``n2`` frames have
      more than ``long_threshold`` such frames. Each count becomes an
      activity score (:func:`activity_scores`);
    * every ``interval`` seconds, a speaker replaces the dominant one when
      ``log(score / dominant's score)`` exceeds ``c1``, ``c2`` and ``c3`` on
      the three scales; among several, the highest medium one wins (then
      the lowest speaker id). With no dominant speaker, the comparison is
      against silence, so a room's silent speaker never becomes dominant.

    Defaults, tuned on the synthetic conversations of
    ``bench/speaker_corpus.py`` (five 150 s conversations, ~100 turn
    changes; figures and the sweep in ``bench/DETECTOR.md``):

    * ``c1, c2, c3 = 3, 2, 0`` and ``n1 = 13`` as published: a negative
      ``c3`` takes over faster after an overlap but lets interjections
      through (0.3-1.3 false switches a minute), larger ones only add
      latency;
    * ``interval = 0.1`` (published 0.3): the decision period is added to
      every switch; 0.3 s gave a median latency of ~0.5 s, 0.1 s gives
      ~0.15 s for a few microseconds per decision;
    * ``n2, n3 = 3, 8`` with ``long_threshold = 2`` (published 5, 10 and
      4): a medium block of 60 ms and a long window of 0.48 s. With the
      published 100 ms blocks and 1 s window, the previous speaker's long
      score takes ~1 s to fade, which is most of the switch latency after
      an overlap; shorter windows still keep a < 300 ms interjection
      (at most 4 active blocks) below a talking speaker's long score;
    * ``margin = 15`` dB (Jitsi: one bin, 10 dB): a constant noise
      fluctuates by about 10 dB from frame to frame above its minimum, so
      one bin let a noisy channel look active and keep the stage;
    * ``floor_window = 15`` s, ``medium_threshold = 7`` bins (about
      -47 dBov) as published; ``hold = 1`` s.

    **Ranking**: every speaker with sound in its history, scored by its mean
    loudness bin over the history (0..1), best first, the dominant speaker
    always first; at most ``slots`` entries.

    **Slots**: a speaker with no slot that sends an active frame (one above
    ``medium_threshold`` bins and its noise floor) takes a free slot at the
    next :meth:`update` (so its first words are forwarded), or else the slot
    of the holder that has been quiet the longest, once that one has been
    quiet for ``hold`` seconds. A speaker that is not talking still takes a
    slot while one is free (a lone speaker, or a constant tone, is heard even
    though its level never rises above its noise floor); such a holder has
    never been active, so it is the first to give its slot up. The dominant
    speaker always has a slot, taking the quietest holder's at once if need
    be, and can never lose it. Holders never move between slots.

    Speakers are non-negative integers. :meth:`level` and :meth:`update`
    take the current time from the caller, in seconds.
    """

    def __init__(
        self,
        slots: int = 3,
        *,
        interval: float = 0.1,
        c1: float = 3,
        c2: float = 2,
        c3: float = 0,
        hold: float = 1.0,
        n1: int = 13,
        n2: int = 3,
        n3: int = 8,
        medium_threshold: int = 7,
        long_threshold: int = 2,
        floor_window: float = 15.0,
        margin: int = 15,
    ) -> None:
        validate_detector(
            slots,
            interval,
            c1,
            c2,
            c3,
            hold,
            n1,
            n2,
            n3,
            medium_threshold,
            long_threshold,
            floor_window,
            margin,
        )
        self.slots = slots
        self.interval = float(interval)
        self.c1, self.c2, self.c3 = float(c1), float(c2), float(c3)
        self.hold = float(hold)
        self.n1, self.n2, self.n3 = n1, n2, n3
        self.medium_threshold = medium_threshold
        self.long_threshold = long_threshold
        self.floor_window = float(floor_window)
        self.margin = margin
        self._bin = (127 + n1 - 1) // n1  # loudness units per bin
        self._top = 127 // self._bin  # highest bin
        self._history = n2 * n3
        self._floor_frames = max(1, int(floor_window / FRAME))
        self._relative = (
            relative_scores(activity_scores(n1, LAMBDAS[0])),
            relative_scores(activity_scores(n2, LAMBDAS[1])),
            relative_scores(activity_scores(n3, LAMBDAS[2])),
        )
        #: The dominant speaker, -1 for none.
        self.dominant = -1
        self._dominant_index = -1
        self._last_decision = NEVER
        self._dirty = False
        # Per speaker, by a dense index (swap-removed, as in the compiled twin).
        self._index: dict[int, int] = {}
        self._ids: list[int] = []
        self._levels: list[list[int]] = []  # loudness ring, 0 silent .. 127 loud
        self._position: list[int] = []  # next write in the ring
        self._last_time: list[float] = []  # of the last level received
        self._credited: list[int] = []  # silent frames fed since then
        self._floor: list[int] = []  # noise floor (loudness)
        self._next_floor: list[int] = []
        self._next_count: list[int] = []
        self._last_active: list[float] = []
        self._slot: list[int] = []
        self._pending: list[bool] = []
        self._requests: list[int] = []  # indices asking for a slot
        # Per slot.
        self._holder = [-1] * slots
        self._holder_index = [-1] * slots
        # The ranking of the last decision.
        self._ranked: list[int] = []
        self._scores: list[float] = []

    # -- membership -----------------------------------------------------------------

    def add(self, speaker: int) -> None:
        """Start tracking ``speaker`` (a no-op when it is already tracked)."""
        speaker = check_speaker(speaker)
        if speaker in self._index:
            return
        self._index[speaker] = len(self._ids)
        self._ids.append(speaker)
        self._levels.append([0] * self._history)
        self._position.append(0)
        self._last_time.append(NEVER)
        self._credited.append(0)
        self._floor.append(UNKNOWN_FLOOR)
        self._next_floor.append(UNKNOWN_FLOOR)
        self._next_count.append(0)
        self._last_active.append(NEVER)
        self._slot.append(-1)
        self._pending.append(False)

    def remove(self, speaker: int) -> None:
        """Forget ``speaker`` at once: off the ranking, its slot and the stage."""
        speaker = speaker_key(speaker)
        index = self._index.pop(speaker, -1)
        if index < 0:
            return
        self._dirty = True
        slot = self._slot[index]
        if slot >= 0:
            self._holder[slot] = -1
            self._holder_index[slot] = -1
        if self.dominant == speaker:
            self.dominant = -1
            self._dominant_index = -1
        if speaker in self._ranked:
            position = self._ranked.index(speaker)
            del self._ranked[position]
            del self._scores[position]
        if self._pending[index]:
            self._requests.remove(index)
        last = len(self._ids) - 1
        if index != last:
            # Move the last speaker into the hole; fix every index pointing at it.
            moved = self._ids[last]
            self._index[moved] = index
            for values in self._columns():
                values[index] = values[last]
            if self._slot[index] >= 0:
                self._holder_index[self._slot[index]] = index
            if self._dominant_index == last:
                self._dominant_index = index
            if self._pending[index]:
                self._requests[self._requests.index(last)] = index
        for values in self._columns():
            values.pop()

    def _columns(self) -> tuple[list[Any], ...]:
        """Every per-speaker list, for moving a speaker's state as a whole."""
        return (
            self._ids,
            self._levels,
            self._position,
            self._last_time,
            self._credited,
            self._floor,
            self._next_floor,
            self._next_count,
            self._last_active,
            self._slot,
            self._pending,
        )

    # -- per packet ---------------------------------------------------------------------

    def level(self, speaker: int, level: int, now: float) -> None:
        """Record one packet's RFC 6464 level byte (``V << 7 | -dBov``); cheap.

        A negative ``level`` (no level in the packet), an unknown speaker and
        a packet older than the speaker's last one are ignored.
        """
        index = self._index.get(speaker, -1)
        if index < 0 or level < 0 or now < self._last_time[index]:
            return
        self._last_time[index] = now
        self._credited[index] = 0
        loudness = 127 - (level & 0x7F)
        position = self._position[index]
        self._levels[index][position] = loudness
        position += 1
        self._position[index] = 0 if position == self._history else position
        self._track_floor(index, loudness)
        if (
            loudness >= self._floor[index] + self.margin
            and loudness // self._bin > self.medium_threshold
        ):
            self._last_active[index] = now
            if self._slot[index] < 0 and not self._pending[index]:
                self._pending[index] = True
                self._requests.append(index)
        elif self._slot[index] < 0 and not self._pending[index] and -1 in self._holder_index:
            # Not talking, but a slot is free: take it (it is the first to go).
            self._pending[index] = True
            self._requests.append(index)

    def _track_floor(self, index: int, loudness: int) -> None:
        floor = self._floor[index]
        if loudness < floor:
            self._floor[index] = loudness
            self._next_floor[index] = UNKNOWN_FLOOR
            self._next_count[index] = 0
            return
        # Lowest level of the current window; at its end the floor moves up to
        # the geometric mean of the two (slowly: it is meant to be a minimum).
        if loudness < self._next_floor[index]:
            self._next_floor[index] = loudness
        self._next_count[index] += 1
        if self._next_count[index] >= self._floor_frames:
            self._floor[index] = int(math.sqrt(max(floor, 1) * self._next_floor[index]))
            self._next_floor[index] = UNKNOWN_FLOOR
            self._next_count[index] = 0

    def update(self, now: float) -> bool:
        """Hand out requested slots; every ``interval``, decide the dominant speaker.

        Cheap when there is nothing to do; call it per packet. True when the
        dominant speaker, the ranking order or a slot holder changed since
        the previous call.
        """
        changed = self._dirty
        self._dirty = False
        if self._requests:
            for index in self._requests:
                self._pending[index] = False
                if self._slot[index] >= 0:
                    continue
                if self._last_active[index] == self._last_time[index]:  # talking now
                    if self._grab(index, now, False):
                        changed = True
                elif self._take_free(index):
                    changed = True
            self._requests.clear()
        if now - self._last_decision >= self.interval:
            self._last_decision = now
            if self._decide(now):
                changed = True
        return changed

    def observe(self, speaker: int, level: int, now: float) -> int:
        """:meth:`level`, :meth:`update` and :meth:`slot_of` in one call."""
        self.level(speaker, level, now)
        self.update(now)
        return self.slot_of(speaker)

    def slot_of(self, speaker: int) -> int:
        """The slot carrying ``speaker``, -1 for none; O(slots)."""
        if speaker < 0:
            return -1  # a free slot's holder is -1: it is nobody's
        for slot in range(self.slots):
            if self._holder[slot] == speaker:
                return slot
        return -1

    def holders(self) -> list[int]:
        """The speaker in each slot, -1 where the slot is free."""
        return list(self._holder)

    def ranking(self) -> list[tuple[int, float]]:
        """``(speaker, score)`` of the top speakers at the last decision, best first."""
        return list(zip(self._ranked, self._scores, strict=True))

    # -- decisions -------------------------------------------------------------------------

    def _take_free(self, index: int) -> bool:
        """Give ``index`` a free slot, if there is one."""
        if -1 not in self._holder_index:
            return False
        slot = self._holder_index.index(-1)
        self._holder[slot] = self._ids[index]
        self._holder_index[slot] = index
        self._slot[index] = slot
        return True

    def _grab(self, index: int, now: float, force: bool) -> bool:
        """Give ``index`` a free slot, or the quietest holder's (after ``hold``)."""
        victim = -1
        for slot in range(self.slots):
            holder = self._holder_index[slot]
            if holder < 0:
                victim = slot
                break
            if holder == self._dominant_index:
                continue
            if (
                victim < 0
                or self._last_active[holder] < self._last_active[self._holder_index[victim]]
            ):
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

    def _decide(self, now: float) -> bool:
        count = len(self._ids)
        history = self._history
        step = self._bin
        n2 = self.n2
        medium_threshold = self.medium_threshold
        long_threshold = self.long_threshold
        immediates = [0] * count
        mediums = [0] * count
        longs = [0] * count
        totals = [0] * count
        for index in range(count):
            levels = self._levels[index]
            last_time = self._last_time[index]
            if last_time != NEVER:
                # Feed silence for the frames a speaker that stopped sending missed
                # (none when the clock went back, as in the compiled twin).
                idle = now - last_time
                if not idle >= 0:
                    idle = 0.0
                due = int(min(idle, 1.0e6) / FRAME) - IDLE_FRAMES
                missing = due - self._credited[index]
                if missing > 0:
                    self._credited[index] = due
                    position = self._position[index]
                    for _ in range(min(missing, history)):
                        levels[position] = 0
                        position += 1
                        if position == history:
                            position = 0
                    self._position[index] = position
            threshold = self._floor[index] + self.margin
            position = self._position[index]
            total = active = group = long = 0
            for age in range(history):
                position = history - 1 if position == 0 else position - 1
                loudness = levels[position]
                value = 0 if loudness < threshold else loudness // step
                total += value
                if age == 0:
                    immediates[index] = value
                if value > medium_threshold:
                    active += 1
                group += 1
                if group == n2:
                    if age < n2:
                        mediums[index] = active
                    if active > long_threshold:
                        long += 1
                    active = group = 0
            longs[index] = long
            totals[index] = total

        # The dominant speaker (or silence, when there is none) against the others.
        dominant = self._dominant_index
        immediate = medium = long = 0
        if dominant >= 0:
            immediate, medium, long = immediates[dominant], mediums[dominant], longs[dominant]
        relative1, relative2, relative3 = self._relative
        best = -1
        best_c2 = self.c2
        for index in range(count):
            if index == dominant:
                continue
            if relative1[immediates[index]][immediate] <= self.c1:
                continue
            c2 = relative2[mediums[index]][medium]
            if c2 <= self.c2 or relative3[longs[index]][long] <= self.c3:
                continue
            if c2 > best_c2 or (best >= 0 and c2 == best_c2 and self._ids[index] < self._ids[best]):
                best = index
                best_c2 = c2
        changed = False
        if best >= 0:
            self.dominant = self._ids[best]
            self._dominant_index = best
            dominant = best
            changed = True

        # Ranking: the dominant speaker first, then by score, then by id.
        scale = float(history * self._top)
        order = sorted(
            (index for index in range(count) if totals[index] > 0 and index != dominant),
            key=lambda index: (-totals[index], self._ids[index]),
        )
        if dominant >= 0:
            order.insert(0, dominant)
        del order[self.slots :]
        ranked = [self._ids[index] for index in order]
        if ranked != self._ranked:
            changed = True
        self._ranked = ranked
        self._scores = [totals[index] / scale for index in order]

        if dominant >= 0 and self._slot[dominant] < 0:
            self._grab(dominant, now, True)
            changed = True
        return changed
