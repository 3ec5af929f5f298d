"""A GStreamer webrtcbin speaker (Opus only, no level extension) in a room.

GStreamer's libnice ignores loopback and sends its checks from every other
interface, so this test adds a veth pair with a private address to the test
process's *own* network namespace (tests/conftest.py puts the process in one
with only ``lo``; both ends of the pair stay in it) and runs server and
client there: nothing can leave the namespace.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from pathlib import Path

import pytest

import sfu
from tests.clients import join, wait_for
from tests.conftest import NETWORK_ISOLATION

HERE = Path(__file__).resolve().parent
SYSTEM_PYTHON = "/usr/bin/python3"
TEST_HOST = "10.213.0.1"  # exists only inside the test's network namespace
INTERFACE = "sfutest0"
PEER_INTERFACE = "sfutest1"


def gstreamer_missing() -> str | None:
    if not Path(SYSTEM_PYTHON).exists():
        return "Debian python3"
    probe = subprocess.run(
        [
            SYSTEM_PYTHON,
            "-c",
            "import gi; gi.require_version('Gst','1.0'); gi.require_version('GstWebRTC','1.0');"
            "from gi.repository import Gst; Gst.init(None);"
            "import sys; sys.exit(0 if all(Gst.ElementFactory.find(e) for e in ('webrtcbin','opusenc','nicesrc')) else 1)",
        ],
        capture_output=True,
        check=False,
    )
    if probe.returncode != 0:
        return "gstreamer1.0-plugins-bad gstreamer1.0-nice gstreamer1.0-plugins-base python3-gi gir1.2-gst-plugins-bad-1.0"
    if shutil.which("ip") is None:
        return "iproute2"
    return None


@pytest.fixture(scope="module")
def test_host() -> str:
    missing = gstreamer_missing()
    if missing:
        pytest.skip(f"needs Debian packages: {missing}")
    if not NETWORK_ISOLATION.isolated:
        pytest.skip(
            f"needs the test process in its own network namespace ({NETWORK_ISOLATION.reason})"
        )
    existing = subprocess.run(
        ["ip", "-o", "addr", "show", "dev", INTERFACE], capture_output=True, check=False
    )
    if TEST_HOST not in existing.stdout.decode():
        for command in (
            ["ip", "link", "add", INTERFACE, "type", "veth", "peer", "name", PEER_INTERFACE],
            ["ip", "addr", "add", f"{TEST_HOST}/24", "dev", INTERFACE],
            ["ip", "link", "set", INTERFACE, "up"],
            ["ip", "link", "set", PEER_INTERFACE, "up"],
        ):
            subprocess.run(command, check=True, capture_output=True)
    return TEST_HOST


async def read_message(process: asyncio.subprocess.Process, timeout: float) -> dict[str, object]:
    assert process.stdout is not None
    line = await asyncio.wait_for(process.stdout.readline(), timeout)
    assert line, "the GStreamer client exited early"
    message = json.loads(line)
    assert "error" not in message, message
    return dict(message)


@pytest.mark.parametrize("video", [False, True], ids=["audio", "video-first"])
async def test_gstreamer_speaker_is_forwarded(test_host: str, video: bool) -> None:
    """With ``video``, webrtcbin offers a VP8 line before the audio (as
    whipsink does for audio+video): answered with that line at port 0 and
    nothing else, webrtcbin refused the whole answer ("No fingerprint lines
    in sdp for media 1") and never connected; kept in the group, inactive,
    it connects and is heard."""
    async with sfu.Server(host=test_host) as server:
        room = server.room("gst")
        listener = await join(room, "aiortc-listener", speaker=False)
        process = await asyncio.create_subprocess_exec(
            SYSTEM_PYTHON,
            str(HERE / "gst_speaker.py"),
            "--seconds",
            "5",
            *(["--video"] if video else []),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        try:
            offer = str((await read_message(process, 20))["offer"])
            assert "ssrc-audio-level" not in offer
            speaker = await room.add_speaker(offer, identity="gstreamer")
            assert "a=ice-lite" in speaker.answer
            if video:
                assert "\r\nm=video " in offer and "\r\nm=video 0 " not in speaker.answer
            # One sendrecv line in a 3-slot room: it hears the others mixed on it.
            assert (
                speaker.mixed and f"a=ssrc:{room.mixer.ssrc_for(speaker.number)} " in speaker.answer
            )
            assert process.stdin is not None
            process.stdin.write((json.dumps({"answer": speaker.answer}) + "\n").encode())
            await process.stdin.drain()
            await speaker.wait_connected(15)
            await wait_for(
                lambda: len(listener.packets(0)) >= 50, 15, "GStreamer's audio at the listener"
            )
            inbound = speaker.stats()["inbound"]
            assert inbound["level_source"] == "decoded", "webrtcbin sends no RFC 6464 level"
            assert {p.csrc for p in listener.packets(0)} == {(speaker.csrc,)}
            # Its decoded levels rank it: the tone bursts make it the dominant speaker.
            await wait_for(
                lambda: room.dominant_speaker == "gstreamer", 5, "GStreamer ranked dominant"
            )
            assert speaker.stats()["inbound"]["audio_level"] is not None
            # Once what the server sends back has reached it too, it may stop
            # (at the latest it does after its --seconds).
            finishing = False
            while "done" not in (message := await read_message(process, 20)):
                received = message["received"]
                if not finishing and isinstance(received, int) and received > 50:
                    process.stdin.write(b'{"finish": true}\n')
                    await process.stdin.drain()
                    finishing = True
            done = message
            assert done["ice"] in ("connected", "completed")
            assert isinstance(done["received"], int) and done["received"] > 50, done
        finally:
            if process.returncode is None:
                process.kill()
            await process.wait()
            await listener.close()
