"""What an operator reads in the ``sfu`` log: moderation says who did it, refused
signaling joins show at INFO (not DEBUG only), without a traceback or the token,
and a join is one INFO line saying how it came."""

from __future__ import annotations

import json
import logging
import secrets
import time
from typing import Any

import pytest

import sfu
from sfu import auth

from .test_room_lifecycle import LISTENER, SPEAKER

SECRET = secrets.token_urlsafe(32)


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


async def test_a_refused_signaling_join_is_logged_at_info_without_the_token(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The line names the room, whom the join was for when a token the
    server signed says so (quoted as need be, cut short), and why."""
    from sfu.signaling.protocol import SignalingSession

    caplog.set_level(logging.INFO, logger="sfu")
    async with sfu.Server(token_secret=SECRET) as server:
        server.room("hall")
        sent: list[dict[str, Any]] = []

        async def send(text: str) -> None:
            sent.append(json.loads(text))

        async def close(code: int, reason: str) -> None:
            pass

        long_name = "mallory\n" + "x" * 200
        joins = [
            # Not signed with the key: whom it names is nobody's word.
            ("hall", auth.issue_token("x" * 40, room="hall", identity="dave", role="listener")),
            ("hall", auth.issue_token(SECRET, room="hall", identity="carol", role="listener")),
            # Expired, for a room not made yet (the token is checked in full first).
            (
                "attic",
                auth.issue_token(
                    SECRET, room="attic", identity=long_name, ttl=60, now=time.time() - 3600
                ),
            ),
        ]
        for (room, token), offer in zip(joins, ["v=0\r\n", "v=0\r\nbogus", LISTENER], strict=True):
            session = SignalingSession(server, send, close)
            await session.handle(
                json.dumps({"type": "join", "room": room, "token": token, "offer": offer})
            )
            assert sent[-1]["type"] == "error"
            await session.close()
        refusals = [m for m in messages(caplog) if "refused" in m]
        assert len(refusals) == 3, messages(caplog)
        assert "join of room 'hall' refused: not_allowed" in refusals[0], refusals
        assert "signature" in refusals[0] and "dave" not in refusals[0]
        assert "join of room 'hall' as carol refused: invalid_offer" in refusals[1]
        assert "join of room 'attic' as 'mallory\\nxxx" in refusals[2], refusals
        assert "expired" in refusals[2] and "x" * 80 not in refusals[2]
        assert not [m for m in refusals if "\n" in m], refusals
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info]
        assert not any(token in caplog.text for _, token in joins)
        from sfu.signaling.refusals import join_refusals

        assert join_refusals(server).counts == {
            ("websocket", "not_allowed"): 2,
            ("websocket", "invalid_offer"): 1,
        }


async def test_a_removal_reason_cannot_forge_a_log_line(caplog: pytest.LogCaptureFixture) -> None:
    """The reason comes from a moderator's client: every line that carries it
    quotes it, so a newline in it cannot start a line of its own."""
    caplog.set_level(logging.INFO, logger="sfu")
    async with sfu.Server() as server:
        room = server.room("hall")
        await room.join(SPEAKER, identity="mod", role="moderator")
        await room.add_listener(LISTENER, "bob")
        await room.remove("bob", reason="spam\nINFO sfu.room: mod left room 'hall'", by="mod")
        logged = messages(caplog)
        assert any(m.startswith("bob left room 'hall'") for m in logged), logged
        assert not [m for m in logged if "\n" in m], logged


async def test_an_identity_cannot_forge_a_log_line(caplog: pytest.LogCaptureFixture) -> None:
    """Identities are the backend's (a token's ``sub``), often a name a user
    typed: a line that names one shows it as it is when every character
    prints, and quoted otherwise, so a newline, a carriage return or a
    terminal escape in it can neither start a line nor hide one."""
    from sfu.signaling.protocol import SignalingSession

    caplog.set_level(logging.INFO, logger="sfu")
    evil = "eve\nINFO sfu.room: mod left room 'hall'\x1b[2K"
    moderator = "mod\r"
    async with sfu.Server(token_secret=SECRET) as server:
        room = server.room("hall")
        await room.join(SPEAKER, identity=moderator, role="moderator")
        await room.add_listener(LISTENER, "zoë 🎙")  # prints: shown as it is
        await room.add_listener(LISTENER, evil)
        await room.promote(evil, by=moderator)
        await room.mute(evil, by=moderator)
        await room.demote(evil, by=moderator)
        await room.remove(evil, by=moderator, ban=True)
        await room.remove("x\ny", by=moderator, ban=True)  # absent
        token = auth.issue_token(SECRET, room="hall", identity="sig\nnal", role="listener")

        async def send(text: str) -> None:
            pass

        async def close(code: int, reason: str) -> None:
            pass

        session = SignalingSession(server, send, close, peer="127.0.0.5")
        await session.handle(
            json.dumps({"type": "join", "room": "hall", "token": token, "offer": LISTENER})
        )
        assert "\n" not in repr(session), repr(session)
        await session.close()
        logged = messages(caplog)
        assert len(logged) >= 10, logged
        assert not [m for m in logged if any(c in m for c in "\n\r\x1b")], logged
        assert f"{evil!r} joined room 'hall' as listener (the mix) via the Python API" in logged
        assert "zoë 🎙 joined room 'hall' as listener (the mix) via the Python API" in logged
        assert f"{evil!r} promoted to speaker in room 'hall' by {moderator!r}" in logged


async def test_a_refused_whip_or_whep_join_is_logged_at_info_without_the_token(
    caplog: pytest.LogCaptureFixture,
) -> None:
    import aiohttp
    from aiohttp import web

    from sfu.signaling.aiohttp import add_whip_whep

    from .sites import start_site

    caplog.set_level(logging.INFO, logger="sfu")
    async with sfu.Server(token_secret=SECRET) as server:
        server.room("hall")
        app = web.Application()
        add_whip_whep(app, server, create_rooms=False)
        runner, port = await start_site(app)
        forged = auth.issue_token("x" * 40, room="hall", identity="eve", role="speaker")
        listener = auth.issue_token(SECRET, room="hall", identity="lou", role="listener")
        base = f"http://127.0.0.1:{port}/rooms"
        sdp = {"Content-Type": "application/sdp"}
        try:
            async with aiohttp.ClientSession() as http:
                for url, token, status in [
                    (f"{base}/hall/whip", None, 401),
                    (f"{base}/hall/whip", forged, 401),  # not signed with the key: invalid_token
                    (f"{base}/nowhere/whep", listener, 403),  # a token for another room
                    (f"{base}/hall/whip", listener, 403),  # a listener may not publish
                ]:
                    headers = {**sdp, **({"Authorization": f"Bearer {token}"} if token else {})}
                    async with http.post(url, data=SPEAKER, headers=headers) as response:
                        assert response.status == status, (url, await response.text())
        finally:
            await runner.cleanup()
        refusals = [m for m in messages(caplog) if "refused" in m]
        assert len(refusals) == 4, messages(caplog)
        assert [m.split()[0] for m in refusals] == ["WHIP", "WHIP", "WHEP", "WHIP"]
        assert all("127.0.0.1" in m for m in refusals), refusals
        assert "(401)" in refusals[0] and "signature" in refusals[1]
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info]
        assert forged not in caplog.text and listener not in caplog.text


def join_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The INFO (or louder) lines about a member joining (not its refusals)."""
    return [m for m in messages(caplog) if " joined room " in m]


