"""A member may not promote itself past what its own token grants.

Moderators promote anyone, themselves included (a moderator seated in the
audience takes the stage back with ``promote(itself, role="moderator")``);
but a token that grants ``moderate`` without ``publish`` must not be a way
to speak: ``promote(itself)`` is refused with ``NotAllowed`` then, while
promoting others, and another moderator promoting it, stay as they were.

Offers are written by hand here (the room's bookkeeping is what is checked);
``tests/signaling/test_self_promotion_signaling.py`` does the same over the
signaling protocol with real aiortc peers and audio.
"""

from __future__ import annotations

import asyncio

import pytest

import sfu
from sfu import auth

from .test_room_lifecycle import LISTENER, SECRET, SPEAKER

MODERATE_ONLY: list[auth.Grant] = ["moderate", "subscribe"]


@pytest.mark.parametrize("role", ["moderator", "listener"])
async def test_a_moderator_whose_token_withholds_publish_cannot_promote_itself(
    role: str,
) -> None:
    async with sfu.Server(token_secret=SECRET) as server:
        room = server.room("r")
        token = auth.issue_token(
            SECRET,
            room="r",
            identity="mo",
            role=role,  # type: ignore[arg-type]
            grants=MODERATE_ONLY,
        )
        mo = await room.join(SPEAKER, token=token)
        assert not mo.can_publish and mo.is_moderator
        events = room.events()
        for asked in ("speaker", "moderator"):
            with pytest.raises(sfu.NotAllowed) as refused:
                await room.promote("mo", role=asked, by="mo")
            message = str(refused.value)
            assert "'mo' may not promote itself" in message and "'publish'" in message, message
            assert mo.role == role and not mo.can_publish and mo.publisher is None
        assert room._decisions.get("mo") is None, "a refused promotion decides nothing"
        with pytest.raises(asyncio.TimeoutError):
            await events.next(0.05)  # no RoleChanged: nothing happened
        events.close()

        # It still moderates others: promoting someone else is as before.
        await room.add_listener(LISTENER, "lee")
        await room.promote("lee", by="mo")
        assert room["lee"].can_publish

        # Another moderator may promote it (its decision, not the token's);
        # that decision then covers the member's own promotion to moderator.
        await room.join(SPEAKER, identity="boss", role="moderator")
        await room.promote("mo", by="boss")
        assert mo.role == "speaker" and mo.can_publish and mo.is_moderator
        await room.promote("mo", role="moderator", by="mo")
        assert mo.role == "moderator"


async def test_a_refused_self_promotion_leaves_nothing_for_a_rejoin() -> None:
    """The refused promotion is not kept as a decision: the same token
    rejoining asking for the speaker role is refused as before."""
    async with sfu.Server(token_secret=SECRET) as server:
        room = server.room("r")
        token = auth.issue_token(
            SECRET, room="r", identity="mo", role="listener", grants=MODERATE_ONLY
        )
        mo = await room.join(SPEAKER, token=token)
        with pytest.raises(sfu.NotAllowed):
            await room.promote("mo", by="mo")
        await mo.close()
        with pytest.raises(sfu.NotAllowed, match="does not grant the 'speaker' role"):
            await room.join(SPEAKER, token=token, role="speaker")
        back = await room.join(SPEAKER, token=token)
        assert back.role == "listener" and not back.can_publish


async def test_a_moderator_whose_token_grants_publish_still_takes_the_stage_itself() -> None:
    """The rule is about what the member's own join was given: a moderator
    token joined to listen promotes itself as before, and so does a moderator
    the backend joined without a token, seated in the audience by a full
    stage (its grants there are a listener's and ``moderate``)."""
    async with sfu.Server(token_secret=SECRET) as server:
        room = server.room("r", max_speakers=1)
        token = auth.issue_token(SECRET, room="r", identity="mo", role="moderator")
        mo = await room.join(SPEAKER, token=token, role="listener")
        assert not mo.can_publish and mo.is_moderator
        await room.promote("mo", role="moderator", by="mo")
        assert mo.role == "moderator" and mo.can_publish

        host = await room.join(SPEAKER, identity="host", role="moderator")
        assert (host.role, host.can_publish, host.is_moderator) == ("listener", False, True)
        await room.demote("mo", by="host")  # a seat is free
        await room.promote("host", role="moderator", by="host")
        assert host.role == "moderator" and host.can_publish


