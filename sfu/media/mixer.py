"""The Mixer: decodes the active speakers, mixes them, encodes one Opus stream per output.

Mixing is an output, not the forwarding path (listeners get the speakers'
packets untouched; nothing is decoded for them): the
Mixer runs only while something consumes it (a recorder, a live HTTP
stream, a mixed listener). The first consumer starts it, the last one
leaving stops it; its one task belongs to it and is awaited by
:meth:`Mixer.close` and :meth:`Mixer.wait_stopped`.

While it runs it holds a tap on the Router (``router.taps``): every
forwarded speaker packet (unmuted, holding a slot) is copied into that
speaker's :class:`~sfu.media.jitter.JitterBuffer`. Every 20 ms, paced by
the loop clock against absolute deadlines (no drift; after a stall it
catches up, at most :data:`MAX_CATCH_UP` seconds; beyond that it skips
ahead, and the RTP timestamps move on by the time skipped while outputs
that keep time, a recording, fill it with silence):

1. each speaker yields one 20 ms frame: the next packet decoded by its own
   libopus decoder (PyAV), or Opus packet-loss concealment when the packet
   is missing or libopus refuses it (a TOC-only packet makes libopus conceal one packet's worth;
   FFmpeg's libopus wrapper exposes no in-band FEC decoding), or nothing
   when the speaker is idle;
2. the loudest ``max_speakers`` frames (RFC 6464 level) are summed into an
   int32 accumulator (:func:`sfu.mix.mix_add`, Cython with a Python twin);
   a mix-minus stream of one of them gets the next loudest too, so that each
   speaker hears ``max_speakers`` others when there are that many;
3. each output stream takes the sum through the soft limiter
   (:func:`sfu.mix.mix_limit`: never wraps) into int16, minus one speaker's
   own frame for a mix-minus stream, and encodes it with its own libopus
   encoder (20 ms, mono). The room mix is one stream whoever consumes it;
   a speaker who consumes the mix gets its own mix-minus stream, so it
   never hears itself.

Encoded packets go to callbacks (:meth:`Mixer.add_output`: the recorder,
live streams) and, as RTP with the stream's own SSRC and continuous
sequence numbers and timestamps, to mixed listeners through a
:class:`~sfu.relay.FanOut` (:meth:`Mixer.add_receiver`).

Its parts, one module each: the speakers heard (:mod:`~sfu.media.mix_speaker`),
the encoded streams and their SSRCs (:mod:`~sfu.media.mix_stream`) and the
mixed receivers (:mod:`~sfu.media.mix_receivers`).
"""

from __future__ import annotations

import asyncio
import logging
import math
import socket
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .._values import is_int
from ..errors import InvalidSetting, RoomClosed
from ..mix import mix_add, mix_limit
from ..relay import FanOut
from .mix_receivers import MixReceivers
from .mix_speaker import JITTER_CAPACITY, SPEAKER_TIMEOUT, MixSpeakers
from .mix_stream import MixOutput, MixStream, MixStreams, OutputCallback, mixed_level
from .opus import FRAME_BYTES, FRAME_SAMPLES

if TYPE_CHECKING:
    from ..participant import Participant
    from .router import Router

__all__ = ["MAX_CATCH_UP", "PTIME", "MixOutput", "Mixer"]

logger = logging.getLogger(__name__)

PTIME = 0.020
#: After a stall longer than this (seconds) the mixer skips ahead instead of catching up.
MAX_CATCH_UP = 1.0
#: The bit rates libopus takes for a mono stream (bit/s).
MIN_BITRATE = 500
MAX_BITRATE = 256000


