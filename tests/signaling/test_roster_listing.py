"""The roster names the stage and the first listeners; the rest is a count.

Bare :class:`SignalingSession` objects (no WebSocket, no DTLS), as in
test_protocol_storm.py. Each client's view is rebuilt from what it was sent,
as ``sfu.js`` does: the ``joined`` snapshot, then ``roster`` batches and
``role_changed``; it must end with exactly the names the room gives.
"""

from __future__ import annotations

import asyncio
import json
import random
from typing import Any

import sfu
from sfu.signaling import protocol

from .test_protocol import SECRET, bare_session
from .test_protocol_storm import join_message

INTERVAL = 0.02


class ClientView:
    """A client's roster, from the frames it was sent (``sfu.js``'s rules)."""

    def __init__(self, identity: str, sent: list[dict[str, Any]]) -> None:
        self.identity = identity
        self.sent = sent
        self.roster: dict[str, str] = {}
        self.size = 0
        self.read = 0

    def update(self) -> None:
        for message in self.sent[self.read :]:
            kind = message["type"]
            if kind == "joined":
                self.roster = {e["identity"]: e["role"] for e in message["roster"]}
                self.roster.setdefault(self.identity, message["role"])
                self.size = message["size"]
            elif kind == "roster":
                for entry in message["joined"] + message["updated"]:
                    self.roster[entry["identity"]] = entry["role"]
                for identity in message["left"]:
                    if identity != self.identity:
                        self.roster.pop(identity, None)
                self.size = message["size"]
            elif kind == "role_changed" and message["identity"] in self.roster:
                self.roster[message["identity"]] = message["role"]
        self.read = len(self.sent)


def named(room: sfu.Room) -> dict[str, str]:
    return {p.identity: p.role for p in room._listing.named(room.participants)}


async def settle() -> None:
    await asyncio.sleep(INTERVAL * 6)


async def test_a_crowd_is_told_the_stage_and_the_first_listeners_and_how_many_more() -> None:
    async with sfu.Server(token_secret=SECRET, host="127.0.0.1") as server:
        room = server.room("hall", roster_interval=INTERVAL, roster_listeners=3)
        roles = {"host": "moderator", **{f"fan-{i}": "listener" for i in range(8)}}
        sessions = []
        for identity in roles:
            session, sent, _ = bare_session(server)
            sessions.append((session, ClientView(identity, sent)))
        await asyncio.gather(
            *(s.handle(join_message(v.identity, role=roles[v.identity])) for s, v in sessions)
        )
        sessions_by_name = {view.identity: (s, view) for s, view in sessions}
        await settle()
        first_three = {"fan-0": "listener", "fan-1": "listener", "fan-2": "listener"}
        assert named(room) == {"host": "moderator", **first_three}
        for _, view in sessions:
            view.update()
            assert view.size == 9, view.identity
            assert view.roster == {
                "host": "moderator",
                **first_three,
                view.identity: view.roster[view.identity],
            }
            # Nobody was sent an entry for a listener the roster does not name.
            entries = [
                e["identity"]
                for m in view.sent
                for e in m.get("roster", []) + m.get("joined", []) + m.get("updated", [])
                if isinstance(e, dict)
            ]
            assert set(entries) <= {"host", *first_three}, (view.identity, entries)

        live = dict(sessions_by_name)

        async def told(expected: dict[str, str], size: int) -> None:
            """The room names ``expected``, and every client still in knows it."""
            await settle()
            assert named(room) == expected
            for identity, (_, view) in live.items():
                view.update()
                assert view.size == size, identity
                assert {i: r for i, r in view.roster.items() if i != identity} == {
                    i: r for i, r in expected.items() if i != identity
                }, identity

        # A named listener leaves: the longest-waiting other is named in its place.
        await live.pop("fan-1")[0].close()
        expected = {"host": "moderator", "fan-0": "listener", "fan-2": "listener"}
        await told({**expected, "fan-3": "listener"}, 8)
        # An unnamed listener promoted is named, on the stage.
        await room.promote("fan-6", by="host")
        await told({**expected, "fan-3": "listener", "fan-6": "speaker"}, 8)
        # A named listener promoted: the next in line is named.
        await room.promote("fan-0", by="host")
        expected = {
            "host": "moderator",
            "fan-0": "speaker",
            "fan-2": "listener",
            "fan-3": "listener",
            "fan-4": "listener",
            "fan-6": "speaker",
        }
        await told(expected, 8)
        # A listener not named leaves: only the size changes.
        await live.pop("fan-7")[0].close()
        await told(expected, 7)
        # Back in an audience whose three named places are taken: no longer
        # named, and last in line.
        await room.demote("fan-0", by="host")
        del expected["fan-0"]
        await told(expected, 7)
        await live.pop("fan-2")[0].close()
        del expected["fan-2"]
        await told({**expected, "fan-5": "listener"}, 6)
        # Promoted and demoted again and again, the named audience stays at the limit.
        for _ in range(3):
            await room.promote("fan-0", by="host")
            await room.demote("fan-0", by="host")
        await told({**expected, "fan-5": "listener"}, 6)
        # A named one promoted: the one waiting longest is named in its place.
        await room.promote("fan-3", by="host")
        await told({**expected, "fan-3": "speaker", "fan-5": "listener", "fan-0": "listener"}, 6)
        for session, _ in sessions:
            await session.close()