async def test_a_join_is_one_info_line_saying_how_it_came(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """One join, one INFO line: who, which room, which role, what it receives,
    and how it joined (the Python API, the WebSocket signaling and its peer,
    WHIP or WHEP and the client's address); the adapters' own lines are DEBUG."""
    import aiohttp
    from aiohttp import web

    from sfu.signaling.aiohttp import add_whip_whep
    from sfu.signaling.protocol import SignalingSession

    from .sites import start_site

    caplog.set_level(logging.INFO, logger="sfu")
    async with sfu.Server(token_secret=SECRET) as server:
        room = server.room("hall")

        await room.add_listener(LISTENER, "ann")
        assert join_lines(caplog) == [
            "ann joined room 'hall' as listener (the mix) via the Python API"
        ]
        caplog.clear()

        sent: list[dict[str, Any]] = []

        async def send(text: str) -> None:
            sent.append(json.loads(text))

        async def close(code: int, reason: str) -> None:
            pass

        token = auth.issue_token(SECRET, room="hall", identity="carol", role="speaker")
        session = SignalingSession(server, send, close, peer="127.0.0.5")
        await session.handle(
            json.dumps({"type": "join", "room": "hall", "token": token, "offer": SPEAKER})
        )
        assert sent[-1]["type"] == "joined", sent[-1]
        assert join_lines(caplog) == [
            "carol joined room 'hall' as speaker (the mix) via WebSocket from 127.0.0.5"
        ]
        await session.close()
        caplog.clear()

        app = web.Application()
        add_whip_whep(app, server, create_rooms=False)
        runner, port = await start_site(app)
        try:
            async with aiohttp.ClientSession() as http:
                joins: list[tuple[str, str, auth.Role, str]] = [
                    ("whip", "wes", "speaker", SPEAKER),
                    ("whep", "lou", "listener", LISTENER),
                ]
                for kind, identity, role, offer in joins:
                    token = auth.issue_token(SECRET, room="hall", identity=identity, role=role)
                    async with http.post(
                        f"http://127.0.0.1:{port}/rooms/hall/{kind}",
                        data=offer,
                        headers={
                            "Content-Type": "application/sdp",
                            "Authorization": f"Bearer {token}",
                        },
                    ) as response:
                        assert response.status == 201, await response.text()
        finally:
            await runner.cleanup()
        assert join_lines(caplog) == [
            "wes joined room 'hall' as speaker (the mix) via WHIP from 127.0.0.1",
            "lou joined room 'hall' as listener (the mix) via WHEP from 127.0.0.1",
        ]
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info]


