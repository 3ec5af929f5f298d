"""A WHIP encoder (or WHEP player) that crashed, without a DELETE, and POSTs
again with its token gets its new session at once: the old one, whose
client no longer answers, is replaced, well before its consent would have
expired. A session whose client still answers is never taken over.

Real aiohttp on loopback and real aiortc peers. The client that crashes
runs in a child process killed with SIGKILL (its socket closed by the
kernel, nothing said to the server), as OBS crashing would.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web
from aiortc import RTCPeerConnection, RTCSessionDescription

import sfu
from sfu import auth
from sfu.signaling import aiohttp as adapter
from sfu.signaling.aiohttp import add_whip_whep

from ..clients import Client, ToneTrack, _record_received, close_peer, wait_for
from ..conftest import client_configuration
from ..sites import start_site
from ..test_room_lifecycle import offer
from .test_protocol import SECRET, App
from .test_protocol import app as app  # the fixture (WebSocket and WHIP/WHEP)

SILENT_OFFER = offer("sendrecv", "recvonly", "recvonly")  # its ICE credentials are nobody's
CONSENT_TIMEOUT = 30.0  # the server's default, which a replacement must not wait for

CRASHING_CLIENT = r"""
import asyncio, sys

import aiohttp
import aioice.ice
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from tests.clients import ToneTrack

# As the test suite's clients: one host candidate, on loopback.
aioice.ice.get_host_addresses = lambda use_ipv4=True, use_ipv6=True: ["127.0.0.1"]


async def main(url, token, kind):
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    if kind == "whip":
        pc.addTransceiver(ToneTrack(), direction="sendonly")
    else:
        pc.addTransceiver("audio", direction="recvonly")
    await pc.setLocalDescription(await pc.createOffer())
    headers = {"Content-Type": "application/sdp", "Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession() as http:
        async with http.post(url, data=pc.localDescription.sdp, headers=headers) as r:
            assert r.status == 201, await r.text()
            location, answer = r.headers["Location"], await r.text()
    await pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
    while pc.connectionState != "connected":
        await asyncio.sleep(0.01)
    print(location, flush=True)
    await asyncio.sleep(3600)  # until killed


asyncio.run(main(*sys.argv[1:]))
"""


@dataclass
class Site:
    server: sfu.Server
    base: str
    http: aiohttp.ClientSession

    def token(self, identity: str, role: str = "speaker") -> str:
        return auth.issue_token(SECRET, room="hall", identity=identity, role=role)  # type: ignore[arg-type]

    async def post(
        self, kind: str, token: str, pc: RTCPeerConnection
    ) -> tuple[int, str, dict[str, str], float]:
        """POST ``pc``'s offer: status, body, headers, and how long the answer took."""
        headers = {"Content-Type": "application/sdp", "Authorization": f"Bearer {token}"}
        loop = asyncio.get_running_loop()
        started = loop.time()
        async with self.http.post(
            f"{self.base}/rooms/hall/{kind}", data=pc.localDescription.sdp, headers=headers
        ) as r:
            return r.status, await r.text(), dict(r.headers), loop.time() - started


@pytest_asyncio.fixture
async def site() -> AsyncIterator[Site]:
    async with sfu.Server(token_secret=SECRET, consent_timeout=CONSENT_TIMEOUT) as server:
        web_app = web.Application()
        add_whip_whep(web_app, server)
        runner, port = await start_site(web_app)
        try:
            async with aiohttp.ClientSession() as http:
                yield Site(server, f"http://127.0.0.1:{port}", http)
        finally:
            await runner.cleanup()


async def crashing(site: Site, kind: str, token: str) -> tuple[asyncio.subprocess.Process, str]:
    """A client in a child process, connected; its session's Location."""
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        CRASHING_CLIENT,
        f"{site.base}/rooms/hall/{kind}",
        token,
        kind,
        stdout=asyncio.subprocess.PIPE,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert child.stdout is not None
    try:
        line = await asyncio.wait_for(child.stdout.readline(), 30)
    except BaseException:
        child.kill()
        await child.wait()
        raise
    assert line, "the child client did not connect"
    return child, line.decode().strip()


async def crash(child: asyncio.subprocess.Process) -> None:
    child.send_signal(signal.SIGKILL)
    assert await child.wait() == -signal.SIGKILL


async def offering(kind: str) -> tuple[RTCPeerConnection, Client]:
    """A new in-process client's peer, its offer made: a WHIP publisher
    (one sending line, a tone) or a WHEP player (one receiving line)."""
    pc = RTCPeerConnection(client_configuration())
    client = Client(pc=pc, identity="")
    if kind == "whip":
        client.track = ToneTrack(660)
        pc.addTransceiver(client.track, direction="sendonly")
    else:
        pc.addTransceiver("audio", direction="recvonly")
    await pc.setLocalDescription(await pc.createOffer())
    return pc, client


def packets_in(member: sfu.Participant) -> int:
    publisher = member.publisher
    return 0 if publisher is None else member.stats()["inbound"]["packets_received"]


@pytest.mark.parametrize("kind", ["whip", "whep"])
async def test_a_client_that_crashed_is_replaced_by_its_new_post_at_once(
    site: Site, kind: str
) -> None:
    token = site.token("obs")
    child, old_location = await crashing(site, kind, token)
    peers: list[RTCPeerConnection] = []
    try:
        room = site.server.rooms["hall"]
        old = room["obs"]
        await old.wait_connected(10)
        old_session = old.session
        assert old_session is not None and old_session in site.server.sessions()
        if kind == "whip":
            await wait_for(lambda: packets_in(old) >= 20, 10, "the encoder publishing")
        listener_pc, listener = await offering("whep")
        peers.append(listener_pc)
        status, answer, _, _ = await site.post("whep", site.token("ear", "listener"), listener_pc)
        assert status == 201, answer
        _record_received(listener)
        await listener_pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))

        await crash(child)  # no DELETE, nothing said
        pc, client = await offering(kind)
        peers.append(pc)
        status, answer, headers, took = await site.post(kind, token, pc)
        assert status == 201, answer
        # It waited for the old client to answer (ANSWER_WAIT), not for its consent.
        assert took < adapter.ANSWER_WAIT + 2.0 < CONSENT_TIMEOUT, took

        # The old member is gone, as replaced, and everything it held is let go.
        new = room["obs"]
        assert new is not old and old.closed and old.close_reason == "replaced"
        assert old_session.state == "closed" and old_session not in site.server.sessions()
        assert old.number not in room.router._publishers and old.publisher is None
        assert [p for p in room.participants.values() if p.identity == "obs"] == [new]
        assert room._counts == ({True: 1, False: 1} if kind == "whip" else {True: 0, False: 2})
        async with site.http.delete(site.base + old_location) as r:
            assert r.status == 404, "the old session's URL is gone"
        assert not new.closed

        await pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
        await new.wait_connected(10)
        if kind == "whip":
            await wait_for(
                lambda: any(p.csrc == (new.csrc,) for p in listener.packets(0)),
                10,
                "the new session heard",
            )
        async with site.http.delete(site.base + headers["Location"]) as r:
            assert r.status == 200
        assert new.closed
    finally:
        if child.returncode is None:
            child.kill()
            await child.wait()
        await asyncio.gather(*(close_peer(pc) for pc in peers))


