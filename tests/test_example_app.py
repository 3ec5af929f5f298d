"""examples/aiohttp_app.py, the smallest embedding, driven over HTTP by a real
aiortc client: join, hear nothing wrong, leave by the URL only the joiner knows."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import re
import socket
import sys
from pathlib import Path
from types import ModuleType

import aiohttp
import pytest
from aiortc import RTCPeerConnection, RTCSessionDescription

import sfu

from .clients import close_peer, make_offer, wait_for
from .conftest import client_configuration
from .sites import start_site

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "aiohttp_app.py"


def load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("aiohttp_app_example", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


async def test_join_and_leave_through_the_example_app() -> None:
    example = load_example()
    async with sfu.Server() as server:
        runner, port = await start_site(example.make_app(server))
        base = f"http://127.0.0.1:{port}"
        pc = RTCPeerConnection(client_configuration())
        for _ in range(3):
            pc.addTransceiver("audio", direction="recvonly")
        try:
            offer = await make_offer(pc)
            async with aiohttp.ClientSession() as http:
                bad_bodies: list[object] = [{"identity": "x"}, {"identity": None, "sdp": offer}, []]
                for bad in bad_bodies:
                    async with http.post(f"{base}/rooms/hall/listener", json=bad) as r:
                        assert r.status == 400, bad
                too_long = {"identity": "x" * 300, "sdp": offer}
                async with http.post(f"{base}/rooms/hall/listener", json=too_long) as r:
                    assert r.status == 400
                charset = {"Content-Type": "application/json; charset=foo"}  # unknown
                async with http.post(
                    f"{base}/rooms/hall/listener", data=b"{}", headers=charset
                ) as r:
                    assert r.status == 400
                body = {"identity": "lee", "sdp": offer}
                async with http.post(f"{base}/rooms/hall/listener", json=body) as r:
                    assert r.status == 200
                    reply = await r.json()
                async with http.post(f"{base}/rooms/hall/listener", json=body) as r:
                    assert r.status == 409, "the same name twice"
                await pc.setRemoteDescription(RTCSessionDescription(reply["sdp"], "answer"))
                participant = server.rooms["hall"].get("lee")
                assert participant is not None
                await participant.wait_connected(10)
                # Knowing the name is not enough to end someone's session.
                async with http.delete(f"{base}/rooms/hall/lee") as r:
                    assert r.status in (404, 405)
                assert not participant.closed
                async with http.delete(base + reply["leave"]) as r:
                    assert r.status == 204
                await wait_for(lambda: participant.closed, 5, "lee left")
                async with http.delete(base + reply["leave"]) as r:
                    assert r.status == 404
        finally:
            await close_peer(pc)
            await runner.cleanup()


async def test_the_example_app_refuses_deep_json_and_leaves_no_rooms(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    example = load_example()
    monkeypatch.setattr(example, "ROOM_IDLE_SECONDS", 0.5)
    async with sfu.Server() as server:
        runner, port = await start_site(example.make_app(server))
        base = f"http://127.0.0.1:{port}"
        try:
            async with aiohttp.ClientSession() as http:
                deep = "[" * 200_000
                async with http.post(
                    f"{base}/rooms/deep/listener",
                    data=deep,
                    headers={"Content-Type": "application/json"},
                ) as r:
                    assert r.status == 400
                for number in range(20):  # refused joins, each naming a new room
                    body = {"identity": "x", "sdp": "v=0\r\n"}
                    async with http.post(f"{base}/rooms/r{number}/listener", json=body) as r:
                        assert r.status == 400
            assert len(server.rooms) == 20
            await wait_for(lambda: not server.rooms, 5, "the refused joins' rooms close")
        finally:
            await runner.cleanup()


async def test_the_example_prints_the_port_it_bound() -> None:
    """``--port 0`` lets the kernel pick a port: the URL printed is the one
    served (not ``:0``)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(EXAMPLE),
        *("--port", "0"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": str(EXAMPLE.parents[1])},
    )
    try:
        assert process.stdout is not None
        line = (await asyncio.wait_for(process.stdout.readline(), 30)).decode()
        url = re.search(r"open (http://127\.0\.0\.1:(\d+)/)", line)
        assert url and url.group(2) != "0", line
        async with aiohttp.ClientSession() as http:
            async with http.get(url.group(1)) as response:
                assert response.status == 200
    finally:
        process.terminate()
        await process.wait()


@pytest.mark.parametrize(
    ("arguments", "said"),
    [
        (("--host", "localhost"), "host must be an IP address"),
        (("--host", "::1", "--announce", "192.0.2.10"), "announce"),
        (("--port", "70000"), "port number 0..65535"),
        (("--udp-port", "TAKEN"), "in use"),
        (("--port", "TAKEN"), "in use"),
    ],
)
async def test_the_example_says_what_is_wrong_with_its_options(
    arguments: tuple[str, ...], said: str
) -> None:
    """A setting the library refuses, a port out of range or one in use is a
    usage error (exit 2, one line), not a traceback. (TAKEN: a port another
    socket holds, TCP for --port, UDP for --udp-port.)"""
    kind = socket.SOCK_STREAM if arguments[0] == "--port" else socket.SOCK_DGRAM
    with socket.socket(socket.AF_INET, kind) as holder:
        holder.bind(("127.0.0.1", 0))
        if kind == socket.SOCK_STREAM:
            holder.listen()
        taken = str(holder.getsockname()[1])
        given = [taken if argument == "TAKEN" else argument for argument in arguments]
        if "--port" not in given:
            given += ["--port", "0"]
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            str(EXAMPLE),
            *given,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": str(EXAMPLE.parents[1])},
        )
        try:
            _, stderr = await asyncio.wait_for(process.communicate(), 30)
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
    text = stderr.decode()
    assert process.returncode == 2, text
    assert said in text and "Traceback" not in text, text
