"""Room state through role changes, failed joins, absent identities and closing.

Offers are written by hand (no client connects): what is checked here is
the room's bookkeeping, which must never leave a member half in or let a
decision be lost.
"""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest

import sfu
from sfu import auth
from sfu.media import router as router_module
from sfu.media.ogg import LAST_PAGE, parse_pages

UFRAG = "Zx4f"
PWD = "k3Jq9sT0pV7wY2bN5cR8dF1h"
FINGERPRINT = ":".join(f"{i:02X}" for i in range(32))
SECRET = "s" * 40


def audio(mid: int, direction: str, level: bool = True) -> list[str]:
    return [
        "m=audio 9 UDP/TLS/RTP/SAVPF 111",
        "c=IN IP4 0.0.0.0",
        f"a=ice-ufrag:{UFRAG}",
        f"a=ice-pwd:{PWD}",
        f"a=fingerprint:sha-256 {FINGERPRINT}",
        "a=setup:actpass",
        f"a=mid:{mid}",
        f"a={direction}",
        "a=rtcp-mux",
        "a=rtpmap:111 opus/48000/2",
        *(["a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level"] if level else []),
    ]


def offer(*directions: str, level: bool = True) -> str:
    lines = ["v=0", "o=- 1 2 IN IP4 127.0.0.1", "s=-", "t=0 0"]
    lines.append("a=group:BUNDLE " + " ".join(str(i) for i in range(len(directions))))
    for mid, direction in enumerate(directions):
        lines += audio(mid, direction, level)
    return "\r\n".join(lines) + "\r\n"


SPEAKER = offer("sendrecv", "recvonly")
LISTENER = offer("recvonly", "recvonly")


async def test_demoted_then_promoted_back_is_heard_without_a_new_offer() -> None:
    async with sfu.Server() as server:
        room = server.room("r")
        events = room.events()
        alice = await room.add_speaker(SPEAKER, "alice")
        assert alice.publisher is not None
        await room.demote("alice")
        assert alice.publisher is None, "demoted: silent at once"
        await room.promote("alice")
        assert alice.publisher is not None, "its sending line is still negotiated: heard again"
        assert alice.number in room.router._publishers
        changes = []
        while len(changes) < 2:
            event = await events.next(2)
            if isinstance(event, sfu.RoleChanged):
                changes.append((event.role, event.renegotiate))
        # Demotion asks the client to drop its sending line; the promotion that
        # follows finds it still there and needs no new offer.
        assert changes == [("listener", True), ("speaker", False)]


