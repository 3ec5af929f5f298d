"""Who can be invited to speak: a WHEP player can never send, and the roster says so.

Real aiortc peers: moderators and a listener over the WebSocket protocol, a
WHEP player and a WHIP publisher over plain HTTP.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiortc import RTCPeerConnection, RTCSessionDescription

import sfu

from ..clients import close_peer
from .test_protocol import App, Socket, joined, peer
from .test_protocol import app as app  # the fixture


async def post(app: App, kind: str, identity: str, role: str, pc: RTCPeerConnection) -> None:
    headers = {
        "Content-Type": "application/sdp",
        "Authorization": f"Bearer {app.token(identity, role)}",
    }
    url = f"{app.base}/rooms/hall/{kind}"
    async with app.http.post(url, data=pc.localDescription.sdp, headers=headers) as r:
        assert r.status == 201, await r.text()
        answer = await r.text()
    await pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
    await app.server.rooms["hall"][identity].wait_connected(10)


async def listed(socket: Socket, identity: str) -> dict[str, Any]:
    """The latest roster entry about ``identity``, waiting for one if none came yet."""
    while True:
        found = [
            entry
            for message in socket.events
            if message["type"] == "roster"
            for entry in message["joined"] + message["updated"]
            if entry["identity"] == identity
        ]
        if found:
            return dict(found[-1])
        socket.events.append(await socket.receive())


async def test_a_whep_player_is_listed_as_unable_to_speak_and_cannot_be_promoted(app: App) -> None:
    mod, mod_client = await joined(app, "mod", "moderator")
    ann, ann_client = await joined(app, "ann", "listener")
    whep_pc, _ = await peer(slots=1)
    whip_pc, _ = await peer(speaker=True, slots=0)
    whip_pc.getTransceivers()[0].direction = "sendonly"
    await whip_pc.setLocalDescription(await whip_pc.createOffer())
    late_pc: RTCPeerConnection | None = None
    try:
        await post(app, "whep", "player", "listener", whep_pc)
        await post(app, "whip", "obs", "speaker", whip_pc)
        room = app.server.rooms["hall"]

        # The batched roster tells the moderator who could speak.
        assert (await listed(mod, "player"))["can_speak"] is False
        assert (await listed(mod, "obs"))["can_speak"] is True  # it has its sending line
        assert (await listed(mod, "ann"))["can_speak"] is True  # its client can add one
        # So does a newcomer's snapshot.
        late = await app.ws()
        late_pc, _ = await peer(speaker=True)
        reply = await late.request(
            {
                "type": "join",
                "room": "hall",
                "token": app.token("late", "moderator"),
                "offer": late_pc.localDescription.sdp,
            },
            "joined",
        )
        await late_pc.setRemoteDescription(RTCSessionDescription(reply["answer"], "answer"))
        await room["late"].wait_connected(10)
        snapshot = {entry["identity"]: entry["can_speak"] for entry in reply["roster"]}
        assert snapshot == {"mod": True, "ann": True, "player": False, "obs": True, "late": True}

        # A promotion is refused, saying why, and changes nothing.
        await mod.send({"type": "promote", "identity": "player", "id": 1})
        error = await mod.expect("error")
        assert error["code"] == "not_allowed" and error["id"] == 1
        assert "cannot speak" in error["message"] and "WHEP" in error["message"]
        try:
            await room.promote("player")
        except sfu.NotAllowed as exc:
            assert "'player' cannot speak" in str(exc)
        else:
            raise AssertionError("the backend promoted a WHEP player")
        assert room["player"].role == "listener" and not room["player"].can_publish
        assert "player" not in {p.identity for p in room.speakers}

        # Those who can speak are promoted as before: a WebSocket listener, and a
        # WHIP publisher taken off the stage (it kept its sending line).
        await mod.request({"type": "promote", "identity": "ann"})
        await mod.request({"type": "demote", "identity": "obs"})
        await mod.request({"type": "promote", "identity": "obs"})
        assert room["ann"].role == "speaker" and room["obs"].role == "speaker"
    finally:
        await asyncio.gather(close_peer(whep_pc), close_peer(whip_pc))
        await asyncio.gather(close_peer(mod_client.pc), close_peer(ann_client.pc))
        if late_pc is not None:
            await close_peer(late_pc)
