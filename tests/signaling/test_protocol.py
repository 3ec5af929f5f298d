"""The signaling protocol over a real aiohttp WebSocket, with aiortc peers for the media."""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web
from aiortc import RTCPeerConnection, RTCSessionDescription

import sfu
from sfu import auth
from sfu.signaling.aiohttp import add_whip_whep, metrics_handler, websocket_handler

from ..clients import (
    Client,
    ToneTrack,
    _record_received,
    _record_sent,
    close_peer,
    make_offer,
    wait_for,
)
from ..conftest import client_configuration
from ..sites import start_site
from ..test_room_lifecycle import LISTENER, offer

SECRET = secrets.token_urlsafe(32)


class App:
    def __init__(self, server: sfu.Server, base: str, session: aiohttp.ClientSession) -> None:
        self.server = server
        self.base = base
        self.http = session

    def token(self, identity: str, role: str = "listener", room: str = "hall") -> str:
        return auth.issue_token(SECRET, room=room, identity=identity, role=role)  # type: ignore[arg-type]

    async def ws(self) -> Socket:
        return Socket(await self.http.ws_connect(f"{self.base}/ws"))


class Socket:
    def __init__(self, ws: aiohttp.ClientWebSocketResponse[bool]) -> None:
        self.ws = ws
        self.events: list[dict[str, Any]] = []

    async def send(self, message: Any) -> None:
        await self.ws.send_str(message if isinstance(message, str) else json.dumps(message))

    async def receive(self, timeout: float = 5) -> dict[str, Any]:
        message = await self.ws.receive(timeout)
        assert message.type == aiohttp.WSMsgType.TEXT, message
        data = json.loads(message.data)
        assert isinstance(data, dict)
        return data

    async def expect(self, kind: str, timeout: float = 5) -> dict[str, Any]:
        """The next message of type ``kind``; other messages are kept in ``events``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            message = await self.receive(max(0.01, deadline - loop.time()))
            if message["type"] == kind:
                return message
            self.events.append(message)

    async def request(self, message: dict[str, Any], kind: str = "ok") -> dict[str, Any]:
        message_id = secrets.token_hex(4)
        await self.send({**message, "id": message_id})
        while True:
            reply = await self.receive()
            if reply.get("id") == message_id:
                assert reply["type"] == kind, reply
                return reply
            self.events.append(reply)


@pytest_asyncio.fixture
async def app() -> AsyncIterator[App]:
    async with sfu.Server(token_secret=SECRET) as server:
        web_app = web.Application()
        web_app.router.add_get("/ws", websocket_handler(server))
        web_app.router.add_get("/metrics", metrics_handler(server))
        add_whip_whep(web_app, server)
        runner, port = await start_site(web_app)
        async with aiohttp.ClientSession() as session:
            yield App(server, f"http://127.0.0.1:{port}", session)
        await runner.cleanup()


async def peer(speaker: bool = False, slots: int = 3) -> tuple[RTCPeerConnection, Client]:
    pc = RTCPeerConnection(client_configuration())
    client = Client(pc=pc, identity="")
    if speaker:
        client.track = ToneTrack()
        pc.addTransceiver(client.track, direction="sendrecv")
        slots -= 1
    for _ in range(slots):
        pc.addTransceiver("audio", direction="recvonly")
    await pc.setLocalDescription(await pc.createOffer())
    return pc, client


async def joined(app: App, identity: str, role: str = "listener") -> tuple[Socket, Client]:
    socket = await app.ws()
    pc, client = await peer(speaker=role != "listener")
    reply = await socket.request(
        {
            "type": "join",
            "room": "hall",
            "token": app.token(identity, role),
            "offer": pc.localDescription.sdp,
        },
        "joined",
    )
    _record_received(client)
    await pc.setRemoteDescription(RTCSessionDescription(reply["answer"], "answer"))
    if role != "listener":
        _record_sent(client)
    client.participant = app.server.rooms["hall"][identity]
    # Closing an aiortc peer while its ICE is still checking can leave its consent task behind.
    await client.participant.wait_connected(10)
    return socket, client


async def test_join_moderate_and_leave(app: App) -> None:
    mod, mod_pc = await joined(app, "mod", "moderator")
    bob, bob_pc = await joined(app, "bob")
    try:
        # Roster batches reach both.
        roster = await mod.expect("roster")
        assert ("bob", "listener") in {(e["identity"], e["role"]) for e in roster["joined"]}

        await bob.request({"type": "raise_hand"})
        assert (await mod.expect("hands"))["hands"] == ["bob"]
        # A listener may not moderate.
        error = await bob.request({"type": "promote", "identity": "bob"}, "error")
        assert error["code"] == "not_allowed"

        await mod.request({"type": "promote", "identity": "bob"})
        # The answered hand goes down for everyone watching the hands.
        hands = [m for m in mod.events if m["type"] == "hands"] or [await mod.expect("hands")]
        assert hands[-1]["hands"] == []
        changed = await bob.expect("role_changed")
        assert changed == {
            "type": "role_changed",
            "identity": "bob",
            "role": "speaker",
            "by": "mod",
            "renegotiate": True,
            "moderates": False,
            "grants": ["publish", "subscribe"],  # told to bob only: it is about him
        }
        # Bob renegotiates on the same connection and is heard by the moderator.
        transceiver = bob_pc.pc.getTransceivers()[0]
        bob_pc.track = ToneTrack(880)
        transceiver.direction = "sendrecv"
        transceiver.sender.replaceTrack(bob_pc.track)
        answer = await bob.request({"type": "offer", "sdp": await make_offer(bob_pc.pc)}, "answer")
        await bob_pc.pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], "answer"))
        _record_sent(bob_pc)
        await wait_for(
            lambda: any(bob_pc.csrc in p.csrc for s in range(3) for p in mod_pc.packets(s)),
            10,
            "bob heard",
        )
        stage = await mod.expect("active_speakers")
        assert any(slot and slot["identity"] in ("bob", "mod") for slot in stage["slots"])

        await mod.request({"type": "mute_participant", "identity": "bob", "muted": True})
        assert (await bob.expect("muted"))["muted"] is True
        # Neither a self-mute and self-unmute nor unmuting himself as a
        # moderator would lift it: he is no moderator.
        await bob.request({"type": "mute", "muted": True})
        await bob.request({"type": "mute", "muted": False})
        error = await bob.request(
            {"type": "mute_participant", "identity": "bob", "muted": False}, "error"
        )
        assert error["code"] == "not_allowed"
        assert app.server.rooms["hall"]["bob"].moderator_muted
        await mod.request({"type": "mute_participant", "identity": "bob", "muted": False})
        # Made a moderator, then only that taken back: on the stage, no offer asked.
        await mod.request({"type": "promote", "identity": "bob", "role": "moderator"})
        assert (await bob.expect("role_changed"))["role"] == "moderator"
        await mod.request({"type": "demote", "identity": "bob", "role": "speaker"})
        assert await bob.expect("role_changed") == {
            "type": "role_changed",
            "identity": "bob",
            "role": "speaker",
            "by": "mod",
            "renegotiate": False,
            "moderates": False,
            "grants": ["publish", "subscribe"],
        }
        error = await mod.request(
            {"type": "demote", "identity": "bob", "role": "moderator"}, "error"
        )
        assert error["code"] == "bad_message"
        await mod.request({"type": "demote", "identity": "bob"})
        assert (await bob.expect("role_changed"))["role"] == "listener"

        error = await mod.request({"type": "demote", "identity": "nobody"}, "error")
        assert error["code"] == "not_found"
        pong = await bob.request({"type": "ping"}, "pong")
        assert pong["type"] == "pong"
        await bob.request({"type": "leave"})
        closing = await bob.ws.receive(5)
        assert closing.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
        await wait_for(lambda: "bob" not in app.server.rooms["hall"].participants, 5, "bob gone")
    finally:
        await asyncio.gather(mod_pc.close(), bob_pc.close(), mod.ws.close(), bob.ws.close())


BAD_MESSAGES = [
    ("not json", "{oops", "bad_json"),
    ("array", "[1, 2]", "bad_message"),
    ("no type", "{}", "bad_message"),
    ("unknown type", {"type": "teleport"}, "bad_message"),
    ("type not a string", {"type": 7}, "bad_message"),
    ("id is an object", {"type": "ping", "id": {"a": 1}}, "bad_message"),
    ("too large", json.dumps({"type": "ping", "pad": "x" * 70_000}), "too_large"),
    ("command before join", {"type": "raise_hand"}, "not_joined"),
    ("offer before join", {"type": "offer", "sdp": "v=0"}, "not_joined"),
    ("join without token", {"type": "join", "room": "hall", "offer": "v=0"}, "bad_message"),
    (
        "join with a bad token",
        {"type": "join", "room": "hall", "token": "x.y.z", "offer": "v=0"},
        "not_allowed",
    ),
    (
        "join with a number room",
        {"type": "join", "room": 5, "token": "t", "offer": "v=0"},
        "bad_message",
    ),
]


@pytest.mark.parametrize(
    ("message", "code"), [c[1:] for c in BAD_MESSAGES], ids=[c[0] for c in BAD_MESSAGES]
)
async def test_bad_messages_get_errors_and_the_room_goes_on(
    app: App, message: Any, code: str
) -> None:
    speaker, speaker_pc = await joined(app, "alice", "speaker")
    listener, listener_pc = await joined(app, "lis")
    rogue = await app.ws()
    try:
        await wait_for(lambda: len(listener_pc.packets(0)) >= 5, 10, "audio before")
        await rogue.send(message)
        error = await rogue.expect("error")
        assert error["code"] == code, error
        # The rogue connection still works, the room is untouched.
        assert (await rogue.request({"type": "ping"}, "pong"))["type"] == "pong"
        before = len(listener_pc.packets(0))
        await wait_for(lambda: len(listener_pc.packets(0)) > before, 10, "audio after")
        assert set(app.server.rooms["hall"].participants) == {"alice", "lis"}
    finally:
        await asyncio.gather(
            speaker_pc.close(),
            listener_pc.close(),
            speaker.ws.close(),
            listener.ws.close(),
            rogue.ws.close(),
        )


async def test_join_errors_and_out_of_order(app: App) -> None:
    socket, client = await joined(app, "ann")
    try:
        pc, _ = await peer()
        again = await socket.request(
            {
                "type": "join",
                "room": "hall",
                "token": app.token("ann"),
                "offer": pc.localDescription.sdp,
            },
            "error",
        )
        assert again["code"] == "already_joined"
        other = await app.ws()
        duplicate = await other.request(
            {
                "type": "join",
                "room": "hall",
                "token": app.token("ann"),
                "offer": pc.localDescription.sdp,
            },
            "error",
        )
        assert duplicate["code"] == "duplicate_identity"
        bad_offer = await other.request(
            {"type": "join", "room": "hall", "token": app.token("zed"), "offer": "v=0\r\nnope"},
            "error",
        )
        assert bad_offer["code"] == "invalid_offer"
        speaker_as_listener_token = await other.request(
            {"type": "offer", "sdp": pc.localDescription.sdp}, "error"
        )
        assert speaker_as_listener_token["code"] == "not_joined"
        await close_peer(pc)
        await other.ws.close()
    finally:
        await asyncio.gather(client.close(), socket.ws.close())


async def test_removed_and_room_closed_are_told_then_the_socket_closes(app: App) -> None:
    mod, mod_pc = await joined(app, "mod", "moderator")
    troll, troll_pc = await joined(app, "troll")
    lis, lis_pc = await joined(app, "lis")
    try:
        await mod.request({"type": "remove", "identity": "troll", "reason": "spam", "ban": True})
        removed = await troll.expect("removed")
        assert removed["reason"] == "spam" and removed["banned"] is True and removed["by"] == "mod"
        closing = await troll.ws.receive(5)
        assert closing.type == aiohttp.WSMsgType.CLOSE and closing.data == 4001
        await app.server.rooms["hall"].close("the show is over")
        assert (await lis.expect("room_closed"))["reason"] == "the show is over"
        closing = await lis.ws.receive(5)
        assert closing.type == aiohttp.WSMsgType.CLOSE and closing.data == 4002
    finally:
        await asyncio.gather(
            mod_pc.close(),
            troll_pc.close(),
            lis_pc.close(),
            mod.ws.close(),
            troll.ws.close(),
            lis.ws.close(),
        )


async def test_websocket_drop_frees_the_participant(app: App) -> None:
    socket, client = await joined(app, "drop")
    await socket.ws.close()
    await wait_for(
        lambda: "drop" not in app.server.rooms["hall"].participants, 5, "participant gone"
    )
    await client.close()


@pytest.mark.parametrize(
    ("lines", "asked", "mixed"),
    [(1, None, True), (1, False, False), (3, None, False), (3, True, True)],
)
async def test_join_says_whether_the_first_line_carries_the_mix(
    app: App, lines: int, asked: bool | None, mixed: bool
) -> None:
    """Fewer lines than the room's slots: the mix, unless `mixed: false`;
    `mixed: true` asks for it whatever the lines; `joined` says which."""
    socket = await app.ws()
    pc, _ = await peer(slots=lines)
    try:
        join: dict[str, Any] = {
            "type": "join",
            "room": "hall",
            "token": app.token("m", "listener"),
            "offer": pc.localDescription.sdp,
        }
        if asked is not None:
            join["mixed"] = asked
        reply = await socket.request(join, "joined")
        assert reply["mixed"] is mixed and app.server.rooms["hall"]["m"].mixed is mixed
        bad = await (await app.ws()).request({**join, "mixed": "yes"}, "error")
        assert bad["code"] == "bad_message" and "'mixed' must be a bool" in bad["message"]
    finally:
        await close_peer(pc)
        await socket.ws.close()


async def test_whip_publish_and_whep_listen(app: App) -> None:
    whep_pc, whep_client = await peer(slots=1)
    whip_pc, whip_client = await peer(speaker=True, slots=0)
    whip_pc.getTransceivers()[0].direction = "sendonly"
    await whip_pc.setLocalDescription(await whip_pc.createOffer())
    try:
        # One line, slots asked for (without ?mix=0 it would get the mix).
        url = f"{app.base}/rooms/hall/whep?mix=0"
        async with app.http.post(
            url, data=whep_pc.localDescription.sdp, headers={"Content-Type": "application/sdp"}
        ) as r:
            assert r.status == 401 and r.headers["WWW-Authenticate"] == "Bearer"
        async with app.http.post(
            url, data="x", headers={"Authorization": f"Bearer {app.token('w')}"}
        ) as r:
            assert r.status == 415
        headers = {
            "Content-Type": "application/sdp",
            "Authorization": f"Bearer {app.token('viewer')}",
        }
        async with app.http.post(url, data=whep_pc.localDescription.sdp, headers=headers) as r:
            # application/sdp has no charset parameter (RFC 8866 5): none is sent.
            assert r.status == 201 and r.headers["Content-Type"] == "application/sdp"
            whep_location = r.headers["Location"]
            whep_answer = await r.text()
        _record_received(whep_client)
        await whep_pc.setRemoteDescription(RTCSessionDescription(whep_answer, "answer"))

        headers = {
            "Content-Type": "application/sdp",
            "Authorization": f"Bearer {app.token('obs', 'listener')}",
        }
        async with app.http.post(
            f"{app.base}/rooms/hall/whip", data=whip_pc.localDescription.sdp, headers=headers
        ) as r:
            assert r.status == 403, "a listener token may not publish"
        headers["Authorization"] = f"Bearer {app.token('obs', 'speaker')}"
        async with app.http.post(
            f"{app.base}/rooms/hall/whip", data=whip_pc.localDescription.sdp, headers=headers
        ) as r:
            assert r.status == 201
            whip_location = r.headers["Location"]
            whip_answer = await r.text()
        await whip_pc.setRemoteDescription(RTCSessionDescription(whip_answer, "answer"))
        _record_sent(whip_client)
        await wait_for(
            lambda: len(whep_client.packets(0)) >= 20, 10, "WHEP listener hears the WHIP publisher"
        )
        assert {p.csrc for p in whep_client.packets(0)} == {(app.server.rooms["hall"]["obs"].csrc,)}
        async with app.http.patch(
            app.base + whip_location,
            data="a=candidate",
            headers={"Content-Type": "application/trickle-ice-sdpfrag"},
        ) as r:
            assert r.status == 501
        async with app.http.get(f"{app.base}/metrics") as r:
            metrics = await r.text()
        assert 'sfu_participants{role="speaker"} 1.0' in metrics
        assert "sfu_sent_packets_total" in metrics and "sfu_join_seconds_bucket" in metrics
        for location in (whip_location, whep_location):
            async with app.http.delete(app.base + location) as r:
                assert r.status == 200
            async with app.http.delete(app.base + location) as r:
                assert r.status == 404
        assert app.server.rooms["hall"].participants == {}
    finally:
        await asyncio.gather(close_peer(whip_pc), close_peer(whep_pc))


async def test_a_whip_whep_session_the_server_ended_is_gone_from_its_url_at_once(
    app: App,
) -> None:
    """A session the server ended (its member removed, its room closed) answers
    404 at its URL from then on, as after a DELETE: not 200 "left" until the
    collector happens to free its member, and never a hand on the member of
    the same name in the room made again by that name."""
    sdp = {"Content-Type": "application/sdp"}

    async def post(identity: str) -> tuple[RTCPeerConnection, str]:
        pc, _ = await peer(slots=1)
        headers = {**sdp, "Authorization": f"Bearer {app.token(identity)}"}
        async with app.http.post(
            f"{app.base}/rooms/hall/whep", data=pc.localDescription.sdp, headers=headers
        ) as r:
            assert r.status == 201, await r.text()
            location = r.headers["Location"]
            answer = await r.text()
        await pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
        return pc, location

    peers: list[RTCPeerConnection] = []
    try:
        pc, removed_at = await post("mallory")
        peers.append(pc)
        pc, closed_at = await post("viewer")
        peers.append(pc)
        room = app.server.rooms["hall"]
        # Held as a backend may hold them (a list of members, an event's
        # handler): the collector cannot be what makes their URLs go.
        ended = [room["mallory"], room["viewer"]]
        await room.remove("mallory", ban=True)
        for method in (app.http.patch, app.http.delete):
            async with method(app.base + removed_at) as r:
                assert r.status == 404, f"{method.__name__} of a removed member's session"
        await room.close("over")
        pc, again_at = await post("viewer")  # the room made again by the name
        peers.append(pc)
        again = app.server.rooms["hall"]["viewer"]
        assert again not in ended and again_at != closed_at
        for method in (app.http.patch, app.http.delete):
            async with method(app.base + closed_at) as r:
                assert r.status == 404, f"{method.__name__} of a closed room's session"
        assert app.server.rooms["hall"].get("viewer") is again and not again.closed
        async with app.http.delete(app.base + again_at) as r:
            assert r.status == 200
        assert again.closed
    finally:
        await asyncio.gather(*(close_peer(pc) for pc in peers))


async def test_bad_tokens_and_malformed_requests_create_nothing(app: App) -> None:
    sdp = {"Content-Type": "application/sdp"}
    before = set(app.server.rooms)
    # A bad token, over WebSocket and over WHIP/WHEP: refused before any room is made.
    socket = await app.ws()
    join = {"type": "join", "room": "made-up", "token": "garbage", "offer": "v=0"}
    assert (await socket.request(join, "error"))["code"] == "not_allowed"
    for kind in ("whip", "whep"):
        headers = {**sdp, "Authorization": "Bearer garbage"}
        async with app.http.post(
            f"{app.base}/rooms/made-up/{kind}", data="v=0", headers=headers
        ) as r:
            assert r.status == 401
    assert set(app.server.rooms) == before
    # Malformed bodies and names: 400 saying why, never a 500.
    good = {**sdp, "Authorization": f"Bearer {app.token('w')}"}
    url = f"{app.base}/rooms/hall/whep"
    async with app.http.post(url, data=b"\xff\xfe", headers=good) as r:
        assert r.status == 400 and "UTF-8" in await r.text()
    odd_charset = {**good, "Content-Type": "application/sdp; charset=nope"}
    async with app.http.post(url, data="v=0", headers=odd_charset) as r:
        assert r.status == 400
    # No token can name a room that long (issue_token refuses): refused, not a 500.
    long_name = "x" * 300
    async with app.http.post(f"{app.base}/rooms/{long_name}/whep", data="v=0", headers=good) as r:
        assert r.status == 403
    new_room = {**sdp, "Authorization": f"Bearer {app.token('w', room='new-room')}"}
    async with app.http.post(
        f"{app.base}/rooms/new-room/whep?mix=maybe", data="v=0", headers=new_room
    ) as r:
        assert r.status == 400 and "mix must be 1 or 0" in await r.text()
    assert "new-room" not in app.server.rooms
    # A room name that needs escaping comes back escaped in Location, and works.
    pc, _ = await peer(slots=1)
    try:
        headers = {**sdp, "Authorization": f"Bearer {app.token('v', room='a b')}"}
        async with app.http.post(
            f"{app.base}/rooms/a%20b/whep", data=pc.localDescription.sdp, headers=headers
        ) as r:
            assert r.status == 201
            location = r.headers["Location"]
        assert location.startswith("/rooms/a%20b/whep/")
        # Another room's name on the resource: 404, and the session is not forgotten.
        async with app.http.delete(app.base + location.replace("/a%20b/", "/hall/")) as r:
            assert r.status == 404
        async with app.http.delete(app.base + location) as r:
            assert r.status == 200
    finally:
        await close_peer(pc)
        await socket.ws.close()


async def test_app_shutdown_closes_signaling_connections() -> None:
    from sfu.signaling.aiohttp import add_signaling

    async with sfu.Server(token_secret=SECRET) as server:
        web_app = web.Application()
        handler = add_signaling(web_app, server)
        runner, port = await start_site(web_app)
        async with aiohttp.ClientSession() as http:
            app = App(server, f"http://127.0.0.1:{port}", http)
            socket, client = await joined(app, "guest")
            assert len(handler.sessions) == 1
            cleanup = asyncio.ensure_future(runner.cleanup())
            closing = await socket.ws.receive(5)
            assert closing.type == aiohttp.WSMsgType.CLOSE and closing.data == 1001
            await asyncio.wait_for(cleanup, 10)
            assert handler.sessions == set()
            assert "guest" not in server.rooms["hall"].participants
            await client.close()


async def test_closing_the_server_closes_the_connections_that_have_not_joined() -> None:
    """After server.close() there is nothing to join: a connection that has
    not joined (or whose join was refused) is closed with 1001, reason
    "server closed", as members are told room_closed and closed with 4002,
    without waiting for the app's shutdown; one opened later is closed at once."""
    from sfu.signaling.aiohttp import add_signaling

    async with sfu.Server(token_secret=SECRET) as server:
        web_app = web.Application()
        handler = add_signaling(web_app, server)
        runner, port = await start_site(web_app)
        try:
            async with aiohttp.ClientSession() as http:
                app = App(server, f"http://127.0.0.1:{port}", http)
                member, client = await joined(app, "guest")
                idle = await app.ws()
                await idle.request({"type": "ping"}, "pong")  # served, not joined
                refused = await app.ws()
                bad = {"type": "join", "room": "hall", "token": "x", "offer": LISTENER}
                assert (await refused.request(bad, "error"))["code"] == "not_allowed"
                await server.close()
                assert (await member.expect("room_closed"))["reason"] == "server closed"
                late = await app.ws()
                for socket, code in ((member, 4002), (idle, 1001), (refused, 1001), (late, 1001)):
                    closing = await socket.ws.receive(2)
                    assert closing.type == aiohttp.WSMsgType.CLOSE, closing
                    assert closing.data == code
                    if code == 1001:
                        assert closing.extra == "server closed"
                await wait_for(lambda: not handler.sessions, 2, "every session ended")
                await client.close()
        finally:
            await runner.cleanup()