async def test_a_join_that_fails_late_leaves_nothing_behind(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with sfu.Server() as server:
        room = server.room("r", max_speakers=1)

        def broken_meter() -> None:
            raise RuntimeError("no decoder")

        # A speaker without the level extension needs a decoder: make that fail.
        monkeypatch.setattr(router_module, "OpusLevelMeter", broken_meter)
        with pytest.raises(RuntimeError):
            await room.add_speaker(offer("sendrecv", level=False), "alice")
        monkeypatch.undo()
        assert room.participants == {} and list(server.sessions()) == []
        assert room.router._publishers == {}
        # The seat was not taken by the failed join.
        bob = await room.add_speaker(SPEAKER, "bob")
        assert room.speakers == [bob]


async def test_wait_connected_s_timeout_says_who_did_not_connect() -> None:
    """No client ever connects for this offer: the TimeoutError says whose
    connection it was, where, and how long was waited (not an empty one)."""
    async with sfu.Server() as server:
        room = server.room("r")
        bob = await room.add_listener(LISTENER, "bob")
        with pytest.raises(asyncio.TimeoutError, match=r"'bob' in room 'r' .* 0\.05 s"):
            await bob.wait_connected(0.05)
        assert not bob.closed  # only the wait ended


async def test_wait_connected_ends_when_the_participant_closes() -> None:
    async with sfu.Server() as server:
        room = server.room("r")
        bob = await room.add_listener(LISTENER, "bob")
        waiting = asyncio.ensure_future(bob.wait_connected())
        await asyncio.sleep(0)
        await room.remove("bob", "test")
        with pytest.raises(sfu.ParticipantClosed, match="removed: test"):
            await asyncio.wait_for(waiting, 2)
        with pytest.raises(sfu.ParticipantClosed):
            await bob.wait_connected(1)
        with pytest.raises(sfu.ParticipantClosed):
            bob.raise_hand()  # a late message cannot touch a namesake who rejoins
        with pytest.raises(sfu.ParticipantClosed):
            bob.set_self_muted(True)


async def test_asking_for_an_existing_room_without_settings_returns_it() -> None:
    async with sfu.Server() as server:
        room = server.room("r", slots=5)
        assert server.room("r") is room
        assert server.room("r", slots=5) is room
        # The message says which setting differs, also one left to its default.
        with pytest.raises(sfu.InvalidSetting, match="other settings: slots is 5, not 3 "):
            server.room("r", slots=3)
        with pytest.raises(
            sfu.InvalidSetting, match="slots is 5, not 3, the default, as not given"
        ) as refused:
            server.room("r", hold=1.0)
        assert "hold" not in str(refused.value)  # asked for as the room has it


async def test_promoting_to_a_role_held_or_demoting_a_listener_changes_nothing() -> None:
    """As Room.promote and Room.demote say: returned as it is, no event (a
    moderator asked for ``speaker`` stays a moderator)."""
    async with sfu.Server() as server:
        room = server.room("r")
        alice = await room.add_speaker(SPEAKER, "alice")
        mod = await room.join(SPEAKER, identity="mod", role="moderator")
        bob = await room.add_listener(LISTENER, "bob")
        events = room.events(accept=lambda e: isinstance(e, (sfu.RoleChanged, sfu.HandRaised)))
        assert await room.promote("alice") is alice
        assert await room.promote("mod") is mod
        assert await room.promote("mod", role="moderator") is mod
        assert await room.demote("bob") is bob
        assert (alice.role, mod.role, bob.role) == ("speaker", "moderator", "listener")
        assert mod.is_moderator
        room.raise_hand("bob")  # a marker: the first event queued after the calls
        assert isinstance(await events.next(5), sfu.HandRaised)


async def test_a_member_that_may_speak_is_refused_a_raised_hand() -> None:
    """A hand asks to speak: a Speaker (a speaker, a moderator, one promoted)
    has none to raise, and is told so rather than ignored; lowering a hand
    that is not raised changes nothing, whoever asks."""
    async with sfu.Server() as server:
        room = server.room("r")
        alice = await room.add_speaker(SPEAKER, "alice")
        await room.join(SPEAKER, identity="mod", role="moderator")
        bob = await room.add_listener(LISTENER, "bob")
        events = room.events(accept=lambda e: isinstance(e, (sfu.HandRaised, sfu.HandLowered)))
        with pytest.raises(sfu.NotAllowed, match="'alice' may already speak in room 'r'"):
            alice.raise_hand()
        with pytest.raises(sfu.NotAllowed, match="'mod' may already speak in room 'r'"):
            room.raise_hand("mod")
        bob.raise_hand()
        await room.promote("bob")  # the hand answered: lowered
        with pytest.raises(sfu.NotAllowed, match="'bob' may already speak"):
            bob.raise_hand()
        alice.lower_hand()
        assert room.hands == []
        assert [type(await events.next(5)) for _ in range(2)] == [sfu.HandRaised, sfu.HandLowered]
        with pytest.raises(asyncio.TimeoutError):
            await events.next(0)  # nothing told of the refused hands


async def test_moderating_an_absent_identity() -> None:
    async with sfu.Server(token_secret=SECRET) as server:
        room = server.room("r")
        for call in (room.promote("ghost"), room.demote("ghost"), room.mute("ghost")):
            with pytest.raises(sfu.NotFound, match="'ghost' is not in room 'r'"):
                await call
        with pytest.raises(sfu.NotFound):
            await room.remove("ghost")
        with pytest.raises(KeyError):
            room["ghost"]  # still a mapping lookup
        # Banning someone whose connection just dropped still keeps them out.
        await room.remove("ghost", ban=True)
        token = auth.issue_token(SECRET, room="r", identity="ghost", role="listener")
        with pytest.raises(sfu.NotAllowed, match="may not rejoin"):
            await room.join(LISTENER, token=token)


async def test_unban_lets_the_same_token_back_in() -> None:
    async with sfu.Server(token_secret=SECRET) as server:
        room = server.room("r")
        token = auth.issue_token(SECRET, room="r", identity="carl", role="listener")
        await room.join(LISTENER, token=token)
        await room.remove("carl", ban=True)
        with pytest.raises(sfu.NotAllowed):
            await room.join(LISTENER, token=token)
        room.unban("carl")
        carl = await room.join(LISTENER, token=token)
        assert room.get("carl") is carl


async def test_promoting_a_moderator_who_listens_keeps_the_moderate_grant() -> None:
    async with sfu.Server(token_secret=SECRET) as server:
        room = server.room("r")
        token = auth.issue_token(SECRET, room="r", identity="mo", role="moderator")
        mo = await room.join(LISTENER, token=token, role="listener")
        assert "moderate" in mo.grants and not mo.can_publish
        await room.promote("mo")
        assert "moderate" in mo.grants and mo.can_publish
        await room.add_listener(LISTENER, "lee")
        await room.mute("lee", by="mo")  # still allowed to moderate


async def test_a_closing_room_gives_its_name_back_and_closes_once(tmp_path: Path) -> None:
    async with sfu.Server() as server:
        room = server.room("r")
        await room.add_listener(LISTENER, "lee")
        await room.record(tmp_path / "r.ogg")  # a mixer: closing the room then takes a while
        first = asyncio.ensure_future(room.close("first"))
        await asyncio.sleep(0)
        assert "r" not in server.rooms
        fresh = server.room("r")
        assert fresh is not room and not fresh.closed
        await asyncio.wait_for(asyncio.gather(first, room.close("second")), 5)
        assert room.close_reason == "first"
        assert server.rooms == {"r": fresh}


async def closed_within(room: sfu.Room, seconds: float) -> bool:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while not room.closed and loop.time() < deadline:
        await asyncio.sleep(0.05)
    return room.closed


async def test_an_empty_room_closes_itself_after_close_when_empty(tmp_path: Path) -> None:
    async with sfu.Server() as server:
        kept = server.room("kept")  # the default: stays, however long empty
        never_joined = server.room("never-joined", close_when_empty=1.0)
        room = server.room("r", close_when_empty=1.0)
        events = room.events()
        await room.add_listener(LISTENER, "lee")
        recorder = await room.record(tmp_path / "r.ogg")
        await room["lee"].close()
        # "r" is empty from now on; the other room's close is seen meanwhile.
        held_until = asyncio.get_running_loop().time() + 2.5
        assert await closed_within(never_joined, 4), "nobody ever joined: closed"
        assert "never-joined" not in server.rooms
        remaining = held_until - asyncio.get_running_loop().time()
        assert not await closed_within(room, remaining), "its recording holds it"
        await recorder.stop()
        assert await closed_within(room, 4)
        assert room.close_reason == "empty" and "r" not in server.rooms
        seen = [event async for event in events]
        assert isinstance(seen[-1], sfu.events.RoomClosed) and seen[-1].reason == "empty"
        with pytest.raises(sfu.RoomClosed):
            await room.add_listener(LISTENER, "late")
        assert server.room("r", close_when_empty=1.0) is not room, "the name is free again"
        assert not kept.closed and server.rooms["kept"] is kept


async def test_bans_do_not_keep_an_empty_room_and_end_with_it() -> None:
    """Bans last while the room does; they do not keep it open (any moderator
    could then keep a room, ~17 KB, for ever by banning a made-up name)."""
    async with sfu.Server() as server:
        room = server.room("r", close_when_empty=0.5)
        await room.add_listener(LISTENER, "troll")
        await room.remove("troll", ban=True)
        await room.remove("nobody", ban=True)  # someone absent
        with pytest.raises(sfu.NotAllowed):
            await room.add_listener(LISTENER, "troll")  # while the room lasts
        assert await closed_within(room, 4), "an empty room holding bans stays for ever"
        assert room.close_reason == "empty" and "r" not in server.rooms
        again = server.room("r", close_when_empty=0.5)
        assert not again.is_banned("troll") and not again.is_banned("nobody")
        await again.add_listener(LISTENER, "troll")


async def test_an_empty_room_does_not_close_under_a_join() -> None:
    async with sfu.Server(joins_per_turn=1) as server:
        room = server.room("r", close_when_empty=0.5)
        room._closing.empty_since = -1e9  # empty "for ever": the next check would close it
        # One join per loop turn: the first (elsewhere) takes this turn's, so
        # the join to the empty room has started and waits for the next.
        elsewhere = asyncio.ensure_future(server.room("other").add_listener(LISTENER, "first"))
        joining = asyncio.ensure_future(room.add_listener(LISTENER, "lee"))
        await asyncio.sleep(0)
        assert elsewhere.done() and not joining.done()
        room._closing.check_empty(server.loop.time())
        member = await joining
        assert not room.closed and member.room is room


def test_close_when_empty_is_checked() -> None:
    for value in (0, -1, "60", float("nan"), True, 86401):
        with pytest.raises(sfu.InvalidSetting, match="close_when_empty"):
            sfu.RoomPolicy(close_when_empty=value)  # type: ignore[arg-type]
    assert sfu.RoomPolicy(close_when_empty=30).close_when_empty == 30


async def test_a_member_between_two_checks_restarts_the_empty_count() -> None:
    async with sfu.Server() as server:
        room = server.room("r", close_when_empty=60)
        room._closing.empty_since = -1e9  # empty "for ever" at the last check
        member = await room.add_listener(LISTENER, "brief")
        await member.close()  # came and went before the next check
        room._closing.check_empty(server.loop.time())
        assert not room.closed, "counted from this check, not from before the member"


async def test_moderators_decisions_do_not_keep_an_empty_room() -> None:
    async with sfu.Server() as server:
        room = server.room("r", close_when_empty=0.5)
        await room.add_listener(LISTENER, "lee")
        await room.promote("lee")  # forgotten with the room: nobody is left to apply it to
        await room["lee"].close()
        assert await closed_within(room, 4)
        with pytest.raises(sfu.RoomClosed):
            await room.remove("lee", ban=True)  # a ban on it would bind nothing


async def test_a_promotion_outliving_a_rejoin_does_not_keep_the_old_tokens_grants() -> None:
    async with sfu.Server(token_secret=SECRET) as server:
        room = server.room("hall")
        cohost = auth.issue_token(
            SECRET, room="hall", identity="carol", role="listener", grants=["subscribe", "moderate"]
        )
        carol = await room.join(LISTENER, token=cohost)
        await room.promote("carol")
        await carol.close()
        # The backend takes the co-host's rights away: her new token is a listener's.
        plain = auth.issue_token(SECRET, room="hall", identity="carol", role="listener")
        carol = await room.join(SPEAKER, token=plain)
        assert carol.role == "speaker", "the moderator's promotion stands"
        assert "moderate" not in carol.grants, "the old token's grant does not"
        await room.add_listener(LISTENER, "bob")
        with pytest.raises(sfu.NotAllowed):
            await room.remove("bob", by="carol", ban=True)


async def test_promoted_again_before_the_demotions_offer_is_asked_for_a_new_one() -> None:
    async with sfu.Server() as server:
        room = server.room("r")
        speaker = await room.add_speaker(SPEAKER, "s")
        events = room.events()
        await room.demote("s")  # the client is told to drop its microphone and offer again
        await room.promote("s")  # undone before that offer arrives
        # The offer made for the demotion (no sending line) arrives now.
        listener_offer = SPEAKER.replace("a=sendrecv", "a=recvonly")
        answer = await speaker.renegotiate(listener_offer)
        assert "a=sendrecv" not in answer and "a=recvonly" not in answer, "no line to receive on"
        asks = []
        while True:
            try:
                event = await events.next(0)
            except (asyncio.TimeoutError, StopAsyncIteration):
                break
            if isinstance(event, sfu.RoleChanged) and event.renegotiate:
                asks.append(event.role)
        assert asks[-1] == "speaker", "asked for an offer with a sending line"
        await speaker.renegotiate(SPEAKER)
        assert speaker.role == "speaker" and speaker.publisher is not None
        # Without a demotion that asked for it, such an offer is refused as before
        # (a client re-offering recvonly must not make the room ask again and again).
        with pytest.raises(sfu.InvalidOffer):
            await speaker.renegotiate(listener_offer)


# --- decisions against what a rejoin asks for --------------------------------------------


async def test_a_promoted_identity_may_rejoin_as_a_listener() -> None:
    """A stored promotion is the default on a rejoin, not a duty: asked to
    listen (a WHEP client, ``add_listener``), it listens, even on a full stage."""
    async with sfu.Server(token_secret=SECRET) as server:
        room = server.room("r", max_speakers=1)
        bob = await room.add_listener(LISTENER, "bob")
        await room.promote("bob")
        await bob.close()
        again = await room.join(SPEAKER, identity="bob")  # no role asked: the promotion
        assert isinstance(again, sfu.Speaker) and again.role == "speaker"
        await again.close()
        await room.add_speaker(SPEAKER, "alice")  # the one seat on the stage
        again = await room.add_listener(LISTENER, "bob")
        assert isinstance(again, sfu.Listener) and again.role == "listener"
        await again.close()
        token = auth.issue_token(SECRET, room="r", identity="bob", role="speaker")
        again = await room.add_listener(LISTENER, token=token)
        assert again.role == "listener" and "publish" not in again.grants


async def test_a_demotion_stands_over_a_higher_role_asked_for() -> None:
    async with sfu.Server() as server:
        room = server.room("r")
        alice = await room.add_speaker(SPEAKER, "alice")
        await room.demote("alice")
        await alice.close()
        again = await room.add_speaker(SPEAKER, "alice")
        assert isinstance(again, sfu.Listener) and again.role == "listener"


async def test_a_demoted_moderator_does_not_moderate_again_by_reconnecting() -> None:
    async with sfu.Server(token_secret=SECRET) as server:
        room = server.room("r")
        token = auth.issue_token(SECRET, room="r", identity="mo", role="moderator")
        mo = await room.join(SPEAKER, token=token)
        await room.add_listener(LISTENER, "lee")
        await room.demote("mo")
        assert "moderate" not in mo.grants
        await mo.close()
        mo = await room.join(LISTENER, token=token)  # the client reconnects, same token
        assert mo.role == "listener" and "moderate" not in mo.grants
        with pytest.raises(sfu.NotAllowed):
            await room.mute("lee", by="mo")
        with pytest.raises(sfu.NotAllowed):
            await room.promote("mo", role="moderator", by="mo")
        # Promoted back to speaker: still no moderation; to moderator: again.
        await room.promote("mo")
        assert "moderate" not in mo.grants
        await mo.close()
        mo = await room.join(SPEAKER, token=token)
        assert mo.role == "speaker" and "moderate" not in mo.grants
        await room.promote("mo", role="moderator")
        assert "moderate" in mo.grants
        await mo.close()
        mo = await room.join(SPEAKER, token=token)
        assert mo.role == "moderator" and "moderate" in mo.grants
        await room.mute("lee", by="mo")
        # Demoted again, promoted to speaker, removed (the promotion ends): back
        # with the moderator token, a speaker, not a moderator who cannot moderate.
        await room.demote("mo")
        await room.promote("mo")
        await room.remove("mo", "kicked")
        mo = await room.join(SPEAKER, token=token)
        assert (mo.role, "moderate" in mo.grants) == ("speaker", False)


# --- a role change or renegotiation that fails changes nothing ----------------------------


def _broken_meter() -> None:
    raise RuntimeError("no decoder")


async def test_a_promotion_that_fails_changes_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    async with sfu.Server() as server:
        room = server.room("r", max_speakers=1, max_listeners=1)
        # Its client sends no level extension: its publisher needs a decoder.
        bob = await room.add_speaker(offer("sendrecv", "recvonly", level=False), "bob")
        await room.demote("bob")
        monkeypatch.setattr(router_module, "OpusLevelMeter", _broken_meter)
        with pytest.raises(RuntimeError):
            await room.promote("bob")
        monkeypatch.undo()
        assert isinstance(bob, sfu.Listener) and bob.role == "listener"
        assert "publish" not in bob.grants and bob.publisher is None
        assert room.speakers == [] and room.listeners == [bob]
        await bob.close()
        await room.add_speaker(SPEAKER, "x")
        with pytest.raises(sfu.RoomFull):
            await room.add_speaker(SPEAKER, "y")  # the failed promotion freed no seat


async def test_a_renegotiation_that_fails_keeps_the_previous_state(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with sfu.Server() as server:
        room = server.room("r")
        alice = await room.add_speaker(SPEAKER, "alice")
        before, publisher = alice.negotiation, alice.publisher
        assert publisher is not None and publisher.audio_level_id == 1
        monkeypatch.setattr(router_module, "OpusLevelMeter", _broken_meter)
        with pytest.raises(RuntimeError):
            await alice.renegotiate(offer("sendrecv", "recvonly", level=False))
        monkeypatch.undo()
        assert alice.negotiation is before and alice.publisher is publisher
        assert publisher.audio_level_id == 1 and publisher.meter is None


# --- bad input ----------------------------------------------------------------------------


@pytest.mark.parametrize("role", [["speaker"], {"speaker": 1}, 1, "owner"])
async def test_a_role_that_is_not_a_role_name_is_an_invalid_setting(role: object) -> None:
    async with sfu.Server() as server:
        room = server.room("r")
        await room.add_listener(LISTENER, "lee")
        with pytest.raises(sfu.InvalidSetting, match="role must be one of"):
            await room.join(LISTENER, identity="x", role=role)  # type: ignore[arg-type]
        with pytest.raises(sfu.InvalidSetting, match="role must be one of"):
            await room.promote("lee", role=role)  # type: ignore[arg-type]
        with pytest.raises(sfu.InvalidSetting, match="role must be one of"):
            auth.issue_token(SECRET, room="r", identity="x", role=role)  # type: ignore[arg-type]
        assert list(room.participants) == ["lee"] and room["lee"].role == "listener"


async def test_self_mute_takes_only_a_bool() -> None:
    async with sfu.Server() as server:
        room = server.room("r")
        alice = await room.add_speaker(SPEAKER, "alice")
        for value in ("no", 0, None):
            with pytest.raises(sfu.InvalidSetting, match="muted must be True or False"):
                alice.set_self_muted(value)  # type: ignore[arg-type]
        assert alice.self_muted is False and not alice.muted


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"host": "localhost"}, "host must be an IP address"),
        ({"host": "127.0.0.1", "announce": "sfu.example"}, "announce must be an IP address"),
        ({"host": "0.0.0.0"}, "needs announce"),
        ({"host": "::", "announce": "::"}, "needs announce"),
        ({"host": "::", "announce": ["::1", "::"]}, "needs announce"),
        ({"host": "::", "announce": []}, "one or two addresses"),
        ({"host": "::", "announce": ["::1", "127.0.0.1", "::2"]}, "one or two addresses"),
        ({"host": "::", "announce": ["::1", "::2"]}, "one IPv4 and one IPv6"),
        ({"host": "::", "announce": ["127.0.0.2", "::ffff:127.0.0.1"]}, "one IPv4 and one"),
        ({"host": "::", "announce": ["::1", "sfu.example"]}, "announce must be an IP address"),
        ({"host": "::", "announce": ["::1", ""]}, "announce must be a non-empty string"),
        ({"host": "::", "announce": b"127.0.0.1"}, "an IP address or a list of them"),
        ({"host": "::", "announce": 4}, "an IP address or a list of them"),
    ],
)
def test_a_server_announcing_no_usable_address_is_refused(
    settings: dict[str, str], message: str
) -> None:
    with pytest.raises(sfu.InvalidSetting, match=message):
        sfu.Server(**settings)  # type: ignore[arg-type]


