"""The public API under bad input and awkward call orders: sfu.errors, never a
built-in exception from deep inside, and nothing left running."""

from __future__ import annotations

import asyncio
import errno
import gc
import math
import warnings
from collections.abc import Callable

import numpy as np
import pytest
from aiohttp import web

import sfu
from sfu import auth
from sfu.policy import RoomPolicy
from sfu.signaling.aiohttp import add_signaling, add_whip_whep, websocket_handler

from .test_room_lifecycle import LISTENER, SPEAKER

SECRET = "s" * 40


@pytest.mark.parametrize(
    "arguments",
    [
        {"port": "x"},
        {"port": True},
        {"port": 70000},
        {"host": 123},
        {"host": ""},
        {"consent_timeout": float("nan")},
        {"consent_timeout": "30"},
        {"handshake_timeout": float("inf")},
        {"handshake_timeout": 0},
        {"joins_per_turn": True},
        {"token_secret": 12345},
        {"token_secret": bytearray(40)},
        {"token_secret": "short"},
    ],
)
def test_server_settings_are_checked(arguments: dict[str, object]) -> None:
    with pytest.raises(sfu.InvalidSetting):
        sfu.Server(**arguments)  # type: ignore[arg-type]


def test_a_secret_is_measured_in_bytes_as_tokens_are() -> None:
    sfu.Server(token_secret="é" * 16)  # 32 bytes in UTF-8: accepted, as sfu.auth accepts it
    with pytest.raises(sfu.InvalidSetting):
        sfu.Server(token_secret="a" * 31)


async def test_an_ipv4_mapped_announce_is_the_ipv4_address_it_names() -> None:
    """``::ffff:192.0.2.1`` (how a dual-stack socket names an IPv4 peer) is an
    IPv4 address: answers say ``IN IP4 192.0.2.1``, not ``IN IP6
    ::ffff:c000:201`` (which a client would have to reach over IPv6), and an
    IPv4 socket takes it."""
    async with sfu.Server(host="127.0.0.1", announce="::FFFF:127.0.0.1") as server:
        assert server.announce == "127.0.0.1"
        listener = await server.room("r").add_listener(LISTENER, "bob")
        assert "\r\nc=IN IP4 127.0.0.1\r\n" in listener.answer
        assert f" 127.0.0.1 {server.port} typ host\r\n" in listener.answer


async def test_a_host_in_ipv4_mapped_form_starts_and_announces_ipv4() -> None:
    """A server bound to ``::ffff:127.0.0.1`` (an IPv6 socket taking that IPv4
    address's clients) announces ``127.0.0.1``, which those clients reach;
    its own check of the announce's family does not refuse it."""
    async with sfu.Server(host="::ffff:127.0.0.1") as server:
        assert server.announce == "127.0.0.1"
        listener = await server.room("r").add_listener(LISTENER, "bob")
        assert f" 127.0.0.1 {server.port} typ host\r\n" in listener.answer


async def test_an_announce_of_the_other_address_family_is_refused_at_start() -> None:
    """Answers naming an IPv6 address for an IPv4 socket would send every
    client where nothing listens: refused, and the socket closed."""
    server = sfu.Server(host="127.0.0.1", announce="::1")
    with pytest.raises(sfu.InvalidSetting, match="announce '::1' is IPv6 but host"):
        await server.start()
    assert server._socket is None and not server._started
    try:
        v6 = sfu.Server(host="::1", announce="127.0.0.1")
        with pytest.raises(sfu.InvalidSetting, match="is IPv4 but host '::1' bound IPv6"):
            await v6.start()
    except OSError:  # no IPv6 loopback on this machine: the IPv4 half above stands
        pass
    # A socket bound to an IPv4 address in IPv6 form takes only that address.
    mapped = sfu.Server(host="::ffff:127.0.0.1", announce=["127.0.0.1", "::1"])
    with pytest.raises(sfu.InvalidSetting, match="is the IPv4 address 127.0.0.1"):
        await mapped.start()
    assert mapped._socket is None and not mapped._started
    # Each of a list's addresses is checked: IPv4 and IPv6 need a socket on '::'.
    both = sfu.Server(host="127.0.0.1", announce=["127.0.0.1", "::1"])
    with pytest.raises(sfu.InvalidSetting, match="announce '::1' is IPv6 but host"):
        await both.start()
    assert both._socket is None and not both._started


