"""A recording on a disk that fails, for real: what the recorder keeps stays
bounded however long it fails, and the files go on once the disk takes them
again.

The disk fails in a child process (so nothing else of the test run is
affected): either every write past 0 bytes fails (``RLIMIT_FSIZE`` of 0:
EFBIG, as a full disk's ENOSPC; the files themselves can still be made), or
the directory refuses new files (``chattr +i`` as root, whom permissions do
not stop; read-only permissions otherwise). The speakers are fed through
the Router's own tap and release, as ``tests/media/test_recorder.py`` does.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from .mixing import assert_tones
from .test_recorder import assert_well_formed, decode_checked, last_granule

# How the disk is made to fail, in the child (MODE and DIRECTORY set there).
FAILING = r"""
import os, resource, subprocess
from pathlib import Path


def fail_the_disk():
    # Returns what undoes it, or None when it cannot be made to fail here.
    if MODE == "fsize":
        soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        resource.setrlimit(resource.RLIMIT_FSIZE, (0, hard))
        return lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    if os.geteuid() == 0:
        made = subprocess.run(["chattr", "+i", str(DIRECTORY)], capture_output=True)
        undo = lambda: subprocess.run(["chattr", "-i", str(DIRECTORY)], check=True)
        if made.returncode != 0:
            return None
    else:
        os.chmod(DIRECTORY, 0o555)
        undo = lambda: os.chmod(DIRECTORY, 0o755)
    try:
        open(DIRECTORY / "probe", "wb").close()
    except OSError:
        return undo
    os.unlink(DIRECTORY / "probe")
    undo()
    return None
"""

SCRIPT = r"""
import asyncio, json, socket, sys
from collections import Counter
from pathlib import Path

from sfu.media import recorder as recorder_module
from sfu.media.mixer import Mixer
from sfu.media.ogg import read_packets
from sfu.media.recorder import Recorder
from sfu.media.router import Router
from tests.media.mixing import opus_tone, speak_once

DIRECTORY, MODE = Path(sys.argv[1]), sys.argv[2]
JOINS = 200  # two people joining a hundred times each
LATE = 1_000_000  # the number of one who comes once the disk works again
exec(sys.argv[3])  # fail_the_disk()

opened = Counter()


def counted_open(path, *args, **kwargs):
    opened[Path(path).name] += 1
    return open(path, *args, **kwargs)


recorder_module.open = counted_open


async def main():
    mix = DIRECTORY / "talk.opus"
    mix.symlink_to("/dev/null")
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    router = Router(sock, 3)
    mixer = Mixer(router)
    identity_of = lambda number: "late" if number == LATE else f"guest{number % 2}"
    recorder = Recorder(mixer, mix, per_speaker=True, identity_of=identity_of)
    loop = asyncio.get_running_loop()
    recorder.start(loop.time())
    undo = fail_the_disk()
    if undo is None:
        print(json.dumps({"skip": f"cannot make {DIRECTORY} refuse new files here"}))
        return
    payload = opus_tone(440, 1)[0]
    now = loop.time()

    def speak(number):
        nonlocal now
        now = speak_once(router, number, payload, now)

    try:
        for number in range(10, 10 + JOINS):
            speak(number)
        kept = {
            "track_of": len(recorder._track_of),
            "claimed": sum(1 for held in recorder._claimed if isinstance(held, Path)),
            "claimed_files": sum(1 for held in recorder._claimed if isinstance(held, tuple)),
            "files": sorted(p.name for p in DIRECTORY.iterdir()),
            "opened": dict(opened),
            "seconds": now - recorder.started_at,
        }
    finally:
        undo()
    speak(LATE)  # the disk works again: a new speaker is recorded apart
    stats = recorder.stats()
    await recorder.stop()  # the guests' files, paused, get a last try: they end whole
    await mixer.close()
    router.close()
    sock.close()
    packets = {
        identity: [p for p, _ in read_packets(path.read_bytes())]
        for identity, path in recorder.speaker_paths.items()
    }
    kept["late_packets"] = sum(1 for p in packets["late"] if p == payload)
    kept["guest_packets"] = sum(1 for p in packets["guest0"] + packets["guest1"] if p == payload)
    kept["recorded_apart"] = sorted(stats["speakers"])
    kept["paused"] = sorted(name for name, file in stats["speakers"].items() if file["paused"])
    print(json.dumps(kept))


