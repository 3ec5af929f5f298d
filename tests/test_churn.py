"""Churn: people join and leave over and over, also every way a join can
fail, and the server comes back to where it started.

Each round runs these paths at once, with real clients over loopback
(aiortc peers, and a bare STUN client for a session whose DTLS never
starts), through the signaling WebSocket, WHEP and ``Room.join``:

* a moderator and a listener over WebSockets: a hand, a promotion, a mute, a
  demotion; the moderator leaves with ``leave``, the listener's socket drops;
* a WebSocket that closes right after its ``join`` (mid-join);
* a member whose client vanishes (its UDP sockets closed, no DTLS alert):
  ended by consent expiry;
* a session whose DTLS never starts (STUN only): ended by the handshake timeout;
* a client whose certificate is not the one its offer names: DTLS fails;
* a WHEP player that leaves with DELETE (it gets the room mix: the mixer
  starts and stops), watched by the backend with a stream of its own
  (``member=``) left with ``break`` once it has gone; and one that vanishes
  without DELETE;
* joins waiting for their turn when their room closes;
* a room made by a signaling join that closes itself once empty;
* a recording (with per-speaker files) started and stopped.

Then, once the timeouts have run out, everything the server keeps per
member, session, address, join or room is as it was after the first round,
and so are the process's asyncio tasks, timers, file descriptors, threads
and live objects (members, sessions, rooms, event streams).
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import os
import secrets
import socket
import threading
import weakref
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aioice import stun
from aiortc import RTCPeerConnection, RTCSessionDescription

import sfu
from sfu import auth
from sfu.events import EventStream
from sfu.signaling.aiohttp import SignalingHandler, add_signaling, add_whip_whep
from sfu.signaling.protocol import SignalingSession
from sfu.transport.session import Session

from .clients import ToneTrack, close_peer, make_offer, wait_for
from .conftest import client_configuration
from .sites import start_site
from .test_room_lifecycle import LISTENER, UFRAG

SECRET = secrets.token_urlsafe(32)
ROUNDS = 20
CONSENT_TIMEOUT = 3.0
HANDSHAKE_TIMEOUT = 2.0
#: Objects that must all be gone once their members, sessions and rooms are.
TRACKED = (sfu.Participant, Session, sfu.Room, EventStream, SignalingSession)


def footprint(server: sfu.Server, signaling: SignalingHandler) -> Counter[str]:
    """Everything the server and its rooms keep per member, session, address or join.

    Left out, as they are kept on purpose: moderators' decisions (for the
    room's life), the rejoin graces (pruned as new ones open) and the
    signaling's command buckets (pruned past 256 per room).
    """
    found: Counter[str] = Counter(
        {
            "sessions by ufrag": len(server._sessions_by_ufrag),
            "sessions by address": len(server._sessions_by_address),
            "address proofs": len(server._proofs),
            "handshaking sessions": len(server.handshakes.sessions),
            "handshake backlog": len(server.handshakes.backlog),
            "joins waiting their turn": len(server.admission),
            "closing rooms": len(server._closing_rooms),
            "signaling connections": len(signaling.sessions),
        }
    )
    for name, room in server._rooms.items():
        router = room.router
        tables: dict[str, int] = {
            "members": len(room._participants),
            "members by number": len(room._by_number),
            "publish counts": sum(room._counts.values()),
            "joins under way": room._closing.joining,
            "hands": len(room._moderation._hands),
            "demoted present": len(room._demoted_present),
            "event subscribers": len(room._subscribers),
            "members with event streams": room._subscribers.members,
            "router publishers": len(router._publishers),
            "router csrcs": len(router._csrcs),
            "router receivers": len(router._receivers),
            "router kept counts": len(router._kept),
            "fan-out receivers": len(router.fanout),
            "ranked speakers": len(router.detector.ranking()),
            "slot holders": sum(holder >= 0 for holder in router.detector.holders()),
            "router taps": len(router.taps),
        }
        mixer = room._mixer
        if mixer is not None:
            tables |= {
                "mixer running": int(mixer.running),
                "mix-minus ssrcs": len(mixer._mix_streams.minus_ssrcs),
                "mix streams": len(mixer._streams),
                "mix receivers": len(mixer._mix_receivers.streams),
                "mix carried counts": len(mixer._mix_receivers.carried),
                "mix speakers": len(mixer._speakers),
                "mix positions": len(mixer._mix_streams.positions),
            }
        found.update({f"room {name!r}: {key}": value for key, value in tables.items()})
    return found


async def fill_default_executor() -> None:
    """Start every thread the loop's default executor may have (it starts
    them one by one as lookups and file work come, up to its bound): one
    first started in a later round is that pool growing, not a leak."""
    loop = asyncio.get_running_loop()
    workers = min(32, (os.cpu_count() or 1) + 4)  # ThreadPoolExecutor's default bound
    started = threading.Barrier(workers)
    await asyncio.gather(*(loop.run_in_executor(None, started.wait, 10) for _ in range(workers)))


def process_footprint() -> Counter[str]:
    """The process's tasks, timers, descriptors, threads and tracked objects."""
    gc.collect()
    current = asyncio.current_task()
    found: Counter[str] = Counter(
        {
            "asyncio tasks": sum(1 for t in asyncio.all_tasks() if t is not current),
            "timers": len(timers()),
            "file descriptors": len(os.listdir("/proc/self/fd")),
            "threads": threading.active_count(),
        }
    )
    for kind in TRACKED:
        found[f"live {kind.__name__}"] = sum(1 for o in gc.get_objects() if isinstance(o, kind))
    return found


