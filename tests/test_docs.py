"""The README's API table says what the code does: signatures and defaults.

A setting renamed or removed in the code (or a default changed) while the
README still shows the old one fails here, not in a user's first try.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import re
from pathlib import Path

import pytest

import sfu
from sfu.policy import RoomPolicy

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def documented_call(prefix: str) -> dict[str, object]:
    """``name: default`` of the README's ``prefix(...)`` table cell, defaults as Python values."""
    match = re.search(rf"\| `{re.escape(prefix)}\((.*?)\)` \|", README)
    assert match, f"the README's API table has no `{prefix}(...)` row"
    pairs = {}
    for part in match.group(1).split(", "):
        part = part.lstrip("*").strip()
        if "=" in part:
            name, default = part.split("=", 1)
            pairs[name] = ast.literal_eval(default)
    return pairs


def test_server_signature_matches_the_readme() -> None:
    documented = documented_call("Server")
    parameters = inspect.signature(sfu.Server).parameters
    actual = {
        name: p.default
        for name, p in parameters.items()
        if p.default is not inspect.Parameter.empty
    }
    assert documented == actual


def test_room_settings_match_the_readme() -> None:
    documented = documented_call("server.room")
    actual = {field.name: field.default for field in dataclasses.fields(RoomPolicy)}
    assert documented == actual


def test_ci_runs_the_readme_test_command() -> None:
    """`.ci/run` must run what the README tells a newcomer to run, nothing weaker."""
    block = re.search(r"```sh\n(.*?)```", README, re.S)
    assert block, "the README opens with a sh block of its two commands"
    commands = [line.split("#")[0].strip() for line in block.group(1).splitlines()]
    test_command = next(c for c in commands if c.endswith(" test"))
    ci = (Path(__file__).resolve().parent.parent / ".ci" / "run").read_text()
    ci_commands = [line.split("#")[0].strip() for line in ci.splitlines()]
    assert test_command in ci_commands
    # Verbatim too: the line in .ci/run is the README's line, character for character.
    assert any(line == test_command for line in ci.splitlines())


def python_blocks(text: str) -> list[str]:
    """The ```python blocks of a Markdown text, in order."""
    return re.findall(r"```python\n(.*?)```", text, re.S)


async def test_quick_start_runs_and_prints_the_events_it_names(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The Quick start, run as written with two aiortc peers on loopback: its
    event loop sees every event its comment names, ending with RoomClosed."""
    import asyncio
    import textwrap

    from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

    from sfu import events

    block = python_blocks(README.split("## Quick start", 1)[1])[0]
    named = re.search(r"print\(event\)\s*#\s*(.*)", block)
    assert named, "the Quick start's print(event) line names the events it shows"
    expected = [name.strip() for name in named.group(1).split(",")]
    assert expected and all(isinstance(getattr(events, name), type) for name in expected)

    peers = {}
    for name, direction in (("alice", "sendrecv"), ("bob", "recvonly")):
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        if direction == "sendrecv":
            from tests.clients import ToneTrack

            pc.addTransceiver(ToneTrack(), direction="sendrecv")
        else:
            pc.addTransceiver("audio", direction="recvonly")
        await pc.setLocalDescription(await pc.createOffer())
        peers[name] = pc
    servers: list[sfu.Server] = []
    start = sfu.Server.start

    async def recording_start(self: sfu.Server) -> sfu.Server:
        servers.append(self)
        return await start(self)

    monkeypatch.setattr(sfu.Server, "start", recording_start)

    seen: list[object] = []
    pending: list[asyncio.Future[object]] = []

    def reply(pc: RTCPeerConnection, answer: str) -> None:
        description = RTCSessionDescription(answer, "answer")
        pending.append(asyncio.ensure_future(pc.setRemoteDescription(description)))

    def print_(event: object) -> None:
        seen.append(event)
        connected = {e.identity for e in seen if isinstance(e, events.ParticipantConnected)}
        room = servers[0].get_room("town-hall")
        if connected == {"alice", "bob"} and room is not None:
            pending.append(asyncio.ensure_future(room.close("done")))  # ends the loop

    namespace: dict[str, object] = {
        "offer_from_alice": peers["alice"].localDescription.sdp,
        "offer_from_bob": peers["bob"].localDescription.sdp,
        "alice": peers["alice"],
        "bob": peers["bob"],
        "reply": reply,
        "print": print_,
    }
    exec(
        compile("async def quick_start():\n" + textwrap.indent(block, "    "), "README", "exec"),
        namespace,
    )
    try:
        await asyncio.wait_for(namespace["quick_start"](), 20)  # type: ignore[operator]
        await asyncio.gather(*pending)
    finally:
        for pc in peers.values():
            await pc.close()
    names = [type(event).__name__ for event in seen]
    assert set(expected) <= set(names), f"the Quick start printed {names}"
    assert names[-1] == "RoomClosed"
