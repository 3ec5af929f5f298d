"""A small jitter buffer for the Mixer: one per active speaker, no I/O, no clock.

Packets are pushed as they arrive (RTP sequence number, timestamp, Opus
payload) and pulled once per mixer frame, in sequence order. The buffer

* reorders by sequence number (16-bit, extended across wrap-around, RFC
  3550 appendix A.1), dropping duplicates and packets that arrive after
  their turn (``late``);
* waits for ``depth`` packets (or ``depth`` pulls) before it starts
  playing, so that a packet reordered or delayed by up to ``depth`` frames
  still makes its turn;
* reports a missing packet as :data:`LOST` when its turn comes (the caller
  conceals it: Opus PLC), and after ``max_conceal`` consecutive misses
  goes idle (:data:`EMPTY`: the speaker stopped, was muted or lost its
  slot) and buffers afresh on the next packet;
* on an underrun (nothing buffered at all when a turn comes) conceals the
  frame but keeps waiting for that packet: arriving late, it is played and
  the delay grows by a frame, as a receiver's jitter buffer grows its own.
  Skipped, it would be dropped as late and the delay would never grow back:
  a speaker whose clock runs slow, or jitter past the depth once, would then
  lose a packet at every later spike. If a later packet comes first, the
  frames concealed stood for the lost ones and are not concealed again;
* is bounded: past ``capacity`` packets (a sender bursting, or a stalled
  mixer) the oldest are dropped and play skips ahead (``overflow``);
* keeps its delay near ``depth``: when more than ``depth`` packets stayed
  buffered through a whole :data:`TRIM_WINDOW` of pulls (the packets a
  network stall held back, delivered at once; a sender whose clock runs
  fast), the oldest of the excess are dropped and play skips ahead
  (``trimmed``). Without it a speaker that sends without pauses (no DTX,
  as browsers send) would be heard that much late, for as long as it talks.

Pulls take no time argument: the mixer pulls until it has a frame's 20 ms
(one 20 ms packet, two 10 ms ones; a 60 ms one lasts three frames), so one
pull is one packet of the stream. Timestamps are kept for the caller (DTX
gaps show as timestamp jumps) but do not drive the playout.
"""

from __future__ import annotations

import bisect
from typing import Final

__all__ = ["EMPTY", "LOST", "PACKET", "TRIM_WINDOW", "JitterBuffer"]

#: :meth:`JitterBuffer.pull` outcomes.
PACKET: Final = 0  # the next packet, in order
LOST: Final = 1  # its turn came and it is missing: conceal one frame
EMPTY: Final = 2  # nothing to play (idle or still buffering)

#: Pulls over which the fewest packets buffered must stay above ``depth``
#: before the excess is dropped: a moment's burst of jitter is not a lasting
#: delay. The mixer pulls once per packet it plays: 1 s of 20 ms packets
#: (0.5 s of 10 ms ones, 3 s of 60 ms ones).
TRIM_WINDOW: Final = 50

_RESTART = 3000  # a jump of more sequence numbers than this is a new stream
# While idle, a packet this far below the last one played is a sender that
# started counting again (the Router's rule too), not a late copy.
_IDLE_RESTART = 100


