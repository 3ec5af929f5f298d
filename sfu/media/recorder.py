"""Recording a room to Ogg/Opus files (RFC 7845).

``recorder = await room.record("talk.opus")`` writes the room mix, as the
Mixer encodes it, until ``await recorder.stop()``. With
``per_speaker=True`` each speaker's own packets also go to a file of their
own, ``talk-<identity>.opus`` beside it, *without transcoding*: the payloads
are the bytes the speaker sent, taken from the Router's tap (so a speaker
is recorded while it is forwarded: unmuted and holding a slot).

Every file starts at the moment ``record()`` was called and ends when
``stop()`` is called, so the tracks line up and each one lasts the wall
time of the recording:

* the mix file gets one 20 ms packet per mixer frame (the mixer catches up
  after a stall, see :mod:`sfu.media.mixer`; frames it skips after a longer
  one are written as silence, at most :data:`MAX_GAP_FILL` seconds);
* a speaker file places each packet by its RTP timestamp: the first one at
  the wall-clock offset since the start, the next ones by timestamp
  difference (a jump larger than a minute or disagreeing with the wall
  clock by more than a second, e.g. a new SSRC, is placed by the wall clock
  again). Time without packets (before the first one, DTX, a lost slot, a
  mute, after the last one) is filled with Opus silence (20 ms frames, six
  to a packet, and shorter ones for the rest of a gap, e.g. a lost 10 ms
  packet), so granule positions (RFC 7845 section 4) always count real
  time. A file never runs more than about a second (and a packet) ahead of
  the wall clock (a sender whose clock runs fast): past that, that
  speaker's packets are dropped, counted in ``ahead``, until it is back
  within the second (a packet now and then at 0.5 % fast). A stream more
  than a second behind it is re-placed by it once that has lasted a second
  (a slow clock), so a burst after a network stall shorter than
  ``QUIET_AFTER`` is written whole; after a longer pause (filled as quiet)
  the next packet is placed by the wall clock at once. A speaker quiet for
  more than two seconds is filled once a second, up to half a second ago, from
  the mix's frames (so a long mute costs the media
  path nothing when it ends); a speaker first heard long after the start
  gets that silence at its first packet (~40-130 ms per hour of recording
  before it, once). The one exception to "the files line up": a stall of
  the whole process longer than :data:`MAX_GAP_FILL` (suspended for ten
  minutes), after which the mix file is shorter than the speaker files by
  the rest. Packets
  arriving with an older timestamp than one already written are dropped
  and counted in ``late`` (all but those less than 2.5 ms older: a sender
  stamping from its capture clock is a sample or two off, and those go on
  in place), unless two in a row, more than a second back,
  show that the sender restarted its numbering: then the stream is placed
  by the wall clock again.

A speaker file's pre-skip is 0. RFC 7845 section 4.2 recommends 80 ms
for a stream cut mid-way, so that the decoder converges before output
starts; here the speaker's packets follow silence frames, wherever they
start, so a pre-skip at the head of the file would not help (the decoder
meets them as a receiver joining mid-stream does), and tools that report
the container duration from granule positions alone (FFmpeg) would report
it 80 ms too long. For the same reason the mix file keeps its encoder's own
pre-skip when the recording starts while the mixer already runs (a live
stream or a mixed listener started it): it then begins mid-stream, and its
first ~80 ms are decoded before the decoder has converged (the live stream,
which no tool measures by its granules, gives a late client a run-up
instead).

Stopping writes the end-of-stream page and closes the files; a room that
closes stops its recorders.

A file the disk will not take (full, read-only: the file cannot be made,
or a write fails) pauses, the mix file as a speaker's; the recording and
its other files go on. Only whole pages are ever in a file (a write that
fails part-way is cut back), and its stream goes back to its last page
written (:meth:`~sfu.media.ogg.OggWriter.rewind`: page sequence numbers
stay gapless, granule positions go on from there). What the file would
hold meanwhile is dropped, never kept. It is tried again
:data:`RETRY_FIRST` (1 s) later, then after twice as long each time a try
fails, at most :data:`RETRY_MAX` (30 s) apart: one open or write a try, and
nothing per packet in between but a comparison (a file that fails again
within 30 s of going on keeps its back-off, so a disk that takes one write
in two is not tried, nor logged, more often). A try first writes at most
:data:`RETRY_PROBE` (6 s) of silence, so a disk that still refuses costs
that little however long the outage; once the disk took it, the rest of
the outage is silence too (120 ms packets, ~40-60 ms of work per hour out,
once), so the file goes on in line with the others and still lasts the
wall time of the recording: the mix file counts the mixer's frames it
dropped; a speaker's next packets go where their timestamps say, as after
lost packets (by the wall clock if it disagrees by over a second). A
speaker file that could not be made is made once the disk lets it,
silence from the start; a speaker whose file is paused goes on in it when
it rejoins: one file made or tried per identity, at most
:data:`MAX_SPEAKER_FILES`, and nothing kept per join. Logged: one ERROR
line when a file pauses, one WARNING when it goes on (how long it was out,
how much of it is silence), nothing per failed try.
:meth:`Recorder.stats` gives each file's ``paused`` and ``lost`` (seconds
the disk cost it). At the stop a paused file gets one last try; a disk
that still refuses it leaves it ending at its last whole page (no
end-of-stream flag: players read it up to there). A mix file that cannot be made at all, or
whose headers the disk refuses, raises in ``record()``.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import math
import os
import re
import secrets
import stat
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING

from .._values import shown
from ..errors import InvalidSetting
from ..stats import RecorderStats
from .mixer import MixOutput
from .ogg import (
    MAX_PACKET_SAMPLES,
    MAX_PAGE_PACKET,
    OggWriter,
    opus_head,
    opus_tags,
    packet_samples,
    parse_opus_head,
)
from .opus import FRAME_SAMPLES, SAMPLE_RATE, SILENCE_MONO, SILENCE_STEREO

if TYPE_CHECKING:
    from .mixer import Mixer
    from .streams import Publisher

__all__ = ["SILENCE_MONO", "SILENCE_STEREO", "Recorder", "SpeakerTrack"]

logger = logging.getLogger(__name__)

SPEAKER_PRE_SKIP = 0  # see the module documentation
_MAX_TIMESTAMP_GAP = 60 * SAMPLE_RATE  # larger jumps are placed by the wall clock
_MAX_CLOCK_DISAGREEMENT = SAMPLE_RATE  # 1 s between RTP timeline and wall clock
_BEHIND_GRACE = 1.0  # seconds a stream may stay over that far behind before it is re-placed
# A timestamp this little behind what is written (the shortest Opus frame,
# 2.5 ms) is a sender's clock a sample or two off, not a late packet: in place.
_TIMESTAMP_SLIP = 120
# Opus CELT-only fullband silence frames shorter than 20 ms (RFC 6716 3.1,
# configurations 30, 29, 28) as (samples, TOC with the stereo bit clear).
_SHORT_SILENCE = (
    (FRAME_SAMPLES // 2, 0xF0),
    (FRAME_SAMPLES // 4, 0xE8),
    (FRAME_SAMPLES // 8, 0xE0),
)
#: Seconds of silence written at most for one mixer stall (a process suspended
#: for an hour would otherwise write an hour of it in one go).
MAX_GAP_FILL = 600
#: A speaker quiet this long (seconds) is filled with silence as time passes,
#: every QUIET_FILL_FRAMES mix frames, up to QUIET_LAG seconds ago.
QUIET_AFTER = 2.0
QUIET_FILL_FRAMES = 50
QUIET_LAG = 0.5  # so a fill is always > 1 s: see SpeakerTrack.fill_to
#: Speakers recorded apart in one recording at most: each file is kept in
#: line with the wall clock while its speaker is quiet (opened and written
#: every few seconds). Past it a new speaker is in the mix file only. A
#: speaker whose file could not be made (yet) counts too: files made or
#: tried (see Recorder._tap).
MAX_SPEAKER_FILES = 256
#: A file the disk refused (full, read-only) is tried again RETRY_FIRST
#: seconds later, then after twice as long each time it fails again, at most
#: RETRY_MAX seconds: one open or write per back-off, nothing per packet.
RETRY_FIRST = 1.0
RETRY_MAX = 30.0
#: A try writes this much at most (seconds) of the silence that fills the
#: outage, on a page of its own (one page of 120 ms packets): a disk that
#: still fails costs that little work, whatever the outage's length; the
#: rest of the outage is filled once it took it.
RETRY_PROBE = 6.0
_PROBE_SAMPLES = round(RETRY_PROBE * SAMPLE_RATE)

# Every file a running recorder of this process writes, and the recorder: a
# second recording of one of them would empty it under the first. Each file
# by its path with symbolic links resolved and, once it exists, by its
# (device, inode) too: a hard link is another path to the same file. Weak,
# and only while that recorder's mixer runs: a recording whose event loop
# was torn down without a close (its mixer's task cancelled) holds no file
# for the rest of the process.
_WRITING: weakref.WeakValueDictionary[Path | tuple[int, int], Recorder] = (
    weakref.WeakValueDictionary()
)


def _writing(path: Path) -> bool:
    """Whether a live recording writes ``path`` (by whatever name). Never for
    a device (``/dev/null``): opening one empties nothing."""
    try:
        found: os.stat_result | None = os.stat(path)
    except OSError:
        found = None
    if found is not None and not stat.S_ISREG(found.st_mode):
        return False
    holder = _WRITING.get(Path(os.path.realpath(path)))
    if holder is None and found is not None:
        holder = _WRITING.get((found.st_dev, found.st_ino))
    return holder is not None and holder._mixer.running


def _open_file(path: Path, *, append: bool) -> IO[bytes]:
    """Open a recording's file to write, unbuffered: made, or emptied unless
    ``append``. A pipe or socket there raises OSError (ESPIPE), opened without
    blocking (a pipe's open would wait for a reader, holding the event loop):
    the file is written in whole pages that a refused write takes back, which
    needs a file that seeks."""
    return open(path, "ab" if append else "wb", buffering=0, opener=_open_seekable)


def _open_seekable(path: str, flags: int) -> int:
    try:
        fd = os.open(path, flags | os.O_NONBLOCK, 0o666)
    except OSError as error:
        if error.errno == errno.ENXIO:  # a pipe nobody reads
            raise OSError(errno.ESPIPE, "a pipe cannot be recorded to", path) from None
        raise
    try:
        found = os.fstat(fd).st_mode
        if not (stat.S_ISREG(found) or stat.S_ISCHR(found)):
            raise OSError(errno.ESPIPE, "a pipe or socket cannot be recorded to", path)
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _write_whole(handle: IO[bytes], data: bytes) -> None:
    """Write ``data`` (whole Ogg pages) to an unbuffered file, or nothing: a
    disk that fills part-way through leaves no torn page behind (the file is
    cut back to where this write began), so what was written stays readable."""
    start = handle.tell()
    view = memoryview(data)
    try:
        while view:
            written = handle.write(view)
            if not written:  # (a regular file takes bytes or raises: never loop on none)
                raise OSError(errno.EIO, f"{getattr(handle, 'name', 'the file')} took no bytes")
            view = view[written:]
    except OSError:
        try:
            os.ftruncate(handle.fileno(), start)
        except OSError:
            pass
        try:  # (apart: the next write, once the disk takes it, goes where this one began)
            handle.seek(start)
        except OSError:
            pass
        raise


def _six_frames(frame: bytes) -> bytes:
    """Six copies of a one-frame (code 0) Opus packet as one CBR code-3 packet."""
    return bytes([frame[0] | 0x03, 6]) + frame[1:] * 6


def _safe_name(identity: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", identity)[:64] or "speaker"


# A file name's longest on the usual file systems, in bytes (NAME_MAX), less
# room for the "-<number>-<attempt>" a clash adds.
_SPEAKER_NAME_MAX = 255 - 24
# A mix file's suffix longer than this is taken as part of its name.
_SUFFIX_MAX = 16


def _speaker_file_name(mix: Path, identity: str) -> str:
    """``<mix stem>-<identity>.<suffix>``. When that would be too long a name
    for the file system (which would refuse it as if the disk did, again and
    again), the mix's part is cut and a digest of the whole mix name put
    after it, so that two long mix names cut alike still differ."""
    stem, suffix = mix.stem, mix.suffix or ".opus"
    if len(os.fsencode(suffix)) > _SUFFIX_MAX:
        stem, suffix = mix.name, ".opus"
    tail = f"-{_safe_name(identity)}{suffix}"
    name = stem + tail
    if len(os.fsencode(name)) <= _SPEAKER_NAME_MAX:
        return name
    digest = hashlib.sha256(os.fsencode(mix.name)).hexdigest()[:8]
    tail = f"-{digest}{tail}"
    cut = os.fsencode(stem)[: _SPEAKER_NAME_MAX - len(tail)]
    # Back to a whole UTF-8 character (a name's bytes are kept as they are).
    while cut and cut[-1] & 0xC0 == 0x80:
        cut = cut[:-1]
    if cut and cut[-1] >= 0xC0:
        cut = cut[:-1]
    return os.fsdecode(cut) + tail


def _unwritable(path: Path) -> bool:
    """A pipe or socket at ``path``: no recording's file (see _open_file)."""
    try:
        found = os.stat(path).st_mode
    except OSError:
        return False
    return stat.S_ISFIFO(found) or stat.S_ISSOCK(found)


class Outage:
    """A file's outages: whether the disk takes it now, when it is tried
    again, and what the outages cost it (bookkeeping only: the
    :class:`Recorder` does the I/O and the logging)."""

    __slots__ = ("backoff", "count", "lost", "resumed_at", "retry_at", "since")

    def __init__(self) -> None:
        #: Loop time the current outage began; None while the file is written.
        self.since: float | None = None
        self.retry_at = 0.0  # loop time of the next try
        self.backoff = 0.0  # seconds from the last try to the next
        self.resumed_at = -math.inf
        self.count = 0  # outages so far
        self.lost = 0  # samples of the file filled with silence for outages that ended

    def failed(self, now: float) -> bool:
        """A write (or the open) failed at ``now``: when to try again. True when
        this began an outage, False when a try failed. A file that fails again
        within RETRY_MAX of resuming goes on with the back-off it had, so that
        a disk that takes one write in two costs no more tries (nor log lines)."""
        began = self.since is None
        if began:
            self.since = now
            self.count += 1
            if now - self.resumed_at >= RETRY_MAX:
                self.backoff = RETRY_FIRST
            else:
                self.backoff = min(max(2 * self.backoff, RETRY_FIRST), RETRY_MAX)
        else:
            self.backoff = min(max(2 * self.backoff, RETRY_FIRST), RETRY_MAX)
        self.retry_at = now + self.backoff
        return began

    def resumed(self, now: float, lost: int) -> float:
        """The disk took the file again; ``lost`` samples fill the outage. Returns
        how long (seconds) it was out."""
        out = now - (self.since if self.since is not None else now)
        self.since = None
        self.resumed_at = now
        self.lost += lost
        return out


class SpeakerTrack:
    """One speaker's passthrough Ogg/Opus file: packets placed by RTP timestamp.

    ``start`` is the loop time the recording started at (file position 0).
    No I/O of its own: :meth:`packet` and :meth:`finish` return page bytes.
    """

    def __init__(self, path: Path, start: float, *, serial: int | None = None) -> None:
        self.path = path
        self.start = start
        self.identity = path.stem
        self.writer = OggWriter(secrets.randbits(32) if serial is None else serial)
        self.position = 0  # samples written after the pre-skip
        self.silence = SILENCE_MONO
        self.packets = 0  # speaker packets written
        self.filled = 0  # silence frames written
        self.late = 0
        #: Packets dropped while the file was more than a second ahead of the
        #: wall clock (a sender clock running fast): they wait for it.
        self.ahead = 0
        self._ssrc = -1
        self._next_timestamp = 0  # RTP timestamp expected at the current position
        self._restart_at = -1  # the timestamp that would confirm a restarted numbering
        self._behind_since: float | None = None  # since when over a second behind the wall
        # Filled as a quiet speaker since its last packet: it paused (its next
        # packet is placed by the wall clock at once), not a burst after a stall.
        self._quiet_filled = False
        self._started = False
        self.last_time = start  # loop time of the last packet placed
        #: Made on the disk (opened once): the Recorder's; written with "ab" after.
        self.made = False
        self.outage = Outage()
        # (packets, filled) on the pages returned so far, and what the file
        # holds (see written() and rewind()).
        self._emitted = (0, 0)
        self._durable = (self.writer.mark(), 0, 0)

    def _fill(self, samples: int, *, exact: bool = False) -> bytes:
        """Silence up to ``samples`` in 20 ms frames; ``exact``: then a 10, 5 and
        2.5 ms one as the rest needs (a gap between two packets' timestamps,
        e.g. a lost 10 ms packet). Otherwise (up to the wall clock) a
        remainder under 20 ms is left for the next packet or fill.

        This runs on the media path (a speaker's first packet after an hour's
        mute fills the hour, so that the file stays in line with the mix and
        the other speakers'): in 120 ms packets, ~6 ms per 10 minutes.
        """
        out = []
        frames, rest = divmod(samples, FRAME_SAMPLES)
        # Six silence frames per Opus packet (120 ms, RFC 6716 code 3): a
        # sixth of the pages' work for a long silence.
        # (A page returned holds the packets before the one that completed
        # it: _emitted counts them, for rewind().)
        six = _six_frames(self.silence)
        while frames >= 6:
            frames -= 6
            self.position += 6 * FRAME_SAMPLES
            page = self.writer.write(six, SPEAKER_PRE_SKIP + self.position)
            if page:
                self._emitted = (self.packets, self.filled)
                out.append(page)
            self.filled += 6
        for _ in range(frames):
            self.position += FRAME_SAMPLES
            page = self.writer.write(self.silence, SPEAKER_PRE_SKIP + self.position)
            if page:
                self._emitted = (self.packets, self.filled)
                out.append(page)
            self.filled += 1
        for size, toc in _SHORT_SILENCE if exact else ():
            if rest >= size:
                rest -= size
                self.position += size
                frame = bytes([toc | (self.silence[0] & 0x04)]) + self.silence[1:]
                page = self.writer.write(frame, SPEAKER_PRE_SKIP + self.position)
                if page:
                    self._emitted = (self.packets, self.filled)
                    out.append(page)
                self.filled += 1
        return b"".join(out)

    def _wall_position(self, now: float) -> int:
        return round((now - self.start) * SAMPLE_RATE)

    def begin(self, first_payload: bytes) -> bytes:
        """The header pages; the channel count is the first packet's (TOC stereo flag)."""
        stereo = bool(first_payload[0] & 0x04)
        self.silence = SILENCE_STEREO if stereo else SILENCE_MONO
        head = opus_head(2 if stereo else 1, SPEAKER_PRE_SKIP)
        self._started = True
        return self.writer.headers(head, opus_tags("sfu (passthrough)"))

    def packet(self, ssrc: int, timestamp: int, payload: bytes, now: float) -> bytes:
        """Place one packet; returns the pages it completed."""
        try:
            samples = packet_samples(payload)
        except ValueError:
            return b""  # an empty payload: nothing to place
        if not 0 < samples <= MAX_PACKET_SAMPLES or len(payload) > MAX_PAGE_PACKET:
            # Not Opus: no packet is over 120 ms (a jump in the file's timeline),
            # nor longer than a page holds (so that rewind() never cuts one).
            return b""
        out = b"" if self._started else self.begin(payload)
        wall = self._wall_position(now)
        if ssrc != self._ssrc:
            target = wall  # a new stream: place it by the wall clock
            by_wall = True
        else:
            gap = ((timestamp - self._next_timestamp + (1 << 31)) & 0xFFFFFFFF) - (1 << 31)
            if -_TIMESTAMP_SLIP < gap < 0:
                gap = 0
            if gap < 0:
                # Older than what is written. Less than a second: reordered (and
                # a numbering restarted that little back waits until it passes).
                # Further back, a second packet in a row on that timeline
                # means the sender restarted its numbering (RFC 3550 A.1 does
                # the same for sequence numbers); a lone stray stays dropped.
                restarted = gap < -_MAX_CLOCK_DISAGREEMENT and timestamp == self._restart_at
                if not restarted:
                    self._restart_at = (timestamp + samples) & 0xFFFFFFFF
                    self.late += 1
                    return out
            target = self.position + gap
            # A restarted numbering, far ahead, or out of line with the wall
            # clock: placed by the wall clock. Behind it by more than a second,
            # only if that lasts a second: packets a network stall held back
            # arrive in a burst, and placing the burst by the wall clock would
            # put the file ahead of it by the stall (and drop the excess).
            behind_since = None
            if wall - target > _MAX_CLOCK_DISAGREEMENT and not self._quiet_filled:
                behind_since = now if self._behind_since is None else self._behind_since
            self._behind_since = behind_since
            by_wall = (
                gap < 0
                or gap > _MAX_TIMESTAMP_GAP
                or (
                    abs(target - wall) > _MAX_CLOCK_DISAGREEMENT
                    and (behind_since is None or now - behind_since >= _BEHIND_GRACE)
                )
            )
            if by_wall:
                target = wall
                self._behind_since = None
        if by_wall and wall < self.position - _MAX_CLOCK_DISAGREEMENT:
            # The file is over a second ahead of the wall clock and cannot go
            # back: packets wait until it is back within the second. (Less
            # ahead, after a burst or a new SSRC, a packet goes on in place.)
            self.ahead += 1
            self._ssrc = -1
            return out
        self._ssrc = ssrc
        if target > self.position:
            out += self._fill(target - self.position, exact=not by_wall)
        self.position += samples
        self._quiet_filled = False
        self.last_time = now
        self._next_timestamp = (timestamp + samples) & 0xFFFFFFFF
        page = self.writer.write(payload, SPEAKER_PRE_SKIP + self.position)
        if page:
            self._emitted = (self.packets, self.filled)
        self.packets += 1
        return out + page

    def fill_to(self, now: float) -> bytes:
        """Silence up to loop time ``now`` (a quiet speaker, filled as time passes).

        The RTP timestamp expected next stays: the speaker's next packet, its
        timestamp a whole pause on, then disagrees with the wall clock by
        more than a second and is placed by it (see :meth:`packet`).
        """
        if not self._started:
            return b""
        missing = self._wall_position(now) - self.position
        if missing < FRAME_SAMPLES:
            return b""
        self._quiet_filled = True
        return self._fill(missing)

    def finish(self, now: float) -> bytes:
        """Fill up to ``now`` and end the stream (EOS page)."""
        out = b"" if self._started else self.begin(self.silence)
        wall = self._wall_position(now)
        if wall > self.position:
            out += self._fill(wall - self.position)
        self._emitted = (self.packets, self.filled)
        return out + self.writer.close()

    # -- a disk that fails ---------------------------------------------------------

    def written(self) -> None:
        """Every page returned so far is in the file: what :meth:`rewind` goes back to."""
        self._durable = (self.writer.mark(), *self._emitted)

    def rewind(self) -> None:
        """The pages returned since :meth:`written` did not reach the file (a
        failed write): the track goes back to where the file ends, as if they
        had never been made (sequence numbers, granule, counts). The stream's
        timestamps keep their places: once the file is written again, its
        next packet goes where its timestamp says, as after lost packets (a
        burst, the first packets after the outage arriving late, is not put
        ahead of the wall clock), or by the wall clock if that disagrees."""
        mark, self.packets, self.filled = self._durable
        self.writer.rewind(mark)
        self._emitted = (self.packets, self.filled)
        self._started = mark[0] > 0  # (the headers were written)
        position = max(0, mark[1] - SPEAKER_PRE_SKIP)
        self._next_timestamp = (self._next_timestamp - (self.position - position)) & 0xFFFFFFFF
        self.position = position
        self._behind_since = None

    def missing(self, now: float) -> int:
        """Samples from the end of the file up to loop time ``now``."""
        return max(0, self._wall_position(now) - self.position)

    def resume(self, now: float, payload: bytes = b"") -> bytes:
        """After :meth:`rewind`, what a try to write again writes first: the
        headers if the file has none (their channel count from ``payload``,
        the speaker's packet, if any), and at most :data:`RETRY_PROBE` of the
        silence from the end of the file towards ``now`` (up to QUIET_LAG
        before it, so that packets a little late still find their place),
        the open page included. The rest is filled by what comes next
        (:meth:`packet`, :meth:`fill_to` or :meth:`finish`): the silence is
        the stream's lost packets, its timestamps keep their places."""
        out = b"" if self._started else self.begin(payload or self.silence)
        missing = min(self.missing(now - QUIET_LAG), _PROBE_SAMPLES)
        if missing >= FRAME_SAMPLES:
            before = self.position
            out += self._fill(missing)
            self._next_timestamp = (self._next_timestamp + self.position - before) & 0xFFFFFFFF
        # Quiet since now (not filled again for QUIET_AFTER); far behind the
        # wall clock (a sender whose clock stood still), placed by it at once.
        self.last_time = now
        self._quiet_filled = True
        self._emitted = (self.packets, self.filled)
        return out + self.writer.flush()

    @property
    def duration(self) -> float:
        """Seconds of the file written (pre-skip excluded)."""
        return self.position / SAMPLE_RATE


class Recorder:
    """Writes a room's mix (and optionally each speaker's packets) to Ogg/Opus files.

    Made by :meth:`sfu.Room.record`; see the module documentation. ``path``
    is the mix file; ``speaker_paths`` maps each recorded speaker's
    identity to its file (filled in as speakers are heard; a file the disk
    has not let be made yet is in it too).
    """

    def __init__(
        self,
        mixer: Mixer,
        path: str | os.PathLike[str],
        *,
        per_speaker: bool = False,
        identity_of: Callable[[int], str | None] | None = None,
        title: str | None = None,
    ) -> None:
        if not isinstance(path, (str, os.PathLike)) or not str(path) or "\0" in str(path):
            raise InvalidSetting(f"path must be a file path (str or os.PathLike), got {path!r:.60}")
        if not isinstance(per_speaker, bool):
            raise InvalidSetting(f"per_speaker must be True or False, got {per_speaker!r:.40}")
        # Absolute: the speaker files are opened by name at each write, and an
        # application changing directory must not send them elsewhere.
        self.path = Path(path).absolute()  # (not normalised: "link/.." is the OS's to follow)
        self.per_speaker = per_speaker
        self.speaker_paths: dict[str, Path] = {}
        self._files_full_told = False  # MAX_SPEAKER_FILES reached, logged once
        self._mixer = mixer
        self._identity_of = identity_of or (lambda number: None)
        self._title = title
        self._output: MixOutput | None = None
        self._file: IO[bytes] | None = None
        self._writer = OggWriter(secrets.randbits(32))
        self._granule = 0
        self._pre_skip = 0
        self._silence = SILENCE_MONO
        # The mix file's outages: what it holds (the writer's mark once its
        # pages were written), and the samples of mix delivered since that
        # are not in it (filled with silence when the disk takes it again).
        self._outage = Outage()
        self._mark = self._writer.mark()
        self._behind = 0
        # Speaker files by identity (a speaker who reconnects goes on in its
        # file, also one the disk refuses for now), and by participant number
        # for the media path's lookups. The files are opened for each write, so
        # a room with many speakers over a long recording holds no file
        # descriptor per speaker.
        self._tracks: dict[str, SpeakerTrack] = {}
        # By number, while that participant is forwarded (None: in the mix
        # only); its entry goes when it is released (see _tap for the bound).
        self._track_of: dict[int, SpeakerTrack | None] = {}
        self._tapping = False
        self._stopped = False
        # Its entries in _WRITING (paths, and files by inode), let go when it stops.
        self._claimed: list[Path | tuple[int, int]] = []
        self.started_at = 0.0
        self.stopped_at: float | None = None
        self.packets = 0

    def __repr__(self) -> str:
        state = "stopped" if self._stopped else "recording"
        if not self._stopped and self._outage.since is not None:
            state = "recording (paused: the disk refuses the file)"
        return f"<Recorder {str(self.path)!r} {state}>"

    @property
    def recording(self) -> bool:
        """Started and not stopped (also while the disk refuses the mix file
        for a while: ``stats()["paused"]``)."""
        return self._file is not None and not self._stopped

    @property
    def duration(self) -> float:
        """Seconds of mix written (pre-skip excluded)."""
        return max(0, self._granule - self._pre_skip) / SAMPLE_RATE

    def start(self, now: float) -> None:
        """Open the files and attach to the mixer (called by ``Room.record``).

        A mix file that cannot be made, or whose headers the disk refuses,
        raises here (OSError): the caller learns at once. Later failures
        pause the file instead (see the module documentation)."""
        if self._file is not None or self._stopped:
            raise RuntimeError("a Recorder starts once")
        if _writing(self.path):
            raise InvalidSetting(
                f"{str(self.path)!r:.200} is being recorded already: "
                "stop that recording first, or give another path"
            )
        # Unbuffered: each write is whole pages, and one the disk cannot take
        # is undone (see _write_whole). Closed by stop().
        try:
            self._file = _open_file(self.path, append=False)
        except OSError as error:
            if error.errno == errno.ESPIPE:
                raise InvalidSetting(
                    f"{str(self.path)!r:.200} is a pipe or socket: a recording is a file "
                    "(its pages are written whole, a refused write taken back)"
                ) from None
            raise
        try:
            self._output = self._mixer.add_output(
                self._on_packet, on_close=self._on_mixer_closed, on_gap=self._on_gap
            )
            head = self._output.opus_head
            channels, self._pre_skip = parse_opus_head(head)[:2]
            self._silence = SILENCE_STEREO if channels == 2 else SILENCE_MONO
            comments = {"TITLE": self._title} if self._title else None
            _write_whole(self._file, self._writer.headers(head, opus_tags("sfu", comments)))
            self._mark = self._writer.mark()
        except BaseException:
            self._file.close()
            self._file = None
            if self._output is not None:
                self._output.close()
            raise
        self.started_at = now
        self._claim(self.path)
        self._claim_file(os.fstat(self._file.fileno()))
        if self.per_speaker:
            self._mixer.router.taps.append(self._tap)
            self._mixer.router.released.append(self._released)
            self._tapping = True
        logger.info(
            "recording to %s%s", self.path, " (and per speaker)" if self.per_speaker else ""
        )

    def _claim(self, path: Path) -> None:
        held = Path(os.path.realpath(path))
        _WRITING[held] = self
        self._claimed.append(held)

    def _claim_file(self, made: os.stat_result) -> None:
        """The file made for a claimed path, by any other name (a hard link)."""
        if not stat.S_ISREG(made.st_mode):
            return  # a device (see _writing)
        held = (made.st_dev, made.st_ino)
        _WRITING[held] = self
        self._claimed.append(held)

    # -- callbacks ---------------------------------------------------------------

    def _on_packet(self, packet: bytes, samples: int, now: float) -> None:
        if self._file is None or now <= self.started_at:
            return  # (a frame due before record(), mixed late by a lagging task)
        self.packets += 1
        if self._outage.since is None or (now >= self._outage.retry_at and self._retry_mix(now)):
            self._granule += samples
            pages = self._writer.write(packet, self._granule)
            if pages:
                self._write_mix(pages, now)
        else:
            self._behind += samples  # the disk refuses the file: its time is filled later
        if self._tracks and self.packets % QUIET_FILL_FRAMES == 0:
            self._fill_quiet_speakers(now)

    def _fill_quiet_speakers(self, now: float) -> None:
        """Speakers quiet for a while get their silence now, a second at a
        time, not all at once in the media path when they speak again. A
        file the disk refuses is tried again here too when it is due (its
        speaker may be quiet for the rest of the recording)."""
        for track in list(self._tracks.values()):
            outage = track.outage
            if outage.since is not None:
                if now >= outage.retry_at:
                    self._retry(track, now)  # (quiet from then on: filled QUIET_AFTER later)
            elif now - track.last_time > QUIET_AFTER:
                pages = track.fill_to(now - QUIET_LAG)
                if pages:
                    self._append(track, pages, now)

    def _on_gap(self, samples: int) -> None:
        """Mixer frames skipped after a stall: silence, so the file keeps wall time."""
        if self._file is None:
            return
        frames = samples // FRAME_SAMPLES
        if frames > MAX_GAP_FILL * SAMPLE_RATE // FRAME_SAMPLES:
            logger.warning(
                "recording %s: a %.0f s stall, %d s of it filled",
                self.path,
                samples / SAMPLE_RATE,
                MAX_GAP_FILL,
            )
            frames = MAX_GAP_FILL * SAMPLE_RATE // FRAME_SAMPLES
        if self._outage.since is not None:
            self._behind += frames * FRAME_SAMPLES
            return
        pages = self._mix_silence(frames * FRAME_SAMPLES)
        if pages:
            self._write_mix(pages, self._mixer_time())

    def _tap(
        self,
        publisher: Publisher,
        packet: bytes,
        offset: int,
        sequence: int,
        timestamp: int,
        slot: int,
        now: float,
    ) -> None:
        # What this keeps is bounded however long the recording and however
        # often its files fail: an entry per participant number only while
        # that participant is forwarded (_released drops it, None too: each
        # join has a new number), and at most one track (one file made or
        # tried) per identity, MAX_SPEAKER_FILES in all. A speaker whose file
        # the disk refuses keeps that track, whatever number it rejoins with:
        # its packets are dropped, at the cost of a comparison, until the file
        # is due to be tried again, and a failing disk gets no new file, and
        # the recorder no new entry, per rejoin.
        number = publisher.number
        if number in self._track_of:
            track = self._track_of[number]
        else:
            identity = self._identity_of(number) or f"speaker-{number}"
            track = self._tracks.get(identity)
            if track is None:
                track = self._open_track(identity, number)
            self._track_of[number] = track
        if track is None:
            return
        outage = track.outage
        if outage.since is not None and (
            now < outage.retry_at or not self._retry(track, now, packet[offset:])
        ):
            return  # the disk refuses the file: dropped (silence once it takes it again)
        pages = track.packet(publisher.ssrc, timestamp, packet[offset:], now)
        if pages:
            self._append(track, pages, now)

    def _released(self, number: int) -> None:
        """Participant ``number`` stopped being forwarded (muted, demoted, gone):
        its file is found again by identity should it speak again, so the
        entry for its number goes, a None too (a rejoin has a new number:
        kept, one would stay for every join of a long recording)."""
        self._track_of.pop(number, None)

    def _open_track(self, identity: str, number: int) -> SpeakerTrack | None:
        """A track for a speaker heard for the first time; the file is made by
        its first write (whole pages, the headers first)."""
        if len(self._tracks) >= MAX_SPEAKER_FILES:
            if not self._files_full_told:
                self._files_full_told = True
                logger.warning(
                    "recording %s: %d speaker files made or tried; the next speakers are "
                    "in the mix only",
                    self.path,
                    MAX_SPEAKER_FILES,
                )
            return None
        path = self.path.with_name(_speaker_file_name(self.path, identity))
        taken = {*self.speaker_paths.values(), self.path}
        if path in taken or _writing(path) or _unwritable(path):
            # Numbered; an identity may be that numbered name already ("a-7"):
            # never a file another speaker writes (opening it would empty it),
            # nor a pipe or socket (never writable: no file at all).
            stem, attempt = f"{path.stem}-{number}", 1
            path = path.with_name(f"{stem}{path.suffix}")
            while path in taken or _writing(path) or _unwritable(path):
                attempt += 1
                path = path.with_name(f"{stem}-{attempt}{path.suffix}")
        self._claim(path)
        track = SpeakerTrack(path, self.started_at)
        track.identity = identity
        self._tracks[identity] = track
        self.speaker_paths[identity] = path
        return track

    # -- writing, and a disk that fails ------------------------------------------------

    def _append(self, track: SpeakerTrack, pages: bytes, now: float) -> bool:
        """Write ``pages`` at the end of ``track``'s file (made, emptied, by its
        first write); False, and the track gone back to what the file holds,
        when the disk refuses them."""
        try:
            with _open_file(track.path, append=track.made) as handle:
                if not track.made:
                    self._claim_file(os.fstat(handle.fileno()))
                track.made = True
                handle.seek(0, os.SEEK_END)
                _write_whole(handle, pages)
        except OSError as error:
            track.rewind()
            self._failed(track.outage, f"speaker {shown(track.identity)}", track.path, error, now)
            return False
        track.written()
        return True

    def _retry(self, track: SpeakerTrack, now: float, payload: bytes = b"") -> bool:
        """Try a speaker file the disk refused again (it is due): a small write
        first (:meth:`SpeakerTrack.resume`); True when the disk took it, the
        file then goes on (what comes next fills the rest of the outage)."""
        lost = track.missing(now)
        probe = track.resume(now, payload)
        if probe and not self._append(track, probe, now):
            return False
        self._resumed(track.outage, f"speaker {shown(track.identity)}", track.path, now, lost)
        return True

    def _write_mix(self, pages: bytes, now: float) -> bool:
        assert self._file is not None
        try:
            _write_whole(self._file, pages)
        except OSError as error:
            # Back to what the file holds; the mix delivered since is owed as silence.
            self._writer.rewind(self._mark)
            self._behind += self._granule - self._mark[1]
            self._granule = self._mark[1]
            self._failed(self._outage, "the mix", self.path, error, now)
            return False
        self._mark = self._writer.mark()
        return True

    def _retry_mix(self, now: float) -> bool:
        """Try the mix file again (it is due): at most RETRY_PROBE of the
        silence it is owed first, then, once the disk took that, the rest."""
        lost = self._behind
        probe = min(self._behind, _PROBE_SAMPLES)
        self._behind -= probe
        pages = self._mix_silence(probe) + self._writer.flush()
        if pages and not self._write_mix(pages, now):
            return False
        self._resumed(self._outage, "the mix", self.path, now, lost)
        rest, self._behind = self._behind, 0
        pages = self._mix_silence(rest)
        return not pages or self._write_mix(pages, now)

    def _mix_silence(self, samples: int) -> bytes:
        """Silence on the mix for ``samples`` (whole frames): 120 ms packets
        (six 20 ms frames, RFC 6716 code 3), a 20 ms one for each frame left."""
        out = []
        six = _six_frames(self._silence)
        frames = samples // FRAME_SAMPLES
        while frames >= 6:
            frames -= 6
            self._granule += 6 * FRAME_SAMPLES
            out.append(self._writer.write(six, self._granule))
        for _ in range(frames):
            self._granule += FRAME_SAMPLES
            out.append(self._writer.write(self._silence, self._granule))
        return b"".join(out)

    def _failed(self, outage: Outage, what: str, path: Path, error: OSError, now: float) -> None:
        """A write to ``path`` (or its open) failed: the file pauses (one ERROR
        line per outage; a try that fails again only doubles the wait)."""
        if self._stopped:
            # Its last try, at the stop: the file ends at its last whole page
            # (without the end-of-stream flag: players take it as it is).
            if outage.since is None:
                outage.since = now
            logger.error(
                "recording %s to %s: the disk refused its end (%s): it ends at its last whole page",
                what,
                path,
                error,
            )
            return
        if outage.failed(now):
            logger.error(
                "recording %s to %s paused: %s; tried again in %g s (then less often, at "
                "most every %g s), its audio meanwhile is lost (silence in the file)",
                what,
                path,
                error,
                outage.backoff,
                RETRY_MAX,
            )

    def _resumed(self, outage: Outage, what: str, path: Path, now: float, lost: int) -> None:
        out = outage.resumed(now, lost)
        logger.warning(
            "recording %s to %s resumed after %.1f s out: %.2f s of it is silence",
            what,
            path,
            out,
            lost / SAMPLE_RATE,
        )

    def _on_mixer_closed(self) -> None:
        self._output = None
        self._finish(self._mixer_time())

    def _mixer_time(self) -> float:
        loop = self._mixer._loop
        return loop.time() if loop is not None else self.started_at

    # -- stopping -------------------------------------------------------------------

    def _finish(self, now: float) -> None:
        if self._stopped:
            return
        self._stopped = True
        self.stopped_at = now
        if self._tapping:
            router = self._mixer.router
            if self._tap in router.taps:
                router.taps.remove(self._tap)
            if self._released in router.released:
                router.released.remove(self._released)
            self._tapping = False
        if self._output is not None:
            self._output.close()
            self._output = None
        try:
            if self._file is not None:
                try:
                    # A file the disk refuses gets one last try, whenever it was due.
                    going = self._outage.since is None or self._retry_mix(now)
                    if going and self._writer.packets == 0:
                        # Stopped before the first frame: one silent frame keeps the file valid.
                        self._granule = FRAME_SAMPLES
                        self._writer.write(SILENCE_MONO, self._granule)
                    if going:
                        self._write_mix(self._writer.close(), now)
                    try:  # (a failed write whose undoing failed too left bytes past the end)
                        self._file.truncate()
                    except OSError:
                        pass
                finally:
                    try:
                        self._file.close()
                    except OSError:
                        logger.exception("closing the recording %s failed", self.path)
        finally:
            # Whatever happened to the mix file, each speaker's file ends too.
            for track in self._tracks.values():
                if track.outage.since is None or self._retry(track, now):
                    self._append(track, track.finish(now), now)
            for held in self._claimed:
                if _WRITING.get(held) is self:
                    del _WRITING[held]
            self._claimed.clear()
        logger.info(
            "recording to %s stopped: %.2f s, %d speaker files",
            self.path,
            self.duration,
            sum(track.made for track in self._tracks.values()),
        )

    async def stop(self) -> None:
        """Finalise every file (EOS page, closed); idempotent. Waits for the
        mixer to stop when this was its last consumer."""
        if not self._stopped:
            now = self._mixer_time()
            try:
                self._mixer.catch_up(now)  # the mix file ends at the stop, even if the task lags
            except Exception:
                # (A bug: the mixer's task ends its consumers when it meets one.)
                # The files end all the same, where the mix got to.
                logger.exception(
                    "recording %s: mixing the last frames before stopping failed", self.path
                )
            self._finish(now)
        if self._mixer.consumers == 0:
            await self._mixer.wait_stopped()

    async def __aenter__(self) -> Recorder:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def stats(self) -> RecorderStats:
        """The files' figures; ``paused``: the disk refuses that file for now
        (it is tried again with a back-off), ``lost``: seconds the disk cost
        it, silence for its outages (the one under way included), or missing
        at its end when the disk still refused it at the stop."""
        now = self.stopped_at if self.stopped_at is not None else self._mixer_time()
        lost = self._outage.lost
        if self._outage.since is not None:
            lost += self._behind
        return {
            "path": str(self.path),
            "recording": self.recording,
            "duration": self.duration,
            "packets": self.packets,
            "paused": self._outage.since is not None and not self._stopped,
            "lost": lost / SAMPLE_RATE,
            "speakers": {
                track.identity: {
                    "path": str(track.path),
                    "duration": track.duration,
                    "packets": track.packets,
                    "silence_frames": track.filled,
                    "late": track.late,
                    "ahead": track.ahead,
                    "paused": track.outage.since is not None and not self._stopped,
                    "lost": (
                        track.outage.lost
                        + (track.missing(now) if track.outage.since is not None else 0)
                    )
                    / SAMPLE_RATE,
                }
                for track in self._tracks.values()
            },
        }
