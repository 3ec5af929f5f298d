"""The whole path over IPv6: the demo served on [::1], a server on ::1.

aiortc clients gather on ::1. Chromium offers no ::1 candidate, even with
``--allow-loopback-in-peer-connection`` (it adds 127.0.0.1 only): the
browser's tab gathers on a private IPv6 address (``fd00:5f:75::1``) given
to a veth pair made inside the tests' own network namespace, as the
GStreamer test does, and its checks and media go from there to the
server's ::1. Nothing leaves the namespace: its only other interface is
``lo``.
"""

from __future__ import annotations

import re
import secrets
import shutil
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
import aioice.ice
import pytest
import pytest_asyncio
from aiohttp import web
from aiortc import RTCPeerConnection, RTCSessionDescription
from playwright.async_api import Page, Playwright

import sfu
from tests.clients import Client, _record_received, close_peer, join, wait_for
from tests.conftest import NETWORK_ISOLATION, client_configuration
from tests.e2e.browser import launch_browser, open_page
from tests.e2e.test_demo import Demo, demo_server, wait_hearing
from tests.e2e.test_demo import join as join_page

BROWSER_ADDRESS = "fd00:5f:75::1"


def _ip(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["ip", *args], capture_output=True)


@pytest.fixture
def aiortc_on_ipv6(monkeypatch: pytest.MonkeyPatch) -> None:
    """aiortc clients gather one host candidate, ::1."""
    monkeypatch.setattr(aioice.ice, "get_host_addresses", lambda *args, **kwargs: ["::1"])


@pytest_asyncio.fixture(loop_scope="session")
async def ipv6_page(
    playwright: Playwright, speech_wav: Path
) -> AsyncIterator[Callable[[str], Awaitable[Page]]]:
    """``await ipv6_page(url)``: a tab of a Chromium that gathers on BROWSER_ADDRESS."""
    if not NETWORK_ISOLATION.isolated:
        pytest.skip(
            f"adds a veth pair: needs the tests' own namespace ({NETWORK_ISOLATION.reason})"
        )
    if shutil.which("ip") is None:
        pytest.skip("needs Debian package iproute2 (ip)")
    made = _ip("link", "add", "sfu6", "type", "veth", "peer", "name", "sfu6peer")
    if made.returncode != 0:
        pytest.skip(f"`ip` could not add a veth pair: {made.stderr.decode().strip()}")
    try:
        for step in (
            ("-6", "addr", "add", f"{BROWSER_ADDRESS}/64", "dev", "sfu6", "nodad"),
            ("link", "set", "sfu6", "up"),
            ("link", "set", "sfu6peer", "up"),
        ):
            assert _ip(*step).returncode == 0, step
        browser = await launch_browser(playwright, speech_wav)  # sees the address at start
        try:
            yield lambda url: open_page(browser, url)
        finally:
            await browser.close()
    finally:
        _ip("link", "del", "sfu6")


def _candidates(answer: str) -> list[str]:
    return re.findall(r"^a=candidate:[^\r\n]*", answer, flags=re.M)


async def test_aiortc_speaker_and_listener_over_ipv6_loopback(aiortc_on_ipv6: None) -> None:
    async with sfu.Server(host="::1") as server:
        room = server.room("v6")
        speaker = await join(room, "ann", speaker=True)
        listener = await join(room, "bob", speaker=False)
        try:
            answer = listener.participant.answer  # type: ignore[union-attr]
            assert "\r\nc=IN IP6 ::1\r\n" in answer and " IN IP6 ::1\r\n" in answer
            assert set(_candidates(answer)) == {
                f"a=candidate:1 1 udp 2130706431 ::1 {server.port} typ host"
            }
            await wait_for(lambda: len(listener.packets(0)) >= 25, 10, "audio over ::1")
            assert {p.payload for p in listener.packets(0)} <= set(speaker.sent_payloads)
            stats = listener.participant.stats()  # type: ignore[union-attr]
            assert stats["address"] is not None and stats["address"][0] == "::1"
            assert server.stats()["packets_out"] >= 25 and not server.stats()["drops"]
        finally:
            await speaker.close()
            await listener.close()


async def test_an_ipv4_client_of_a_dual_stack_server() -> None:
    """Bound to ``::``, announcing 127.0.0.1: an IPv4 client's checks, DTLS and
    media come IPv4-mapped, and the fan-out sends back to them."""
    async with sfu.Server(host="::", announce="127.0.0.1") as server:
        assert server.socket.family.name == "AF_INET6"
        room = server.room("both")
        speaker = await join(room, "ann", speaker=True)
        listener = await join(room, "bob", speaker=False)
        try:
            assert "\r\nc=IN IP4 127.0.0.1\r\n" in listener.participant.answer  # type: ignore[union-attr]
            await wait_for(lambda: len(listener.packets(0)) >= 25, 10, "audio over IPv4")
        finally:
            await speaker.close()
            await listener.close()