asyncio.run(main())
"""


def run_child(script: str, directory: Path, mode: str) -> dict[str, Any]:
    try:
        done = subprocess.run(
            [sys.executable, "-c", script, str(directory), mode, FAILING],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            cwd=Path(__file__).resolve().parents[2],
        )
    finally:
        if os.geteuid() == 0:  # should the child have died with the directory immutable
            subprocess.run(["chattr", "-i", str(directory)], capture_output=True, check=False)
        os.chmod(directory, 0o755)
    assert done.returncode == 0, done.stderr[-3000:]
    kept: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    if "skip" in kept:
        pytest.skip(kept["skip"])
    return kept


@pytest.mark.parametrize("mode", ["fsize", "readonly"])
def test_a_failing_disk_keeps_nothing_per_join_of_a_speaker(tmp_path: Path, mode: str) -> None:
    """Each join has a new participant number: the recorder kept an entry per
    number whose file failed (never let go), and, where files could still be
    made, made a new one per rejoin, which failed too. A speaker whose file
    failed keeps its one track, whatever number it rejoins with: its file is
    tried again with a back-off (a few opens in the 12 s of two hundred
    joins, not one per join), and nothing is kept per number once its
    participant is no longer forwarded. The room mix goes to ``/dev/null``
    through a symlink (a device: no file size limit), so that only the
    speakers' files fail."""
    directory = tmp_path / "disk"
    directory.mkdir()
    kept = run_child(SCRIPT, directory, mode)
    assert kept["track_of"] == 0, f"entries kept per participant number: {kept['track_of']}"
    # The mix file and one path per identity.
    assert kept["claimed"] <= 3, f"paths claimed: {kept['claimed']}"
    # Files (by inode) once made: the guests' (the mix, a device, is not claimed).
    assert kept["claimed_files"] <= 2, f"files claimed: {kept['claimed_files']}"
    if mode == "fsize":
        # Made (empty), and their writes failed: one file per identity, not one per join.
        assert kept["files"] == ["talk-guest0.opus", "talk-guest1.opus", "talk.opus"], kept
    else:
        assert kept["files"] == ["talk.opus"], kept
    # Tried after 1, 2, 4 and 8 s: at most five opens in the joins' 12 s.
    assert kept["seconds"] == pytest.approx(12.0, abs=0.1)
    for name in ("talk-guest0.opus", "talk-guest1.opus"):
        assert 2 <= kept["opened"][name] <= 5, kept["opened"]
    assert kept["recorded_apart"] == ["guest0", "guest1", "late"]
    assert kept["paused"] == ["guest0", "guest1"]
    assert kept["late_packets"] == 3
    assert kept["guest_packets"] == 0, "what they said while the disk failed is lost"


RECOVERY = r"""
import asyncio, json, logging, socket, sys
from pathlib import Path

from sfu.media import recorder as recorder_module
from sfu.media.mixer import Mixer
from sfu.media.recorder import Recorder
from sfu.media.router import Publisher, Router
from tests.media.mixing import opus_tone

DIRECTORY, MODE = Path(sys.argv[1]), sys.argv[2]
exec(sys.argv[3])  # fail_the_disk()
# Tried 0.25, 0.5, 1, 1, ... s after a failure (1, 2, 4 ... 30 s by default):
# the test's seconds, the same code.
recorder_module.RETRY_FIRST = 0.25
recorder_module.RETRY_MAX = 1.0
FAIL_AT, RECOVER_AT, STOP_AT = 2.5, 4.5, 7.0  # seconds into the recording
BOB_FROM = 3.0  # bob is first heard while the disk fails

logged = []


class Keep(logging.Handler):
    def emit(self, record):
        logged.append([record.levelname, record.getMessage()])


logging.getLogger("sfu.media.recorder").addHandler(Keep(logging.WARNING))


async def main():
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    router = Router(sock, 3)
    mixer = Mixer(router)
    names = {1: "alice", 2: "bob"}
    recorder = Recorder(mixer, DIRECTORY / "talk.opus", per_speaker=True, identity_of=names.get)
    started = loop.time()
    recorder.start(started)
    tones = {1: opus_tone(440, 50), 2: opus_tone(1000, 50)}  # a second each, seamless
    speakers = {}
    for number in names:
        speakers[number] = Publisher(
            number=number, payload_type=111, audio_level_id=1, ssrc=1000 + number
        )
        router.add_publisher(speakers[number])
    undo = None
    told = {}
    frame = 0
    try:
        while True:
            frame += 1
            due = started + frame * 0.02
            await asyncio.sleep(max(0.0, due - loop.time()))
            now = loop.time()
            seconds = now - started
            if undo is None and "failed" not in told and seconds >= FAIL_AT:
                undo = fail_the_disk()
                if undo is None:
                    print(json.dumps({"skip": f"cannot make {DIRECTORY} fail here"}))
                    return
                told["failed"] = seconds
            if undo is not None and seconds >= RECOVER_AT:
                undo()
                undo = None
                told["recovered"] = seconds
            if "paused" not in told and undo is not None and seconds >= RECOVER_AT - 0.1:
                told["paused"] = recorder.stats()
            if seconds >= STOP_AT:
                break
            for number, speaker in speakers.items():
                if number == 2 and seconds < BOB_FROM:
                    continue
                packet = bytes([0x80, 111]) + bytes(10) + tones[number][frame % 50]
                # Stamped when due, as delivered on time: a first packet late
                # (the loop lagging under load) would put the file ahead of the
                # wall clock for good, as placed by its timestamps.
                for tap in list(router.taps):
                    tap(speaker, packet, 12, frame & 0xFFFF, frame * 960, 0, due)
    finally:
        if undo is not None:
            undo()
    await recorder.stop()
    told["wall"] = recorder.stopped_at - started
    told["stats"] = recorder.stats()
    told["pre_skip"] = recorder._pre_skip
    told["paths"] = {name: str(path) for name, path in recorder.speaker_paths.items()}
    told["logged"] = logged
    await mixer.close()
    router.close()
    sock.close()
    print(json.dumps(told))


asyncio.run(main())
"""


