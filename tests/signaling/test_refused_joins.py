"""Joins that never make a member leave nothing behind: no seat held for a
client that went away while its join waited, no room made for joins that
were all refused, however they overlap."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest
from aiohttp import web

import sfu
from sfu import auth
from sfu.signaling.aiohttp import add_whip_whep
from sfu.signaling.protocol import SignalingSession

from ..sites import start_site
from ..test_room_lifecycle import LISTENER, SECRET

SDP = {"Content-Type": "application/sdp"}


async def test_a_whep_client_that_left_while_its_join_waited_holds_no_seat(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """aiohttp does not cancel a handler whose client left: the join still
    completes, and without a check its member would hold a seat of a full
    room (until its handshake times out) for an answer nobody reads."""
    async with sfu.Server() as server:
        room = server.room("r", max_listeners=1)
        app = web.Application()
        add_whip_whep(app, server, create_rooms=False)
        runner, port = await start_site(app)
        crowd_ahead = asyncio.Event()
        turn = server.admission.turn

        async def after_the_crowd() -> None:
            await crowd_ahead.wait()
            await turn()

        monkeypatch.setattr(server.admission, "turn", after_the_crowd)
        url = f"http://127.0.0.1:{port}/rooms/r/whep"
        try:
            async with aiohttp.ClientSession() as http:
                post = asyncio.ensure_future(http.post(url, data=LISTENER, headers=SDP))
                await asyncio.sleep(0.3)
                post.cancel()  # the client's own timeout: it closes the connection
                with pytest.raises(asyncio.CancelledError):
                    await post
            await asyncio.sleep(0.2)
            crowd_ahead.set()
            await asyncio.sleep(0.3)
            assert room.participants == {}, "a seat held for a client that left"
            monkeypatch.setattr(server.admission, "turn", turn)
            async with aiohttp.ClientSession() as http:
                async with http.post(url, data=LISTENER, headers=SDP) as response:
                    assert response.status == 201, await response.text()
        finally:
            for participant in list(room.participants.values()):
                await participant.close()
            await runner.cleanup()


async def test_overlapping_refused_posts_leave_no_room() -> None:
    """Eight refused POSTs to a new room, waiting their turns together: the
    first one made the room, the last one to fail closes it."""
    async with sfu.Server(joins_per_turn=1) as server:
        runner, port = await whep_site(server)
        try:
            url = f"http://127.0.0.1:{port}/rooms/typo/whep"
            async with aiohttp.ClientSession() as http:

                async def post() -> int:
                    async with http.post(url, data="v=0\r\n", headers=SDP) as response:
                        return response.status

                assert await asyncio.gather(*(post() for _ in range(8))) == [400] * 8
            await asyncio.sleep(0.1)
            assert server.rooms == {}
        finally:
            await runner.cleanup()


async def test_signaling_joins_cancelled_while_waiting_leave_no_room() -> None:
    async with sfu.Server(token_secret=SECRET, joins_per_turn=1) as server:

        async def send(text: str) -> None:
            pass

        async def close(code: int, reason: str) -> None:
            pass

        def factory(name: str) -> sfu.Room:
            return server.get_room(name) or server.room(name)

        sessions = [SignalingSession(server, send, close, room_factory=factory) for _ in range(4)]
        joins = [
            json.dumps(
                {
                    "type": "join",
                    "room": "r",
                    "offer": LISTENER,
                    "token": auth.issue_token(SECRET, room="r", identity=f"u{i}", role="listener"),
                }
            )
            for i in range(4)
        ]
        server.admission._used = 1  # this turn's joins are spent: all four wait
        tasks = [asyncio.ensure_future(s.handle(j)) for s, j in zip(sessions, joins, strict=True)]
        await asyncio.sleep(0)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.sleep(0.1)
        assert server.rooms == {}


async def whep_site(server: sfu.Server) -> tuple[web.AppRunner, int]:
    """WHIP/WHEP on 127.0.0.1, rooms made on demand."""
    app = web.Application()
    add_whip_whep(app, server)
    return await start_site(app)


def refused_post(http: aiohttp.ClientSession, port: int) -> asyncio.Future[Any]:
    """A WHEP POST to room "r" that will be refused (no offer in it), under way."""
    url = f"http://127.0.0.1:{port}/rooms/r/whep"
    return asyncio.ensure_future(http.post(url, data="v=0\r\n", headers=SDP))


def hold_turns(monkeypatch: pytest.MonkeyPatch, server: sfu.Server) -> asyncio.Event:
    """Joins wait for their admission turn until the event is set (a crowd ahead)."""
    release = asyncio.Event()
    turn = server.admission.turn

    async def after_the_crowd() -> None:
        await release.wait()
        await turn()

    monkeypatch.setattr(server.admission, "turn", after_the_crowd)
    return release


async def test_a_room_the_backend_asked_for_meanwhile_is_not_closed_by_a_refused_post(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with sfu.Server() as server:
        runner, port = await whep_site(server)
        release = hold_turns(monkeypatch, server)
        try:
            async with aiohttp.ClientSession() as http:
                post = refused_post(http, port)
                await asyncio.sleep(0.2)  # the POST made the room and waits its turn
                room = server.room("r")  # the backend's room now
                release.set()
                assert (await post).status == 400
            await asyncio.sleep(0.1)
            assert not room.closed and server.get_room("r") is room
        finally:
            await runner.cleanup()


async def test_a_room_made_for_a_refused_post_is_decided_once(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    """The POST that made the room failed while a recording held it: the room
    stays, and is from then on a room like any other (a later refused join,
    here the backend's own, does not close it)."""
    async with sfu.Server() as server:
        runner, port = await whep_site(server)
        release = hold_turns(monkeypatch, server)
        try:
            async with aiohttp.ClientSession() as http:
                post = refused_post(http, port)
                await asyncio.sleep(0.2)
                room = server.get_room("r")
                assert room is not None
                recording = await room.record(tmp_path / "r.opus")
                release.set()
                assert (await post).status == 400
            await asyncio.sleep(0.1)
            assert not room.closed, "held by its recording"
            await recording.stop()
            with pytest.raises(sfu.InvalidOffer):
                await room.join("v=0\r\n", identity="bot")
            await asyncio.sleep(0.1)
            assert not room.closed
        finally:
            await runner.cleanup()
