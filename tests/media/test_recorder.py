"""Recording a room (room.record): the mix and per-speaker passthrough files, read back.

Two aiortc speakers play 440 Hz and 1000 Hz; the mix file must hold both
tones (each band >= 20 % of the energy, :data:`tests.media.mixing.PRESENT`);
each speaker file must carry exactly the payloads its speaker sent, placed
by RTP timestamp; every file lasts the wall time of the recording (2 %).
"""

from __future__ import annotations

import asyncio
import errno
import io
import os
import random
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

import sfu
from sfu.media.mixer import Mixer
from sfu.media.ogg import (
    FIRST_PAGE,
    LAST_PAGE,
    packet_samples,
    parse_opus_head,
    parse_pages,
    read_packets,
)
from sfu.media.opus import FRAME_SAMPLES
from sfu.media.recorder import (
    SILENCE_MONO,
    SILENCE_STEREO,
    Recorder,
    SpeakerTrack,
    _six_frames,
    _speaker_file_name,
)
from sfu.media.router import Publisher, Router

from ..clients import Client, join, wait_for
from .mixing import assert_tones, decode_ogg, opus_tone, speak_once

RECORD_SECONDS = 3.0


def container_duration(path: Path) -> float:
    with av.open(str(path)) as container:
        assert container.duration is not None
        return float(container.duration) / 1e6


def decoded_duration(path: Path) -> float:
    """Seconds of audio FFmpeg decodes of the file: what ``len(decode_ogg(...)) / 48000``
    says, counted from the decoded frames without making them one array (an
    hour is 170 million samples)."""
    samples = 0
    with av.open(io.BytesIO(path.read_bytes()), format="ogg") as container:
        for frame in container.decode(audio=0):
            # Planar (one row per channel, what decode_ogg averages) or mono.
            assert frame.format.is_planar or len(frame.layout.channels) == 1
            samples += frame.samples
    return samples / 48000


def ffprobe_duration(path: Path) -> float | None:
    if shutil.which("ffprobe") is None:
        return None
    result = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0", str(path)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stderr == "", result.stderr  # e.g. CRC mismatches
    return float(result.stdout)


def assert_well_formed(path: Path) -> list[bytes]:
    """Valid pages (CRC, sequence), BOS first, EOS last; returns the audio packets."""
    data = path.read_bytes()
    pages = list(parse_pages(data))
    assert pages[0].header_type == 0x02 and pages[-1].header_type & LAST_PAGE
    assert [p.sequence for p in pages] == list(range(len(pages)))
    assert len({p.serial for p in pages}) == 1
    packets = [packet for packet, _ in read_packets(data)]
    assert packets[0].startswith(b"OpusHead") and packets[1].startswith(b"OpusTags")
    return packets[2:]


def decode_checked(path: Path) -> tuple[int, list[tuple[float, float]]]:
    """Decode a file with PyAV (FFmpeg's demuxer checks each page's CRC and
    says so at WARNING or worse, which fails here): the samples decoded, and
    each decoded frame's (start in seconds, peak). Frame by frame: a long
    file is never held whole."""
    import av.logging

    level = av.logging.get_level()
    av.logging.set_level(av.logging.WARNING)
    samples = 0
    peaks = []
    try:
        with av.logging.Capture() as logs, av.open(str(path)) as container:
            for frame in container.decode(audio=0):
                peaks.append((samples / 48000, float(np.abs(frame.to_ndarray()).max())))
                samples += frame.samples
    finally:
        av.logging.set_level(level)
    complaints = [line for line in logs if line[0] <= av.logging.WARNING]
    assert not complaints, f"{path.name}: {complaints}"
    return samples, peaks


def last_granule(data: Path | bytes) -> int:
    """The granule of the last page a packet completes on (an empty end page
    that follows a flush has none: -1, RFC 3533 section 6): the stream's length."""
    if isinstance(data, Path):
        data = data.read_bytes()
    return [page.granule for page in parse_pages(data) if page.granule >= 0][-1]


def assert_duration(path: Path, wall: float) -> None:
    durations = {"decoded": decoded_duration(path), "container": container_duration(path)}
    probed = ffprobe_duration(path)
    if probed is not None:
        durations["ffprobe"] = probed
    for what, seconds in durations.items():
        assert abs(seconds - wall) <= 0.02 * wall, (
            f"{path.name}: {what} {seconds:.3f} s vs wall {wall:.3f} s"
        )


async def speakers(room: sfu.Room) -> tuple[Client, Client]:
    a = await join(room, "alice", speaker=True, frequency=440)
    b = await join(room, "bob", speaker=True, frequency=1000)
    await wait_for(lambda: len(a.sent) > 25 and len(b.sent) > 25, 15, "both speakers sending")
    await wait_for(lambda: len([s for s in room.stage() if s]) == 2, 10, "both speakers on stage")
    return a, b