@pytest.mark.parametrize("compress", [False, True])
async def test_permessage_deflate_only_when_the_application_turns_it_on(compress: bool) -> None:
    """Off by default (a compressor per connection is ~256 KB of server memory);
    on, a client that offers it (as browsers do) gets compressed frames."""
    from sfu.signaling.aiohttp import add_signaling

    async with sfu.Server(token_secret=SECRET) as server:
        web_app = web.Application()
        if compress:
            add_signaling(web_app, server, compress=True)
        else:
            add_signaling(web_app, server)  # the default
        runner, port = await start_site(web_app)
        try:
            async with aiohttp.ClientSession() as http:
                async with http.ws_connect(f"http://127.0.0.1:{port}/ws", compress=15) as ws:
                    agreed = ws._response.headers.get("Sec-WebSocket-Extensions", "")
                    assert ("permessage-deflate" in agreed) is compress, agreed
                    assert bool(ws.compress) is compress
                    await ws.send_str(json.dumps({"type": "ping", "id": 1}))
                    reply = await ws.receive_json(timeout=5)
                    assert reply["id"] == 1
        finally:
            await runner.cleanup()


async def test_a_client_that_falls_behind_is_told_to_join_again() -> None:
    """Events lost to a slow reader would leave its roster wrong: it must rejoin."""
    from sfu.signaling.protocol import CLOSE_SESSION_ENDED, SignalingSession

    async with sfu.Server(token_secret=SECRET) as server:
        room = server.room("hall")
        reader_blocked = asyncio.Event()
        sent: list[dict[str, Any]] = []
        closed: list[int] = []

        async def send(text: str) -> None:
            message = json.loads(text)
            sent.append(message)
            if message["type"] == "hand":
                await reader_blocked.wait()  # the client stops reading here

        async def close(code: int, reason: str) -> None:
            closed.append(code)

        session = SignalingSession(server, send, close)
        token = auth.issue_token(SECRET, room="hall", identity="slow", role="listener")
        await session.handle(
            json.dumps({"type": "join", "room": "hall", "token": token, "offer": LISTENER})
        )
        assert sent[-1]["type"] == "joined"
        for _ in range(700):  # 1,400 events of its own: more than the 1,024 a stream holds
            room.raise_hand("slow")
            room.lower_hand("slow")
        await asyncio.sleep(0.1)
        reader_blocked.set()
        await wait_for(lambda: closed == [CLOSE_SESSION_ENDED], 5, "the slow client is closed")
        assert any(m.get("code") == "session_ended" and "fell behind" in m["message"] for m in sent)
        assert "slow" not in room.participants