BOB_FROM = 3.0  # as in RECOVERY


def heard(peaks: list[tuple[float, float]], start: float, end: float) -> list[float]:
    found = [peak for time, peak in peaks if start <= time <= end]
    assert found, f"no frame in {start:.2f}-{end:.2f} s"
    return found


def pcm(path: Path, start: float, end: float) -> np.ndarray:
    import av

    with av.open(str(path)) as container:
        frames = [f.to_ndarray().mean(axis=0) for f in container.decode(audio=0)]
    samples = np.concatenate(frames)
    return np.asarray(samples[round(start * 48000) : round(end * 48000)], dtype=np.float64)


@pytest.mark.parametrize("mode", ["fsize", "readonly"])
def test_a_disk_that_fails_then_takes_the_files_again(tmp_path: Path, mode: str) -> None:
    """The disk fails for two seconds, mid-recording. ``fsize``: it takes no
    byte more (full), so the mix file and alice's (talking all along) pause,
    and bob's, first heard meanwhile, is made but stays empty; the mix file
    used to end the recording, a speaker's to end there. ``readonly``: the
    directory takes no new file, so only bob's cannot be made. Once the disk
    takes them again every file goes on: whole pages, gapless page numbers,
    decoded by FFmpeg without a complaint, and each lasts the recording's
    wall time (its last granule, and what decodes, within two frames), the
    outage silence; one ERROR line per file when it paused, one WARNING when
    it went on, nothing else."""
    directory = tmp_path / "disk"
    directory.mkdir()
    told = run_child(RECOVERY, directory, mode)
    wall = told["wall"]
    failed, recovered = told["failed"], told["recovered"]
    files = {"mix": directory / "talk.opus", **{k: Path(v) for k, v in told["paths"].items()}}
    assert sorted(files) == ["alice", "bob", "mix"]
    pre_skip = {"mix": told["pre_skip"], "alice": 0, "bob": 0}
    out = ["mix", "alice", "bob"] if mode == "fsize" else ["bob"]
    for name, path in files.items():
        assert_well_formed(path)
        samples, peaks = decode_checked(path)
        assert abs((last_granule(path) - pre_skip[name]) / 48000 - wall) <= 0.04, name
        assert abs(samples / 48000 - wall) <= 0.04, (name, samples / 48000, wall)
        if name in out:
            # Silence from the last page written (at most a second before the
            # failure; bob's file has none before) to the first try after the
            # disk recovered (at most 1 s later, the tries' longest wait here).
            since = BOB_FROM if name == "bob" else failed
            assert max(heard(peaks, since + 0.1, recovered - 0.15)) < 1e-3, name
            after = recovered + 1.2
        else:
            after = 1.0
        if name != "bob":  # (alone before bob came)
            assert_tones(pcm(path, 0.3, failed - 1.1), present=[440], absent=[1000])
        tones = {"mix": [440, 1000], "alice": [440], "bob": [1000]}[name]
        assert_tones(pcm(path, after, wall - 0.1), present=tones)

    # What stats() said while the disk failed, and after.
    then, stats = told["paused"], told["stats"]
    paused = [n for n, f in [("mix", then), *then["speakers"].items()] if f["paused"]]
    assert sorted(paused) == sorted(out)
    for name in files:
        file = stats if name == "mix" else stats["speakers"][name]
        assert not file["paused"]
        if name in out:
            since = 0.0 if name == "bob" else failed
            assert recovered - since <= file["lost"] <= recovered - since + 2.1, file["lost"]
        else:
            assert file["lost"] == 0
    errors = [text for level, text in told["logged"] if level == "ERROR"]
    resumed = [text for level, text in told["logged"] if level == "WARNING"]
    assert len(errors) == len(out) and all("paused" in text for text in errors), told["logged"]
    assert len(resumed) == len(out), told["logged"]
    assert all("resumed after" in text for text in resumed), told["logged"]
    assert len(told["logged"]) == 2 * len(out), told["logged"]