async def test_close_during_start_leaves_nothing_open() -> None:
    server = sfu.Server()
    starting = asyncio.ensure_future(server.start())
    await asyncio.sleep(0)
    await server.close()
    with pytest.raises(sfu.ServerClosed):
        await starting
    assert server._socket is None and server._transport is None and server._task is None


async def test_concurrent_starts_bind_one_socket() -> None:
    server = sfu.Server()
    first, second = await asyncio.gather(server.start(), server.start())
    assert first is second is server
    port = server.port
    await asyncio.gather(server.close(), server.close())
    assert server._socket is None and server._task is None
    assert port > 0


async def test_the_port_of_a_server_not_running_says_whether_it_is_not_started_or_closed() -> None:
    server = sfu.Server()
    with pytest.raises(sfu.ServerClosed, match="not started"):
        _ = server.port
    await server.start()
    assert server.port > 0
    await server.close()
    for read in (lambda: server.port, lambda: server.socket):
        with pytest.raises(sfu.ServerClosed, match="the server is closed"):
            read()


@pytest.mark.parametrize(
    "settings",
    [
        {"slots": True},
        {"max_speakers": False},
        {"private": "no"},
        {"roster_interval": "1"},
        {"roster_listeners": -1},
        {"roster_listeners": True},
        {"roster_listeners": 2.5},
        {"hold": float("nan")},
        {"decision_interval": True},
        # None is decision_interval's alone (review: a bare TypeError for these).
        {"hold": None},
        {"stage_interval": None},
        {"roster_interval": None},
        {"thresholds": (10**400, 2, 0)},  # OverflowError in the detector, not InvalidSetting
        {"thresholds": (1.0, float("nan"), 0)},
        {"thresholds": (True, 2, 0)},
    ],
)
def test_room_policy_refuses_wrong_types(settings: dict[str, object]) -> None:
    with pytest.raises(sfu.InvalidSetting, match=next(iter(settings))):
        RoomPolicy(**settings)  # type: ignore[arg-type]


async def test_room_names_are_checked_before_use() -> None:
    async with sfu.Server() as server:
        with pytest.raises(sfu.InvalidSetting, match="must be a string"):
            server.room(["a"])  # type: ignore[arg-type]
        with pytest.raises(sfu.InvalidSetting, match="at most 256"):
            server.room("x" * 300)
        # The misspelt name, and the names there are to pick from.
        with pytest.raises(
            sfu.InvalidSetting,
            match=r"unknown room setting 'slot'; the settings are slots, max_speakers, ",
        ):
            server.room("r", slot=2)  # type: ignore[call-arg]


@pytest.mark.parametrize(
    "mount",
    [
        lambda server, settings: add_signaling(web.Application(), server, room_settings=settings),
        lambda server, settings: add_whip_whep(web.Application(), server, room_settings=settings),
        lambda server, settings: websocket_handler(server, room_settings=settings),
    ],
    ids=["add_signaling", "add_whip_whep", "websocket_handler"],
)
def test_the_adapters_room_settings_are_checked_when_mounted(
    mount: Callable[[sfu.Server, object], object],
) -> None:
    """A backend's mistake in ``room_settings`` raises where it is made, not
    as a refusal of each client whose join would create a room (a 400 or a
    ``bad_message`` blaming the client, for as long as the server runs)."""
    with pytest.raises(sfu.InvalidSetting, match=r"unknown room setting 'slot'; .* slots,"):
        mount(sfu.Server(), {"slot": 2})
    with pytest.raises(sfu.InvalidSetting, match="close_when_empty must be"):
        mount(sfu.Server(), {"close_when_empty": -1})
    with pytest.raises(sfu.InvalidSetting, match="must be a mapping"):
        mount(sfu.Server(), [("slots", 2)])
    with pytest.raises(sfu.InvalidSetting, match="token_secret"):
        mount(sfu.Server(), {"private": True})
    mount(sfu.Server(token_secret=SECRET), {"private": True, "close_when_empty": 60})


def test_the_signaling_websocket_is_refused_a_server_without_a_token_secret() -> None:
    """Every join over the WebSocket carries a token: mounted on a server that
    cannot check one, it would start and refuse everyone, so it raises
    where it is mounted. WHIP/WHEP take tokenless joins and mount anyway."""
    for mount in (
        lambda: add_signaling(web.Application(), sfu.Server()),
        lambda: websocket_handler(sfu.Server()),
    ):
        with pytest.raises(sfu.InvalidSetting, match="needs a Server with token_secret"):
            mount()
    add_signaling(web.Application(), sfu.Server(token_secret=SECRET))
    add_whip_whep(web.Application(), sfu.Server())