async def test_offers_are_rate_limited_like_commands() -> None:
    """An offer is parsed and answered (ms for a large one): one member's
    stream of them is held to the command budget, not the frame budget."""
    from sfu.signaling.protocol import COMMAND_BURST, FRAME_BURST

    async with sfu.Server(token_secret=SECRET) as server:
        server.room("hall")
        session, sent, _ = bare_session(server)
        token = auth.issue_token(SECRET, room="hall", identity="talker", role="speaker")
        join = {"type": "join", "room": "hall", "token": token, "offer": offer("sendrecv")}
        await session.handle(json.dumps(join))
        assert sent[0]["type"] == "joined", sent[0]
        offers = FRAME_BURST - 10  # (within the connection's frame budget)
        for number in range(offers):
            renegotiation = {"type": "offer", "sdp": offer("sendrecv"), "id": number}
            await session.handle(json.dumps(renegotiation))
        refused = [m for m in sent if m.get("code") == "rate_limited"]
        answered = [m for m in sent if m.get("type") == "answer"]
        assert COMMAND_BURST - 2 <= len(answered) <= COMMAND_BURST + 2, len(answered)
        assert len(refused) == offers - len(answered)
        await session.close()


async def test_an_offer_the_server_asked_for_is_never_refused_for_the_budget() -> None:
    """A promotion asks for an offer: refused because the member had waved
    its hand before, it would leave the member on the stage without a voice."""
    from sfu.signaling.protocol import COMMAND_BURST

    async with sfu.Server(token_secret=SECRET) as server:
        room = server.room("hall")
        session, sent, _ = bare_session(server)
        token = auth.issue_token(SECRET, room="hall", identity="fan", role="speaker")
        join = {"type": "join", "room": "hall", "token": token, "offer": offer("sendrecv")}
        join["role"] = "listener"
        await session.handle(json.dumps(join))
        assert sent[0]["type"] == "joined" and sent[0]["role"] == "listener", sent[0]
        for _ in range(COMMAND_BURST):  # the budget spent
            await session.handle(json.dumps({"type": "raise_hand"}))
            await session.handle(json.dumps({"type": "lower_hand"}))
        assert any(m.get("code") == "rate_limited" for m in sent)
        await room.promote("fan")
        await wait_for(
            lambda: any(m["type"] == "role_changed" and m["renegotiate"] for m in sent),
            5,
            "the promotion asks for an offer",
        )
        await session.handle(json.dumps({"type": "offer", "sdp": offer("sendrecv"), "id": "p"}))
        assert sent[-1]["type"] == "answer", sent[-1]
        # Only the one it was asked for: the next is the client's own, and spends.
        await session.handle(json.dumps({"type": "offer", "sdp": offer("sendrecv"), "id": "q"}))
        assert sent[-1].get("code") == "rate_limited", sent[-1]
        await session.close()


