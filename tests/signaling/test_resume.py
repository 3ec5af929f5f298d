"""A reconnect that proves it is the same client (the ``resume_key`` of its
``joined``) replaces its member at once, while the old connection is still
open (half-open: a phone that switched networks). Without the right key the
join is refused ``duplicate_identity``, as it always was, and nothing ends.

Real aiohttp WebSockets on loopback, aiortc peers for the media.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from typing import Any

import aiohttp
import pytest
from aiortc import RTCPeerConnection, RTCSessionDescription

import sfu
from sfu import auth
from sfu.signaling import protocol

from ..clients import close_peer
from ..test_room_lifecycle import SPEAKER, offer
from .test_protocol import SECRET, App, Socket, bare_session, joined, peer
from .test_protocol import app as app  # the fixture

LISTENER_OFFER = offer("recvonly")


async def ask(socket: Socket, message: dict[str, Any]) -> dict[str, Any]:
    """The reply to ``message`` (whatever its type); other messages go to ``events``."""
    message_id = secrets.token_hex(4)
    await socket.send({**message, "id": message_id})
    while True:
        reply = await socket.receive()
        if reply.get("id") == message_id:
            return reply
        socket.events.append(reply)


async def join(
    app: App, identity: str, *, resume: Any = None, room: str = "hall"
) -> tuple[Socket, RTCPeerConnection, dict[str, Any]]:
    """A new connection's join as a listener (``resume``: the key it sends), and its reply."""
    socket = await app.ws()
    pc, _ = await peer()
    message = {
        "type": "join",
        "room": room,
        "token": app.token(identity, room=room),
        "offer": pc.localDescription.sdp,
    }
    if resume is not None:
        message["resume"] = resume
    reply = await ask(socket, message)
    if reply["type"] == "joined":
        await pc.setRemoteDescription(RTCSessionDescription(reply["answer"], "answer"))
    return socket, pc, reply


async def ending(socket: Socket, timeout: float = 10) -> tuple[list[dict[str, Any]], int | None]:
    """What a connection still reads until the server closes it, and the close code."""
    messages: list[dict[str, Any]] = []
    while True:
        frame = await socket.ws.receive(timeout)
        if frame.type == aiohttp.WSMsgType.TEXT:
            messages.append(json.loads(frame.data))
            continue
        assert frame.type == aiohttp.WSMsgType.CLOSE, frame
        return messages, frame.data


async def test_a_reconnect_with_its_key_replaces_a_member_whose_connection_is_silent(
    app: App, caplog: pytest.LogCaptureFixture
) -> None:
    """The first connection stays open, reading nothing and sending nothing:
    the second, with the key of the first's `joined`, is admitted at once, as
    a rejoin (the promotion and the moderator's mute stand); the first is told
    and closed; the room holds one alice, counted once."""
    caplog.set_level(logging.INFO, logger="sfu")
    room = app.server.room("hall")
    mod, mod_client = await joined(app, "mod", "moderator")
    first, first_pc, first_joined = await join(app, "alice")
    pcs = [first_pc]
    sockets = [mod, first]
    try:
        assert first_joined["type"] == "joined", first_joined
        key = first_joined["resume_key"]
        assert isinstance(key, str) and len(key) >= 16
        await room["alice"].wait_connected(10)
        await mod.request({"type": "promote", "identity": "alice"})
        await mod.request({"type": "mute_participant", "identity": "alice", "muted": True})
        old = room["alice"]
        assert old.role == "speaker" and old.moderator_muted
        assert room._counts == {True: 2, False: 0}

        second, second_pc, reply = await join(app, "alice", resume=key)
        sockets.append(second)
        pcs.append(second_pc)
        assert reply["type"] == "joined", reply
        new = room["alice"]
        assert new is not old and old.closed and old.close_reason == "replaced"
        # A rejoin: promoted before, it comes back promoted (its offer only
        # receives: it is asked for a sending line), still muted by the moderator.
        assert reply["role"] == "speaker" and new.role == "speaker"
        assert new.moderator_muted
        assert [p for p in room.participants.values() if p.identity == "alice"] == [new]
        assert room._counts == {True: 2, False: 0}, "alice's seat counted twice"
        assert reply["size"] == 2
        # A key is good for one reconnect: the new member has a new one.
        assert reply["resume_key"] != key
        await new.wait_connected(10)

        told, code = await ending(first)
        errors = [m for m in told if m["type"] == "error"]
        assert [m["code"] for m in errors] == ["replaced"], told
        assert code == 4004
        # The second connection goes on.
        await second.request({"type": "ping"}, "pong")
        replaced = [m for m in caplog.messages if "replaced" in m]
        assert replaced == ["alice left room 'hall': 'replaced'"], caplog.messages

        # The spent key replaces nobody.
        third, third_pc, refused = await join(app, "alice", resume=key)
        sockets.append(third)
        pcs.append(third_pc)
        assert refused["type"] == "error" and refused["code"] == "duplicate_identity", refused
        assert room["alice"] is new and not new.closed
    finally:
        await asyncio.gather(
            mod_client.close(), *(close_peer(pc) for pc in pcs), *(s.ws.close() for s in sockets)
        )