async def test_a_server_on_every_interface_announces_the_given_address() -> None:
    async with sfu.Server(host="0.0.0.0", announce="127.0.0.1") as server:
        bob = await server.room("r").add_listener(LISTENER, "bob")
        assert "c=IN IP4 127.0.0.1" in bob.answer and "0.0.0.0 " not in bob.answer


async def test_a_removed_member_loses_its_promotion_but_not_its_demotion_or_mute() -> None:
    async with sfu.Server() as server:
        room = server.room("r")
        eve = await room.add_listener(LISTENER, "eve")
        await room.promote("eve", role="moderator")
        await room.remove("eve", "kicked")
        assert eve.closed
        eve = await room.join(LISTENER, identity="eve")
        assert eve.role == "listener" and "moderate" not in eve.grants
        mallory = await room.add_speaker(SPEAKER, "mallory")
        await room.demote("mallory")
        await room.mute("mallory")
        await room.remove("mallory", "kicked")
        mallory = await room.add_speaker(SPEAKER, "mallory")
        assert mallory.role == "listener" and mallory.moderator_muted
        # A ban of someone absent ends the promotion as well.
        dave = await room.add_listener(LISTENER, "dave")
        await room.promote("dave")
        await dave.close()
        await room.remove("dave", "banned", ban=True)
        room.unban("dave")
        dave = await room.join(LISTENER, identity="dave")
        assert dave.role == "listener"