#: aiohttp's own timers on a WebSocket the server closed: it schedules one more
#: heartbeat when the client's closing frame comes in, which fires once (a
#: ping, then the pong's deadline) and lets the socket go, within
#: heartbeat + pong timeout seconds (aiohttp 3.14).
AIOHTTP_CLOSED_SOCKET_TIMERS = (
    "WebSocketResponse._send_heartbeat",
    "WebSocketResponse._pong_not_received",
)


def timers() -> list[str]:
    """The loop's pending timers, but for aiohttp's on WebSockets already closed.

    uvloop keeps its timers out of Python's reach: there (SFU_TEST_LOOP=uvloop)
    none are listed, and the timers are compared on asyncio's loop only; the
    other counts are compared on both."""
    loop = asyncio.get_running_loop()
    scheduled = getattr(loop, "_scheduled", None)
    if scheduled is None:
        return []
    pending = [h for h in scheduled if not h.cancelled()]
    return sorted(
        repr(h)
        for h in pending
        if getattr(h._callback, "__qualname__", "") not in AIOHTTP_CLOSED_SOCKET_TIMERS
    )


def differences(before: Counter[str], after: Counter[str]) -> dict[str, tuple[int, int]]:
    return {
        key: (before[key], after[key])
        for key in sorted(set(before) | set(after))
        if before[key] != after[key]
    }


# ---------------------------------------------------------------- clients


def token(identity: str, role: str, room: str = "hall") -> str:
    return auth.issue_token(SECRET, room=room, identity=identity, role=role)  # type: ignore[arg-type]


async def new_peer(*, speaker: bool = False, lines: int = 3) -> RTCPeerConnection:
    pc = RTCPeerConnection(client_configuration())
    if speaker:
        pc.addTransceiver(ToneTrack(), direction="sendrecv")
        lines -= 1
    for _ in range(lines):
        pc.addTransceiver("audio", direction="recvonly")
    await make_offer(pc)
    return pc


async def connect(pc: RTCPeerConnection, answer: str) -> None:
    await pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
    await wait_for(lambda: pc.connectionState == "connected", 10, "the client connected")


async def vanish(pc: RTCPeerConnection) -> None:
    """The client goes away without a word: its UDP sockets close, no DTLS alert."""
    for transceiver in pc.getTransceivers():
        connection = transceiver.receiver.transport.transport._connection
        for protocol in list(connection._protocols):
            protocol.transport.close()
    await close_peer(pc)