@pytest.fixture
def aiortc_on_ipv6(monkeypatch: pytest.MonkeyPatch) -> None:
    """aiortc clients gather one host candidate, ::1 (instead of 127.0.0.1)."""
    import aioice.ice

    monkeypatch.setattr(aioice.ice, "get_host_addresses", lambda *args, **kwargs: ["::1"])


async def test_addresses_are_logged_as_host_and_port_with_ipv6_in_brackets(
    caplog: pytest.LogCaptureFixture, aiortc_on_ipv6: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``[::1]:5000``, not ``::1:5000`` (which reads as an address ending in
    :5000) nor a socket tuple; an IPv4 client of a dual-stack server reads as
    the IPv4 address it is, not ``::ffff:127.0.0.1``."""
    import aioice.ice

    from .clients import join

    caplog.set_level(logging.INFO, logger="sfu")
    async with sfu.Server(host="::1") as server:
        assert repr(server) == f"<sfu.Server listening [::1]:{server.port}>"
        assert f"sfu server listening on udp [::1]:{server.port} (announced ::1)" in messages(
            caplog
        )
        client = await join(server.room("hall"), "ann", speaker=False)
        try:
            await client.wait_connected()
            await client.participant.wait_connected(10)  # type: ignore[union-attr]
            session = client.participant.session  # type: ignore[union-attr]
            assert session is not None and session.address is not None
            shown = f"[::1]:{session.address[1]}"
            assert f"ann connected to room 'hall' from {shown}" in messages(caplog)
            assert shown in repr(session)
        finally:
            await client.close()
    monkeypatch.setattr(aioice.ice, "get_host_addresses", lambda *args, **kwargs: ["127.0.0.1"])
    async with sfu.Server(host="::", announce="127.0.0.1") as server:
        client = await join(server.room("hall"), "bob", speaker=False)
        try:
            await client.wait_connected()
            await client.participant.wait_connected(10)  # type: ignore[union-attr]
            session = client.participant.session  # type: ignore[union-attr]
            assert session is not None and session.address is not None
            assert session.address[0] == "::ffff:127.0.0.1"  # as the dual-stack socket has it
            shown = f"127.0.0.1:{session.address[1]}"
            assert f"bob connected to room 'hall' from {shown}" in messages(caplog)
        finally:
            await client.close()


@pytest.mark.parametrize(
    ("name", "logged"),
    [
        ("alice", "alice"),
        ("Zoë Müller", "Zoë Müller"),
        ("bob\n", "'bob\\n'"),
        # Printable, but it would read as the quoted form of another name,
        # or be taken for another: quoted too.
        ("bob\\n", "'bob\\\\n'"),
        ("'bob'", "\"'bob'\""),
        ("alice ", "'alice '"),
        (" alice", "' alice'"),
    ],
)
def test_a_name_is_quoted_when_it_could_pass_for_another(name: str, logged: str) -> None:
    from sfu._values import shown

    assert shown(name) == logged


@pytest.mark.parametrize(
    ("address", "logged"),
    [
        (("127.0.0.1", 5000), "127.0.0.1:5000"),
        (("::1", 5000, 0, 0), "[::1]:5000"),
        (("::ffff:127.0.0.1", 5000, 0, 0), "127.0.0.1:5000"),
        # Not an IPv4-mapped address (an IPv4-translated one): kept whole.
        (("::ffff:0:1.2.3.4", 5000, 0, 0), "[::ffff:0:1.2.3.4]:5000"),
    ],
)
def test_socket_addresses_are_formatted_as_logs_show_them(
    address: tuple[object, ...], logged: str
) -> None:
    from sfu.transport.port import format_address

    assert format_address(address) == logged