async def test_commands_every_member_hears_of_are_rate_limited() -> None:
    """One client's hand-waving must not become a flood to the whole room."""
    from sfu.signaling.protocol import COMMAND_BURST, FRAME_BURST, SignalingSession

    async with sfu.Server(token_secret=SECRET) as server:
        room = server.room("hall")
        events = room.events(maxsize=10_000)
        sent: list[dict[str, Any]] = []

        async def send(text: str) -> None:
            sent.append(json.loads(text))

        async def close(code: int, reason: str) -> None:
            pass

        session = SignalingSession(server, send, close)
        token = auth.issue_token(SECRET, room="hall", identity="waver", role="listener")
        join = {"type": "join", "room": "hall", "token": token, "offer": LISTENER}
        await session.handle(json.dumps(join))
        commands = FRAME_BURST - 10  # (within the connection's frame budget)
        for number in range(commands):
            kind = "raise_hand" if number % 2 == 0 else "lower_hand"
            await session.handle(json.dumps({"type": kind, "id": number}))
        refused = [m for m in sent if m.get("code") == "rate_limited"]
        done = [m for m in sent if m.get("type") == "ok"]
        assert len(done) <= COMMAND_BURST + 2 and len(refused) >= commands - COMMAND_BURST - 2
        hand_events = 0
        while events._events:
            event = events._events.popleft()
            hand_events += isinstance(event, (sfu.HandRaised, sfu.HandLowered))
        assert hand_events <= COMMAND_BURST + 2
        await session.handle(json.dumps({"type": "ping", "id": "p"}))
        assert sent[-1]["type"] == "pong", "ping is not limited"
        await session.close()


# -- found by a reader: the session object alone, no WebSocket ------------------------

LISTENER_OFFER = offer("recvonly")


def bare_session(server: sfu.Server) -> tuple[Any, list[dict[str, Any]], list[int]]:
    from sfu.signaling.protocol import SignalingSession

    sent: list[dict[str, Any]] = []
    closed: list[int] = []

    async def send(text: str) -> None:
        sent.append(json.loads(text))

    async def close(code: int, reason: str) -> None:
        closed.append(code)

    return SignalingSession(server, send, close), sent, closed


def gated_session(
    server: sfu.Server,
) -> tuple[Any, list[dict[str, Any]], asyncio.Event, asyncio.Event]:
    """A session whose `joined` reply blocks until ``release`` is set (as a large,
    compressed frame can yield while it is written); ``writing`` is set then."""
    from sfu.signaling.protocol import SignalingSession

    sent: list[dict[str, Any]] = []
    writing, release = asyncio.Event(), asyncio.Event()

    async def send(text: str) -> None:
        message = json.loads(text)
        if message["type"] == "joined":
            writing.set()
            await release.wait()
        sent.append(message)

    async def close(code: int, reason: str) -> None:
        pass

    return SignalingSession(server, send, close), sent, writing, release