class Signaling:
    """One WebSocket speaking docs/signaling.md."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse[bool]) -> None:
        self.ws = ws
        self.number = 0

    @classmethod
    async def open(cls, http: aiohttp.ClientSession, base: str) -> Signaling:
        return cls(await http.ws_connect(f"{base}/ws"))

    async def request(self, message: dict[str, Any]) -> dict[str, Any]:
        self.number += 1
        await self.ws.send_str(json.dumps({**message, "id": self.number}))
        while True:
            frame = await self.ws.receive(10)
            assert frame.type == aiohttp.WSMsgType.TEXT, frame
            reply = json.loads(frame.data)
            if reply.get("id") == self.number:
                assert reply["type"] != "error", reply
                return dict(reply)

    async def join(self, pc: RTCPeerConnection, identity: str, role: str, room: str) -> None:
        reply = await self.request(
            {
                "type": "join",
                "room": room,
                "token": token(identity, role, room),
                "offer": pc.localDescription.sdp,
            }
        )
        assert reply["type"] == "joined", reply
        await connect(pc, reply["answer"])


async def stun_only(server: sfu.Server, answer: str) -> None:
    """Pass the ICE check of a session made for LISTENER, then never start DTLS."""
    fields = dict(
        line[2:].split(":", 1)
        for line in answer.splitlines()
        if line.startswith(("a=ice-ufrag:", "a=ice-pwd:"))
    )
    request = stun.Message(message_method=stun.Method.BINDING, message_class=stun.Class.REQUEST)
    request.attributes["USERNAME"] = f"{fields['ice-ufrag']}:{UFRAG}"
    request.attributes["PRIORITY"] = 2130706431
    request.attributes["ICE-CONTROLLING"] = secrets.randbits(64)
    request.attributes["USE-CANDIDATE"] = None
    request.add_message_integrity(fields["ice-pwd"].encode())
    request.add_fingerprint()
    loop = asyncio.get_running_loop()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        sock.connect(("127.0.0.1", server.port))
        await loop.sock_sendall(sock, bytes(request))
        response = stun.parse_message(await asyncio.wait_for(loop.sock_recv(sock, 2048), 5))
    assert response.message_class == stun.Class.RESPONSE


# ---------------------------------------------------------------- the paths


class Paths:
    def __init__(
        self, server: sfu.Server, base: str, http: aiohttp.ClientSession, files: Path
    ) -> None:
        self.server = server
        self.files = files
        self.base = base
        self.http = http
        self.room = server.room("hall", roster_interval=0.05)
        self.peers: list[RTCPeerConnection] = []  # closed at the end of the test, whatever happens

    async def peer(self, **kwargs: Any) -> RTCPeerConnection:
        pc = await new_peer(**kwargs)
        self.peers.append(pc)
        return pc

    async def moderated(self, round_: int) -> None:
        """A hand, a promotion, a mute and a demotion; then one leaves, one drops."""
        mod = await Signaling.open(self.http, self.base)
        # One line: it gets the mix without its own voice (a mix-minus stream).
        mod_pc = await self.peer(speaker=True, lines=1)
        # (A few moderators in turn: one alone would pass the command rate limit.)
        moderator = f"mod-{round_ % 4}"
        await mod.join(mod_pc, moderator, "moderator", "hall")
        member = self.room[moderator]
        # It is heard: the slots, the ranking and the mix hold it until it leaves.
        await wait_for(lambda: member.stats()["inbound"]["packets_received"] > 5, 10, "its voice")
        lis = await Signaling.open(self.http, self.base)
        lis_pc = await self.peer()
        identity = f"fan-{round_}"
        await lis.join(lis_pc, identity, "listener", "hall")
        await lis.request({"type": "raise_hand"})
        await mod.request({"type": "promote", "identity": identity})
        await mod.request({"type": "mute_participant", "identity": identity, "muted": True})
        await mod.request({"type": "demote", "identity": identity})
        await lis.ws.close()  # no "leave": the socket just goes
        await mod.request({"type": "leave"})
        await mod.ws.close()
        await asyncio.gather(close_peer(mod_pc), close_peer(lis_pc))

    async def socket_closed_mid_join(self, round_: int) -> None:
        ws = await Signaling.open(self.http, self.base)
        pc = await self.peer()
        message = {
            "type": "join",
            "room": "hall",
            "token": token(f"gone-{round_}", "listener"),
            "offer": pc.localDescription.sdp,
        }
        await ws.ws.send_str(json.dumps(message))
        await ws.ws.close()
        await close_peer(pc)

    async def client_vanishes(self, round_: int) -> None:
        pc = await self.peer()
        member = await self.room.join(pc.localDescription.sdp, identity=f"vanished-{round_}")
        await connect(pc, member.answer)
        await vanish(pc)

    async def dtls_never_starts(self, round_: int) -> None:
        member = await self.room.join(LISTENER, identity=f"stun-only-{round_}")
        await stun_only(self.server, member.answer)

    async def wrong_certificate(self, round_: int) -> None:
        pc = await self.peer()
        lines = pc.localDescription.sdp.splitlines()
        for index, line in enumerate(lines):
            if line.startswith("a=fingerprint:"):  # every one: any would do (RFC 8122)
                algorithm, value = line.split(" ", 1)
                flipped = (f"{int(byte, 16) ^ 0xFF:02X}" for byte in value.split(":"))
                lines[index] = f"{algorithm} {':'.join(flipped)}"
        offer = "\r\n".join(lines) + "\r\n"
        member = await self.room.join(offer, identity=f"impostor-{round_}")
        await pc.setRemoteDescription(RTCSessionDescription(member.answer, "answer"))
        await wait_for(lambda: member.closed, 10, "the server ended the impostor's session")
        assert member.connected_at is None, "an impostor's session connected"
        await close_peer(pc)

    async def whep(self, round_: int, *, delete: bool) -> None:
        pc = await self.peer(lines=1)  # one line: the room mix
        identity = f"player-{round_}-{int(delete)}"
        headers = {
            "Content-Type": "application/sdp",
            "Authorization": f"Bearer {token(identity, 'listener')}",
        }
        url = f"{self.base}/rooms/hall/whep"
        if delete:
            # The backend watches this player with a stream of its own, left
            # with `break` (no close()) once it has gone.
            watcher = asyncio.ensure_future(self.watch(identity))
            await asyncio.sleep(0)  # subscribed
        async with self.http.post(url, data=pc.localDescription.sdp, headers=headers) as r:
            assert r.status == 201, await r.text()
            location = r.headers["Location"]
            answer = await r.text()
        await connect(pc, answer)
        if delete:
            async with self.http.delete(self.base + location) as r:
                assert r.status == 200
            await close_peer(pc)
            await asyncio.wait_for(watcher, 10)
        else:
            await vanish(pc)

    async def watch(self, identity: str) -> None:
        async for event in self.room.events(member=identity):
            if isinstance(event, sfu.ParticipantLeft):
                break

    async def room_closes_while_joins_wait(self, round_: int) -> None:
        room = self.server.room(f"closing-{round_}")
        joins = [
            asyncio.ensure_future(room.join(LISTENER, identity=f"waiting-{i}")) for i in range(6)
        ]
        await asyncio.sleep(0)
        await room.close()
        outcomes = await asyncio.gather(*joins, return_exceptions=True)
        assert any(isinstance(outcome, sfu.RoomClosed) for outcome in outcomes), outcomes
        assert all(
            isinstance(outcome, sfu.RoomClosed) or outcome.closed  # type: ignore[union-attr]
            for outcome in outcomes
        ), outcomes

    async def room_made_by_a_join(self, round_: int) -> None:
        ws = await Signaling.open(self.http, self.base)
        pc = await self.peer()
        await ws.join(pc, f"visitor-{round_}", "listener", f"pop-up-{round_}")
        await ws.request({"type": "leave"})
        await ws.ws.close()
        await close_peer(pc)

    async def recording(self, round_: int, others_done: asyncio.Event) -> None:
        """Recorded while the round's other paths come and go (the moderator's
        voice among them), and a few packets at least; then stopped."""
        recorder = await self.room.record(self.files / f"round-{round_}.ogg", per_speaker=True)
        await others_done.wait()
        await wait_for(lambda: recorder.packets >= 10, 10, "the recording to write the mix")
        await recorder.stop()

    async def round(self, round_: int) -> None:
        paths: list[Callable[[int], Awaitable[None]]] = [
            self.moderated,
            self.socket_closed_mid_join,
            self.client_vanishes,
            self.dtls_never_starts,
            self.wrong_certificate,
            lambda r: self.whep(r, delete=True),
            lambda r: self.whep(r, delete=False),
            self.room_closes_while_joins_wait,
            self.room_made_by_a_join,
        ]
        others_done = asyncio.Event()

        async def others() -> None:
            try:
                await asyncio.gather(*(path(round_) for path in paths))
            finally:
                others_done.set()

        await asyncio.gather(others(), self.recording(round_, others_done))


async def settled(server: sfu.Server, signaling: SignalingHandler, seconds: float) -> None:
    """Wait until no session, member or extra room is left (the timeouts ran out)."""
    await wait_for(
        lambda: (
            not server._sessions_by_ufrag
            and not server._closing_rooms
            and not signaling.sessions
            and list(server._rooms) == ["hall"]
            and not server.rooms["hall"].participants
        ),
        seconds,
        "every session and member to end",
    )
    await asyncio.sleep(0.3)  # closing tasks and callbacks run


@pytest.fixture(autouse=True)
def few_log_records() -> Iterator[None]:
    """Log records keep their arguments (sessions, members) for the test
    report: the sfu logger makes none below WARNING here, or they would hold
    what these tests check is let go."""
    sfu_logger = logging.getLogger("sfu")
    level = sfu_logger.level
    sfu_logger.setLevel(logging.WARNING)
    yield
    sfu_logger.setLevel(level)


async def test_join_and_leave_churn_returns_the_server_to_where_it_started(
    tmp_path: Path,
) -> None:
    server = sfu.Server(
        consent_timeout=CONSENT_TIMEOUT,
        handshake_timeout=HANDSHAKE_TIMEOUT,
        token_secret=SECRET,
        joins_per_turn=2,
    )
    await server.start()
    app = web.Application()
    signaling = add_signaling(
        app, server, room_settings={"close_when_empty": 0.5, "roster_interval": 0.05}
    )
    add_whip_whep(app, server)
    runner, port = await start_site(app)
    # No kept-alive HTTP connections: each request's connection (and its
    # server-side task) ends with it.
    http = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(force_close=True), timeout=aiohttp.ClientTimeout(total=20)
    )
    paths = Paths(server, f"http://127.0.0.1:{port}", http, tmp_path)
    try:
        await asyncio.wait_for(paths.round(0), 60)  # warm-up: the mixer, codecs, pools made once
        await fill_default_executor()
        await settled(server, signaling, 10)
        server_before, process_before = footprint(server, signaling), process_footprint()
        timers_before = timers()
        for round_ in range(1, ROUNDS + 1):
            await asyncio.wait_for(paths.round(round_), 60)
            paths.peers = [pc for pc in paths.peers if pc.connectionState != "closed"]
        await settled(server, signaling, 10)
        server_after, process_after = footprint(server, signaling), process_footprint()
        assert server.rooms["hall"].mixer.packets_out > 0, "the WHEP players got the mix"
        assert differences(server_before, server_after) == {}
        assert differences(process_before, process_after) == {}, (timers_before, timers())
    finally:
        await asyncio.gather(*(close_peer(pc) for pc in paths.peers))
        await http.close()
        await runner.cleanup()
        await server.close()


async def test_a_whep_session_that_ended_without_delete_is_not_kept() -> None:
    """A WHEP player that vanishes (its consent expires) and sends no DELETE
    must not be held by the adapter until some later request: with it, its
    member, session and closed room would stay for as long as no one POSTs."""
    async with sfu.Server(consent_timeout=1.0, token_secret=SECRET) as server:
        app = web.Application()
        add_whip_whep(app, server, room_settings={"close_when_empty": 0.5})
        runner, port = await start_site(app)
        pc = await new_peer(lines=1)
        try:
            async with aiohttp.ClientSession() as http:
                headers = {
                    "Content-Type": "application/sdp",
                    "Authorization": f"Bearer {token('player', 'listener', 'pop-up')}",
                }
                url = f"http://127.0.0.1:{port}/rooms/pop-up/whep"
                async with http.post(url, data=pc.localDescription.sdp, headers=headers) as r:
                    assert r.status == 201, await r.text()
                    location = r.headers["Location"]
                    answer = await r.text()
                room = server.rooms["pop-up"]
                member = weakref.ref(room["player"])
                await connect(pc, answer)
                await vanish(pc)
                await wait_for(lambda: room.closed, 10, "consent to expire and the room to close")
                gc.collect()
                assert member() is None, "the adapter keeps the ended session"
                async with http.delete(f"http://127.0.0.1:{port}{location}") as r:
                    assert r.status == 404, "an ended session's resource is gone"
        finally:
            await close_peer(pc)
            await runner.cleanup()
