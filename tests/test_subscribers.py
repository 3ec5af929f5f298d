"""Which of a room's event streams an event is offered to (sfu.events.Subscribers).

A stream made with ``member=`` takes, of the joins, connections, leaves,
removals and hands, only its own member's; the room must not even offer it the
others', or a crowd whose every member holds such a stream (the signaling
does) makes each join cost one call per member.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import gc
import weakref
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
        # A hand too is offered to its own member's stream alone...
        room.raise_hand("fan-7")
        assert offered["HandRaised"] == 2, offered
        assert isinstance(queued(members["fan-7"])[-1], sfu.HandRaised)
        # ...and the hands list, as anything else, is everyone's news.
        room._moderation.flush_hands()
        assert offered["HandsChanged"] == 201, offered
        assert all(isinstance(queued(s)[-1], sfu.HandsChanged) for s in members.values())


async def test_a_member_stream_takes_only_its_own_member_events_whatever_offers_them() -> None:
    stream = EventStream(member="bob")
    stream._put(sfu.ParticipantJoined("hall", "alice", "listener"))
    stream._put(sfu.ParticipantLeft("hall", "alice", "left"))
    stream._put(sfu.ParticipantJoined("hall", "bob", "listener"))
    stream._put(sfu.HandRaised("hall", "alice"))
    stream._put(sfu.HandRaised("hall", "bob"))
    stream._put(sfu.HandsChanged("hall", ("alice", "bob"), 2))
    assert queued(stream) == [
        sfu.ParticipantJoined("hall", "bob", "listener"),
        sfu.HandRaised("hall", "bob"),
        sfu.HandsChanged("hall", ("alice", "bob"), 2),
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
        assert len(room._subscribers) == 1 and room._subscribers.members == 1
        await room.add_listener(LISTENER, "carol")  # offered to nobody but the unscoped
        assert room._subscribers.members == 1
        assert [type(e).__name__ for e in queued(kept)] == []
        await room.close()
        assert len(room._subscribers) == 0 and room._subscribers.members == 0
        assert type(queued(kept)[-1]).__name__ == "RoomClosed"


async def test_member_streams_let_go_leave_nothing_behind_for_members_who_left() -> None:
    """A backend watching each member with its own stream, left with ``break``
    once the member has gone (no close()): the member gets no more events, so
    the room must not wait for one to forget its entry (a room that lasts
    weeks would keep one for every identity it ever watched)."""

    async def watch(room: sfu.Room, identity: str) -> None:
        async for event in room.events(member=identity):
            if isinstance(event, sfu.ParticipantLeft):
                break

    async with sfu.Server(host="127.0.0.1") as server:
        room = server.room("hall")
        for round_ in range(20):
            identity = f"passer-by-{round_}"
            watcher = asyncio.ensure_future(watch(room, identity))
            await asyncio.sleep(0)  # subscribed
            member = await room.add_listener(LISTENER, identity)
            await member.close("left")
            await asyncio.wait_for(watcher, 5)
        stray = room.events(member="never-came")
        del stray
        gc.collect()
        assert len(room._subscribers) == 0
        assert room._subscribers.members == 0


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


async def test_consumers_waiting_on_one_stream_each_wake_and_one_timing_out_leaves_the_others() -> (
    None
):
    """Each waiting consumer has a wake-up of its own, made only while it waits:
    one that times out (cancelled) takes nothing from another still waiting;
    close() wakes every one; a stream nobody waits on holds no wake-up."""
    stream = EventStream()
    first = asyncio.create_task(stream.next())
    second = asyncio.create_task(stream.next())
    impatient = asyncio.create_task(stream.next(timeout=0.01))
    await asyncio.sleep(0.05)
    with pytest.raises(asyncio.TimeoutError):
        await impatient
    assert not first.done() and not second.done()
    event = sfu.HandRaised("hall", "ann")
    stream._put(event)  # one event, two consumers: one takes it, the other waits on
    await asyncio.wait((first, second), return_when=asyncio.FIRST_COMPLETED)
    await asyncio.sleep(0.01)
    taken, waiting = (first, second) if first.done() else (second, first)
    assert taken.result() is event
    assert not waiting.done()
    stream.close()  # wakes the one still waiting: the stream has ended
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(waiting, 1)
    assert stream._waiters is None


async def test_a_stream_at_rest_holds_no_wake_up() -> None:
    stream = EventStream()
    waiting = asyncio.create_task(stream.next())
    await asyncio.sleep(0)
    assert stream._waiters is not None and len(stream._waiters) == 1
    stream._put(sfu.HandRaised("hall", "ann"))
    assert isinstance(await waiting, sfu.HandRaised)
    assert stream._waiters is None


async def test_a_consumer_nobody_keeps_outlives_another_on_its_stream_giving_up() -> None:
    """A stream is held while anyone waits on it (the room holds it weakly,
    asyncio its tasks too): one consumer timing out must not let the other,
    a task nobody keeps a reference to, be collected with the stream."""
    async with sfu.Server() as server:
        room = server.room("hall")
        got: list[sfu.RoomEvent] = []

        async def consume(stream: EventStream) -> None:
            async for event in stream:
                got.append(event)

        async def give_up(stream: EventStream) -> None:
            with contextlib.suppress(asyncio.TimeoutError):
                await stream.next(timeout=0.05)

        stream = room.events()
        consumer = weakref.ref(asyncio.create_task(consume(stream)))  # kept by nobody
        await asyncio.create_task(give_up(stream))
        del stream
        gc.collect()
        assert consumer() is not None, "the waiting consumer was collected"
        await room.close()
        await asyncio.sleep(0.05)
        assert [type(event) for event in got] == [sfu.events.RoomClosed]


async def test_an_accept_that_raises_closes_its_stream_and_the_room_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The subscriber's filter runs inside the room's changes: raising out of
    it must not leave a join counted but failed, or a close half done."""
    async with sfu.Server() as server:
        room = server.room("hall", max_listeners=1)

        def picky(event: sfu.RoomEvent) -> bool:
            if isinstance(event, (sfu.ParticipantJoined, sfu.ParticipantLeft)):
                raise RuntimeError("the subscriber's bug")
            return True

        faulty = room.events(accept=picky)
        fine = room.events()
        bob = await room.add_listener(LISTENER, identity="bob")  # does not raise
        assert faulty.closed and not fine.closed
        assert "accept raised" in caplog.text
        assert isinstance(await fine.next(1), sfu.ParticipantJoined)
        await bob.close("left")
        await room.add_listener(LISTENER, identity="carol")  # bob's seat is free again

        faulty = room.events(accept=picky)
        await asyncio.wait_for(room.close(), 5)  # carol leaves: picky raises again
        assert room.closed and not room.participants
        await asyncio.wait_for(room.close(), 1)  # a second close does not wait for ever
    assert faulty.closed
