"""Joins that never make a member leave nothing behind: no seat held for a
client that went away while its join waited, no room made for joins that
were all refused, however they overlap."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import aiohttp
import jwt
import pytest
from aiohttp import web

import sfu
from sfu import auth
from sfu.events import EventStream, RoomEvent
from sfu.signaling.aiohttp import add_signaling, add_whip_whep
from sfu.signaling.protocol import SignalingSession

from ..clients import close_peer, wait_for
from ..sites import start_site
from ..test_room_lifecycle import LISTENER, SECRET
from .test_protocol_storm import count_token_decodes

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
        turn = server.admission.turn
        crowd_ahead = hold_turns(monkeypatch, server)
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


async def test_a_client_gone_while_its_join_waited_is_never_announced(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A browser closes its WebSocket while its join waits its turn (a crowd
    ahead): the join is abandoned. The room never hears of it (no
    ParticipantJoined for the backend, no roster entry for the members), and
    no participant, session or seat is left for it."""
    from .test_protocol import SECRET as APP_SECRET
    from .test_protocol import App, joined, peer

    async with sfu.Server(token_secret=APP_SECRET) as server:
        room = server.room("hall", max_listeners=2)
        web_app = web.Application()
        handler = add_signaling(web_app, server, create_rooms=False)
        runner, port = await start_site(web_app)
        try:
            async with aiohttp.ClientSession() as http:
                app = App(server, f"http://127.0.0.1:{port}", http)
                watcher, watcher_peer = await joined(app, "watcher")
                await watcher.expect("roster")  # its own arrival, batched
                events = room.events()
                release = hold_turns(monkeypatch, server)
                ghost_pc, _ = await peer()
                ghost = await app.ws()
                await ghost.send(
                    {
                        "type": "join",
                        "room": "hall",
                        "token": app.token("ghost"),
                        "offer": ghost_pc.localDescription.sdp,
                    }
                )
                await asyncio.sleep(0.3)  # the join waits its turn
                await ghost.ws.close()
                await asyncio.sleep(0.3)
                release.set()
                # A roster batch (0.5 s) would have told the watcher by now.
                loop = asyncio.get_running_loop()
                deadline = loop.time() + 1.0
                told: list[dict[str, Any]] = []
                while (left := deadline - loop.time()) > 0:
                    try:
                        told.append(await watcher.receive(left))
                    except asyncio.TimeoutError:
                        break
                seen = await queued(events)
                assert not [e for e in seen if getattr(e, "identity", None) == "ghost"], seen
                assert "ghost" not in json.dumps(told), told
                assert list(room.participants) == ["watcher"]
                assert server.stats()["sessions"] == 1, "a session held for the ghost"
                assert len(handler.sessions) == 1
                # Its seat is free: a second listener fits under max_listeners=2.
                late, late_peer = await joined(app, "late")
                await late_peer.wait_connected()
                await asyncio.gather(
                    close_peer(ghost_pc),
                    watcher_peer.close(),
                    late_peer.close(),
                    watcher.ws.close(),
                    late.ws.close(),
                )
        finally:
            await runner.cleanup()


async def test_a_signaling_join_waiting_its_turn_is_abandoned_by_close() -> None:
    """SignalingSession.close() (the adapter saw the socket close, or the
    app shuts down) while the join waits for its turn: no member is made."""
    async with sfu.Server(token_secret=SECRET, joins_per_turn=1) as server:
        room = server.room("r")
        events = room.events()
        sent: list[str] = []

        async def send(text: str) -> None:
            sent.append(text)

        async def close(code: int, reason: str) -> None:
            pass

        session = SignalingSession(server, send, close)
        token = auth.issue_token(SECRET, room="r", identity="gone", role="listener")
        server.admission._used = 1  # this turn's joins are spent: it waits for the next
        handling = asyncio.ensure_future(
            session.handle(
                json.dumps({"type": "join", "room": "r", "token": token, "offer": LISTENER})
            )
        )
        await asyncio.sleep(0)
        assert len(server.admission) == 1, "the join waits for its turn"
        await session.close(1001, "signaling connection closed")
        await asyncio.wait_for(handling, 2)
        await asyncio.sleep(0.05)
        assert room.participants == {} and server.stats()["sessions"] == 0
        assert await queued(events) == [], "nobody is told of it"
        assert sent == [] and session.participant is None


