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
  and counted in ``late``, unless two in a row, more than a second back,
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

A speaker file the disk will not take (full, read-only: the file cannot be
made, or a write fails) ends there, logged, whole pages only; that speaker
is in the mix file only for the rest of the recording, also when it
rejoins (one file made or tried per identity, at most
:data:`MAX_SPEAKER_FILES`). A failing mix file ends the recording.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import secrets
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
#: speaker whose file could not be made counts too (see Recorder._tap).
MAX_SPEAKER_FILES = 256

# Every file a running recorder of this process writes (absolute paths), and
# the recorder: a second recording of one of them would empty it under the
# first. Weak, and only while that recorder's mixer runs: a recording whose
# event loop was torn down without a close (its mixer's task cancelled)
# holds no path for the rest of the process.
_WRITING: weakref.WeakValueDictionary[Path, Recorder] = weakref.WeakValueDictionary()


def _writing(path: Path) -> bool:
    """Whether a live recording writes ``path``."""
    holder = _WRITING.get(Path(os.path.abspath(path)))
    return holder is not None and holder._mixer.running


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
            handle.seek(start)
        except OSError:
            pass
        raise


def _six_frames(frame: bytes) -> bytes:
    """Six copies of a one-frame (code 0) Opus packet as one CBR code-3 packet."""
    return bytes([frame[0] | 0x03, 6]) + frame[1:] * 6