async def test_every_client_ends_with_the_names_the_room_gives_whatever_happened() -> None:
    """Joins, leaves, promotions and demotions in random order, with clients
    joining all along (each from its own snapshot): every client that is still
    in ends with the room's named members and size, and the room names every
    member of the stage and exactly as many listeners as the limit allows."""
    limit = 4
    rng = random.Random(7)
    async with sfu.Server(token_secret=SECRET, host="127.0.0.1") as server:
        room = server.room("hall", roster_interval=INTERVAL, roster_listeners=limit)
        live: dict[str, tuple[Any, ClientView]] = {}
        counter = 0
        for _step in range(160):
            choice = rng.random()
            members = list(room.participants.values())
            if choice < 0.45 or len(members) < 3:
                counter += 1
                identity = f"m{counter}"
                role = "moderator" if counter == 1 else "listener"
                session, sent, _ = bare_session(server)
                live[identity] = (session, ClientView(identity, sent))
                await session.handle(join_message(identity, role=role))
            elif choice < 0.65:
                identity = rng.choice([i for i in live if i != "m1"])
                session, _ = live.pop(identity)
                await session.close()
            elif choice < 0.85:
                listeners = [p.identity for p in members if p.role == "listener"]
                if listeners:
                    await room.promote(rng.choice(listeners), by="m1")
            else:
                speakers = [p.identity for p in members if p.role == "speaker"]
                if speakers:
                    await room.demote(rng.choice(speakers), by="m1")
            if rng.random() < 0.3:
                await asyncio.sleep(INTERVAL * rng.random() * 2)
        await settle()
        room_names = named(room)
        assert len(room.participants) == len(live)
        for identity, (_, view) in live.items():
            view.update()
            assert view.size == len(room.participants), identity
            mine = {identity: room.participants[identity].role}
            assert view.roster == {**room_names, **mine}, identity
        audience = [p for p in room.participants.values() if p.role == "listener"]
        stage = [p for p in room.participants.values() if p.role != "listener"]
        named_audience = [p for p in audience if p.identity in room_names]
        assert all(p.identity in room_names for p in stage)
        assert len(named_audience) == min(limit, len(audience))
        assert len(audience) > limit, "the run must leave listeners unnamed to test anything"
        for session, _ in live.values():
            await session.close()


async def test_a_join_storm_sends_each_client_a_bounded_roster() -> None:
    """With the default limit, 150 listeners joining at once: each `joined`
    roster names at most 100 of them plus the stage; batches add no more."""
    async with sfu.Server(token_secret=SECRET, host="127.0.0.1") as server:
        room = server.room("hall", roster_interval=INTERVAL)
        assert room.policy.roster_listeners == 100
        sessions = [bare_session(server) for _ in range(150)]
        await asyncio.gather(
            *(s.handle(join_message(f"fan-{i}")) for i, (s, _, _) in enumerate(sessions))
        )
        await settle()
        for i, (_, sent, _) in enumerate(sessions):
            entries = [
                e["identity"]
                for message in sent
                for key in ("roster", "joined", "updated")
                for e in message.get(key, [])
                if isinstance(e, dict)
            ]
            assert set(entries) <= {f"fan-{j}" for j in range(100)}, i
            # Each named one at most twice: in the snapshot and in a batch.
            assert len(entries) <= 200, (i, len(entries))
            roster_sizes = [m["size"] for m in sent if m["type"] in ("joined", "roster")]
            assert roster_sizes[-1] == 150, i
        for session, _, _ in sessions:
            await session.close()


async def test_any_listener_can_be_found_page_by_page() -> None:
    """`audience` lists the listeners the roster does not name too, in the
    order they came; bad pages are refused, and pages cost rate tokens."""
    async with sfu.Server(token_secret=SECRET, host="127.0.0.1") as server:
        room = server.room("hall", roster_interval=INTERVAL, roster_listeners=2)
        host, sent, _ = bare_session(server)
        await host.handle(join_message("host", role="moderator"))
        fans = [bare_session(server) for _ in range(7)]
        for i, (session, _, _) in enumerate(fans):
            await session.handle(join_message(f"fan-{i}"))
        room.raise_hand("fan-5")
        pages = []
        for offset in (0, 3, 6, 9):
            sent.clear()
            await host.handle(
                json.dumps({"type": "audience", "offset": offset, "limit": 3, "id": offset})
            )
            (reply,) = sent
            assert reply["type"] == "audience" and reply["id"] == offset, reply
            assert reply["offset"] == offset and reply["listeners"] == 7
            pages.append([(e["identity"], e["hand"]) for e in reply["members"]])
        assert pages == [
            [("fan-0", False), ("fan-1", False), ("fan-2", False)],
            [("fan-3", False), ("fan-4", False), ("fan-5", True)],
            [("fan-6", False)],
            [],
        ]
        for bad in ({"limit": 0}, {"limit": 101}, {"offset": -1}, {"offset": "1"}):
            sent.clear()
            await host.handle(json.dumps({"type": "audience", **bad}))
            assert [m["code"] for m in sent] == ["bad_message"], bad
        # The burst left after the four pages and the four refused (a token
        # each: spent before the fields are read), then refused.
        codes = []
        for _ in range(protocol.COMMAND_BURST):
            sent.clear()
            await host.handle(json.dumps({"type": "audience"}))
            codes.append(sent[0].get("code", sent[0]["type"]))
        left = protocol.COMMAND_BURST - 8
        assert left <= codes.count("audience") <= left + 1, codes  # (+1: refilled meanwhile)
        assert codes[-1] == "rate_limited"
        for session, _, _ in [(host, sent, None), *fans]:
            await session.close()


