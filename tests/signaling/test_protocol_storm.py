"""A session's event queue in a join storm, and commands on a session that ended.

Bare :class:`SignalingSession` objects (no WebSocket), as ``bare_session`` in
test_protocol.py: the code path is the protocol's own, at a modest CPU cost.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

import sfu
from sfu import auth
from sfu.signaling import messages, protocol

from ..clients import wait_for
from ..test_room_lifecycle import offer
from .test_protocol import SECRET, bare_session

LISTENER_OFFER = offer("recvonly")
SPEAKER_OFFER = offer("sendrecv")
#: A small event queue per subscriber (1,024 by default), so that a storm of a
#: few dozen joins overflows it as a storm of a thousand does the real one.
QUEUE = 8


def small_queues(room: sfu.Room, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every subscription to ``room`` (the sessions' too) holds at most QUEUE events."""
    events = room.events

    def small(maxsize: int = QUEUE, **options: Any) -> sfu.EventStream:
        return events(QUEUE, **options)

    monkeypatch.setattr(room, "events", small)


def join_message(identity: str, role: str = "listener", **extra: Any) -> str:
    token = auth.issue_token(SECRET, room="hall", identity=identity, role=role)  # type: ignore[arg-type]
    sdp = LISTENER_OFFER if role == "listener" else SPEAKER_OFFER
    return json.dumps({"type": "join", "room": "hall", "token": token, "offer": sdp, **extra})


async def test_a_join_storm_does_not_end_new_members_as_fallen_behind(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each session subscribes before its join waits its turn; the joins ahead of it
    fill its queue before its relay reads. The `joined` snapshot holds all that:
    the backlog must not count as events lost, and what follows must still come."""
    async with sfu.Server(token_secret=SECRET, host="127.0.0.1") as server:
        room = server.room("hall", roster_interval=0.05)
        small_queues(room, monkeypatch)
        count = 5 * QUEUE
        sessions = [bare_session(server) for _ in range(count)]
        await asyncio.gather(
            *(s.handle(join_message(f"fan-{i}")) for i, (s, _, _) in enumerate(sessions))
        )
        assert server.admission.per_turn < count - QUEUE, "the storm overflows the late queues"
        await asyncio.sleep(0.2)
        for i, (_, sent, closed) in enumerate(sessions):
            assert sent and sent[0]["type"] == "joined", (i, sent[:1])
            assert closed == [] and not any(m["type"] == "error" for m in sent), (i, sent)
        assert len(room.participants) == count
        # Events after the snapshots still reach everyone, once.
        for _, sent, _ in sessions:
            sent.clear()
        room.raise_hand("fan-0")
        await asyncio.sleep(0.1)
        for i, (_, sent, closed) in enumerate(sessions):
            assert [m for m in sent if m["type"] == "hands"] == [
                {"type": "hands", "hands": ["fan-0"], "total": 1}
            ], (i, sent)
            assert closed == []
        for session, _, _ in sessions:
            await session.close()


async def test_events_between_the_snapshot_and_the_relay_are_kept_in_a_storm(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The backlog forgotten at the `joined` snapshot is only what came before it:
    the own join's renegotiation request (a promotion that outlived a reconnect)
    and events while the reply is written still go out after `joined`."""
    from sfu.signaling.protocol import SignalingSession

    async with sfu.Server(token_secret=SECRET, host="127.0.0.1") as server:
        room = server.room("hall", roster_interval=0.05)
        small_queues(room, monkeypatch)
        carol = await room.add_listener(LISTENER_OFFER, "carol")
        await room.promote("carol", role="speaker")  # stands when carol comes back
        await carol.close("network lost")
        await room.add_listener(LISTENER_OFFER, "host")

        sent: list[dict[str, Any]] = []
        closed: list[int] = []
        writing, release = asyncio.Event(), asyncio.Event()

        async def send(text: str) -> None:
            message = json.loads(text)
            if message["type"] == "joined":
                writing.set()
                await release.wait()  # a large reply, written slowly
            sent.append(message)

        async def close(code: int, reason: str) -> None:
            closed.append(code)

        session = SignalingSession(server, send, close)
        await asyncio.sleep(0.01)  # the turns above are over
        server.admission._used = server.admission.per_turn  # a crowd: this turn is spent
        crowd = [room.add_listener(LISTENER_OFFER, f"fan-{i}") for i in range(3 * QUEUE)]
        admitted = asyncio.gather(*crowd)
        joining = asyncio.ensure_future(session.handle(join_message("carol", id=1)))
        await asyncio.sleep(0)
        assert len(server.admission) == 3 * QUEUE + 1, "carol waits behind the crowd"
        await admitted  # each one's ParticipantJoined is in carol's queue, and more
        await asyncio.wait_for(writing.wait(), 5)  # carol is in; her reply is being written
        room.raise_hand("host")  # after the snapshot, before the relay reads
        release.set()
        await joining
        await asyncio.sleep(0.2)
        assert sent[0]["type"] == "joined" and sent[0]["role"] == "speaker", sent[:1]
        assert closed == [] and not any(m["type"] == "error" for m in sent), sent
        renegotiate = [m for m in sent if m["type"] == "role_changed"]
        assert [(m["identity"], m["renegotiate"]) for m in renegotiate] == [("carol", True)]
        assert {"type": "hands", "hands": ["host"], "total": 1} in sent
        await session.close()


async def test_a_stream_forgets_only_what_came_before_the_newest_mark() -> None:
    stream = sfu.EventStream(maxsize=4)
    events = [sfu.ParticipantJoined("hall", name, "listener") for name in "abacd"]
    for event in events:
        stream._put(event)
    assert stream.dropped == 1
    assert not stream._forget_before(lambda e: isinstance(e, sfu.HandRaised))
    assert stream.dropped == 1 and len(stream._events) == 4, "no mark: nothing forgotten"
    assert stream._forget_before(lambda e: getattr(e, "identity", None) == "a")
    assert stream.dropped == 0
    assert [await stream.next(0), await stream.next(0)] == events[2:4]  # the newest "a" on
    stream._put(events[4])
    assert await stream.next(0) == events[4]


# -- what a storm costs: frames built once, joins offered to their own streams ---------


def count_calls(monkeypatch: pytest.MonkeyPatch, owner: Any, name: str) -> collections.Counter[str]:
    """Calls of ``owner.name`` (a function or method), by the type of their event
    or participant argument (the one with a ``room`` attribute)."""
    calls: collections.Counter[str] = collections.Counter()
    original = getattr(owner, name)

    def counted(*args: Any, **kwargs: Any) -> Any:
        subject = next((a for a in args if hasattr(a, "room")), None)
        calls[type(subject).__name__] += 1
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, counted)
    return calls


