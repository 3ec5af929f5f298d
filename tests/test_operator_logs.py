"""What an operator reads in the ``sfu`` log: moderation says who did it."""

from __future__ import annotations

import logging

import pytest

import sfu

from .test_room_lifecycle import LISTENER, SPEAKER


def messages(caplog: pytest.LogCaptureFixture, level: int = logging.INFO) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= level]


async def test_a_moderators_mute_and_removal_are_logged_with_who_did_them(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="sfu")
    async with sfu.Server() as server:
        room = server.room("hall")
        await room.join(SPEAKER, identity="mod", role="moderator")
        await room.add_speaker(SPEAKER, "alice")
        await room.add_listener(LISTENER, "bob")
        await room.mute("alice", by="mod")
        await room.unmute("alice", by="mod")
        await room.mute("alice")  # the application's own call: no member named
        await room.remove("bob", reason="spam", by="mod", ban=True)
        logged = messages(caplog)
        assert "alice muted in room 'hall' by mod" in logged
        assert "alice unmuted in room 'hall' by mod" in logged
        assert "alice muted in room 'hall' by the backend" in logged
        assert "bob removed and banned from room 'hall' by mod: 'spam'" in logged
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
