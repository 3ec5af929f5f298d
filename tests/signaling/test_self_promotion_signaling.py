"""Over the signaling protocol, with real aiortc peers and audio: a moderator
whose token grants ``moderate`` but not ``publish`` cannot make itself heard.

Its ``promote`` of itself is refused ``not_allowed``; lifting a mute on
itself or offering a sending line gives it no voice either; another
moderator promoting it does, as promoting anyone always did.
"""

from __future__ import annotations

import asyncio

from aiortc import RTCSessionDescription

from sfu import auth

from ..clients import _record_received, _record_sent, close_peer, make_offer, wait_for
from ..test_moderation import heard_from
from .test_protocol import SECRET, App, joined, peer
from .test_protocol import app as app  # the fixture


async def test_a_moderate_only_token_cannot_promote_itself_to_speak(app: App) -> None:
    boss, boss_client = await joined(app, "boss", "moderator")
    ann, ann_client = await joined(app, "ann", "listener")
    socket = await app.ws()
    pc, client = await peer(speaker=True)  # it offers a sending line, with a tone
    try:
        token = auth.issue_token(
            SECRET, room="hall", identity="m", role="listener", grants=["moderate", "subscribe"]
        )
        reply = await socket.request(
            {"type": "join", "room": "hall", "token": token, "offer": pc.localDescription.sdp},
            "joined",
        )
        assert reply["role"] == "listener" and reply["grants"] == ["moderate", "subscribe"]
        _record_received(client)
        await pc.setRemoteDescription(RTCSessionDescription(reply["answer"], "answer"))
        _record_sent(client)
        room = app.server.rooms["hall"]
        m = room["m"]
        await m.wait_connected(10)

        for role in ("speaker", "moderator"):
            error = await socket.request(
                {"type": "promote", "identity": "m", "role": role}, "error"
            )
            assert error["code"] == "not_allowed", error
            assert "'m' may not promote itself" in error["message"], error
            assert "'publish'" in error["message"], error
            assert m.role == "listener" and not m.can_publish and m.publisher is None

        # A moderator's mute lifted by itself (moderators lift mutes) and a
        # new offer with its sending line: still no voice.
        await boss.request({"type": "mute_participant", "identity": "m", "muted": True})
        await socket.request({"type": "mute_participant", "identity": "m", "muted": False})
        answer = await socket.request({"type": "offer", "sdp": await make_offer(pc)}, "answer")
        await pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], "answer"))
        assert not m.can_publish and m.publisher is None
        await asyncio.sleep(1.0)  # what it might send would reach the others meanwhile
        assert heard_from(boss_client, m.csrc) == 0 and heard_from(ann_client, m.csrc) == 0

        # It still promotes others, as any moderator does.
        await socket.request({"type": "promote", "identity": "ann"})
        assert room["ann"].can_publish

        # Another moderator promoting it is that moderator's decision: it speaks.
        await boss.request({"type": "promote", "identity": "m"})
        changed = await socket.expect("role_changed")
        assert changed["role"] == "speaker" and changed["renegotiate"] is True
        answer = await socket.request({"type": "offer", "sdp": await make_offer(pc)}, "answer")
        await pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], "answer"))
        await wait_for(lambda: heard_from(boss_client, m.csrc) >= 20, 10, "m heard once promoted")
    finally:
        await asyncio.gather(
            boss_client.close(),
            ann_client.close(),
            close_peer(pc),
            boss.ws.close(),
            ann.ws.close(),
            socket.ws.close(),
        )