async def test_a_rejoin_is_not_ended_by_its_predecessor_leaving_late() -> None:
    """The old connection of the same name goes while the new join waits its
    turn: its ParticipantRemoved is about the old member, not the new one."""
    async with sfu.Server(token_secret=SECRET, host="127.0.0.1") as server:
        room = server.room("hall")
        await room.add_listener(LISTENER_OFFER, "alice")
        session, sent, closed = bare_session(server)
        token = auth.issue_token(SECRET, room="hall", identity="alice", role="listener")
        await asyncio.sleep(0.01)  # the add_listener's admission turn is over
        server.admission._used = server.admission.per_turn  # a crowd: this turn is spent
        join = {"type": "join", "room": "hall", "token": token, "offer": LISTENER_OFFER, "id": 1}
        joining = asyncio.ensure_future(session.handle(json.dumps(join)))
        await asyncio.sleep(0)
        assert len(server.admission) == 1, "the new join waits for its turn"
        await room.remove("alice", "stale connection")  # the old one, no ban
        await joining
        await asyncio.sleep(0.2)
        assert [m["type"] for m in sent][:1] == ["joined"]
        assert not any(m["type"] in ("removed", "error") for m in sent), sent
        assert closed == [] and room.get("alice") is session.participant
        await session.close()


async def test_nan_and_infinity_are_not_json() -> None:
    async with sfu.Server(token_secret=SECRET, host="127.0.0.1") as server:
        session, sent, _ = bare_session(server)
        for text in (
            '{"type":"ping","id":NaN}',
            '{"type":"ping","id":-Infinity}',
            '{"type":"ping","id":1e400}',
        ):
            await session.handle(text)
        assert [m.get("code") for m in sent] == ["bad_json"] * 3
        assert all("NaN" not in json.dumps(m) for m in sent)
        await session.close()


async def test_counters_do_not_dip_while_a_room_closes(tmp_path: Any) -> None:
    async with sfu.Server(host="127.0.0.1") as server:
        room = server.room("hall")
        room.router.payload_bytes_out = 123456  # as if it had forwarded
        await room.record(tmp_path / "r.ogg")  # a mixer: closing takes a frame
        closing = asyncio.ensure_future(room.close())
        await asyncio.sleep(0)
        assert "hall" not in server.rooms, "closing: its name is free already"
        assert server.stats()["payload_bytes_out"] == 123456
        await closing
        assert server.stats()["payload_bytes_out"] == 123456


async def test_no_event_goes_out_before_the_joined_reply() -> None:
    """Writing a large reply can yield (compression): the room's events wait for it."""
    async with sfu.Server(token_secret=SECRET, host="127.0.0.1") as server:
        room = server.room("hall")
        session, messages, writing_joined, release = gated_session(server)
        token = auth.issue_token(SECRET, room="hall", identity="alice", role="listener")
        join = {"type": "join", "room": "hall", "token": token, "offer": LISTENER_OFFER, "id": 1}
        joining = asyncio.ensure_future(session.handle(json.dumps(join)))
        await asyncio.wait_for(writing_joined.wait(), 5)
        room.raise_hand("alice")  # told to alice alone, at once
        await asyncio.sleep(0.1)  # the relay has had every chance to send
        release.set()
        await joining
        await asyncio.sleep(0.1)
        sent = [m["type"] for m in messages]
        assert sent and sent[0] == "joined", sent
        assert len(sent) > 1, "the events follow the reply"
        await session.close()


async def test_whip_and_whep_after_the_server_closed_say_so() -> None:
    web_app = web.Application()
    server = sfu.Server(token_secret=SECRET, host="127.0.0.1")
    await server.start()
    add_whip_whep(web_app, server)
    runner, port = await start_site(web_app)
    try:
        await server.close()
        token = auth.issue_token(SECRET, room="late", identity="v", role="listener")
        headers = {"Content-Type": "application/sdp", "Authorization": f"Bearer {token}"}
        async with aiohttp.ClientSession() as http:
            async with http.post(
                f"http://127.0.0.1:{port}/rooms/late/whep", data=LISTENER_OFFER, headers=headers
            ) as r:
                assert r.status == 503, await r.text()
    finally:
        await runner.cleanup()


async def test_a_member_muted_within_a_roster_batch_is_listed_muted() -> None:
    """Bob joins and mutes at once: Alice hears of the mute before the roster
    batch that brings Bob, so the batch itself must say Bob is muted."""
    async with sfu.Server(token_secret=SECRET, host="127.0.0.1") as server:
        room = server.room("hall", roster_interval=0.3)
        session, sent, _ = bare_session(server)
        token = auth.issue_token(SECRET, room="hall", identity="alice", role="listener")
        join = {"type": "join", "room": "hall", "token": token, "offer": LISTENER_OFFER, "id": 1}
        await session.handle(json.dumps(join))
        await asyncio.sleep(0.5)  # alice's own roster batch is out
        bob = await room.add_speaker(offer("sendrecv"), "bob")
        bob.set_self_muted(True)
        await asyncio.sleep(0.6)
        rosters = [m for m in sent if m["type"] == "roster" and m.get("joined")]
        entry = next(e for m in rosters for e in m["joined"] if e["identity"] == "bob")
        # (Muted by itself: not a mute a moderator could lift.)
        assert entry == {
            "identity": "bob",
            "role": "speaker",
            "muted": True,
            "moderator_muted": False,
            "can_speak": True,
        }
        await session.close()


async def test_a_removed_rejoin_is_told_its_own_removal_not_its_predecessors() -> None:
    async with sfu.Server(token_secret=SECRET, host="127.0.0.1") as server:
        room = server.room("hall")
        await room.add_listener(LISTENER_OFFER, "alice")
        session, sent, writing_joined, release = gated_session(server)  # relay not started
        token = auth.issue_token(SECRET, room="hall", identity="alice", role="listener")
        await asyncio.sleep(0.01)
        server.admission._used = server.admission.per_turn
        join = {"type": "join", "room": "hall", "token": token, "offer": LISTENER_OFFER, "id": 1}
        joining = asyncio.ensure_future(session.handle(json.dumps(join)))
        await asyncio.sleep(0)
        await room.remove("alice", "stale connection")  # the predecessor
        await asyncio.wait_for(writing_joined.wait(), 5)
        await room.remove("alice", "second thoughts")  # the new one, before its relay ran
        release.set()
        await joining
        await asyncio.sleep(0.2)
        removed = [m for m in sent if m["type"] == "removed"]
        assert [m["reason"] for m in removed] == ["second thoughts"], sent
        await session.close()


async def test_the_relay_goes_on_when_the_joined_reply_could_not_be_sent() -> None:
    from sfu.signaling.protocol import SignalingSession

    async with sfu.Server(token_secret=SECRET, host="127.0.0.1") as server:
        room = server.room("hall")
        sent: list[str] = []
        closed: list[int] = []

        async def send(text: str) -> None:
            if json.loads(text)["type"] == "joined":
                raise ValueError("the transport failed in an unexpected way")
            sent.append(json.loads(text)["type"])

        async def close(code: int, reason: str) -> None:
            closed.append(code)

        session = SignalingSession(server, send, close)
        token = auth.issue_token(SECRET, room="hall", identity="alice", role="listener")
        join = {"type": "join", "room": "hall", "token": token, "offer": LISTENER_OFFER, "id": 1}
        with pytest.raises(ValueError):
            await session.handle(json.dumps(join))
        await room.remove("alice", "bye")
        await asyncio.sleep(0.2)
        assert sent == ["removed"] and closed, "the relay was not left waiting"
        await session.close()