async def test_a_promotion_a_member_gave_itself_is_no_pass_for_a_narrower_token() -> None:
    """The room keeps a promotion for the identity's rejoins; one the member
    gave itself (its token then granted publish) must not let it speak on a
    later, narrower token: not on rejoin, not by promoting itself again,
    not by asking for the role at join. A promotion by someone else still
    stands (the other tests)."""
    async with sfu.Server(token_secret=SECRET) as server:
        room = server.room("r")
        full = auth.issue_token(SECRET, room="r", identity="mo", role="moderator")
        mo = await room.join(SPEAKER, token=full, role="listener")
        await room.promote("mo", role="moderator", by="mo")
        assert mo.can_publish
        await mo.close()
        narrow = auth.issue_token(
            SECRET, room="r", identity="mo", role="listener", grants=MODERATE_ONLY
        )
        mo = await room.join(SPEAKER, token=narrow)
        assert mo.role == "listener" and not mo.can_publish
        with pytest.raises(sfu.NotAllowed, match="does not grant 'publish'"):
            await room.promote("mo", role="speaker", by="mo")
        assert not mo.can_publish
        await mo.close()
        with pytest.raises(sfu.NotAllowed, match="does not grant the 'speaker' role"):
            await room.join(SPEAKER, token=narrow, role="speaker")
        # The full token again: its own step stands as before.
        mo = await room.join(SPEAKER, token=full)
        assert mo.role == "moderator" and mo.can_publish


async def promoted_then_stepped_up_itself(room: sfu.Room) -> tuple[sfu.Participant, str]:
    """In ``room``: "boss", a moderator, promotes "m" (a token granting
    `moderate`, not `publish`) to speaker; "m" then makes itself moderator
    (it adds no grant). "m", and its token."""
    boss = auth.issue_token(SECRET, room=room.name, identity="boss", role="moderator")
    await room.join(SPEAKER, token=boss)
    narrow = auth.issue_token(
        SECRET, room=room.name, identity="m", role="listener", grants=MODERATE_ONLY
    )
    m = await room.join(SPEAKER, token=narrow)
    await room.promote("m", role="speaker", by="boss")
    await room.promote("m", role="moderator", by="m")
    assert m.role == "moderator" and m.can_publish
    return m, narrow


async def test_a_step_a_member_takes_itself_does_not_undo_anothers_promotion() -> None:
    """Promoted to speaker by another moderator, a member whose token grants
    `moderate` but not `publish` takes the moderator role itself; when it
    comes back, the seat the other gave it still stands (the self-step is
    refused for its token, the other's promotion is not: review, it came
    back a listener). A demotion ends both."""
    async with sfu.Server(token_secret=SECRET) as server:
        room = server.room("r")
        m, narrow = await promoted_then_stepped_up_itself(room)
        await m.close("network dropped")
        m = await room.join(SPEAKER, token=narrow)
        assert (m.role, m.can_publish, m.is_moderator) == ("speaker", True, True)
        # And the other's promotion still lets it take the step again.
        await room.promote("m", role="moderator", by="m")
        assert m.role == "moderator"
        await room.demote("m", by="boss")
        await m.close()
        m = await room.join(SPEAKER, token=narrow)
        assert not m.can_publish, "a demotion ends the promotion it was given"


async def test_another_moderator_saying_again_what_a_member_made_itself_is_kept() -> None:
    """A member's own step to moderator, then another moderator promoting it
    to moderator too (nothing changes now): the step is the other's from
    then on, and a rejoin on a token that does not cover it keeps it
    (second review: it came back a speaker)."""
    async with sfu.Server(token_secret=SECRET) as server:
        room = server.room("r")
        m, narrow = await promoted_then_stepped_up_itself(room)
        await room.promote("m", role="moderator", by="boss")
        await m.close("network dropped")
        m = await room.join(SPEAKER, token=narrow)
        assert (m.role, m.can_publish) == ("moderator", True)