class JitterBuffer:
    """Reorders one speaker's packets; see the module documentation."""

    __slots__ = (
        "_floor",
        "_fewest",
        "_highest",
        "_misses",
        "_next",
        "_payloads",
        "_playing",
        "_sequences",
        "_timestamps",
        "_trim_pulls",
        "_underrun",
        "_waited",
        "capacity",
        "depth",
        "duplicates",
        "late",
        "concealed",
        "max_conceal",
        "overflow",
        "played",
        "trimmed",
    )

    def __init__(self, depth: int = 2, capacity: int = 16, max_conceal: int = 3) -> None:
        if not 1 <= depth <= capacity:
            raise ValueError(f"need 1 <= depth <= capacity, got depth={depth} capacity={capacity}")
        if max_conceal < 0:
            raise ValueError(f"max_conceal must be >= 0, got {max_conceal}")
        self.depth = depth
        self.capacity = capacity
        self.max_conceal = max_conceal
        self._sequences: list[int] = []  # extended sequence numbers, sorted
        self._payloads: dict[int, bytes] = {}
        self._timestamps: dict[int, int] = {}
        self._highest = -1  # highest extended sequence seen, -1 before the first
        self._next = 0  # extended sequence to play next (while playing)
        self._floor = -1  # while idle: one past the last packet played (below it: played)
        self._playing = False
        self._waited = 0  # pulls while buffering
        self._misses = 0  # consecutive LOST
        self._trim_pulls = 0  # pulls in this trim window, while playing
        self._underrun = 0  # frames concealed with nothing buffered, _next still awaited
        self._fewest = capacity  # fewest packets buffered at a pull of this window
        self.played = 0
        self.concealed = 0
        self.late = 0
        self.duplicates = 0
        self.overflow = 0
        self.trimmed = 0

    def __len__(self) -> int:
        return len(self._sequences)

    @property
    def playing(self) -> bool:
        return self._playing

    def reset(self) -> None:
        """Forget everything buffered (a new stream: SSRC change)."""
        self._sequences.clear()
        self._payloads.clear()
        self._timestamps.clear()
        self._highest = -1
        self._floor = -1
        self._playing = False
        self._waited = 0
        self._misses = 0
        self._trim_pulls = 0
        self._underrun = 0
        self._fewest = self.capacity

    def _extend(self, sequence: int) -> int:
        if self._highest < 0:
            return sequence + 0x10000  # room below for reordering before the first
        delta = ((sequence - self._highest + 0x8000) & 0xFFFF) - 0x8000
        return self._highest + delta

    def push(self, sequence: int, timestamp: int, payload: bytes) -> None:
        """Add one packet (16-bit RTP ``sequence``)."""
        extended = self._extend(sequence & 0xFFFF)
        if self._highest >= 0 and abs(extended - self._highest) > _RESTART:
            self.reset()  # the sender restarted its sequence numbers
            extended = self._extend(sequence & 0xFFFF)
        if self._playing:
            if extended < self._next:
                self.late += 1  # its turn has passed
                return
        elif extended < self._floor:
            if self._floor - extended <= _IDLE_RESTART:
                self.late += 1  # a copy of one played before the pause
                return
            self.reset()  # the sender restarted its numbering
            extended = self._extend(sequence & 0xFFFF)
        if extended in self._payloads:
            self.duplicates += 1
            return
        if extended > self._highest:
            self._highest = extended
        bisect.insort(self._sequences, extended)
        self._payloads[extended] = payload
        self._timestamps[extended] = timestamp
        while len(self._sequences) > self.capacity:
            oldest = self._sequences.pop(0)
            del self._payloads[oldest]
            del self._timestamps[oldest]
            self.overflow += 1
            if self._playing:
                self._next = self._sequences[0]

    def pull(self) -> tuple[int, bytes, int]:
        """The next frame's outcome: ``(PACKET, payload, timestamp)``,
        ``(LOST, b"", -1)`` or ``(EMPTY, b"", -1)``."""
        sequences = self._sequences
        if not self._playing:
            if not sequences:
                return EMPTY, b"", -1
            self._waited += 1
            if len(sequences) < self.depth and self._waited < self.depth:
                return EMPTY, b"", -1
            self._playing = True
            self._next = sequences[0]
            self._misses = 0
            self._trim_pulls = 0
            self._fewest = self.capacity
        self._trim(sequences)
        if self._underrun and sequences and sequences[0] > self._next:
            # The frames concealed while nothing was buffered stood for the
            # packets before the first one here (lost, as it now shows): they
            # are not concealed twice (nor counted again by the gap's skip
            # below, whose gap starts after them, as it did before).
            self._next += min(self._underrun, sequences[0] - self._next)
            self._underrun = 0
        if sequences and sequences[0] - self._next > self.capacity:
            # A gap longer than the buffer: concealing all of it would only add delay.
            self.concealed += sequences[0] - self._next
            self._next = sequences[0]
        if sequences and sequences[0] == self._next:
            head = sequences.pop(0)
            self._next += 1
            self._floor = self._next
            self._misses = 0
            self._underrun = 0
            self.played += 1
            return PACKET, self._payloads.pop(head), self._timestamps.pop(head)
        # Its turn came and it is not here (a later one is, or nothing is).
        self._misses += 1
        if not sequences:
            if self._misses > self.max_conceal:
                # Idle. What comes next may be the packet after the last one
                # played: a sender pausing in silence (DTX) numbers on from there.
                self._playing = False
                self._waited = 0
                self._underrun = 0
                return EMPTY, b"", -1
            # Nothing buffered: an underrun, not (yet) a loss. This frame is
            # concealed but the packet is still awaited: arriving late, it is
            # played, and the delay grows by the frame (as NetEq's expand
            # does). Skipped, it would be dropped as late, the delay would
            # never grow back, and a speaker whose clock runs slow, or any
            # jitter after one underrun, would lose packet after packet.
            self._underrun += 1
            self.concealed += 1
            return LOST, b"", -1
        self._next += 1
        self.concealed += 1
        return LOST, b"", -1

    def _trim(self, sequences: list[int]) -> None:
        """At the end of a trim window in which more than ``depth`` packets were
        buffered at every pull, drop the oldest of that excess."""
        if len(sequences) < self._fewest:
            self._fewest = len(sequences)
        self._trim_pulls += 1
        if self._trim_pulls < TRIM_WINDOW:
            return
        excess = self._fewest - self.depth
        self._trim_pulls = 0
        self._fewest = self.capacity
        if excess > 0:
            for oldest in sequences[:excess]:
                del self._payloads[oldest]
                del self._timestamps[oldest]
            del sequences[:excess]
            self.trimmed += excess
            self._next = sequences[0]