async def test_a_speakers_raise_hand_is_refused_not_allowed() -> None:
    """A member that may speak has no hand to raise: its client is told so
    (not_allowed, as documented), not answered ok for nothing; its
    lower_hand, a hand not raised, is ok and changes nothing."""
    async with sfu.Server(token_secret=SECRET) as server:
        server.room("hall")
        session, sent, _ = bare_session(server)
        token = auth.issue_token(SECRET, room="hall", identity="ann", role="speaker")
        await session.handle(
            json.dumps({"type": "join", "room": "hall", "token": token, "offer": offer("sendrecv")})
        )
        assert sent[-1]["type"] == "joined" and sent[-1]["role"] == "speaker", sent[-1]
        await session.handle(json.dumps({"type": "raise_hand", "id": 1}))
        assert sent[-1]["type"] == "error" and sent[-1]["id"] == 1, sent[-1]
        assert sent[-1]["code"] == "not_allowed"
        assert "'ann' may already speak" in sent[-1]["message"]
        await session.handle(json.dumps({"type": "lower_hand", "id": 2}))
        assert sent[-1] == {"type": "ok", "id": 2}
        await session.close()


async def test_a_member_lowering_its_own_hand_is_not_reported_as_a_moderator() -> None:
    """HandLowered.by is None for the member itself, through signaling as through the API."""
    async with sfu.Server(token_secret=SECRET) as server:
        room = server.room("hall")
        events = room.events()
        session, sent, _ = bare_session(server)
        token = auth.issue_token(SECRET, room="hall", identity="bob", role="listener")
        await session.handle(
            json.dumps({"type": "join", "room": "hall", "token": token, "offer": LISTENER})
        )
        await session.handle(json.dumps({"type": "raise_hand", "id": 1}))
        await session.handle(json.dumps({"type": "lower_hand", "id": 2}))
        await session.handle(json.dumps({"type": "raise_hand", "id": 3}))
        await session.handle(json.dumps({"type": "lower_hand", "id": 4, "identity": "bob"}))
        assert [m["type"] for m in sent if m.get("id") in (1, 2, 3, 4)] == ["ok"] * 4
        lowered = []
        while events._events:
            event = events._events.popleft()
            if isinstance(event, sfu.HandLowered):
                lowered.append(event)
        assert lowered == [sfu.HandLowered("hall", "bob", None)] * 2
        await session.close()


async def test_open_whip_whep_ignores_a_bearer_and_refused_posts_leave_no_room() -> None:
    """Without a token_secret: an Authorization header (OBS sends one) is
    ignored; a refused POST does not leave the room it named behind; a
    resource answers only at its own URL (its kind and room)."""
    web_app = web.Application()
    async with sfu.Server(host="127.0.0.1") as server:
        add_whip_whep(web_app, server)
        runner, port = await start_site(web_app)
        base = f"http://127.0.0.1:{port}"
        sdp = {"Content-Type": "application/sdp"}
        try:
            async with aiohttp.ClientSession() as http:
                for number in range(10):
                    async with http.post(
                        f"{base}/rooms/junk{number}/whep", data="v=0\r\n", headers=sdp
                    ) as r:
                        assert r.status == 400
                await asyncio.sleep(0)
                assert not [name for name in server.rooms if name.startswith("junk")]
                headers = {**sdp, "Authorization": "Bearer something-for-another-server"}
                async with http.post(
                    f"{base}/rooms/hall/whep", data=LISTENER_OFFER, headers=headers
                ) as r:
                    assert r.status == 201, await r.text()
                    location = r.headers["Location"]
                [listener] = server.rooms["hall"].participants.values()
                assert listener.identity.startswith("whep-")
                for wrong in (
                    location.replace("/whep/", "/whip/"),
                    location.replace("/hall/", "/x/"),
                ):
                    async with http.delete(base + wrong) as r:
                        assert r.status == 404, wrong
                    async with http.patch(base + wrong) as r:
                        assert r.status == 404, wrong
                assert not listener.closed
                async with http.patch(base + location) as r:
                    assert r.status == 501
                async with http.delete(base + location) as r:
                    assert r.status == 200
                assert listener.closed
        finally:
            await runner.cleanup()


async def test_a_refused_signaling_join_leaves_no_room(caplog: pytest.LogCaptureFixture) -> None:
    """And the room is logged closed once (an operator counting "closed"
    lines counted it twice: "the join it was made for failed", "unused")."""
    from sfu.signaling.protocol import SignalingSession

    caplog.set_level(logging.INFO, logger="sfu")
    async with sfu.Server(token_secret=SECRET) as server:
        sent: list[dict[str, Any]] = []

        async def send(text: str) -> None:
            sent.append(json.loads(text))

        async def close(code: int, reason: str) -> None:
            pass

        session = SignalingSession(server, send, close, room_factory=server.room)
        token = auth.issue_token(SECRET, room="ghost", identity="g", role="listener")
        await session.handle(
            json.dumps({"type": "join", "room": "ghost", "token": token, "offer": "v=0\r\n"})
        )
        assert sent[-1]["type"] == "error"
        await asyncio.sleep(0)
        assert "ghost" not in server.rooms
        await session.close()
        for _ in range(20):
            await asyncio.sleep(0)  # the close's task
        closes = [r.getMessage() for r in caplog.records if "room 'ghost' clos" in r.getMessage()]
        assert closes == ["room 'ghost' closed: unused"], closes


async def test_the_command_limit_holds_across_a_members_reconnects() -> None:
    """A member who spent its burst cannot get a fresh one by joining again:
    the bucket is the identity's in the room, not the connection's."""
    from sfu.signaling.protocol import COMMAND_BURST

    async with sfu.Server(token_secret=SECRET) as server:
        server.room("hall")
        token = auth.issue_token(SECRET, room="hall", identity="waver", role="listener")
        join = {"type": "join", "room": "hall", "token": token, "offer": LISTENER}
        done = refused = 0
        for _reconnect in range(5):
            session, sent, _closed = bare_session(server)
            await session.handle(json.dumps(join))
            assert sent[-1]["type"] == "joined"
            for number in range(COMMAND_BURST):
                kind = "raise_hand" if number % 2 == 0 else "lower_hand"
                await session.handle(json.dumps({"type": kind, "id": number}))
            done += sum(1 for m in sent if m.get("type") == "ok")
            refused += sum(1 for m in sent if m.get("code") == "rate_limited")
            await session.handle(json.dumps({"type": "leave", "id": "bye"}))
            await session.close()
        assert done <= COMMAND_BURST + 2, "one burst over all five connections"
        assert refused >= 4 * COMMAND_BURST - 2


async def test_a_newcomers_stage_is_what_the_others_were_told() -> None:
    """The stage changes and changes back within one stage interval, with a
    join in between: no event follows (nothing changed since the last one),
    so the newcomer's `joined` must carry the stage last told, not the one
    of that moment."""
    async with sfu.Server(token_secret=SECRET, host="127.0.0.1") as server:
        loop = asyncio.get_running_loop()
        room = server.room("hall")
        events = room.events()
        a = await room.add_speaker(offer("sendrecv"), "a")
        detector = room.router.detector
        detector.observe(a.number, 30, loop.time())  # what the router does per packet
        while not isinstance(await events.next(5), sfu.ActiveSpeakersChanged):
            pass
        await room.mute("a")  # off the stage, not yet told
        session, sent, _ = bare_session(server)
        token = auth.issue_token(SECRET, room="hall", identity="s", role="listener")
        join = {"type": "join", "room": "hall", "token": token, "offer": LISTENER_OFFER, "id": 1}
        await session.handle(json.dumps(join))
        await room.unmute("a")
        detector.observe(a.number, 30, loop.time())  # back in its slot
        await asyncio.sleep(1.0)
        frames = [m for m in sent if m["type"] in ("joined", "active_speakers")]
        last = frames[-1]["active_speakers"] if frames[-1]["type"] == "joined" else frames[-1]
        told = [slot and slot["identity"] for slot in last["slots"]]
        assert told == [info and info.identity for info in room.stage()] == ["a", None, None]
        await session.close()