async def test_pages_after_a_cursor_skip_nobody_when_listeners_leave_between_them() -> None:
    """Paged by ``after`` (each reply's ``next``), a moderator finds every
    listener present throughout, although listeners of pages already read
    leave between pages (by ``offset`` the next page would start one place
    too far); one who joins meanwhile comes last. Bad cursors are refused."""
    async with sfu.Server(token_secret=SECRET, host="127.0.0.1") as server:
        server.room("hall", roster_interval=INTERVAL, roster_listeners=2)
        host, sent, _ = bare_session(server)
        await host.handle(join_message("host", role="moderator"))
        fans = [bare_session(server) for _ in range(8)]
        for i, (session, _, _) in enumerate(fans[:7]):
            await session.handle(join_message(f"fan-{i}"))

        async def page(**fields: Any) -> dict[str, Any]:
            sent.clear()
            await host.handle(json.dumps({"type": "audience", "limit": 3, **fields}))
            (reply,) = sent
            assert reply["type"] == "audience", reply
            return reply

        first = await page(offset=0)
        assert [e["identity"] for e in first["members"]] == ["fan-0", "fan-1", "fan-2"]
        await fans[0][0].close()  # of a page read: by offset, fan-3 would be skipped
        await fans[1][0].close()
        seen = [e["identity"] for e in first["members"]]
        cursor = first["next"]
        for _ in range(5):
            reply = await page(after=cursor)
            seen += [e["identity"] for e in reply["members"]]
            assert reply["next"] >= cursor
            cursor = reply["next"]
            if not reply["members"]:
                break
            if len(seen) == 6:
                await fans[7][0].handle(join_message("fan-7"))  # comes during the pass
        assert seen == ["fan-0", "fan-1", "fan-2", "fan-3", "fan-4", "fan-5", "fan-6", "fan-7"]
        assert (await page(after=cursor))["members"] == []
        # An offset's reply gives a cursor too, past the end as well.
        by_offset = await page(offset=2)  # fan-2 ... fan-7 listen now
        assert [e["identity"] for e in by_offset["members"]] == ["fan-4", "fan-5", "fan-6"]
        rest = await page(after=by_offset["next"])
        assert [e["identity"] for e in rest["members"]] == ["fan-7"]
        beyond = await page(offset=10)
        assert beyond["members"] == [] and beyond["next"] == rest["next"]
        for bad in ({"after": -1}, {"after": "3"}, {"after": 0, "offset": 0}):
            sent.clear()
            await host.handle(json.dumps({"type": "audience", **bad}))
            assert [m["code"] for m in sent] == ["bad_message"], bad
        for session, _, _ in [(host, sent, None), *fans]:
            await session.close()


async def test_a_client_that_joined_within_an_interval_is_told_the_size_it_ends_with() -> None:
    """Its snapshot counted an unnamed member who came in that interval; one
    who leaves in the same interval brings the room back to the size the last
    batch told: the batch must still go out, with the size."""
    async with sfu.Server(token_secret=SECRET, host="127.0.0.1") as server:
        room = server.room("hall", roster_interval=INTERVAL * 5, roster_listeners=1)
        views, sessions = {}, {}
        for identity, role in (("host", "moderator"), ("fan-0", "listener"), ("fan-1", "listener")):
            session, sent, _ = bare_session(server)
            sessions[identity] = session
            views[identity] = ClientView(identity, sent)
            await session.handle(join_message(identity, role=role))
        await asyncio.sleep(INTERVAL * 12)  # the batch told size 3
        late, sent, _ = bare_session(server)
        views["late"] = ClientView("late", sent)
        await late.handle(join_message("late"))  # unnamed: its snapshot says 4
        await sessions.pop("fan-1").close()  # unnamed: the room is at 3 again
        await asyncio.sleep(INTERVAL * 12)
        assert len(room.participants) == 3
        for identity in ("host", "fan-0", "late"):
            views[identity].update()
            assert views[identity].size == 3, identity
        for session in (*sessions.values(), late):
            await session.close()