class Mixer:
    """A room's mixer; see the module documentation.

    ``router`` is the room's :class:`~sfu.media.router.Router`; ``sock`` the
    server's UDP socket (mixed listeners are sent to from it); ``loop`` the
    loop the mixing task runs in. ``max_speakers`` caps how many speakers
    are mixed (default: all the Router forwards, i.e. the slot holders);
    ``jitter_depth`` is the playout delay in packets. A bad setting raises
    :class:`~sfu.errors.InvalidSetting` here (or when set later).

    Should mixing a frame ever raise (a bug), the error is logged with its
    traceback and the mixer lets every consumer go as :meth:`close` does
    (each output's ``on_close`` is called: recordings finish their files,
    live streams end; mixed receivers are dropped), then calls
    ``on_failure(error, receiver_ids)`` with the receivers it dropped; it is
    not closed: the next consumer starts it again.
    """

    def __init__(
        self,
        router: Router,
        *,
        loop: asyncio.AbstractEventLoop | None = None,
        sock: socket.socket | None = None,
        name: str = "",
        bitrate: int = 48000,
        max_speakers: int | None = None,
        jitter_depth: int = 2,
        on_failure: Callable[[BaseException, list[int]], None] | None = None,
    ) -> None:
        if max_speakers is not None and (not is_int(max_speakers) or max_speakers < 1):
            raise InvalidSetting(
                f"max_speakers must be None or an integer >= 1, got {max_speakers!r}"
            )
        self._mix_streams = MixStreams()
        self._mix_receivers = MixReceivers()
        self._mix_speakers = MixSpeakers(jitter_depth)
        # The dicts step() walks every frame, and the Router tap called per
        # packet, are theirs: no call in between.
        self._streams = self._mix_streams.by_exclude
        self._speakers = self._mix_speakers.by_number
        self._tap = self._mix_speakers.tap
        self.router = router
        self.name = name
        self.on_failure = on_failure
        self.bitrate = bitrate
        self.max_speakers = max_speakers
        self.jitter_depth = jitter_depth
        self._loop = loop
        self._sock = sock
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._acc = bytearray(4 * FRAME_SAMPLES)
        self._zero = bytes(4 * FRAME_SAMPLES)
        self._full = bytearray(FRAME_BYTES)
        self._minus = bytearray(FRAME_BYTES)
        # Counters (stats()): frames mixed, frames skipped after stalls, CPU seconds.
        # Packets sent to mixed listeners (the server's stats() adds them to the Router's).
        self.packets_out = 0
        self.packets_out_dropped = 0
        self.payload_bytes_out = 0
        self.frames = 0
        self.skipped = 0
        self.starts = 0
        self.failures = 0
        self._timing = [0.0, 0.0, 0.0]  # decode, mix, encode
        self._epoch = 0.0  # loop time of frame 0 of this run
        self._frame = 0  # the frame the task mixes next (or is mixing)
        self._done = -math.inf  # the latest frame time mixed

    def __repr__(self) -> str:
        state = "running" if self.running else "idle"
        return f"<Mixer {self.name!r} {state}, {len(self._streams)} streams>"

    # -- settings (checked here: not by libopus at the first consumer, nor on the media path)

    @property
    def bitrate(self) -> int:
        """Target bit rate (bit/s) of the streams made from now on: libopus
        takes :data:`MIN_BITRATE`..:data:`MAX_BITRATE` for a mono stream."""
        return self._bitrate

    @bitrate.setter
    def bitrate(self, value: int) -> None:
        if not is_int(value) or not MIN_BITRATE <= value <= MAX_BITRATE:
            raise InvalidSetting(
                f"bitrate must be an integer in {MIN_BITRATE}..{MAX_BITRATE} bit/s "
                f"(libopus, mono), got {value!r}"
            )
        self._bitrate = value

    @property
    def jitter_depth(self) -> int:
        """Playout delay in packets of the speakers heard from now on."""
        return self._mix_speakers.depth

    @jitter_depth.setter
    def jitter_depth(self, value: int) -> None:
        if not is_int(value) or not 1 <= value <= JITTER_CAPACITY:
            raise InvalidSetting(
                f"jitter_depth must be an integer in 1..{JITTER_CAPACITY} packets, got {value!r}"
            )
        self._mix_speakers.depth = value

    # -- state ---------------------------------------------------------------------

    @property
    def running(self) -> bool:
        """Whether the mixing task is alive."""
        return self._task is not None and not self._task.done()

    @property
    def task(self) -> asyncio.Task[None] | None:
        """The task mixing frames while it runs (None while stopped)."""
        return self._task

    @property
    def closed(self) -> bool:
        """True once closed (its room closed): it takes no consumer any more."""
        return self._closed

    @property
    def consumers(self) -> int:
        """Outputs and mixed receivers attached."""
        return sum(len(s.outputs) + len(s.receivers) for s in self._streams.values())

    def stats(self) -> dict[str, Any]:
        """Counters: frames mixed, skipped, CPU seconds spent decoding, mixing, encoding."""
        decode, mix, encode = self._timing
        return {
            "running": self.running,
            "streams": len(self._streams),
            "speakers": len(self._speakers),
            "frames": self.frames,
            "skipped_frames": self.skipped,
            "starts": self.starts,
            "failures": self.failures,
            "decode_seconds": decode,
            "mix_seconds": mix,
            "encode_seconds": encode,
            "concealed": self._mix_speakers.concealed(),
            "late": self._mix_speakers.late(),
            "trimmed": self._mix_speakers.trimmed(),
        }

    @property
    def ssrc(self) -> int:
        """SSRC of the room mix sent to mixed listeners."""
        return self._mix_streams.room_ssrc

    def ssrc_for(self, exclude: int) -> int:
        """The SSRC of the stream without speaker ``exclude`` (-1: the room mix)."""
        return self._mix_streams.ssrc_for(exclude)

    def forget(self, number: int) -> None:
        """Participant ``number`` left for good (a rejoin gets a new number):
        drop the SSRC of the stream without it, and where that stream stopped,
        unless the stream is still in use."""
        self._mix_streams.forget(number)

    # -- consumers -------------------------------------------------------------------

    def _stream(self, exclude: int) -> MixStream:
        if self._closed:
            raise RoomClosed(f"room {self.name!r} is closed: its mixer takes no consumer")
        return self._mix_streams.get(exclude, self.bitrate, self.router.cname)

    def add_output(
        self,
        callback: OutputCallback,
        *,
        exclude: int = -1,
        on_close: Callable[[], None] | None = None,
        on_gap: Callable[[int], None] | None = None,
    ) -> MixOutput:
        """Receive every encoded packet of the room mix (or of the mix without
        speaker number ``exclude``) as ``callback(packet, samples, now)``, from the
        next frame on; starts the mixer. ``on_close`` is called if the mixer
        closes first (the room closed); ``on_gap(samples)`` when frames were
        skipped after a stall (an output that keeps time, a recording, fills
        them), of the frames due after it was added (``output.since``): those
        due before are not its (a lagging task may still deliver some of
        them: ``now`` says when each was due). Callbacks run in the mixing
        task: they must not block; one that raises is removed. Raises :class:`~sfu.errors.RoomClosed` once the
        room (and so its mixer) is closed.
        """
        stream = self._stream(exclude)
        output = MixOutput(self, stream, callback, on_close, on_gap)
        stream.outputs.append(output)
        self._start()
        assert self._loop is not None
        output.since = self._loop.time()
        return output

    def remove_output(self, output: MixOutput) -> None:
        """Detach ``output``; the mixer stops within one frame when it was the last."""
        if output.closed:
            return
        output.closed = True
        stream = output._stream
        if output in stream.outputs:
            stream.outputs.remove(output)
        self._mix_streams.drop_if_empty(stream)

    def add_receiver(self, participant: Participant) -> None:
        """Send the mix to a connected participant as RTP (a mixed listener): the
        stream its answer announced (the mix without its own voice when it
        could publish then)."""
        session = participant.session
        if session is None or session.srtp_tx is None or session.address is None:
            return
        if self._sock is None:
            raise RuntimeError("this mixer has no socket to send RTP from")
        stream = self._stream(participant._mix_exclude)
        if stream.fanout is None:
            stream.fanout = FanOut(self._sock)
        negotiation = participant.negotiation
        stream.fanout.add_receiver(
            participant.receiver_id,
            session.address,
            session.srtp_tx,
            payload_type=negotiation.payload_type,
            audio_level_id=negotiation.audio_level_id,
            slot_count=1,
        )
        sent, octets = self._mix_receivers.add(participant.receiver_id, stream, stream.fanout)
        self.packets_out += sent
        self.payload_bytes_out += octets
        self._start()

    def set_receiver_address(self, participant: Participant) -> None:
        """Send a mixed member's stream to its session's new address (a NAT rebinding)."""
        self._mix_receivers.set_address(participant)

    def remove_receiver(self, participant: Participant, *, keep_counts: bool = False) -> None:
        """``keep_counts``: it may be registered again (a renegotiation), on
        this stream or, its role changed, another: what was sent to it on this
        one stays counted, should it get this one again (:meth:`forget_receiver`
        once it is gone for good). Without it, it is gone for good."""
        stream = self._mix_receivers.remove(participant.receiver_id, keep_counts)
        if stream is not None:
            self._mix_streams.drop_if_empty(stream)

    def receiver_ssrc(self, participant: Participant) -> int | None:
        """The SSRC of the stream a mixed receiver gets, or None if it gets none."""
        stream = self._mix_receivers.streams.get(participant.receiver_id)
        return stream.ssrc if stream is not None else None

    def forget_receiver(self, receiver_id: int) -> None:
        """The receiver is gone for good (it left): nothing of it is kept."""
        self._mix_receivers.carried.pop(receiver_id, None)

    def sender_report(self, participant: Participant, now: float, unix_time: float) -> bytes | None:
        """An RTCP SR for the mix a receiver gets (RFC 3550 6.4.1), with its SDES
        CNAME (6.1): its receiver reports then carry what a round trip needs,
        as for slot streams. ``now`` (loop time) and ``unix_time`` (wall
        clock) are the same instant: the SR maps the NTP time of
        ``unix_time`` to the stream's RTP clock at ``now``, the last frame's
        timestamp plus the time since that frame was due. None before the
        stream's first frame."""
        return self._mix_receivers.sender_report(participant, now, unix_time)

    def receiver_counters(self, participant: Participant) -> list[tuple[int, int]]:
        """(packets, payload octets) sent to a mixed receiver, like the Router's."""
        return self._mix_receivers.counters(participant)

    # -- the task --------------------------------------------------------------------

    def _start(self) -> None:
        if self.running:
            return
        loop = self._loop or asyncio.get_running_loop()
        self._loop = loop
        self.starts += 1
        # Frame n (from 1) is due at epoch + n * PTIME: absolute deadlines, no drift.
        self._epoch = loop.time()
        self._frame = 0
        self._task = loop.create_task(self._run(), name=f"sfu-mixer-{self.name}")
        # Undone when the task ends, however it ends (even cancelled before it ran).
        self.router.taps.append(self._tap)
        self.router.released.append(self._mix_speakers.drop)
        self._task.add_done_callback(self._task_done)
        logger.info("mixer of room %r started", self.name)

    def _frame_time(self, frame: int) -> float:
        return self._epoch + frame * PTIME

    async def _run(self) -> None:
        assert self._loop is not None
        loop = self._loop
        try:
            while self._streams and not self._closed:
                self._frame += 1
                delay = self._frame_time(self._frame) - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                else:
                    if delay < -MAX_CATCH_UP:
                        # Stalled: skip the lost time rather than burst it out.
                        behind = int(-delay / PTIME)
                        self._frame += behind
                        self.skipped += behind
                        self._skip(self._frame - behind, behind)
                    await asyncio.sleep(0)  # catching up: let the loop breathe
                if not self._streams or self._closed:
                    break
                deadline = self._frame_time(self._frame)
                if deadline > self._done:  # else catch_up() mixed it already
                    self.step(deadline)
        except Exception as exc:  # a bug: said, and every consumer let go, not left waiting
            self._failed(exc)
        finally:
            self._detach_from_router()
            for number in list(self._speakers):
                self._mix_speakers.drop(number)
            logger.info("mixer of room %r stopped after %d frames", self.name, self.frames)

    def _failed(self, error: Exception) -> None:
        """The task failed: log it, end every consumer, tell the owner."""
        self.failures += 1
        logger.error(
            "mixer of room %r failed after %d frames; its recordings, live streams and "
            "mixed receivers end",
            self.name,
            self.frames,
            exc_info=error,
        )
        receivers = self._end_consumers()
        if self.on_failure is not None:
            try:
                self.on_failure(error, receivers)
            except Exception:
                logger.exception("mixer of room %r: its failure callback failed", self.name)

    def catch_up(self, now: float) -> None:
        """Mix at once every frame due by loop time ``now`` that the task has
        not mixed yet (it lags under load): a recorder calls this before it
        stops, so that its file ends at the wall-clock time of the stop."""
        if not self.running:
            return
        frame = max(self._frame, 1)
        stale = 0  # frames over MAX_CATCH_UP old: skipped (outputs told), as the task does
        while self._frame_time(frame) <= now:
            deadline = self._frame_time(frame)
            if deadline > self._done:
                if now - deadline >= MAX_CATCH_UP:
                    stale += 1
                else:
                    if stale:
                        self.skipped += stale
                        self._skip(frame - stale, stale)
                        stale = 0
                    self.step(deadline)
            frame += 1
        if stale:
            self.skipped += stale
            self._skip(frame - stale, stale)
        # The task goes on after the last frame handled here: none is both
        # mixed here and skipped there.
        self._frame = max(self._frame, frame - 1)

    async def wait_stopped(self) -> None:
        """Wait until the mixing task has ended (it ends once no consumer is left).

        Returns at once when the mixer is not running or still has
        consumers; otherwise waits at most one frame. Safe to cancel: the
        task is not cancelled with it.
        """
        task = self._task
        if task is None or task.done():
            return
        if task is asyncio.current_task() or (self._streams and not self._closed):
            return  # still consumed: it is not stopping
        await asyncio.wait([task])

    async def close(self) -> None:
        """Stop mixing now: every output's ``on_close`` is called, receivers are
        dropped and the task is awaited; idempotent."""
        self._close_now()
        await self.wait_stopped()

    def _close_now(self) -> None:
        """What :meth:`close` does without waiting: outputs told (a recording is
        finished when this returns), receivers dropped; the task ends at its
        next frame (:meth:`wait_stopped`). Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._end_consumers()

    def _end_consumers(self) -> list[int]:
        """Detach every output (its ``on_close`` called) and mixed receiver;
        the receivers' ids, which get no mix from now on."""
        streams = list(self._streams.values())
        receivers = self._mix_receivers.clear()
        self._streams.clear()
        for stream in streams:
            self._mix_streams.stopped(stream)
            for output in stream.outputs:
                output.closed = True
                if output.on_close is not None:
                    try:
                        output.on_close()
                    except Exception:
                        logger.exception("mixer output close callback failed")
            stream.outputs.clear()
            if stream.fanout is not None:
                stream.fanout.close()
        return receivers

    # -- the Router ----------------------------------------------------------------

    def _task_done(self, task: asyncio.Task[None]) -> None:
        if self._task is task:  # (not a task a restart has replaced)
            self._detach_from_router()

    def _detach_from_router(self) -> None:
        if self._tap in self.router.taps:
            self.router.taps.remove(self._tap)
        if self._mix_speakers.drop in self.router.released:
            self.router.released.remove(self._mix_speakers.drop)

    # -- one frame -------------------------------------------------------------------

    def step(self, now: float) -> None:
        """Mix and encode the frame due at loop time ``now`` (the task calls this every 20 ms)."""
        self._done = max(self._done, now)
        timing = self._timing
        frames: list[tuple[int, int, bytes]] = []  # (level, number, pcm)
        gone: list[int] = []
        for number, speaker in self._speakers.items():
            pcm = speaker.pull(timing)
            if pcm is not None:
                frames.append((speaker.level, number, pcm))
            elif now - speaker.last_packet > SPEAKER_TIMEOUT:
                gone.append(number)
        for number in gone:
            self._mix_speakers.drop(number)
        next_loudest: tuple[int, int, bytes] | None = None
        if self.max_speakers is not None and len(frames) > self.max_speakers:
            frames.sort()  # lowest level byte (-dBov) = loudest first
            # A mix-minus of one of those kept has room for the next one.
            next_loudest = frames[self.max_speakers]
            del frames[self.max_speakers :]

        started = time.thread_time()
        acc = self._acc
        acc[:] = self._zero
        for _, _, pcm in frames:
            mix_add(acc, pcm)
        own = {number: pcm for _, number, pcm in frames}
        full_energy = -1
        mixed = time.thread_time()
        timing[1] += mixed - started
        contributors = len(frames)
        ranked = sorted(frames)  # loudest first: each stream names its loudest contributor

        with_next: bytearray | None = None
        for stream in list(self._streams.values()):
            mine = own.get(stream.exclude)
            started = time.thread_time()
            heard = ranked
            if mine is not None:
                if next_loudest is not None:
                    if with_next is None:
                        with_next = bytearray(acc)
                        mix_add(with_next, next_loudest[2])
                    heard = [*ranked, next_loudest]
                energy = mix_limit(acc if with_next is None else with_next, self._minus, mine)
                pcm_out: bytes | bytearray = self._minus
                voiced = len(heard) > 1
            else:
                if full_energy < 0:
                    full_energy = mix_limit(acc, self._full)
                energy = full_energy
                pcm_out = self._full
                voiced = contributors > 0
            encoding = time.thread_time()
            timing[1] += encoding - started
            packets = stream.encoder.encode(bytes(pcm_out))
            timing[2] += time.thread_time() - encoding
            level = mixed_level(energy, voiced)
            csrc = self._csrc(heard, stream.exclude)
            for packet in packets:
                self._deliver(stream, packet, now, level, csrc)
        self.frames += 1

    def _csrc(self, ranked: list[tuple[int, int, bytes]], exclude: int) -> int:
        """The CSRC of the loudest contributor to a stream without ``exclude``
        (the FanOut writes exactly one); 0 when nobody is in it."""
        for _, number, _ in ranked:
            if number != exclude:
                speaker = self._speakers.get(number)
                return speaker.csrc if speaker is not None else 0
        return 0

    def _skip(self, first: int, frames: int) -> None:
        """``frames`` frames from frame ``first`` on were skipped after a stall:
        the streams' RTP timestamps move on by as much (with the marker of a
        new talkspurt, RFC 3551 4.1) and outputs that keep time are told of
        those due after they were added, so that both still count real time."""
        samples = frames * FRAME_SAMPLES
        for stream in list(self._streams.values()):
            stream.timestamp = (stream.timestamp + samples) & 0xFFFFFFFF
            stream.marker = True
            for output in list(stream.outputs):
                if output.on_gap is None:
                    continue
                missed = self._frames_after(first, frames, output.since)
                if not missed:
                    continue
                try:
                    output.on_gap(missed * FRAME_SAMPLES)
                except Exception:
                    logger.exception("mixer output %r failed on a gap: removed", output.callback)
                    self._fail_output(output)

    def _frames_after(self, first: int, frames: int, since: float) -> int:
        """How many of the ``frames`` frames from ``first`` on are due after loop time ``since``."""
        frame = first
        if self._frame_time(frame) <= since:
            frame = max(first, math.floor((since - self._epoch) / PTIME))
            while self._frame_time(frame) <= since:
                frame += 1
        return max(0, first + frames - frame)

    def _fail_output(self, output: MixOutput) -> None:
        self.remove_output(output)
        if output.on_close is not None:
            # Its owner (a recorder, a live stream) finishes as if the room had closed.
            try:
                output.on_close()
            except Exception:
                logger.exception("closing mixer output %r failed", output.callback)

    def _deliver(self, stream: MixStream, packet: bytes, now: float, level: int, csrc: int) -> None:
        samples = FRAME_SAMPLES
        stream.recent.append(packet)
        for output in list(stream.outputs):
            try:
                output.callback(packet, samples, now)
            except Exception:
                logger.exception("mixer output %r failed: removed", output.callback)
                self._fail_output(output)
        if stream.fanout is not None and len(stream.fanout):
            receivers = len(stream.fanout)
            sent = stream.fanout.forward(
                0,
                packet,
                0,
                stream.ssrc,
                stream.sequence,
                stream.timestamp,
                stream.marker,
                csrc,
                level,
                -1,
            )
            self.packets_out += sent
            self.packets_out_dropped += receivers - sent
            self.payload_bytes_out += sent * len(packet)
            stream.marker = False
        stream.sent_timestamp = stream.timestamp
        stream.sent_due = now
        stream.sequence = (stream.sequence + 1) & 0xFFFF
        stream.timestamp = (stream.timestamp + samples) & 0xFFFFFFFF