async def test_a_crowd_joining_while_a_member_writes_slowly_does_not_end_its_session() -> None:
    """Others' joins reach a member batched (roster frames): 1,100 of them
    arriving while its socket is slow for a moment are not events it could
    lose, and do not end its session as fallen behind."""
    async with sfu.Server(token_secret=SECRET, host="127.0.0.1") as server:
        room = server.room("hall")
        session, sent, writing, release = gated_session(server)
        token = auth.issue_token(SECRET, room="hall", identity="alice", role="listener")
        join = {"type": "join", "room": "hall", "token": token, "offer": LISTENER_OFFER, "id": 1}
        joining = asyncio.ensure_future(session.handle(json.dumps(join)))
        await writing.wait()  # alice's joined reply is being written, slowly
        await asyncio.gather(*(room.add_listener(LISTENER_OFFER, f"fan-{i}") for i in range(1100)))
        release.set()
        await joining
        await asyncio.sleep(1.0)
        assert not [m for m in sent if m["type"] == "error"]
        assert "alice" in room.participants
        assert max(m["size"] for m in sent if m["type"] == "roster") == 1101
        await session.close()


async def test_metrics_count_the_rtp_rooms_did_not_forward_and_say_their_format() -> None:
    """Speakers' packets a room's router drops (here, not the negotiated
    payload type) are in /metrics, also after the room closed; the content
    type names the text format written (0.0.4)."""
    import struct

    from sfu.media.router import Publisher
    from sfu.signaling.metrics import render_metrics

    def drops(server: sfu.Server) -> dict[str, float]:
        text = render_metrics(server)[0].decode()
        values = {}
        for line in text.splitlines():
            if line.startswith("sfu_drops_total{"):
                label, value = line.rsplit(" ", 1)
                values[label.split('"')[1]] = float(value)
        return values

    async with sfu.Server() as server:
        room = server.room("r")
        speaker = Publisher(number=1, payload_type=111, audio_level_id=1)
        room.router.add_publisher(speaker)
        for sequence in range(5):
            packet = struct.pack("!BBHII", 0x80, 96, sequence, sequence * 960, 0x1234) + b"x"
            room.router.forward(speaker, packet, sequence * 0.02)
        assert drops(server)["rtp not forwarded"] == 5
        assert server.stats()["rtp_not_forwarded"] == 5
        await room.close()
        assert drops(server)["rtp not forwarded"] == 5, "a counter never goes down"
        assert render_metrics(server)[1] == "text/plain; version=0.0.4; charset=utf-8"