async def test_a_join_without_the_members_key_is_refused_and_ends_nobody(app: App) -> None:
    """No key, a wrong one, another member's, the same identity's in another
    room: `duplicate_identity` as before, and the member stays, its connection
    untouched. A key that is not a string is a bad message."""
    room = app.server.room("hall")
    app.server.room("den")
    first, first_pc, first_joined = await join(app, "alice")
    bob, bob_pc, bob_joined = await join(app, "bob")
    den, den_pc, den_joined = await join(app, "alice", room="den")
    pcs = [first_pc, bob_pc, den_pc]
    sockets = [first, bob, den]
    try:
        assert {first_joined["type"], bob_joined["type"], den_joined["type"]} == {"joined"}
        alice = room["alice"]
        for resume in (None, "", "not-the-key", bob_joined["resume_key"], den_joined["resume_key"]):
            socket, pc, reply = await join(app, "alice", resume=resume)
            sockets.append(socket)
            pcs.append(pc)
            assert reply["type"] == "error" and reply["code"] == "duplicate_identity", (
                resume,
                reply,
            )
        socket, pc, reply = await join(app, "alice", resume=7)
        sockets.append(socket)
        pcs.append(pc)
        assert reply["type"] == "error" and reply["code"] == "bad_message", reply
        assert "'resume' must be a str" in reply["message"]
        assert room["alice"] is alice and not alice.closed
        assert room["bob"].identity == "bob" and not room["bob"].closed
        assert app.server.rooms["den"]["alice"].closed is False
        assert room._counts == {True: 0, False: 2}
        # The first connection heard nothing of it, and goes on.
        await first.request({"type": "ping"}, "pong")
        assert not [m for m in first.events if m["type"] == "error"], first.events
        # Its key still replaces it.
        socket, pc, reply = await join(app, "alice", resume=first_joined["resume_key"])
        sockets.append(socket)
        pcs.append(pc)
        assert reply["type"] == "joined", reply
        assert alice.closed and room["alice"] is not alice
    finally:
        await asyncio.gather(*(close_peer(pc) for pc in pcs), *(s.ws.close() for s in sockets))


def join_message(
    identity: str, role: auth.Role = "listener", sdp: str = LISTENER_OFFER, **extra: Any
) -> str:
    token = auth.issue_token(SECRET, room="hall", identity=identity, role=role)
    return json.dumps({"type": "join", "room": "hall", "token": token, "offer": sdp, **extra})


