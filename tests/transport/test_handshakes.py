"""The handshake backlog and timers, with fake sessions (no sockets, no DTLS)."""

from __future__ import annotations

import asyncio
import collections
from types import SimpleNamespace
from typing import Any

import pytest

from sfu.transport.handshakes import (
    HANDSHAKES_PER_TURN,
    MAX_HANDSHAKE_BACKLOG,
    MAX_HANDSHAKE_QUEUED_PER_SESSION,
    Handshakes,
)

pytestmark = pytest.mark.compiled_and_python_alike  # see tests/alike.py


class FakeSession:
    def __init__(self, name: str, *, broken: bool = False, created: float = 0.0) -> None:
        self.name = name
        self.broken = broken
        self.created = created
        self.state = "checking"
        self.handshake_queued = 0
        self.received: list[bytes] = []
        self.after_closing: list[bytes] = []
        self.timeouts: list[float] = []
        self.close_reason: str | None = None

    def __repr__(self) -> str:
        return f"<FakeSession {self.name}>"

    def receive_dtls(self, data: bytes, now: float) -> None:
        if self.broken:
            raise RuntimeError("a bug")
        if self.state == "closed":  # (a Session counts it: "dtls before ice")
            self.after_closing.append(data)
            return
        self.received.append(data)

    def handle_timeout(self, now: float) -> None:
        if self.broken:
            raise RuntimeError("a bug")
        self.timeouts.append(now)

    def close(self, reason: str) -> None:
        self.state = "closed"
        self.close_reason = reason


def fake_server(loop: asyncio.AbstractEventLoop | None = None) -> Any:
    return SimpleNamespace(
        drops=collections.Counter(), loop=loop, handshake_timeout=30.0, handshakes_timed_out=0
    )


async def test_a_few_datagrams_are_worked_on_per_loop_turn() -> None:
    handshakes = Handshakes(fake_server(asyncio.get_running_loop()))
    sessions = [FakeSession(str(index)) for index in range(3 * HANDSHAKES_PER_TURN)]
    for session in sessions:
        handshakes.queue(session, b"flight")  # type: ignore[arg-type]
    assert all(not session.received for session in sessions), "none is worked on at once"
    await asyncio.sleep(0)  # one loop turn
    assert sum(len(session.received) for session in sessions) == HANDSHAKES_PER_TURN
    assert [bool(session.received) for session in sessions[:HANDSHAKES_PER_TURN]] == [True] * 4
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert all(session.received == [b"flight"] for session in sessions)
    assert not handshakes.backlog
    assert all(session.handshake_queued == 0 for session in sessions)


async def test_one_session_gets_a_share_and_the_backlog_a_bound() -> None:
    server = fake_server(asyncio.get_running_loop())
    handshakes = Handshakes(server)
    flooder = FakeSession("flooder")
    for _ in range(MAX_HANDSHAKE_QUEUED_PER_SESSION + 5):
        handshakes.queue(flooder, b"x")  # type: ignore[arg-type]
    assert flooder.handshake_queued == MAX_HANDSHAKE_QUEUED_PER_SESSION
    assert server.drops["dtls handshake datagrams over the session's share"] == 5
    # A full backlog refuses even a session's first datagram.
    filler: Any = (flooder, b"x")
    handshakes.backlog.extend([filler] * (MAX_HANDSHAKE_BACKLOG - len(handshakes.backlog)))
    newcomer = FakeSession("newcomer")
    handshakes.queue(newcomer, b"hello")  # type: ignore[arg-type]
    assert server.drops["dtls handshake backlog full"] == 1 and newcomer.handshake_queued == 0
    handshakes.backlog.clear()


async def test_a_failing_handshake_closes_its_session_only() -> None:
    server = fake_server(asyncio.get_running_loop())
    handshakes = Handshakes(server)
    broken = FakeSession("broken", broken=True)
    closed = FakeSession("closed")
    fine = FakeSession("fine")
    closed.state = "closed"
    for session in (broken, closed, fine):
        handshakes.queue(session, b"flight")  # type: ignore[arg-type]
    await asyncio.sleep(0)
    assert broken.close_reason == "internal error in the DTLS handshake"
    assert server.drops["dtls handshake error"] == 1
    assert closed.received == [] and closed.handshake_queued == 0
    assert closed.after_closing == [b"flight"], "handed to its session, which counts it"
    assert fine.received == [b"flight"] and fine.state == "checking"


def test_timers_retransmit_and_end_handshakes_past_the_timeout() -> None:
    handshakes = Handshakes(fake_server())
    late = FakeSession("late", created=0.0)
    young = FakeSession("young", created=100.0)
    broken = FakeSession("broken", broken=True, created=100.0)
    for session in (late, young, broken):
        handshakes.started(session)  # type: ignore[arg-type]
    handshakes.check_timers(120.0)  # a bug in one must not stop the others' timers
    assert late.timeouts == [120.0] and late.close_reason == "handshake timed out"
    assert young.timeouts == [120.0] and young.state == "checking"
    handshakes.done(young)  # type: ignore[arg-type]
    handshakes.check_timers(121.0)
    assert young.timeouts == [120.0], "connected: no more timers"