async def test_a_moderator_is_never_refused_a_full_stage_over_signaling(
    app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Over the WebSocket: a moderator whose connection dropped comes back on
    the stage it left although its seat was taken; later, to a full stage, it
    is seated in the audience with `moderate` in its grants, and moderates
    from there until it takes the stage back."""
    room = app.server.room("hall", max_speakers=1)
    mod, mod_client = await joined(app, "mod", "moderator")
    clients = [mod_client]
    sockets = [mod]
    try:
        await mod.ws.close()  # its connection drops
        await wait_for(lambda: "mod" not in room.participants, 5, "mod gone")
        sam, sam_client = await joined(app, "sam", "speaker")  # takes the seat
        sockets.append(sam)
        clients.append(sam_client)
        mod, mod_client = await joined(app, "mod", "moderator")  # room_full before
        sockets.append(mod)
        clients.append(mod_client)
        assert room["mod"].role == "moderator" and room["mod"].can_publish
        assert len(room.speakers) == 2

        monkeypatch.setattr(sfu.room, "MODERATOR_REJOIN_GRACE", 0.05)
        await mod.ws.close()
        await wait_for(lambda: "mod" not in room.participants, 5, "mod gone again")
        await asyncio.sleep(0.1)
        mod = await app.ws()
        sockets.append(mod)
        pc, mod_client = await peer(speaker=True)
        clients.append(mod_client)
        reply = await mod.request(
            {
                "type": "join",
                "room": "hall",
                "token": app.token("mod", "moderator"),
                "offer": pc.localDescription.sdp,
            },
            "joined",
        )
        assert reply["role"] == "listener" and reply["grants"] == ["moderate", "subscribe"]
        await pc.setRemoteDescription(RTCSessionDescription(reply["answer"], "answer"))
        await room["mod"].wait_connected(10)
        await mod.request({"type": "demote", "identity": "sam"})
        await mod.request({"type": "promote", "identity": "mod", "role": "moderator"})
        changed = await mod.expect("role_changed")
        while changed["identity"] != "mod":
            changed = await mod.expect("role_changed")
        assert changed["renegotiate"] and changed["grants"] == ["moderate", "publish", "subscribe"]
        answer = await mod.request({"type": "offer", "sdp": await make_offer(pc)}, "answer")
        await pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], "answer"))
        assert room["mod"].role == "moderator" and room["mod"].publisher is not None
    finally:
        await asyncio.gather(*(c.close() for c in clients), *(s.ws.close() for s in sockets))


async def vic_in_next_roster(socket: Socket) -> tuple[str, bool]:
    """Vic's role, and whether it moderates, in the next roster batch that
    names it (as joined, when the batch began before the member knew it)."""
    while True:
        roster = await socket.expect("roster")
        for entry in roster["joined"] + roster["updated"]:
            if entry["identity"] == "vic":
                return entry["role"], entry.get("moderates", entry["role"] == "moderator")


async def test_the_roster_and_role_changes_say_who_moderates_whatever_the_role(app: App) -> None:
    """A moderator seated in the audience by a full stage is listed as a
    "listener" that moderates; invited on the stage as a "speaker" it still
    moderates, and every member is told so; stepping down ends it. A
    "moderator" whose token withheld the grant is listed as not moderating."""
    room = app.server.room("hall", max_speakers=3)
    mod, mod_client = await joined(app, "mod", "moderator")
    sam, sam_client = await joined(app, "sam", "speaker")
    sockets, clients = [mod, sam], [mod_client, sam_client]
    try:
        held = await app.ws()
        sockets.append(held)
        pc, held_client = await peer(speaker=True)
        clients.append(held_client)
        withheld = auth.issue_token(
            SECRET, room="hall", identity="held", role="moderator", grants=["publish", "subscribe"]
        )
        join = {"type": "join", "room": "hall", "token": withheld}
        await held.request({**join, "offer": pc.localDescription.sdp}, "joined")
        vic, vic_client = await joined(app, "vic", "moderator")  # the stage is full
        sockets.append(vic)
        clients.append(vic_client)
        assert (room["vic"].role, room["vic"].is_moderator) == ("listener", True)
        assert (room["held"].role, room["held"].is_moderator) == ("moderator", False)
        lee = await app.ws()
        sockets.append(lee)
        pc, lee_client = await peer()
        clients.append(lee_client)
        join = {"type": "join", "room": "hall", "token": app.token("lee")}
        reply = await lee.request({**join, "offer": pc.localDescription.sdp}, "joined")
        # (`moderates` is said only when the role does not say it.)
        listed = {
            e["identity"]: (e["role"], e.get("moderates", e["role"] == "moderator"))
            for e in reply["roster"]
        }
        assert listed == {
            "mod": ("moderator", True),
            "sam": ("speaker", False),
            "held": ("moderator", False),
            "vic": ("listener", True),
            "lee": ("listener", False),
        }
        assert sum("moderates" in e for e in reply["roster"]) == 2  # held's and vic's

        await mod.request({"type": "demote", "identity": "sam"})
        await mod.request({"type": "promote", "identity": "vic"})  # as "speaker"
        changed = await sam.expect("role_changed")
        while changed["identity"] != "vic":
            changed = await sam.expect("role_changed")
        assert (changed["role"], changed["moderates"]) == ("speaker", True)
        assert (room["vic"].role, room["vic"].is_moderator) == ("speaker", True)
        assert await vic_in_next_roster(sam) == ("speaker", True)

        await mod.request({"type": "demote", "identity": "vic", "role": "speaker"})
        changed = await sam.expect("role_changed")
        assert (changed["identity"], changed["role"], changed["moderates"]) == (
            "vic",
            "speaker",
            False,
        )
        assert await vic_in_next_roster(sam) == ("speaker", False)
    finally:
        await asyncio.gather(*(c.close() for c in clients), *(s.ws.close() for s in sockets))


async def test_a_join_may_ask_for_a_lesser_role_than_its_token(app: App) -> None:
    """`role` on `join`: a speaker token joining to listen (an offer that only
    receives) asks for "listener"; without it that offer is refused; a role
    the token does not grant, or no role at all, is refused too."""
    pc, _ = await peer()  # receiving lines only
    try:
        join: dict[str, Any] = {
            "type": "join",
            "room": "hall",
            "token": app.token("sam", "speaker"),
            "offer": pc.localDescription.sdp,
        }
        refused = await (await app.ws()).request(join, "error")
        assert refused["code"] == "invalid_offer" and "speaker needs to send" in refused["message"]
        bad = await (await app.ws()).request({**join, "role": "admin"}, "error")
        assert bad["code"] == "bad_message" and "'role' must be one of" in bad["message"]
        more = {**join, "token": app.token("lee", "listener"), "role": "speaker"}
        assert (await (await app.ws()).request(more, "error"))["code"] == "not_allowed"
        socket = await app.ws()
        reply = await socket.request({**join, "role": "listener"}, "joined")
        assert reply["role"] == "listener" and reply["grants"] == ["subscribe"]
        assert app.server.rooms["hall"]["sam"].role == "listener"
        await socket.ws.close()
    finally:
        await close_peer(pc)


@pytest.mark.parametrize(
    "misuse",
    [
        lambda member: member.close(5),
        lambda member: member.room.remove(member.identity, 5),
        lambda member: member.room.remove(member.identity, ban="yes"),
        lambda member: member.room.close(None),
    ],
)
async def test_a_backend_passing_a_wrong_type_is_told_and_no_member_is_left_half_closed(
    app: App, misuse: Any
) -> None:
    """A reason that is not a str (or a ban that is not a bool) is refused with
    InvalidSetting before anything changes; taken, it went into the events,
    and the member's signaling relay, reading it, died: its client was never
    told and its socket stayed open."""
    socket, client = await joined(app, "lee")
    member = app.server.rooms["hall"]["lee"]
    with pytest.raises(sfu.InvalidSetting, match="must be"):
        await misuse(member)
    assert not member.closed and not member.room.closed and not member.room.is_banned("lee")
    # The member and its relay go on: a removal is told, then the socket closes.
    await member.room.remove("lee", "for real")
    assert (await socket.expect("removed"))["reason"] == "for real"
    assert (await socket.ws.receive(5)).type == aiohttp.WSMsgType.CLOSE
    await client.close()


async def replies_until_closed(ws: aiohttp.ClientWebSocketResponse[bool]) -> list[dict[str, Any]]:
    """The messages a flooded connection is sent, until it closes."""
    replies: list[dict[str, Any]] = []
    while True:
        message = await ws.receive(5)
        if message.type != aiohttp.WSMsgType.TEXT:
            return replies
        replies.append(json.loads(message.data))


async def test_a_connection_flooding_frames_is_refused_then_disconnected(app: App) -> None:
    """Frames of any kind past the connection's budget are refused unread, and
    a client that sends on past another burst of refusals is disconnected
    (1008); another connection is served all along."""
    from sfu.signaling.protocol import CLOSE_FLOOD, FRAME_BURST, FRAME_RATE

    flood = await app.ws()
    other = await app.ws()
    loop = asyncio.get_running_loop()
    started = loop.time()
    total = 3 * FRAME_BURST + 50
    for number in range(total):
        await flood.send({"type": "ping", "id": number})
    replies = await replies_until_closed(flood.ws)
    elapsed = loop.time() - started
    assert flood.ws.close_code == CLOSE_FLOOD
    pongs = [m for m in replies if m["type"] == "pong"]
    refused = [m for m in replies if m.get("code") == "rate_limited"]
    assert len(pongs) <= FRAME_BURST + FRAME_RATE * elapsed + 1, (len(pongs), elapsed)
    assert len(pongs) >= FRAME_BURST
    assert len(refused) == FRAME_BURST, len(refused)
    assert len(replies) < total, "every frame was answered: the flood was not cut off"
    assert (await other.request({"type": "ping"}, "pong"))["type"] == "pong"
    await other.ws.close()


async def test_binary_frames_count_in_the_connection_s_frame_limit(app: App) -> None:
    """A binary frame is a frame too: a flood of them was answered one
    `bad_message` each, for ever, never refused nor disconnected (1008) as
    the same flood of text frames is."""
    from sfu.signaling.protocol import CLOSE_FLOOD, FRAME_BURST

    flood = await app.ws()
    other = await app.ws()
    total = 3 * FRAME_BURST + 50
    for _ in range(total):
        await flood.ws.send_bytes(b"\x00" * 16)
    replies = await replies_until_closed(flood.ws)
    assert flood.ws.close_code == CLOSE_FLOOD
    refused = [m for m in replies if m.get("code") == "rate_limited"]
    assert len(refused) == FRAME_BURST, len(refused)
    assert [m["code"] for m in replies[:FRAME_BURST]] == ["bad_message"] * FRAME_BURST
    assert len(replies) < total, "every frame was answered: the flood was not cut off"
    assert (await other.request({"type": "ping"}, "pong"))["type"] == "pong"
    await other.ws.close()


async def test_a_close_cancelled_while_it_waits_for_the_relay_is_cancelled() -> None:
    """close() cancels the member's event relay and awaits it; a cancellation
    of close() itself landing then was taken for the relay's and swallowed:
    the caller's task went on, its cancel lost (asyncio.timeout() around it
    never fired). The close still ends the member and the relay, and closes
    the transport before the cancellation goes on."""
    async with sfu.Server(token_secret=SECRET) as server:
        server.room("hall")
        session, sent, closed = bare_session(server)
        token = auth.issue_token(SECRET, room="hall", identity="ann", role="listener")
        await session.handle(
            json.dumps({"type": "join", "room": "hall", "token": token, "offer": LISTENER})
        )
        assert sent[-1]["type"] == "joined"
        relay, member = session._relay, session.participant
        closing = asyncio.create_task(session.close())
        await asyncio.sleep(0)  # closing has cancelled the relay and awaits it
        assert not closing.done() and not relay.done()
        closing.cancel()
        with pytest.raises(asyncio.CancelledError):
            await closing
        assert member.closed and relay.done()
        assert not server.rooms["hall"].participants
        assert closed == [1000], "the transport was left open"  # CLOSE_LEFT
        await session.close()  # idempotent: nothing more
        assert closed == [1000]


async def test_a_relay_failing_after_a_cancelled_close_is_still_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """close() cancelled while it waits for the relay no longer waits for it:
    a relay that then fails must still be logged, not left to asyncio's
    "exception was never retrieved" at garbage collection."""
    async with sfu.Server(token_secret=SECRET) as server:
        session, _, closed = bare_session(server)

        async def relay_failing_when_cancelled() -> None:
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                await asyncio.sleep(0.05)
                raise RuntimeError("the relay broke while ending") from None

        session._relay = asyncio.create_task(relay_failing_when_cancelled())
        await asyncio.sleep(0)
        closing = asyncio.create_task(session.close())
        await asyncio.sleep(0)  # closing has cancelled the relay and waits for it
        closing.cancel()
        with pytest.raises(asyncio.CancelledError):
            await closing
        assert closed == [1000]
        await asyncio.sleep(0.1)
        assert "the event relay failed" in caplog.text
        assert "the relay broke while ending" in caplog.text


async def test_a_signaling_session_on_a_server_without_a_token_secret_is_refused_when_made() -> (
    None
):
    """Every join over the signaling carries a token, so a server without
    token_secret could take none: made anyway (the README's FastAPI recipe
    makes SignalingSession itself), each join was refused not_allowed, which
    sfu.js takes for final. The app's mistake is said when it is made."""
    from sfu.signaling.protocol import SignalingSession

    async def send(text: str) -> None:
        pass

    async def close(code: int, reason: str) -> None:
        pass

    async with sfu.Server() as server:
        with pytest.raises(sfu.InvalidSetting, match="token_secret"):
            SignalingSession(server, send, close)