async def test_two_reconnects_with_one_key_admit_one_member() -> None:
    """Racing replacements with the same key: one is admitted, the other is
    refused; the room never holds two members of one identity."""
    async with sfu.Server(token_secret=SECRET, host="127.0.0.1") as server:
        room = server.room("hall")
        first, first_sent, _ = bare_session(server)
        await first.handle(join_message("alice", id=1))
        key = first_sent[0]["resume_key"]
        sessions = [bare_session(server) for _ in range(2)]
        seen: list[int] = []
        events = room.events()

        async def count() -> None:
            async for event in events:
                if isinstance(event, sfu.events.ParticipantJoined):
                    seen.append(sum(p.identity == "alice" for p in room.participants.values()))

        counting = asyncio.ensure_future(count())
        await asyncio.gather(
            *(s.handle(join_message("alice", id=2, resume=key)) for s, _, _ in sessions)
        )
        await asyncio.sleep(0.1)
        counting.cancel()
        replies = sorted(sent[0]["type"] + ":" + sent[0].get("code", "") for _, sent, _ in sessions)
        assert replies == ["error:duplicate_identity", "joined:"], replies
        assert room._counts == {True: 0, False: 1} and len(room.participants) == 1
        assert seen == [1]
        for session in [first, *(s for s, _, _ in sessions)]:
            await session.close()


async def test_the_replaced_sessions_late_frames_do_not_act_for_the_new_member() -> None:
    """The old connection's frames that come after its replacement (a hand, a
    self-mute, a leave) are refused `session_ended`: its member is gone, and the
    new member of the same name is not acted for."""
    async with sfu.Server(token_secret=SECRET, host="127.0.0.1") as server:
        room = server.room("hall")
        old, old_sent, _ = bare_session(server)
        await old.handle(join_message("alice", id=1))
        new, new_sent, _ = bare_session(server)
        await new.handle(join_message("alice", id=2, resume=old_sent[0]["resume_key"]))
        assert new_sent[0]["type"] == "joined"
        member = room["alice"]
        for frame in ({"type": "raise_hand"}, {"type": "mute", "muted": True}, {"type": "leave"}):
            await old.handle(json.dumps({**frame, "id": 9}))
            assert old_sent[-1]["type"] == "error" and old_sent[-1]["code"] == "session_ended"
        assert room["alice"] is member and not member.closed
        assert room.hands == [] and not member.self_muted
        await old.close()
        await new.close()
        # Closed sessions' keys are forgotten (a room's table does not grow with its churn).
        assert not protocol._resume_keys.get(room)


async def test_the_python_api_replaces_nobody_whatever_a_join_sends() -> None:
    """A member that joined by the Python API has no key: a signaling join of its
    identity, whatever key it sends, is refused as before."""
    async with sfu.Server(token_secret=SECRET, host="127.0.0.1") as server:
        room = server.room("hall")
        carol = await room.add_listener(LISTENER_OFFER, "carol")
        other, other_sent, _ = bare_session(server)
        await other.handle(join_message("dave", id=1))
        session, sent, _ = bare_session(server)
        await session.handle(join_message("carol", id=2, resume=other_sent[0]["resume_key"]))
        assert sent[0]["type"] == "error" and sent[0]["code"] == "duplicate_identity"
        assert room["carol"] is carol and not carol.closed
        with pytest.raises(sfu.DuplicateIdentity):
            await room.add_listener(LISTENER_OFFER, "dave")
        assert not room["dave"].closed
        await other.close()
        await session.close()


async def test_a_replaced_moderator_keeps_its_place_on_a_stage_over_its_limit() -> None:
    """The replaced member leaves as one that dropped: a moderator back on a
    stage past max_speakers (its rejoin grace) is back on it again, not seated
    in the audience, although the stage is still full without it."""
    async with sfu.Server(token_secret=SECRET, host="127.0.0.1") as server:
        room = server.room("hall", max_speakers=1)
        first, _, _ = bare_session(server)
        await first.handle(join_message("mod", "moderator", SPEAKER, id=1))
        await first.close()  # dropped: its seat is taken meanwhile
        await room.add_speaker(SPEAKER, "sam")
        second, second_sent, _ = bare_session(server)
        await second.handle(join_message("mod", "moderator", SPEAKER, id=2))
        assert second_sent[0]["role"] == "moderator" and room._counts[True] == 2
        third, third_sent, _ = bare_session(server)
        resume = second_sent[0]["resume_key"]
        await third.handle(join_message("mod", "moderator", SPEAKER, id=3, resume=resume))
        assert third_sent[0]["type"] == "joined", third_sent
        assert third_sent[0]["role"] == "moderator" and room["mod"].can_publish
        assert room._counts == {True: 2, False: 0}
        for session in (second, third):
            await session.close()