async def test_a_live_session_is_not_taken_over_by_a_post_with_its_token(site: Site) -> None:
    """Its client still sends: a POST with its token (or a new token for the
    same identity) is refused 409 at once, and the session goes on."""
    pc, client = await offering("whip")
    other_pc, _ = await offering("whip")
    try:
        token = site.token("obs")
        status, answer, _, _ = await site.post("whip", token, pc)
        assert status == 201, answer
        await pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
        member = site.server.rooms["hall"]["obs"]
        await member.wait_connected(10)
        await wait_for(lambda: packets_in(member) >= 20, 10, "the encoder publishing")
        for again in (token, site.token("obs")):
            status, text, _, took = await site.post("whip", again, other_pc)
            assert status == 409, text
            assert "client still answers" in text and "DELETE" in text, text
            assert took < adapter.ANSWER_WAIT, took
        # A bad token is refused as ever, before its client is asked anything.
        expired = auth.issue_token(SECRET, room="hall", identity="obs", ttl=1, now=1_000_000)
        status, text, headers, _ = await site.post("whip", expired, other_pc)
        assert status == 401 and "expired" in text, text
        assert site.server.rooms["hall"]["obs"] is member and not member.closed
        before = packets_in(member)
        await wait_for(lambda: packets_in(member) >= before + 20, 10, "still publishing")
    finally:
        await asyncio.gather(close_peer(pc), close_peer(other_pc))