@pytest.mark.parametrize(
    "arguments",
    [
        {"role": "admin", "grants": ["publish"]},
        {"ttl": float("nan")},
        {"ttl": "60"},
        {"grants": "publish"},
        {"identity": "x" * 300},
        {"not_before": float("inf")},
    ],
)
def test_issue_token_checks_its_arguments(arguments: dict[str, object]) -> None:
    base: dict[str, object] = {"room": "r", "identity": "ada"}
    with pytest.raises(sfu.InvalidSetting):
        auth.issue_token(SECRET, **{**base, **arguments})  # type: ignore[arg-type]


async def test_event_stream_next_and_size() -> None:
    async with sfu.Server() as server:
        room = server.room("r")
        with pytest.raises(sfu.InvalidSetting):
            room.events(maxsize=0)
        stream = room.events()
        await room.add_listener(LISTENER, "lee")
        event = await stream.next(0)  # queued: returned at once, even with no time to wait
        assert isinstance(event, sfu.ParticipantJoined)
        with pytest.raises(asyncio.TimeoutError):
            await stream.next(0)
        stream.close()
        with pytest.raises(StopAsyncIteration):
            await stream.next(1)


async def test_an_abandoned_event_stream_is_released() -> None:
    async with sfu.Server() as server:
        room = server.room("r")
        for _ in range(50):
            room.events()  # never kept, never closed
        gc.collect()
        assert len(room._subscribers) == 0
        async with room.events() as kept:
            assert len(room._subscribers) == 1
        assert kept.closed


async def test_demote_takes_the_voice_of_a_listener_token_widened_with_publish() -> None:
    async with sfu.Server(token_secret=SECRET) as server:
        room = server.room("r")
        token = auth.issue_token(
            SECRET, room="r", identity="w", role="listener", grants=["publish", "subscribe"]
        )
        widened = await room.join(SPEAKER, token=token)
        assert widened.can_publish and widened.role == "listener"
        await room.demote("w")
        assert not widened.can_publish and widened.publisher is None


async def test_renegotiating_after_leaving_raises_participant_closed() -> None:
    async with sfu.Server() as server:
        room = server.room("r")
        lee = await room.add_listener(LISTENER, "lee")
        await lee.close()
        with pytest.raises(sfu.ParticipantClosed):
            await lee.renegotiate(LISTENER)


async def test_a_join_with_no_identity_and_no_token_says_what_is_missing() -> None:
    """Not "identity must be a non-empty string": the caller gave none at all."""
    async with sfu.Server() as server:
        room = server.room("r")
        for join in (room.add_listener(LISTENER), room.join(LISTENER)):
            with pytest.raises(sfu.InvalidSetting, match="identity=.*or a token"):
                await join
        assert not room.participants


async def test_moderation_with_a_non_string_identity_says_what_is_wrong() -> None:
    async with sfu.Server(token_secret="s" * 32) as server:
        room = server.room("r")
        await room.add_listener(LISTENER, "lee")
        for call in (
            lambda: room.remove([]),  # type: ignore[arg-type]
            lambda: room.mute({}),  # type: ignore[arg-type]
            lambda: room.demote(1),  # type: ignore[arg-type]
            lambda: room.mute("lee", by=5),  # type: ignore[arg-type]
            lambda: asyncio.sleep(0, room.get([])),  # type: ignore[arg-type]
            lambda: asyncio.sleep(0, room.unban([])),  # type: ignore[func-returns-value, arg-type]
            lambda: asyncio.sleep(0, room.is_banned([])),  # type: ignore[arg-type]
            lambda: asyncio.sleep(0, room.lower_hand([])),  # type: ignore[func-returns-value, arg-type]
        ):
            with pytest.raises(sfu.InvalidSetting, match="str"):
                await call()
        with pytest.raises(sfu.NotAllowed, match="must be a str, got int"):
            await room.join(LISTENER, token=5)  # type: ignore[arg-type]


