"""Which of a room's event streams an event is offered to (sfu.events.Subscribers).

A stream made with ``member=`` takes, of the joins, connections, leaves and
removals, only its own member's; the room must not even offer it the
others', or a crowd whose every member holds such a stream (the signaling
does) makes each join cost one call per member.
"""

from __future__ import annotations

import collections
import gc
from typing import Any

import pytest

import sfu
from sfu.events import EventStream

from .test_room_lifecycle import LISTENER


def count_offers(monkeypatch: pytest.MonkeyPatch) -> collections.Counter[str]:
    """Calls of EventStream._put (an event offered to a stream), by event type."""
    offered: collections.Counter[str] = collections.Counter()
    put = EventStream._put

    def counted(stream: EventStream, event: Any) -> None:
        offered[type(event).__name__] += 1
        put(stream, event)

    monkeypatch.setattr(EventStream, "_put", counted)
    return offered


def queued(stream: EventStream) -> list[Any]:
    return list(stream._events)


async def test_a_join_is_offered_only_to_its_own_stream_and_the_unscoped_ones(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with sfu.Server(host="127.0.0.1") as server:
        room = server.room("hall")
        members = {f"fan-{i}": room.events(member=f"fan-{i}") for i in range(200)}
        backend = room.events()
        offered = count_offers(monkeypatch)
        await room.add_listener(LISTENER, "fan-7")
        # The backend's stream and fan-7's: not one call per member.
        assert offered["ParticipantJoined"] == 2, offered
        assert [type(e).__name__ for e in queued(members["fan-7"])] == ["ParticipantJoined"]
        assert all(not queued(s) for name, s in members.items() if name != "fan-7")
        assert [e.identity for e in queued(backend)] == ["fan-7"]
        # Anything else is everyone's news.
        room.raise_hand("fan-7")
        assert offered["HandRaised"] == 201, offered
        assert all(isinstance(queued(s)[-1], sfu.HandRaised) for s in members.values())


async def test_a_member_stream_takes_only_its_own_membership_events_whatever_offers_them() -> None:
    stream = EventStream(member="bob")
    stream._put(sfu.ParticipantJoined("hall", "alice", "listener"))
    stream._put(sfu.ParticipantLeft("hall", "alice", "left"))
    stream._put(sfu.ParticipantJoined("hall", "bob", "listener"))
    stream._put(sfu.HandRaised("hall", "alice"))
    assert queued(stream) == [
        sfu.ParticipantJoined("hall", "bob", "listener"),
        sfu.HandRaised("hall", "alice"),
    ]


async def test_a_closed_or_dropped_member_stream_leaves_the_room_s_tables() -> None:
    async with sfu.Server(host="127.0.0.1") as server:
        room = server.room("hall")
        kept = room.events(member="alice")
        closed = room.events(member="bob")
        assert len(room._subscribers) == 2 and room._subscribers.members == 2
        closed.close()  # at once, not at the next event
        assert len(room._subscribers) == 1 and room._subscribers.members == 1
        dropped = room.events(member="carol")
        del dropped
        gc.collect()
        assert len(room._subscribers) == 1
        await room.add_listener(LISTENER, "carol")  # finds carol's set empty: gone
        assert room._subscribers.members == 1
        assert [type(e).__name__ for e in queued(kept)] == []
        await room.close()
        assert len(room._subscribers) == 0 and room._subscribers.members == 0
        assert type(queued(kept)[-1]).__name__ == "RoomClosed"


async def test_two_streams_of_one_member_both_get_its_events() -> None:
    async with sfu.Server(host="127.0.0.1") as server:
        room = server.room("hall")
        first, second = room.events(member="alice"), room.events(member="alice")
        await room.add_listener(LISTENER, "alice")
        assert [e.identity for e in queued(first)] == ["alice"]
        assert [e.identity for e in queued(second)] == ["alice"]
        first.close()
        await room.get("alice").close("left")  # type: ignore[union-attr]
        assert [type(e).__name__ for e in queued(second)][-1] == "ParticipantLeft"


def test_member_must_be_an_identity() -> None:
    with pytest.raises(sfu.InvalidSetting, match="member must be an identity"):
        EventStream(member=7)  # type: ignore[arg-type]
