"""A reconnect carrying its resume key whose join is then refused (a bad
offer, a full stage) must end nobody: the member it would have replaced
stays, as a join refused ``duplicate_identity`` leaves it (``Room.join``:
"nothing is registered when it raises"; docs/signaling.md: the old member
leaves because a new connection "took your place in the room")."""

from __future__ import annotations

import json
from typing import Any

import sfu
from sfu import auth

from ..test_room_lifecycle import LISTENER, SPEAKER
from .test_protocol import SECRET, bare_session


def join_message(identity: str, token_role: auth.Role, sdp: str, **extra: Any) -> str:
    token = auth.issue_token(SECRET, room="hall", identity=identity, role=token_role)
    return json.dumps({"type": "join", "room": "hall", "token": token, "offer": sdp, **extra})


async def test_a_resume_refused_for_its_offer_ends_nobody() -> None:
    async with sfu.Server(token_secret=SECRET, host="127.0.0.1") as server:
        room = server.room("hall")
        old, old_sent, old_closed = bare_session(server)
        await old.handle(join_message("alice", "listener", LISTENER, id=1))
        key = old_sent[0]["resume_key"]
        alice = room["alice"]
        new, new_sent, _ = bare_session(server)
        await new.handle(join_message("alice", "listener", "v=0\r\nnot sdp", id=2, resume=key))
        assert new_sent[-1]["type"] == "error" and new_sent[-1]["code"] == "invalid_offer"
        # Nobody took alice's place: she is still in, and her connection is not told otherwise.
        assert not alice.closed, alice.close_reason
        assert room.get("alice") is alice and room._counts == {True: 0, False: 1}
        # Her key still works for a good offer.
        await new.handle(join_message("alice", "listener", LISTENER, id=3, resume=key))
        assert new_sent[-1]["type"] == "joined" and alice.close_reason == "replaced"
        await old.close()
        await new.close()


async def test_a_resume_refused_for_a_full_stage_ends_nobody() -> None:
    async with sfu.Server(token_secret=SECRET, host="127.0.0.1") as server:
        room = server.room("hall", max_speakers=1)
        sam, _, _ = bare_session(server)
        await sam.handle(join_message("sam", "speaker", SPEAKER, id=1))
        # alice holds a speaker's token and listens (a lesser role)...
        old, old_sent, _ = bare_session(server)
        await old.handle(join_message("alice", "speaker", LISTENER, role="listener", id=1))
        alice = room["alice"]
        # ...and reconnects asking for the stage, which is full.
        new, new_sent, _ = bare_session(server)
        await new.handle(
            join_message("alice", "speaker", SPEAKER, id=2, resume=old_sent[0]["resume_key"])
        )
        assert new_sent[-1]["type"] == "error" and new_sent[-1]["code"] == "room_full"
        assert not alice.closed, alice.close_reason
        assert room.get("alice") is alice and room._counts == {True: 1, False: 1}
        for session in (sam, old, new):
            await session.close()
