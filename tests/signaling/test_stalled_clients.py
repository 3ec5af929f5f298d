"""A client that stops reading its signaling socket is dropped, not waited on
for ever: its member leaves the room and no task of its session is left."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import struct

import pytest
from aiohttp import web

import sfu
from sfu import auth
from sfu.signaling import protocol
from sfu.signaling.aiohttp import add_signaling
from sfu.signaling.protocol import SignalingSession

from ..sites import start_site
from ..test_room_lifecycle import LISTENER, SECRET


def masked_text_frame(text: str) -> bytes:
    """A client's WebSocket text frame (RFC 6455 5.2: clients mask)."""
    data = text.encode()
    mask = os.urandom(4)
    size = len(data)
    if size < 126:
        head = bytes([0x81, 0x80 | size])
    elif size < 1 << 16:
        head = bytes([0x81, 0x80 | 126]) + struct.pack("!H", size)
    else:
        head = bytes([0x81, 0x80 | 127]) + struct.pack("!Q", size)
    return head + mask + bytes(byte ^ mask[i % 4] for i, byte in enumerate(data))


async def wait_until(condition: object, seconds: float) -> bool:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while loop.time() < deadline:
        if condition():  # type: ignore[operator]
            return True
        await asyncio.sleep(0.05)
    return bool(condition())  # type: ignore[operator]


async def test_a_member_that_stops_reading_its_websocket_is_dropped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(protocol, "SEND_TIMEOUT", 1.0)
    monkeypatch.setattr(protocol, "_SEND_SWEEP", 0.2)
    async with sfu.Server(token_secret=SECRET, host="127.0.0.1") as server:
        room = server.room("hall")
        app = web.Application()
        handler = add_signaling(app, server)
        runner, port = await start_site(app)
        loop = asyncio.get_running_loop()
        client = socket.socket()
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # fills quickly
        client.setblocking(False)
        try:
            await loop.sock_connect(client, ("127.0.0.1", port))
            key = base64.b64encode(os.urandom(16)).decode()
            await loop.sock_sendall(
                client,
                (
                    "GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                    f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                    "Sec-WebSocket-Version: 13\r\n\r\n"
                ).encode(),
            )
            token = auth.issue_token(SECRET, room="hall", identity="mallory", role="listener")
            join = {"type": "join", "room": "hall", "token": token, "offer": LISTENER}
            await loop.sock_sendall(client, masked_text_frame(json.dumps(join)))
            assert await wait_until(lambda: room.get("mallory") is not None, 10)
            (session,) = handler.sessions
            # From here the client reads nothing. Replies echo the ping's id:
            # ~5 MB of them fill the kernel's send buffer (4 MB at most here)
            # and aiohttp's, within the frame budget (FRAME_BURST).
            for _ in range(90):
                ping = {"type": "ping", "id": "i" * 60_000}
                await loop.sock_sendall(client, masked_text_frame(json.dumps(ping)))
            assert await wait_until(lambda: session._closed, 10), "the session waits on"
            assert await wait_until(lambda: room.get("mallory") is None, 5)
            assert await wait_until(lambda: not handler.sessions, 5)
            relay = session._relay
            assert relay is None or relay.done()
        finally:
            client.close()
            await runner.cleanup()