async def test_record_mix_and_per_speaker(tmp_path: Path) -> None:
    async with sfu.Server() as server:
        room = server.room("studio")
        a, b = await speakers(room)
        try:
            loop = asyncio.get_running_loop()
            path = tmp_path / "talk.opus"
            started = loop.time()
            recorder = await room.record(path, per_speaker=True)
            assert room.mixer.running and recorder.recording
            sent_before = {c.identity: len(c.sent) for c in (a, b)}
            await asyncio.sleep(RECORD_SECONDS)
            sent_after = {c.identity: len(c.sent) for c in (a, b)}
            await recorder.stop()
            wall = loop.time() - started
            await recorder.stop()  # idempotent
            assert not room.mixer.running, "the recorder was the mixer's only consumer"
            assert room.router.taps == []
        finally:
            await asyncio.gather(a.close(), b.close())

    # The mix: both tones, no wrap, the right length, readable by FFmpeg.
    assert_well_formed(path)
    channels, pre_skip, _ = parse_opus_head(next(read_packets(path.read_bytes()))[0])
    assert channels == 1 and pre_skip > 0
    mix = decode_ogg(path.read_bytes())
    assert_tones(mix[48000 // 2 :], present=[440, 1000])
    assert abs(mix).max() < 32767
    assert_duration(path, wall)

    # Per speaker: payloads byte-identical to what each one sent, in order.
    assert set(recorder.speaker_paths) == {"alice", "bob"}
    for client in (a, b):
        speaker_path = recorder.speaker_paths[client.identity]
        assert speaker_path == tmp_path / f"talk-{client.identity}.opus"
        packets = assert_well_formed(speaker_path)
        silence = {SILENCE_MONO, SILENCE_STEREO}
        written = [p for p in packets if p not in silence]
        sent = [payload for _, _, _, payload in client.sent]
        # A tone repeats its packets: find every place the written run fits.
        starts = [
            start
            for start in range(len(sent) - len(written) + 1)
            if sent[start : start + len(written)] == written
        ]
        assert starts, "the file does not hold a run of the sent payloads, in order"
        # Everything sent while recording (give or take the edges) is in the file.
        assert any(
            start <= sent_before[client.identity] + 5
            and start + len(written) >= sent_after[client.identity] - 5
            for start in starts
        ), (starts, len(written), sent_before, sent_after)
        assert_duration(speaker_path, wall)
        # Granule positions follow the RTP timestamps: the position of each
        # written packet minus the first's equals their timestamp difference.
        data = speaker_path.read_bytes()
        position = 0
        positions = []
        for packet, _ in list(read_packets(data))[2:]:
            if packet not in silence:
                positions.append(position)
            position += FRAME_SAMPLES
        offsets = [p - positions[0] for p in positions]
        assert any(
            offsets
            == [
                (ts - client.sent[start][2]) & 0xFFFFFFFF
                for _, _, ts, _ in client.sent[start : start + len(written)]
            ]
            for start in starts
        ), "packets are not placed by their RTP timestamps"
        pages = list(parse_pages(data))
        assert pages[-1].granule == position  # pre-skip 0: granule = samples


async def test_room_close_finalises_a_recording(tmp_path: Path) -> None:
    async with sfu.Server() as server:
        room = server.room("closing")
        recorder = await room.record(tmp_path / "x.opus", per_speaker=True)
        await asyncio.sleep(0.5)
        await room.close()
        assert not recorder.recording and not room.mixer.running
        await recorder.stop()  # still fine
        with pytest.raises(sfu.RoomClosed):
            await room.record(tmp_path / "y.opus")
    packets = assert_well_formed(tmp_path / "x.opus")
    assert 15 <= len(packets) <= 30


@pytest.mark.parametrize(
    ("arguments", "fragment"),
    [
        ({"path": None}, "path must be a file path"),
        ({"path": ""}, "path must be a file path"),
        ({"path": 5}, "path must be a file path"),
        ({"path": "x.opus", "per_speaker": "yes"}, "per_speaker must be True or False"),
    ],
)
async def test_bad_record_arguments_are_refused_and_start_nothing(
    tmp_path: Path, arguments: dict[str, object], fragment: str
) -> None:
    async with sfu.Server() as server:
        room = server.room("bad")
        path = arguments.pop("path")
        with pytest.raises(sfu.InvalidSetting, match=fragment):
            await room.record(path, **arguments)  # type: ignore[arg-type]
        assert not room.mixer.running


async def test_a_file_another_recording_writes_is_refused(tmp_path: Path) -> None:
    """Two recordings of one file would both write it (the second one's open
    emptied it under the first): one asked for while another writes that file,
    in the same room or another, is refused until that one stops: by any
    name of it (a symbolic link to it or to its folder, a hard link)."""
    async with sfu.Server() as server:
        first = await server.room("one").record(tmp_path / "show.opus")
        (tmp_path / "link.opus").symlink_to(tmp_path / "show.opus")
        (tmp_path / "folder").symlink_to(tmp_path, target_is_directory=True)
        os.link(tmp_path / "show.opus", tmp_path / "hard.opus")
        names = (
            tmp_path / "show.opus",
            f"{tmp_path}/./show.opus",
            tmp_path / "link.opus",
            tmp_path / "folder" / "show.opus",
            tmp_path / "hard.opus",
        )
        for name in ("one", "two"):
            for path in names:
                with pytest.raises(sfu.InvalidSetting, match="being recorded"):
                    await server.room(name).record(path)
        assert not server.room("two").mixer.running
        await asyncio.sleep(0.2)
        await first.stop()
        again = await server.room("two").record(tmp_path / "show.opus")
        await asyncio.sleep(0.2)
        await again.stop()
    assert_well_formed(tmp_path / "show.opus")


async def test_two_recordings_may_write_to_a_device() -> None:
    """Opening /dev/null empties nothing: the guard is for regular files."""
    async with sfu.Server() as server:
        first = await server.room("one").record("/dev/null")
        second = await server.room("two").record("/dev/null")
        await asyncio.sleep(0.1)
        await asyncio.gather(first.stop(), second.stop())


async def test_a_speaker_file_is_never_one_another_recording_writes(tmp_path: Path) -> None:
    """``talk.opus`` per speaker names alice's file ``talk-alice.opus``; while
    another recording writes that file, alice's gets another name."""
    import socket

    from sfu.media.mixer import Mixer
    from sfu.media.recorder import Recorder
    from sfu.media.router import Publisher, Router

    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    router = Router(sock, 3)
    mixer = Mixer(router)
    loop = asyncio.get_running_loop()
    other = Recorder(mixer, tmp_path / "talk-alice.opus")
    other.start(loop.time())
    recorder = Recorder(
        mixer, tmp_path / "talk.opus", per_speaker=True, identity_of=lambda number: "alice"
    )
    recorder.start(loop.time())
    alice = Publisher(number=7, payload_type=111, audio_level_id=1, ssrc=7)
    payload = opus_tone(440, 1)[0]
    for tap in list(router.taps):
        tap(alice, bytes([0x80, 111]) + bytes(10) + payload, 12, 0, 0, 0, loop.time())
    await recorder.stop()
    await other.stop()
    await mixer.close()
    router.close()
    sock.close()
    assert recorder.speaker_paths["alice"] != tmp_path / "talk-alice.opus"
    assert_well_formed(tmp_path / "talk-alice.opus")
    assert_well_formed(recorder.speaker_paths["alice"])


async def test_a_room_closing_while_the_mixer_lags_ends_the_mix_file_at_the_close(
    tmp_path: Path,
) -> None:
    """As recorder.stop() does: the frames due by the close are mixed first,
    so the mix file lasts until the close, as the speaker files do (it ended
    up to a second early: what the lagging task had not mixed yet)."""
    import time

    async with sfu.Server() as server:
        room = server.room("lagging")
        loop = asyncio.get_running_loop()
        recorder = await room.record(tmp_path / "l.opus", per_speaker=True)
        await asyncio.sleep(0.3)
        time.sleep(0.6)  # the event loop stalls, less than the mixer catches up
        wall = loop.time() - recorder.started_at
        await room.close()
    assert not recorder.recording
    assert abs(recorder.duration - wall) < 0.06, (recorder.duration, wall)
    assert_well_formed(tmp_path / "l.opus")


async def test_a_recording_started_while_the_mixer_lags_starts_at_the_record_call(
    tmp_path: Path,
) -> None:
    """Another consumer keeps the mixer running; the loop stalls (less than the
    mixer catches up, then more) and record() is called right after: the
    frames due before the call, mixed late or skipped, are not in the new
    file (they made it up to the stall longer than the time it covers, and
    out of line with the speaker files, which start at the call)."""
    import time

    from sfu.media.mixer import MAX_CATCH_UP

    async with sfu.Server() as server:
        room = server.room("busy")
        loop = asyncio.get_running_loop()
        first = await room.record(tmp_path / "first.opus")
        for stall, name in ((0.6, "lagging"), (MAX_CATCH_UP + 1.0, "stalled")):
            await asyncio.sleep(0.3)
            time.sleep(stall)  # the event loop stalls
            recorder = await room.record(tmp_path / f"{name}.opus")
            await asyncio.sleep(0.5)
            wall = loop.time() - recorder.started_at
            await recorder.stop()
            assert abs(recorder.duration - wall) < 0.05, (name, recorder.duration, wall)
            assert abs(container_duration(tmp_path / f"{name}.opus") - wall) < 0.05, name
        wall = loop.time() - first.started_at
        await first.stop()
    assert abs(first.duration - wall) < 0.15, (first.duration, wall)


async def test_stop_before_the_first_frame_still_makes_a_valid_file(tmp_path: Path) -> None:
    async with sfu.Server() as server:
        room = server.room("quick")
        recorder = await room.record(tmp_path / "q.opus")
        await recorder.stop()
    assert len(assert_well_formed(tmp_path / "q.opus")) >= 1
    assert container_duration(tmp_path / "q.opus") < 0.1


@pytest.mark.compiled_and_python_alike
def test_speaker_track_fills_gaps_and_drops_late_packets(tmp_path: Path) -> None:
    packets = opus_tone(440, 10)
    track = SpeakerTrack(tmp_path / "s.opus", start=10.0)
    out = track.packet(5, 1000, packets[0], now=10.5)  # 0.5 s in: 25 frames of silence first
    assert track.position == 26 * FRAME_SAMPLES and track.filled == 25
    out += track.packet(5, 1960, packets[1], now=10.52)
    out += track.packet(5, 1960 + 48000, packets[2], now=11.52)  # 1 s of DTX: 49 frames filled
    assert track.filled == 25 + 49
    out += track.packet(5, 1960, packets[3], now=11.53)  # older than what is written
    assert track.late == 1
    out += track.packet(9, 77, packets[4], now=12.0)  # a new SSRC: placed by the wall clock
    assert track.position == round(2.0 * 48000) + FRAME_SAMPLES
    out += track.finish(now=13.0)
    assert track.position == 3 * 48000
    written = [p for p, _ in read_packets(out)][2:]
    silence = (SILENCE_MONO, _six_frames(SILENCE_MONO))  # gaps go in packets of 6 frames
    assert [p for p in written if p not in silence] == [packets[i] for i in (0, 1, 2, 4)]
    assert sum(packet_samples(p) for p in written) == 150 * FRAME_SAMPLES
    assert len(written) < 60
    (tmp_path / "s.opus").write_bytes(out)
    assert abs(decoded_duration(tmp_path / "s.opus") - 3.0) < 0.001


@pytest.mark.compiled_and_python_alike
def test_a_speaker_silent_for_an_hour_stays_in_line_at_a_small_cost(tmp_path: Path) -> None:
    """The first packet after an hour's mute fills the hour (the file stays in
    line with the wall clock, the mix and the other speakers' files), in
    120 ms packets: a sixth of the pages a frame each would make."""
    packets = opus_tone(440, 3)
    track = SpeakerTrack(tmp_path / "s.opus", start=0.0)
    out = track.packet(5, 0, packets[0], now=0.0)
    out += track.packet(5, 960 + 3600 * 48000, packets[1], now=3600.02)
    assert track.duration == pytest.approx(3600.04, abs=0.001)
    out += track.packet(5, 1920 + 3600 * 48000, packets[2], now=3600.04)
    out += track.finish(now=3600.06)
    written = [p for p, _ in read_packets(out)][2:]
    assert len(written) < 3600 * 50 / 6 + 10
    assert [p for p in written if p not in (SILENCE_MONO, _six_frames(SILENCE_MONO))] == packets
    (tmp_path / "s.opus").write_bytes(out)
    assert abs(decoded_duration(tmp_path / "s.opus") - 3600.06) < 0.001


async def test_a_speaker_who_reconnects_goes_on_in_one_file(tmp_path: Path) -> None:
    """Keyed by identity, not by the participant's number: a rejoin writes on
    in the same file, and no file stays open between writes."""
    import os
    import socket

    from sfu.media.mixer import Mixer
    from sfu.media.recorder import Recorder
    from sfu.media.router import Publisher, Router

    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    router = Router(sock, 3)
    mixer = Mixer(router)
    recorder = Recorder(
        mixer, tmp_path / "talk.opus", per_speaker=True, identity_of=lambda number: "alice"
    )
    loop = asyncio.get_running_loop()
    recorder.start(loop.time())
    descriptors = len(os.listdir("/proc/self/fd"))
    now = loop.time()
    payload = opus_tone(440, 1)[0]
    for number in range(10, 30):  # twenty reconnects of one person
        alice = Publisher(number=number, payload_type=111, audio_level_id=1, ssrc=number)
        for sequence in range(5):
            packet = bytes([0x80, 111]) + bytes(10) + payload
            for tap in list(router.taps):
                tap(alice, packet, 12, sequence, sequence * 960, 0, now)
            now += 0.02
    assert len(os.listdir("/proc/self/fd")) <= descriptors
    await recorder.stop()
    await mixer.close()
    router.close()
    sock.close()
    assert list(recorder.speaker_paths) == ["alice"]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["talk-alice.opus", "talk.opus"]
    written = [p for p in assert_well_formed(tmp_path / "talk-alice.opus") if p == payload]
    assert len(written) == 100


async def test_speakers_that_come_and_go_leave_nothing_behind(tmp_path: Path) -> None:
    """A long recording of a room where people join, speak and leave keeps
    per speaker only its file: nothing per participant number (each join
    has a new one) once that participant is gone."""
    import socket

    from sfu.media.mixer import Mixer
    from sfu.media.recorder import Recorder
    from sfu.media.router import Router

    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    router = Router(sock, 3)
    mixer = Mixer(router)
    recorder = Recorder(
        mixer,
        tmp_path / "talk.opus",
        per_speaker=True,
        identity_of=lambda number: f"guest{number % 2}",
    )
    loop = asyncio.get_running_loop()
    recorder.start(loop.time())
    now = loop.time()
    payload = opus_tone(440, 1)[0]
    for number in range(10, 210):  # two people joining a hundred times each
        now = speak_once(router, number, payload, now)
    assert len(recorder._track_of) <= 2, len(recorder._track_of)
    await recorder.stop()
    assert recorder._released not in router.released
    await mixer.close()
    router.close()
    sock.close()
    assert sorted(recorder.speaker_paths) == ["guest0", "guest1"]
    for name in ("talk-guest0.opus", "talk-guest1.opus"):
        written = [p for p in assert_well_formed(tmp_path / name) if p == payload]
        assert len(written) == 300


@pytest.mark.compiled_and_python_alike
def test_silence_frames_decode_to_silence() -> None:
    for frame, channels in ((SILENCE_MONO, 1), (SILENCE_STEREO, 2)):
        context = av.CodecContext.create("libopus", "r")
        context.sample_rate = 48000
        context.layout = "mono" if channels == 1 else "stereo"
        context.open()
        frames = [f for _ in range(3) for f in context.decode(av.Packet(frame))]
        assert [f.samples for f in frames] == [960] * 3
        assert all(np.abs(f.to_ndarray()).max() == 0 for f in frames)


async def test_a_long_stall_leaves_the_mix_file_as_long_as_the_wall_clock(
    tmp_path: Path,
) -> None:
    """The mixer skips what it cannot catch up; the recording fills it with
    silence, so the file still lasts from record() to stop()."""
    import time

    async with sfu.Server() as server:
        room = server.room("stalled")
        loop = asyncio.get_running_loop()
        recorder = await room.record(tmp_path / "s.opus")
        await asyncio.sleep(0.3)
        time.sleep(1.8)  # the event loop stalls: past the mixer's catch-up
        await asyncio.sleep(0.3)
        wall = loop.time() - recorder.started_at
        await recorder.stop()
        assert room.mixer.skipped > 0
    assert abs(recorder.duration - wall) < 0.15, (recorder.duration, wall)
    assert_well_formed(tmp_path / "s.opus")
    assert abs(container_duration(tmp_path / "s.opus") - wall) < 0.15


@pytest.mark.compiled_and_python_alike
def test_a_quiet_speaker_is_filled_as_time_passes_and_resumes_in_place(tmp_path: Path) -> None:
    """Filled a second at a time while quiet (the recorder does it from the
    mix's frames), so the first packet after a long mute has almost nothing
    to fill; that packet (timestamp a whole pause on) lands at its wall time."""
    packets = opus_tone(440, 3)
    track = SpeakerTrack(tmp_path / "s.opus", start=0.0)
    out = track.packet(5, 0, packets[0], now=0.0)
    for second in range(3, 3601):  # what Recorder._fill_quiet_speakers does
        out += track.fill_to(second - 0.5)
    assert track.duration == pytest.approx(3599.5, abs=0.03)
    filled = track.filled
    out += track.packet(5, 3600 * 48000, packets[1], now=3600.0)
    assert track.filled - filled <= 26, "half a second, not an hour"
    assert track.duration == pytest.approx(3600.02, abs=0.001), "at its wall time"
    out += track.packet(5, 3600 * 48000 + 960, packets[2], now=3600.02)
    out += track.finish(now=3600.06)
    (tmp_path / "s.opus").write_bytes(out)
    assert abs(decoded_duration(tmp_path / "s.opus") - 3600.06) < 0.001


@pytest.mark.compiled_and_python_alike
def test_a_speaker_timeline_restarted_far_back_is_placed_by_the_wall_clock(
    tmp_path: Path,
) -> None:
    """A sender restarting its timestamps lower under one SSRC (or one stray
    packet far ahead) must not silence the rest of its file: only a packet
    less than a second behind what is written counts as reordered."""
    packets = opus_tone(440, 4)
    track = SpeakerTrack(tmp_path / "s.opus", start=0.0)
    for i in range(50):  # a second of speech from timestamp 10 s
        track.packet(5, 480000 + i * 960, packets[i % 4], now=i * 0.02)
    assert track.position == 50 * FRAME_SAMPLES
    for i in range(50):  # the same SSRC restarted at 0, a second later
        track.packet(5, i * 960, packets[i % 4], now=1.0 + i * 0.02)
    # Its first packet waits for a second to confirm the new timeline.
    assert track.packets == 99 and track.late == 1
    assert track.duration == pytest.approx(2.0, abs=0.021)
    track.packet(5, 2000 * 960, packets[0], now=2.0)  # a stray, 40 s ahead: written
    for i in range(1, 50):  # the stream goes on: one packet waits for the next
        track.packet(5, 100 * 960 + i * 960, packets[i % 4], now=2.0 + i * 0.02)
    assert track.packets == 148 and track.late == 2
    assert track.duration == pytest.approx(3.0, abs=0.021)
    track.packet(5, 5 * 960, packets[0], now=3.0)  # one stray far back: dropped
    track.packet(5, 150 * 960, packets[1], now=3.02)  # the stream goes on in place
    assert track.late == 3 and track.packets == 149
    assert track.duration == pytest.approx(3.04, abs=0.021)


@pytest.mark.compiled_and_python_alike
def test_a_speaker_clock_running_fast_stays_within_a_second_of_the_wall(
    tmp_path: Path,
) -> None:
    """Contiguous timestamps arriving 0.5 % faster than real time: the file
    would run ahead without bound; packets wait for the wall clock instead."""
    packet = opus_tone(440, 1)[0]
    track = SpeakerTrack(tmp_path / "s.opus", start=0.0)
    out = b""
    now = 0.0
    for i in range(30000):  # 600 s of speech by its own clock, 597 by the wall
        out += track.packet(5, i * 960, packet, now=now)
        now += 0.02 / 1.005
        assert track.position - round(now * 48000) <= 48000 + FRAME_SAMPLES
    assert track.ahead > 0
    out += track.finish(now=now)
    assert track.duration == pytest.approx(now, abs=1.0)
    (tmp_path / "s.opus").write_bytes(out)
    assert decoded_duration(tmp_path / "s.opus") == pytest.approx(track.duration, abs=0.001)


@pytest.mark.compiled_and_python_alike
def test_a_lost_10ms_packet_is_filled_with_10ms_of_silence(tmp_path: Path) -> None:
    """ptime 10 (legal, RFC 7587): a lost packet leaves a 480-sample gap, filled
    with a 10 ms silence frame, so the file does not slide 10 ms per loss."""
    packet = b"\xf0\xff\xfe"  # a CELT 10 ms frame
    track = SpeakerTrack(tmp_path / "s.opus", start=0.0)
    out = b""
    for i in range(1000):  # 10 s at 100 packets per second, 1 in 100 lost
        if i % 100 != 50:
            out += track.packet(9, i * 480, packet, now=i * 0.01)
    assert track.position == 1000 * 480
    assert track.filled == 10
    out += track.finish(now=10.0)
    (tmp_path / "s.opus").write_bytes(out)
    assert decoded_duration(tmp_path / "s.opus") == pytest.approx(10.0, abs=0.001)
    for size, toc in ((480, 0xF4), (240, 0xEC), (120, 0xE4)):  # stereo too
        stereo = SpeakerTrack(tmp_path / "t.opus", start=0.0)
        head = stereo.begin(SILENCE_STEREO)
        data = head + stereo._fill(FRAME_SAMPLES + size, exact=True) + stereo.finish(now=0.0)
        frame = [p for p, _ in read_packets(data)][-1]
        assert frame[0] == toc and packet_samples(frame) == size


@pytest.mark.compiled_and_python_alike
def test_a_file_a_little_ahead_of_the_wall_clock_loses_no_packet(tmp_path: Path) -> None:
    """A burst (packets held by the network, then sent at once) leaves the file
    ahead of the wall clock by a packet or more; a new SSRC then (a reconnect)
    goes on in place: only more than a second ahead makes packets wait."""
    packet = opus_tone(440, 1)[0]
    track = SpeakerTrack(tmp_path / "s.opus", start=0.0)
    for i in range(20):  # 400 ms of speech arriving within 20 ms
        track.packet(5, i * 960, packet, now=0.001 * i)
    assert track.position - track._wall_position(0.02) > 10 * FRAME_SAMPLES
    for i in range(5):  # reconnected, a new SSRC, 250 ms later
        track.packet(6, 77 + i * 960, packet, now=0.27 + 0.02 * i)
    assert track.packets == 25 and track.ahead == 0 and track.late == 0


@pytest.mark.compiled_and_python_alike
def test_a_burst_after_a_network_stall_is_written_whole(tmp_path: Path) -> None:
    """Packets held 1.5 s by the network arrive at once: placing the first by
    the wall clock would put the burst 1.5 s ahead of it and drop the excess;
    the stream is re-placed only if it stays behind for a second."""
    packet = opus_tone(440, 1)[0]
    track = SpeakerTrack(tmp_path / "s.opus", start=0.0)
    for i in range(100):  # 2 s of speech, on time
        track.packet(5, i * 960, packet, now=i * 0.02)
    for i in range(100, 175):  # 1.5 s held back, then delivered within 15 ms
        track.packet(5, i * 960, packet, now=3.5 + (i - 100) * 0.0002)
    for i in range(175, 250):  # on time again
        track.packet(5, i * 960, packet, now=3.5 + (i - 175) * 0.02)
    assert track.packets == 250 and track.ahead == 0 and track.late == 0
    ahead = track.position - track._wall_position(3.5 + 75 * 0.02)
    assert abs(ahead) <= FRAME_SAMPLES * 2, "back in line with the wall clock"


@pytest.mark.compiled_and_python_alike
def test_a_pause_with_frozen_timestamps_resumes_at_the_wall_clock(tmp_path: Path) -> None:
    """A sender whose timestamps do not advance while it is muted: the
    recorder fills the quiet time (as Recorder does once a second), and the
    first packet back is placed by the wall clock at once, not written a
    pause early (the grace for bursts is for stalls too short to be filled)."""
    packet = opus_tone(440, 1)[0]
    track = SpeakerTrack(tmp_path / "s.opus", start=0.0)
    for i in range(100):
        track.packet(5, i * 960, packet, now=i * 0.02)
    for second in range(3, 8):  # quiet: filled up to QUIET_LAG ago
        track.fill_to(second - 0.5)
    track.packet(5, 100 * 960, packet, now=8.0)  # back, the timestamp where it stopped
    assert track.position == round(8.0 * 48000) + FRAME_SAMPLES, "at its wall time"


def test_a_speaker_file_the_disk_took_again_places_packets_by_their_timestamps(
    tmp_path: Path,
) -> None:
    """A write fails: the track goes back to what the file holds (rewind), and
    once the disk takes it again (resume, then the stream's packets) the
    outage is silence and the stream's packets go where their timestamps
    say, as after lost packets: those sent a little before the disk came
    back and delivered in a burst are neither dropped nor put ahead of the
    wall clock (placed by it, the burst would have run 0.3 s ahead)."""
    packet = opus_tone(440, 1)[0]
    track = SpeakerTrack(tmp_path / "s.opus", start=0.0)
    data = b""
    for i in range(100):  # 2 s, on the disk
        data += track.packet(5, 1000 + i * 960, packet, now=i * 0.02)
    track.written()
    for i in range(100, 130):  # the disk refuses these pages
        track.packet(5, 1000 + i * 960, packet, now=i * 0.02)
    track.rewind()
    assert (track.position, track.packets, track.filled) == (50 * FRAME_SAMPLES, 50, 0)
    data += track.resume(5.0)  # back at 5 s: silence up to QUIET_LAG before
    assert track.position == round(4.5 * 48000)
    for i in range(235, 300):  # sent from 4.7 s, those until 5 s delivered then at once
        data += track.packet(5, 1000 + i * 960, packet, now=max(5.0, i * 0.02))
    data += track.finish(now=6.0)
    assert track.late == 0 and track.ahead == 0 and track.packets == 50 + 65
    assert track.position == 300 * FRAME_SAMPLES, "at their timestamps, not 0.3 s ahead"
    path = tmp_path / "s.opus"
    path.write_bytes(data)
    written = assert_well_formed(path)  # no gap in the page numbers
    assert written.count(packet) == 50 + 65
    samples, peaks = decode_checked(path)
    assert samples == 6 * 48000 == last_granule(path)
    assert max(peak for time, peak in peaks if 1.1 <= time <= 4.6) == 0, "the outage is silence"


async def test_recordings_keep_wall_time_through_a_stall_and_a_stop_after_it(
    tmp_path: Path,
) -> None:
    """The loop stalls longer than the mixer catches up; one recording stops
    right after (its stop mixes what is due), the other goes on. Both files
    are as long as the time they covered: the stale part of the stall is
    filled as a gap, not dropped, and nothing is counted twice."""
    import time

    from sfu.media.mixer import MAX_CATCH_UP

    async with sfu.Server() as server:
        room = server.room("r")
        loop = asyncio.get_running_loop()
        started = loop.time()
        going_on = await room.record(str(tmp_path / "b.opus"))
        stopped = await room.record(str(tmp_path / "a.opus"))
        await asyncio.sleep(0.5)
        time.sleep(MAX_CATCH_UP + 1.0)  # the loop stalls
        await stopped.stop()
        stopped_at = loop.time() - started
        await asyncio.sleep(0.6)  # the mixer task resumes
        await going_on.stop()
        total = loop.time() - started
    assert abs(stopped.duration - stopped_at) < 0.15, (stopped.duration, stopped_at)
    assert abs(going_on.duration - total) < 0.15, (going_on.duration, total)


class _DiskFillingFile(io.FileIO):
    """A real file on a disk with ``space`` bytes left (shared by all files):
    a write past it writes what fits, the next one fails with ENOSPC, as
    write(2) does on a full disk."""

    space = 0

    def write(self, data: Any) -> int:
        if _DiskFillingFile.space <= 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        fits = bytes(data[: _DiskFillingFile.space])
        written = super().write(fits) or 0
        _DiskFillingFile.space -= written
        return written


def _paused(recorder: Any) -> list[str]:
    stats = recorder.stats()
    return [name for name, file in [("mix", stats), *stats["speakers"].items()] if file["paused"]]


async def test_a_disk_that_fills_leaves_whole_pages_and_the_files_go_on_when_it_has_room(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Disk full part-way through a page: no file ends in a torn page (a
    player would reject it or stop there), and every file pauses, not the
    whole recording (it ended with its mix file). Space comes back: each
    file goes on, as long as the recording, the outage silence."""
    import sfu.media.recorder as recorder_module

    def open_on_a_small_disk(
        path: Any, mode: str = "r", buffering: int = -1, opener: Any = None
    ) -> io.FileIO:
        return _DiskFillingFile(path, mode.replace("b", ""))

    async with sfu.Server() as server:
        room = server.room("full")
        a, b = await speakers(room)
        try:
            _DiskFillingFile.space = 30_000  # a few seconds of three files
            monkeypatch.setattr(recorder_module, "open", open_on_a_small_disk, raising=False)
            recorder = await room.record(tmp_path / "talk.opus", per_speaker=True)
            await wait_for(lambda: len(_paused(recorder)) == 3, 10, "the disk to fill")
            await asyncio.sleep(0.5)  # the writes go on failing meanwhile
            assert recorder.recording
            assert _DiskFillingFile.space == 0
            files = sorted(tmp_path.glob("*.opus"))
            assert len(files) == 3
            audio_pages = 0
            for path in files:
                pages = list(parse_pages(path.read_bytes()))  # a torn page raises here
                assert pages[0].header_type == 0x02, path.name
                audio_pages += len(pages) - 2
            assert audio_pages > 0, "the disk filled with audio, not with headers"

            _DiskFillingFile.space = 1 << 30  # room again
            await wait_for(lambda: not _paused(recorder), 10, "the files to go on")
            await asyncio.sleep(1.0)
            await recorder.stop()
        finally:
            await asyncio.gather(a.close(), b.close())
    assert recorder.stopped_at is not None
    wall = recorder.stopped_at - recorder.started_at
    stats = recorder.stats()
    assert stats["lost"] > 0.5 and all(s["lost"] > 0.5 for s in stats["speakers"].values())
    for path in files:
        assert_well_formed(path)
        samples, _ = decode_checked(path)
        # A speaker file may run up to a second ahead of the wall clock (its
        # packets placed by their timestamps: the clients' packets come in a
        # burst now and then here, after a stall of the loop they share with
        # the server); the exact lengths are the next tests'.
        ahead = 0.02 * wall if path.name == "talk.opus" else 1.02
        for seconds in (samples / 48000, container_duration(path)):
            assert -0.02 * wall <= seconds - wall <= ahead, (path.name, seconds, wall)


class _Disk:
    """Every file on a fake disk (the recorder's ``open``): counts each open and
    write per file name; while ``full``, every write fails (ENOSPC)."""

    full = False
    opens: dict[str, int] = {}
    writes: dict[str, int] = {}

    class File(io.FileIO):
        def write(self, data: Any) -> int:
            name = Path(str(self.name)).name
            _Disk.writes[name] = _Disk.writes.get(name, 0) + 1
            if _Disk.full:
                raise OSError(errno.ENOSPC, "No space left on device")
            return super().write(data) or 0

    @staticmethod
    def open(path: Any, mode: str = "r", buffering: int = -1, opener: Any = None) -> io.FileIO:
        name = Path(path).name
        _Disk.opens[name] = _Disk.opens.get(name, 0) + 1
        return _Disk.File(path, mode.replace("b", ""))


async def test_a_disk_full_for_minutes_is_tried_a_bounded_number_of_times_then_the_files_go_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Three minutes of a full disk, a speaker talking through it: each file
    is tried again after 1, 2, 4, 8, 16 s, then every 30 s (an open and a
    write each), not per packet; one ERROR line per file when it pauses, one
    WARNING when it goes on, nothing per failed try. Then both files go on
    (the mix file used to end the recording), in time: the outage is
    silence, the last granule the recording's length (time here is the
    media path's own clock, 20 ms a packet, for 240 s)."""
    import logging
    import socket

    from sfu.media import recorder as recorder_module
    from sfu.media.mixer import Mixer
    from sfu.media.recorder import RETRY_MAX, Recorder
    from sfu.media.router import Publisher, Router

    monkeypatch.setattr(recorder_module, "open", _Disk.open, raising=False)
    monkeypatch.setattr(_Disk, "opens", {})
    monkeypatch.setattr(_Disk, "writes", {})
    monkeypatch.setattr(_Disk, "full", False)
    caplog.set_level(logging.INFO, logger="sfu.media.recorder")
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    router = Router(sock, 3)
    mixer = Mixer(router)
    recorder = Recorder(
        mixer, tmp_path / "talk.opus", per_speaker=True, identity_of=lambda number: "alice"
    )
    loop = asyncio.get_running_loop()
    start = loop.time()
    recorder.start(start)
    alice = Publisher(number=7, payload_type=111, audio_level_id=1, ssrc=1234)
    router.add_publisher(alice)
    spoken = opus_tone(1000, 50)  # a second of a 1 kHz tone: it repeats seamlessly
    mixed = opus_tone(440, 50)
    full_from, full_until, end = 10.0, 200.0, 240.0
    counts: dict[str, dict[str, dict[str, int]]] = {}
    # (No await until the end: the mixer's task does not run, the test feeds
    # the recorder the mix's packets, and the speaker's, itself.)
    for i in range(1, round(end / 0.02) + 1):
        now = start + i * 0.02
        if i == round(full_from / 0.02):
            _Disk.full = True
            counts["before"] = {"opens": dict(_Disk.opens), "writes": dict(_Disk.writes)}
            records_before = len(caplog.records)
        if i == round(full_until / 0.02):
            _Disk.full = False
            counts["during"] = {"opens": dict(_Disk.opens), "writes": dict(_Disk.writes)}
            assert _paused(recorder) == ["mix", "alice"]
            during = caplog.records[records_before:]
            records_before = len(caplog.records)
        recorder._on_packet(mixed[i % 50], FRAME_SAMPLES, now)
        packet = bytes([0x80, 111]) + bytes(10) + spoken[i % 50]
        recorder._tap(alice, packet, 12, i & 0xFFFF, i * 960, 0, now)
    recorder._finish(start + end)  # (stop() would mix up to the loop's own time)
    await recorder.stop()
    await mixer.close()
    router.close()
    sock.close()
    after = caplog.records[records_before:]

    outage = full_until - full_from
    # 1+2+4+8+16 s, then every RETRY_MAX: the first failure, and the tries.
    most = 1 + 5 + int((outage - 31) // RETRY_MAX) + 1
    for name in ("talk.opus", "talk-alice.opus"):
        writes = counts["during"]["writes"][name] - counts["before"]["writes"].get(name, 0)
        assert 8 <= writes <= most, (name, writes, most)
    opens = (
        counts["during"]["opens"]["talk-alice.opus"] - counts["before"]["opens"]["talk-alice.opus"]
    )
    assert 8 <= opens <= most, (opens, most)
    assert counts["during"]["opens"]["talk.opus"] == 1, "the mix file stays open"

    paused = [r for r in during if r.levelno >= logging.WARNING]
    assert [r.levelname for r in paused] == ["ERROR", "ERROR"], [r.getMessage() for r in during]
    assert {"talk.opus" in r.getMessage() for r in paused} == {True, False}
    resumed = [r for r in after if r.levelno >= logging.WARNING]
    assert [r.levelname for r in resumed] == ["WARNING", "WARNING"], [r.getMessage() for r in after]
    assert all("resumed after" in r.getMessage() for r in resumed)

    stats = recorder.stats()
    for file in (stats, stats["speakers"]["alice"]):
        assert not file["paused"]
        # From the last page written (at most a second before the disk filled)
        # to the first try after it had room (at most RETRY_MAX later).
        assert outage <= file["lost"] <= outage + 1.05 + RETRY_MAX, file["lost"]
        assert abs(file["duration"] - end) <= 0.05, file["duration"]

    for path, pre_skip in (
        (tmp_path / "talk.opus", recorder._pre_skip),
        (tmp_path / "talk-alice.opus", 0),
    ):
        assert_well_formed(path)
        samples, peaks = decode_checked(path)
        assert abs((last_granule(path) - pre_skip) / 48000 - end) <= 0.045, path.name
        assert abs(samples / 48000 - end) <= 0.045, (path.name, samples / 48000)
        loud = [peak for time, peak in peaks if full_from + 0.1 <= time <= full_until - 0.2]
        assert loud and max(loud) < 1e-3, f"{path.name}: sound where the disk was full"
        for span in ((1.0, full_from - 1.2), (full_until + RETRY_MAX + 0.2, end - 0.2)):
            heard = [peak for time, peak in peaks if span[0] <= time <= span[1]]
            assert heard and min(heard) > 0.05, f"{path.name}: silent in {span}"


async def test_a_mix_file_that_fails_to_close_still_lets_the_speaker_files_end(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with sfu.Server() as server:
        room = server.room("eio")
        a, b = await speakers(room)
        try:
            recorder = await room.record(tmp_path / "talk.opus", per_speaker=True)
            await wait_for(lambda: len(recorder.speaker_paths) == 2, 10, "both speakers recorded")
            mix_file = recorder._file
            assert isinstance(mix_file, io.FileIO)  # unbuffered: each write is whole pages

            def close_fails() -> None:
                io.FileIO.close(mix_file)
                raise OSError(errno.EIO, "Input/output error")

            monkeypatch.setattr(mix_file, "close", close_fails)
            await recorder.stop()  # logged, not raised: the room goes on
        finally:
            await asyncio.gather(a.close(), b.close())
    for identity in ("alice", "bob"):
        pages = list(parse_pages(recorder.speaker_paths[identity].read_bytes()))
        assert pages[-1].header_type & LAST_PAGE, f"{identity}'s file has no end"


async def test_a_speakers_file_is_never_one_another_identity_already_writes(
    tmp_path: Path,
) -> None:
    """Names that clash once cleaned ("Bob Smith", "Bob_Smith") get a number;
    a member whose identity is that numbered name already must not be given
    the same file (it was made empty again and both wrote into it)."""
    import socket

    from sfu.media.mixer import Mixer
    from sfu.media.recorder import Recorder
    from sfu.media.router import Publisher, Router

    names = {10: "Bob_Smith", 11: "Bob_Smith-12", 12: "Bob Smith"}
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    router = Router(sock, 3)
    mixer = Mixer(router)
    recorder = Recorder(mixer, tmp_path / "talk.opus", per_speaker=True, identity_of=names.get)
    loop = asyncio.get_running_loop()
    recorder.start(loop.time())
    now = loop.time()
    payload = opus_tone(440, 1)[0]
    for number in names:  # heard in this order
        speaker = Publisher(number=number, payload_type=111, audio_level_id=1, ssrc=number)
        for sequence in range(5):
            packet = bytes([0x80, 111]) + bytes(10) + payload
            for tap in list(router.taps):
                tap(speaker, packet, 12, sequence, sequence * 960, 0, now)
            now += 0.02
    await recorder.stop()
    await mixer.close()
    router.close()
    sock.close()
    paths = recorder.speaker_paths
    assert len(set(paths.values())) == 3, paths
    for identity in names.values():
        written = [p for p in assert_well_formed(paths[identity]) if p == payload]
        assert len(written) == 5, identity


@pytest.mark.compiled_and_python_alike
def test_a_packet_claiming_more_than_120_ms_is_not_written(tmp_path: Path) -> None:
    """No Opus packet is over 120 ms (RFC 6716 3.2.5): one that claims more
    (here 63 frames of 60 ms) would put a jump of seconds in the file."""
    packets = opus_tone(440, 3)
    track = SpeakerTrack(tmp_path / "s.opus", start=10.0)
    out = track.packet(5, 1000, packets[0], now=10.0)
    position = track.position
    bogus = bytes([(3 << 3) | 3, 63]) + bytes(20)  # config 3: SILK 60 ms frames, code 3
    assert packet_samples(bogus) > 5760
    assert track.packet(5, 1960, bogus, now=10.02) == b""
    assert track.position == position
    out += track.packet(5, 1960, packets[1], now=10.02)
    assert track.position == position + FRAME_SAMPLES


async def test_speakers_past_max_speaker_files_are_in_the_mix_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every speaker file is kept in line with the wall clock while it is
    quiet: a stream of new identities (a server without tokens takes any)
    must not make the recording's upkeep grow without end."""
    import socket

    from sfu.media import recorder as recorder_module
    from sfu.media.mixer import Mixer
    from sfu.media.recorder import Recorder
    from sfu.media.router import Publisher, Router

    monkeypatch.setattr(recorder_module, "MAX_SPEAKER_FILES", 3)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    router = Router(sock, 3)
    mixer = Mixer(router)
    recorder = Recorder(
        mixer, tmp_path / "talk.opus", per_speaker=True, identity_of=lambda n: f"guest{n}"
    )
    loop = asyncio.get_running_loop()
    recorder.start(loop.time())
    now = loop.time()
    payload = opus_tone(440, 1)[0]
    for number in range(10, 20):  # ten different people, one after the other
        speaker = Publisher(number=number, payload_type=111, audio_level_id=1, ssrc=number)
        router.add_publisher(speaker)
        packet = bytes([0x80, 111]) + bytes(10) + payload
        for tap in list(router.taps):
            tap(speaker, packet, 12, 0, 0, 0, now)
        now += 0.02
        router.remove_publisher(speaker)
    assert len(recorder._track_of) == 0, "nothing kept per join past the cap"
    await recorder.stop()
    await mixer.close()
    router.close()
    sock.close()
    assert sorted(recorder.speaker_paths) == ["guest10", "guest11", "guest12"]
    assert sorted(p.name for p in tmp_path.glob("talk-*")) == [
        "talk-guest10.opus",
        "talk-guest11.opus",
        "talk-guest12.opus",
    ]


async def test_a_stop_whose_last_frames_fail_to_mix_still_ends_the_recording(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """stop() mixes the frames the lagging task owes before it ends the file;
    mixing one raised (a bug the mixer's task survives as a failure), and
    stop() raised with it before it finished anything: the file stayed open,
    the output attached and the mixer running (a room that would close when
    empty never did). The failure is logged; the recording ends all the same,
    as at a room's close."""
    import time

    async with sfu.Server() as server:
        room = server.room("failing")
        recorder = await room.record(tmp_path / "f.opus", per_speaker=True)
        await asyncio.sleep(0.2)
        time.sleep(0.1)  # frames fall due that the task has not mixed yet
        mixer = room.mixer
        step = mixer.step

        def fail_once(now: float) -> None:
            monkeypatch.setattr(mixer, "step", step)
            raise RuntimeError("mixing failed")

        monkeypatch.setattr(mixer, "step", fail_once)
        await recorder.stop()
        assert not recorder.recording
        assert recorder._tap not in room.router.taps
        assert mixer.consumers == 0 and not mixer.running
        assert "mixing failed" in caplog.text
    assert len(assert_well_formed(tmp_path / "f.opus")) >= 1


def test_a_recording_whose_event_loop_was_torn_down_holds_no_path(tmp_path: Path) -> None:
    """An application whose event loop ended without closing its Server (its
    tasks, the mixer's among them, cancelled by asyncio.run) leaves a
    recording that never stopped: its file must not stay refused to every
    later recording of the process."""
    import subprocess
    import sys

    script = f"""
import asyncio, sfu
PATH = {str(tmp_path / "show.opus")!r}
async def torn_down():
    server = sfu.Server()
    await server.start()
    await server.room("a").record(PATH)
    await asyncio.sleep(0.1)
async def again():
    async with sfu.Server() as server:
        recorder = await server.room("b").record(PATH)
        await asyncio.sleep(0.1)
        await recorder.stop()
        print("recorded again", recorder.duration > 0)
asyncio.run(torn_down())
asyncio.run(again())
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "recorded again True" in done.stdout


async def test_a_path_with_a_nul_byte_is_an_invalid_setting(tmp_path: Path) -> None:
    async with sfu.Server() as server:
        room = server.room("nul")
        with pytest.raises(sfu.InvalidSetting, match="file path"):
            await room.record(str(tmp_path / "a\0b.opus"))


async def test_a_named_pipe_is_refused_at_once_without_waiting_for_a_reader(
    tmp_path: Path,
) -> None:
    """A recording's pages are written whole, a refused write taken back: it
    needs a file that seeks. Opening a pipe to write waits for a reader, which
    would hold the event loop (review: 3 s, then "Illegal seek"); a reader
    opens it after 2 s here, so the test ends either way."""
    fifo = tmp_path / "live.fifo"
    os.mkfifo(fifo)

    def open_reader_later() -> None:
        time.sleep(2)
        os.close(os.open(fifo, os.O_RDONLY | os.O_NONBLOCK))

    reader = threading.Thread(target=open_reader_later, daemon=True)
    reader.start()
    try:
        async with sfu.Server() as server:
            room = server.room("fifo")
            with pytest.raises(sfu.InvalidSetting, match="pipe or socket"):
                await room.record(fifo)
    finally:
        reader.join(5)


async def test_a_relative_path_keeps_each_speaker_file_whole_across_a_chdir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Speaker files are opened by name at each write: an application that
    changes directory mid-recording must not split one in two (review)."""
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    monkeypatch.chdir(first)

    def change_directory(sequence: int) -> None:
        if sequence == 150:
            os.chdir(second)  # the application changes directory mid-recording

    recorder, path = await recorded_speaker_file(
        "talk.opus", "alice", packets=300, each=change_directory
    )
    assert recorder.path == first / "talk.opus" and path == first / "talk-alice.opus"
    assert not (second / "talk-alice.opus").exists(), "the file went on in another directory"
    pages = list(parse_pages(path.read_bytes()))
    assert [page.sequence for page in pages] == list(range(len(pages)))


@pytest.mark.parametrize("slip", [1, 2, 59])
def test_timestamps_a_few_samples_off_lose_no_packet(tmp_path: Path, slip: int) -> None:
    """A sender stamping RTP time from its capture clock (960 +- a sample or
    two per 20 ms packet) is written whole, not a third dropped as late and
    silence put in their place (review)."""
    packets = opus_tone(440, 10)
    rnd = random.Random(1)
    track = SpeakerTrack(tmp_path / "s.opus", start=0.0)
    for index in range(1000):
        timestamp = index * 960 + rnd.randint(-slip, slip)
        track.packet(1, timestamp, packets[index % 10], 0.02 * index)
    assert (track.late, track.filled, track.packets) == (0, 0, 1000)


async def recorded_speaker_file(
    mix: Path | str,
    identity: str,
    *,
    packets: int = 50,
    each: Callable[[int], None] | None = None,
) -> tuple[Recorder, Path]:
    """A recording of ``mix`` with one speaker file, ``identity``'s,
    ``packets`` long (``each`` called before each): the recorder, and the
    speaker's file (whole: checked)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    router = Router(sock, 3)
    mixer = Mixer(router)
    recorder = Recorder(mixer, mix, per_speaker=True, identity_of=lambda n: identity)
    loop = asyncio.get_running_loop()
    recorder.start(loop.time())
    alice = Publisher(number=1, payload_type=111, audio_level_id=1, ssrc=1)
    payload = opus_tone(440, 1)[0]
    now = loop.time()
    try:
        for sequence in range(packets):
            if each is not None:
                each(sequence)
            packet = bytes([0x80, 111]) + bytes(10) + payload
            for tap in list(router.taps):
                tap(alice, packet, 12, sequence, sequence * 960, 0, now)
            now += 0.02
        await recorder.stop()
    finally:
        await mixer.close()
        router.close()
        sock.close()
    path = recorder.speaker_paths[identity]
    assert recorder.stats()["speakers"][identity]["paused"] is False
    pages = list(parse_pages(path.read_bytes()))
    assert pages[0].header_type & FIRST_PAGE and pages[-1].header_type & LAST_PAGE
    return recorder, path


@pytest.mark.parametrize(
    "mix",
    ["m" * 200 + ".opus", "talk v1." + "x" * 200, "\u00e9" * 120 + ".opus"],
    ids=["long-stem", "long-suffix", "two-byte-characters"],
)
async def test_a_long_mix_name_and_identity_still_make_a_speaker_file(
    tmp_path: Path, mix: str
) -> None:
    """A mix name of 200 characters (or bytes) and a 64-character identity:
    the speaker file's name is cut to one the file system takes (review: 270
    bytes, refused as if the disk were full, tried every 30 s, never made)."""
    identity = "i" * 64
    _, path = await recorded_speaker_file(tmp_path / mix, identity)
    assert path.parent == tmp_path
    assert path.name.endswith("-" + identity + ".opus")
    assert len(os.fsencode(path.name)) <= 255


def test_two_long_mix_names_cut_alike_still_get_speaker_files_of_their_own() -> None:
    first, second = ("a" * 220 + f"-part{n}.opus" for n in (1, 2))
    names = {_speaker_file_name(Path(mix), "alice") for mix in (first, second)}
    assert len(names) == 2, names


def test_a_short_mix_name_is_kept_byte_for_byte_in_its_speaker_files() -> None:
    mix = Path(os.fsdecode(b"caf\xe9.opus"))  # not UTF-8
    assert _speaker_file_name(mix, "alice") == os.fsdecode(b"caf\xe9-alice.opus")


async def test_a_pipe_at_a_speaker_files_name_gets_the_numbered_name(tmp_path: Path) -> None:
    """A pipe where a speaker's file would go is never writable: the speaker
    gets the numbered name at once, as at a clash (review: paused as if the
    disk were full, tried every 30 s, never made)."""
    os.mkfifo(tmp_path / "talk-alice.opus")
    recorder, path = await recorded_speaker_file(tmp_path / "talk.opus", "alice")
    assert path.parent == tmp_path and path.name.startswith("talk-alice-")


async def test_a_path_through_a_symbolic_link_and_dotdot_goes_where_the_os_says(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``link/../talk.opus`` is the parent of where the link points, as
    ``open`` says: made absolute, the path is not normalised by its text
    (review: the recording went to ``./talk.opus``)."""
    (tmp_path / "real" / "sub").mkdir(parents=True)
    (tmp_path / "link").symlink_to(tmp_path / "real" / "sub")
    monkeypatch.chdir(tmp_path)
    await recorded_speaker_file("link/../talk.opus", "alice")
    assert (tmp_path / "real" / "talk.opus").exists()
    assert (tmp_path / "real" / "talk-alice.opus").exists()
    assert not (tmp_path / "talk.opus").exists()