async def test_bans_of_absent_people_are_bounded_in_size_and_number(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A ban of someone absent stores a name the moderator chose, kept for
    the room's life: names longer than any member's, or more than MAX_BANS
    of them, are refused."""
    from sfu import moderation

    monkeypatch.setattr(moderation, "MAX_BANS", 3)
    async with sfu.Server() as server:
        room = server.room("r")
        with pytest.raises(sfu.InvalidSetting, match="at most"):
            await room.remove("x" * 60_000, ban=True)
        with pytest.raises(sfu.InvalidSetting):
            await room.remove("", ban=True)
        for name in ("a", "b", "c"):
            await room.remove(name, ban=True)
        await room.remove("a", ban=True)  # already banned: fine
        with pytest.raises(sfu.InvalidSetting, match="bans already"):
            await room.remove("d", ban=True)
        room.unban("a")
        await room.remove("d", ban=True)
        assert room.is_banned("d") and not room.is_banned("a")


@pytest.mark.parametrize("adapter", ["add_signaling", "add_whip_whep"])
async def test_the_adapters_make_rooms_with_the_settings_they_checked(adapter: str) -> None:
    """The room a join makes has the ``room_settings`` checked when the
    adapter was mounted: a change to the caller's dict afterwards (a value
    the check would refuse too) does not reach it. Real joins over 127.0.0.1."""
    import aiohttp

    from .sites import start_site

    settings: dict[str, object] = {"slots": 2}
    async with sfu.Server(token_secret=SECRET, host="127.0.0.1") as server:
        app = web.Application()
        mount = add_signaling if adapter == "add_signaling" else add_whip_whep
        mount(app, server, room_settings=settings)  # type: ignore[arg-type]
        settings["slots"] = 99  # out of range
        settings["private"] = "yes"  # not a bool
        runner, port = await start_site(app)
        token = auth.issue_token(SECRET, room="hall", identity="ada", role="listener")
        try:
            async with aiohttp.ClientSession() as http:
                if adapter == "add_signaling":
                    async with http.ws_connect(f"http://127.0.0.1:{port}/ws") as ws:
                        await ws.send_json(
                            {"type": "join", "room": "hall", "token": token, "offer": LISTENER}
                        )
                        reply = await asyncio.wait_for(ws.receive_json(), 10)
                        assert reply["type"] == "joined", reply
                        assert reply["slots"] == 2
                else:
                    async with http.post(
                        f"http://127.0.0.1:{port}/rooms/hall/whep",
                        data=LISTENER,
                        headers={
                            "Content-Type": "application/sdp",
                            "Authorization": f"Bearer {token}",
                        },
                    ) as response:
                        assert response.status == 201, await response.text()
            room = server.rooms["hall"]
            assert room.policy.slots == 2 and room.policy.private is False
        finally:
            await runner.cleanup()


async def test_get_room_never_raises() -> None:
    """``Server.get_room``: "Never raises" (None for a room that is not
    there); a name that is not hashable raised TypeError."""
    async with sfu.Server() as server:
        server.room("r")
        assert server.get_room(["r"]) is None  # type: ignore[arg-type]
        assert server.get_room({"r": 1}) is None  # type: ignore[arg-type]
        assert server.get_room("r") is not None


async def test_timeouts_and_token_ids_of_the_wrong_type_are_invalid_settings() -> None:
    async with sfu.Server() as server:
        room = server.room("r")
        stream = room.events()
        with pytest.raises(sfu.InvalidSetting, match="timeout"):
            await stream.next("1")  # type: ignore[arg-type]
        listener = await room.add_listener(LISTENER, "bob")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with pytest.raises(sfu.InvalidSetting, match="timeout"):
                await listener.wait_connected("1")  # type: ignore[arg-type]
            gc.collect()  # a coroutine made and dropped warns "never awaited" here
        assert not [w for w in caught if issubclass(w.category, RuntimeWarning)]
        for refused in (math.nan, True, "1", 10**5000):
            with pytest.raises(sfu.InvalidSetting, match="timeout"):
                await stream.next(refused)  # type: ignore[arg-type]
            with pytest.raises(sfu.InvalidSetting, match="timeout"):
                await listener.wait_connected(refused)  # type: ignore[arg-type]
        with pytest.raises(sfu.InvalidSetting, match="token_id"):
            room.is_banned("bob", ["jti"])  # type: ignore[arg-type]
        with pytest.raises(sfu.InvalidSetting, match="token_id"):
            room.is_banned("bob", 5)  # type: ignore[arg-type]
        stream.close()


async def test_an_infinite_or_numpy_timeout_is_a_timeout() -> None:
    """``math.inf`` means "wait as long as it takes", as asyncio reads it,
    and a numpy scalar is a number of seconds: neither is refused."""
    async with sfu.Server() as server:
        room = server.room("r")
        stream = room.events()
        while True:  # drain what the room has said so far
            try:
                await stream.next(0)
            except asyncio.TimeoutError:
                break
        listener = await room.add_listener(LISTENER, "bob")  # never connects
        for timeout in (np.int64(0), np.float32(0.01), 0.01):
            with pytest.raises(asyncio.TimeoutError):
                await listener.wait_connected(timeout)
        for timeout in (math.inf, np.float64(math.inf)):
            with pytest.raises(asyncio.TimeoutError):  # only the outer bound ends it
                await asyncio.wait_for(listener.wait_connected(timeout), 0.1)
        stream.close()
        stream = room.events()
        while True:
            try:
                await stream.next(np.float32(0.01))
            except asyncio.TimeoutError:
                break
        for timeout in (math.inf, np.int64(10**6)):
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(stream.next(timeout), 0.1)
        stream.close()


async def test_a_port_that_cannot_be_bound_says_which() -> None:
    """An operator reading "Address already in use" must learn which address:
    the OSError keeps its errno and names the host and port."""
    async with sfu.Server(host="127.0.0.1") as first:
        taken = sfu.Server(host="127.0.0.1", port=first.port)
        with pytest.raises(OSError) as caught:
            await taken.start()
        assert caught.value.errno == errno.EADDRINUSE
        assert f"127.0.0.1:{first.port}" in str(caught.value), caught.value
        assert taken._socket is None and not taken._started


def test_a_server_used_from_another_event_loop_says_so_and_registers_nothing() -> None:
    """A Server started in one loop and used from another (a second
    asyncio.run, a test framework's loop per test): its socket, timers and
    rooms live in the first. The join fails with InvalidSetting saying so,
    and leaves no member behind (it used to raise "Event loop is closed"
    from inside the join, with the member registered)."""
    home = asyncio.new_event_loop()
    server = sfu.Server()
    home.run_until_complete(server.start())
    room = server.room("elsewhere")

    async def join_from_another_loop() -> None:
        with pytest.raises(sfu.InvalidSetting, match="another event loop"):
            await room.add_listener(LISTENER, identity="a")
        with pytest.raises(sfu.InvalidSetting, match="another event loop"):
            server.room("other")

    try:
        asyncio.run(join_from_another_loop())
        assert list(room.participants) == []
    finally:
        home.run_until_complete(server.close())
        home.close()


async def test_a_room_made_by_calling_the_class_is_refused() -> None:
    """``sfu.Room(server, name, policy)`` made a room the server did not know:
    ``server.room(name)`` then made a second one of that name, and closing
    the server left the first open. It is refused, pointing at server.room."""
    async with sfu.Server() as server:
        with pytest.raises(sfu.InvalidSetting, match=r"server\.room\("):
            sfu.Room(server, "hand-made", RoomPolicy())
        assert server.get_room("hand-made") is None
        room = server.room("hand-made")
        assert server.get_room("hand-made") is room and room.name == "hand-made"


async def test_renegotiates_takes_true_or_false_only() -> None:
    """``participant.renegotiates = "no"`` read as True (a non-empty string):
    the room then promoted a client that cannot add a sending line."""
    async with sfu.Server() as server:
        member = await server.room("flags").add_listener(LISTENER, "flag")
        for value in ("no", 0, None):
            with pytest.raises(sfu.InvalidSetting, match="renegotiates"):
                member.renegotiates = value  # type: ignore[assignment]
        assert member.renegotiates is True
        member.renegotiates = False
        assert member.renegotiates is False and not member.can_speak


@pytest.mark.parametrize("identity", [123, "", b"lou"])
async def test_a_bad_identity_is_an_invalid_setting_with_a_token_or_without(
    identity: object,
) -> None:
    """(Review: with a token, identity=123 read "the token is for 'lou', not 123", NotAllowed.)"""
    secret = "s" * 32
    token = auth.issue_token(secret, room="r", identity="lou", role="listener")
    async with sfu.Server(token_secret=secret) as server:
        room = server.room("r")
        for given in ({"token": token}, {}):
            with pytest.raises(sfu.InvalidSetting, match="identity must be a non-empty string"):
                await room.join(LISTENER, identity=identity, **given)  # type: ignore[arg-type]
