"""Roster batching: each event says the net change since the previous one."""

from __future__ import annotations

import asyncio

import pytest

from sfu.auth import Role
from sfu.events import RoomEvent, RosterChanged
from sfu.roster import RosterBatch

pytestmark = pytest.mark.compiled_and_python_alike  # see tests/alike.py


def batch() -> tuple[RosterBatch, list[RoomEvent]]:
    events: list[RoomEvent] = []
    return RosterBatch("r", 60.0, events.append, lambda: 0), events


# (steps in one interval, for someone already in the roster the clients know?) -> event lists
CASES = [
    ("join", [("joined",)], (("a", "listener"),), (), ()),
    # A member who joined in between holds a snapshot listing "a": told it left.
    ("join, leave", [("joined",), ("left",)], (), ("a",), ()),
    ("leave", [("left",)], (), ("a",), ()),
    ("leave, rejoin", [("left",), ("joined",)], (), (), (("a", "listener"),)),
    ("leave, rejoin, leave", [("left",), ("joined",), ("left",)], (), ("a",), ()),
    ("promoted", [("role",)], (), (), (("a", "speaker"),)),
    ("join, promoted", [("joined",), ("role",)], (("a", "speaker"),), (), ()),
]


@pytest.mark.parametrize(
    ("steps", "joined", "left", "updated"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
async def test_one_interval_tells_the_net_change(
    steps: list[tuple[str]],
    joined: tuple[tuple[str, Role], ...],
    left: tuple[str, ...],
    updated: tuple[tuple[str, Role], ...],
) -> None:
    roster, events = batch()
    loop = asyncio.get_running_loop()
    for (step,) in steps:
        if step == "role":
            roster.change(loop, "a", "speaker")
        else:
            roster.change(loop, "a", "listener", joined=step == "joined", left=step == "left")
    roster.flush()
    roster.close()
    if not (joined or left or updated):
        assert events == []
    else:
        assert events == [RosterChanged("r", joined=joined, left=left, updated=updated, size=0)]


async def test_intervals_are_independent() -> None:
    roster, events = batch()
    loop = asyncio.get_running_loop()
    roster.change(loop, "a", "listener", joined=True)
    roster.flush()
    roster.change(loop, "a", "listener", left=True)  # present now: its leave is news
    roster.flush()
    roster.close()
    assert [e.left for e in events if isinstance(e, RosterChanged)] == [(), ("a",)]


async def test_a_size_change_alone_is_an_event_with_no_names() -> None:
    """Members nobody is told of by name (see RosterListing) change the size:
    the interval's event says it, also when the size came back to the last
    one told (a member who joined in between holds another); nothing happened,
    no event."""
    size = [5]
    events: list[RoomEvent] = []
    roster = RosterBatch("r", 60.0, events.append, lambda: size[0])
    loop = asyncio.get_running_loop()
    roster.flush()
    assert events == []
    size[0] = 6
    roster.resized(loop)
    roster.flush()
    size[0] = 5
    roster.resized(loop)
    size[0] = 6
    roster.resized(loop)
    size[0] = 5
    roster.resized(loop)
    roster.flush()
    roster.flush()
    roster.close()
    assert events == [
        RosterChanged("r", joined=(), left=(), updated=(), size=6),
        RosterChanged("r", joined=(), left=(), updated=(), size=5),
    ]