async def test_a_dual_stack_server_announcing_both_families_serves_each(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Bound to ``::``, announcing ``::1`` and 127.0.0.1: each answer has a
    host candidate per family, so an IPv6-only speaker and an IPv4-only
    listener (each gathering on one address) both connect and the listener
    hears the speaker. With only the first address announced, the IPv4
    client would have no candidate of its family to pair with."""
    gathering_on = ["::1"]
    monkeypatch.setattr(aioice.ice, "get_host_addresses", lambda *args, **kwargs: gathering_on)
    async with sfu.Server(host="::", announce=["::1", "127.0.0.1"]) as server:
        assert server.announce == "::1"
        assert server.announce_addresses == ("::1", "127.0.0.1")
        room = server.room("both")
        speaker = await join(room, "ann", speaker=True)
        gathering_on[:] = ["127.0.0.1"]
        listener = await join(room, "bob", speaker=False)
        try:
            answer = listener.participant.answer  # type: ignore[union-attr]
            assert "\r\nc=IN IP6 ::1\r\n" in answer
            assert _candidates(answer)[:2] == [
                f"a=candidate:1 1 udp 2130706431 ::1 {server.port} typ host",
                f"a=candidate:2 1 udp 2130706175 127.0.0.1 {server.port} typ host",
            ]
            await wait_for(lambda: len(listener.packets(0)) >= 25, 10, "audio over IPv4")
            assert {p.payload for p in listener.packets(0)} <= set(speaker.sent_payloads)
            speaker_at = speaker.participant.stats()["address"]  # type: ignore[union-attr]
            listener_at = listener.participant.stats()["address"]  # type: ignore[union-attr]
            assert speaker_at is not None and speaker_at[0] == "::1"
            assert listener_at is not None and listener_at[0] == "::ffff:127.0.0.1"
        finally:
            await speaker.close()
            await listener.close()


async def test_the_demo_over_ipv6(
    ipv6_page: Callable[[str], Awaitable[Page]], aiortc_on_ipv6: None
) -> None:
    """The demo page from http://[::1]: a Chromium speaker heard by a
    Chromium listener, a WHEP player and the live stream, all over IPv6."""
    secret = secrets.token_urlsafe(32)
    async with sfu.Server("::1", 0, token_secret=secret) as server:
        runner = web.AppRunner(demo_server.make_app(server), shutdown_timeout=0.5)
        await runner.setup()
        await web.TCPSite(runner, "::1", 0).start()
        port = runner.addresses[0][1]
        demo = Demo(server, f"http://[::1]:{port}", secret, runner, port)

        async def new_page(url: str | None = None) -> Page:
            assert url is not None
            return await ipv6_page(url)

        pc = RTCPeerConnection(client_configuration())
        try:
            talker = await join_page(new_page, demo, "v6", "talker", "speaker")
            listener = await join_page(new_page, demo, "v6", "lis", "listener")
            await wait_hearing(listener, "talker")
            room = server.rooms["v6"]
            address = room["talker"].stats()["address"]
            assert address is not None and address[0] == BROWSER_ADDRESS

            player = Client(pc=pc, identity="player")
            pc.addTransceiver("audio", direction="recvonly")
            await pc.setLocalDescription(await pc.createOffer())
            token = demo.token("v6", "player", "listener")
            headers = {"Content-Type": "application/sdp", "Authorization": f"Bearer {token}"}
            async with aiohttp.ClientSession() as http:
                whep = f"{demo.url}/rooms/v6/whep"
                async with http.post(
                    whep, data=pc.localDescription.sdp, headers=headers
                ) as response:
                    assert response.status == 201, await response.text()
                    location = response.headers["Location"]
                    answer = await response.text()
                assert "\r\nc=IN IP6 ::1\r\n" in answer
                _record_received(player)
                await pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
                await wait_for(lambda: len(player.packets(0)) >= 50, 15, "the WHEP player hears")
                live = f"{demo.url}/rooms/v6/live.ogg"
                async with http.get(live, params={"token": token}) as response:
                    assert response.status == 200
                    assert (await response.content.readexactly(4)) == b"OggS"
                async with http.delete(demo.url + location) as response:
                    assert response.status == 200
            for page in (talker, listener):
                await page.click("#leave-button")
            await wait_for(lambda: not room.participants, 10, "everyone left")
        finally:
            await close_peer(pc)
            await runner.cleanup()