async def test_without_abort_a_stalled_send_ends_the_session(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A framework adapter that gives no ``abort``: the send waiting on the
    client is cancelled and the session closes."""
    monkeypatch.setattr(protocol, "SEND_TIMEOUT", 0.3)
    monkeypatch.setattr(protocol, "_SEND_SWEEP", 0.1)
    monkeypatch.setattr(protocol, "CLOSE_TIMEOUT", 0.3)
    never = asyncio.Event()
    closes: list[int] = []

    async def send(text: str) -> None:
        if json.loads(text)["type"] == "pong":
            await never.wait()  # the client's window stays shut

    async def close(code: int, reason: str) -> None:
        closes.append(code)
        await never.wait()  # nor does the closing handshake get through

    async with sfu.Server(token_secret=SECRET, host="127.0.0.1") as server:
        room = server.room("hall")
        session = SignalingSession(server, send, close)
        token = auth.issue_token(SECRET, room="hall", identity="mallory", role="listener")
        await session.handle(
            json.dumps({"type": "join", "room": "hall", "token": token, "offer": LISTENER})
        )
        assert room.get("mallory") is not None
        pinging = asyncio.ensure_future(session.handle(json.dumps({"type": "ping"})))
        assert await wait_until(lambda: session._closed, 3)
        assert await wait_until(lambda: room.get("mallory") is None, 3)
        await asyncio.wait((pinging,), timeout=3)
        assert pinging.cancelled(), "the send waiting on the client was not given up"
        ending = session._ending
        assert ending is not None
        await asyncio.wait_for(asyncio.gather(ending, return_exceptions=True), 3)
        assert closes == [protocol.CLOSE_SESSION_ENDED]


def queued_session(
    server: sfu.Server,
) -> tuple[SignalingSession, list[int], asyncio.Queue[str | None]]:
    """A session whose client's frames are put in a queue (``serve(frames.get)``);
    closing it records the code and ends the queue, as a closed socket does."""
    frames: asyncio.Queue[str | None] = asyncio.Queue()
    closes: list[int] = []

    async def send(text: str) -> None:
        pass

    async def close(code: int, reason: str) -> None:
        closes.append(code)
        frames.put_nowait(None)  # the socket closes: serve() reads None

    return SignalingSession(server, send, close), closes, frames


async def test_a_connection_that_never_joins_is_closed_after_the_deadline(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Sockets that open and never join must not pile up; a pinging one is
    as idle as a silent one. A connection that joined is left alone."""
    monkeypatch.setattr(protocol, "JOIN_DEADLINE", 0.3)

    async with sfu.Server(token_secret=SECRET, host="127.0.0.1") as server:
        room = server.room("hall")
        idle, idle_closes, idle_frames = queued_session(server)
        pinging, pinging_closes, pinging_frames = queued_session(server)
        member, member_closes, member_frames = queued_session(server)
        token = auth.issue_token(SECRET, room="hall", identity="fan", role="listener")
        member_frames.put_nowait(
            json.dumps({"type": "join", "room": "hall", "token": token, "offer": LISTENER})
        )
        serving = [
            asyncio.ensure_future(session.serve(frames.get))
            for session, frames in (
                (idle, idle_frames),
                (pinging, pinging_frames),
                (member, member_frames),
            )
        ]
        for _ in range(8):
            pinging_frames.put_nowait(json.dumps({"type": "ping"}))
            await asyncio.sleep(0.1)
        await asyncio.wait(serving[:2], timeout=3)
        assert idle_closes[:1] == [protocol.CLOSE_NO_JOIN]
        assert pinging_closes[:1] == [protocol.CLOSE_NO_JOIN]
        assert member_closes == [] and room.get("fan") is not None
        member_frames.put_nowait(None)
        await asyncio.wait(serving, timeout=3)
        assert all(task.done() for task in serving)


async def test_a_join_under_way_at_the_deadline_is_looked_at_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """At the deadline a join may be waiting its turn: the connection is left
    to it, and closed at the next look if the join was refused."""
    from sfu.errors import RoomFull

    monkeypatch.setattr(protocol, "JOIN_DEADLINE", 0.2)
    monkeypatch.setattr(protocol, "JOIN_RECHECK", 0.2)
    async with sfu.Server(token_secret=SECRET, host="127.0.0.1") as server:
        room = server.room("hall")

        async def refused_after_its_turn(*args: object, **kwargs: object) -> None:
            await asyncio.sleep(0.4)  # waiting its turn in a crowd, past the deadline
            raise RoomFull("the room is full")

        monkeypatch.setattr(room, "join", refused_after_its_turn)
        session, closes, frames = queued_session(server)
        serving = asyncio.ensure_future(session.serve(frames.get))
        token = auth.issue_token(SECRET, room="hall", identity="late", role="listener")
        frames.put_nowait(
            json.dumps({"type": "join", "room": "hall", "token": token, "offer": LISTENER})
        )
        await asyncio.sleep(0.3)
        assert closes == [], "closed while its join waited its turn"
        await asyncio.wait((serving,), timeout=3)
        assert closes[:1] == [protocol.CLOSE_NO_JOIN]
        assert serving.done()


async def test_a_close_the_session_starts_itself_that_fails_is_logged(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The session closes an idle connection (or a stalled one) in a task of
    its own, which nobody awaits: a framework's close failing in a way the
    session does not expect was left to asyncio's "Task exception was never
    retrieved", at garbage collection if ever. It is logged as it happens."""
    monkeypatch.setattr(protocol, "JOIN_DEADLINE", 0.05)
    async with sfu.Server(token_secret=SECRET, host="127.0.0.1") as server:

        async def send(text: str) -> None:
            pass

        async def close(code: int, reason: str) -> None:
            raise ValueError("the framework failed")

        session = SignalingSession(server, send, close)
        hang_up: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        async def receive() -> str | bytes | None:
            await hang_up
            return None

        serving = asyncio.ensure_future(session.serve(receive))
        await wait_until(lambda: session._ending is not None and session._ending.done(), 3)
        assert session._ending is not None and session._ending.done()
        assert any(
            "closing the connection failed" in r.getMessage()
            and r.exc_info
            and "the framework failed" in str(r.exc_info[1])
            for r in caplog.records
        ), "the failure was not logged"
        hang_up.set_result(None)
        await asyncio.wait((serving,), timeout=3)
        assert serving.done()