async def test_a_join_storm_costs_each_member_a_few_frames_not_one_per_member(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every member's relay holds a stream: offered every join, built its own
    roster batch and encoded every roster entry for every joiner, a storm of
    N cost N² of each (~5 ms of CPU per join at N = 1,000)."""
    offered = count_calls(monkeypatch, sfu.EventStream, "_put")
    built = count_calls(monkeypatch, messages, "event_message")
    entries = count_calls(monkeypatch, messages, "_roster_entry")
    async with sfu.Server(token_secret=SECRET, host="127.0.0.1") as server:
        room = server.room("hall", roster_interval=0.05)
        count = 80
        sessions = [bare_session(server) for _ in range(count)]
        await asyncio.gather(
            *(s.handle(join_message(f"fan-{i}")) for i, (s, _, _) in enumerate(sessions))
        )
        await asyncio.sleep(0.3)  # the roster batches
        batches = [m for m in sessions[0][1] if m["type"] == "roster"]
        assert batches, "the first member heard of the others"
        for _, sent, closed in sessions:
            assert sent[0]["type"] == "joined" and closed == []
        # Each join to its own member's stream and to the one stream that
        # keeps the joined rosters (RoomFrames), each roster batch to everyone;
        # not every join to everyone.
        assert offered["ParticipantJoined"] <= 2 * count, offered
        batch_events = built["RosterChanged"]
        assert 1 <= batch_events <= 10, built  # once per batch, not once per member
        assert offered["RosterChanged"] <= batch_events * (count + 1)
        # Each member's roster entry encoded once, whoever joined after it.
        assert sum(entries.values()) == count, entries
        # The joined rosters are the room as it was: each lists itself and those before.
        rosters = [[e["identity"] for e in sent[0]["roster"]] for _, sent, _ in sessions]
        assert sorted(len(r) for r in rosters) == list(range(1, count + 1))
        for i, roster in enumerate(rosters):
            assert roster[-1] == f"fan-{i}" and len(set(roster)) == len(roster)
        room.raise_hand("fan-3")
        await asyncio.sleep(0.3)  # the hands batch
        # The hand to its own member's stream alone; the list built once for all.
        assert built["HandRaised"] == 1 and built["HandsChanged"] == 1, built
        for _, sent, _ in sessions:
            hands = [m for m in sent if m["type"] == "hands"]
            assert hands == [{"type": "hands", "hands": ["fan-3"], "total": 1}], hands
        for session, _, _ in sessions:
            await session.close()


async def test_the_joined_roster_follows_every_change_of_a_member() -> None:
    """The roster entries are kept between joins: each joiner's must still be
    the room as it is (role, mute, hand, who left), as built afresh."""
    async with sfu.Server(token_secret=SECRET, host="127.0.0.1") as server:
        room = server.room("hall")
        alice = await room.add_speaker(SPEAKER_OFFER, "alice")
        await room.add_listener(LISTENER_OFFER, "bob")
        carol = await room.add_listener(LISTENER_OFFER, "carol")
        changes = [
            lambda: room.mute("alice"),
            lambda: _now(room.raise_hand, "bob"),
            lambda: room.promote("bob"),
            lambda: room.unmute("alice"),
            lambda: _now(room.raise_hand, "carol"),
            lambda: _now(room.lower_hand, "carol"),
            lambda: room.demote("bob"),
            lambda: carol.close("left"),
            lambda: _now(alice.set_self_muted, True),
        ]
        for number, change in enumerate([lambda: _now(lambda: None), *changes]):
            await change()
            session, sent, _ = bare_session(server)
            await session.handle(join_message(f"joiner-{number}"))
            joiner = room.get(f"joiner-{number}")
            assert joiner is not None
            fresh = messages.joined_message(room, joiner)["roster"]
            assert sent[0]["roster"] == fresh, (number, sent[0]["roster"], fresh)
            await session.close()
        assert [e["identity"] for e in fresh] == ["alice", "bob", "joiner-9"]
        assert fresh[0]["muted"] is True and fresh[0]["moderator_muted"] is False
        assert fresh[1]["role"] == "listener" and fresh[1]["hand"] is False

        # Joins only (entries added, none checked), then a member who joins and
        # leaves in between, one who comes back (to the end), and a change
        # made within the same turn as the join after it.
        sessions = []

        async def join_and_compare(identity: str) -> list[dict[str, Any]]:
            session, sent, _ = bare_session(server)
            sessions.append(session)
            await session.handle(join_message(identity))
            member = room.get(identity)
            assert member is not None
            roster: list[dict[str, Any]] = sent[0]["roster"]
            assert roster == messages.joined_message(room, member)["roster"], identity
            return roster

        for name in ("dan", "erin", "fay"):
            await join_and_compare(name)
        gone = await room.add_listener(LISTENER_OFFER, "gus")
        await gone.close("left")
        assert "gus" not in [e["identity"] for e in await join_and_compare("hal")]
        await room.get("dan").close("left")  # type: ignore[union-attr]
        roster = await join_and_compare("dan")
        assert [e["identity"] for e in roster][-2:] == ["hal", "dan"]
        room.raise_hand("erin")
        assert [e["hand"] for e in await join_and_compare("ivy") if e["identity"] == "erin"] == [
            True
        ]
        for session in sessions:
            await session.close()


def count_token_decodes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The tokens PyJWT decodes (the whole check) from now on, in order."""
    decoded: list[str] = []
    decode = auth.jwt.decode

    def counted(token: str, *args: Any, **kwargs: Any) -> Any:
        decoded.append(token)
        return decode(token, *args, **kwargs)

    monkeypatch.setattr(auth.jwt, "decode", counted)
    return decoded


async def test_a_join_s_token_is_checked_in_its_admission_turn_in_a_room_that_exists(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A crowd's join frames arrive together and are read in one loop
    iteration: the token's check (~80 µs) waits for the join's turn, a few per
    iteration, instead of running for every frame then. A bad token is still
    refused, and nothing of it stays."""
    decoded = count_token_decodes(monkeypatch)
    async with sfu.Server(token_secret=SECRET, host="127.0.0.1") as server:
        room = server.room("hall")
        await asyncio.sleep(0.01)
        server.admission._used = server.admission.per_turn  # a crowd: this turn is spent
        crowd = asyncio.gather(
            *(room.add_listener(LISTENER_OFFER, f"fan-{i}") for i in range(3 * QUEUE))
        )
        session, sent, _ = bare_session(server)
        frame = join_message("carol")
        joining = asyncio.ensure_future(session.handle(frame))
        await asyncio.sleep(0)
        assert len(server.admission) == 3 * QUEUE + 1, "carol waits behind the crowd"
        assert decoded == [], "her token is not checked before her turn"
        await crowd
        await joining
        assert sent[0]["type"] == "joined" and len(decoded) == 1
        # A token the key did not make is refused at once, before any turn:
        # it neither waits with the real joins nor counts as a join under way
        # (which keeps an empty room open); no member, no stream left behind.
        streams = len(room._subscribers)
        await asyncio.sleep(0.01)
        server.admission._used = server.admission.per_turn  # a crowd again
        late = asyncio.ensure_future(room.add_listener(LISTENER_OFFER, "late"))
        await asyncio.sleep(0)
        assert len(server.admission) == 1, "late waits for the next turn"
        forged, forged_sent, _ = bare_session(server)
        token = auth.issue_token("o" * 40, room="hall", identity="mallory")  # another key
        handled = asyncio.ensure_future(
            forged.handle(
                json.dumps(
                    {"type": "join", "room": "hall", "token": token, "offer": LISTENER_OFFER}
                )
            )
        )
        await asyncio.sleep(0)
        assert handled.done(), "refused without waiting a turn (behind late)"
        assert forged_sent[0]["type"] == "error" and forged_sent[0]["code"] == "not_allowed"
        assert "signature" in forged_sent[0]["message"]
        assert "mallory" not in room.participants and len(room._subscribers) == streams
        await late
        await session.close()


async def test_an_event_every_member_is_told_of_is_sent_a_few_relays_per_turn(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each member's relay wakes for a roster batch or a hand at once; sent
    all in one loop iteration, a crowd's would hold the loop (media, joins)."""
    monkeypatch.setattr(protocol, "RELAYS_PER_TURN", 8)
    async with sfu.Server(token_secret=SECRET, host="127.0.0.1") as server:
        room = server.room("hall", roster_interval=0.05)
        sessions = [bare_session(server) for _ in range(40)]
        for i, (session, _, _) in enumerate(sessions):
            await session.handle(join_message(f"fan-{i}"))
        await asyncio.sleep(0.2)  # joined replies and roster batches out

        def told() -> int:
            return sum(1 for _, sent, _ in sessions if sent[-1].get("type") == "hands")

        room.raise_hand("fan-3")
        room._moderation.flush_hands()  # the batch now, not at the interval's end
        turns = 0
        while told() < len(sessions):
            await asyncio.sleep(0)  # one loop iteration
            turns += 1
            assert told() <= 8 * turns, (turns, told())
            assert turns < 100
        assert turns >= len(sessions) // 8
        for session, _, _ in sessions:
            await session.close()


@pytest.mark.parametrize(("joins_per_turn", "frames_per_turn"), [(4, 8), (12, 12)])
async def test_a_crowd_s_frames_begin_a_few_per_turn(
    monkeypatch: pytest.MonkeyPatch, joins_per_turn: int, frames_per_turn: int
) -> None:
    """A crowd's join frames are read together; each costs ~50 µs before its
    join waits for its admission turn (its JSON, its token's signature, its
    event stream). Begun all in one loop iteration, a storm's held the loop
    for tens of milliseconds: at most FRAMES_PER_TURN begin per iteration,
    first come first served, and every join is still made. A server that
    admits more joins per iteration than that begins as many frames: the
    admission paces the crowd, not the frames."""
    monkeypatch.setattr(protocol, "FRAMES_PER_TURN", 8)
    begun: list[int] = []  # the loop iteration each frame's handling began in
    texts: list[str] = []
    iteration = 0
    parse = protocol.parse_command

    def counted(text: str) -> Any:
        begun.append(iteration)
        texts.append(text)
        return parse(text)

    monkeypatch.setattr(protocol, "parse_command", counted)
    async with sfu.Server(
        token_secret=SECRET, host="127.0.0.1", joins_per_turn=joins_per_turn
    ) as server:
        room = server.room("hall")
        sessions = [bare_session(server) for _ in range(40)]
        frames = [join_message(f"fan-{i}") for i in range(40)]
        handled = [
            asyncio.ensure_future(session.handle(frame))
            for (session, _, _), frame in zip(sessions, frames)
        ]
        while not all(h.done() for h in handled):
            await asyncio.sleep(0)  # one loop iteration
            iteration += 1
            assert iteration < 1000
        per_iteration = collections.Counter(begun)
        assert len(begun) == 40, begun
        assert max(per_iteration.values()) == frames_per_turn, per_iteration
        assert len(per_iteration) >= 40 // frames_per_turn
        assert texts == frames  # first come, first served
        assert len(room.participants) == 40
        assert all(sent[0]["type"] == "joined" for _, sent, _ in sessions)
        for session, _, _ in sessions:
            await session.close()


async def test_a_join_frame_whose_connection_closes_while_it_waits_to_begin_makes_no_member(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A crowd's frames wait for their turn to begin; a connection that closes
    meanwhile makes no member, and its refusal is logged as a join the
    connection's closing ended (not as a command of a session that ended)."""
    caplog.set_level(logging.INFO, logger="sfu.signaling")
    async with sfu.Server(token_secret=SECRET, host="127.0.0.1") as server:
        room = server.room("hall")
        await asyncio.sleep(0.01)
        intake = protocol._frame_turn(server)
        intake._used = intake.per_turn  # a crowd: this turn's frames have begun
        session, sent, _ = bare_session(server)
        joining = asyncio.ensure_future(session.handle(join_message("carol")))
        await asyncio.sleep(0)
        assert len(intake) == 1, "carol's frame waits for the next turn"
        await session.close()
        await asyncio.wait_for(joining, 2)
        assert "carol" not in room.participants
        refusals = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
        assert (
            len(refusals) == 1
            and "not_joined: the connection closed during the join" in (refusals[0])
        ), refusals


async def _now(function: Any, *args: Any) -> None:
    function(*args)


# -- a session that ended runs no more commands -----------------------------------------


@pytest.mark.parametrize(
    ("role", "command"),
    [
        ("listener", {"type": "lower_hand"}),
        ("listener", {"type": "raise_hand"}),
        ("listener", {"type": "mute", "muted": True}),
        ("moderator", {"type": "lower_hand", "identity": "carl"}),
        ("moderator", {"type": "demote", "identity": "bob"}),
        ("moderator", {"type": "promote", "identity": "carl", "role": "moderator"}),
        ("moderator", {"type": "mute_participant", "identity": "bob", "muted": True}),
        ("moderator", {"type": "remove", "identity": "bob"}),
    ],
)
async def test_a_closed_session_does_not_act_for_a_rejoined_namesake(
    role: str, command: dict[str, Any]
) -> None:
    """A late frame on an old connection must not act with the rights of the
    member of the same name who joined again on a new one."""
    async with sfu.Server(token_secret=SECRET, host="127.0.0.1") as server:
        room = server.room("hall")
        old, old_sent, _ = bare_session(server)
        await old.handle(join_message("alice", role))
        await old.close()  # its WebSocket went away
        new, _, _ = bare_session(server)
        await new.handle(join_message("alice", role))
        bob = await room.add_speaker(SPEAKER_OFFER, "bob")
        carl = await room.add_listener(LISTENER_OFFER, "carl")
        room.raise_hand("carl")
        if role == "listener":
            await new.handle(json.dumps({"type": "raise_hand"}))
        members = (new.participant, bob, carl)

        def state() -> Any:
            return room.hands, [(m.role, m.muted, m.closed) for m in members]

        before = state()
        assert len(before[0]) == (2 if role == "listener" else 1)
        old_sent.clear()
        await old.handle(json.dumps({**command, "id": 7}))
        await asyncio.sleep(0.05)
        assert state() == before
        assert old_sent == [], "a closed session sends nothing"
        await new.close()


@pytest.mark.parametrize(
    "command",
    [
        {"type": "lower_hand", "identity": "carl"},
        {"type": "promote", "identity": "carl"},
        {"type": "promote", "identity": "alice", "role": "moderator"},
        {"type": "demote", "identity": "bob"},
        {"type": "mute_participant", "identity": "bob", "muted": True},
        {"type": "mute_participant", "identity": "dora", "muted": False},
        {"type": "remove", "identity": "bob"},
        {"type": "remove", "identity": "bob", "ban": True},
    ],
    ids=lambda command: "-".join(str(value) for value in command.values()),
)
async def test_a_member_without_the_moderate_grant_moderates_nobody(
    command: dict[str, Any],
) -> None:
    """Every moderation command of a speaker (no ``moderate`` grant) is refused
    ``not_allowed`` and changes nothing: the server decides who may, whatever
    a client sends."""
    async with sfu.Server(token_secret=SECRET, host="127.0.0.1") as server:
        room = server.room("hall")
        session, sent, _ = bare_session(server)
        await session.handle(join_message("alice", "speaker"))
        bob = await room.add_speaker(SPEAKER_OFFER, "bob")
        carl = await room.add_listener(LISTENER_OFFER, "carl")
        dora = await room.add_speaker(SPEAKER_OFFER, "dora")
        await room.mute("dora")
        room.raise_hand("carl")
        members = (session.participant, bob, carl, dora)

        def state() -> Any:
            return (
                room.hands,
                [(m.role, m.grants, m.muted, m.closed) for m in members],
                room.is_banned("bob"),
            )

        before = state()
        sent.clear()
        await session.handle(json.dumps({**command, "id": 7}))
        [reply] = [message for message in sent if message.get("id") == 7]
        assert reply["type"] == "error" and reply["code"] == "not_allowed", reply
        assert state() == before
        await session.close()


async def test_a_session_whose_member_left_refuses_commands() -> None:
    """Between the member's end and the relay closing the connection, a command
    gets `session_ended` and does nothing."""
    async with sfu.Server(token_secret=SECRET, host="127.0.0.1") as server:
        room = server.room("hall")
        session, sent, _ = bare_session(server)
        await session.handle(join_message("alice", "moderator"))
        await room.add_listener(LISTENER_OFFER, "bob")
        room.raise_hand("bob")
        await session.participant.close("consent expired")  # the relay has not run yet
        for number, kind in enumerate(("lower_hand", "raise_hand", "leave", "join")):
            sent.clear()
            await session.handle(json.dumps({"type": kind, "identity": "bob", "id": number}))
            assert sent[:1] == [
                {
                    "type": "error",
                    "code": "session_ended",
                    "message": sent[0]["message"],
                    "id": number,
                }
            ], (kind, sent)
        assert room.hands == ["bob"]
        sent.clear()
        await session.handle(json.dumps({"type": "ping", "id": "p"}))
        assert sent[-1] == {"type": "pong", "id": "p"}
        await session.close()


async def test_a_member_s_signaling_keeps_few_objects_for_the_cyclic_gc() -> None:
    """A full cyclic-GC pass walks every tracked object, and holds the loop for
    as long (~60–90 ms at 1,000 WebSocket members): a member's signaling state
    must not add objects it does not need, such as a table of its own bound
    methods (14 objects and a reference cycle per member) or a WeakSet of one
    stream (7), or an asyncio.Event to wake its relay (3, ~1 KB, waiting or
    not). The protocol's and the room's share was 62 objects per member; it
    is ~40 (aiohttp's request and WebSocket come on top)."""
    import gc

    async with sfu.Server(token_secret=SECRET, host="127.0.0.1") as server:
        server.room("hall", roster_interval=0.02)
        members = 60
        frames = [join_message(f"fan-{i}") for i in range(members)]

        async def send(text: str) -> None:  # one for all: not the server's objects
            pass

        async def close(code: int, reason: str) -> None:
            pass

        # A few members first: what the first join makes once (caches, the
        # room's shared state) is not any member's.
        warm = [protocol.SignalingSession(server, send, close) for _ in range(5)]
        await asyncio.gather(*(s.handle(join_message(f"warm-{i}")) for i, s in enumerate(warm)))
        await asyncio.sleep(0.1)
        gc.collect()
        before = len(gc.get_objects())
        sessions = [protocol.SignalingSession(server, send, close) for _ in range(members)]
        await asyncio.gather(*(s.handle(f) for s, f in zip(sessions, frames)))
        await asyncio.sleep(0.1)
        gc.collect()
        per_member = (len(gc.get_objects()) - before) / members
        assert per_member < 42, per_member
        kept = [v for v in vars(sessions[0]).values() if getattr(v, "__self__", 0) is sessions[0]]
        assert kept == [], kept
        for session in sessions + warm:
            await session.close()


async def test_a_served_member_at_rest_keeps_no_task_but_its_connections() -> None:
    """At rest (no frame being handled) a member's serving loop waits on its
    socket itself: no read-ahead task and coroutine per member for the
    cyclic GC to walk; the one task is the connection's own (here, the
    serving task the test makes, as aiohttp's handler task is), and the
    member's event relay. Nor does it hold its last frame (a join's offer
    and token, ~2 KB a member) or the finished task that handled it."""
    import gc

    async with sfu.Server(token_secret=SECRET, host="127.0.0.1") as server:
        server.room("hall", roster_interval=0.02)
        members = 60
        loop = asyncio.get_running_loop()
        hang_up = loop.create_future()

        def frames(first: str) -> protocol.Receive:
            pending = [first]

            async def receive() -> str | bytes | None:
                if pending:
                    return pending.pop()
                await asyncio.shield(hang_up)  # an idle socket until the test hangs up
                return None

            return receive

        gc.collect()
        tasks_before = len(asyncio.all_tasks())
        sessions = [bare_session(server)[0] for _ in range(members)]
        texts = [join_message(f"fan-{i}") for i in range(members)]
        serving = [loop.create_task(s.serve(frames(t))) for s, t in zip(sessions, texts)]
        await wait_for(lambda: len(server.rooms["hall"].participants) == members, 10, "joined")
        await asyncio.sleep(0.1)
        # Per member: the serving task and its event relay, nothing else.
        assert len(asyncio.all_tasks()) - tasks_before == 2 * members
        assert all(s._handling is None for s in sessions)
        gc.collect()
        assert [r for r in gc.get_referrers(texts[0]) if r is not texts] == []
        hang_up.set_result(None)
        await asyncio.wait(serving, timeout=10)
        assert all(task.done() and task.exception() is None for task in serving)
        assert not server.rooms["hall"].participants


async def test_a_receive_that_raises_is_a_closed_socket() -> None:
    """A framework may raise instead of returning "closed" (a reset
    connection): the session ends as for a close, the member with it."""
    async with sfu.Server(token_secret=SECRET, host="127.0.0.1") as server:
        server.room("hall")
        pending = [join_message("fan")]
        reset = asyncio.get_running_loop().create_future()

        async def receive() -> str | bytes | None:
            if pending:
                return pending.pop()
            await reset
            raise ConnectionResetError("reset by peer")

        session, _, _ = bare_session(server)
        serving = asyncio.get_running_loop().create_task(session.serve(receive))
        await wait_for(lambda: "fan" in server.rooms["hall"].participants, 10, "joined")
        reset.set_result(None)
        await asyncio.wait_for(serving, 5)  # returns, does not raise
        assert "fan" not in server.rooms["hall"].participants


def quiet_after(
    server: sfu.Server, frames: list[str], send: Callable[[str], Awaitable[None]]
) -> tuple[protocol.SignalingSession, Callable[[], Awaitable[str | bytes | None]], list[int]]:
    """A session whose client sends ``frames``, then nothing, and does not hang
    up: its ``receive`` ends only when the server closes (codes listed)."""
    hang_up = asyncio.get_running_loop().create_future()
    pending = list(reversed(frames))
    codes: list[int] = []

    async def receive() -> str | bytes | None:
        if pending:
            return pending.pop()
        await hang_up
        return None

    async def close(code: int, reason: str) -> None:
        codes.append(code)
        if not hang_up.done():
            hang_up.set_result(None)  # closing the socket ends receive()

    return protocol.SignalingSession(server, send, close), receive, codes


async def test_a_frame_whose_handling_fails_ends_the_session_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A framework's send raising what the session does not expect (not a
    ConnectionError) while a frame is answered: the session ends at once,
    with 1011 and the error logged, not left in a task nobody awaits while
    the connection goes on."""
    async with sfu.Server(token_secret=SECRET, host="127.0.0.1") as server:
        server.room("hall")

        async def send(text: str) -> None:
            raise ValueError("the framework failed")

        session, receive, codes = quiet_after(server, [json.dumps({"type": "ping", "id": 1})], send)
        await asyncio.wait_for(session.serve(receive), 5)
        assert codes[0] == protocol.CLOSE_INTERNAL_ERROR
        assert any(
            "handling a frame failed" in r.getMessage() and r.exc_info for r in caplog.records
        )


async def test_a_relay_whose_send_fails_ends_the_session_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The same failure while a room event is relayed (a moderator's mute
    here): the relay does not die silently, leaving a member in the room
    whose client is told nothing more; the session ends with 1011, logged,
    and the member leaves."""
    async with sfu.Server(token_secret=SECRET, host="127.0.0.1") as server:
        room = server.room("hall")
        token = auth.issue_token(SECRET, room="hall", identity="fan", role="speaker")
        join = {
            "type": "join",
            "id": 1,
            "room": "hall",
            "token": token,
            "offer": offer("sendrecv", "recvonly"),
        }

        async def send(text: str) -> None:
            if json.loads(text)["type"] != "joined":
                raise ValueError("the framework failed")

        session, receive, codes = quiet_after(server, [json.dumps(join)], send)
        serving = asyncio.ensure_future(session.serve(receive))
        await wait_for(lambda: session._relay is not None, 10, "joined, relaying")
        await room.mute("fan")  # an event the relay sends: its send raises
        await asyncio.wait_for(serving, 5)
        assert codes == [protocol.CLOSE_INTERNAL_ERROR]
        assert room.get("fan") is None
        assert any(
            "relaying the room's events failed" in r.getMessage() and r.exc_info
            for r in caplog.records
        )


async def test_serve_cancelled_again_while_it_waits_for_a_frame_still_ends_the_member() -> None:
    """serve() cancelled while a frame is answered cancels that answer and
    waits for it to end; a second cancellation landing meanwhile (a task
    group and a timeout around serve(), say) skipped the close: the member
    stayed in the room and its event relay waited for ever."""
    async with sfu.Server(token_secret=SECRET, host="127.0.0.1") as server:
        room = server.room("hall")
        answering, unwinding, unwound = asyncio.Event(), asyncio.Event(), asyncio.Event()

        async def send(text: str) -> None:
            if json.loads(text)["type"] != "pong":
                return
            answering.set()
            try:
                await asyncio.Event().wait()  # the client reads nothing more
            except asyncio.CancelledError:
                unwinding.set()
                await unwound.wait()  # the framework takes a moment to give the write up
                raise

        frames = [join_message("fan"), json.dumps({"type": "ping"})]
        session, receive, codes = quiet_after(server, frames, send)
        serving = asyncio.ensure_future(session.serve(receive))
        await asyncio.wait_for(answering.wait(), 5)
        relay = session._relay
        assert relay is not None and room.get("fan") is not None
        serving.cancel()
        await asyncio.wait_for(unwinding.wait(), 5)  # serve() waits for the answer to end
        serving.cancel()
        await asyncio.sleep(0)
        unwound.set()
        with pytest.raises(asyncio.CancelledError):
            await serving
        assert room.get("fan") is None, "the member outlived its connection"
        assert relay.done()
        assert codes == [1001]


async def test_a_crowd_raising_hands_costs_each_member_one_list_per_interval(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Sent per hand, every raised hand was the whole list to every member:
    N members raising H hands cost N x H frames of up to H names. The others'
    hands now come batched, the list names the oldest MAX_HANDS_LISTED, and a
    member hears of its own hand at once."""
    from sfu import moderation

    monkeypatch.setattr(moderation, "MAX_HANDS_LISTED", 10)
    async with sfu.Server(token_secret=SECRET, host="127.0.0.1") as server:
        room = server.room("hall", roster_interval=0.1)
        sessions = [bare_session(server) for _ in range(30)]
        for i, (session, _, _) in enumerate(sessions):
            await session.handle(join_message(f"fan-{i}"))
        await asyncio.sleep(0.3)  # joined replies and roster batches out
        for _, sent, _ in sessions:
            sent.clear()
        for i in range(25):
            room.raise_hand(f"fan-{i}")
        await asyncio.sleep(0.4)
        for i, (_, sent, closed) in enumerate(sessions):
            hands = [m for m in sent if m["type"] == "hands"]
            assert hands == [
                {"type": "hands", "hands": [f"fan-{k}" for k in range(10)], "total": 25}
            ], (i, hands)
            own = [m for m in sent if m["type"] == "hand"]
            assert own == ([{"type": "hand", "raised": True, "by": None}] if i < 25 else [])
            assert closed == []
        # A newcomer is given the same: the oldest listed, and how many.
        late, late_sent, _ = bare_session(server)
        await late.handle(join_message("late"))
        joined = late_sent[0]
        assert joined["hands"] == [f"fan-{k}" for k in range(10)] and joined["hands_total"] == 25
        for session, _, _ in [*sessions, (late, None, None)]:
            await session.close()