async def test_a_live_but_quiet_player_answers_the_servers_check_and_keeps_its_session(
    site: Site,
) -> None:
    """A WHEP player sends no media: between its reports and consent checks
    it may be quiet for seconds. Quieter still here (its reports and consent
    checks stopped), its ICE agent still answers the binding request the
    server sends: the session is live, and a POST with its token is 409."""
    pc, _ = await offering("whep")
    other_pc, _ = await offering("whep")
    try:
        token = site.token("viewer", "listener")
        status, answer, _, _ = await site.post("whep", token, pc)
        assert status == 201, answer
        await pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
        member = site.server.rooms["hall"]["viewer"]
        await member.wait_connected(10)
        # The client's own tasks that send: its consent checks and its reports.
        receiver = pc.getTransceivers()[0].receiver
        connection = receiver.transport.transport._connection

        def senders() -> list[asyncio.Future[None] | None]:
            # (aiortc's name-mangled RTCRtpReceiver.__rtcp_task)
            rtcp: asyncio.Future[None] | None = receiver._RTCRtpReceiver__rtcp_task  # type: ignore[attr-defined]
            return [connection._query_consent_task, rtcp]

        await wait_for(lambda: None not in senders(), 10, "the player's checks and reports")
        for task in senders():
            assert task is not None
            task.cancel()
        session = member.session
        assert session is not None
        loop = asyncio.get_running_loop()
        await wait_for(lambda: loop.time() - session.last_valid > 1.5, 10, "the player quiet")

        status, text, _, _ = await site.post("whep", token, other_pc)
        assert status == 409, text
        assert site.server.rooms["hall"]["viewer"] is member and not member.closed
        assert loop.time() - session.last_valid < 1.0, "its answer renewed the session"
    finally:
        await asyncio.gather(close_peer(pc), close_peer(other_pc))


async def test_only_a_session_of_the_same_endpoint_is_replaced(app: App) -> None:
    """A crashed WHIP encoder is not replaced by a WHEP POST of its identity
    (another kind of client), and a member joined over the signaling
    WebSocket (whose reconnect has its resume key) by no POST, even one
    whose client never connected its media at all."""
    token = app.token("obs", "speaker")
    site = Site(app.server, app.base, app.http)
    child, _ = await crashing(site, "whip", token)
    peers: list[RTCPeerConnection] = []
    socket = await app.ws()
    try:
        room = app.server.rooms["hall"]
        old = room["obs"]
        await old.wait_connected(10)
        await crash(child)
        pc, _ = await offering("whep")
        peers.append(pc)
        status, text, _, _ = await site.post("whep", token, pc)
        assert status == 409 and "already in room" in text, text
        assert room["obs"] is old and not old.closed
        pc, _ = await offering("whip")
        peers.append(pc)
        status, text, _, _ = await site.post("whip", token, pc)
        assert status == 201, text
        assert old.close_reason == "replaced"

        # Joined by WebSocket with an offer nobody connects: silent from the start.
        sam_token = app.token("sam", "speaker")
        await socket.request(
            {"type": "join", "room": "hall", "token": sam_token, "offer": SILENT_OFFER}, "joined"
        )
        sam = room["sam"]
        for kind in ("whip", "whep"):
            pc, _ = await offering(kind)
            peers.append(pc)
            status, text, _, took = await site.post(kind, sam_token, pc)
            assert status == 409 and "already in room" in text, text
            assert took < adapter.ANSWER_WAIT, "its client was not even asked"
        assert room["sam"] is sam and not sam.closed
    finally:
        if child.returncode is None:
            child.kill()
            await child.wait()
        await asyncio.gather(socket.ws.close(), *(close_peer(pc) for pc in peers))


async def test_audio_and_video_clients_connect_with_their_video_line_unused(site: Site) -> None:
    """GStreamer's whipsink and whepsrc, OBS and aiortc offer video beside
    the audio. The answer rejected the video line with port 0 and nothing
    else, which webrtcbin refuses ("No fingerprint lines in sdp for media
    1") and aiortc too ("ICE username fragment or password is missing"):
    such a client never connected. Kept in the group, inactive, it does:
    an audio+video publisher is heard by a video-first audio+video player."""
    publisher_pc = RTCPeerConnection(client_configuration())
    player_pc = RTCPeerConnection(client_configuration())
    tone = ToneTrack(660)
    publisher = Client(pc=publisher_pc, identity="cam", track=tone)
    player = Client(pc=player_pc, identity="viewer")
    try:
        publisher_pc.addTransceiver(tone, direction="sendonly")
        publisher_pc.addTransceiver("video", direction="sendonly")
        player_pc.addTransceiver("video", direction="recvonly")  # video first, as whepsrc's
        player_pc.addTransceiver("audio", direction="recvonly")
        for client, kind, role in ((publisher, "whip", "speaker"), (player, "whep", "listener")):
            await client.pc.setLocalDescription(await client.pc.createOffer())
            status, answer, _, _ = await site.post(
                kind, site.token(client.identity, role), client.pc
            )
            assert status == 201, answer
            if kind == "whep":
                _record_received(client)
            await client.pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
            await client.wait_connected(10)
        room = site.server.rooms["hall"]
        await wait_for(lambda: packets_in(room["cam"]) >= 20, 10, "the publisher's audio")
        await wait_for(lambda: len(player.packets(1)) >= 20, 10, "the player hearing it")
        assert player.packets(0) == [], "nothing on the video line"
    finally:
        await asyncio.gather(publisher.close(), player.close())