async def test_mixed_speakers_who_left_leave_nothing_in_the_mixer() -> None:
    async with sfu.Server() as server:
        room = server.room("r")
        for number in range(30):
            speaker = await room.add_speaker(SPEAKER, f"s{number}", mixed=True)
            assert f"a=ssrc:{room.mixer.ssrc_for(speaker.number)} " in speaker.answer
            await speaker.close()
        streams = room.mixer._mix_streams
        assert streams.minus_ssrcs == {} and streams.positions == {}


async def test_the_join_time_is_not_fooled_by_a_wall_clock_step(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A wall clock stepped back between the answer and DTLS done (NTP) must
    not record a negative join time in the histogram or the stats."""
    import time as time_module

    async with sfu.Server() as server:
        room = server.room("r")
        bob = await room.add_listener(LISTENER, "bob")
        real = time_module.time
        monkeypatch.setattr(time_module, "time", lambda: real() - 3600.0)
        assert bob.session is not None
        bob.session_connected(bob.session)  # what the session calls once DTLS is done
        monkeypatch.undo()
        join_time = bob.stats()["join_time"]
        assert join_time is not None and 0 <= join_time < 5
        assert 0 <= server.join_sum < 5 and sum(server.join_counts) == 1


async def test_a_listening_moderator_demoted_and_removed_rejoins_as_a_listener() -> None:
    """A moderator token that grants no publishing: once a demotion took
    `moderate`, it comes back as what its grants allow, a listener."""
    async with sfu.Server(token_secret=SECRET) as server:
        room = server.room("r")
        token = auth.issue_token(
            SECRET, room="r", identity="mo", role="moderator", grants=["subscribe", "moderate"]
        )
        mo = await room.join(LISTENER, token=token)
        assert (mo.role, mo.can_publish) == ("moderator", False)
        await room.demote("mo")
        await room.promote("mo")
        await room.remove("mo", "kicked")
        mo = await room.join(LISTENER, token=token)
        assert (mo.role, sorted(mo.grants), mo.can_publish) == ("listener", ["subscribe"], False)


async def test_a_consumer_task_nobody_holds_still_gets_the_rooms_events() -> None:
    """The room holds its streams weakly and asyncio its tasks: a consumer
    started with create_task and no reference kept must not be collected
    while it waits for the next event."""
    import gc

    async with sfu.Server() as server:
        room = server.room("r")
        received: list[sfu.RoomEvent] = []

        async def consume() -> None:
            async for event in room.events():
                received.append(event)

        asyncio.get_running_loop().create_task(consume())  # no reference kept: the point
        await asyncio.sleep(0)
        gc.collect()
        await room.add_listener(LISTENER, "bob")
        await room.close("bye")
        for _ in range(10):
            await asyncio.sleep(0.01)
        names = [type(event).__name__ for event in received]
        assert names == ["ParticipantJoined", "ParticipantLeft", "RoomClosed"]


# --- closing and starting, cancelled half-way -----------------------------------------------


async def test_a_cancelled_server_close_releases_everything_and_a_later_close_returns(
    tmp_path: Path,
) -> None:
    server = sfu.Server()
    await server.start()
    await server.room("r").record(tmp_path / "r.opus")  # its mixer takes a frame to stop
    await asyncio.sleep(0.05)
    closing = asyncio.ensure_future(server.close())
    await asyncio.sleep(0)
    closing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await closing
    assert server._task is None and server._transport is None
    await asyncio.wait_for(server.close(), 2)
    assert server._socket is None


async def test_a_room_close_cancelled_before_it_ran_does_not_hang_the_server() -> None:
    async with sfu.Server() as server:
        room = server.room("r")
        events = room.events()
        room._closing.drop_if_unused()
        assert room._closing.task is not None
        room._closing.task.cancel()
        await asyncio.sleep(0)
        await asyncio.wait_for(room.close(), 2)
        assert room not in server._closing_rooms
        assert type(await events.next(1)).__name__ == "RoomClosed"
    assert server._socket is None


async def test_a_start_cancelled_does_not_cancel_another_callers_start() -> None:
    server = sfu.Server()
    first = asyncio.ensure_future(server.start())
    second = asyncio.ensure_future(server.start())
    await asyncio.sleep(0)
    first.cancel()
    results = await asyncio.gather(first, second, return_exceptions=True)
    assert isinstance(results[0], asyncio.CancelledError)
    assert results[1] is server and server._started
    await server.close()


async def test_a_close_cancelled_while_it_waits_for_a_start_is_cancelled() -> None:
    server = sfu.Server()
    starting = asyncio.ensure_future(server.start())
    await asyncio.sleep(0)
    closing = asyncio.ensure_future(server.close())
    await asyncio.sleep(0)
    closing.cancel()
    starting.cancel()
    await asyncio.gather(starting, closing, return_exceptions=True)
    assert closing.cancelled(), "the close's own cancellation is not swallowed"
    assert server._transport is None and server._task is None
    await asyncio.wait_for(server.close(), 2)


async def test_a_moderator_listening_with_the_listener_role_can_be_demoted() -> None:
    """A moderator token used to listen (WHEP, or join(role="listener")) keeps
    `moderate` with the role "listener": a demotion must still take it, also
    from the same token's rejoins."""
    async with sfu.Server(token_secret=SECRET) as server:
        room = server.room("r")
        token = auth.issue_token(SECRET, room="r", identity="mo", role="moderator")
        await room.add_listener(LISTENER, "lee")
        mo = await room.join(LISTENER, token=token, role="listener")
        assert (mo.role, mo.is_moderator) == ("listener", True)
        events = room.events()
        await room.demote("mo")
        assert not mo.is_moderator and mo.role == "listener"
        event = await asyncio.wait_for(events.__anext__(), 1)
        assert isinstance(event, sfu.RoleChanged) and event.identity == "mo"
        assert not event.renegotiate, "its media does not change"
        with pytest.raises(sfu.NotAllowed):
            await room.mute("lee", by="mo")
        await mo.close()
        mo = await room.join(SPEAKER, token=token)  # the same token, back over signaling
        assert not mo.is_moderator and mo.role == "listener", "the demotion stands"


async def test_a_promoted_token_holder_may_rejoin_asking_for_the_promoted_role_or_less() -> None:
    """The promotion decides over the token's role when the rejoin asks for
    it or less: add_speaker (a WHIP client) with a listener token after a
    promotion to speaker, and role="speaker" after one to moderator."""
    async with sfu.Server(token_secret=SECRET) as server:
        room = server.room("r")
        token = auth.issue_token(SECRET, room="r", identity="bob", role="listener")
        bob = await room.join(LISTENER, token=token)
        await room.promote("bob")
        await bob.close()
        again = await room.add_speaker(SPEAKER, token=token)
        assert isinstance(again, sfu.Speaker) and again.role == "speaker"
        await room.promote("bob", role="moderator")
        await again.close()
        again = await room.join(SPEAKER, token=token, role="speaker")
        assert again.role == "speaker" and "moderate" not in again.grants
        # Asking for more than the decision gives still needs the token's grant.
        await room.demote("bob")
        await again.close()
        with pytest.raises(sfu.NotAllowed, match="does not grant"):
            await room.join(SPEAKER, token=token, role="speaker")


async def test_a_cancelled_server_close_leaves_no_room_open(tmp_path: Path) -> None:
    """Server.close() cancelled while it waits for one room's mixer: every
    room still ends (members told, RoomClosed sent, name released) and a
    join on any of them is refused as RoomClosed."""
    async with sfu.Server() as server:
        first, second = server.room("a"), server.room("b")
        await first.record(str(tmp_path / "a.opus"))  # a running mixer to wait for
        bob = await second.add_listener(LISTENER, "bob")
        events = second.events()
        await asyncio.sleep(0.05)
        closing = asyncio.ensure_future(server.close())
        await asyncio.sleep(0)  # waiting for room a's mixer now
        closing.cancel()
        with pytest.raises(asyncio.CancelledError):
            await closing
        assert first.closed and second.closed
        assert server.rooms == {}
        assert bob.closed
        seen = [type(event).__name__ async for event in events]  # ends after RoomClosed
        assert seen[-1] == "RoomClosed"
        with pytest.raises(sfu.RoomClosed):
            await second.add_listener(LISTENER, "carol")
        await server.close()  # returns: nothing left to do


async def test_a_close_after_a_cancelled_one_returns_when_everything_has_stopped(
    tmp_path: Path,
) -> None:
    """The first close() is cancelled while it waits for room a's mixer; the
    second returns only once the whole job is done: both rooms' mixers
    stopped (their recordings finished), the timer task ended, the socket
    closed."""
    server = sfu.Server()
    await server.start()
    first, second = server.room("a"), server.room("b")
    recordings = [await first.record(tmp_path / "a.opus"), await second.record(tmp_path / "b.opus")]
    await asyncio.sleep(0.05)
    timer = server._task
    closing = asyncio.ensure_future(server.close())
    await asyncio.sleep(0)  # waiting for room a's mixer now
    closing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await closing
    await asyncio.wait_for(server.close(), 2)
    assert not first.mixer.running and not second.mixer.running, "a mixer still runs"
    assert not any(recording.recording for recording in recordings), "a recording still open"
    assert timer is not None and timer.done()
    assert server._socket is None and server.closed
    for recording in recordings:
        pages = list(parse_pages(recording.path.read_bytes()))
        assert pages[-1].header_type & LAST_PAGE, f"{recording.path.name} is not finished"


async def test_join_arguments_are_checked() -> None:
    async with sfu.Server() as server:
        room = server.room("r")
        with pytest.raises(sfu.InvalidSetting, match="mixed"):
            await room.add_listener(LISTENER, "ann", mixed="false")  # type: ignore[arg-type]
        with pytest.raises(sfu.InvalidSetting, match="role"):
            await room.join(LISTENER, identity="ann", role="")  # type: ignore[arg-type]
        assert room.participants == {}
        one = server.room("one", slots=1)
        for slots in (True, 1.0):
            with pytest.raises(sfu.InvalidSetting, match="slots"):
                server.room("one", slots=slots)  # type: ignore[arg-type]
        assert server.room("one", slots=1) is one


async def test_a_promoted_member_rejoins_as_a_listener_when_the_stage_filled_meanwhile() -> None:
    """The promotion stands on a rejoin, but not over a full stage: the member
    comes back with the role it has without it, instead of being shut out."""
    async with sfu.Server() as server:
        room = server.room("r", max_speakers=1)
        lou = await room.add_listener(LISTENER, "lou")
        await room.promote("lou")
        await lou.close()
        pat = await room.add_speaker(SPEAKER, "pat")  # the one place on the stage
        lou = await room.join(LISTENER, identity="lou")
        assert isinstance(lou, sfu.Listener) and lou.role == "listener"
        await lou.close()
        await pat.close()
        again = await room.join(SPEAKER, identity="lou")  # a place again: the promotion
        assert isinstance(again, sfu.Speaker) and again.role == "speaker"


async def test_renegotiated_answers_keep_the_session_id_and_count_the_version() -> None:
    """RFC 3264 8: a new answer on the same session keeps the o= line's
    session id and increments its version."""
    async with sfu.Server() as server:
        room = server.room("r")
        lou = await room.add_listener(LISTENER, "lou")
        answers = [lou.answer or ""]
        for _ in range(2):
            answers.append(await lou.renegotiate(LISTENER))
        origins = [next(line for line in a.splitlines() if line.startswith("o=")) for a in answers]
        ids = {origin.split()[1] for origin in origins}
        assert len(ids) == 1
        assert [origin.split()[2] for origin in origins] == ["1", "2", "3"]
        assert lou.answer == answers[-1], "the last renegotiation's answer is the member's"


async def test_members_answered_alike_share_their_answer_text_but_their_own_values() -> None:
    """A crowd's answers differ only in ICE credentials and the session id: a
    member keeps the text they share once (~2 KB a listener, bench/idle_cost),
    and its answer still carries its own values."""
    async with sfu.Server() as server:
        room = server.room("r")
        listeners = [await room.add_listener(LISTENER, f"l{i}") for i in range(3)]
        answers = [listener.answer for listener in listeners]
        assert len(set(answers)) == 3
        for listener, answer in zip(listeners, answers):
            assert f"a=ice-ufrag:{listener.credentials.ufrag}\r\n" in answer
            assert f"a=ice-pwd:{listener.credentials.pwd}\r\n" in answer
            assert f"\r\no=- {listener._session_id} 1 IN IP4 " in answer
        first, *others = (listener._answer_template for listener in listeners)
        assert all(other is first for other in others), "each member keeps its own copy"
        # With its values in place, the answers are the same text.
        anonymous = [
            answer.replace(listener.credentials.ufrag, "U")
            .replace(listener.credentials.pwd, "P")
            .replace(f"o=- {listener._session_id} ", "o=- S ")
            for listener, answer in zip(listeners, answers)
        ]
        assert len(set(anonymous)) == 1


async def test_an_offer_changing_the_ice_password_is_refused_on_renegotiation() -> None:
    async with sfu.Server() as server:
        room = server.room("r")
        lou = await room.add_listener(LISTENER, "lou")
        changed = LISTENER.replace(f"a=ice-pwd:{PWD}", "a=ice-pwd:" + "Q" * 24)
        with pytest.raises(sfu.InvalidOffer, match="ICE"):
            await lou.renegotiate(changed)


async def test_a_refused_ban_leaves_the_promotion_as_it_was() -> None:
    async with sfu.Server() as server:
        room = server.room("r")
        lou = await room.add_listener(LISTENER, "lou")
        await room.promote("lou")
        await lou.close()
        for number in range(sfu.room.MAX_BANS):
            await room.remove(f"absent-{number}", ban=True)
        with pytest.raises(sfu.InvalidSetting, match="bans"):
            await room.remove("lou", ban=True)
        again = await room.join(SPEAKER, identity="lou")
        assert again.role == "speaker", "the refused ban changed nothing"


async def test_moderating_a_closed_room_says_it_is_closed() -> None:
    async with sfu.Server() as server:
        room = server.room("r")
        await room.add_speaker(SPEAKER, "sam")
        await room.add_listener(LISTENER, "lou")
        await room.close()
        for action in (
            lambda: room.promote("lou"),
            lambda: room.demote("sam"),
            lambda: room.mute("sam"),
            lambda: room.unmute("sam"),
        ):
            with pytest.raises(sfu.RoomClosed):
                await action()
        with pytest.raises(sfu.RoomClosed):
            room.raise_hand("lou")


async def test_making_a_moderator_moderator_again_tells_nobody_anything() -> None:
    async with sfu.Server() as server:
        room = server.room("r", roster_interval=0.05)
        member = await room.join(SPEAKER, identity="m", role="moderator")
        await asyncio.sleep(0.1)
        events = room.events()
        before = (member.role, member.grants)
        await room.promote("m", role="moderator")
        await asyncio.sleep(0.1)
        assert (member.role, member.grants) == before
        with pytest.raises(asyncio.TimeoutError):
            await events.next(0)


async def test_an_event_stream_queues_only_what_it_accepts() -> None:
    async with sfu.Server() as server:
        room = server.room("r")
        hands = room.events(maxsize=2, accept=lambda e: isinstance(e, sfu.HandRaised))
        everything = room.events(maxsize=2)
        for number in range(5):
            await room.add_listener(LISTENER, f"l{number}")
        room.raise_hand("l0")
        assert hands.dropped == 0 and everything.dropped > 0
        assert isinstance(await hands.next(0), sfu.HandRaised)
        with pytest.raises(sfu.InvalidSetting, match="accept"):
            room.events(accept=True)  # type: ignore[arg-type]
        await room.close()
        assert type(await hands.next(0)).__name__ == "RoomClosed"  # always queued


async def test_a_demoted_member_rejoins_over_a_full_audience(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """demote() lets the audience go past max_listeners by those taken off the
    stage; the same member reconnecting is not shut out by that cap either."""
    async with sfu.Server() as server:
        room = server.room("r", max_listeners=1)
        pat = await room.add_speaker(SPEAKER, "pat")
        await room.add_listener(LISTENER, "lou")  # the one listener place
        with pytest.raises(sfu.RoomFull, match=r"it holds at most 1 listener$"):
            await room.add_listener(LISTENER, "newcomer")
        await room.demote("pat")
        await pat.close()  # a dropped connection
        back = await room.join(SPEAKER, identity="pat")
        assert isinstance(back, sfu.Listener) and back.role == "listener"
        with pytest.raises(sfu.RoomFull):
            await room.add_listener(LISTENER, "newcomer")  # the cap holds for others
        # Only a reconnect: once that member has been gone a while, its name
        # lets nobody past the cap.
        monkeypatch.setattr(sfu.room, "DEMOTED_REJOIN_GRACE", 0.05)
        await back.close()
        await asyncio.sleep(0.1)
        with pytest.raises(sfu.RoomFull):
            await room.join(SPEAKER, identity="pat")


async def test_a_moderator_seated_in_the_audience_is_told_apart_from_a_refusal(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """To a full stage past its grace a moderator joins the audience, past a
    full max_listeners too, also one a moderator promoted (its listener token
    has no `moderate` of its own); one that can only send (a WHIP publisher)
    cannot listen, and is refused for the full stage, not for its offer."""
    monkeypatch.setattr(sfu.room, "MODERATOR_REJOIN_GRACE", 0.0)
    async with sfu.Server(token_secret=SECRET) as server:
        room = server.room("r", max_speakers=1, max_listeners=1)
        await room.add_speaker(SPEAKER, "sam")
        await room.add_listener(LISTENER, "lou")
        token = auth.issue_token(SECRET, room="r", identity="mo", role="moderator")
        mo = await room.join(SPEAKER, token=token)
        assert (mo.role, mo.grants) == ("listener", frozenset({"subscribe", "moderate"}))
        with pytest.raises(sfu.RoomFull, match=r"at most 1 speaker$"):
            await room.join(offer("sendonly"), identity="whip", role="moderator")
        await room.demote("sam", by="mo")
        await room.promote("lou", role="moderator", by="mo")
        lou_token = auth.issue_token(SECRET, room="r", identity="lou", role="listener")
        await room["lou"].close()
        await room.promote("mo", role="moderator", by="mo")  # the seat lou left
        await asyncio.sleep(0.01)  # lou's grace (none here) is over
        lou = await room.join(LISTENER, token=lou_token)
        assert lou.role == "listener" and lou.is_moderator and not lou.can_publish
        assert room.listeners == [room["sam"], lou] and room.speakers == [mo]


async def test_the_demoted_members_grace_is_one_reconnect_and_not_after_a_removal() -> None:
    """The grace past max_listeners is for a demoted member's reconnect: once
    per demotion, and not for one a moderator removed; then the cap holds."""
    async with sfu.Server() as server:
        room = server.room("r", max_listeners=1)
        await room.add_speaker(SPEAKER, "troll")
        await room.demote("troll")  # the one listener place
        await room.remove("troll", "kicked")
        await room.add_listener(LISTENER, "fan")  # the place it left is taken
        with pytest.raises(sfu.RoomFull):
            await room.join(LISTENER, identity="troll")

        pat = await room.add_speaker(SPEAKER, "pat")
        await room.demote("pat")
        await pat.close()  # its connection drops
        back = await room.join(LISTENER, identity="pat")  # the reconnect: past the cap
        await back.close()  # and once more
        with pytest.raises(sfu.RoomFull):
            await room.join(LISTENER, identity="pat")


async def test_joins_waiting_their_turn_when_the_server_closes_are_told_the_server_closed() -> None:
    """More joins at once than a turn takes, and the server closes before the
    later ones run: they raise ServerClosed (the server's end, not a room's),
    and no member is left."""
    server = sfu.Server(joins_per_turn=1)
    await server.start()
    room = server.room("hall")
    joins = [asyncio.ensure_future(room.add_listener(LISTENER, identity=f"m{i}")) for i in range(4)]
    await asyncio.sleep(0)
    await server.close()
    outcomes = await asyncio.gather(*joins, return_exceptions=True)
    refused = [o for o in outcomes if isinstance(o, BaseException)]
    assert refused and all(type(o) is sfu.ServerClosed for o in refused), outcomes
    assert list(room.participants) == []


def test_a_start_cancelled_on_uvloop_leaves_its_port_free() -> None:
    """A start cancelled while its endpoint is made (a shutdown during
    start-up): asyncio's loop closes the transport it was making, uvloop's
    keeps it, with the socket bound, for the loop's life. The port must be
    free again for the next server (a supervisor's retry, a fixed port)."""
    uvloop = pytest.importorskip("uvloop", reason="uvloop (the 'fast' extra) is not installed")

    async def start_cancelled_then_again() -> int:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
        first = sfu.Server(port=port)
        starting = asyncio.ensure_future(first.start())
        await asyncio.sleep(0)
        starting.cancel()
        (outcome,) = await asyncio.gather(starting, return_exceptions=True)
        assert isinstance(outcome, asyncio.CancelledError)
        await first.close()
        await asyncio.sleep(0.1)
        async with sfu.Server(port=port) as again:
            return again.port

    uvloop.run(start_cancelled_then_again())


async def test_a_room_made_for_joins_that_all_came_to_nothing_is_not_left_open() -> None:
    """What the WHIP/WHEP adapter does for a room it made: a POST whose client
    left before its answer undoes its join (Closing.join_undone) while a
    second POST for the room still waits its turn; that one fails too. No
    member, nothing decided: the room closes (review: the first join's
    success had ended the room's "made for a join", and it stayed open)."""
    async with sfu.Server(joins_per_turn=1) as server:
        room = server.room("r")
        room._closing.made_for_join = True  # as the adapter marks a room it made
        first = asyncio.create_task(room.add_listener(LISTENER, "a"))
        second = asyncio.create_task(room.add_listener(offer("inactive"), "b"))
        member = await first
        await member.close("the client left before its answer")
        room._closing.join_undone()
        assert not room.closed, "the second join still holds it"
        with pytest.raises(sfu.InvalidOffer):
            await second
        assert room.closed and room.close_reason == "unused"
        assert server.get_room("r") is None


async def test_a_join_undone_beside_a_member_leaves_the_room_as_any_room() -> None:
    """Undone while another member is in: the room stays, and a refused join
    much later does not close it as "unused" (second review: the mark
    stayed, and it did)."""
    async with sfu.Server() as server:
        room = server.room("r")
        room._closing.made_for_join = True
        first = await room.add_listener(LISTENER, "a")
        other = await room.add_listener(LISTENER, "b")
        await first.close("the client left before its answer")
        room._closing.join_undone()
        assert not room.closed
        await other.close()
        with pytest.raises(sfu.InvalidOffer):
            await room.add_listener(offer("inactive"), "c")
        assert not room.closed, "a room that had a member stays as any room does"