def _safe_name(identity: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", identity)[:64] or "speaker"


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
        six = _six_frames(self.silence)
        while frames >= 6:
            frames -= 6
            self.position += 6 * FRAME_SAMPLES
            self.filled += 6
            out.append(self.writer.write(six, SPEAKER_PRE_SKIP + self.position))
        for _ in range(frames):
            self.position += FRAME_SAMPLES
            self.filled += 1
            out.append(self.writer.write(self.silence, SPEAKER_PRE_SKIP + self.position))
        for size, toc in _SHORT_SILENCE if exact else ():
            if rest >= size:
                rest -= size
                self.position += size
                self.filled += 1
                frame = bytes([toc | (self.silence[0] & 0x04)]) + self.silence[1:]
                out.append(self.writer.write(frame, SPEAKER_PRE_SKIP + self.position))
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
        if not 0 < samples <= MAX_PACKET_SAMPLES:
            return b""  # not Opus (no packet is over 120 ms): a jump in the file's timeline
        out = b"" if self._started else self.begin(payload)
        wall = self._wall_position(now)
        if ssrc != self._ssrc:
            target = wall  # a new stream: place it by the wall clock
            by_wall = True
        else:
            gap = ((timestamp - self._next_timestamp + (1 << 31)) & 0xFFFFFFFF) - (1 << 31)
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
        self.packets += 1
        self._quiet_filled = False
        self.last_time = now
        self._next_timestamp = (timestamp + samples) & 0xFFFFFFFF
        return out + self.writer.write(payload, SPEAKER_PRE_SKIP + self.position)

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
        return out + self.writer.close()

    @property
    def duration(self) -> float:
        return self.position / SAMPLE_RATE


class Recorder:
    """Writes a room's mix (and optionally each speaker's packets) to Ogg/Opus files.

    Made by :meth:`sfu.Room.record`; see the module documentation. ``path``
    is the mix file; ``speaker_paths`` maps each recorded speaker's
    identity to its file (filled in as speakers are heard).
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
        if not isinstance(path, (str, os.PathLike)) or not str(path):
            raise InvalidSetting(f"path must be a file path (str or os.PathLike), got {path!r:.60}")
        if not isinstance(per_speaker, bool):
            raise InvalidSetting(f"per_speaker must be True or False, got {per_speaker!r:.40}")
        self.path = Path(path)
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
        # Speaker files by identity (a speaker who reconnects goes on in its
        # file), and by participant number for the media path's lookups. The
        # files are opened for each write, so a room with many speakers over
        # a long recording holds no file descriptor per speaker.
        self._tracks: dict[str, SpeakerTrack] = {}
        # By number, while that participant is forwarded (None: in the mix
        # only); its entry goes when it is released (see _tap for the bound).
        self._track_of: dict[int, SpeakerTrack | None] = {}
        # Identities whose file could not be made (a speaker whose file failed
        # later is in speaker_paths without a track): in the mix only, for the
        # rest of the recording.
        self._unmade: set[str] = set()
        self._tapping = False
        self._stopped = False
        self._claimed: list[Path] = []  # its entries in _WRITING, let go when it stops
        self.started_at = 0.0
        self.stopped_at: float | None = None
        self.packets = 0

    def __repr__(self) -> str:
        state = "stopped" if self._stopped else "recording"
        return f"<Recorder {str(self.path)!r} {state}>"

    @property
    def recording(self) -> bool:
        return self._file is not None and not self._stopped

    @property
    def duration(self) -> float:
        """Seconds of mix written (pre-skip excluded)."""
        return max(0, self._granule - self._pre_skip) / SAMPLE_RATE

    def start(self, now: float) -> None:
        """Open the files and attach to the mixer (called by ``Room.record``)."""
        if self._file is not None or self._stopped:
            raise RuntimeError("a Recorder starts once")
        if _writing(self.path):
            raise InvalidSetting(
                f"{str(self.path)!r:.200} is being recorded already: "
                "stop that recording first, or give another path"
            )
        # Unbuffered: each write is whole pages, and one the disk cannot take
        # is undone (see _write_whole). Closed by stop().
        self._file = open(self.path, "wb", buffering=0)
        try:
            self._output = self._mixer.add_output(
                self._on_packet, on_close=self._on_mixer_closed, on_gap=self._on_gap
            )
            head = self._output.opus_head
            channels, self._pre_skip = parse_opus_head(head)[:2]
            self._silence = SILENCE_STEREO if channels == 2 else SILENCE_MONO
            comments = {"TITLE": self._title} if self._title else None
            _write_whole(self._file, self._writer.headers(head, opus_tags("sfu", comments)))
        except BaseException:
            self._file.close()
            self._file = None
            if self._output is not None:
                self._output.close()
            raise
        self.started_at = now
        self._claim(self.path)
        if self.per_speaker:
            self._mixer.router.taps.append(self._tap)
            self._mixer.router.released.append(self._released)
            self._tapping = True
        logger.info(
            "recording to %s%s", self.path, " (and per speaker)" if self.per_speaker else ""
        )

    def _claim(self, path: Path) -> None:
        held = Path(os.path.abspath(path))
        _WRITING[held] = self
        self._claimed.append(held)

    # -- callbacks ---------------------------------------------------------------

    def _on_packet(self, packet: bytes, samples: int, now: float) -> None:
        if self._file is None or now <= self.started_at:
            return  # (a frame due before record(), mixed late by a lagging task)
        self._granule += samples
        self.packets += 1
        pages = self._writer.write(packet, self._granule)
        if pages:
            _write_whole(self._file, pages)
        if self._tracks and self.packets % QUIET_FILL_FRAMES == 0:
            self._fill_quiet_speakers(now)

    def _fill_quiet_speakers(self, now: float) -> None:
        """Speakers quiet for a while get their silence now, a second at a
        time, not all at once in the media path when they speak again."""
        for track in list(self._tracks.values()):
            if now - track.last_time > QUIET_AFTER:
                pages = track.fill_to(now - QUIET_LAG)
                if pages and not self._append(track, pages):
                    logger.error(
                        "recording of speaker %s stopped: it is in the mix only from now on",
                        shown(track.identity),
                    )
                    self._forget_track(track)

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
        pages = []
        for _ in range(frames):
            self._granule += FRAME_SAMPLES
            pages.append(self._writer.write(self._silence, self._granule))
        _write_whole(self._file, b"".join(pages))

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
        # join has a new number), and at most one file made or tried per
        # identity, MAX_SPEAKER_FILES in all. A speaker whose file failed (the
        # disk full or read-only) is in the mix only from then on, whatever
        # number it rejoins with: a disk that keeps failing gets no new file,
        # and the recorder no new entry, per rejoin.
        number = publisher.number
        if number in self._track_of:
            track = self._track_of[number]
        else:
            identity = self._identity_of(number) or f"speaker-{number}"
            track = self._tracks.get(identity)
            if (
                track is None
                and identity not in self.speaker_paths
                and identity not in self._unmade
            ):
                track = self._open_track(identity, number)
            self._track_of[number] = track
        if track is None:
            return
        pages = track.packet(publisher.ssrc, timestamp, packet[offset:], now)
        if pages and not self._append(track, pages):
            # Disk full or gone: this speaker's file stops here; forwarding and
            # the other files go on.
            logger.error(
                "recording of speaker %s stopped: it is in the mix only from now on",
                shown(track.identity),
            )
            self._forget_track(track)

    def _released(self, number: int) -> None:
        """Participant ``number`` stopped being forwarded (muted, demoted, gone):
        its file is found again by identity should it speak again, so the
        entry for its number goes, a None too (a rejoin has a new number:
        kept, one would stay for every join of a long recording). One whose
        file failed is known by identity (``speaker_paths`` without a track,
        or ``_unmade``): that file is not made again."""
        self._track_of.pop(number, None)

    def _forget_track(self, track: SpeakerTrack) -> None:
        self._tracks.pop(track.identity, None)
        for held, other in self._track_of.items():
            if other is track:
                self._track_of[held] = None

    @staticmethod
    def _append(track: SpeakerTrack, pages: bytes) -> bool:
        try:
            with open(track.path, "ab", buffering=0) as handle:
                handle.seek(0, os.SEEK_END)
                _write_whole(handle, pages)
        except OSError:
            logger.exception("writing %s failed", track.path)
            return False
        return True

    def _open_track(self, identity: str, number: int) -> SpeakerTrack | None:
        if len(self.speaker_paths) + len(self._unmade) >= MAX_SPEAKER_FILES:
            if not self._files_full_told:
                self._files_full_told = True
                logger.warning(
                    "recording %s: %d speaker files made or tried; the next speakers are "
                    "in the mix only",
                    self.path,
                    MAX_SPEAKER_FILES,
                )
            return None
        name = f"{self.path.stem}-{_safe_name(identity)}{self.path.suffix or '.opus'}"
        path = self.path.with_name(name)
        taken = {*self.speaker_paths.values(), self.path}
        if path in taken or _writing(path):
            # Numbered; an identity may be that numbered name already ("a-7"):
            # never a file another speaker writes (opening it would empty it).
            stem, attempt = f"{path.stem}-{number}", 1
            path = path.with_name(f"{stem}{path.suffix}")
            while path in taken or _writing(path):
                attempt += 1
                path = path.with_name(f"{stem}-{attempt}{path.suffix}")
        try:
            open(path, "wb").close()  # made empty now; each write appends
        except OSError:
            logger.exception(
                "cannot record speaker %s to %s: it is in the mix only", shown(identity), path
            )
            self._unmade.add(identity)
            return None
        self._claim(path)
        track = SpeakerTrack(path, self.started_at)
        track.identity = identity
        self._tracks[identity] = track
        self.speaker_paths[identity] = path
        return track

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
                    if self._writer.packets == 0:
                        # Stopped before the first frame: one silent frame keeps the file valid.
                        self._granule = FRAME_SAMPLES
                        _write_whole(self._file, self._writer.write(SILENCE_MONO, self._granule))
                    _write_whole(self._file, self._writer.close())
                except OSError:  # e.g. the disk filled: the file is closed all the same
                    logger.exception("finishing the recording %s failed", self.path)
                finally:
                    try:
                        self._file.close()
                    except OSError:
                        logger.exception("closing the recording %s failed", self.path)
        finally:
            # Whatever happened to the mix file, each speaker's file ends too.
            for track in self._tracks.values():
                self._append(track, track.finish(now))
            for held in self._claimed:
                if _WRITING.get(held) is self:
                    del _WRITING[held]
            self._claimed.clear()
        logger.info(
            "recording to %s stopped: %.2f s, %d speaker files",
            self.path,
            self.duration,
            len(self._tracks),
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
        return {
            "path": str(self.path),
            "recording": self.recording,
            "duration": self.duration,
            "packets": self.packets,
            "speakers": {
                track.identity: {
                    "path": str(track.path),
                    "duration": track.duration,
                    "packets": track.packets,
                    "silence_frames": track.filled,
                    "late": track.late,
                    "ahead": track.ahead,
                }
                for track in self._tracks.values()
            },
        }
