"""A per-speaker recording on a disk that keeps failing, over a long
recording whose speakers come and go: what the recorder keeps stays bounded.

The disk fails for real, in a child process (so nothing else of the test
run is affected): either every write past 0 bytes fails (``RLIMIT_FSIZE``
of 0: EFBIG, as a full disk's ENOSPC; the files themselves can still be
made), or the directory refuses new files (``chattr +i`` as root, whom
permissions do not stop; read-only permissions otherwise). The room mix
goes to ``/dev/null`` through a symlink (a device: no file size limit), so
that only the speakers' files fail. The speakers are fed through the
Router's own tap and release, as ``tests/media/test_recorder.py`` does.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = r"""
import asyncio, json, os, resource, socket, subprocess, sys
from pathlib import Path

from sfu.media.mixer import Mixer
from sfu.media.ogg import read_packets
from sfu.media.recorder import Recorder
from sfu.media.router import Router
from tests.media.mixing import opus_tone, speak_once

DIRECTORY, MODE = Path(sys.argv[1]), sys.argv[2]
JOINS = 200  # two people joining a hundred times each
LATE = 1_000_000  # the number of one who comes once the disk works again


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
            "claimed": len(recorder._claimed),
            "files": sorted(p.name for p in DIRECTORY.iterdir()),
        }
    finally:
        undo()
    speak(LATE)  # the disk works again: a new speaker is recorded apart
    stats = recorder.stats()
    await recorder.stop()
    await mixer.close()
    router.close()
    sock.close()
    late = [p for p, _ in read_packets(recorder.speaker_paths["late"].read_bytes())]
    kept["late_packets"] = sum(1 for p in late if p == payload)
    kept["recorded_apart"] = sorted(stats["speakers"])
    print(json.dumps(kept))


asyncio.run(main())
"""


@pytest.mark.parametrize("mode", ["fsize", "readonly"])
def test_a_failing_disk_keeps_nothing_per_join_of_a_speaker(tmp_path: Path, mode: str) -> None:
    """Each join has a new participant number: the recorder kept an entry per
    number whose file failed (never let go), and, where files could still be
    made, made a new one per rejoin, which failed too. Now a speaker whose
    file failed is in the mix only for the rest of the recording, and nothing
    is kept per number once its participant is no longer forwarded."""
    directory = tmp_path / "disk"
    directory.mkdir()
    try:
        done = subprocess.run(
            [sys.executable, "-c", SCRIPT, str(directory), mode],
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
    kept = json.loads(done.stdout.strip().splitlines()[-1])
    if "skip" in kept:
        pytest.skip(kept["skip"])
    assert kept["track_of"] == 0, f"entries kept per participant number: {kept['track_of']}"
    # The mix file and at most one try per identity.
    assert kept["claimed"] <= 3, f"paths claimed: {kept['claimed']}"
    if mode == "fsize":
        # Made (empty), and their first write failed: one per identity, not one per join.
        assert kept["files"] == ["talk-guest0.opus", "talk-guest1.opus", "talk.opus"], kept
    else:
        assert kept["files"] == ["talk.opus"], kept
    assert kept["recorded_apart"] == ["late"]
    assert kept["late_packets"] == 3