async def queued(events: EventStream) -> list[RoomEvent]:
    """The events a stream holds now."""
    held: list[RoomEvent] = []
    while True:
        try:
            held.append(await events.next(0))
        except asyncio.TimeoutError:
            return held


async def test_a_ban_while_a_join_waits_its_turn_keeps_the_join_out(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The token is good when the POST arrives; the moderator bans its holder
    while the join waits behind a crowd: the ban is checked when the join
    runs, not only before it waited (no member, 403)."""
    async with sfu.Server(token_secret=SECRET) as server:
        room = server.room("r")
        app = web.Application()
        add_whip_whep(app, server)
        runner, port = await start_site(app)
        release = hold_turns(monkeypatch, server)
        token = auth.issue_token(SECRET, room="r", identity="mallory")
        try:
            async with aiohttp.ClientSession() as http:
                post = asyncio.ensure_future(
                    http.post(
                        f"http://127.0.0.1:{port}/rooms/r/whep",
                        data=LISTENER,
                        headers={**SDP, "Authorization": f"Bearer {token}"},
                    )
                )
                await asyncio.sleep(0.2)  # checked, waiting for its turn
                await room.remove("mallory", ban=True)  # absent: a ban of the name
                release.set()
                response = await post
                assert response.status == 403, await response.text()
            assert room.get("mallory") is None and not list(server.sessions())
        finally:
            await runner.cleanup()


async def test_a_whep_token_is_checked_in_its_admission_turn_in_a_room_that_exists(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """As over the signaling: in a room that exists, a WHIP/WHEP POST's token
    gets a quick look at its signature and waits its turn, where the room runs
    PyJWT's whole check (~80 µs); a crowd's requests read in one loop
    iteration then do not hold it. A token the key did not make is refused at
    once, without waiting a turn."""
    decoded = count_token_decodes(monkeypatch)
    async with sfu.Server(token_secret=SECRET) as server:
        room = server.room("r")
        runner, port = await whep_site(server)
        crowd_ahead = hold_turns(monkeypatch, server)
        url = f"http://127.0.0.1:{port}/rooms/r/whep"
        good = auth.issue_token(SECRET, room="r", identity="fan", role="listener")
        forged = auth.issue_token("o" * 40, room="r", identity="mallory", role="listener")
        try:
            async with aiohttp.ClientSession() as http:
                post = asyncio.ensure_future(
                    http.post(
                        url, data=LISTENER, headers={**SDP, "Authorization": f"Bearer {good}"}
                    )
                )
                await asyncio.sleep(0.3)
                assert not post.done() and decoded == [], "checked before its turn"
                async with http.post(
                    url, data=LISTENER, headers={**SDP, "Authorization": f"Bearer {forged}"}
                ) as refused:
                    assert refused.status == 401 and "signature" in await refused.text()
                assert "mallory" not in room.participants
                crowd_ahead.set()
                response = await post
                assert response.status == 201, await response.text()
                response.release()
                assert decoded.count(good) == 1, "checked whole, once, in its turn"
                assert "fan" in room.participants
        finally:
            for participant in list(room.participants.values()):
                await participant.close()
            await runner.cleanup()


async def test_a_bad_token_for_a_room_not_there_is_refused_before_the_room_is_made(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A join naming a room that does not exist yet, over the signaling or
    WHIP/WHEP, with a token for another room, expired, not valid yet or
    signed with another key, or one that does not grant the role the join
    asks for: refused at once while the real joins wait their turns (a crowd
    ahead), and the room it names is not made, not even until its turn comes."""
    async with sfu.Server(token_secret=SECRET) as server:
        runner, port = await whep_site(server)
        crowd_ahead = hold_turns(monkeypatch, server)
        sent: list[dict[str, Any]] = []

        async def send(text: str) -> None:
            sent.append(json.loads(text))

        async def close(code: int, reason: str) -> None:
            pass

        def factory(name: str) -> sfu.Room:  # as add_signaling's, which makes rooms on demand
            return server.get_room(name) or server.room(name)

        tokens = {
            "for another room": auth.issue_token(SECRET, room="elsewhere", identity="x"),
            "expired": auth.issue_token(SECRET, room="new", identity="x", ttl=1, now=1_000_000),
            "not valid yet": auth.issue_token(
                SECRET, room="new", identity="x", not_before=time.time() + 3600
            ),
            "of another key": auth.issue_token("o" * 40, room="new", identity="x"),
        }
        joins: list[asyncio.Future[Any]] = []
        try:
            async with aiohttp.ClientSession() as http:
                for what, token in tokens.items():
                    session = SignalingSession(server, send, close, room_factory=factory)
                    message = {"type": "join", "room": "new", "token": token, "offer": LISTENER}
                    joins.append(asyncio.ensure_future(session.handle(json.dumps(message))))
                    await wait_for(joins[-1].done, 3, f"the join with a token {what} refused")
                    assert sent[-1]["type"] == "error" and sent[-1]["code"] == "not_allowed"
                    assert server.get_room("new") is None, f"a token {what} made the room"
                    for kind in ("whip", "whep"):
                        post = asyncio.ensure_future(
                            http.post(
                                f"http://127.0.0.1:{port}/rooms/new/{kind}",
                                data=LISTENER,
                                headers={**SDP, "Authorization": f"Bearer {token}"},
                            )
                        )
                        joins.append(post)
                        await wait_for(post.done, 3, f"the {kind} POST with a token {what} refused")
                        response = await post
                        assert response.status in (401, 403), await response.text()
                        response.release()
                        assert server.get_room("new") is None, f"a token {what} made the room"
                # A good token that does not grant the role the join asks for
                # (a listener's, for the stage): what a room made now, with
                # nothing decided in it, would refuse; refused so, at once.
                session = SignalingSession(server, send, close, room_factory=factory)
                listener = auth.issue_token(SECRET, room="new", identity="lou", role="listener")
                message = {
                    "type": "join",
                    "room": "new",
                    "token": listener,
                    "offer": LISTENER,
                    "role": "speaker",
                }
                joins.append(asyncio.ensure_future(session.handle(json.dumps(message))))
                await wait_for(joins[-1].done, 3, "the join asking for a role not granted refused")
                assert sent[-1]["type"] == "error" and sent[-1]["code"] == "not_allowed"
                assert "does not grant the 'speaker' role" in sent[-1]["message"]
                assert server.get_room("new") is None, "a join its token refuses made the room"
                # A token naming an identity no member can have (a backend signed it by hand).
                now = int(time.time())
                claims = {"sub": "x" * 257, "room": "new", "role": "listener", "jti": "j"}
                long_named = jwt.encode({**claims, "nbf": now, "exp": now + 60}, SECRET, "HS256")
                session = SignalingSession(server, send, close, room_factory=factory)
                message = {"type": "join", "room": "new", "token": long_named, "offer": LISTENER}
                joins.append(asyncio.ensure_future(session.handle(json.dumps(message))))
                await wait_for(joins[-1].done, 3, "the join naming a bad identity refused")
                assert (
                    sent[-1]["type"] == "error" and sent[-1]["code"] == "not_allowed"
                )  # the token is at fault (review)
                assert "identity" in sent[-1]["message"]
                assert server.get_room("new") is None, "a join naming a bad identity made the room"
        finally:
            crowd_ahead.set()
            await asyncio.gather(*joins, return_exceptions=True)
            await runner.cleanup()
